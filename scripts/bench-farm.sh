#!/usr/bin/env bash
# The farm benchmark, one command from a fresh clone: nvfarm's controller and agents with simulated rigs on loopback,
# side by side with labgrid 26 (coordinator + exporters + labgrid-client, installed from PyPI into a venv here).
#
#   scripts/bench-farm.sh [--quick] [--json FILE] [--no-labgrid]
#
#   --quick        fewer repetitions and smaller queues (200 and 1000 queued): a smoke run, not numbers to report
#   --json FILE    also write nvfarm's numbers as JSON to FILE
#   --no-labgrid   skip labgrid's side (its column then says "n/a" with the reason)
#
# What each row measures: tests/src/bench/mod.rs (nvfarm) and scripts/bench_labgrid.py (labgrid). Run it on an
# otherwise idle machine; both sides share its cores with their own clients.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=() json=() labgrid=1
while (($#)); do
    case "$1" in
        --quick) quick=(--quick) ;;
        --json) [[ $# -ge 2 ]] || { echo "bench-farm.sh: --json needs a FILE" >&2; exit 2; }
                json=(--json "$2"); shift ;;
        --no-labgrid) labgrid=0 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-farm.sh: unknown option '$1' (valid: --quick, --json FILE, --no-labgrid)" >&2; exit 2 ;;
    esac
    shift
done

scripts/setup.sh
out=target/bench
mkdir -p "$out"
echo "bench-farm.sh: building release binaries" >&2
cargo build --release --locked --workspace --bins -q

lg=()
if ((labgrid)); then
    if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "bench-farm.sh: installing python3-venv (labgrid's venv)" >&2
        sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends python3 python3-venv >/dev/null
    fi
    venv=$PWD/$out/labgrid-venv
    if [[ ! -x $venv/bin/labgrid-coordinator ]]; then
        echo "bench-farm.sh: installing labgrid 26 from PyPI into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q 'labgrid>=26,<27'
    fi
    echo "bench-farm.sh: labgrid's side ($("$venv/bin/pip" show labgrid 2>/dev/null | sed -n 's/^Version: /labgrid /p'))" >&2
    # labgrid's asyncio client prints an "Event loop is closed" traceback at exit; its numbers are on stdout.
    "$venv/bin/python" scripts/bench_labgrid.py --venv "$venv" --work "$out/labgrid-work" "${quick[@]}" \
        >"$out/labgrid.json" 2>"$out/labgrid.log" \
        || { echo "bench-farm.sh: labgrid's side failed; see $out/labgrid.log" >&2; tail -20 "$out/labgrid.log" >&2; exit 1; }
    lg=(--labgrid "$out/labgrid.json")
fi

echo "bench-farm.sh: nvfarm's side" >&2
target/release/farmbench "${lg[@]}" "${quick[@]}" "${json[@]}"
