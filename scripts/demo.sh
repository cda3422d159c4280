#!/usr/bin/env bash
# The farm's main job on simulated hardware, from a fresh machine: install what is needed, build, make a
# simulated drive and a firmware build, and flash it (download, commit, activate, verify), then show a
# firmware build that fails to boot being rolled back.
#
#   scripts/demo.sh [WORK_DIR]      (default: ./farm-data/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bins >&2
bin=target/release
work=${1:-farm-data/demo}
rm -rf "$work"; mkdir -p "$work"

say() { printf '\n== %s\n' "$*" >&2; }

say "a simulated drive: 3 firmware slots, running 1.0.0"
$bin/nvme-flash sim create "$work/drive" --serial DEMO0001 --model "NVFARM SIM X1" --fw 1.0.0 --size 256M
say "two firmware builds: 2.0.0 (good) and 2.1.0 (fails to boot)"
$bin/nvme-flash sim image --rev 2.0.0 --model "NVFARM SIM X1" -o "$work/fw-2.0.0.img"
$bin/nvme-flash sim image --rev 2.1.0 --model "NVFARM SIM X1" --behaviour boot-fail -o "$work/fw-2.1.0.img"

say "flash 2.0.0"
$bin/nvme-flash "sim:$work/drive" update "$work/fw-2.0.0.img" --sha256 "$(sha256sum "$work/fw-2.0.0.img" | cut -d' ' -f1)"

say "flash 2.1.0 (expected to fail verification and roll back)"
set +e
$bin/nvme-flash "sim:$work/drive" update "$work/fw-2.1.0.img"
rc=$?
set -e
[[ $rc -eq 1 ]] || { echo "demo: expected exit 1 from the bad build, got $rc" >&2; exit 1; }

say "firmware slots now"
$bin/nvme-flash "sim:$work/drive" log fw
say "done: the drive runs $($bin/nvme-flash "sim:$work/drive" info --json | sed -n 's/.*"fr": *"\([^"]*\)".*/\1/p' | tr -d ' ')"
