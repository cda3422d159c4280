//! The steady-state hypothesis, as pure functions over what the clients saw (the [`Ledger`]), what the agents
//! recorded (their lease journals) and what the controller says at the end. Each returns the violations it
//! finds, in words.
//!
//! - every acknowledged job reaches a terminal state, with the outcome `farmctl run` reported for it, and the
//!   blame is right (a good build on a drive nobody broke never "fails"; a build that does not boot never passes);
//! - no rig is ever held by two leases: the spans the agents' journals record and the reservations the clients
//!   held (from the grant they saw to the release they sent, or the expiry) never overlap on one rig;
//! - an acknowledged reservation is not forgotten: its release finds it, unless it had expired;
//! - requests for one rig are granted in the order they were queued;
//! - every rig returns to service, or is quarantined with a reason.

use std::collections::BTreeMap;

use nvfarm_model::farm::JobState;
use nvfarm_model::journal::HeldSpan;
use serde_json::Value;

/// Which firmware a run flashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// A build that boots and passes.
    Good,
    /// A build the drive does not boot (rolled back; the run must not pass).
    BootFail,
}

/// One `farmctl run` as its client saw it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The job id farmctl printed when the controller acknowledged the submission.
    pub job: Option<String>,
    /// farmctl's exit code.
    pub exit: i32,
    /// The job's state in farmctl's final JSON (when it saw the end).
    pub state: Option<String>,
    /// The rig it ran on (from the final JSON).
    pub rig: Option<String>,
    /// What it flashed.
    pub build: Build,
    /// Started and ended (Unix ms).
    pub from_ms: u64,
    /// Ended (Unix ms).
    pub to_ms: u64,
    /// Whether the JUnit file exists afterwards.
    pub junit: bool,
}

/// One reservation as its client saw it.
#[derive(Clone, Debug)]
pub struct ReservationRecord {
    /// The lease id.
    pub lease: String,
    /// The rig.
    pub rig: String,
    /// When the client received the grant (Unix ms).
    pub seen_ms: u64,
    /// When it expires, per the grant (Unix ms).
    pub expires_ms: u64,
    /// When the client first asked to release it.
    pub release_sent_ms: Option<u64>,
    /// What the release answered: `Ok(())`, or the error text.
    pub release: Option<Result<(), String>>,
}

/// A queue-order probe: requests for one rig queued in this order, granted in that one.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// The probe rig.
    pub rig: String,
    /// Request ids, in the order the controller acknowledged them.
    pub queued: Vec<String>,
    /// Request ids, in the order they were granted.
    pub granted: Vec<String>,
}

/// A drive fault injected on a rig (runs on that rig during it may fail for the drive's sake).
#[derive(Clone, Debug)]
pub struct DriveFault {
    /// The rig.
    pub rig: String,
    /// From (Unix ms).
    pub from_ms: u64,
    /// To (Unix ms; the end of the experiment: a drive stays broken until repaired).
    pub to_ms: u64,
}

/// What the clients saw during one experiment.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// CI runs.
    pub runs: Vec<RunRecord>,
    /// Reservations granted.
    pub reservations: Vec<ReservationRecord>,
    /// Queue-order probes.
    pub probes: Vec<Probe>,
    /// Drive faults injected.
    pub drive_faults: Vec<DriveFault>,
}

fn job_state(state: &str) -> Option<JobState> {
    serde_json::from_value(Value::String(state.to_string())).ok()
}

/// The exit code farmctl owes a job in `state` (-1: not a state).
fn exit_of(state: &str) -> i32 {
    job_state(state).map_or(-1, |s| i32::from(s.exit_code().code()))
}

/// Whether a job state is terminal.
pub fn terminal(state: &str) -> bool {
    job_state(state).is_some_and(JobState::is_terminal)
}

/// Acknowledged jobs that were lost or never ended. `jobs` is the controller's final word per job id
/// (`None`: it does not know the job); `others` are the controller's jobs no client tracked (sweeps, health
/// checks, submissions whose answer was lost).
pub fn lost_jobs(
    runs: &[RunRecord],
    jobs: &BTreeMap<String, Option<Value>>,
    others: &[Value],
) -> Vec<String> {
    let mut out = vec![];
    for r in runs {
        let Some(id) = &r.job else { continue };
        match jobs.get(id) {
            Some(Some(j)) => {
                let st = j["state"].as_str().unwrap_or("");
                if !terminal(st) {
                    out.push(format!(
                        "{id}: acknowledged, still {st} after the farm settled"
                    ));
                }
            }
            _ => out.push(format!(
                "{id}: acknowledged to farmctl, unknown to the controller afterwards"
            )),
        }
    }
    for j in others {
        let st = j["state"].as_str().unwrap_or("");
        let id = j["id"].as_str().unwrap_or("?");
        if !terminal(st) {
            out.push(format!("{id}: still {st} after the farm settled"));
        } else if j["settled"] == false {
            out.push(format!(
                "{id}: {st}, but its rig never let go of it after the farm settled"
            ));
        }
    }
    out
}

/// Runs whose outcome changed after farmctl reported it, whose exit code does not match it, or whose JUnit is
/// missing.
pub fn reported_outcomes(
    runs: &[RunRecord],
    jobs: &BTreeMap<String, Option<Value>>,
) -> Vec<String> {
    let mut out = vec![];
    for r in runs {
        let id = r.job.as_deref().unwrap_or("(not submitted)");
        if !r.junit {
            out.push(format!("{id}: farmctl run exited {} without JUnit", r.exit));
        }
        let Some(job) = r
            .job
            .as_ref()
            .and_then(|j| jobs.get(j))
            .and_then(|j| j.as_ref())
        else {
            continue;
        };
        let stored = job["state"].as_str().unwrap_or("");
        if let Some(seen) = &r.state {
            if seen != stored {
                out.push(format!(
                    "{id}: farmctl reported {seen}, the controller now says {stored}"
                ));
            }
            if exit_of(seen) != r.exit {
                out.push(format!(
                    "{id}: farmctl reported {seen} but exited {}",
                    r.exit
                ));
            }
        }
    }
    out
}

/// What a job flashed, by its firmware file's name (the suite names its builds `fw-REV-BEHAVIOUR.img`).
pub fn build_of(job: &Value) -> Option<Build> {
    let name = job["firmware_name"].as_str().filter(|n| !n.is_empty())?;
    Some(if name.contains("boot-fail") {
        Build::BootFail
    } else {
        Build::Good
    })
}

/// Jobs whose blame is wrong: a good build on a drive nobody broke reported as a test failure, or a build that
/// does not boot reported as passed (`jobs` as the controller lists them).
pub fn wrong_blame(jobs: &[Value], drive_faults: &[DriveFault]) -> Vec<String> {
    let mut out = vec![];
    for job in jobs {
        let Some(build) = build_of(job) else { continue };
        let id = job["id"].as_str().unwrap_or("?");
        let rig = job["rig"].as_str().unwrap_or("");
        let from = job["created_ms"].as_u64().unwrap_or(0);
        let to = job["finished_ms"]
            .as_u64()
            .filter(|&t| t > 0)
            .unwrap_or(u64::MAX);
        let drive_broken = drive_faults
            .iter()
            .any(|f| f.rig == rig && f.from_ms <= to && from <= f.to_ms);
        match (build, job["state"].as_str().unwrap_or("")) {
            (Build::Good, "failed") if !drive_broken => out.push(format!(
                "{id}: a good build on {rig}, whose drive nobody broke, is reported as a test failure: {}",
                job["message"].as_str().unwrap_or("")
            )),
            (Build::BootFail, "passed") => {
                out.push(format!("{id}: a build that does not boot passed on {rig}"))
            }
            _ => {}
        }
    }
    out
}

/// A span during which a rig was held, by whoever recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The rig.
    pub rig: String,
    /// What held it (`job-000012 (token 40)`, `lease-000007`).
    pub what: String,
    /// From (Unix ms).
    pub from_ms: u64,
    /// To (Unix ms).
    pub to_ms: u64,
}

/// The spans the agents' journals record (an open span ends at `now_ms`) and the reservations clients held.
pub fn held_spans(
    journals: &[HeldSpan],
    reservations: &[ReservationRecord],
    now_ms: u64,
) -> Vec<Held> {
    let mut v: Vec<Held> = journals
        .iter()
        .map(|s| Held {
            rig: s.rig.clone(),
            what: format!("{} (token {})", s.job, s.token),
            from_ms: s.from_ms,
            to_ms: s.to_ms.unwrap_or(now_ms),
        })
        .collect();
    v.extend(reservations.iter().map(|r| Held {
        rig: r.rig.clone(),
        what: r.lease.clone(),
        from_ms: r.seen_ms,
        to_ms: r.release_sent_ms.unwrap_or(u64::MAX).min(r.expires_ms),
    }));
    v
}

/// Two spans holding one rig at the same time.
pub fn double_grants(spans: &[Held]) -> Vec<String> {
    let mut by_rig: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
    for s in spans {
        by_rig.entry(&s.rig).or_default().push(s);
    }
    let mut out = vec![];
    for (rig, mut v) in by_rig {
        v.sort_by_key(|s| (s.from_ms, s.to_ms));
        // The span reaching furthest so far: a later start before its end overlaps it.
        let mut reach: Option<&Held> = None;
        for s in v {
            if let Some(r) = reach {
                if s.from_ms < r.to_ms {
                    out.push(format!(
                        "{rig}: {} held it from {} to {} while {} held it from {} to {}",
                        s.what, s.from_ms, s.to_ms, r.what, r.from_ms, r.to_ms
                    ));
                }
            }
            if reach.is_none_or(|r| s.to_ms > r.to_ms) {
                reach = Some(s);
            }
        }
    }
    out
}

/// Reservations the controller forgot: a release answered "no such lease" before the lease's expiry.
pub fn lost_reservations(reservations: &[ReservationRecord]) -> Vec<String> {
    reservations
        .iter()
        .filter_map(|r| match (&r.release, r.release_sent_ms) {
            (Some(Err(e)), Some(sent)) if sent < r.expires_ms && e.contains("no active lease") => {
                Some(format!(
                    "{} on {}: granted, then unknown to the controller {} ms before its expiry ({e})",
                    r.lease,
                    r.rig,
                    r.expires_ms - sent
                ))
            }
            _ => None,
        })
        .collect()
}

/// Probes whose requests were not granted in the order they were queued, or not at all.
pub fn order_violations(probes: &[Probe]) -> Vec<String> {
    let mut out = vec![];
    for p in probes {
        if p.granted != p.queued {
            out.push(format!(
                "{}: queued {:?}, granted {:?}",
                p.rig, p.queued, p.granted
            ));
        }
    }
    out
}

/// Rigs that are neither in service nor quarantined with a reason (`rigs` as `farmctl --json rigs` prints them).
pub fn stuck_rigs(rigs: &[Value]) -> Vec<String> {
    rigs.iter()
        .filter_map(|r| {
            let name = r["name"].as_str().unwrap_or("?");
            let state = r["state"].as_str().unwrap_or("");
            let reason = r["reason"].as_str().unwrap_or("");
            match state {
                "idle" => None,
                "quarantined" if !reason.trim().is_empty() => None,
                _ => Some(format!(
                    "{name}: {state}{}{reason}",
                    if reason.is_empty() { "" } else { ": " }
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn held(rig: &str, what: &str, from_ms: u64, to_ms: u64) -> Held {
        Held {
            rig: rig.into(),
            what: what.into(),
            from_ms,
            to_ms,
        }
    }

    #[test]
    fn overlapping_holds_of_one_rig_are_double_grants_and_touching_ones_are_not() {
        let spans = vec![
            held("a", "job-1", 0, 10),
            held("a", "job-2", 10, 20),
            held("b", "lease-1", 5, 15),
            held("a", "lease-2", 30, 40),
        ];
        assert!(double_grants(&spans).is_empty());
        let mut spans = spans;
        // Starts inside a long span that began before the one it follows.
        spans.push(held("a", "job-0", 0, 35));
        let v = double_grants(&spans);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|s| s.starts_with("a:")), "{v:?}");
    }

    #[test]
    fn a_reservation_holds_from_the_grant_to_the_release_or_the_expiry() {
        let r = ReservationRecord {
            lease: "lease-1".into(),
            rig: "a".into(),
            seen_ms: 100,
            expires_ms: 500,
            release_sent_ms: Some(300),
            release: Some(Ok(())),
        };
        let journals = vec![HeldSpan {
            rig: "a".into(),
            job: "job-9".into(),
            token: 3,
            from_ms: 250,
            to_ms: None,
        }];
        let spans = held_spans(&journals, std::slice::from_ref(&r), 1000);
        assert_eq!(spans[0].to_ms, 1000, "an open span lasts until now");
        assert_eq!(spans[1].to_ms, 300);
        assert_eq!(double_grants(&spans).len(), 1);
        let unreleased = ReservationRecord {
            release_sent_ms: None,
            ..r
        };
        assert_eq!(held_spans(&[], &[unreleased], 1000)[0].to_ms, 500);
    }

    fn run(job: &str, build: Build, exit: i32, state: &str) -> RunRecord {
        RunRecord {
            job: Some(job.into()),
            exit,
            state: Some(state.into()),
            rig: Some("a".into()),
            build,
            from_ms: 100,
            to_ms: 200,
            junit: true,
        }
    }

    #[test]
    fn outcomes_must_match_what_farmctl_said() {
        let jobs: BTreeMap<String, Option<Value>> = [
            ("job-1".into(), Some(json!({"state": "passed"}))),
            ("job-2".into(), Some(json!({"state": "error"}))),
            ("job-3".into(), Some(json!({"state": "failed"}))),
        ]
        .into();
        let runs = vec![
            run("job-1", Build::Good, 0, "passed"),
            run("job-2", Build::Good, 0, "passed"),
            run("job-3", Build::Good, 3, "failed"),
        ];
        let v = reported_outcomes(&runs, &jobs);
        assert_eq!(
            v,
            vec![
                "job-2: farmctl reported passed, the controller now says error",
                "job-3: farmctl reported failed but exited 3"
            ]
        );
        // A missing JUnit file is wrong whatever the outcome.
        let mut r = run("job-1", Build::Good, 0, "passed");
        r.junit = false;
        assert_eq!(reported_outcomes(&[r], &jobs).len(), 1);
    }

    #[test]
    fn a_good_build_fails_only_on_a_broken_drive_and_a_build_that_does_not_boot_never_passes() {
        let job = |id: &str, fw: &str, state: &str| {
            json!({"id": id, "rig": "a", "firmware_name": fw, "state": state, "created_ms": 100,
                   "finished_ms": 200, "message": "m"})
        };
        let jobs = vec![
            job("job-1", "fw-2.0.0-ok.img", "passed"),
            job("job-2", "fw-2.0.0-ok.img", "failed"),
            job("job-3", "fw-9.9.9-boot-fail.img", "passed"),
            job("job-4", "fw-9.9.9-boot-fail.img", "failed"),
            job("job-5", "fw-2.0.0-ok.img", "error"),
            job("job-6", "", "failed"),
        ];
        let v = wrong_blame(&jobs, &[]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].starts_with("job-2: a good build")
                && v[1].starts_with("job-3: a build that does not boot")
        );
        // A fault injected on the drive during the job excuses its failure, not a false pass.
        let f = DriveFault {
            rig: "a".into(),
            from_ms: 150,
            to_ms: 900,
        };
        assert_eq!(wrong_blame(&jobs, std::slice::from_ref(&f)).len(), 1);
        let elsewhere = DriveFault {
            rig: "b".into(),
            ..f
        };
        assert_eq!(wrong_blame(&jobs, &[elsewhere]).len(), 2);
    }

    #[test]
    fn a_job_the_controller_forgot_or_never_ended_is_lost() {
        let jobs: BTreeMap<String, Option<Value>> = [
            ("job-1".into(), Some(json!({"state": "passed"}))),
            ("job-2".into(), None),
            ("job-3".into(), Some(json!({"state": "testing"}))),
        ]
        .into();
        let runs: Vec<_> = ["job-1", "job-2", "job-3"]
            .iter()
            .map(|j| run(j, Build::Good, 0, "passed"))
            .collect();
        let others = vec![
            json!({"id": "job-9", "state": "assigned"}),
            json!({"id": "job-8", "state": "error", "settled": true}),
            json!({"id": "job-7", "state": "cancelled", "settled": false}),
        ];
        let v = lost_jobs(&runs, &jobs, &others);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].starts_with("job-2") && v[1].starts_with("job-3"));
        assert!(v[2].starts_with("job-9") && v[3].starts_with("job-7"));
    }

    #[test]
    fn a_release_that_finds_nothing_before_the_expiry_is_a_lost_reservation() {
        let r = |sent, err: &str| ReservationRecord {
            lease: "lease-1".into(),
            rig: "a".into(),
            seen_ms: 0,
            expires_ms: 1000,
            release_sent_ms: Some(sent),
            release: Some(Err(err.into())),
        };
        assert_eq!(
            lost_reservations(&[r(
                500,
                "no active lease lease-1 (released or expired already?)"
            )])
            .len(),
            1
        );
        assert!(lost_reservations(&[r(1500, "no active lease lease-1")]).is_empty());
        assert!(lost_reservations(&[r(500, "controller unreachable")]).is_empty());
    }

    #[test]
    fn rigs_must_be_idle_or_quarantined_with_a_reason_and_grants_must_keep_the_queue_order() {
        let rigs = vec![
            json!({"name": "a", "state": "idle", "reason": ""}),
            json!({"name": "b", "state": "quarantined", "reason": "3 infrastructure errors"}),
            json!({"name": "c", "state": "quarantined", "reason": ""}),
            json!({"name": "d", "state": "offline", "reason": "agent lost"}),
            json!({"name": "e", "state": "leased", "reason": ""}),
        ];
        assert_eq!(
            stuck_rigs(&rigs),
            vec!["c: quarantined", "d: offline: agent lost", "e: leased"]
        );
        let mut p = Probe {
            rig: "p".into(),
            queued: vec!["req-1".into(), "req-2".into()],
            granted: vec!["req-1".into(), "req-2".into()],
        };
        assert!(order_violations(std::slice::from_ref(&p)).is_empty());
        p.granted.reverse();
        assert_eq!(order_violations(&[p.clone()]).len(), 1);
        p.granted.pop();
        assert_eq!(order_violations(&[p]).len(), 1, "a request never granted");
    }
}
