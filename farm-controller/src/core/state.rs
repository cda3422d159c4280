//! The farm's in-memory state: the records the store holds, plus the connected agents and who watches which
//! waiting request. Of the jobs, only those that have not finished or still hold a rig are here
//! ([`crate::store::resident`]); a finished one is paged in when an operation needs it ([`State::page_in`]) and
//! leaves again with the commit that finishes with it ([`State::evict`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use nvfarm_model::farm::{Artifact, Job, JobState, Lease, LeaseKind, Rig, RigState, Sweep};
use nvfarm_model::link::ToAgent;

use super::agents::AgentSender;
use super::queue::Queue;
use super::scheduler::Records;
use crate::config::Config;
use crate::store::{resident, Snapshot, Tx};

/// The clients watching a waiting request.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// How many watch it now.
    pub count: usize,
    /// Since when nobody has (while `count` is 0).
    pub idle_since: Instant,
}

impl Watch {
    /// Nobody watches yet.
    pub fn idle() -> Self {
        Watch {
            count: 0,
            idle_since: Instant::now(),
        }
    }
    pub fn watch(&mut self) {
        self.count += 1;
    }
    pub fn unwatch(&mut self) {
        self.count = self.count.saturating_sub(1);
        if self.count == 0 {
            self.idle_since = Instant::now();
        }
    }
    /// Nobody has watched for at least `grace`.
    pub fn abandoned(&self, grace: std::time::Duration) -> bool {
        self.count == 0 && self.idle_since.elapsed() >= grace
    }
}

/// A connected agent.
#[derive(Debug)]
pub(crate) struct AgentSession {
    /// Which connection this is (a reconnect makes a new one).
    pub conn: u64,
    pub tx: AgentSender,
    pub last_heartbeat: Instant,
    /// Silent too long: its rigs are offline, a reconnect starts a new session.
    pub lost: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub rigs: Records<Rig>,
    pub leases: Records<Lease>,
    pub requests: Queue,
    /// The jobs that have not finished or still hold a rig (the rest are only in the store).
    pub jobs: Records<Job>,
    /// How many finished jobs are only in the store, by state.
    pub finished: BTreeMap<JobState, u64>,
    /// Jobs paged in from the store during the change under way: they leave again with its commit unless
    /// they are resident by then.
    pub paged: Vec<String>,
    pub artifacts: Records<Artifact>,
    pub sweeps: Records<Sweep>,
    /// The last fencing token handed out.
    pub fencing: u64,
    /// The last id sequence number handed out.
    pub seq: u64,
    /// The number of the last change applied to the store (see [`super::durability`]); never rolled back.
    pub applied: u64,
    pub agents: HashMap<String, AgentSession>,
    /// Who watches each waiting reservation request (not stored: after a restart clients reconnect).
    pub watches: HashMap<String, Watch>,
    /// The status channel of each request a client watches (see [`super::watchers`]).
    pub watchers: HashMap<String, super::watchers::StatusSender>,
    /// Consecutive infrastructure errors that quarantine a rig.
    pub quarantine_after: u32,
    pub next_conn: u64,
    /// Bytes of log stored per job (for the log cap).
    pub log_bytes: HashMap<String, u64>,
    /// The records as of the last commit, while a change is under way (see [`Marked`]).
    mark: Option<Marked>,
    /// A write failed: reload the records from the store once it can be read, in case the failed write landed.
    pub resync: bool,
    /// When the tick last scheduled over every free rig (a backstop; changes schedule what they touch).
    pub full_pass_at: Option<Instant>,
    /// The earliest deadline the tick must act on (Unix ms; 0: look at once). Reset to 0 by any commit that
    /// writes a lease, request or job, and by a client ceasing to watch a request.
    pub next_due_ms: u64,
}

/// The records at a point in time. Taking one costs O(1) (the maps share structure), so every change starts by
/// marking the state and ends either committed (a new mark) or rolled back to the mark: memory never holds a
/// record the store does not.
#[derive(Debug, Clone)]
pub(crate) struct Marked {
    rigs: Records<Rig>,
    leases: Records<Lease>,
    requests: Queue,
    jobs: Records<Job>,
    finished: BTreeMap<JobState, u64>,
    artifacts: Records<Artifact>,
    sweeps: Records<Sweep>,
    fencing: u64,
    seq: u64,
}

impl State {
    /// The state a restart starts from, and the bookkeeping to store before serving: every idle rig is offline
    /// until its agent registers again; job leases get a fresh grace period for their agent to come back.
    pub fn restore(
        snap: Snapshot,
        logs: &HashMap<String, (u64, u64)>,
        cfg: &Config,
        now: u64,
    ) -> (State, Tx) {
        let mut st = State {
            fencing: snap.fencing,
            seq: snap.seq,
            finished: snap.finished,
            quarantine_after: cfg.quarantine_after,
            ..Default::default()
        };
        let mut tx = Tx::new();
        for mut r in snap.rigs {
            if matches!(r.state, RigState::Idle | RigState::Probing) {
                r.state = RigState::Offline;
                r.reason = "waiting for its agent to reconnect after a controller restart".into();
                tx.rig(&r);
            }
            st.rigs.insert(r.name.clone(), r);
        }
        for mut l in snap.leases {
            // Reservations keep their own clock.
            if l.kind == LeaseKind::Job {
                l.expires_ms = now.saturating_add(nvme_spec::units::millis(cfg.restart_grace));
            }
            st.leases.insert(l.id.clone(), l);
        }
        for r in snap.requests {
            // Its client gets `watch_grace` from now to come back and watch it again.
            st.watches.insert(r.id.clone(), Watch::idle());
            st.requests.insert(r);
        }
        for mut j in snap.jobs {
            let (lines, bytes) = logs.get(&j.id).copied().unwrap_or((0, 0));
            j.log_lines = lines;
            st.log_bytes.insert(j.id.clone(), bytes);
            st.jobs.insert(j.id.clone(), j);
        }
        for a in snap.artifacts {
            st.artifacts.insert(a.sha256.clone(), a);
        }
        for s in snap.sweeps {
            st.sweeps.insert(s.id.clone(), s);
        }
        (st, tx)
    }

    /// Request `id` as it is now, or as it was at the mark (a change under way removed it).
    pub fn request_now_or_before(&self, id: &str) -> Option<&nvfarm_model::farm::Request> {
        self.requests
            .get(id)
            .or_else(|| self.mark.as_ref().and_then(|m| m.requests.get(id)))
    }

    /// The lease granted to request `id`, if it still exists.
    pub fn lease_for_request(&self, id: &str) -> Option<&Lease> {
        self.leases
            .values()
            .find(|l| l.request_id.as_deref() == Some(id))
    }

    /// Marks the records as they are now: a change rolls back to here unless it is committed.
    pub fn mark(&mut self) {
        self.paged.clear();
        self.mark = Some(Marked {
            rigs: self.rigs.clone(),
            leases: self.leases.clone(),
            requests: self.requests.clone(),
            jobs: self.jobs.clone(),
            finished: self.finished.clone(),
            artifacts: self.artifacts.clone(),
            sweeps: self.sweeps.clone(),
            fencing: self.fencing,
            seq: self.seq,
        });
    }

    /// The mark taken before the change under way: the records as they were before it (kept with the change
    /// until it is durable, see [`super::durability`]).
    pub fn take_mark(&mut self) -> Option<Marked> {
        self.mark.take()
    }

    /// Puts the records back as they were before a change whose flush failed (and every change after it).
    pub fn go_back_to(&mut self, m: Marked) {
        self.mark = Some(m);
        self.roll_back();
    }

    /// Puts the records back as they were at the mark (what the store holds), if a change is under way.
    pub fn roll_back(&mut self) {
        let paged = std::mem::take(&mut self.paged);
        if let Some(m) = self.mark.take() {
            self.rigs = m.rigs;
            self.leases = m.leases;
            self.requests = m.requests;
            self.jobs = m.jobs;
            self.finished = m.finished;
            self.artifacts = m.artifacts;
            self.sweeps = m.sweeps;
            self.fencing = m.fencing;
            self.seq = m.seq;
        }
        for id in paged {
            if !self.jobs.contains_key(&id) {
                self.log_bytes.remove(&id);
            }
        }
    }

    /// Replaces every record with the store's (sessions, watches and log counters stay): what memory holds after
    /// a write failed.
    pub fn reload(&mut self, snap: Snapshot) {
        self.rigs = snap.rigs.into_iter().map(|r| (r.name.clone(), r)).collect();
        self.leases = snap.leases.into_iter().map(|l| (l.id.clone(), l)).collect();
        self.requests = snap.requests.into_iter().collect();
        // The store counts each job's log lines (they are appended before memory counts them).
        self.jobs = snap.jobs.into_iter().map(|j| (j.id.clone(), j)).collect();
        self.log_bytes.retain(|id, _| self.jobs.contains_key(id));
        self.artifacts = snap
            .artifacts
            .into_iter()
            .map(|a| (a.sha256.clone(), a))
            .collect();
        self.finished = snap.finished;
        self.sweeps = snap.sweeps.into_iter().map(|s| (s.id.clone(), s)).collect();
        self.fencing = snap.fencing;
        self.seq = snap.seq;
        for id in self.requests.keys() {
            self.watches.entry(id.clone()).or_insert_with(Watch::idle);
        }
    }

    /// Brings a finished job back from the store for the change under way (an agent reporting on it, a cancel
    /// of it): the change sees it as it was before it left. A change that does not commit rolls it back out.
    pub fn page_in(&mut self, job: Job, log_bytes: u64) {
        if self.jobs.contains_key(&job.id) {
            return;
        }
        if let Some(n) = self.finished.get_mut(&job.state) {
            *n = n.saturating_sub(1);
        }
        self.paged.push(job.id.clone());
        self.log_bytes.insert(job.id.clone(), log_bytes);
        self.jobs.insert(job.id.clone(), job);
    }

    /// Lets the jobs among `ids` that are no longer resident leave memory (after the commit that finished
    /// with them, and before the next mark): the store has them.
    pub fn evict<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            let Some(j) = self.jobs.get(id) else {
                continue;
            };
            let held = self
                .leases
                .values()
                .any(|l| l.job_id.as_deref() == Some(id.as_str()));
            if resident(j.state, j.settled, held) {
                continue;
            }
            *self.finished.entry(j.state).or_default() += 1;
            self.jobs.remove(id);
            self.log_bytes.remove(id);
        }
    }

    /// A new id like `job-000042` (the counter is stored with the change that uses it).
    pub fn next_id(&mut self, kind: &str, tx: &mut Tx) -> String {
        self.seq += 1;
        tx.meta("seq", self.seq);
        format!("{kind}-{:06}", self.seq)
    }

    /// The next fencing token (stored with the grant that uses it).
    pub fn next_token(&mut self, tx: &mut Tx) -> u64 {
        self.fencing += 1;
        tx.meta("fencing", self.fencing);
        self.fencing
    }

    /// The agent owning `rig`.
    pub fn agent_of(&self, rig: &str) -> Option<String> {
        self.rigs.get(rig).map(|r| r.agent.clone())
    }

    /// Any message from `agent` shows it is alive (heartbeats can queue behind job traffic). `false` when its
    /// session was declared lost: that session is closed now, so the agent reconnects, registers and reconciles
    /// what it holds; the message itself is not acted on (a result comes back with the registration).
    pub fn alive(&mut self, agent: &str) -> bool {
        let Some(s) = self.agents.get_mut(agent) else {
            return false;
        };
        if s.lost {
            if !s.tx.is_closed() {
                tracing::info!(
                    agent,
                    "a lost agent is answering again: closing its session so it registers afresh"
                );
                // Dropping the only sender ends the controller's side of the stream.
                let (closed, _) = tokio::sync::mpsc::unbounded_channel();
                s.tx = closed;
            }
            return false;
        }
        s.last_heartbeat = Instant::now();
        true
    }

    /// Whether `agent` owns the rig job `job_id` runs on: only that agent's word about the job counts.
    pub fn owns_job(&self, agent: &str, job_id: &str) -> bool {
        self.jobs
            .get(job_id)
            .and_then(|j| j.rig.as_deref())
            .and_then(|r| self.rigs.get(r))
            .is_some_and(|r| r.agent == agent)
    }

    /// Whether `agent` has a live session.
    pub fn connected(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| !a.lost)
    }

    /// Each committed message with the session it goes to once the change is durable (a lost or absent agent
    /// is told when it registers).
    pub fn sessions_for(&self, out: Vec<(String, ToAgent)>) -> Vec<(AgentSender, ToAgent)> {
        let mut v = Vec::with_capacity(out.len());
        for (agent, msg) in out {
            match self.agents.get(&agent) {
                Some(s) if !s.lost => v.push((s.tx.clone(), msg)),
                _ => tracing::warn!(
                    agent,
                    "agent not connected; it will be told when it registers"
                ),
            }
        }
        v
    }
}
