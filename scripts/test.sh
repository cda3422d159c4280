#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, the simulated-rig end-to-end tests and the
# real-kernel QEMU tier. This is the README's test command and what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== crate boundaries" >&2
scripts/check-deps.sh
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (the end-to-end tests run the workspace's binaries as processes)" >&2
cargo build --workspace --bins --locked
echo "== tests" >&2

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
