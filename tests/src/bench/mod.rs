//! The farm benchmark: nvfarm's real controller and agents with simulated rigs on loopback, measured the way a
//! lab uses them, side by side with labgrid's numbers for the same operations (measured by
//! `scripts/bench_labgrid.py` in the same run; `scripts/bench-farm.sh` runs both and this prints the table).
//!
//! What is measured, and the shape of the JSON both sides produce ([`run`] returns it):
//! - `cli_cycle`: one reserve + release through the CLI (`farmctl reserve --rig R` + `farmctl release ID`);
//! - `grpc.{1,8,32}`: reserve + release cycles through the gRPC API from that many concurrent clients, each on
//!   its own rig: cycles/s, p50/p99 of a cycle;
//! - `release_grant`: a client waiting on a rig (its watch stream open) sees the grant after the holder released;
//! - `register_1000`: a 1000-rig agent, from its start until the controller lists every rig idle;
//! - `list_1000`: `farmctl rigs` with 1000 rigs (10 agents x 100), and the controller's RSS;
//! - `queued.{2000,10000}`: that many waiting (detached) requests for a rig that is held; then an unrelated
//!   reserve + release (p50/p99), listing the queue (gRPC `Queue`), the idle controller's CPU over 5 s, its RSS.

mod table;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tonic::transport::Channel;

use nvfarm_proto::v1::farm_client::FarmClient;
use nvfarm_proto::v1::{
    ListRigsRequest, Priority, QueueRequest, ReleaseRequest, ReserveRequest, RigState, Selector,
    WatchRequestRequest,
};

use crate::lab::Lab;

pub use table::table;

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Fewer repetitions and smaller queues (a smoke run).
    pub quick: bool,
}

impl Options {
    fn reps(&self) -> usize {
        if self.quick {
            3
        } else {
            10
        }
    }
    fn cycle_secs(&self) -> f64 {
        if self.quick {
            1.0
        } else {
            3.0
        }
    }
    /// The queue depths measured.
    pub fn depths(&self) -> [usize; 2] {
        if self.quick {
            [200, 1000]
        } else {
            [2000, 10000]
        }
    }
}

/// Building a queue longer than this is reported as not measurable (the controller is too slow at that depth).
const QUEUE_BUILD_LIMIT: Duration = Duration::from_secs(120);

/// The controller's settings for the benchmark: the defaults, with heartbeats as the tests use them.
const CONTROLLER_TOML: &str = "";

/// `q`-th percentile (nearest rank) of `v`, in ms.
pub fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn latency(v: &[f64]) -> Value {
    json!({"p50_ms": pct(v, 50.0), "p99_ms": pct(v, 99.0), "n": v.len()})
}

type Client = FarmClient<Channel>;

async fn client(url: &str) -> Result<Client, String> {
    let ch = nvfarm_proto::client::controller_endpoint(url)?
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    Ok(FarmClient::new(ch).max_decoding_message_size(256 << 20))
}

fn rig_selector(rig: &str) -> Option<Selector> {
    Some(Selector {
        rig: rig.to_string(),
        labels: Default::default(),
    })
}

fn reserve(rig: &str, wait: bool, detach: bool) -> ReserveRequest {
    ReserveRequest {
        selector: rig_selector(rig),
        duration_ms: 3_600_000,
        priority: Priority::Interactive as i32,
        wait,
        holder: String::new(),
        detach,
    }
}

/// One reserve + release of `rig`.
async fn cycle(c: &mut Client, rig: &str) -> Result<(), String> {
    let r = c
        .reserve(reserve(rig, false, false))
        .await
        .map_err(|e| format!("reserve {rig}: {}", e.message()))?
        .into_inner();
    let lease = r
        .lease
        .ok_or_else(|| format!("reserve {rig}: not granted"))?;
    c.release(ReleaseRequest { lease_id: lease.id })
        .await
        .map_err(|e| format!("release on {rig}: {}", e.message()))?;
    Ok(())
}

/// `clients` concurrent clients, each cycling its own rig (`rigs[i]`) for `secs`.
async fn cycles(url: &str, rigs: &[String], clients: usize, secs: f64) -> Result<Value, String> {
    let mut tasks = vec![];
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    for rig in rigs.iter().take(clients) {
        let rig = rig.clone();
        let mut c = client(url).await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < stop {
                let t = Instant::now();
                cycle(&mut c, &rig).await?;
                lat.push(ms(t.elapsed()));
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())??);
    }
    let took = t0.elapsed().as_secs_f64();
    Ok(json!({
        "cycles_per_s": lat.len() as f64 / took,
        "p50_ms": pct(&lat, 50.0),
        "p99_ms": pct(&lat, 99.0),
        "n": lat.len(),
    }))
}

/// A holds `rig`; B waits for it with its watch stream open; A releases; B's stream shows the grant.
async fn release_grant(url: &str, rig: &str, reps: usize) -> Result<Value, String> {
    let mut a = client(url).await?;
    let mut b = client(url).await?;
    let mut seen = vec![];
    for _ in 0..reps {
        let held = a
            .reserve(reserve(rig, false, false))
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner()
            .lease
            .ok_or("the holder was not granted the rig")?;
        let q = b
            .reserve(reserve(rig, true, false))
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        if q.lease.is_some() {
            return Err("the waiter was granted a held rig".into());
        }
        let mut stream = b
            .watch_request(WatchRequestRequest {
                request_id: q.request_id.clone(),
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        // The stream's first update says where it waits: from then on it is watching.
        stream
            .message()
            .await
            .map_err(|e| e.message().to_string())?
            .ok_or("the watch stream ended at once")?;
        let t = Instant::now();
        a.release(ReleaseRequest { lease_id: held.id })
            .await
            .map_err(|e| e.message().to_string())?;
        let granted = loop {
            let u = stream
                .message()
                .await
                .map_err(|e| e.message().to_string())?
                .ok_or("the watch stream ended without a grant")?;
            if let Some(l) = u.lease {
                break l;
            }
        };
        seen.push(ms(t.elapsed()));
        b.release(ReleaseRequest {
            lease_id: granted.id,
        })
        .await
        .map_err(|e| e.message().to_string())?;
    }
    Ok(latency(&seen))
}

/// Polls `ListRigs` until `n` rigs are idle (or `within` passes); how long that took.
async fn until_idle(url: &str, n: usize, within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        if let Ok(mut c) = client(url).await {
            if let Ok(r) = c.list_rigs(ListRigsRequest::default()).await {
                let idle = r
                    .into_inner()
                    .rigs
                    .iter()
                    .filter(|r| r.state == RigState::RigIdle as i32)
                    .count();
                if idle >= n {
                    return Ok(t.elapsed());
                }
            }
        }
        if t.elapsed() > within {
            return Err(format!("{n} rigs were not idle within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resident memory of process `pid`, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS:").map_or(f64::NAN, |k| k / 1024.0)
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Percent of one core process `pid` used over `over`.
pub fn cpu_pct(pid: u32, over: Duration) -> f64 {
    // /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 on x86 and arm.
    let hz = 100.0;
    let before = cpu_ticks(pid);
    std::thread::sleep(over);
    match (before, cpu_ticks(pid)) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / hz / over.as_secs_f64() * 100.0,
        _ => f64::NAN,
    }
}

/// Wall time of `farmctl ARGS`, `reps` times.
fn farmctl_times(lab: &Lab, args: &[&str], reps: usize) -> Result<Vec<f64>, String> {
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        let o = lab.farmctl(args);
        if o.code != 0 {
            return Err(format!("farmctl {}: {}", args.join(" "), o.all()));
        }
        v.push(ms(t.elapsed()));
    }
    Ok(v)
}

/// The small lab: one agent with 40 rigs; CLI and gRPC cycles, release → grant.
fn small(opts: Options, rt: &tokio::runtime::Runtime, out: &mut Value) -> Result<(), String> {
    let mut lab = Lab::new(CONTROLLER_TOML);
    lab.start_controller();
    let file = lab.rigs("bench-a", 40);
    lab.start_agent("bench-a", &file, None);
    let url = lab.url();
    rt.block_on(until_idle(&url, 40, Duration::from_secs(60)))?;
    let mut cli = vec![];
    for _ in 0..opts.reps() {
        let t = Instant::now();
        let r = lab.farmctl(&["--json", "reserve", "--rig", "bench-a-r40", "--for", "1m"]);
        if r.code != 0 {
            return Err(format!("farmctl reserve: {}", r.all()));
        }
        let id = r.json()["id"].as_str().unwrap_or_default().to_string();
        let o = lab.farmctl(&["release", &id]);
        if o.code != 0 {
            return Err(format!("farmctl release: {}", o.all()));
        }
        cli.push(ms(t.elapsed()));
    }
    out["cli_cycle"] = latency(&cli);
    let rigs: Vec<String> = (1..=32).map(|i| format!("bench-a-r{i}")).collect();
    let mut grpc = json!({});
    for c in [1, 8, 32] {
        grpc[c.to_string()] = rt.block_on(cycles(&url, &rigs, c, opts.cycle_secs()))?;
    }
    out["grpc"] = grpc;
    out["release_grant"] = rt.block_on(release_grant(
        &url,
        "bench-a-r39",
        if opts.quick { 10 } else { 50 },
    ))?;
    Ok(())
}

/// A 1000-rig agent registering with a fresh controller.
fn register(rt: &tokio::runtime::Runtime, out: &mut Value) -> Result<(), String> {
    let mut lab = Lab::new(CONTROLLER_TOML);
    lab.start_controller();
    let file = lab.rigs("big", 1000);
    // The drives are created by a first start (not part of registering); then the agent is started again.
    lab.start_agent("big", &file, None);
    let url = lab.url();
    rt.block_on(until_idle(&url, 1000, Duration::from_secs(300)))?;
    settle();
    lab.stop_agent("big", nix::sys::signal::Signal::SIGKILL);
    lab.stop_controller(nix::sys::signal::Signal::SIGTERM);
    lab.start_controller();
    let t = Instant::now();
    lab.start_agent("big", &file, None);
    rt.block_on(until_idle(&url, 1000, Duration::from_secs(300)))?;
    out["register_1000"] = json!({"s": t.elapsed().as_secs_f64(), "resources": 1000});
    Ok(())
}

/// Writes back the page cache: the agents' fresh drive files (1000 x 64 MiB) otherwise sit dirty and every
/// fsync the controller does waits behind their writeback, which measures the disk, not the controller.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// 10 agents x 100 rigs: listing, RSS; then the queues.
fn big(opts: Options, rt: &tokio::runtime::Runtime, out: &mut Value) -> Result<(), String> {
    let mut lab = Lab::new(CONTROLLER_TOML);
    lab.start_controller();
    for a in 0..10 {
        let name = format!("a{a}");
        let file = lab.rigs(&name, 100);
        lab.start_agent(&name, &file, None);
    }
    let url = lab.url();
    rt.block_on(until_idle(&url, 1000, Duration::from_secs(300)))?;
    settle();
    let pid = lab
        .controller_pid()
        .ok_or("the controller is not running")?;
    let times = farmctl_times(&lab, &["rigs"], opts.reps())?;
    let listed = lab.rigs_json().len();
    let mut l = latency(&times);
    l["rss_mib"] = json!(rss_mib(pid));
    l["listed"] = json!(listed);
    out["list_1000"] = l;

    // A held rig everyone queues for.
    let busy = "a0-r1";
    let mut c = rt.block_on(client(&url))?;
    rt.block_on(c.reserve(reserve(busy, false, false)))
        .map_err(|e| e.message().to_string())?;
    let mut queued = json!({});
    let mut have = 0usize;
    let build = Instant::now();
    for n in opts.depths() {
        let built = rt.block_on(async {
            let mut clients = vec![];
            for _ in 0..16 {
                clients.push(client(&url).await?);
            }
            while have < n {
                if build.elapsed() > QUEUE_BUILD_LIMIT {
                    return Ok::<_, String>(false);
                }
                let batch = (n - have).min(clients.len());
                let mut tasks = vec![];
                for c in clients.iter().take(batch).cloned() {
                    let mut c = c;
                    tasks.push(tokio::spawn(async move {
                        c.reserve(reserve(busy, false, true))
                            .await
                            .map_err(|e| e.message().to_string())
                    }));
                }
                for t in tasks {
                    t.await.map_err(|e| e.to_string())??;
                }
                have += batch;
            }
            Ok(true)
        })?;
        if !built {
            queued[n.to_string()] = json!({"n/a": format!(
                "building the queue took over {}s ({have} of {n} submitted)",
                QUEUE_BUILD_LIMIT.as_secs()
            )});
            break;
        }
        let create_s = build.elapsed().as_secs_f64();
        let lat = rt.block_on(async {
            let mut lat = vec![];
            let mut c = client(&url).await?;
            for i in 0..if opts.quick { 50 } else { 200 } {
                let rig = format!("a{}-r{}", 1 + i % 9, 2 + i % 99);
                let t = Instant::now();
                cycle(&mut c, &rig).await?;
                lat.push(ms(t.elapsed()));
            }
            Ok::<_, String>(lat)
        })?;
        let t = Instant::now();
        let listed = rt
            .block_on(c.queue(QueueRequest {}))
            .map_err(|e| e.message().to_string())?
            .into_inner()
            .entries
            .len();
        let list_ms = ms(t.elapsed());
        let idle = cpu_pct(pid, Duration::from_secs(if opts.quick { 2 } else { 5 }));
        queued[n.to_string()] = json!({
            "reserve_p50_ms": pct(&lat, 50.0),
            "reserve_p99_ms": pct(&lat, 99.0),
            "list_ms": list_ms,
            "listed": listed,
            "create_s": create_s,
            "idle_cpu_pct": idle,
            "rss_mib": rss_mib(pid),
        });
    }
    out["queued"] = queued;
    Ok(())
}

/// Runs every measurement on nvfarm; the JSON has the shape described at the top.
pub fn run(opts: Options) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = json!({"tool": "nvfarm", "version": env!("CARGO_PKG_VERSION")});
    eprintln!("farmbench: small lab (40 rigs): CLI and gRPC cycles, release -> grant");
    small(opts, &rt, &mut out)?;
    eprintln!("farmbench: a 1000-rig agent registering");
    register(&rt, &mut out)?;
    eprintln!("farmbench: 10 agents x 100 rigs: listing, then the queues");
    big(opts, &rt, &mut out)?;
    Ok(out)
}
