//! `farmctl jobs`, `job`, `logs` and `cancel`.

use nvfarm_model::farm::Job;
use nvfarm_model::ExitCode;
use nvfarm_proto::v1 as pb;

use crate::client::{Client, Result};
use crate::follow::{self, Follow, Lines};
use crate::render;

/// Lists recent jobs.
pub(super) async fn list(
    c: &mut Client,
    json: bool,
    limit: u32,
    rig: Option<String>,
) -> Result<ExitCode> {
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            limit,
            rig: rig.unwrap_or_default(),
            sweep_id: String::new(),
        })
        .await?
        .into_inner()
        .jobs
        .into_iter()
        .map(Job::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if json {
        render::json(&jobs);
    } else {
        render::jobs(&jobs);
    }
    Ok(ExitCode::Passed)
}

/// Shows one job; with `--json`, each step carries its log lines (as `/api/jobs/<id>`).
pub(super) async fn show(c: &mut Client, json: bool, id: String) -> Result<ExitCode> {
    let job = Job::try_from(
        c.get_job(pb::GetJobRequest { id: id.clone() })
            .await?
            .into_inner(),
    )?;
    if json {
        let mut job = job;
        let lines = follow::all_lines(c, &id).await?;
        job.attach_logs(&lines);
        render::json(&job);
    } else {
        render::job(&job);
    }
    Ok(ExitCode::Passed)
}

/// Prints a job's log; `--follow` streams it until the job ends and exits with the job's exit code.
pub(super) async fn logs(
    c: &mut Client,
    url: &str,
    token: Option<&str>,
    id: String,
    follow: bool,
) -> Result<ExitCode> {
    if !follow {
        for l in follow::all_lines(c, &id).await? {
            render::out(&l.text);
        }
        return Ok(ExitCode::Passed);
    }
    let f = follow::follow(
        c,
        &id,
        Follow {
            url,
            token,
            lines: Lines::Stdout,
            cancel_on_interrupt: false,
        },
    )
    .await?;
    Ok(f.job.state.exit_code())
}

/// Cancels a job.
pub(super) async fn cancel(c: &mut Client, json: bool, id: String) -> Result<ExitCode> {
    let job = Job::try_from(
        c.cancel_job(pb::CancelJobRequest { id })
            .await?
            .into_inner(),
    )?;
    if json {
        render::json(&job);
    } else {
        render::out(format!("{} {}", job.id, job.state));
    }
    Ok(ExitCode::Passed)
}
