//! `farmctl sweep`, `sweep show` and `sweeps`. `sweep`: one plan on every matching rig, compared with the previous sweep of the same name; prints
//! the rig × step matrix, writes JUnit (one suite per rig, each step with its log), exits 0/1/3/4.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nvfarm_model::farm::{Job, JobState, Sweep, SweepOutcome, SweepReport};
use nvfarm_model::time::rfc3339;
use nvfarm_model::{ExitCode, Outcome, RunReport, StepReport};
use nvfarm_proto::v1 as pb;

use super::load_plan;
use super::run::write_reports;
use crate::client::{CliError, Client, Result};
use crate::follow;
use crate::render::{self, note};
use crate::upload;

/// What `sweep` was asked to do.
pub(super) struct SweepArgs {
    pub firmware: Option<PathBuf>,
    pub plan: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub name: Option<String>,
    pub junit: Option<PathBuf>,
    pub timeout: Duration,
    pub retries: u32,
    pub threshold: f64,
    pub priority: i32,
}

pub(super) async fn sweep(c: &mut Client, json: bool, a: SweepArgs) -> Result<ExitCode> {
    let (plan_toml, plan) = load_plan(&a.plan)?;
    let plan_name = plan.name.clone();
    let fw = upload::build(c, a.firmware.as_deref(), plan.flash_step().is_some()).await?;
    let name = a.name.unwrap_or_else(|| plan_name.clone());
    let sweep = c
        .submit_sweep(pb::SubmitSweepRequest {
            name: name.clone(),
            labels: a.labels.into_iter().collect(),
            plan_toml,
            plan_name,
            artifact_sha256: fw.sha256,
            firmware_name: fw.name,
            timeout_ms: nvme_spec::units::millis(a.timeout),
            priority: a.priority,
            submitter: String::new(),
            retries: a.retries,
        })
        .await?
        .into_inner();
    note(format!(
        "sweep {} ({name}) started on {} rig(s){}",
        sweep.id,
        sweep.job_ids.len(),
        if sweep.previous_sweep_id.is_empty() {
            String::new()
        } else {
            format!(", compared with {}", sweep.previous_sweep_id)
        }
    ));
    let mut last = String::new();
    let report = loop {
        let r = tokio::select! {
            r = c.get_sweep(pb::GetSweepRequest { id: sweep.id.clone(), regression_threshold_pct: a.threshold }) => r?.into_inner(),
            _ = tokio::signal::ctrl_c() => {
                for jid in &sweep.job_ids {
                    let _ = c.cancel_job(pb::CancelJobRequest { id: jid.clone() }).await;
                }
                return Err(CliError { code: ExitCode::TimedOut, message: format!("interrupted: sweep {} cancelled", sweep.id) });
            }
        };
        let r = SweepReport::try_from(r)?;
        let mut counts = BTreeMap::new();
        for jb in &r.jobs {
            *counts.entry(jb.state.as_str()).or_insert(0) += 1;
        }
        if !r.sweep.skipped.is_empty() {
            counts.insert("skipped", r.sweep.skipped.len());
        }
        let line = counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            note(format!("sweep {}: {line}", sweep.id));
            last = line;
        }
        if r.done {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if json {
        render::json(&report);
    } else {
        render::sweep(&report);
    }
    if let Some(path) = &a.junit {
        // One suite per rig, from each rig's final attempt, each step with its log.
        let mut finals: BTreeMap<String, &Job> = BTreeMap::new();
        for jb in &report.jobs {
            let rig = jb.selector.rig.clone().unwrap_or_default();
            if finals.get(&rig).is_none_or(|cur| cur.attempt <= jb.attempt) {
                finals.insert(rig, jb);
            }
        }
        let mut reports = vec![];
        for jb in finals.values() {
            let mut job = (*jb).clone();
            job.attach_logs(&follow::all_lines(c, &job.id).await?);
            reports.push(job.run_report());
        }
        // A rig the sweep could not use is a suite with one skipped case saying why.
        for k in &report.sweep.skipped {
            reports.push(RunReport {
                plan_changes: Vec::new(),
                plan: report.sweep.plan_name.clone(),
                rig: k.rig.clone(),
                firmware: None,
                outcome: Outcome::Skipped,
                started_at_ms: report.sweep.created_ms,
                duration_ms: 0,
                steps: vec![StepReport {
                    number: 0,
                    name: "rig".into(),
                    kind: "rig".into(),
                    outcome: Outcome::Skipped,
                    message: format!("not run: {}", k.reason),
                    ..StepReport::default()
                }],
                console: vec![],
            });
        }
        write_reports(path, &reports)?;
    }
    let any = |s: &[JobState]| report.jobs.iter().any(|jb| s.contains(&jb.state));
    Ok(match report.outcome {
        SweepOutcome::Passed => ExitCode::Passed,
        SweepOutcome::Failed => ExitCode::Failed,
        _ if any(&[JobState::Error]) => ExitCode::Infrastructure,
        _ if any(&[JobState::TimedOut, JobState::Cancelled]) => ExitCode::TimedOut,
        _ => ExitCode::Infrastructure,
    })
}

/// `farmctl sweeps`: past and running sweeps, newest first.
pub(super) async fn list(
    c: &mut Client,
    json: bool,
    name: Option<String>,
    limit: u32,
    offset: u32,
) -> Result<ExitCode> {
    let sweeps = c
        .list_sweeps(pb::ListSweepsRequest {
            name: name.unwrap_or_default(),
            limit,
            offset,
        })
        .await?
        .into_inner()
        .sweeps;
    if json {
        let v: Vec<serde_json::Value> = sweeps
            .into_iter()
            .map(|s| {
                let done = s.done;
                let mut v = serde_json::to_value(Sweep::from(s)).unwrap_or_default();
                v["done"] = done.into();
                v
            })
            .collect();
        render::json(&v);
        return Ok(ExitCode::Passed);
    }
    if sweeps.is_empty() {
        render::out("no sweeps");
        return Ok(ExitCode::Passed);
    }
    let rows = sweeps
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.plan_name.clone(),
                rfc3339(s.created_ms),
                s.job_ids.len().to_string(),
                s.skipped.len().to_string(),
                if s.done { "done" } else { "running" }.to_string(),
                s.submitter.clone(),
            ]
        })
        .collect();
    render::table(
        &[
            "SWEEP", "NAME", "PLAN", "STARTED", "JOBS", "SKIPPED", "STATE", "BY",
        ],
        rows,
    );
    Ok(ExitCode::Passed)
}

/// `farmctl sweep show ID`: the sweep's matrix against the previous sweep of its name.
pub(super) async fn show(
    c: &mut Client,
    json: bool,
    id: String,
    threshold: f64,
) -> Result<ExitCode> {
    let r = c
        .get_sweep(pb::GetSweepRequest {
            id,
            regression_threshold_pct: threshold,
        })
        .await?
        .into_inner();
    let report = SweepReport::try_from(r)?;
    if json {
        render::json(&report);
    } else {
        render::sweep(&report);
    }
    Ok(ExitCode::Passed)
}
