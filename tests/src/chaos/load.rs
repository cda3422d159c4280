//! The mixed load, as real `farmctl` processes on threads, each recording what its client saw in the shared
//! [`Ledger`]: CI runs (good builds and builds that do not boot), reservations with and without `--wait`,
//! sweeps, and an operator quarantining and restoring rigs. Every client runs under a deadline; one that does
//! not end by itself is killed and reported as hung.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvfarm_model::time::now_ms;

use super::check::{Build, Ledger, ReservationRecord, RunRecord};
use crate::bin;

/// What every load client needs.
#[derive(Clone, Debug)]
pub struct LoadCtx {
    /// The controller's URL.
    pub url: String,
    /// Where JUnit files go.
    pub dir: PathBuf,
    /// The plan.
    pub plan: PathBuf,
    /// A good build.
    pub good: String,
    /// A build that does not boot.
    pub boot_fail: String,
    /// What the clients saw.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Clients that had to be killed.
    pub hung: Arc<Mutex<Vec<String>>>,
    /// Unique file names.
    pub seq: Arc<AtomicU64>,
}

/// A finished client.
struct Done {
    code: i32,
    stdout: String,
    stderr: String,
}

impl LoadCtx {
    fn farmctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("farmctl"));
        c.args(["--controller", &self.url])
            .args(args)
            .env_remove("FARM_TOKEN")
            .env_remove("FARM_CONTROLLER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a client to its end, or kills it after `deadline` (then `None`, and it is reported as hung unless
    /// `kill_is_expected`).
    fn run(&self, mut cmd: Command, deadline: Duration, kill_is_expected: bool) -> Option<Done> {
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().expect("spawn farmctl");
        // Drain the pipes on threads so a chatty client never blocks on a full pipe.
        let mut so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait farmctl") {
                break Some(st);
            }
            if t.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            Some(st) => Some(Done {
                code: st.code().unwrap_or(-1),
                stdout,
                stderr,
            }),
            None => {
                if !kill_is_expected {
                    self.hung.lock().expect("hung").push(format!(
                        "{what} did not end within {deadline:?}; its output: {}",
                        stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    ));
                }
                None
            }
        }
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// Sleeps up to `d`, waking early when `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// The job id in `farmctl run`'s "job job-000012 submitted" note.
fn submitted_job(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = &l[l.find("job job-")? + 4..];
        let id: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        rest[id.len()..].starts_with(" submitted").then_some(id)
    })
}

/// CI runs until `stop`: one in five flashes a build that does not boot.
pub fn ci_runs(ctx: &LoadCtx, stop: &AtomicBool, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let build = if rng.u8(..100) < 20 {
            Build::BootFail
        } else {
            Build::Good
        };
        let fw = match build {
            Build::Good => ctx.good.clone(),
            Build::BootFail => ctx.boot_fail.clone(),
        };
        let junit = ctx.dir.join(format!("junit-{}.xml", ctx.next()));
        let from_ms = now_ms();
        let cmd = ctx.farmctl(&[
            "--json",
            "run",
            "--firmware",
            &fw,
            "--plan",
            ctx.plan.to_str().expect("utf-8 path"),
            "--labels",
            "model=X1",
            "--timeout",
            "40s",
            "--junit",
            junit.to_str().expect("utf-8 path"),
        ]);
        let Some(done) = ctx.run(cmd, Duration::from_secs(120), false) else {
            continue;
        };
        let job = submitted_job(&done.stderr);
        let report: Option<serde_json::Value> = serde_json::from_str(&done.stdout).ok();
        let state = report
            .as_ref()
            .and_then(|j| j["state"].as_str())
            .map(str::to_string);
        let rig = report
            .as_ref()
            .and_then(|j| j["rig"].as_str())
            .map(str::to_string);
        let submitted = job.is_some();
        ctx.ledger.lock().expect("ledger").runs.push(RunRecord {
            job,
            exit: done.code,
            state,
            rig,
            build,
            from_ms,
            to_ms: now_ms(),
            junit: junit.exists(),
        });
        if !submitted {
            // No rig could take it (all out of service) or the controller was away: try again shortly.
            nap(stop, Duration::from_millis(300));
        }
    }
}

/// Releases `lease`, retrying while the controller does not answer, until it answers or the lease's expiry is
/// well past.
fn release(ctx: &LoadCtx, r: &mut ReservationRecord) {
    r.release_sent_ms = Some(now_ms());
    loop {
        let Some(done) = ctx.run(
            ctx.farmctl(&["release", &r.lease]),
            Duration::from_secs(30),
            false,
        ) else {
            r.release = Some(Err("release hung".into()));
            return;
        };
        if done.code == 0 {
            r.release = Some(Ok(()));
            return;
        }
        let answered = done.stderr.contains("no active lease");
        if answered || now_ms() > r.expires_ms.saturating_add(3_000) {
            r.release = Some(Err(done.stderr.trim().to_string()));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reservations until `stop`: at once or waiting, held for a while (sometimes past their end), then released.
pub fn reservations(ctx: &LoadCtx, stop: &AtomicBool, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let secs = rng.u64(2..6).to_string();
        let wait = rng.bool();
        let mut args = vec!["--json", "reserve", "--labels", "model=X1", "--for", &secs];
        if wait {
            args.push("--wait");
        }
        // A waiting client gives up (is killed) after a while: the controller must withdraw its request.
        let deadline = if wait {
            Duration::from_secs(rng.u64(2..12))
        } else {
            Duration::from_secs(30)
        };
        let Some(done) = ctx.run(ctx.farmctl(&args), deadline, wait) else {
            continue;
        };
        if done.code != 0 {
            nap(stop, Duration::from_millis(200));
            continue;
        }
        let Ok(lease) = serde_json::from_str::<serde_json::Value>(&done.stdout) else {
            continue;
        };
        let mut rec = ReservationRecord {
            lease: lease["id"].as_str().unwrap_or_default().to_string(),
            rig: lease["rig"].as_str().unwrap_or_default().to_string(),
            seen_ms: now_ms(),
            expires_ms: lease["expires_ms"].as_u64().unwrap_or(0),
            release_sent_ms: None,
            release: None,
        };
        let hold = Duration::from_millis(rng.u64(100..3_000));
        nap(stop, hold);
        release(ctx, &mut rec);
        ctx.ledger.lock().expect("ledger").reservations.push(rec);
    }
}

/// Sweeps of the good build over every X1 rig until `stop`.
pub fn sweeps(ctx: &LoadCtx, stop: &AtomicBool, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    nap(stop, Duration::from_millis(rng.u64(500..2_000)));
    while !stop.load(Ordering::Relaxed) {
        let junit = ctx.dir.join(format!("sweep-{}.xml", ctx.next()));
        let cmd = ctx.farmctl(&[
            "--json",
            "sweep",
            "--firmware",
            &ctx.good,
            "--plan",
            ctx.plan.to_str().expect("utf-8 path"),
            "--labels",
            "model=X1",
            "--name",
            "chaos-sweep",
            "--timeout",
            "40s",
            "--junit",
            junit.to_str().expect("utf-8 path"),
        ]);
        if let Some(done) = ctx.run(cmd, Duration::from_secs(150), false) {
            if !junit.exists() {
                ctx.hung.lock().expect("hung").push(format!(
                    "farmctl sweep exited {} without JUnit: {}",
                    done.code,
                    done.stderr.lines().last().unwrap_or("")
                ));
            }
        }
        nap(stop, Duration::from_millis(rng.u64(1_000..3_000)));
    }
}

/// An operator until `stop`: quarantines an X1 rig now and then and restores it shortly after.
pub fn operator(ctx: &LoadCtx, stop: &AtomicBool, seed: u64, rigs: &[&str]) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        nap(stop, Duration::from_millis(rng.u64(1_000..3_000)));
        let rig = rigs[rng.usize(..rigs.len())];
        let Some(done) = ctx.run(
            ctx.farmctl(&[
                "rig",
                "quarantine",
                rig,
                "--reason",
                "chaos: operator check",
            ]),
            Duration::from_secs(30),
            false,
        ) else {
            continue;
        };
        if done.code != 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(rng.u64(200..1_000)));
        // Restore it, whatever happens to the controller meanwhile.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            match ctx.run(
                ctx.farmctl(&["rig", "restore", rig]),
                Duration::from_secs(30),
                false,
            ) {
                Some(d) if d.code == 0 => break,
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::submitted_job;

    #[test]
    fn the_job_id_comes_from_the_submission_note() {
        assert_eq!(
            submitted_job("farmctl: uploading\nfarmctl: job job-000012 submitted: plan chaos\n"),
            Some("job-000012".into())
        );
        assert_eq!(submitted_job("farmctl: cannot reach the controller"), None);
    }
}
