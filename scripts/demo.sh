#!/usr/bin/env bash
# The farm's main job on simulated rigs, from a fresh machine:
#   1. install what is needed and build;
#   2. start a farm-controller (embedded store in farm-data/demo) and a bench-agent owning rigs/sim-lab.toml
#      (four simulated drives, created on first use);
#   3. run the CI stage: `farmctl run` flashes a firmware build and runs plans/smoke.toml on an X1 rig;
#   4. run the same build that fails to boot, to show a failing CI run (exit 1, rolled back);
#   5. sweep the smoke plan over all four rigs and print the matrix;
#   6. print the rigs and jobs; the dashboard is at http://127.0.0.1:7701 while the demo runs.
#
#   scripts/demo.sh [--keep]     (--keep leaves the controller and agent running afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0; [[ ${1:-} == --keep ]] && keep=1
scripts/setup.sh
cargo build --release --locked --bins >&2
bin=$PWD/target/release
demo=farm-data/demo
rm -rf "$demo"; mkdir -p "$demo"
export FARM_CONTROLLER=http://127.0.0.1:7700

say() { printf '\n== %s\n' "$*" >&2; }
for port in 7700 7701; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "demo: port $port is in use (another farm-controller?); stop it first" >&2; exit 1
    fi
done

say "starting farm-controller (data in $demo/controller) and bench-agent (rigs/sim-lab.toml)"
"$bin/farm-controller" --data-dir "$demo/controller" > "$demo/controller.log" 2>&1 &
ctl=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/7700) 2>/dev/null && break; sleep 0.1; done
"$bin/bench-agent" --controller "$FARM_CONTROLLER" --rigs rigs/sim-lab.toml --work-dir "$demo/agent" > "$demo/agent.log" 2>&1 &
agent=$!
cleanup() {
    if [[ $keep == 0 ]]; then
        kill -TERM "$agent" "$ctl" 2>/dev/null || true
        wait "$agent" "$ctl" 2>/dev/null || true
    else
        echo "demo: controller (pid $ctl) and agent (pid $agent) keep running; dashboard http://127.0.0.1:7701" >&2
    fi
}
trap cleanup EXIT
for _ in $(seq 100); do
    [[ $("$bin/farmctl" --json rigs 2>/dev/null | grep -c '"state": "idle"') -eq 4 ]] && break
    sleep 0.2
done
"$bin/farmctl" rigs

say "firmware builds: 2.0.0 (good) and 2.1.0 (fails its boot self-check)"
"$bin/nvme-flash" sim image --rev 2.0.0 -o "$demo/fw-2.0.0.img"
"$bin/nvme-flash" sim image --rev 2.1.0 --behaviour boot-fail -o "$demo/fw-2.1.0.img"

say "CI stage: farmctl run 2.0.0 with plans/smoke.toml on an X1 rig"
"$bin/farmctl" run --firmware "$demo/fw-2.0.0.img" --plan plans/smoke.toml --labels model=X1-1T --junit "$demo/junit-2.0.0.xml"
echo "exit code 0; JUnit in $demo/junit-2.0.0.xml" >&2

say "CI stage with the broken build 2.1.0 (expected: exit 1, the rig rolled back to 2.0.0)"
set +e
"$bin/farmctl" run --firmware "$demo/fw-2.1.0.img" --plan plans/smoke.toml --labels model=X1-1T --junit "$demo/junit-2.1.0.xml" > "$demo/run-2.1.0.log"
rc=$?
set -e
tail -3 "$demo/run-2.1.0.log"
[[ $rc -eq 1 ]] || { echo "demo: expected exit 1 from the broken build, got $rc" >&2; exit 1; }
echo "exit code 1 (test failed); JUnit in $demo/junit-2.1.0.xml" >&2

say "nightly sweep of 2.0.0 over every rig"
"$bin/farmctl" sweep --firmware "$demo/fw-2.0.0.img" --plan plans/smoke.toml --name demo-sweep --junit "$demo/junit-sweep.xml"

say "rigs and jobs now"
"$bin/farmctl" rigs
"$bin/farmctl" jobs
