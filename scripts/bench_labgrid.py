#!/usr/bin/env python3
"""labgrid's side of the farm benchmark (scripts/bench-farm.sh runs it; target/release/farmbench prints the table).

Starts labgrid 26's coordinator and exporters on loopback (NetworkService resources stand in for rigs: one
resource group per place, each place matching its group) and measures the operations nvfarm's benchmark
measures, the way labgrid does them:

- cli_cycle: `labgrid-client -p P acquire` then `release` (two processes, as a user types them);
- grpc: AcquirePlace + ReleasePlace cycles from 1, 8 and 32 concurrent clients (one channel and session each,
  one place each), through the coordinator's gRPC API;
- release_grant: a waiting reservation polled at `labgrid-client reserve --wait`'s interval (1 s) sees its
  allocation after the place it waits for is released;
- list_1000: `labgrid-client resources` with 1000 resources (10 exporters x 100), coordinator RSS;
- register_1000: one exporter with 1000 resources, from its start until a client sees all of them;
- queued N (2000, 10000): N waiting reservations for a place that is acquired, then an unrelated
  CreateReservation + CancelReservation (p50/p99), GetReservations, and the coordinator's idle CPU over 5 s.

Prints one JSON object on stdout. Usage: bench_labgrid.py --venv DIR --work DIR [--quick]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    i = min(len(v) - 1, max(0, int(round(q / 100.0 * len(v) + 0.5)) - 1))
    return v[i]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle_cpu_pct(pid, seconds=5.0):
    hz = os.sysconf("SC_CLK_TCK")
    a = cpu_ticks(pid)
    time.sleep(seconds)
    return (cpu_ticks(pid) - a) / hz / seconds * 100.0


class Lab:
    """A coordinator and exporters in a work directory."""

    def __init__(self, venv, work):
        self.venv = venv
        self.work = work
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.procs = []
        # A fresh coordinator: places and reservations of an earlier run stay out.
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        log = open(os.path.join(work, "coordinator.log"), "w")
        self.coordinator = subprocess.Popen(
            [f"{venv}/bin/labgrid-coordinator", "-l", self.addr], cwd=work, stdout=log, stderr=log
        )
        self.procs.append(self.coordinator)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("labgrid-coordinator did not listen within 30 s")
                time.sleep(0.1)

    def exporter(self, name, groups):
        cfg = os.path.join(self.work, f"{name}.yaml")
        with open(cfg, "w") as f:
            for g in groups:
                f.write(f"{g}:\n  NetworkService:\n    address: 127.0.0.1\n    username: root\n")
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(
            [f"{self.venv}/bin/labgrid-exporter", "-c", self.addr, "-n", name, "--hostname", "127.0.0.1", cfg],
            cwd=self.work,
            stdout=log,
            stderr=log,
        )
        self.procs.append(p)
        return p

    def client(self, *args):
        env = dict(os.environ, LG_COORDINATOR=self.addr, LG_USERNAME="bench", LG_HOSTNAME="bench")
        return subprocess.run(
            [f"{self.venv}/bin/labgrid-client", *args], env=env, capture_output=True, text=True, timeout=120
        )

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
            p.wait()


class Session:
    """One client connection with labgrid's client session stream (AcquirePlace needs one)."""

    def __init__(self, addr, name):
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
        from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pbg

        self.pb = pb
        self.channel = grpc.aio.insecure_channel(
            addr, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
        )
        self.stub = pbg.CoordinatorStub(self.channel)
        self.name = name
        self.queue = asyncio.Queue()
        self.resources = 0
        self.synced = {}

    async def start(self, resources=False):
        from labgrid import __version__ as version

        pb = self.pb

        async def out():
            while True:
                m = await self.queue.get()
                if m is None:
                    return
                yield m

        self.call = self.stub.ClientStream(out())
        m = pb.ClientInMessage()
        m.startup.version = version
        m.startup.name = self.name
        self.queue.put_nowait(m)
        if resources:
            m = pb.ClientInMessage()
            m.subscribe.all_resources = True
            self.queue.put_nowait(m)
        self.pump = asyncio.ensure_future(self._pump())
        await self.sync()

    async def _pump(self):
        async for msg in self.call:
            for u in msg.updates:
                if u.WhichOneof("kind") == "resource":
                    self.resources += 1
            if msg.HasField("sync"):
                ev = self.synced.pop(msg.sync.id, None)
                if ev:
                    ev.set()

    async def sync(self):
        i = len(self.synced) + int(time.time() * 1000)
        ev = self.synced[i] = asyncio.Event()
        m = self.pb.ClientInMessage()
        m.sync.id = i
        self.queue.put_nowait(m)
        await ev.wait()

    async def close(self):
        self.queue.put_nowait(None)
        self.call.cancel()
        await self.channel.close()


async def add_places(addr, n, exporter, offset=0, tag=None):
    s = Session(addr, "bench/setup")
    await s.start()
    pb = s.pb
    for i in range(offset + 1, offset + n + 1):
        await s.stub.AddPlace(pb.AddPlaceRequest(name=f"p{i}"))
        await s.stub.AddPlaceMatch(pb.AddPlaceMatchRequest(placename=f"p{i}", pattern=f"{exporter}/g{i}/*"))
        await s.stub.SetPlaceTags(pb.SetPlaceTagsRequest(placename=f"p{i}", tags={"board": tag or f"b{i}"}))
    await s.close()


async def grpc_cycles(addr, clients, seconds):
    sessions = [Session(addr, f"bench/c{i}") for i in range(clients)]
    for s in sessions:
        await s.start()
    lat = []
    stop = time.monotonic() + seconds

    async def run(i, s):
        pb = s.pb
        while time.monotonic() < stop:
            t = time.perf_counter()
            await s.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=f"p{i + 1}"))
            await s.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=f"p{i + 1}"))
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.monotonic()
    await asyncio.gather(*(run(i, s) for i, s in enumerate(sessions)))
    took = time.monotonic() - t0
    for s in sessions:
        await s.close()
    return {"cycles_per_s": len(lat) / took, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "n": len(lat)}


async def release_grant(addr, place, reps):
    """A holds `place`; B's reservation for it waits, polled every second as `labgrid-client reserve --wait`
    does; A releases at a random moment; the time until B's poll sees the allocation."""
    import random

    a = Session(addr, "bench/holder")
    b = Session(addr, "bench/waiter")
    await a.start()
    await b.start()
    pb = a.pb
    seen = []
    for _ in range(reps):
        await a.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=place))
        r = await b.stub.CreateReservation(
            pb.CreateReservationRequest(filters={"main": pb.Reservation.Filter(filter={"name": place})}, prio=0)
        )
        token = r.reservation.token
        released = asyncio.get_running_loop().create_future()

        async def release():
            await asyncio.sleep(1.0 + random.random())
            await a.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=place))
            released.set_result(time.perf_counter())

        task = asyncio.ensure_future(release())
        while True:
            p = await b.stub.PollReservation(pb.PollReservationRequest(token=token))
            if p.reservation.state != 0:  # 0 = waiting
                break
            await asyncio.sleep(1.0)
        await task
        seen.append((time.perf_counter() - released.result()) * 1000)
        await b.stub.CancelReservation(pb.CancelReservationRequest(token=token))
    await a.close()
    await b.close()
    return {"p50_ms": pct(seen, 50), "p99_ms": pct(seen, 99), "n": len(seen)}


async def count_resources(addr, want, within):
    s = Session(addr, "bench/watch")
    await s.start(resources=True)
    t = time.monotonic()
    while s.resources < want and time.monotonic() - t < within:
        await asyncio.sleep(0.05)
    got = s.resources
    await s.close()
    return got


async def queued(addr, n, busy, free_place, measure_idle):
    """n waiting reservations for `busy` (acquired), kept alive by polling; then unrelated reservations."""
    holder = Session(addr, "bench/holder")
    await holder.start()
    pb = holder.pb
    await holder.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=busy))
    filt = {"main": pb.Reservation.Filter(filter={"name": busy})}
    t0 = time.monotonic()
    tokens = []
    conc = 16
    for i in range(0, n, conc):
        rs = await asyncio.gather(
            *(holder.stub.CreateReservation(pb.CreateReservationRequest(filters=filt, prio=0))
              for _ in range(min(conc, n - i)))
        )
        tokens += [r.reservation.token for r in rs]
        if time.monotonic() - t0 > 50:
            # labgrid expires a reservation nobody polled for 60 s: the queue cannot be built any longer.
            await holder.close()
            return {"n/a": f"creating {n} reservations took over 50 s ({len(tokens)} made); "
                    "labgrid expires unpolled reservations after 60 s"}
    create_s = time.monotonic() - t0
    lat = []
    free = {"main": pb.Reservation.Filter(filter={"name": free_place})}
    for _ in range(50):
        t = time.perf_counter()
        r = await holder.stub.CreateReservation(pb.CreateReservationRequest(filters=free, prio=0))
        await holder.stub.CancelReservation(pb.CancelReservationRequest(token=r.reservation.token))
        lat.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    got = await holder.stub.GetReservations(pb.GetReservationsRequest())
    list_ms = (time.perf_counter() - t) * 1000
    out = {
        "reserve_p50_ms": pct(lat, 50),
        "reserve_p99_ms": pct(lat, 99),
        "list_ms": list_ms,
        "listed": len(got.reservations),
        "create_s": create_s,
    }
    # Measured with the queue in place (idle: nothing else is calling).
    out.update(measure_idle())
    for i in range(0, len(tokens), conc):
        await asyncio.gather(
            *(holder.stub.CancelReservation(pb.CancelReservationRequest(token=t)) for t in tokens[i:i + conc])
        )
    await holder.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=busy))
    await holder.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", required=True, help="the virtualenv labgrid is installed in")
    ap.add_argument("--work", required=True, help="a directory for the coordinator's and exporters' files")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and smaller queues (a smoke run)")
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    secs = 1.0 if args.quick else 3.0
    out = {"tool": "labgrid", "version": None}
    from labgrid import __version__

    out["version"] = __version__

    # Small lab: 40 places on one exporter.
    lab = Lab(args.venv, os.path.join(args.work, "small"))
    try:
        lab.exporter("exp", [f"g{i}" for i in range(1, 41)])
        asyncio.run(add_places(lab.addr, 40, "exp"))
        if asyncio.run(count_resources(lab.addr, 40, 30)) < 40:
            raise SystemExit("labgrid's exporter did not publish its 40 resources within 30 s")
        cli = []
        for _ in range(3 if args.quick else 10):
            t = time.perf_counter()
            a = lab.client("-p", "p40", "acquire")
            r = lab.client("-p", "p40", "release")
            if a.returncode or r.returncode:
                raise SystemExit(f"labgrid-client acquire/release failed: {a.stderr}{r.stderr}")
            cli.append((time.perf_counter() - t) * 1000)
        out["cli_cycle"] = {"p50_ms": pct(cli, 50), "p99_ms": pct(cli, 99), "n": len(cli)}
        out["grpc"] = {str(c): asyncio.run(grpc_cycles(lab.addr, c, secs)) for c in (1, 8, 32)}
        out["release_grant"] = asyncio.run(release_grant(lab.addr, "p39", 3 if args.quick else 10))
    finally:
        lab.stop()

    # 1000 resources from 10 exporters; then the queues.
    lab = Lab(args.venv, os.path.join(args.work, "big"))
    try:
        for e in range(10):
            lab.exporter(f"exp{e}", [f"g{e * 100 + i}" for i in range(1, 101)])
        if asyncio.run(count_resources(lab.addr, 1000, 60)) < 1000:
            raise SystemExit("labgrid's 10 exporters did not publish 1000 resources within 60 s")
        times = []
        for _ in range(3 if args.quick else 10):
            t = time.perf_counter()
            r = lab.client("resources")
            if r.returncode:
                raise SystemExit(f"labgrid-client resources failed: {r.stderr}")
            times.append((time.perf_counter() - t) * 1000)
        out["list_1000"] = {
            "p50_ms": pct(times, 50),
            "p99_ms": pct(times, 99),
            "rss_mib": rss_mib(lab.coordinator.pid),
            "listed": r.stdout.count("NetworkService"),
        }
        async def places():
            s = Session(lab.addr, "bench/setup")
            await s.start()
            for name in ("busy", "free"):
                await s.stub.AddPlace(s.pb.AddPlaceRequest(name=name))
            await s.close()

        asyncio.run(places())
        pid = lab.coordinator.pid

        def measure_idle():
            return {"idle_cpu_pct": idle_cpu_pct(pid, 2.0 if args.quick else 5.0), "rss_mib": rss_mib(pid)}

        out["queued"] = {}
        for n in (200, 1000) if args.quick else (2000, 10000):
            q = asyncio.run(queued(lab.addr, n, "busy", "free", measure_idle))
            out["queued"][str(n)] = q
    finally:
        lab.stop()

    # Registration: one exporter with 1000 resources.
    lab = Lab(args.venv, os.path.join(args.work, "register"))
    try:
        t = time.monotonic()
        lab.exporter("big", [f"g{i}" for i in range(1, 1001)])
        got = asyncio.run(count_resources(lab.addr, 1000, 120))
        out["register_1000"] = {"s": time.monotonic() - t, "resources": got}
    finally:
        lab.stop()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
