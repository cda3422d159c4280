#!/usr/bin/env bash
# The long chaos variant: runs the farm's real binaries on loopback under a mixed load (CI jobs, reservations,
# cancels, a nightly sweep) and injects every fault in a new random order each round for DURATION (default 30m).
# Prints one row per fault; exits 1 if any experiment broke the steady state (lost, double, stuck, wrong, order,
# hung must all be 0). Extra arguments go to the chaos binary (e.g. --seed 7 --faults link-stall,agent-kill --json).
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30m}"
shift || true
scripts/setup.sh >&2
cargo build --workspace --bins --locked --release >&2
exec target/release/chaos --duration "$duration" "$@"
