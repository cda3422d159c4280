//! The chaos suite: the real binaries on loopback under a mixed load while faults are injected, each experiment
//! checked against the farm's steady-state hypothesis before, during and after (see [`check`]).
//!
//! An experiment: the farm is in service (every rig idle, or quarantined with a reason) → a queue-order probe is
//! set up (the probe rig is reserved and three requests queue behind it) → the load starts ([`load`]) → one
//! fault is injected at a random point and healed ([`faults`]) → the load stops → the probe's requests are
//! granted one by one → the farm must settle (every job ended and let go of its rig, every rig back in service
//! or quarantined with a reason) within a bound → the hypothesis is checked on everything the clients saw, the
//! agents' lease journals and the controller's final word → the farm is repaired for the next experiment
//! (quarantined rigs restored). Runs are reproducible from their seed.
//!
//! - [`farm`]: the farm under test; [`proxy`]: the failing agent link; [`load`]: the clients;
//!   [`faults`]: what is injected; [`check`]: the hypothesis.

pub mod check;
pub mod farm;
pub mod faults;
pub mod load;
pub mod proxy;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvfarm_model::time::now_ms;
use serde_json::Value;

use check::{Ledger, Probe};
use farm::{ChaosFarm, AGENTS, PROBE_RIG};
use faults::Fault;
use load::LoadCtx;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed for every random choice (printed, so a run can be replayed).
    pub seed: u64,
    /// The faults to cycle through.
    pub faults: Vec<Fault>,
    /// Run each fault this many times (the quick variant: once) ...
    pub rounds: u32,
    /// ... or keep going until this much time has passed (the long variant).
    pub duration: Option<Duration>,
    /// Print each experiment's result as it ends.
    pub verbose: bool,
}

/// One experiment's counts.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Experiments run.
    pub experiments: u32,
    /// Fault points injected.
    pub points: u32,
    /// Jobs acknowledged to clients (farmctl run printed their id).
    pub acked_jobs: u32,
    /// Jobs the controller ran in all (runs, sweeps, health checks).
    pub jobs: u32,
    /// Reservations granted to clients.
    pub reservations: u32,
    /// Acknowledged jobs or reservations lost or never ended.
    pub lost: u32,
    /// Two leases holding one rig at once.
    pub double_grants: u32,
    /// Rigs neither back in service nor quarantined with a reason.
    pub stuck: u32,
    /// Outcomes that changed after they were reported, or blamed the wrong party.
    pub wrong: u32,
    /// Requests granted out of queue order.
    pub order: u32,
    /// Clients or daemons that did not end in bounded time.
    pub hung: u32,
    /// How the controller's jobs ended, by state.
    pub outcomes: BTreeMap<String, u32>,
    /// The slowest SIGTERM stop of the controller (ms).
    pub max_sigterm_ms: u64,
    /// The slowest return of an agent's rigs after the fault healed (ms).
    pub max_back_ms: u64,
}

impl Row {
    fn add(&mut self, o: &Row) {
        self.experiments += o.experiments;
        self.points += o.points;
        self.acked_jobs += o.acked_jobs;
        self.jobs += o.jobs;
        self.reservations += o.reservations;
        self.lost += o.lost;
        self.double_grants += o.double_grants;
        self.stuck += o.stuck;
        self.wrong += o.wrong;
        self.order += o.order;
        self.hung += o.hung;
        for (k, n) in &o.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += n;
        }
        self.max_sigterm_ms = self.max_sigterm_ms.max(o.max_sigterm_ms);
        self.max_back_ms = self.max_back_ms.max(o.max_back_ms);
    }

    /// Whether nothing was violated.
    pub fn clean(&self) -> bool {
        self.lost + self.double_grants + self.stuck + self.wrong + self.order + self.hung == 0
    }
}

/// A whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed it ran with.
    pub seed: u64,
    /// Per fault kind.
    pub rows: BTreeMap<Fault, Row>,
    /// Every violation, with the experiment it happened in.
    pub violations: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Report {
    /// The sum of all rows.
    pub fn total(&self) -> Row {
        let mut t = Row::default();
        for r in self.rows.values() {
            t.add(r);
        }
        t
    }

    /// Whether the hypothesis held throughout.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.total().clean()
    }

    /// The report as JSON: the rows by fault name, the total, the violations.
    pub fn to_json(&self) -> Value {
        let row = |r: &Row| {
            serde_json::json!({
                "experiments": r.experiments, "points": r.points, "acked_jobs": r.acked_jobs,
                "jobs": r.jobs, "reservations": r.reservations, "lost": r.lost,
                "double_grants": r.double_grants, "stuck": r.stuck, "wrong": r.wrong,
                "order": r.order, "hung": r.hung, "max_sigterm_ms": r.max_sigterm_ms,
                "max_back_ms": r.max_back_ms, "outcomes": r.outcomes,
            })
        };
        serde_json::json!({
            "seed": self.seed,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "faults": self.rows.iter().map(|(f, r)| (f.name().to_string(), row(r))).collect::<serde_json::Map<_, _>>(),
            "total": row(&self.total()),
            "violations": self.violations,
        })
    }

    /// The table: one row per fault kind and a total.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<19} {:>5} {:>6} {:>6} {:>5} {:>6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>5} {:>8} {:>8}",
            "fault",
            "exps",
            "points",
            "acked",
            "jobs",
            "resv",
            "lost",
            "double",
            "stuck",
            "wrong",
            "order",
            "hung",
            "sigterm",
            "back"
        );
        let line = |s: &mut String, name: &str, r: &Row| {
            let _ = writeln!(
                s,
                "{:<19} {:>5} {:>6} {:>6} {:>5} {:>6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>5} {:>8} {:>8}",
                name,
                r.experiments,
                r.points,
                r.acked_jobs,
                r.jobs,
                r.reservations,
                r.lost,
                r.double_grants,
                r.stuck,
                r.wrong,
                r.order,
                r.hung,
                if r.max_sigterm_ms > 0 { format!("{}ms", r.max_sigterm_ms) } else { "-".into() },
                if r.max_back_ms > 0 { format!("{}ms", r.max_back_ms) } else { "-".into() },
            );
        };
        for (f, r) in &self.rows {
            line(&mut s, f.name(), r);
        }
        line(&mut s, "total", &self.total());
        let _ = writeln!(
            s,
            "seed {} · {:.0} s · lost, double, stuck, wrong, order and hung must all be 0",
            self.seed,
            self.elapsed.as_secs_f64()
        );
        s
    }
}

/// Runs the suite: starts a farm, runs the experiments, returns the report (an error if the farm cannot start).
pub fn run(opts: &Options) -> Result<Report, String> {
    let t0 = Instant::now();
    let mut farm = ChaosFarm::start()?;
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut report = Report {
        seed: opts.seed,
        ..Report::default()
    };
    let mut n = 0u32;
    'outer: for round in 0.. {
        if opts.duration.is_none() && round >= opts.rounds {
            break;
        }
        let mut order = opts.faults.clone();
        if round > 0 {
            rng.shuffle(&mut order);
        }
        for fault in order {
            if opts.duration.is_some_and(|d| t0.elapsed() >= d) {
                break 'outer;
            }
            n += 1;
            let seed = rng.u64(..);
            let (row, violations) = experiment(&mut farm, fault, seed);
            if opts.verbose {
                eprintln!(
                    "chaos: #{n} {} (seed {seed}): {} point(s), {} acked job(s), jobs {:?}, {} violation(s)",
                    fault.name(),
                    row.points,
                    row.acked_jobs,
                    row.outcomes,
                    violations.len()
                );
                for v in &violations {
                    eprintln!("chaos:   {v}");
                }
            }
            report.violations.extend(
                violations
                    .into_iter()
                    .map(|v| format!("#{n} {}: {v}", fault.name())),
            );
            report.rows.entry(fault).or_default().add(&row);
        }
    }
    report.elapsed = t0.elapsed();
    Ok(report)
}

/// How long the farm has to settle after the load stops.
const SETTLE: Duration = Duration::from_secs(60);

fn experiment(farm: &mut ChaosFarm, fault: Fault, seed: u64) -> (Row, Vec<String>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<String> = vec![];
    let mut row = Row {
        experiments: 1,
        ..Row::default()
    };
    let start_ms = now_ms();
    // Before: the farm is in service.
    let before = check::stuck_rigs(&farm.rigs());
    v.extend(before.into_iter().map(|s| format!("before the fault: {s}")));
    let ctx = LoadCtx {
        url: farm.url(),
        dir: farm.lab.path("clients"),
        plan: farm.plan.clone(),
        good: farm.good.clone(),
        boot_fail: farm.boot_fail.clone(),
        ledger: Arc::new(Mutex::new(Ledger::default())),
        hung: Arc::new(Mutex::new(vec![])),
        seq: Arc::new(AtomicU64::new(0)),
    };
    let _ = std::fs::create_dir_all(&ctx.dir);
    let probe = probe_setup(farm, &mut v);
    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let x1: Vec<&'static str> = AGENTS
        .iter()
        .flat_map(|(_, r)| r.iter().copied())
        .filter(|r| *r != PROBE_RIG)
        .collect();
    let mut threads = vec![];
    for i in 0..5u64 {
        let (ctx, stop, s) = (ctx.clone(), stop.clone(), seed ^ (i + 1));
        let x1 = x1.clone();
        threads.push(std::thread::spawn(move || match i {
            0 | 1 => load::ci_runs(&ctx, &stop, s),
            2 => load::reservations(&ctx, &stop, s),
            3 => load::sweeps(&ctx, &stop, s),
            _ => load::operator(&ctx, &stop, s, &x1),
        }));
    }
    // During: the fault, at a random point of the load.
    std::thread::sleep(Duration::from_millis(rng.u64(300..1_500)));
    let injected = faults::inject(farm, fault, &mut rng);
    row.points = injected.points;
    row.max_sigterm_ms = injected.sigterm_ms.unwrap_or(0);
    row.max_back_ms = injected.back_ms.unwrap_or(0);
    v.extend(injected.violations);
    if matches!(
        fault,
        Fault::AgentKill
            | Fault::AgentPauseLong
            | Fault::LinkStall
            | Fault::LinkDrop
            | Fault::LinkReset
    ) && injected.back_ms.is_none()
    {
        v.push("the agent's rigs did not come back within 30 s of the fault healing".into());
    }
    // The farm answers while it recovers.
    if farm.lab.farmctl(&["--json", "rigs"]).code != 0 {
        std::thread::sleep(Duration::from_secs(2));
        let o = farm.lab.farmctl(&["--json", "rigs"]);
        if o.code != 0 {
            v.push(format!(
                "the controller does not answer after the fault: {}",
                o.stderr.trim()
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(rng.u64(500..1_500)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // The probe's requests are granted in order.
    let probe = probe_drain(farm, probe, &mut v);
    // After: the farm settles.
    let settled = farm.wait_for("the farm to settle", SETTLE, || settled(farm));
    if let Err(e) = settled {
        v.push(e);
    }
    let end_ms = now_ms();
    let mut ledger = ctx.ledger.lock().expect("ledger").clone();
    ledger.probes.extend(probe);
    for mut f in injected.drive_faults {
        f.to_ms = f.to_ms.min(end_ms);
        ledger.drive_faults.push(f);
    }
    // The controller's final word on every job of this experiment.
    let recent: Vec<Value> = farm
        .jobs(1000)
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["created_ms"].as_u64().unwrap_or(0) >= start_ms)
        .collect();
    let mut jobs: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for r in &ledger.runs {
        if let Some(id) = &r.job {
            let found = recent.iter().find(|j| j["id"] == id.as_str()).cloned();
            let found = match found {
                Some(j) => Some(j),
                None => farm.job(id).flatten(),
            };
            jobs.insert(id.clone(), found);
        }
    }
    let tracked: Vec<&str> = jobs.keys().map(String::as_str).collect();
    let others: Vec<Value> = recent
        .iter()
        .filter(|j| !tracked.contains(&j["id"].as_str().unwrap_or("")))
        .cloned()
        .collect();
    row.acked_jobs = jobs.len() as u32;
    row.jobs = recent.len() as u32;
    for j in &recent {
        *row.outcomes
            .entry(j["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    row.reservations = ledger.reservations.len() as u32;
    let lost = check::lost_jobs(&ledger.runs, &jobs, &others);
    let lost_resv = check::lost_reservations(&ledger.reservations);
    let (spans, _torn) = farm.journal_spans();
    let spans: Vec<_> = spans
        .into_iter()
        .filter(|s| s.to_ms.is_none_or(|t| t >= start_ms))
        .collect();
    let double = check::double_grants(&check::held_spans(&spans, &ledger.reservations, end_ms));
    let mut wrong = check::reported_outcomes(&ledger.runs, &jobs);
    wrong.extend(check::wrong_blame(&recent, &ledger.drive_faults));
    let order = check::order_violations(&ledger.probes);
    let stuck = check::stuck_rigs(&farm.rigs());
    let hung = ctx.hung.lock().expect("hung").clone();
    row.lost = (lost.len() + lost_resv.len()) as u32;
    row.double_grants = double.len() as u32;
    row.wrong = wrong.len() as u32;
    row.order = order.len() as u32;
    row.stuck = stuck.len() as u32;
    row.hung = hung.len() as u32 + v.iter().filter(|s| s.contains("to stop after")).count() as u32;
    for (what, list) in [
        ("lost", lost),
        ("lost reservation", lost_resv),
        ("double grant", double),
        ("wrong outcome", wrong),
        ("queue order", order),
        ("stuck", stuck),
        ("hung", hung),
    ] {
        v.extend(list.into_iter().map(|s| format!("{what}: {s}")));
    }
    repair(farm, &mut v);
    (row, v)
}

/// Every job ended and let go of its rig, and every rig is idle or quarantined with a reason.
fn settled(farm: &ChaosFarm) -> bool {
    let Some(jobs) = farm.jobs(200) else {
        return false;
    };
    let rigs = farm.rigs();
    !rigs.is_empty()
        && jobs
            .iter()
            .all(|j| check::terminal(j["state"].as_str().unwrap_or("")) && j["settled"] != false)
        && check::stuck_rigs(&rigs).is_empty()
}

/// Reserves the probe rig and queues three detached requests behind it.
fn probe_setup(farm: &ChaosFarm, v: &mut Vec<String>) -> Option<(String, Probe)> {
    let o = farm
        .lab
        .farmctl(&["--json", "reserve", "--rig", PROBE_RIG, "--for", "2m"]);
    if o.code != 0 {
        v.push(format!(
            "probe: cannot reserve {PROBE_RIG}: {}",
            o.stderr.trim()
        ));
        return None;
    }
    let holder = o.json()["id"].as_str().unwrap_or_default().to_string();
    let mut p = Probe {
        rig: PROBE_RIG.into(),
        ..Probe::default()
    };
    for _ in 0..3 {
        let o = farm.lab.farmctl(&[
            "--json", "reserve", "--rig", PROBE_RIG, "--for", "2m", "--detach",
        ]);
        if o.code != 0 {
            v.push(format!("probe: cannot queue: {}", o.stderr.trim()));
            continue;
        }
        p.queued.push(
            o.json()["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Some((holder, p))
}

/// Releases the probe's holder and each probe request as it is granted, recording the order.
fn probe_drain(
    farm: &ChaosFarm,
    probe: Option<(String, Probe)>,
    v: &mut Vec<String>,
) -> Option<Probe> {
    let (holder, mut p) = probe?;
    let release = |lease: &str, v: &mut Vec<String>| {
        let t = Instant::now();
        loop {
            let o = farm.lab.farmctl(&["release", lease]);
            if o.code == 0 {
                return;
            }
            if t.elapsed() > Duration::from_secs(20) {
                v.push(format!(
                    "probe: cannot release {lease}: {}",
                    o.stderr.trim()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    release(&holder, v);
    let t = Instant::now();
    while p.granted.len() < p.queued.len() && t.elapsed() < Duration::from_secs(40) {
        let rig = farm.rigs_by_name().remove(PROBE_RIG);
        let lease = rig.as_ref().map(|r| &r["lease"]);
        if let Some(l) = lease.filter(|l| !l.is_null()) {
            let req = l["request_id"].as_str().unwrap_or_default().to_string();
            let id = l["id"].as_str().unwrap_or_default().to_string();
            if p.queued.contains(&req) && !p.granted.contains(&req) {
                p.granted.push(req);
                release(&id, v);
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(p)
}

/// Gets the farm ready for the next experiment: drive faults cleared, quarantined rigs restored and back.
fn repair(farm: &ChaosFarm, v: &mut Vec<String>) {
    for (_, rigs) in AGENTS {
        for rig in rigs {
            let dir = farm.sim_dir(rig);
            let _ =
                farm.lab
                    .nvme_flash(&["sim", "fault", dir.to_str().unwrap_or_default(), "clear"]);
        }
    }
    for r in farm.rigs() {
        if r["state"] != "idle" {
            let name = r["name"].as_str().unwrap_or_default();
            let _ = farm.lab.farmctl(&["rig", "restore", name]);
        }
    }
    if let Err(e) = farm.wait_for("every rig back in service", Duration::from_secs(60), || {
        let r = farm.rigs();
        !r.is_empty() && r.iter().all(|x| x["state"] == "idle")
    }) {
        let states: Vec<String> = farm
            .rigs()
            .iter()
            .map(|r| format!("{}={} {}", r["name"], r["state"], r["reason"]))
            .collect();
        v.push(format!("repair: {e}: {}", states.join(", ")));
    }
}
