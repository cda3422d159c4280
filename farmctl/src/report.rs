//! Turning controller jobs into JUnit and human summaries.

use std::collections::BTreeMap;

use bench_agent::junit;
use bench_agent::outcome::{Outcome, RunReport, StepReport};
use nvfarm_proto::v1 as pb;

use crate::client::{EXIT_FAILED, EXIT_INFRA, EXIT_PASSED, EXIT_TIMEOUT};

pub fn job_state(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).unwrap_or(pb::JobState::Unspecified)
}

/// Exit code for a finished job: passed 0, failed 1, error 3, timed out or cancelled 4.
pub fn exit_code(state: pb::JobState) -> u8 {
    match state {
        pb::JobState::JobPassed => EXIT_PASSED,
        pb::JobState::JobFailed => EXIT_FAILED,
        pb::JobState::JobTimedOut | pb::JobState::JobCancelled => EXIT_TIMEOUT,
        _ => EXIT_INFRA,
    }
}

/// A run report built from a stored job (and the log lines seen, attributed to steps by their `[step]` prefix).
pub fn run_report(j: &pb::Job, lines: &[String]) -> RunReport {
    let mut per_step: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix('[') {
            if let Some((name, text)) = rest.split_once("] ") {
                per_step.entry(name).or_default().push(text.to_string());
            }
        }
    }
    let mut steps: Vec<StepReport> = j
        .steps
        .iter()
        .map(|s| StepReport {
            number: s.number as usize,
            name: s.name.clone(),
            kind: s.kind.clone(),
            outcome: s.outcome.parse().unwrap_or(Outcome::Error),
            duration_ms: s.duration_ms,
            message: s.message.clone(),
            log: per_step.get(s.name.as_str()).cloned().unwrap_or_default(),
            metrics: s.metrics.clone().into_iter().collect(),
        })
        .collect();
    let state = job_state(j);
    let outcome = match state {
        pb::JobState::JobPassed => Outcome::Passed,
        pb::JobState::JobFailed => Outcome::Failed,
        pb::JobState::JobTimedOut => Outcome::TimedOut,
        pb::JobState::JobCancelled => Outcome::Cancelled,
        _ => Outcome::Error,
    };
    if steps.is_empty() && state.is_terminal() && outcome != Outcome::Passed {
        // Nothing ran (no rig, agent lost before the first step): one testcase says why.
        steps.push(StepReport {
            number: 0,
            name: "job".into(),
            kind: "job".into(),
            outcome,
            duration_ms: 0,
            message: j.message.clone(),
            log: vec![],
            metrics: Default::default(),
        });
    }
    RunReport {
        plan: j.plan_name.clone(),
        rig: if j.rig.is_empty() {
            "(no rig)".into()
        } else {
            j.rig.clone()
        },
        firmware: None,
        outcome,
        started_at_ms: j.started_ms,
        duration_ms: j.finished_ms.saturating_sub(j.created_ms),
        steps,
        console: vec![],
    }
}

pub fn write_junit(path: &std::path::Path, reports: &[RunReport]) -> Result<(), String> {
    let runs: Vec<(&RunReport, String)> = reports
        .iter()
        .map(|r| (r, format!("{}@{}", r.plan, r.rig)))
        .collect();
    std::fs::write(path, junit::document(&runs))
        .map_err(|e| format!("cannot write JUnit report {}: {e}", path.display()))
}
