//! Accepting assignments (fencing tokens, one job per rig) and running them with the plan runner, streaming
//! progress to the controller and spooling the result before it is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use nvfarm_model::farm::JobState;
use nvfarm_model::journal::JournalEvent;
use nvfarm_model::link::{Assignment, FromAgent, JobResult, Refusal};
use nvfarm_model::plan::{Plan, Step, StepKind};
use nvfarm_model::{LogLine, Outcome, StepReport};

use super::progress::{self, Event};
use super::{artifacts, Client, Shared};
use crate::runner::{self, Firmware, Observer, RunOptions};

/// A job this agent runs.
pub(super) struct RunningJob {
    pub rig: String,
    pub token: u64,
    pub cancel: Arc<AtomicBool>,
}

fn refuse(tx: &mpsc::UnboundedSender<FromAgent>, a: &Assignment, reason: String) {
    tracing::warn!(
        job = a.job_id,
        rig = a.rig,
        token = a.fencing_token,
        "refusing assignment: {reason}"
    );
    let _ = tx.send(FromAgent::Refused(Refusal {
        job_id: a.job_id.clone(),
        fencing_token: a.fencing_token,
        reason,
    }));
}

/// Takes an assignment: checks the rig and the fencing token, fences off an older job on the rig, and starts
/// the job once the rig is free.
pub(super) fn assign(
    shared: &Arc<Shared>,
    a: Assignment,
    tx: &mpsc::UnboundedSender<FromAgent>,
    client: Client,
) {
    if shared.stopping.load(Ordering::Relaxed) {
        return refuse(tx, &a, "the agent is shutting down".into());
    }
    if shared.inventory.rig(&a.rig).is_err() {
        return refuse(
            tx,
            &a,
            format!("rig {} is not in this agent's rig file", a.rig),
        );
    }
    if shared
        .running()
        .get(&a.job_id)
        .is_some_and(|j| j.token == a.fencing_token)
    {
        return; // a re-sent assignment of a job already running
    }
    match shared.spool.accept_token(&a.rig, a.fencing_token) {
        Ok(true) => {}
        Ok(false) => {
            let seen = shared.spool.tokens().get(&a.rig).copied().unwrap_or(0);
            return refuse(
                tx,
                &a,
                format!(
                    "stale fencing token {} for rig {}: this agent already accepted token {seen}",
                    a.fencing_token, a.rig
                ),
            );
        }
        Err(e) => return refuse(tx, &a, format!("cannot record the fencing token: {e}")),
    }
    if let Err(e) = shared.journal.record(JournalEvent::Accepted {
        rig: a.rig.clone(),
        job: a.job_id.clone(),
        token: a.fencing_token,
    }) {
        tracing::error!(job = a.job_id, "cannot write the lease journal: {e}");
    }
    // An older job still running on this rig is fenced off now.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut running = shared.running();
        for (id, j) in running.iter() {
            if j.rig == a.rig {
                tracing::warn!(
                    job = id,
                    "fenced off by a newer assignment on the same rig; cancelling"
                );
                j.cancel.store(true, Ordering::Relaxed);
            }
        }
        running.insert(
            a.job_id.clone(),
            RunningJob {
                rig: a.rig.clone(),
                token: a.fencing_token,
                cancel: cancel.clone(),
            },
        );
    }
    let Some(lock) = shared.rig_locks.get(&a.rig).cloned() else {
        return refuse(tx, &a, format!("rig {} has no lock (internal)", a.rig));
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let held = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                tracing::info!(
                    job = a.job_id,
                    rig = a.rig,
                    "waiting for the previous job on this rig to stop"
                );
                lock.lock_owned().await
            }
        };
        let result = if cancel.load(Ordering::Relaxed) {
            JobResult::early(
                &a.job_id,
                a.fencing_token,
                Outcome::Cancelled,
                "cancelled before it started".into(),
            )
        } else {
            run_job(&shared, &a, cancel, client).await
        };
        drop(held);
        if let Err(e) = shared.journal.record(JournalEvent::Released {
            rig: a.rig.clone(),
            job: a.job_id.clone(),
            token: a.fencing_token,
            outcome: result.outcome.as_str().to_string(),
        }) {
            tracing::error!(job = a.job_id, "cannot write the lease journal: {e}");
        }
        if let Err(e) = shared.spool.save_result(&result) {
            tracing::error!(job = a.job_id, "cannot spool the result: {e}");
        }
        let _ = shared.outbox.send(FromAgent::Result(result));
        shared.running().remove(&a.job_id);
    });
}

/// Hands a running plan's phase, log lines and finished steps to the job's batcher ([`progress`]).
struct Forward {
    events: progress::Events,
}

impl Forward {
    fn send(&self, ev: Event) {
        let _ = self.events.send(ev);
    }
}

fn phase(step: &Step) -> JobState {
    let flashes = |s: &Step| matches!(s.kind, StepKind::Flash { .. });
    let in_group = match &step.kind {
        StepKind::Parallel { steps } => steps.iter().any(flashes),
        _ => false,
    };
    if flashes(step) || in_group {
        JobState::Flashing
    } else {
        JobState::Testing
    }
}

impl Observer for Forward {
    fn step_started(&mut self, step: &Step) {
        self.send(Event::Phase(phase(step)));
        self.send(Event::Line(LogLine {
            step: step.number,
            text: format!("== step {} {}", step.number, step.title()),
        }));
    }
    fn log(&mut self, step: &Step, line: &str) {
        self.send(Event::Line(LogLine {
            step: step.number,
            text: line.to_string(),
        }));
    }
    fn step_finished(&mut self, step: &Step, r: &StepReport) {
        self.send(Event::Line(LogLine {
            step: step.number,
            text: format!("== {}", r.status_line()),
        }));
        let mut report = r.clone();
        report.log.clear(); // the lines went ahead, one by one
        self.send(Event::Step(report));
    }
}

async fn run_job(
    shared: &Arc<Shared>,
    a: &Assignment,
    cancel: Arc<AtomicBool>,
    client: Client,
) -> JobResult {
    tracing::info!(
        job = a.job_id,
        rig = a.rig,
        token = a.fencing_token,
        "running job"
    );
    let error =
        |message: String| JobResult::early(&a.job_id, a.fencing_token, Outcome::Error, message);
    let plan = match Plan::parse(
        &a.plan_toml,
        std::path::Path::new(&format!("<{}>", a.job_id)),
    ) {
        Ok(p) => p,
        Err(e) => return error(format!("the plan does not parse here: {e}")),
    };
    let firmware = if a.artifact_sha256.is_empty() {
        None
    } else {
        match artifacts::fetch(shared, client, &a.artifact_sha256, &a.job_id).await {
            Ok(path) => match Firmware::load(&path, None) {
                Ok(mut f) => {
                    if !a.firmware_name.is_empty() {
                        f.path = a.firmware_name.clone().into();
                    }
                    Some(f)
                }
                Err(e) => return error(e),
            },
            Err(e) => return error(format!("cannot fetch artifact {}: {e}", a.artifact_sha256)),
        }
    };
    if a.timeout_ms > 0 {
        let c = cancel.clone();
        let t = Duration::from_millis(a.timeout_ms);
        tokio::spawn(async move {
            tokio::time::sleep(t).await;
            c.store(true, Ordering::Relaxed);
        });
    }
    let shared2 = shared.clone();
    let a2 = a.clone();
    let (events, batcher) =
        progress::batch(shared.outbox.clone(), a.job_id.clone(), a.fencing_token);
    let run = tokio::task::spawn_blocking(move || {
        let rig = shared2.inventory.rig(&a2.rig).ok()?.clone();
        let opts = RunOptions {
            sysfs: shared2.cfg.sysfs.clone(),
            cancel,
            history: Some(shared2.cfg.work_dir.join("history")),
        };
        let mut fwd = Forward { events };
        let r = runner::run_plan(
            &plan,
            &shared2.inventory,
            &rig,
            firmware.as_ref(),
            &opts,
            &mut fwd,
        );
        fwd.send(Event::Line(LogLine {
            step: 0,
            text: r.summary(),
        }));
        Some(r)
    })
    .await;
    // Every line and step goes out before the result.
    let _ = batcher.await;
    let report = match run {
        Ok(Some(r)) => r,
        Ok(None) => return error(format!("rig {} left this agent's rig file", a.rig)),
        Err(e) => return error(format!("the runner crashed: {e}")),
    };
    let drive = drive_firmware(shared, &a.rig).await;
    JobResult {
        job_id: a.job_id.clone(),
        fencing_token: a.fencing_token,
        outcome: report.outcome,
        message: report.headline(),
        steps: report
            .steps
            .into_iter()
            .map(|mut s| {
                s.log.clear();
                s
            })
            .collect(),
        firmware_revision: report.firmware.and_then(|f| f.revision).unwrap_or_default(),
        duration_ms: report.duration_ms,
        drive,
    }
}

/// What the rig's drive runs after a job, whatever its outcome (bounded: a hung drive answers `None`).
async fn drive_firmware(
    shared: &Arc<Shared>,
    rig: &str,
) -> Option<nvfarm_model::farm::DriveFirmware> {
    let rig = shared.inventory.rig(rig).ok()?.clone();
    let (file, sysfs) = (shared.inventory.file.clone(), shared.cfg.sysfs.clone());
    let read = tokio::task::spawn_blocking(move || {
        rig.read_firmware(&file, &sysfs, Duration::from_secs(5))
    });
    tokio::time::timeout(Duration::from_secs(8), read)
        .await
        .ok()?
        .ok()?
}
