//! Sweep reports: a rig × step matrix, compared with the previous sweep of the same name.
//!
//! For every (rig, step): `new_failure` (passed last time, fails now), `fixed`, `still_failing`, `flaky` (failed,
//! then passed on a retry within this sweep), and `regressed` (an io metric worse than last time by more than the
//! threshold: IOPS and bandwidth lower, latency higher).

use std::collections::BTreeMap;

use nvfarm_proto::v1 as pb;

use crate::model::*;
use crate::state::State;

pub fn sweep_pb(st: &State, s: &SweepRecord) -> pb::Sweep {
    pb::Sweep {
        id: s.id.clone(),
        name: s.name.clone(),
        job_ids: s.job_ids.clone(),
        created_ms: s.created_ms,
        done: s
            .job_ids
            .iter()
            .all(|j| st.jobs.get(j).is_none_or(|j| j.state.is_terminal()))
            && !has_pending_retry(st, s),
        previous_sweep_id: s.previous.clone().unwrap_or_default(),
    }
}

fn has_pending_retry(st: &State, s: &SweepRecord) -> bool {
    s.job_ids
        .iter()
        .filter_map(|j| st.jobs.get(j))
        .any(|j| !j.state.is_terminal())
}

/// Per rig: the final attempt, and whether an earlier attempt failed.
fn final_jobs<'a>(st: &'a State, s: &SweepRecord) -> BTreeMap<String, (&'a JobRecord, bool)> {
    let mut by_rig: BTreeMap<String, Vec<&JobRecord>> = BTreeMap::new();
    for j in s.job_ids.iter().filter_map(|j| st.jobs.get(j)) {
        let rig = j.selector.rig.clone().or(j.rig.clone()).unwrap_or_default();
        by_rig.entry(rig).or_default().push(j);
    }
    by_rig
        .into_iter()
        .map(|(rig, mut jobs)| {
            jobs.sort_by_key(|j| j.attempt);
            let last = *jobs.last().expect("non-empty");
            let earlier_failed = jobs.len() > 1
                && jobs[..jobs.len() - 1]
                    .iter()
                    .any(|j| j.state == JobState::Failed);
            (rig, (last, earlier_failed))
        })
        .collect()
}

fn step_outcomes(job: &JobRecord) -> BTreeMap<String, (String, String, BTreeMap<String, f64>)> {
    let mut m = BTreeMap::new();
    for s in &job.steps {
        m.insert(
            s.name.clone(),
            (s.outcome.clone(), s.message.clone(), s.metrics.clone()),
        );
    }
    if job.steps.is_empty() && job.state.is_terminal() {
        m.insert(
            "(job)".into(),
            (
                job.state.as_str().to_string(),
                job.message.clone(),
                BTreeMap::new(),
            ),
        );
    }
    m
}

/// "Worse" direction of a headline metric: +1 higher is worse, -1 lower is worse, 0 not compared. Medians and
/// means of short runs swing too much between runs to call a change in them a regression; IOPS, bandwidth and
/// p99 latency are what a regression shows in.
pub fn direction(metric: &str) -> i32 {
    if metric.ends_with("_iops") || metric == "iops" || metric.contains("_bw_") {
        -1
    } else if metric.ends_with("_lat_p99_us") {
        1
    } else {
        0
    }
}

pub fn report(st: &State, s: &SweepRecord, threshold_pct: f64) -> pb::SweepReport {
    let now = final_jobs(st, s);
    let prev = s
        .previous
        .as_ref()
        .and_then(|p| st.sweeps.get(p))
        .map(|p| final_jobs(st, p))
        .unwrap_or_default();
    let mut steps: Vec<String> = vec![];
    for (job, _) in now.values() {
        for step in &job.steps {
            if !steps.contains(&step.name) {
                steps.push(step.name.clone());
            }
        }
    }
    let mut cells = vec![];
    let mut any_bad = false;
    let mut any_infra = false;
    for (rig, (job, earlier_failed)) in &now {
        let cur = step_outcomes(job);
        let old = prev
            .get(rig)
            .map(|(j, _)| step_outcomes(j))
            .unwrap_or_default();
        let names: Vec<String> = if cur.contains_key("(job)") {
            vec!["(job)".into()]
        } else {
            steps.clone()
        };
        for step in names {
            let (outcome, detail, metrics) = cur
                .get(&step)
                .cloned()
                .unwrap_or_else(|| ("not_run".into(), String::new(), BTreeMap::new()));
            let (prev_outcome, _, prev_metrics) = old.get(&step).cloned().unwrap_or_default();
            let failed = |o: &str| matches!(o, "failed" | "error" | "timed_out");
            let mut change = match (prev_outcome.as_str(), outcome.as_str()) {
                (p, n) if failed(n) && (p == "passed" || p.is_empty()) && !prev.is_empty() => {
                    "new_failure"
                }
                (p, "passed") if failed(p) => "fixed",
                (p, n) if failed(p) && failed(n) => "still_failing",
                _ => "",
            }
            .to_string();
            if outcome == "passed" && *earlier_failed {
                change = "flaky".into();
            }
            let mut detail = detail;
            if change.is_empty() && outcome == "passed" {
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
                    change = "regressed".into();
                    detail = worse.join(", ");
                }
            }
            any_bad |= failed(&outcome) || change == "regressed";
            any_infra |= matches!(outcome.as_str(), "error" | "timed_out");
            cells.push(pb::SweepCell {
                rig: rig.clone(),
                step,
                outcome,
                previous_outcome: prev_outcome,
                change,
                detail,
            });
        }
    }
    let sweep = sweep_pb(st, s);
    let outcome = if !sweep.done {
        "running"
    } else if now.values().any(|(j, _)| j.state == JobState::Error) || any_infra {
        "error"
    } else if any_bad {
        "failed"
    } else {
        "passed"
    };
    pb::SweepReport {
        sweep: Some(sweep),
        rigs: now.keys().cloned().collect(),
        steps,
        cells,
        jobs: s
            .job_ids
            .iter()
            .filter_map(|j| st.jobs.get(j))
            .map(|j| j.to_pb(false))
            .collect(),
        outcome: outcome.into(),
    }
}
