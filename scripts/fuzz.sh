#!/usr/bin/env bash
# Fuzzes every target (or the named ones) for MINUTES each under libFuzzer and prints a table: target, minutes,
# executions, executions per second, corpus inputs before and after, crashes. The corpus each run grows is
# minimized back into fuzz/corpus/<target>/ (commit it: the normal test run replays it). A crashing input stays
# in fuzz/artifacts/<target>/; fix the bug and keep the input as fuzz/regressions/<target>/<what-it-found>.
# Installs the nightly toolchain and cargo-fuzz (crates.io) when missing. Exits 1 if any target crashed.
#
# Usage: scripts/fuzz.sh [MINUTES] [TARGET...]     e.g. scripts/fuzz.sh 5 controller agent_link
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-1}"
shift || true
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -gt 0 ]] || {
    echo "fuzz.sh: MINUTES must be a whole number of minutes above 0, got '$minutes'" >&2
    exit 2
}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked >&2
cd fuzz
all=$(cargo +nightly fuzz list)
targets=("$@")
((${#targets[@]})) || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$all" || {
        echo "fuzz.sh: no target '$t'; targets: $(tr '\n' ' ' <<<"$all")" >&2
        exit 2
    }
done
echo "fuzz.sh: building ${#targets[@]} target(s) with nightly and libFuzzer" >&2
# No sanitizer: the fuzzed code is safe Rust (the unsafe ioctl and io_uring seams are not reached from these
# targets), and without ASan the controller target runs about 3.5x more inputs per second.
fz=(-O -s none)
cargo +nightly fuzz build "${fz[@]}" >&2
rows=()
crashed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "corpus/$t" -type f | wc -l)
    crashes_before=$(find "artifacts/$t" -type f | wc -l)
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/" 2>/dev/null || true
    log="target/fuzz-$t.log"
    mkdir -p target
    echo "fuzz.sh: $t for ${minutes}m (log: fuzz/$log)" >&2
    # The controller's inputs are operation sequences: let them be long from the start.
    extra=()
    [[ "$t" == controller ]] && extra=(-len_control=0 -max_len=2048)
    set +e
    cargo +nightly fuzz run "${fz[@]}" "$t" "$work" -- -max_total_time=$((minutes * 60)) -print_final_stats=1 \
        -rss_limit_mb=4096 -timeout=60 "${extra[@]}" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1 || true)
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - crashes_before))
    if ((rc != 0 && crashes == 0)); then crashes="rc=$rc"; fi
    # Keep what covers something new, nothing else: merge the run's corpus into an empty one.
    fresh=$(mktemp -d)
    cargo +nightly fuzz run "${fz[@]}" "$t" "$fresh" "$work" -- -merge=1 >>"$log" 2>&1 || true
    if [[ -n "$(ls -A "$fresh")" ]]; then
        rm -rf "corpus/$t" && mv "$fresh" "corpus/$t"
    else
        rm -rf "$fresh"
    fi
    rm -rf "$work"
    after=$(find "corpus/$t" -type f | wc -l)
    [[ "$crashes" == 0 ]] || crashed=1
    rate=$(( ${execs:-0} / ( ${secs:-0} > 0 ? ${secs:-1} : 1 ) ))
    rows+=("$(printf '%-16s %7s %12s %8s %7s %7s %8s' "$t" "$minutes" "${execs:-?}" "$rate" "$before" "$after" "$crashes")")
done
printf '%-16s %7s %12s %8s %7s %7s %8s\n' target minutes executions exec/s before after crashes
printf '%s\n' "${rows[@]}"
if ((crashed)); then
    echo "fuzz.sh: crashing inputs are in fuzz/artifacts/<target>/ (replay: cd fuzz && cargo +nightly fuzz run TARGET FILE)" >&2
fi
exit $crashed
