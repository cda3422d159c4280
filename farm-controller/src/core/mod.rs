//! The controller's core: the farm's state and every transition of it, in domain types only (no gRPC, no
//! HTTP). The services and the dashboard call [`Farm`]'s methods; they never touch its state directly.
//!
//! One [`Farm`] holds the in-memory state behind a mutex. Each operation mutates the state and collects its
//! [`Effects`] (records to write, messages for agents, events for watchers), commits the writes (atomic; the
//! flush that makes them durable is shared with concurrent changes, see [`durability`]), and only once they are
//! on disk sends the messages and answers the caller. So anything acknowledged is on disk, and a restart
//! rebuilds exactly the acknowledged state.
//!
//! - [`state`]: the in-memory state; [`queue`]: the waiting requests, indexed by what they can match;
//! - [`scheduler`]: who gets which rig, positions and reasons (pure functions);
//! - [`matching`]: what a selector can match, and rigs that cannot take work now;
//! - [`leases`]: reservations and grants; [`jobs`]: a job's life; [`health`]: rig health and operator states;
//! - [`agents`]: agent sessions; [`tick`]: the periodic work; [`sweeps`]: sweeps and their reports;
//! - [`queries`]: read-only views for the services and the dashboard; [`audit`]: the state's invariants;
//! - [`watchers`]: waiting clients told when their own request's position or reason changes;
//! - [`durability`]: group commit, and what a change sends once it is durable.

mod agents;
mod audit;
mod durability;
mod health;
mod jobs;
mod leases;
mod matching;
mod queries;
pub mod queue;
pub mod scheduler;
mod state;
mod sweeps;
mod tick;
pub mod trends;
mod watchers;

use std::sync::Arc;

use tokio::sync::{broadcast, Mutex};

use nvfarm_model::link::ToAgent;
use nvfarm_model::time::now_ms;

use crate::config::Config;
use crate::store::{Store, StoreError, Tx};

pub use agents::AgentSender;
pub use health::RigAction;
pub use jobs::JobRequest;
pub use leases::{Reservation, ReserveRequest, WatchGuard};
pub(crate) use queries::JobKeys;
pub use queries::{JobFilter, MetricsSnapshot, RequestStatus, MAX_JOBS_PAGE};
use state::State;
pub use sweeps::SweepRequest;

/// Why the farm refused or failed an operation. The gRPC edge maps each kind to a status code.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// No such rig, lease, request, job, sweep or artifact.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request itself is wrong (a plan, a duration, a value out of range).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is fine but the farm is not in a state to do it (every matching rig is unusable, the rig is leased).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Nothing is free now and the caller did not ask to wait.
    #[error("{0}")]
    Busy(String),
    /// Someone else holds what the caller wants (another agent registered the rig).
    #[error("{0}")]
    Conflict(String),
    /// The caller's session was replaced by a newer one.
    #[error("{0}")]
    Superseded(String),
    /// The store failed; nothing was acknowledged and nothing changed.
    #[error("the controller's store failed: {0}; nothing was changed")]
    Store(#[from] StoreError),
}

/// What watchers are told about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FarmEvent {
    /// A job changed.
    Job(String),
    /// A job got log lines.
    Log(String),
    /// A waiting request changed (granted, ended).
    Request(String),
    /// A rig changed.
    Rig(String),
}

/// What an operation does beyond changing the in-memory state: records to write, messages for agents, events.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub tx: Tx,
    pub out: Vec<(String, ToAgent)>,
    pub events: Vec<FarmEvent>,
}

impl Effects {
    pub fn send(&mut self, agent: &str, msg: ToAgent) {
        self.out.push((agent.to_string(), msg));
    }
    pub fn event(&mut self, e: FarmEvent) {
        self.events.push(e);
    }
}

/// The state locked for a change: records not committed by the time it goes are rolled back.
pub(crate) struct Change<'a>(tokio::sync::MutexGuard<'a, State>);

impl std::ops::Deref for Change<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Change<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        self.0.roll_back();
    }
}

/// The farm.
#[derive(Debug)]
pub struct Farm {
    cfg: Config,
    store: Store,
    state: Mutex<State>,
    events: broadcast::Sender<FarmEvent>,
    /// Set once the controller is stopping: streams end, agents are let go.
    stop: tokio::sync::watch::Sender<bool>,
    /// Changes applied and waiting for the flush that makes them durable.
    durability: durability::Durability,
}

impl Farm {
    /// Opens the store and rebuilds the state from it. Rigs are offline until their agents register again; job
    /// leases get a fresh grace period for their agent to come back.
    pub async fn open(cfg: Config) -> Result<Arc<Farm>, FarmError> {
        let store = Store::open_waiting(&cfg.data_dir, crate::store::LOCK_WAIT).await?;
        let snap = store.load()?;
        let mut logs = std::collections::HashMap::new();
        for j in &snap.jobs {
            logs.insert(j.id.clone(), store.log_count(&j.id)?);
        }
        let now = now_ms();
        let (st, tx) = State::restore(snap, &logs, &cfg, now);
        // The restart's own bookkeeping is on disk before anything is served.
        store.commit(tx).await?;
        tracing::info!(
            rigs = st.rigs.len(),
            jobs = st.jobs.len(),
            finished = st.finished.values().sum::<u64>(),
            queued = st.requests.len(),
            leases = st.leases.len(),
            fencing = st.fencing,
            "state loaded from {}",
            cfg.data_dir.display()
        );
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Farm {
            cfg,
            store,
            state: Mutex::new(st),
            events,
            stop: tokio::sync::watch::channel(false).0,
            durability: durability::Durability::new(),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Stops serving: every agent session and every watching client's stream ends now (agents reconnect to the
    /// next controller; clients reconnect and resume). Nothing stored changes.
    pub async fn shut_down(&self) {
        let _ = self.stop.send(true);
        let mut st = self.state.lock().await;
        for s in st.agents.values_mut() {
            let (closed, _) = tokio::sync::mpsc::unbounded_channel();
            s.tx = closed;
        }
    }

    /// Resolves once the controller is stopping.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Changes as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<FarmEvent> {
        self.events.subscribe()
    }

    /// Where an artifact's bytes live.
    pub fn artifact_path(&self, sha256: &str) -> std::path::PathBuf {
        self.store.artifact_path(sha256)
    }

    /// Where uploads are written before they are complete.
    pub fn artifacts_dir(&self) -> &std::path::Path {
        self.store.artifacts_dir()
    }

    /// Flushes the store (every commit already did; for shutdown).
    pub fn flush(&self) -> Result<(), FarmError> {
        Ok(self.store.flush()?)
    }

    /// Commits `fx.tx` and gives up the state: the change is applied to the store and numbered under the lock,
    /// then the lock is let go while the change waits for the flush that makes it durable (shared with every
    /// change applied meanwhile: see [`durability`]). Only then do `fx.out`, `fx.events` and the watchers'
    /// updates go out, in commit order, and does the caller hear `Ok`. When the apply fails nothing goes out
    /// and the records go back to their last committed state; when the flush fails the caller gets the error,
    /// nothing of the change goes out, and memory is reloaded from the store before the next change. Taking
    /// the guard means nothing can use the state after its commit without locking it again.
    async fn commit(&self, mut st: Change<'_>, fx: Effects) -> Result<(), FarmError> {
        let now = now_ms();
        let touched = watchers::Touched::of(&st, &fx.tx, now, self.cfg.aging);
        let deadlines = fx.tx.touches_deadlines();
        let mut leaving = fx.tx.jobs_touched().to_vec();
        // Nothing to write and nothing waiting to be flushed: what it sends can go at once, in order.
        let at_once = fx.tx.is_empty() && self.durability.settled(st.applied);
        if let Err(e) = self.store.apply(fx.tx) {
            return Err(self.apply_failed(&mut st, e));
        }
        if !at_once {
            st.applied += 1;
        }
        let seq = st.applied;
        // The records before this change, to go back to if its flush fails.
        let before = st.take_mark();
        leaving.append(&mut st.paged);
        st.evict(&leaving);
        st.mark();
        if deadlines {
            st.next_due_ms = 0;
        }
        let statuses = watchers::notify(&mut st, &touched, now, self.cfg.aging);
        let out = st.sessions_for(fx.out);
        let d = durability::Deferred {
            seq,
            before,
            out,
            events: fx.events,
            statuses,
        };
        if at_once {
            self.send(d);
            return Ok(());
        }
        self.durability.defer(d);
        drop(st);
        self.durable(seq).await
    }

    /// A write to the store failed before it was applied: the change's records go back to their last
    /// committed state. If no earlier change is still waiting for a flush the store is closed (to be reopened
    /// from disk); otherwise the flush those changes wait for finds out whether the store still works.
    fn apply_failed(&self, st: &mut State, e: StoreError) -> FarmError {
        st.roll_back();
        if self.durability.settled(st.applied) {
            self.store.close_after_failure(&e);
        }
        e.into()
    }

    /// The state, for a change: marked, so whatever the change does not commit is rolled back when the guard
    /// goes. After a failed flush, the records are first reloaded from the store once it can be read again.
    async fn lock(&self) -> Result<Change<'_>, FarmError> {
        let mut st = self.state.lock().await;
        if st.resync {
            match self.store.load() {
                Ok(snap) => {
                    st.reload(snap);
                    st.resync = false;
                    st.next_due_ms = 0;
                    // What memory holds now is what the disk holds: a read from here on waits for nothing.
                    st.applied += 1;
                    self.durability.settled_at(st.applied);
                    tracing::info!("the store is back: records reloaded from it");
                }
                Err(e) => tracing::warn!(
                    "the store is still failing ({e}); serving the last committed state"
                ),
            }
        }
        st.mark();
        Ok(Change(st))
    }

    /// Brings job `id` into memory for the change under way if it has finished and left (see
    /// [`State::page_in`]); nothing happens for a job that is resident or does not exist.
    fn page_in(&self, st: &mut State, id: &str) -> Result<(), FarmError> {
        if st.jobs.contains_key(id) {
            return Ok(());
        }
        if let Some(job) = self.store.job(id)? {
            let (_, bytes) = self.store.log_count(id)?;
            st.page_in(job, bytes);
        }
        Ok(())
    }

    /// Plans health checks, schedules what the change touched, and commits: after any change that may free or
    /// need a rig.
    async fn reschedule(&self, st: Change<'_>, fx: Effects) -> Result<(), FarmError> {
        self.reschedule_in(st, fx, false).await
    }

    /// [`Farm::reschedule`], looking at every free rig when `all` is set.
    async fn reschedule_in(
        &self,
        mut st: Change<'_>,
        mut fx: Effects,
        all: bool,
    ) -> Result<(), FarmError> {
        let now = now_ms();
        health::plan_health_checks(&mut st, &self.cfg.health_check_plan, all, now, &mut fx);
        if all {
            let n =
                leases::grant_waiting(&mut st, scheduler::Scope::All, now, self.cfg.aging, &mut fx)
                    .len();
            if n > 0 {
                tracing::warn!(
                    grants = n,
                    "the periodic full scheduling pass granted requests a change had not: a change touched a rig \
                     without writing it"
                );
            }
        } else {
            leases::grant_changed(&mut st, now, self.cfg.aging, &mut fx);
        }
        self.commit(st, fx).await
    }
}

#[cfg(test)]
mod tests;
