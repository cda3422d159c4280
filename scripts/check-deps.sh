#!/usr/bin/env bash
# The crate boundaries hold: the CLI that pipelines and laptops install (farmctl) and the controller build without
# any hardware-facing crate (io_uring, USB, serial ports, nix ioctls). Fails naming the crate and the path to it.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(io-uring|rusb|libusb1-sys|serialport|nix) '
status=0
for pkg in farmctl farm-controller farm-controller-cli; do
    tree=$(cargo tree -p "$pkg" -e normal --prefix none --locked)
    found=$(grep -E "$forbidden" <<<"$tree" | sort -u || true)
    if [[ -n "$found" ]]; then
        echo "check-deps: $pkg depends on hardware crates it must not carry:" >&2
        echo "$found" | sed 's/^/  /' >&2
        for c in $(echo "$found" | awk '{print $1}'); do
            echo "  path to $c:" >&2
            cargo tree -p "$pkg" -e normal -i "$c" --locked 2>/dev/null | sed 's/^/    /' >&2 || true
        done
        status=1
    fi
done
if ((status == 0)); then
    echo "check-deps: farmctl and farm-controller carry none of io-uring, rusb, libusb1-sys, serialport, nix" >&2
fi
exit $status
