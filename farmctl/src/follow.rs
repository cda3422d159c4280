//! Following a job: its log lines (each with its step's number) and state changes, until it ends, reconnecting
//! across a controller restart and resuming after the last line seen. Ctrl-C cancels the job when asked to and
//! waits (bounded) for its agent to confirm the stop, so the report holds the steps that ran.

use std::time::Duration;

use tokio_stream::StreamExt;

use nvfarm_model::farm::{Job, JobState};
use nvfarm_model::{ExitCode, LogLine};
use nvfarm_proto::v1 as pb;

use crate::client::{connect, CliError, Client, Result};
use crate::render::{note, out};

/// Where log lines go while following.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// stdout (a person reading the log).
    Stdout,
    /// stderr (stdout carries `--json`).
    Stderr,
}

/// A job followed to its end.
pub struct Followed {
    /// The job as it ended (with its plan).
    pub job: Job,
    /// Every log line seen, in order.
    pub lines: Vec<LogLine>,
}

/// How to follow.
pub struct Follow<'a> {
    /// The controller's URL (to reconnect).
    pub url: &'a str,
    /// The token (to reconnect).
    pub token: Option<&'a str>,
    /// Where lines go.
    pub lines: Lines,
    /// Ctrl-C cancels the job (the CI stage) rather than just stopping to follow.
    pub cancel_on_interrupt: bool,
}

/// How long `run` waits after Ctrl-C for the agent to stop the job (the controller gives up on its own sooner,
/// after its `stop_grace`).
const STOP_WAIT: Duration = Duration::from_secs(120);

/// Sleeps until `t` (forever without one).
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Follows job `id` until it ends: a job stopped by a cancel or timeout ends once its agent confirmed the stop.
pub async fn follow(c: &mut Client, id: &str, how: Follow<'_>) -> Result<Followed> {
    let mut lines: Vec<LogLine> = vec![];
    let mut last_state: Option<JobState> = None;
    let mut last_why = String::new();
    let mut from_line = 0u64;
    let mut reconnects = 0;
    // Set once Ctrl-C cancelled the job: how long to wait for its agent to confirm the stop.
    let mut stopping: Option<tokio::time::Instant> = None;
    let ended = loop {
        let stream = c
            .watch_job(pb::WatchJobRequest {
                id: id.to_string(),
                follow: true,
                from_line,
            })
            .await;
        let mut s = match stream {
            Ok(s) => s.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && reconnects < 60 => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(nc) = connect(how.url, how.token).await {
                    *c = nc;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut ended: Option<Job> = None;
        let mut stop_waiting = false;
        loop {
            let ev = tokio::select! {
                ev = s.next() => ev,
                _ = tokio::signal::ctrl_c() => {
                    if !how.cancel_on_interrupt {
                        return Err(CliError { code: ExitCode::TimedOut, message: format!("interrupted; job {id} goes on") });
                    }
                    if stopping.is_some() {
                        note(format!("stopped waiting for job {id}'s agent; the report shows what is known now"));
                        stop_waiting = true;
                        break;
                    }
                    note(format!(
                        "interrupted: cancelling job {id}; waiting up to {}s for its agent to stop it (Ctrl-C again to stop waiting)",
                        STOP_WAIT.as_secs()
                    ));
                    if let Err(e) = c.cancel_job(pb::CancelJobRequest { id: id.to_string() }).await {
                        note(format!("could not cancel job {id}: {}", e.message()));
                    }
                    stopping = Some(tokio::time::Instant::now() + STOP_WAIT);
                    continue;
                }
                _ = sleep_until(stopping), if stopping.is_some() => {
                    note(format!("job {id}'s agent did not confirm the stop within {}s; the report shows what is known now", STOP_WAIT.as_secs()));
                    stop_waiting = true;
                    break;
                }
            };
            match ev {
                None => break,
                Some(Err(e)) => {
                    note(format!(
                        "lost the job stream ({}); reconnecting",
                        e.message()
                    ));
                    break;
                }
                Some(Ok(ev)) => {
                    if let Some(job) = ev.job {
                        let job = Job::try_from(job)?;
                        if !ev.waiting_because.is_empty() && ev.waiting_because != last_why {
                            note(format!(
                                "job {id} queued (position {}): {}",
                                ev.position, ev.waiting_because
                            ));
                            last_why = ev.waiting_because.clone();
                        }
                        if last_state != Some(job.state) {
                            let where_ = job
                                .rig
                                .as_ref()
                                .map(|r| format!(" on {r}"))
                                .unwrap_or_default();
                            let waiting = if job.state.is_terminal() && !job.settled {
                                "; waiting for its agent to confirm the stop"
                            } else {
                                ""
                            };
                            note(format!("job {id} {}{where_}{waiting}", job.state));
                            last_state = Some(job.state);
                        }
                        // A stopped job ends for us once its agent confirmed: the steps it ran come with that.
                        if job.state.is_terminal() && job.settled {
                            ended = Some(job);
                        }
                    } else {
                        from_line = ev.line_no + 1;
                        match how.lines {
                            Lines::Stdout => out(&ev.line),
                            Lines::Stderr => eprintln!("{}", ev.line),
                        }
                        lines.push(LogLine {
                            step: ev.step,
                            text: ev.line,
                        });
                    }
                }
            }
        }
        if stop_waiting {
            let job = c
                .get_job(pb::GetJobRequest { id: id.to_string() })
                .await?
                .into_inner();
            break Job::try_from(job)?;
        }
        if let Some(job) = ended {
            break job;
        }
        reconnects += 1;
        if reconnects > 120 {
            return Err(CliError::infra(format!(
                "lost contact with the controller while job {id} ran; check `farmctl job {id}` later"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(nc) = connect(how.url, how.token).await {
            *c = nc;
        }
    };
    // The full record (events carry a summary without the plan).
    let job = match c
        .get_job(pb::GetJobRequest {
            id: ended.id.clone(),
        })
        .await
    {
        Ok(r) => Job::try_from(r.into_inner())?,
        Err(_) => ended,
    };
    Ok(Followed { job, lines })
}

/// Every log line of a job so far (no following).
pub async fn all_lines(c: &mut Client, id: &str) -> Result<Vec<LogLine>> {
    let mut s = c
        .watch_job(pb::WatchJobRequest {
            id: id.to_string(),
            follow: false,
            from_line: 0,
        })
        .await?
        .into_inner();
    let mut lines = vec![];
    while let Some(ev) = s.next().await {
        let ev = ev?;
        if ev.job.is_none() {
            lines.push(LogLine {
                step: ev.step,
                text: ev.line,
            });
        }
    }
    Ok(lines)
}
