//! Sweeps: one plan on every matching rig, and the report that compares it with the previous sweep of the same
//! name. For every (rig, step): `new_failure` (passed last time, fails now), `fixed`, `still_failing`, `flaky`
//! (failed, then passed on a retry within this sweep), and `regressed` (an io metric worse than last time by
//! more than the threshold: IOPS and bandwidth lower, p99 latency higher).

use std::collections::BTreeMap;
use std::time::Duration;

use nvfarm_model::farm::{
    Change, Job, JobState, Priority, Rig, Selector, SkippedRig, Sweep, SweepCell, SweepOutcome,
    SweepReport,
};
use nvfarm_model::time::now_ms;
use nvfarm_model::Outcome;

use super::jobs::{enqueue, new_job, parse_plan, JobRequest, MAX_JOB_TIMEOUT};
use super::matching::{all_unusable, matching, unusable};
use super::state::State;
use super::{Effects, Farm, FarmError};
use crate::auth::Caller;

/// The most re-runs of a failed rig a sweep may ask for.
pub const MAX_RETRIES: u32 = 10;

/// A sweep as a client submits it.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// Compared with the previous sweep of this name.
    pub name: String,
    /// Every rig with these labels.
    pub labels: BTreeMap<String, String>,
    /// The plan (TOML).
    pub plan_toml: String,
    /// The firmware build.
    pub artifact_sha256: String,
    /// The firmware file's name.
    pub firmware_name: String,
    /// Each job's overall limit.
    pub timeout: Duration,
    /// How urgently.
    pub priority: Priority,
    /// Re-runs of a failed rig.
    pub retries: u32,
}

/// The jobs a report reads, by id (finished ones come from the store).
pub(crate) type Jobs = BTreeMap<String, Job>;

/// Whether every job of the sweep (retries included) has ended. A job that is not in memory has finished and
/// left it ([`crate::store::resident`]).
pub(crate) fn done(st: &State, s: &Sweep) -> bool {
    s.job_ids
        .iter()
        .all(|j| st.jobs.get(j).is_none_or(|j| j.state.is_terminal()))
}

/// Per rig: the final attempt, and whether an earlier attempt failed.
fn final_jobs<'a>(jobs: &'a Jobs, s: &Sweep) -> BTreeMap<String, (&'a Job, bool)> {
    let mut by_rig: BTreeMap<String, Vec<&Job>> = BTreeMap::new();
    for j in s.job_ids.iter().filter_map(|j| jobs.get(j)) {
        let rig = j.selector.rig.clone().or(j.rig.clone()).unwrap_or_default();
        by_rig.entry(rig).or_default().push(j);
    }
    by_rig
        .into_iter()
        .filter_map(|(rig, mut jobs)| {
            jobs.sort_by_key(|j| j.attempt);
            let last = *jobs.last()?;
            let earlier_failed = jobs[..jobs.len() - 1]
                .iter()
                .any(|j| j.state == JobState::Failed);
            Some((rig, (last, earlier_failed)))
        })
        .collect()
}

/// The pseudo-step of a job that ended before any step ran.
const JOB_STEP: &str = "(job)";

/// A step's outcome (None: not run), message and metrics.
type StepCell = (Option<Outcome>, String, BTreeMap<String, f64>);

/// Each step's outcome, message and metrics, by step name.
fn step_outcomes(job: &Job) -> BTreeMap<String, StepCell> {
    let mut m = BTreeMap::new();
    for s in &job.steps {
        m.insert(
            s.name.clone(),
            (Some(s.outcome), s.message.clone(), s.metrics.clone()),
        );
    }
    if job.steps.is_empty() && job.state.is_terminal() {
        m.insert(
            JOB_STEP.into(),
            (job.state.outcome(), job.message.clone(), BTreeMap::new()),
        );
    }
    m
}

pub use nvfarm_model::report::direction;

/// The rig × step matrix of sweep `s` against its predecessor; `jobs` holds the jobs of both.
pub(crate) fn report(st: &State, jobs: &Jobs, s: &Sweep, threshold_pct: f64) -> SweepReport {
    let now = final_jobs(jobs, s);
    let prev = s
        .previous
        .as_ref()
        .and_then(|p| st.sweeps.get(p))
        .map(|p| final_jobs(jobs, p))
        .unwrap_or_default();
    let mut steps: Vec<String> = vec![];
    for (job, _) in now.values() {
        for step in &job.steps {
            if !steps.contains(&step.name) {
                steps.push(step.name.clone());
            }
        }
    }
    let bad = |o: Option<Outcome>| o.is_some_and(Outcome::is_bad);
    let mut cells = vec![];
    let mut any_bad = false;
    let mut any_infra = false;
    for (rig, (job, earlier_failed)) in &now {
        let cur = step_outcomes(job);
        let old = prev
            .get(rig)
            .map(|(j, _)| step_outcomes(j))
            .unwrap_or_default();
        let names: Vec<String> = if cur.contains_key(JOB_STEP) {
            vec![JOB_STEP.into()]
        } else {
            steps.clone()
        };
        for step in names {
            let (outcome, detail, metrics) = cur.get(&step).cloned().unwrap_or_default();
            let (prev_outcome, _, prev_metrics) = old.get(&step).cloned().unwrap_or_default();
            let mut change = if bad(outcome)
                && (prev_outcome == Some(Outcome::Passed) || prev_outcome.is_none())
                && !prev.is_empty()
            {
                Some(Change::NewFailure)
            } else if bad(prev_outcome) && outcome == Some(Outcome::Passed) {
                Some(Change::Fixed)
            } else if bad(prev_outcome) && bad(outcome) {
                Some(Change::StillFailing)
            } else {
                None
            };
            if outcome == Some(Outcome::Passed) && *earlier_failed {
                change = Some(Change::Flaky);
            }
            let mut detail = detail;
            if change.is_none() && outcome == Some(Outcome::Passed) {
                let mut worse = vec![];
                for (m, v) in &metrics {
                    let dir = direction(m);
                    let Some(p) = prev_metrics.get(m) else {
                        continue;
                    };
                    if dir == 0 || *p <= 0.0 {
                        continue;
                    }
                    let delta_pct = (v - p) / p * 100.0 * dir as f64;
                    if delta_pct > threshold_pct {
                        worse.push(format!("{m} {p:.1} → {v:.1} ({delta_pct:+.0}%)"));
                    }
                }
                if !worse.is_empty() {
                    change = Some(Change::Regressed);
                    detail = worse.join(", ");
                }
            }
            any_bad |= bad(outcome) || change == Some(Change::Regressed);
            any_infra |= matches!(outcome, Some(Outcome::Error | Outcome::TimedOut));
            cells.push(SweepCell {
                rig: rig.clone(),
                step,
                outcome,
                previous_outcome: prev_outcome,
                change,
                detail,
            });
        }
    }
    for k in &s.skipped {
        cells.push(SweepCell {
            rig: k.rig.clone(),
            step: JOB_STEP.into(),
            outcome: Some(Outcome::Skipped),
            previous_outcome: None,
            change: None,
            detail: format!("not run: {}", k.reason),
        });
    }
    let done = done(st, s);
    let outcome = if !done {
        SweepOutcome::Running
    } else if now.values().any(|(j, _)| j.state == JobState::Error) || any_infra {
        SweepOutcome::Error
    } else if any_bad {
        SweepOutcome::Failed
    } else {
        SweepOutcome::Passed
    };
    SweepReport {
        sweep: s.clone(),
        done,
        rigs: now
            .keys()
            .cloned()
            .chain(s.skipped.iter().map(|k| k.rig.clone()))
            .collect(),
        steps,
        cells,
        jobs: s
            .job_ids
            .iter()
            .filter_map(|j| jobs.get(j))
            .cloned()
            .collect(),
        outcome,
    }
}

impl Farm {
    /// Starts a sweep: one job per matching rig.
    pub async fn submit_sweep(&self, caller: &Caller, r: SweepRequest) -> Result<Sweep, FarmError> {
        let plan = parse_plan(&r.plan_toml, caller, &self.cfg)?;
        if r.name.trim().is_empty() {
            return Err(FarmError::InvalidArgument(
                "a sweep needs a name (it is compared with the previous sweep of that name)".into(),
            ));
        }
        if r.timeout.is_zero() || r.timeout > MAX_JOB_TIMEOUT {
            return Err(FarmError::InvalidArgument(format!(
                "--timeout {}: must be more than zero and at most {}",
                humantime::format_duration(r.timeout),
                humantime::format_duration(MAX_JOB_TIMEOUT)
            )));
        }
        if r.retries > MAX_RETRIES {
            return Err(FarmError::InvalidArgument(format!(
                "--retries {}: at most {MAX_RETRIES}",
                r.retries
            )));
        }
        if r.priority == Priority::System {
            return Err(FarmError::InvalidArgument(
                "priority system is reserved for the controller's health checks".into(),
            ));
        }
        let mut st = self.lock().await?;
        let sel = Selector::labels(r.labels.clone());
        let matched = matching(&st.rigs, &sel).map_err(FarmError::InvalidArgument)?;
        if let Some(why) = all_unusable(&matched) {
            return Err(FarmError::FailedPrecondition(format!(
                "no rig matching {} can take work now: {why}",
                sel.describe()
            )));
        }
        // Rigs that cannot take work are reported as skipped rather than waited for.
        let (rigs, skipped): (Vec<&Rig>, Vec<&Rig>) =
            matched.into_iter().partition(|rig| unusable(rig).is_none());
        let rigs: Vec<String> = rigs.into_iter().map(|rig| rig.name.clone()).collect();
        let skipped: Vec<SkippedRig> = skipped
            .into_iter()
            .map(|rig| SkippedRig {
                rig: rig.name.clone(),
                reason: unusable(rig).unwrap_or_default(),
            })
            .collect();
        if !r.artifact_sha256.is_empty() && !st.artifacts.contains_key(&r.artifact_sha256) {
            return Err(FarmError::FailedPrecondition(format!(
                "artifact {} is not stored: upload it first",
                r.artifact_sha256
            )));
        }
        let now = now_ms();
        let mut fx = Effects::default();
        let id = st.next_id("sweep", &mut fx.tx);
        let previous = st
            .sweeps
            .values()
            .filter(|s| s.name == r.name)
            .max_by_key(|s| (s.created_ms, s.id.clone()))
            .map(|s| s.id.clone());
        let mut sweep = Sweep {
            id: id.clone(),
            name: r.name.clone(),
            labels: r.labels.clone(),
            job_ids: vec![],
            created_ms: now,
            previous,
            retries: r.retries,
            plan_name: plan.name.clone(),
            submitter: caller.name.clone(),
            skipped,
        };
        for rig in rigs {
            let jid = st.next_id("job", &mut fx.tx);
            let request = JobRequest {
                selector: Selector::rig(&rig),
                plan_toml: r.plan_toml.clone(),
                artifact_sha256: r.artifact_sha256.clone(),
                firmware_name: r.firmware_name.clone(),
                timeout: r.timeout,
                priority: r.priority,
                sweep_id: Some(id.clone()),
                wait: true,
            };
            let job = new_job(jid.clone(), &request, &plan.name, &caller.name, now);
            enqueue(&mut st, job, &mut fx);
            sweep.job_ids.push(jid);
        }
        fx.tx.sweep(&sweep);
        st.sweeps.insert(id, sweep.clone());
        self.reschedule(st, fx).await?;
        Ok(sweep)
    }
}
