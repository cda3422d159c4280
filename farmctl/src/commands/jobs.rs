//! `farmctl jobs`, `job`, `logs`, `cancel` and `history`.

use nvfarm_model::farm::Job;
use nvfarm_model::time::rfc3339;
use nvfarm_model::{ExitCode, Outcome};
use nvfarm_proto::v1 as pb;

use crate::client::{Client, Result};
use crate::follow::{self, Follow, Lines};
use crate::render;

/// The jobs `q` selects, as model records.
async fn fetch(c: &mut Client, q: pb::ListJobsRequest) -> Result<Vec<Job>> {
    Ok(c.list_jobs(q)
        .await?
        .into_inner()
        .jobs
        .into_iter()
        .map(Job::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Lists recent jobs.
pub(super) async fn list(
    c: &mut Client,
    json: bool,
    limit: u32,
    rig: Option<String>,
) -> Result<ExitCode> {
    let jobs = fetch(
        c,
        pb::ListJobsRequest {
            limit,
            rig: rig.unwrap_or_default(),
            ..Default::default()
        },
    )
    .await?;
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

/// How one step did over a history's finished jobs.
#[derive(Debug, serde::Serialize)]
struct StepRate {
    name: String,
    runs: u32,
    passed: u32,
    failed: u32,
    error: u32,
    other: u32,
    pass_rate: f64,
}

/// Each step's outcomes over `jobs` (by step name, in the order steps first appear).
fn step_rates(jobs: &[Job]) -> Vec<StepRate> {
    let mut rates: Vec<StepRate> = vec![];
    for j in jobs.iter().filter(|j| j.state.is_terminal()) {
        for s in &j.steps {
            let i = match rates.iter().position(|r| r.name == s.name) {
                Some(i) => i,
                None => {
                    rates.push(StepRate {
                        name: s.name.clone(),
                        runs: 0,
                        passed: 0,
                        failed: 0,
                        error: 0,
                        other: 0,
                        pass_rate: 0.0,
                    });
                    rates.len() - 1
                }
            };
            let r = &mut rates[i];
            match s.outcome {
                Outcome::Skipped => continue,
                Outcome::Passed => r.passed += 1,
                Outcome::Failed => r.failed += 1,
                Outcome::Error => r.error += 1,
                _ => r.other += 1,
            }
            r.runs += 1;
        }
    }
    for r in &mut rates {
        r.pass_rate = if r.runs == 0 {
            0.0
        } else {
            r.passed as f64 / r.runs as f64
        };
    }
    rates
}

/// `farmctl history`: past jobs matching the filter, and each step's pass rate over them.
pub(super) async fn history(
    c: &mut Client,
    json: bool,
    q: pb::ListJobsRequest,
) -> Result<ExitCode> {
    let jobs = fetch(c, q).await?;
    let rates = step_rates(&jobs);
    if json {
        render::json(&serde_json::json!({ "jobs": jobs, "steps": rates }));
        return Ok(ExitCode::Passed);
    }
    if jobs.is_empty() {
        render::out("no jobs match");
        return Ok(ExitCode::Passed);
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let build = if !j.firmware_revision.is_empty() {
                j.firmware_revision.clone()
            } else {
                j.artifact_sha256.chars().take(12).collect()
            };
            let took = if j.finished_ms > j.started_ms && j.started_ms > 0 {
                format!("{:.1}s", (j.finished_ms - j.started_ms) as f64 / 1000.0)
            } else {
                "-".into()
            };
            vec![
                rfc3339(j.created_ms),
                j.id.clone(),
                j.state.to_string(),
                j.rig.clone().unwrap_or_else(|| "-".into()),
                if j.drive_model.is_empty() {
                    "-".into()
                } else {
                    j.drive_model.clone()
                },
                if build.is_empty() { "-".into() } else { build },
                j.plan_name.clone(),
                took,
            ]
        })
        .collect();
    render::table(
        &[
            "SUBMITTED",
            "JOB",
            "STATE",
            "RIG",
            "MODEL",
            "BUILD",
            "PLAN",
            "TOOK",
        ],
        rows,
    );
    if !rates.is_empty() {
        render::out("");
        let rows = rates
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.runs.to_string(),
                    r.passed.to_string(),
                    r.failed.to_string(),
                    r.error.to_string(),
                    format!("{:.0}%", r.pass_rate * 100.0),
                ]
            })
            .collect();
        render::table(
            &["STEP", "RUNS", "PASSED", "FAILED", "ERROR", "PASS RATE"],
            rows,
        );
    }
    Ok(ExitCode::Passed)
}
