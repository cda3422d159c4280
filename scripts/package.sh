#!/usr/bin/env bash
# Packages nvfarm from the workspace's release binaries into target/package/:
#   - .deb packages (cargo-deb, installed on first use): nvfarm-controller, nvfarm-agent, nvfarm-farmctl, with
#     the systemd units from packaging/systemd (installed, not enabled);
#   - container images (podman, if installed): localhost/nvfarm/bench-agent and localhost/nvfarm/farm-controller,
#     FROM scratch with each binary and the shared libraries it links (packaging/containers/*.Containerfile).
#
#   scripts/package.sh [--profile release|dev]     (dev: the debug binaries, for a quick check of the packaging)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[[ ${1:-} == --profile ]] && profile=$2
dir=$([[ $profile == dev ]] && echo debug || echo release)
out=target/package
mkdir -p "$out"
cargo build --profile "$profile" --bins -p farm-controller-cli -p bench-agent-cli -p nvme-flash -p farmctl
version=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="farmctl"))')

# A root filesystem with the binaries and every shared library they link (and the CA bundle for TLS).
rootfs() {
    local root=$1; shift
    rm -rf "$root"; mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/tmp"
    for b in "$@"; do
        cp "target/$dir/$b" "$root/usr/bin/"
        ldd "target/$dir/$b" | awk '$2 == "=>" {print $3; next} $1 ~ /^\// {print $1}' | while read -r lib; do
            [[ -n $lib && -e $lib ]] || continue
            mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
        done
    done
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] && cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    return 0
}
rootfs "$out/bench-agent/rootfs" bench-agent nvme-flash
rootfs "$out/farm-controller/rootfs" farm-controller
# The staged root filesystems are complete: each binary runs from its own root.
chroot "$out/bench-agent/rootfs" /usr/bin/bench-agent --version
chroot "$out/farm-controller/rootfs" /usr/bin/farm-controller --version

if command -v podman >/dev/null; then
    for img in bench-agent farm-controller; do
        podman build -q -f "packaging/containers/$img.Containerfile" -t "localhost/nvfarm/$img:$version" "$out/$img" >/dev/null
        echo "package.sh: image localhost/nvfarm/$img:$version" >&2
    done
else
    echo "package.sh: podman is not installed: no container images (apt-get install podman)" >&2
fi

if ! command -v cargo-deb >/dev/null; then
    echo "package.sh: installing cargo-deb" >&2
    cargo install --locked cargo-deb >/dev/null
fi
for p in farm-controller-cli bench-agent-cli farmctl; do
    cargo deb --no-build --profile "$profile" -p "$p" -o "$out/" >/dev/null
done
ls -1 "$out"/*.deb >&2
