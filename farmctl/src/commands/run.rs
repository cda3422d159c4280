//! `farmctl run`: the CI stage. Uploads the firmware, submits the job, streams its log, writes JUnit and exits
//! with the job's exit code; Ctrl-C cancels the job and frees its rig.

use std::path::PathBuf;
use std::time::Duration;

use nvfarm_model::farm::{Job, Selector};
use nvfarm_model::{junit, ExitCode, RunReport};
use nvfarm_proto::v1 as pb;

use super::{load_plan, selector_pb};
use crate::client::{CliError, Client, Result};
use crate::follow::{self, Follow, Lines};
use crate::render::{self, note};
use crate::upload;

/// What `run` was asked to do.
pub(super) struct RunArgs {
    pub firmware: Option<PathBuf>,
    pub plan: PathBuf,
    pub selector: Selector,
    pub junit: Option<PathBuf>,
    pub timeout: Duration,
    pub priority: i32,
    pub wait: bool,
}

/// Writes a JUnit document for the jobs' run reports (one suite each).
pub(super) fn write_junit(path: &std::path::Path, jobs: &[Job]) -> Result<()> {
    let reports: Vec<_> = jobs.iter().map(Job::run_report).collect();
    write_reports(path, &reports)
}

/// Writes a JUnit document for run reports (one suite each, named `plan@rig`).
pub(super) fn write_reports(path: &std::path::Path, reports: &[RunReport]) -> Result<()> {
    let runs: Vec<_> = reports
        .iter()
        .map(|r| (r, format!("{}@{}", r.plan, r.rig)))
        .collect();
    std::fs::write(path, junit::document(&runs))
        .map_err(|e| CliError::infra(format!("cannot write JUnit report {}: {e}", path.display())))
}

pub(super) async fn run(
    c: &mut Client,
    url: &str,
    token: Option<&str>,
    json: bool,
    a: RunArgs,
) -> Result<ExitCode> {
    let (plan_toml, plan) = load_plan(&a.plan)?;
    let plan_name = plan.name.clone();
    let fw = upload::build(c, a.firmware.as_deref(), plan.flash_step().is_some()).await?;
    let job = c
        .submit_job(pb::SubmitJobRequest {
            selector: Some(selector_pb(&a.selector)),
            plan_toml,
            plan_name: plan_name.clone(),
            artifact_sha256: fw.sha256,
            firmware_name: fw.name,
            timeout_ms: nvme_spec::units::millis(a.timeout),
            priority: a.priority,
            submitter: String::new(),
            sweep_id: String::new(),
            wait: a.wait,
        })
        .await?
        .into_inner();
    let id = job.id.clone();
    note(format!("job {id} submitted: plan {plan_name}"));
    // The job log goes to stdout, unless stdout carries --json (then the log goes to stderr).
    let lines = if json { Lines::Stderr } else { Lines::Stdout };
    let f = follow::follow(
        c,
        &id,
        Follow {
            url,
            token,
            lines,
            cancel_on_interrupt: true,
        },
    )
    .await?;
    let mut job = f.job;
    job.attach_logs(&f.lines);
    if let Some(path) = &a.junit {
        write_junit(path, std::slice::from_ref(&job))?;
    }
    note(format!(
        "{}: {} on {} — {}",
        job.id,
        job.state.as_str().to_uppercase(),
        job.rig.as_deref().unwrap_or("(no rig)"),
        job.message
    ));
    if json {
        render::json(&job);
    }
    Ok(job.state.exit_code())
}
