//! The farmctl subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

use nvfarm_proto::v1 as pb;

use crate::client::{
    self, connect, parse_labels, Client, Failure, Result, EXIT_FAILED, EXIT_INFRA, EXIT_PASSED,
    EXIT_TIMEOUT,
};
use crate::report::{self, exit_code, job_state};
use crate::{Cli, RigAction};
use nvme_spec::units::parse_duration;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List rigs, their state and who holds them.
    Rigs {
        #[arg(long)]
        labels: Option<String>,
    },
    /// Reserve a rig for yourself.
    Reserve {
        #[arg(long, conflicts_with = "labels")]
        rig: Option<String>,
        #[arg(long)]
        labels: Option<String>,
        /// How long (e.g. 2h).
        #[arg(long = "for", value_parser = parse_duration, default_value = "1h")]
        duration: Duration,
        /// Queue and wait until a rig is free.
        #[arg(long)]
        wait: bool,
        /// interactive, ci or nightly.
        #[arg(long, default_value = "interactive")]
        priority: String,
    },
    /// Release a reservation.
    Release { lease_id: String },
    /// Extend a reservation.
    Extend {
        lease_id: String,
        #[arg(long = "for", value_parser = parse_duration, default_value = "1h")]
        duration: Duration,
    },
    /// Flash a firmware build and run a test plan on a rig (the CI stage). Blocks, streams the log.
    Run {
        #[arg(long)]
        firmware: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long, conflicts_with = "labels")]
        rig: Option<String>,
        #[arg(long)]
        labels: Option<String>,
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Overall limit, queueing included.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        timeout: Duration,
        #[arg(long, default_value = "ci")]
        priority: String,
    },
    /// Run one plan on every matching rig and compare with the previous sweep of the same name.
    Sweep {
        #[arg(long)]
        firmware: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        labels: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        junit: Option<PathBuf>,
        #[arg(long, value_parser = parse_duration, default_value = "2h")]
        timeout: Duration,
        /// Re-run a failed rig this many times (a pass on retry is reported as flaky).
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// An io metric (IOPS, bandwidth, p99 latency) worse than last time by more than this percentage is a
        /// regression.
        #[arg(long, default_value_t = 25.0)]
        threshold: f64,
        #[arg(long, default_value = "nightly")]
        priority: String,
    },
    /// Recent jobs.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        rig: Option<String>,
    },
    /// One job with its steps.
    Job { id: String },
    /// A job's log.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Waiting requests, their position and why they wait.
    Queue,
    /// Cancel a job (its lease is freed).
    Cancel { id: String },
    /// Quarantine, restore or put a rig in maintenance.
    Rig {
        #[command(subcommand)]
        action: RigAction,
    },
}

fn priority(s: &str) -> Result<i32> {
    Ok(match s {
        "interactive" => pb::Priority::Interactive as i32,
        "ci" => pb::Priority::Ci as i32,
        "nightly" => pb::Priority::Nightly as i32,
        _ => {
            return Err(Failure::usage(format!(
                "invalid --priority '{s}': expected interactive, ci or nightly"
            )))
        }
    })
}

fn selector(rig: &Option<String>, labels: &Option<String>, required: bool) -> Result<pb::Selector> {
    let labels = match labels {
        Some(l) => parse_labels(l).map_err(Failure::usage)?,
        None => Default::default(),
    };
    if required && rig.is_none() && labels.is_empty() {
        return Err(Failure::usage("give --rig NAME or --labels k=v,..."));
    }
    Ok(pb::Selector {
        rig: rig.clone().unwrap_or_default(),
        labels: labels.into_iter().collect(),
    })
}

fn json<T: serde::Serialize>(v: &T) {
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(v).expect("serializable")
    );
}

fn out(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn ms_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn rig_json(r: &pb::Rig) -> serde_json::Value {
    serde_json::json!({
        "name": r.name, "agent": r.agent, "state": pb::RigState::try_from(r.state).unwrap_or_default().short(),
        "labels": r.labels, "drive_serial": r.drive_serial, "drive_model": r.drive_model,
        "firmware_revision": r.firmware_revision, "reason": r.reason, "lease_id": r.lease_id, "holder": r.holder,
        "lease_expires_ms": r.lease_expires_ms, "health_check_pending": r.health_check_pending,
        "consecutive_infra_errors": r.consecutive_infra_errors,
    })
}

fn lease_json(l: &pb::Lease) -> serde_json::Value {
    serde_json::json!({"id": l.id, "rig": l.rig, "holder": l.holder, "fencing_token": l.fencing_token,
        "granted_ms": l.granted_ms, "expires_ms": l.expires_ms, "kind": l.kind, "job_id": l.job_id})
}

fn job_json(j: &pb::Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "state": job_state(j).short(), "rig": j.rig, "plan": j.plan_name, "firmware": j.firmware_name,
        "firmware_revision": j.firmware_revision, "artifact_sha256": j.artifact_sha256,
        "priority": pb::Priority::try_from(j.priority).unwrap_or_default().short(), "submitter": j.submitter,
        "created_ms": j.created_ms, "started_ms": j.started_ms, "finished_ms": j.finished_ms, "message": j.message,
        "fencing_token": j.fencing_token, "sweep_id": j.sweep_id, "attempt": j.attempt,
        "steps": j.steps.iter().map(|s| serde_json::json!({"number": s.number, "name": s.name, "kind": s.kind,
            "outcome": s.outcome, "duration_ms": s.duration_ms, "message": s.message, "metrics": s.metrics})).collect::<Vec<_>>(),
    })
}

pub async fn dispatch(cli: Cli) -> Result<u8> {
    // Local validation first: bad input never needs the controller.
    match &cli.command {
        Command::Run { plan, .. } | Command::Sweep { plan, .. } => {
            load_plan(plan)?;
        }
        _ => {}
    }
    let mut c = connect(&cli.controller, cli.token.as_deref()).await?;
    let j = cli.json;
    match cli.command {
        Command::Rigs { labels } => {
            let labels = labels
                .map(|l| parse_labels(&l))
                .transpose()
                .map_err(Failure::usage)?
                .unwrap_or_default();
            let rigs = c
                .list_rigs(pb::ListRigsRequest {
                    labels: labels.into_iter().collect(),
                })
                .await?
                .into_inner()
                .rigs;
            if j {
                json(&rigs.iter().map(rig_json).collect::<Vec<_>>());
            } else {
                out(format!(
                    "{:<14} {:<12} {:<12} {:<28} {:<10} {}",
                    "RIG", "AGENT", "STATE", "LABELS", "FIRMWARE", "HOLDER / REASON"
                ));
                for r in rigs {
                    let mut labels: Vec<String> =
                        r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    labels.sort();
                    let who = if !r.holder.is_empty() {
                        format!(
                            "{} ({}){}",
                            r.holder,
                            r.lease_id,
                            if r.lease_expires_ms > 0 {
                                format!(" until {}", ms_time(r.lease_expires_ms))
                            } else {
                                String::new()
                            }
                        )
                    } else {
                        r.reason.clone()
                    };
                    let mut state = pb::RigState::try_from(r.state)
                        .unwrap_or_default()
                        .short()
                        .to_string();
                    if r.health_check_pending {
                        state.push('*');
                    }
                    out(format!(
                        "{:<14} {:<12} {:<12} {:<28} {:<10} {}",
                        r.name,
                        r.agent,
                        state,
                        labels.join(","),
                        r.firmware_revision,
                        who
                    ));
                }
            }
            Ok(EXIT_PASSED)
        }
        Command::Reserve {
            rig,
            labels,
            duration,
            wait,
            priority: p,
        } => {
            reserve(
                &mut c,
                j,
                selector(&rig, &labels, true)?,
                duration,
                wait,
                priority(&p)?,
            )
            .await
        }
        Command::Release { lease_id } => {
            let l = c
                .release(pb::ReleaseRequest { lease_id })
                .await?
                .into_inner()
                .lease
                .unwrap_or_default();
            if j {
                json(&lease_json(&l));
            } else {
                out(format!("released {} ({})", l.id, l.rig));
            }
            Ok(EXIT_PASSED)
        }
        Command::Extend { lease_id, duration } => {
            let l = c
                .extend(pb::ExtendRequest {
                    lease_id,
                    duration_ms: duration.as_millis() as u64,
                })
                .await?
                .into_inner();
            if j {
                json(&lease_json(&l));
            } else {
                out(format!(
                    "{} on {} now ends {}",
                    l.id,
                    l.rig,
                    ms_time(l.expires_ms)
                ));
            }
            Ok(EXIT_PASSED)
        }
        Command::Run {
            firmware,
            plan,
            rig,
            labels,
            junit,
            timeout,
            priority: p,
        } => {
            let sel = selector(&rig, &labels, true)?;
            run(
                &mut c,
                &cli.controller,
                cli.token.as_deref(),
                j,
                firmware,
                plan,
                sel,
                junit,
                timeout,
                priority(&p)?,
            )
            .await
        }
        Command::Sweep {
            firmware,
            plan,
            labels,
            name,
            junit,
            timeout,
            retries,
            threshold,
            priority: p,
        } => {
            let labels = labels
                .map(|l| parse_labels(&l))
                .transpose()
                .map_err(Failure::usage)?
                .unwrap_or_default();
            sweep(
                &mut c,
                j,
                firmware,
                plan,
                labels,
                name,
                junit,
                timeout,
                retries,
                threshold,
                priority(&p)?,
            )
            .await
        }
        Command::Jobs { limit, rig } => {
            let jobs = c
                .list_jobs(pb::ListJobsRequest {
                    limit,
                    rig: rig.unwrap_or_default(),
                    sweep_id: String::new(),
                })
                .await?
                .into_inner()
                .jobs;
            if j {
                json(&jobs.iter().map(job_json).collect::<Vec<_>>());
            } else {
                out(format!(
                    "{:<12} {:<10} {:<12} {:<10} {:<20} {:<10} {}",
                    "JOB", "STATE", "RIG", "PLAN", "FIRMWARE", "BY", "MESSAGE"
                ));
                for jb in jobs {
                    out(format!(
                        "{:<12} {:<10} {:<12} {:<10} {:<20} {:<10} {}",
                        jb.id,
                        job_state(&jb).short(),
                        jb.rig,
                        jb.plan_name,
                        jb.firmware_name,
                        jb.submitter,
                        jb.message
                    ));
                }
            }
            Ok(EXIT_PASSED)
        }
        Command::Job { id } => {
            let jb = c.get_job(pb::GetJobRequest { id }).await?.into_inner();
            if j {
                json(&job_json(&jb));
            } else {
                out(format!(
                    "{} {} on {} ({} by {}): {}",
                    jb.id,
                    job_state(&jb).short().to_uppercase(),
                    jb.rig,
                    jb.plan_name,
                    jb.submitter,
                    jb.message
                ));
                for s in &jb.steps {
                    out(format!(
                        "  [{:>2}] {:<26} {:<9} {:>6.1}s  {}",
                        s.number,
                        format!("{} ({})", s.name, s.kind),
                        s.outcome.to_uppercase(),
                        s.duration_ms as f64 / 1000.0,
                        s.message
                    ));
                }
            }
            Ok(EXIT_PASSED)
        }
        Command::Logs { id, follow } => {
            let mut s = c
                .watch_job(pb::WatchJobRequest {
                    id,
                    follow,
                    from_line: 0,
                })
                .await?
                .into_inner();
            let mut last = None;
            while let Some(ev) = s.next().await {
                let ev = ev?;
                if let Some(job) = ev.job {
                    last = Some(job);
                } else {
                    out(&ev.line);
                }
            }
            Ok(if follow {
                last.map(|j| exit_code(job_state(&j)))
                    .unwrap_or(EXIT_PASSED)
            } else {
                EXIT_PASSED
            })
        }
        Command::Queue => {
            let q = c.queue(pb::QueueRequest {}).await?.into_inner().entries;
            if j {
                json(&q
                    .iter()
                    .map(|e| serde_json::json!({"position": e.position, "request_id": e.request_id, "job_id": e.job_id,
                        "priority": pb::Priority::try_from(e.priority).unwrap_or_default().short(), "holder": e.holder,
                        "rig": e.selector.as_ref().map(|s| s.rig.clone()), "labels": e.selector.as_ref().map(|s| s.labels.clone()),
                        "created_ms": e.created_ms, "waiting_because": e.waiting_because}))
                    .collect::<Vec<_>>());
            } else if q.is_empty() {
                out("the queue is empty");
            } else {
                for e in q {
                    let what = if e.job_id.is_empty() {
                        "reservation".to_string()
                    } else {
                        format!("job {}", e.job_id)
                    };
                    out(format!(
                        "{:>3}. {} ({what}, {}, {}): {}",
                        e.position,
                        e.request_id,
                        pb::Priority::try_from(e.priority)
                            .unwrap_or_default()
                            .short(),
                        e.holder,
                        e.waiting_because
                    ));
                }
            }
            Ok(EXIT_PASSED)
        }
        Command::Cancel { id } => {
            let jb = c
                .cancel_job(pb::CancelJobRequest { id })
                .await?
                .into_inner();
            if j {
                json(&job_json(&jb));
            } else {
                out(format!("{} {}", jb.id, job_state(&jb).short()));
            }
            Ok(EXIT_PASSED)
        }
        Command::Rig { action } => {
            let (rig, action, reason) = match action {
                RigAction::Quarantine { name, reason } => (name, "quarantine", reason),
                RigAction::Restore { name } => (name, "restore", String::new()),
                RigAction::Maintenance { name, reason } => (name, "maintenance", reason),
            };
            let r = c
                .set_rig_state(pb::SetRigStateRequest {
                    rig,
                    action: action.into(),
                    reason,
                })
                .await?
                .into_inner();
            if j {
                json(&rig_json(&r));
            } else {
                out(format!(
                    "{}: {} {}",
                    r.name,
                    pb::RigState::try_from(r.state).unwrap_or_default().short(),
                    r.reason
                ));
            }
            Ok(EXIT_PASSED)
        }
    }
}

fn load_plan(path: &PathBuf) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read plan {}: {e}", path.display())))?;
    let plan = bench_agent::plan::Plan::parse(&text, path).map_err(Failure::usage)?;
    Ok((text, plan.name))
}

async fn reserve(
    c: &mut Client,
    j: bool,
    sel: pb::Selector,
    duration: Duration,
    wait: bool,
    prio: i32,
) -> Result<u8> {
    let r = c
        .reserve(pb::ReserveRequest {
            selector: Some(sel),
            duration_ms: duration.as_millis() as u64,
            priority: prio,
            wait,
            holder: String::new(),
        })
        .await?
        .into_inner();
    let lease = match r.lease {
        Some(l) => l,
        None => {
            eprintln!(
                "farmctl: queued as {} (position {}): {}",
                r.request_id, r.position, r.waiting_because
            );
            let mut s = c
                .watch_request(pb::WatchRequestRequest {
                    request_id: r.request_id.clone(),
                })
                .await?
                .into_inner();
            let mut last = String::new();
            let got = loop {
                let wait_next = s.next();
                let ev = tokio::select! {
                    ev = wait_next => ev,
                    _ = tokio::signal::ctrl_c() => {
                        let _ = c.cancel_request(pb::CancelRequestRequest { request_id: r.request_id.clone() }).await;
                        return Err(Failure { code: EXIT_TIMEOUT, message: "interrupted: the request was withdrawn".into() });
                    }
                };
                let Some(ev) = ev else {
                    return Err(Failure::infra(
                        "the controller ended the wait without an answer",
                    ));
                };
                let ev = ev?;
                if let Some(l) = ev.lease {
                    break l;
                }
                if !ev.ended.is_empty() {
                    return Err(Failure::infra(ev.ended));
                }
                let line = format!("position {}: {}", ev.position, ev.waiting_because);
                if line != last {
                    eprintln!("farmctl: {line}");
                    last = line;
                }
            };
            got
        }
    };
    if j {
        json(&lease_json(&lease));
    } else {
        out(format!(
            "reserved {} as {} until {} (fencing token {})",
            lease.rig,
            lease.id,
            ms_time(lease.expires_ms),
            lease.fencing_token
        ));
    }
    Ok(EXIT_PASSED)
}

/// Uploads an artifact in chunks (never one message); returns its sha256 and file name.
async fn upload(c: &mut Client, path: &PathBuf) -> Result<(String, String)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("cannot read firmware {}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(Failure::usage(format!(
            "firmware {} is empty",
            path.display()
        )));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let size = bytes.len() as u64;
    let chunks: Vec<pb::ArtifactChunk> = bytes
        .chunks(nvfarm_proto::ARTIFACT_CHUNK)
        .enumerate()
        .map(|(i, d)| pb::ArtifactChunk {
            name: if i == 0 { name.clone() } else { String::new() },
            size,
            sha256: if i == 0 { sha.clone() } else { String::new() },
            data: d.to_vec(),
            offset: (i * nvfarm_proto::ARTIFACT_CHUNK) as u64,
        })
        .collect();
    let info = c
        .upload_artifact(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    eprintln!(
        "farmctl: firmware {name} ({size} bytes, sha256 {}) {}",
        &sha[..12],
        if info.existed {
            "already stored"
        } else {
            "uploaded"
        }
    );
    Ok((sha, name))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    c: &mut Client,
    url: &str,
    token: Option<&str>,
    j: bool,
    firmware: PathBuf,
    plan_path: PathBuf,
    sel: pb::Selector,
    junit: Option<PathBuf>,
    timeout: Duration,
    prio: i32,
) -> Result<u8> {
    let (plan_toml, plan_name) = load_plan(&plan_path)?;
    let (sha, firmware_name) = upload(c, &firmware).await?;
    let job = c
        .submit_job(pb::SubmitJobRequest {
            selector: Some(sel.clone()),
            plan_toml,
            plan_name: plan_name.clone(),
            artifact_sha256: sha,
            firmware_name,
            timeout_ms: timeout.as_millis() as u64,
            priority: prio,
            submitter: String::new(),
            sweep_id: String::new(),
        })
        .await?
        .into_inner();
    let id = job.id.clone();
    eprintln!("farmctl: job {id} submitted: plan {plan_name}");
    // The job log goes to stdout, unless stdout carries --json (then the log goes to stderr).
    let to_stdout = !j;

    let mut lines: Vec<String> = vec![];
    let mut last_state = pb::JobState::Unspecified;
    let mut from_line = 0u64;
    let mut reconnects = 0;
    let final_job = loop {
        let stream = c
            .watch_job(pb::WatchJobRequest {
                id: id.clone(),
                follow: true,
                from_line,
            })
            .await;
        let mut s = match stream {
            Ok(s) => s.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && reconnects < 60 => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(nc) = connect(url, token).await {
                    *c = nc;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut ended: Option<pb::Job> = None;
        loop {
            let ev = tokio::select! {
                ev = s.next() => ev,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("farmctl: interrupted: cancelling job {id}");
                    let cancelled = c.cancel_job(pb::CancelJobRequest { id: id.clone() }).await;
                    let state = cancelled.as_ref().map(|r| job_state(r.get_ref()).short()).unwrap_or("unknown");
                    return Err(Failure { code: EXIT_TIMEOUT, message: format!("job {id} cancelled (now {state}); its rig is released") });
                }
            };
            match ev {
                None => break,
                Some(Err(e)) => {
                    eprintln!(
                        "farmctl: lost the job stream ({}); reconnecting",
                        e.message()
                    );
                    break;
                }
                Some(Ok(ev)) => {
                    if let Some(job) = ev.job {
                        let st = job_state(&job);
                        if st != last_state {
                            let where_ = if job.rig.is_empty() {
                                String::new()
                            } else {
                                format!(" on {}", job.rig)
                            };
                            eprintln!("farmctl: job {id} {}{where_}", st.short());
                            last_state = st;
                        }
                        if st.is_terminal() {
                            ended = Some(job);
                        }
                    } else {
                        from_line = ev.line_no + 1;
                        if to_stdout {
                            out(&ev.line);
                        } else {
                            eprintln!("{}", ev.line);
                        }
                        lines.push(ev.line);
                    }
                }
            }
        }
        if let Some(job) = ended {
            break job;
        }
        reconnects += 1;
        if reconnects > 120 {
            return Err(Failure::infra(format!("lost contact with the controller while job {id} ran; check `farmctl job {id}` later")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(nc) = connect(url, token).await {
            *c = nc;
        }
    };
    let final_job = c
        .get_job(pb::GetJobRequest {
            id: final_job.id.clone(),
        })
        .await
        .map(|r| r.into_inner())
        .unwrap_or(final_job);
    let report = report::run_report(&final_job, &lines);
    if let Some(path) = &junit {
        report::write_junit(path, std::slice::from_ref(&report)).map_err(Failure::infra)?;
    }
    let state = job_state(&final_job);
    eprintln!(
        "farmctl: {}: {} on {} — {}",
        final_job.id,
        state.short().to_uppercase(),
        report.rig,
        final_job.message
    );
    if j {
        json(&job_json(&final_job));
    }
    Ok(exit_code(state))
}

#[allow(clippy::too_many_arguments)]
async fn sweep(
    c: &mut Client,
    j: bool,
    firmware: PathBuf,
    plan_path: PathBuf,
    labels: std::collections::BTreeMap<String, String>,
    name: Option<String>,
    junit: Option<PathBuf>,
    timeout: Duration,
    retries: u32,
    threshold: f64,
    prio: i32,
) -> Result<u8> {
    let (plan_toml, plan_name) = load_plan(&plan_path)?;
    let (sha, firmware_name) = upload(c, &firmware).await?;
    let name = name.unwrap_or_else(|| plan_name.clone());
    let sweep = c
        .submit_sweep(pb::SubmitSweepRequest {
            name: name.clone(),
            labels: labels.into_iter().collect(),
            plan_toml,
            plan_name: plan_name.clone(),
            artifact_sha256: sha,
            firmware_name,
            timeout_ms: timeout.as_millis() as u64,
            priority: prio,
            submitter: String::new(),
            retries,
        })
        .await?
        .into_inner();
    eprintln!(
        "farmctl: sweep {} ({name}) started on {} rig(s){}",
        sweep.id,
        sweep.job_ids.len(),
        if sweep.previous_sweep_id.is_empty() {
            String::new()
        } else {
            format!(", compared with {}", sweep.previous_sweep_id)
        }
    );
    let mut last = String::new();
    let report = loop {
        let r = tokio::select! {
            r = c.get_sweep(pb::GetSweepRequest { id: sweep.id.clone(), regression_threshold_pct: threshold }) => r?.into_inner(),
            _ = tokio::signal::ctrl_c() => {
                for jid in &sweep.job_ids {
                    let _ = c.cancel_job(pb::CancelJobRequest { id: jid.clone() }).await;
                }
                return Err(Failure { code: EXIT_TIMEOUT, message: format!("interrupted: sweep {} cancelled", sweep.id) });
            }
        };
        let mut counts = std::collections::BTreeMap::new();
        for jb in &r.jobs {
            *counts.entry(job_state(jb).short()).or_insert(0) += 1;
        }
        let line = counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            eprintln!("farmctl: sweep {}: {line}", sweep.id);
            last = line;
        }
        if r.sweep.as_ref().is_some_and(|s| s.done) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    print_matrix(&report, j);
    if let Some(path) = &junit {
        // One suite per rig, from each rig's final attempt.
        let mut finals: std::collections::BTreeMap<String, &pb::Job> = Default::default();
        for jb in &report.jobs {
            let rig = jb
                .selector
                .as_ref()
                .map(|s| s.rig.clone())
                .unwrap_or_default();
            if finals.get(&rig).is_none_or(|cur| cur.attempt <= jb.attempt) {
                finals.insert(rig, jb);
            }
        }
        let reports: Vec<_> = finals
            .values()
            .map(|jb| report::run_report(jb, &[]))
            .collect();
        report::write_junit(path, &reports).map_err(Failure::infra)?;
    }
    Ok(match report.outcome.as_str() {
        "passed" => EXIT_PASSED,
        "failed" => EXIT_FAILED,
        _ if report
            .jobs
            .iter()
            .any(|jb| job_state(jb) == pb::JobState::JobError) =>
        {
            EXIT_INFRA
        }
        _ if report.jobs.iter().any(|jb| {
            matches!(
                job_state(jb),
                pb::JobState::JobTimedOut | pb::JobState::JobCancelled
            )
        }) =>
        {
            EXIT_TIMEOUT
        }
        _ => EXIT_INFRA,
    })
}

fn print_matrix(r: &pb::SweepReport, j: bool) {
    if j {
        json(&serde_json::json!({
            "sweep": r.sweep.as_ref().map(|s| serde_json::json!({"id": s.id, "name": s.name, "previous": s.previous_sweep_id})),
            "outcome": r.outcome,
            "rigs": r.rigs, "steps": r.steps,
            "cells": r.cells.iter().map(|c| serde_json::json!({"rig": c.rig, "step": c.step, "outcome": c.outcome,
                "previous": c.previous_outcome, "change": c.change, "detail": c.detail})).collect::<Vec<_>>(),
            "jobs": r.jobs.iter().map(job_json).collect::<Vec<_>>(),
        }));
        return;
    }
    let steps: Vec<String> = if r.steps.is_empty() {
        vec!["(job)".into()]
    } else {
        r.steps.clone()
    };
    let w = 16;
    let mut header = format!("{:<14}", "RIG");
    for s in &steps {
        header.push_str(&format!(" {:<w$}", s.chars().take(w).collect::<String>()));
    }
    out(header);
    for rig in &r.rigs {
        let mut row = format!("{rig:<14}");
        for s in &steps {
            let cell = r.cells.iter().find(|c| &c.rig == rig && &c.step == s);
            let text = match cell {
                Some(c) if c.change.is_empty() => c.outcome.clone(),
                Some(c) => format!("{} [{}]", c.outcome, c.change),
                None => "-".into(),
            };
            row.push_str(&format!(" {:<w$}", text));
        }
        out(row);
    }
    let notable: Vec<&pb::SweepCell> = r.cells.iter().filter(|c| !c.change.is_empty()).collect();
    if !notable.is_empty() {
        out("changes against the previous sweep:");
        for c in notable {
            out(format!(
                "  {} {}: {} ({} → {}){}",
                c.rig,
                c.step,
                c.change,
                if c.previous_outcome.is_empty() {
                    "-"
                } else {
                    &c.previous_outcome
                },
                c.outcome,
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.detail)
                }
            ));
        }
    }
    out(format!(
        "sweep {}: {}",
        r.sweep.as_ref().map(|s| s.id.as_str()).unwrap_or("?"),
        r.outcome.to_uppercase()
    ));
    let _ = client::EXIT_USAGE;
}
