//! Daemon mode: `bench-agent --controller URL --rigs FILE`.
//!
//! Keeps one bidirectional stream to the controller (reconnecting with backoff), registers its rigs and what it
//! holds (running jobs, results not yet confirmed), heartbeats, and runs assigned jobs with the same runner as
//! `bench-agent run`, one per rig, streaming log lines and step results as they happen.
//!
//! Fencing: an assignment whose token is not newer than the newest this agent accepted for that rig is refused;
//! accepted tokens are written to disk before work starts, so a restart cannot make an old token acceptable again.
//! A result is written to disk before it is sent and forgotten only when the controller confirms storing it.
//!
//! - this module: the daemon's lifetime and the session with the controller;
//! - [`jobs`]: accepting assignments and running them; [`progress`]: batching their progress;
//! - [`artifacts`]: the firmware cache; [`spool`]: what must survive a restart; [`journal`]: the agent's own
//!   record of which lease held each rig when.

mod artifacts;
mod jobs;
pub mod journal;
pub mod progress;
pub mod spool;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use flash_tools::device::{Drive, Sysfs};
use nvfarm_model::link::{
    AgentRig, FromAgent, Heartbeat, HeldJob, Refusal, Registration, RigIdentity, ToAgent,
};
use nvfarm_proto::client::{controller_endpoint, BearerAuth};
use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::agent_link_client::AgentLinkClient;

use crate::rigs::Inventory;
use jobs::RunningJob;
use journal::Journal;
use spool::Spool;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The controller's URL.
    pub controller: String,
    /// Bearer token (role agent).
    pub token: Option<String>,
    /// The rig inventory.
    pub rigs_file: PathBuf,
    /// Simulated drives, artifact cache, fencing tokens, unsent results.
    pub work_dir: PathBuf,
    /// Where drives are looked up by serial or PCI address.
    pub sysfs: Sysfs,
}

/// Why the agent link failed; the daemon reconnects with backoff after each.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The rig file or the work directory cannot be used.
    #[error("{0}")]
    Setup(String),
    /// The controller's address, token or TLS settings are wrong.
    #[error("controller endpoint: {0}")]
    Endpoint(String),
    /// The controller could not be reached.
    #[error("cannot connect to the controller: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The controller answered with an error status.
    #[error("the controller refused: {}", .0.message())]
    Status(#[from] tonic::Status),
    /// The controller broke the protocol (e.g. no `Registered` first, a message that does not decode).
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

/// The agent link client with its bearer token.
type Client = AgentLinkClient<InterceptedService<Channel, BearerAuth>>;

/// What every task of the daemon shares.
struct Shared {
    cfg: AgentConfig,
    inventory: Inventory,
    /// One job at a time per rig: a newer assignment waits until a cancelled or fenced-off job has stopped.
    rig_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    spool: Spool,
    journal: Journal,
    running: Mutex<HashMap<String, RunningJob>>,
    /// Messages for the controller; survives reconnects (a new stream drains it).
    outbox: mpsc::UnboundedSender<FromAgent>,
    stopping: AtomicBool,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningJob>> {
        // A panic elsewhere while holding the lock leaves the map consistent (inserts and removes only).
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn client(&self) -> Result<Client, AgentError> {
        let ep = controller_endpoint(&self.cfg.controller).map_err(AgentError::Endpoint)?;
        let auth =
            BearerAuth::new(self.cfg.token.as_deref(), None).map_err(AgentError::Endpoint)?;
        Ok(AgentLinkClient::with_interceptor(ep.connect().await?, auth))
    }
}

/// Runs the agent until `shutdown` completes; then cancels running jobs and waits for their results.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let inventory = Inventory::load(&cfg.rigs_file, &cfg.work_dir)
        .map_err(|e| AgentError::Setup(e.to_string()))?;
    let spool = Spool::open(&cfg.work_dir).map_err(|e| AgentError::Setup(e.to_string()))?;
    let journal = Journal::open(&cfg.work_dir.join("agent")).map_err(|e| {
        AgentError::Setup(format!(
            "cannot write the lease journal in {}: {e}",
            cfg.work_dir.join("agent").display()
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
        journal,
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
        backoff = (backoff * 2).min(nvfarm_model::link::AGENT_RECONNECT_MAX);
    }
    // Stop: cancel running jobs, let them finish their current command and spool their results.
    shared.stopping.store(true, Ordering::Relaxed);
    for (job, r) in shared.running().iter() {
        tracing::info!(job, "stopping: cancelling the running job");
        r.cancel.store(true, Ordering::Relaxed);
    }
    for _ in 0..600 {
        if shared.running().is_empty() {
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

/// Opens a session stream: the registration goes first, then whatever `rx` carries.
async fn open_session(
    shared: &Arc<Shared>,
) -> Result<
    (
        mpsc::UnboundedSender<FromAgent>,
        tonic::Streaming<pb::ControllerMessage>,
        Client,
    ),
    AgentError,
> {
    let mut client = shared.client().await?;
    let (tx, rx) = mpsc::unbounded_channel::<FromAgent>();
    tx.send(FromAgent::Register(register(shared).await))?;
    let outgoing = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .map(|m| pb::AgentMessage::from(&m));
    let inbound = client.session(outgoing).await?.into_inner();
    Ok((tx, inbound, client))
}

/// Reads the next controller message.
async fn next(
    inbound: &mut tonic::Streaming<pb::ControllerMessage>,
) -> Result<Option<ToAgent>, AgentError> {
    match inbound.next().await {
        None => Ok(None),
        Some(m) => Ok(Some(
            ToAgent::try_from(m?).map_err(|e| AgentError::Protocol(e.to_string()))?,
        )),
    }
}

/// Sends spooled results over a short-lived session (at shutdown).
async fn deliver_spooled(shared: &Arc<Shared>) -> Result<(), AgentError> {
    let (_tx, mut inbound, _client) = open_session(shared).await?;
    while let Some(m) = next(&mut inbound).await? {
        if let ToAgent::Stored { job_id } = m {
            shared.spool.forget_result(&job_id);
            if shared.spool.pending_results().is_empty() {
                break;
            }
        }
    }
    Ok(())
}

/// The registration: every rig at once, each marked as probing (its drive's identity follows from
/// [`probe_all`]), so registering never waits for a drive.
async fn register(shared: &Arc<Shared>) -> Registration {
    let tokens = shared.spool.tokens();
    let rigs = shared
        .inventory
        .rigs
        .iter()
        .map(|rig| AgentRig {
            name: rig.name.clone(),
            labels: rig.labels.clone(),
            newest_token: tokens.get(&rig.name).copied().unwrap_or(0),
            probing: true,
            ..Default::default()
        })
        .collect();
    let mut jobs: Vec<HeldJob> = shared
        .running()
        .iter()
        .map(|(id, r)| HeldJob {
            job_id: id.clone(),
            rig: r.rig.clone(),
            fencing_token: r.token,
            result: None,
        })
        .collect();
    for r in shared.spool.pending_results() {
        jobs.retain(|j| j.job_id != r.job_id);
        jobs.push(HeldJob {
            job_id: r.job_id.clone(),
            rig: String::new(),
            fencing_token: r.fencing_token,
            result: Some(r),
        });
    }
    Registration {
        agent: shared.inventory.agent.clone(),
        rigs,
        jobs,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// How many drives are probed at once after registering.
const PROBES_AT_ONCE: usize = 64;

/// How long one drive's identity probe may take.
const PROBE_BOUND: Duration = Duration::from_secs(5);

/// Probes every rig's drive after registering, [`PROBES_AT_ONCE`] at a time, each within [`PROBE_BOUND`],
/// and sends each identity as it is known: a hung drive delays only its own rig, by at most the bound.
fn probe_all(shared: &Arc<Shared>, tx: &mpsc::UnboundedSender<FromAgent>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE));
    for rig in &shared.inventory.rigs {
        let (shared, tx, limit, rig) =
            (shared.clone(), tx.clone(), limit.clone(), rig.name.clone());
        tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            let id = match identity(&shared, &rig).await {
                Some((drive_serial, drive_model, firmware_revision)) => RigIdentity {
                    rig,
                    drive_serial,
                    drive_model,
                    firmware_revision,
                    answered: true,
                },
                None => {
                    tracing::warn!(
                        rig,
                        "the drive did not answer the identity probe within {PROBE_BOUND:?}"
                    );
                    RigIdentity {
                        rig,
                        ..Default::default()
                    }
                }
            };
            // The session may have ended meanwhile: the next one probes again.
            let _ = tx.send(FromAgent::Identity(id));
        });
    }
}

/// Serial, model and running firmware of a rig's drive, if it answers within [`PROBE_BOUND`].
async fn identity(shared: &Arc<Shared>, rig: &str) -> Option<(String, String, String)> {
    let r = shared.inventory.rig(rig).ok()?;
    let loc = r.locator(&shared.inventory.file, &shared.cfg.sysfs).ok()?;
    let probe = tokio::task::spawn_blocking(move || {
        let d = Drive::open(loc, Some(Duration::from_secs(3))).ok()?;
        let id = d.controller().identify_controller().ok()?;
        Some((
            id.serial().to_string(),
            id.model().to_string(),
            id.firmware_revision().to_string(),
        ))
    });
    match tokio::time::timeout(PROBE_BOUND, probe).await {
        Ok(Ok(t)) => t,
        _ => None,
    }
}

async fn session(
    shared: Arc<Shared>,
    outbox_rx: &mut mpsc::UnboundedReceiver<FromAgent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (tx, mut inbound, client) = open_session(&shared).await?;
    let (heartbeat_ms, abandon) = match next(&mut inbound).await? {
        Some(ToAgent::Registered {
            heartbeat_ms,
            abandon_job_ids,
        }) => (heartbeat_ms, abandon_job_ids),
        None => {
            return Err(AgentError::Protocol(
                "the controller closed the stream at registration".into(),
            ))
        }
        Some(other) => {
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
    for id in &abandon {
        tracing::info!(
            job = id,
            "the controller no longer wants this job; cancelling it"
        );
        if let Some(j) = shared.running().get(id) {
            j.cancel.store(true, Ordering::Relaxed);
        }
        shared.spool.forget_result(id);
    }
    probe_all(&shared, &tx);
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis(heartbeat_ms.clamp(100, 60_000)));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                seq += 1;
                let running_job_ids = shared.running().keys().cloned().collect();
                tx.send(FromAgent::Heartbeat(Heartbeat { seq, running_job_ids }))?;
            }
            m = outbox_rx.recv() => {
                let Some(m) = m else { return Ok(()) };
                tx.send(m)?;
            }
            m = next(&mut inbound) => {
                let Some(m) = m? else { return Ok(()) };
                handle(&shared, m, &tx, &client);
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

fn handle(
    shared: &Arc<Shared>,
    m: ToAgent,
    tx: &mpsc::UnboundedSender<FromAgent>,
    client: &Client,
) {
    match m {
        ToAgent::Assign(a) => jobs::assign(shared, a, tx, client.clone()),
        ToAgent::Cancel {
            job_id,
            fencing_token,
        } => match shared.running().get(&job_id) {
            Some(j) if j.token == fencing_token => {
                tracing::info!(job = job_id, "cancel requested by the controller");
                j.cancel.store(true, Ordering::Relaxed);
            }
            _ => {
                // Through the outbox, behind the job's result if it just ended: the controller settles on
                // whichever comes first and the result keeps its steps.
                tracing::info!(job = job_id, "cancel for a job not running here");
                let _ = shared.outbox.send(FromAgent::Refused(Refusal {
                    job_id,
                    fencing_token,
                    reason: "not running on this agent".into(),
                }));
            }
        },
        ToAgent::Stored { job_id } => shared.spool.forget_result(&job_id),
        ToAgent::Registered { .. } => {}
    }
}
