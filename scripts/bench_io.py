#!/usr/bin/env python3
"""Side-by-side io benchmark: `bench-agent io` against fio, same target, same parameters, in one run.

Runs alternate (ours, fio, fio with registered buffers/files, ours, ...) so drift hits every tool alike; each cell
is the median of --reps runs. Latency is total latency (submission to completion: fio's lat_ns with
lat_percentiles=1, which is what bench-agent measures). Peak RSS comes from wait4() on each process.

Targets: a file on tmpfs, a loop device (O_DIRECT), a simulated drive (through its controller, with and without
an injected read latency, and its media file directly), and, inside a QEMU VM (software emulation, so absolute numbers
are low; the ratio is what matters), /dev/nvme0n1 (io_uring vs fio io_uring) and /dev/ng0n1 (uring_cmd
passthrough vs fio io_uring_cmd).

    scripts/bench_io.py [--runtime 3] [--reps 3] [--no-qemu] [--no-host] [--no-sim]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = [
    ("randread 4k qd32", {"rw": "randread", "bs": "4k", "iodepth": 32}),
    ("randwrite 4k qd32", {"rw": "randwrite", "bs": "4k", "iodepth": 32}),
    ("read 128k qd8", {"rw": "read", "bs": "128k", "iodepth": 8}),
]


def ours_cmd(bin_dir, target, wl, runtime, size, direct, engine=None):
    cmd = [os.path.join(bin_dir, "bench-agent"), "io", "--target", target, "--rw", wl["rw"], "--bs", wl["bs"],
           "--iodepth", str(wl["iodepth"]), "--runtime", f"{runtime}s", "--size", size, "--json"]
    if direct:
        cmd.append("--direct")
    if engine:
        cmd += ["--engine", engine]
    return cmd


def fio_cmd(target, wl, runtime, size, direct, engine="io_uring", fixed=False):
    cmd = ["fio", "--name=bench", f"--filename={target}", f"--rw={wl['rw']}", f"--bs={wl['bs']}",
           f"--iodepth={wl['iodepth']}", f"--runtime={runtime}", "--time_based", f"--size={size}",
           f"--ioengine={engine}", "--lat_percentiles=1", "--output-format=json", f"--direct={1 if direct else 0}",
           "--group_reporting", "--randrepeat=0"]
    if engine == "io_uring_cmd":
        cmd.append("--cmd_type=nvme")
    if fixed:
        cmd += ["--fixedbufs=1", "--registerfiles=1"]
    return cmd


def parse_ours(text):
    j = json.loads(text)
    d = j["read"] if j["read"]["ios"] else j["write"]
    return {"iops": d["iops"], "mibs": d["bw_bytes_per_sec"] / 2**20,
            "p50": d["lat"]["p50_ns"] / 1000, "p99": d["lat"]["p99_ns"] / 1000}


def parse_fio(text):
    j = json.loads(text[text.index("{"):])
    job = j["jobs"][0]
    d = job["read"] if job["read"]["total_ios"] else job["write"]
    pct = d["lat_ns"].get("percentile", {})
    return {"iops": d["iops"], "mibs": d["bw_bytes"] / 2**20,
            "p50": pct.get("50.000000", 0) / 1000, "p99": pct.get("99.000000", 0) / 1000}


def measure(cmd):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode().strip()}")
        return out.read().decode(), usage.ru_maxrss / 1024


def bench_host(bin_dir, args, rows):
    size = "512M"
    shm = tempfile.mkdtemp(prefix="nvfarm-bench-", dir="/dev/shm")
    targets = [("tmpfs file", os.path.join(shm, "file"), False)]
    backing = tempfile.NamedTemporaryFile(prefix="nvfarm-bench-", dir="/var/tmp", delete=False).name
    loop = None
    try:
        subprocess.run(["truncate", "-s", "1G", backing], check=True)
        loop = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", backing], check=True, capture_output=True,
                              text=True).stdout.strip()
        targets.append((f"loop device ({loop}, O_DIRECT)", loop, True))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"bench: no loop device ({e}); skipping that target", file=sys.stderr)
    try:
        # Lay the tmpfs file out once so every tool reads real pages.
        subprocess.run(["fio", "--name=layout", f"--filename={targets[0][1]}", "--rw=write", "--bs=1M", f"--size={size}",
                        "--output-format=terse"], check=True, capture_output=True)
        for tname, target, direct in targets:
            for wname, wl in WORKLOADS:
                tools = [("bench-agent", lambda: ours_cmd(bin_dir, target, wl, args.runtime, size, direct), parse_ours),
                         ("fio io_uring", lambda: fio_cmd(target, wl, args.runtime, size, direct), parse_fio),
                         ("fio io_uring fixedbufs+registerfiles",
                          lambda: fio_cmd(target, wl, args.runtime, size, direct, fixed=True), parse_fio)]
                results = {t[0]: [] for t in tools}
                for _ in range(args.reps):
                    for name, mk, parse in tools:
                        out, rss = measure(mk())
                        r = parse(out)
                        r["rss"] = rss
                        results[name].append(r)
                add_rows(rows, tname, wname, results)
                print(f"bench: {tname} / {wname} done", file=sys.stderr)
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop])
        os.unlink(backing)
        subprocess.run(["rm", "-rf", shm])


def add_rows(rows, target, workload, results):
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    base = med.get("fio io_uring", {}).get("iops") or None
    for name, m in med.items():
        rows.append((target, workload, name, m["iops"], m["mibs"], m["p50"], m["p99"], m.get("rss"),
                     (m["iops"] / base) if base else None))


def bench_sim(bin_dir, args, rows):
    """A simulated drive: bench-agent through the simulated controller (the default for sim rigs), the same with
    a 5 ms read-latency fault injected, and bench-agent and fio on the drive's media file directly (which no
    fault reaches), randread 4k qd32."""
    work = tempfile.mkdtemp(prefix="nvfarm-bench-sim-")
    drive = os.path.join(work, "drive")
    nvme_flash = os.path.join(bin_dir, "nvme-flash")
    try:
        subprocess.run([nvme_flash, "sim", "create", drive, "--size", "512M"], check=True, capture_output=True)
        media = os.path.join(drive, "ns1.img")
        subprocess.run(["fio", "--name=layout", f"--filename={media}", "--rw=write", "--bs=1M", "--size=512M",
                        "--output-format=terse"], check=True, capture_output=True)
        wname, wl = WORKLOADS[0]
        size = "512M"

        def fault(on):
            sub = ["latency", "5ms", "--opcode", "read"] if on else ["clear"]
            subprocess.run([nvme_flash, "sim", "fault", drive] + sub, check=True, capture_output=True)

        tools = [
            ("bench-agent via sim controller", lambda: ours_cmd(bin_dir, f"sim:{drive}", wl, args.runtime, size, False),
             parse_ours, False),
            ("bench-agent via sim controller, 5ms read fault",
             lambda: ours_cmd(bin_dir, f"sim:{drive}", wl, args.runtime, size, False), parse_ours, True),
            ("bench-agent media file direct, 5ms read fault",
             lambda: ours_cmd(bin_dir, media, wl, args.runtime, size, False, engine="uring"), parse_ours, True),
            ("fio io_uring", lambda: fio_cmd(media, wl, args.runtime, size, False), parse_fio, False),
        ]
        results = {t[0]: [] for t in tools}
        for _ in range(args.reps):
            for name, mk, parse, with_fault in tools:
                fault(with_fault)
                out, rss = measure(mk())
                r = parse(out)
                r["rss"] = rss
                results[name].append(r)
        fault(False)
        add_rows(rows, "simulated drive (media file for fio)", wname, results)
        print(f"bench: simulated drive / {wname} done", file=sys.stderr)
    finally:
        subprocess.run(["rm", "-rf", work])


def bench_qemu(bin_dir, args, rows):
    """Runs the same comparison inside a QEMU VM on /dev/nvme0n1 and /dev/ng0n1."""
    work = tempfile.mkdtemp(prefix="nvfarm-bench-vm-")
    # Every command is bounded and announces itself on the serial console, so a stuck run shows where it is.
    lines = ["say() { echo \"bench: $*\" > /dev/console; }"]
    plan = []
    runtime = args.runtime
    size = "256M"
    for tname, target, engine_ours, engine_fio, direct in [
        ("QEMU /dev/nvme0n1 (io_uring, O_DIRECT)", "/dev/nvme0n1", "uring", "io_uring", True),
        ("QEMU /dev/ng0n1 (uring_cmd passthrough)", "/dev/ng0n1", "uring_cmd", "io_uring_cmd", False),
    ]:
        # QEMU 7.2's emulated controller loses completions under sustained large sequential reads (the guest driver
        # then aborts and resets it, for fio and bench-agent alike), so the VM compares the 4k random workloads.
        for wi, (wname, wl) in enumerate(WORKLOADS):
            if wl["bs"] != "4k":
                continue

            for rep in range(args.reps):
                key = f"{engine_ours}-{wi}-{rep}"
                ours = ours_cmd("/usr/bin", target, wl, runtime, size, direct, engine_ours)
                fio = fio_cmd(target, wl, runtime, size, direct, engine=engine_fio)
                for tool, cmd in (("ours", ours), ("fio", fio)):
                    lines.append(f"say {tool} {key}")
                    lines.append(f"timeout {runtime * 20 + 30} " + " ".join(cmd) + f" > /out/{tool}-{key}.json 2>/out/{tool}-{key}.err"
                                 f" || say {tool} {key} exited $?")
            plan.append((tname, wname, engine_ours, wi))
    guest = os.path.join(work, "guest.sh")
    with open(guest, "w") as f:
        f.write("\n".join(lines) + "\n")
    out_dir = os.path.join(work, "out")
    env = dict(os.environ, QEMU_NVME_SIZE="512M", QEMU_TIMEOUT="1200")
    subprocess.run([os.path.join(ROOT, "tests/qemu/vm.sh"), guest, out_dir, os.path.join(bin_dir, "bench-agent"),
                    subprocess.run(["which", "fio"], capture_output=True, text=True, check=True).stdout.strip()],
                   check=True, env=env)
    for tname, wname, eng, wi in plan:
        results = {"bench-agent": [], "fio " + ("io_uring" if eng == "uring" else "io_uring_cmd"): []}
        for rep in range(args.reps):
            key = f"{eng}-{wi}-{rep}"
            try:
                results["bench-agent"].append(parse_ours(open(os.path.join(out_dir, f"ours-{key}.json")).read()))
                fname = list(results)[1]
                results[fname].append(parse_fio(open(os.path.join(out_dir, f"fio-{key}.json")).read()))
            except (ValueError, KeyError, FileNotFoundError) as e:
                err = open(os.path.join(out_dir, f"fio-{key}.err")).read() if os.path.exists(os.path.join(out_dir, f"fio-{key}.err")) else ""
                print(f"bench: {tname} / {wname}: unusable output ({e}) {err[:300]}", file=sys.stderr)
        if all(results.values()):
            # add_rows computes the ratio against the fio engine of the same kind.
            med = {n: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for n, runs in results.items()}
            fio_name = list(results)[1]
            for name, m in med.items():
                rows.append((tname, wname, name, m["iops"], m["mibs"], m["p50"], m["p99"], None,
                             m["iops"] / med[fio_name]["iops"] if med[fio_name]["iops"] else None))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", type=int, default=3, help="seconds per run")
    ap.add_argument("--reps", type=int, default=3, help="runs per tool and cell (median reported)")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--no-host", action="store_true")
    ap.add_argument("--no-sim", action="store_true", help="skip the simulated drive's rows")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts/setup.sh")], check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--bins"], cwd=ROOT, check=True)
    bin_dir = os.path.join(ROOT, "target/release")
    rows = []
    if not args.no_host:
        bench_host(bin_dir, args, rows)
    if not args.no_sim:
        bench_sim(bin_dir, args, rows)
    if not args.no_qemu:
        bench_qemu(bin_dir, args, rows)
    hdr = ("target", "workload", "tool", "IOPS", "MiB/s", "p50 us", "p99 us", "peak RSS MiB", "IOPS vs fio")
    print(f"{hdr[0]:<42} {hdr[1]:<18} {hdr[2]:<38} {hdr[3]:>10} {hdr[4]:>9} {hdr[5]:>8} {hdr[6]:>9} {hdr[7]:>12} {hdr[8]:>11}")
    for r in rows:
        rss = f"{r[7]:.1f}" if r[7] is not None else "-"
        ratio = f"{r[8]:.2f}x" if r[8] is not None else "-"
        print(f"{r[0]:<42} {r[1]:<18} {r[2]:<38} {r[3]:>10.0f} {r[4]:>9.1f} {r[5]:>8.1f} {r[6]:>9.1f} {rss:>12} {ratio:>11}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(zip(hdr, r)) for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
