//! Daemon mode: `bench-agent --controller URL --rigs FILE`.
//!
//! Keeps one bidirectional stream to the controller (reconnecting with backoff), registers its rigs and what it
//! holds (running jobs, results not yet confirmed), heartbeats, and runs assigned jobs with the same runner as
//! `bench-agent run`, one per rig, streaming log lines and step results as they happen.
//!
//! Fencing: an assignment whose token is not newer than the newest this agent accepted for that rig is refused;
//! accepted tokens are written to disk before work starts, so a restart cannot make an old token acceptable again.
//! A result is written to disk before it is sent and forgotten only when the controller confirms storing it.

pub mod spool;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::agent_link_client::AgentLinkClient;

use crate::outcome::{Outcome, RunReport, StepReport};
use crate::plan::{Plan, Step, StepKind};
use crate::rigs::Inventory;
use crate::runner::{self, Firmware, Observer, RunOptions};
use flash_tools::device::{Drive, Sysfs};
use spool::Spool;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub controller: String,
    pub token: Option<String>,
    pub rigs_file: PathBuf,
    pub work_dir: PathBuf,
    pub sysfs: Sysfs,
}

/// Why the agent link failed; the daemon reconnects with backoff after each.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The rig file or the work directory cannot be used.
    #[error("{0}")]
    Setup(String),
    /// The controller's address or TLS settings are wrong.
    #[error("controller endpoint: {0}")]
    Endpoint(String),
    /// The controller could not be reached.
    #[error("cannot connect to the controller: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The controller answered with an error status.
    #[error("the controller refused: {}", .0.message())]
    Status(#[from] tonic::Status),
    /// The controller broke the protocol (e.g. no `Registered` first).
    #[error("{0}")]
    Protocol(String),
    /// The session's own channel closed (the agent is stopping).
    #[error("the session ended")]
    Closed,
    /// A downloaded artifact is wrong, or the cache cannot store it.
    #[error("artifact: {0}")]
    Artifact(String),
}

impl<T> From<mpsc::error::SendError<T>> for AgentError {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        AgentError::Closed
    }
}

struct RunningJob {
    rig: String,
    token: u64,
    cancel: Arc<AtomicBool>,
}

struct Shared {
    cfg: AgentConfig,
    inventory: Inventory,
    /// One job at a time per rig: a newer assignment waits until a cancelled or fenced-off job has stopped.
    rig_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,

    spool: Spool,
    running: Mutex<HashMap<String, RunningJob>>,
    /// Messages for the controller; survives reconnects (a new stream drains it).
    outbox: mpsc::UnboundedSender<pb::AgentMessage>,
    stopping: AtomicBool,
}

fn msg(m: pb::agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

async fn channel(cfg: &AgentConfig) -> Result<Channel, AgentError> {
    let ep = nvfarm_proto::controller_endpoint(&cfg.controller).map_err(AgentError::Endpoint)?;
    Ok(ep.connect().await?)
}

fn with_auth<T>(token: &Option<String>, mut req: tonic::Request<T>) -> tonic::Request<T> {
    if let Some(t) = token {
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {t}")) {
            req.metadata_mut().insert("authorization", v);
        }
    }
    req
}

/// Runs the agent until `shutdown` completes; then cancels running jobs and waits for their results.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let inventory = Inventory::load(&cfg.rigs_file, &cfg.work_dir)
        .map_err(|e| AgentError::Setup(e.to_string()))?;
    let spool = Spool::open(&cfg.work_dir).map_err(|e| {
        AgentError::Setup(format!(
            "cannot use the work directory {}: {e}",
            cfg.work_dir.display()
        ))
    })?;
    // Create simulated drives now, so their identity can be reported at registration.
    for rig in &inventory.rigs {
        if let Err(e) = rig.locator(&inventory.file, &cfg.sysfs) {
            tracing::warn!(rig = rig.name, "rig not usable yet: {e}");
        }
    }
    let (outbox, mut outbox_rx) = mpsc::unbounded_channel();
    let rig_locks = inventory
        .rigs
        .iter()
        .map(|r| (r.name.clone(), Arc::new(tokio::sync::Mutex::new(()))))
        .collect();
    let shared = Arc::new(Shared {
        cfg,
        inventory,
        rig_locks,
        spool,
        running: Mutex::new(HashMap::new()),
        outbox,
        stopping: AtomicBool::new(false),
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop_rx.borrow() {
            break;
        }
        let started = std::time::Instant::now();
        let session = session(shared.clone(), &mut outbox_rx, stop_rx.clone());
        let result = tokio::select! {
            r = session => r,
            _ = stop_rx.changed() => Ok(()),
        };
        if *stop_rx.borrow() {
            break;
        }
        match result {
            Ok(()) => tracing::warn!("controller closed the agent link; reconnecting"),
            Err(e) => tracing::warn!(
                "agent link: {e}; retrying in {}",
                humantime::format_duration(backoff)
            ),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_rx.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    // Stop: cancel running jobs, let them finish their current command and spool their results.
    shared.stopping.store(true, Ordering::Relaxed);
    let running: Vec<(String, Arc<AtomicBool>)> = shared
        .running
        .lock()
        .expect("running lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.cancel.clone()))
        .collect();
    for (job, cancel) in &running {
        tracing::info!(job, "stopping: cancelling the running job");
        cancel.store(true, Ordering::Relaxed);
    }
    for _ in 0..600 {
        if shared.running.lock().expect("running lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One last attempt to hand over spooled results; whatever is left is reported at the next start.
    if !shared.spool.pending_results().is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(3), deliver_spooled(&shared)).await;
    }
    tracing::info!("bench-agent stopped");
    Ok(())
}

/// Sends spooled results over a short-lived session (at shutdown).
async fn deliver_spooled(shared: &Arc<Shared>) -> Result<(), AgentError> {
    let ch = channel(&shared.cfg).await?;
    let mut client = AgentLinkClient::new(ch);
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(msg(pb::agent_message::Msg::Register(
        register(shared).await,
    )))?;
    let mut inbound = client
        .session(with_auth(
            &shared.cfg.token,
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
        ))
        .await?
        .into_inner();
    while let Some(Ok(m)) = inbound.next().await {
        if let Some(pb::controller_message::Msg::Stored(s)) = m.msg {
            shared.spool.forget_result(&s.job_id);
            if shared.spool.pending_results().is_empty() {
                break;
            }
        }
    }
    Ok(())
}

async fn register(shared: &Arc<Shared>) -> pb::Register {
    let tokens = shared.spool.tokens();
    let mut rigs = vec![];
    for rig in &shared.inventory.rigs {
        let (serial, model, fw) = identity(shared, &rig.name).await;
        rigs.push(pb::AgentRig {
            name: rig.name.clone(),
            labels: rig.labels.clone().into_iter().collect(),
            drive_serial: serial,
            drive_model: model,
            firmware_revision: fw,
            newest_token: tokens.get(&rig.name).copied().unwrap_or(0),
        });
    }
    let mut jobs: Vec<pb::AgentJob> = shared
        .running
        .lock()
        .expect("running lock")
        .iter()
        .map(|(id, r)| pb::AgentJob {
            job_id: id.clone(),
            rig: r.rig.clone(),
            fencing_token: r.token,
            result: None,
        })
        .collect();
    for r in shared.spool.pending_results() {
        jobs.retain(|j| j.job_id != r.job_id);
        jobs.push(pb::AgentJob {
            job_id: r.job_id.clone(),
            rig: String::new(),
            fencing_token: r.fencing_token,
            result: Some(r),
        });
    }
    pb::Register {
        agent: shared.inventory.agent.clone(),
        rigs,
        jobs,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Serial, model and running firmware of a rig's drive, if it answers within a few seconds.
async fn identity(shared: &Arc<Shared>, rig: &str) -> (String, String, String) {
    let Ok(r) = shared.inventory.rig(rig) else {
        return Default::default();
    };
    let Ok(loc) = r.locator(&shared.inventory.file, &shared.cfg.sysfs) else {
        return Default::default();
    };
    let probe = tokio::task::spawn_blocking(move || {
        let d = Drive::open(loc, Some(Duration::from_secs(3))).ok()?;
        let id = d.controller().identify_controller().ok()?;
        Some((
            id.serial().to_string(),
            id.model().to_string(),
            id.firmware_revision().to_string(),
        ))
    });
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(Some(t))) => t,
        _ => Default::default(),
    }
}

async fn session(
    shared: Arc<Shared>,
    outbox_rx: &mut mpsc::UnboundedReceiver<pb::AgentMessage>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let ch = channel(&shared.cfg).await?;
    let mut client = AgentLinkClient::new(ch.clone());
    let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
    tx.send(msg(pb::agent_message::Msg::Register(
        register(&shared).await,
    )))?;
    let req = with_auth(
        &shared.cfg.token,
        tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
    );
    let mut inbound = client.session(req).await?.into_inner();
    let first = inbound.next().await.ok_or_else(|| {
        AgentError::Protocol("the controller closed the stream at registration".into())
    })??;
    let reg = match first.msg {
        Some(pb::controller_message::Msg::Registered(reg)) => reg,
        other => {
            return Err(AgentError::Protocol(format!(
                "the controller did not acknowledge registration (its first message was {other:?})"
            )))
        }
    };
    tracing::info!(
        controller = shared.cfg.controller,
        rigs = shared.inventory.rigs.len(),
        "registered"
    );
    for id in &reg.abandon_job_ids {
        tracing::info!(
            job = id,
            "the controller no longer wants this job; cancelling it"
        );
        if let Some(j) = shared.running.lock().expect("running lock").get(id) {
            j.cancel.store(true, Ordering::Relaxed);
        }
        shared.spool.forget_result(id);
    }
    let hb_every = Duration::from_millis(reg.heartbeat_ms.clamp(100, 60_000));
    let mut heartbeat = tokio::time::interval(hb_every);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                seq += 1;
                let running = shared.running.lock().expect("running lock").keys().cloned().collect();
                tx.send(msg(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { seq, running_job_ids: running })))?;
            }
            m = outbox_rx.recv() => {
                let Some(m) = m else { return Ok(()) };
                tx.send(m)?;
            }
            m = inbound.next() => {
                let Some(m) = m else { return Ok(()) };
                handle(&shared, m?, &tx, ch.clone());
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

fn handle(
    shared: &Arc<Shared>,
    m: pb::ControllerMessage,
    tx: &mpsc::UnboundedSender<pb::AgentMessage>,
    ch: Channel,
) {
    match m.msg {
        Some(pb::controller_message::Msg::Assign(a)) => assign(shared, a, tx, ch),
        Some(pb::controller_message::Msg::Cancel(c)) => {
            let running = shared.running.lock().expect("running lock");
            match running.get(&c.job_id) {
                Some(j) if j.token == c.fencing_token => {
                    tracing::info!(job = c.job_id, "cancel requested by the controller");
                    j.cancel.store(true, Ordering::Relaxed);
                }
                _ => tracing::info!(job = c.job_id, "cancel for a job not running here"),
            }
        }
        Some(pb::controller_message::Msg::Stored(s)) => shared.spool.forget_result(&s.job_id),
        Some(pb::controller_message::Msg::Registered(_)) | None => {}
    }
}

fn refuse(tx: &mpsc::UnboundedSender<pb::AgentMessage>, a: &pb::Assign, reason: String) {
    tracing::warn!(
        job = a.job_id,
        rig = a.rig,
        token = a.fencing_token,
        "refusing assignment: {reason}"
    );
    let _ = tx.send(msg(pb::agent_message::Msg::Refused(pb::Refused {
        job_id: a.job_id.clone(),
        fencing_token: a.fencing_token,
        reason,
    })));
}

fn assign(
    shared: &Arc<Shared>,
    a: pb::Assign,
    tx: &mpsc::UnboundedSender<pb::AgentMessage>,
    ch: Channel,
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
    {
        let running = shared.running.lock().expect("running lock");
        if let Some(j) = running.get(&a.job_id) {
            if j.token == a.fencing_token {
                return; // a re-sent assignment of a job already running
            }
        }
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
    // An older job still running on this rig is fenced off now.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut running = shared.running.lock().expect("running lock");
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
    let shared = shared.clone();
    tokio::spawn(async move {
        let lock = shared
            .rig_locks
            .get(&a.rig)
            .cloned()
            .expect("rig checked above");
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
            pb::JobResult {
                job_id: a.job_id.clone(),
                fencing_token: a.fencing_token,
                outcome: "cancelled".into(),
                message: "cancelled before it started".into(),
                ..Default::default()
            }
        } else {
            run_job(&shared, &a, cancel, ch).await
        };
        drop(held);

        if let Err(e) = shared.spool.save_result(&result) {
            tracing::error!(job = a.job_id, "cannot spool the result: {e}");
        }
        let _ = shared
            .outbox
            .send(msg(pb::agent_message::Msg::Result(result)));
        shared
            .running
            .lock()
            .expect("running lock")
            .remove(&a.job_id);
    });
}

fn error_result(a: &pb::Assign, message: String) -> pb::JobResult {
    pb::JobResult {
        job_id: a.job_id.clone(),
        fencing_token: a.fencing_token,
        outcome: "error".into(),
        message,
        ..Default::default()
    }
}

/// Downloads (or finds in the cache) an artifact, verifying its sha256. Jobs on several rigs may fetch the same
/// artifact at once: each writes its own temporary file and the renames are idempotent.
async fn fetch_artifact(
    shared: &Arc<Shared>,
    ch: Channel,
    sha: &str,
    job_id: &str,
) -> Result<PathBuf, AgentError> {
    let path = shared.spool.artifacts_dir().join(sha);
    if path.exists() {
        return Ok(path);
    }
    let mut client = AgentLinkClient::new(ch);
    let mut s = client
        .fetch_artifact(with_auth(
            &shared.cfg.token,
            tonic::Request::new(pb::FetchArtifactRequest {
                sha256: sha.to_string(),
            }),
        ))
        .await?
        .into_inner();
    let tmp = shared
        .spool
        .artifacts_dir()
        .join(format!(".{sha}.{job_id}.part"));
    let mut bytes = vec![];
    while let Some(chunk) = s.next().await {
        let c = chunk?;
        if c.offset != bytes.len() as u64 {
            return Err(AgentError::Artifact(format!(
                "chunk at offset {} after {} bytes",
                c.offset,
                bytes.len()
            )));
        }
        bytes.extend_from_slice(&c.data);
    }
    let got = hex::encode(Sha256::digest(&bytes));
    if got != sha {
        return Err(AgentError::Artifact(format!(
            "downloaded artifact hashes to {got}, expected {sha}"
        )));
    }
    let cache =
        |e: std::io::Error| AgentError::Artifact(format!("caching {}: {e}", path.display()));
    tokio::fs::write(&tmp, &bytes).await.map_err(cache)?;
    tokio::fs::rename(&tmp, &path).await.map_err(cache)?;
    Ok(path)
}

/// Streams a running plan's progress to the controller.
struct Forward {
    shared: Arc<Shared>,
    job_id: String,
    token: u64,
    lines: Vec<String>,
}

impl Forward {
    fn send(&mut self, state: pb::JobState, step: Option<pb::StepResult>) {
        let lines = std::mem::take(&mut self.lines);
        let _ = self
            .shared
            .outbox
            .send(msg(pb::agent_message::Msg::Progress(pb::JobProgress {
                job_id: self.job_id.clone(),
                fencing_token: self.token,
                state: state as i32,
                lines,
                step,
            })));
    }
}

fn step_pb(r: &StepReport) -> pb::StepResult {
    pb::StepResult {
        number: r.number as u32,
        name: r.name.clone(),
        kind: r.kind.clone(),
        outcome: r.outcome.as_str().to_string(),
        duration_ms: r.duration_ms,
        message: r.message.clone(),
        metrics: r.metrics.clone().into_iter().collect(),
    }
}

fn phase(step: &Step) -> pb::JobState {
    if matches!(step.kind, StepKind::Flash { .. }) {
        pb::JobState::JobFlashing
    } else {
        pb::JobState::JobTesting
    }
}

impl Observer for Forward {
    fn step_started(&mut self, step: &Step) {
        self.lines.push(format!(
            "== step {} {} ({})",
            step.number,
            step.name,
            step.kind.name()
        ));
        self.send(phase(step), None);
    }
    fn log(&mut self, step: &Step, line: &str) {
        self.lines.push(format!("[{}] {line}", step.name));
        if self.lines.len() >= 20 {
            self.send(phase(step), None);
        }
    }
    fn step_finished(&mut self, step: &Step, r: &StepReport) {
        self.lines.push(format!(
            "== step {} {}: {} ({:.1}s) {}",
            step.number,
            step.name,
            r.outcome,
            r.duration_ms as f64 / 1000.0,
            r.message
        ));
        self.send(phase(step), Some(step_pb(r)));
    }
}

async fn run_job(
    shared: &Arc<Shared>,
    a: &pb::Assign,
    cancel: Arc<AtomicBool>,
    ch: Channel,
) -> pb::JobResult {
    tracing::info!(
        job = a.job_id,
        rig = a.rig,
        token = a.fencing_token,
        "running job"
    );
    let plan = match Plan::parse(
        &a.plan_toml,
        std::path::Path::new(&format!("<{}>", a.job_id)),
    ) {
        Ok(p) => p,
        Err(e) => return error_result(a, format!("the plan does not parse here: {e}")),
    };
    let firmware = if a.artifact_sha256.is_empty() {
        None
    } else {
        match fetch_artifact(shared, ch, &a.artifact_sha256, &a.job_id).await {
            Ok(path) => match Firmware::load(&path, None) {
                Ok(mut f) => {
                    if !a.firmware_name.is_empty() {
                        f.path = PathBuf::from(&a.firmware_name);
                    }
                    Some(f)
                }
                Err(e) => return error_result(a, e),
            },
            Err(e) => {
                return error_result(
                    a,
                    format!("cannot fetch artifact {}: {e}", a.artifact_sha256),
                )
            }
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
    let report: RunReport = match tokio::task::spawn_blocking(move || {
        let rig = shared2
            .inventory
            .rig(&a2.rig)
            .expect("checked at assignment")
            .clone();
        let opts = RunOptions {
            sysfs: shared2.cfg.sysfs.clone(),
            cancel,
        };
        let mut fwd = Forward {
            shared: shared2.clone(),
            job_id: a2.job_id.clone(),
            token: a2.fencing_token,
            lines: vec![],
        };
        let r = runner::run_plan(
            &plan,
            &shared2.inventory,
            &rig,
            firmware.as_ref(),
            &opts,
            &mut fwd,
        );
        fwd.lines.push(r.summary());
        fwd.send(pb::JobState::JobTesting, None);
        r
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return error_result(a, format!("the runner crashed: {e}")),
    };
    let message = match report.outcome {
        Outcome::Passed => report.summary(),
        _ => report
            .steps
            .iter()
            .find(|s| !matches!(s.outcome, Outcome::Passed | Outcome::Skipped))
            .map(|s| format!("step {} {}: {}: {}", s.number, s.name, s.outcome, s.message))
            .unwrap_or_else(|| report.summary()),
    };
    pb::JobResult {
        job_id: a.job_id.clone(),
        fencing_token: a.fencing_token,
        outcome: report.outcome.as_str().to_string(),
        message,
        steps: report.steps.iter().map(step_pb).collect(),
        firmware_revision: report
            .firmware
            .as_ref()
            .and_then(|f| f.revision.clone())
            .unwrap_or_default(),
        duration_ms: report.duration_ms,
    }
}
