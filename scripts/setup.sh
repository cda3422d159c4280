#!/usr/bin/env bash
# Installs what nvfarm's build, demo and tests need on a fresh Debian machine, and nothing that is already there.
#   - QEMU (software emulation), busybox-static, nvme-cli, cpio, binutils: the real-kernel NVMe test tier
#   - fio: the peer tool in the io benchmarks
#   - openssl: a throwaway certificate for the TLS end-to-end test
#   - chromium: the dashboard test loads every page in a real headless browser
#   - node/npm and gitlab-ci-local (pinned, into ~/.cache/nvfarm/npm): the GitLab CI example is run by a test
# The Rust toolchain (cargo, rustfmt, clippy, cargo-nextest) comes with the machine.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-system-x86_64 || need+=(qemu-system-x86)
have busybox || need+=(busybox-static)
have nvme || need+=(nvme-cli)
have cpio || need+=(cpio)
have strip || need+=(binutils)
have fio || need+=(fio)
have openssl || need+=(openssl)   # the TLS end-to-end test makes a throwaway certificate
have npm || need+=(npm)
have git || need+=(git)
have rsync || need+=(rsync)   # gitlab-ci-local copies the project with it
have chromium || need+=(chromium fonts-dejavu-core)   # the dashboard test loads every page in it (fonts for its screenshots)

have apt-get || { echo "setup.sh: this script needs a Debian-like system with apt-get" >&2; exit 1; }

if ((${#need[@]})); then
    echo "setup.sh: installing ${need[*]}" >&2
    sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
have cargo || { echo "setup.sh: cargo is missing; install a Rust toolchain (rustup)" >&2; exit 1; }
# gitlab-ci-local, pinned: 4.70.1 is the last that runs on Debian's Node 20 (later ones need Node 22).
GCL_VERSION=4.70.1
gcl_dir=${NVFARM_CACHE:-$HOME/.cache/nvfarm}/npm
if [[ "$("$gcl_dir/node_modules/.bin/gitlab-ci-local" --version 2>/dev/null | tail -n 1)" != "$GCL_VERSION" ]]; then
    echo "setup.sh: installing gitlab-ci-local $GCL_VERSION into $gcl_dir" >&2
    npm install --silent --no-audit --no-fund --prefix "$gcl_dir" "gitlab-ci-local@$GCL_VERSION" >/dev/null
fi
echo "setup.sh: system packages present" >&2
