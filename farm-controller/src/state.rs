//! The controller's state and every transition of it: leases, the queue, jobs, agents, health.
//!
//! One [`Farm`] holds the in-memory state behind a mutex. Each operation mutates the state, collects the changed
//! records in a [`Tx`], commits it (atomic and flushed), and only then sends messages to agents and answers the
//! caller. So anything acknowledged is on disk, and a restart rebuilds exactly the acknowledged state.
//!
//! Scheduling: waiting requests are served highest class first (interactive > ci > nightly), oldest first within
//! a class; a CI request that has waited longer than the aging period is served like an interactive one, and
//! nightly requests never age past the others, so they only take rigs nobody else is waiting for. A rig whose
//! last job ended in an infrastructure error runs a health check before it is leased again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, Mutex};
use tonic::Status;

use nvfarm_proto::v1 as pb;

use crate::auth::Caller;
use crate::config::Config;
use crate::model::*;
use crate::store::{Store, StoreError, Tx};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        Status::unavailable(format!("the controller's store failed: {e}"))
    }
}

/// What watchers are told about.
#[derive(Clone, Debug)]
pub enum Event {
    Job(String),
    Log(String),
    Request(String),
    Rig(String),
}

/// A connected agent.
#[derive(Debug)]
pub struct AgentSession {
    pub conn: u64,
    pub tx: mpsc::UnboundedSender<pb::ControllerMessage>,
    pub last_heartbeat: Instant,
    pub rigs: Vec<String>,
    /// Silent too long: its rigs are offline, a reconnect starts a new session.
    pub lost: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub rigs: BTreeMap<String, RigRecord>,
    pub leases: BTreeMap<String, LeaseRecord>,
    pub requests: BTreeMap<String, RequestRecord>,
    pub jobs: BTreeMap<String, JobRecord>,
    pub artifacts: BTreeMap<String, ArtifactRecord>,
    pub sweeps: BTreeMap<String, SweepRecord>,
    pub fencing: u64,
    pub seq: u64,
    pub agents: HashMap<String, AgentSession>,
    /// Which lease each recently granted request got (for clients waiting on a request).
    pub grants: HashMap<String, String>,
    /// Consecutive infrastructure errors that quarantine a rig.
    pub quarantine_after: u32,
    next_conn: u64,
}

/// Messages to send once the transaction is committed.
type Outbox = Vec<(String, pb::ControllerMessage)>;

#[derive(Debug)]
pub struct Farm {
    pub cfg: Config,
    pub store: Store,
    pub state: Mutex<State>,
    pub events: broadcast::Sender<Event>,
}

/// Outcome of a reservation attempt.
#[derive(Debug)]
pub enum Reservation {
    Granted(LeaseRecord),
    Queued {
        request_id: String,
        position: u32,
        waiting_because: String,
    },
}

fn assign_msg(job: &JobRecord, artifact_size: u64) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Assign(pb::Assign {
            job_id: job.id.clone(),
            rig: job.rig.clone().unwrap_or_default(),
            fencing_token: job.fencing_token,
            plan_toml: job.plan_toml.clone(),
            artifact_sha256: job.artifact_sha256.clone(),
            artifact_size,
            firmware_name: job.firmware_name.clone(),
            timeout_ms: job
                .timeout_ms
                .saturating_sub(now_ms().saturating_sub(job.created_ms)),
        })),
    }
}

fn cancel_msg(job: &JobRecord) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Cancel(pb::CancelJob {
            job_id: job.id.clone(),
            fencing_token: job.fencing_token,
        })),
    }
}

impl State {
    fn next_id(&mut self, kind: &str, tx: &mut Tx) -> String {
        self.seq += 1;
        tx.meta("seq", self.seq);
        format!("{kind}-{:06}", self.seq)
    }

    fn effective_rank(&self, r: &RequestRecord, now: u64, aging: Duration) -> u32 {
        let base = r.class.rank();
        if r.class == Class::Ci && now.saturating_sub(r.created_ms) >= aging.as_millis() as u64 {
            Class::Interactive.rank()
        } else {
            base
        }
    }

    /// Waiting requests in service order.
    pub fn ordered_requests(&self, now: u64, aging: Duration) -> Vec<&RequestRecord> {
        let mut v: Vec<&RequestRecord> = self.requests.values().collect();
        v.sort_by(|a, b| {
            self.effective_rank(b, now, aging)
                .cmp(&self.effective_rank(a, now, aging))
                .then(a.created_ms.cmp(&b.created_ms))
                .then(a.id.cmp(&b.id))
        });
        v
    }

    fn usable_for(&self, rig: &RigRecord, req: &RequestRecord) -> bool {
        rig.state == RigState::Idle
            && req.selector.matches(rig)
            && (!rig.health_check_pending || self.is_health_check_for(req, &rig.name))
    }

    fn is_health_check_for(&self, req: &RequestRecord, rig: &str) -> bool {
        req.job_id
            .as_ref()
            .and_then(|j| self.jobs.get(j))
            .is_some_and(|j| j.health_check)
            && req.selector.rig.as_deref() == Some(rig)
    }

    /// Why a request is still waiting, in words.
    pub fn waiting_because(&self, req: &RequestRecord, now: u64, aging: Duration) -> String {
        let matching: Vec<&RigRecord> = self
            .rigs
            .values()
            .filter(|r| req.selector.matches(r))
            .collect();
        if matching.is_empty() {
            return format!("no rig matches {}", req.selector.describe());
        }
        if matching.iter().any(|r| self.usable_for(r, req)) {
            let ahead = self
                .ordered_requests(now, aging)
                .iter()
                .take_while(|o| o.id != req.id)
                .count();
            return format!(
                "a matching rig is free; {ahead} request(s) ahead are being served first"
            );
        }
        let reasons: Vec<String> = matching
            .iter()
            .map(|r| match r.state {
                RigState::Leased => {
                    let lease = r.lease_id.as_ref().and_then(|l| self.leases.get(l));
                    match lease {
                        Some(l) if l.kind == LeaseKind::Reservation => format!(
                            "{} reserved by {} until {}",
                            r.name,
                            l.holder,
                            humantime::format_rfc3339_seconds(
                                UNIX_EPOCH + Duration::from_millis(l.expires_ms)
                            )
                        ),
                        Some(l) => format!(
                            "{} running job {} for {}",
                            r.name,
                            l.job_id.as_deref().unwrap_or("?"),
                            l.holder
                        ),
                        None => format!("{} leased", r.name),
                    }
                }
                RigState::Offline => format!("{} offline ({})", r.name, r.reason),
                RigState::Quarantined => format!("{} quarantined ({})", r.name, r.reason),
                RigState::Maintenance => format!("{} in maintenance ({})", r.name, r.reason),
                RigState::Idle if r.health_check_pending => {
                    format!("{} waiting for its health check", r.name)
                }
                RigState::Idle => format!("{} idle", r.name),
            })
            .collect();
        format!("all matching rigs are busy: {}", reasons.join("; "))
    }

    pub fn position(&self, id: &str, now: u64, aging: Duration) -> u32 {
        self.ordered_requests(now, aging)
            .iter()
            .position(|r| r.id == id)
            .map(|p| p as u32 + 1)
            .unwrap_or(0)
    }

    /// Grants every request that can be served now; returns Assign messages for job requests and the granted
    /// (request, lease) pairs.
    fn schedule(
        &mut self,
        now: u64,
        aging: Duration,
        tx: &mut Tx,
    ) -> (Outbox, Vec<(String, String)>) {
        let mut out = Outbox::new();
        let mut granted_requests = vec![];
        let order: Vec<String> = self
            .ordered_requests(now, aging)
            .iter()
            .map(|r| r.id.clone())
            .collect();
        for id in order {
            let req = self.requests[&id].clone();
            let Some(rig) = self
                .rigs
                .values()
                .find(|r| self.usable_for(r, &req))
                .map(|r| r.name.clone())
            else {
                continue;
            };
            // Grant.
            self.fencing += 1;
            tx.meta("fencing", self.fencing);
            let lease_id = self.next_id("lease", tx);
            let (kind, expires) = match &req.job_id {
                Some(_) => (LeaseKind::Job, 0),
                None => (LeaseKind::Reservation, now + req.duration_ms),
            };
            let lease = LeaseRecord {
                id: lease_id.clone(),
                rig: rig.clone(),
                holder: req.holder.clone(),
                fencing_token: self.fencing,
                kind,
                job_id: req.job_id.clone(),
                granted_ms: now,
                expires_ms: expires,
            };
            tx.lease(&lease);
            self.leases.insert(lease_id.clone(), lease.clone());
            let r = self.rigs.get_mut(&rig).expect("rig exists");
            r.state = RigState::Leased;
            r.lease_id = Some(lease_id.clone());
            tx.rig(r);
            let agent = r.agent.clone();
            self.requests.remove(&id);
            tx.drop_request(&id);
            granted_requests.push((id.clone(), lease_id.clone()));
            self.grants.insert(id.clone(), lease_id.clone());
            if let Some(job_id) = &req.job_id {
                let size = self
                    .jobs
                    .get(job_id)
                    .and_then(|j| self.artifacts.get(&j.artifact_sha256))
                    .map(|a| a.size)
                    .unwrap_or(0);
                let job = self.jobs.get_mut(job_id).expect("job of request");
                job.state = JobState::Assigned;
                job.rig = Some(rig.clone());
                job.lease_id = Some(lease_id.clone());
                job.fencing_token = lease.fencing_token;
                job.started_ms = now;
                tx.job(job);
                out.push((agent, assign_msg(job, size)));
            }
        }
        (out, granted_requests)
    }

    /// Ends a job: records the outcome, frees its lease and rig, and does the rig's health bookkeeping.
    fn finish_job(
        &mut self,
        job_id: &str,
        state: JobState,
        message: String,
        steps: Option<Vec<StepRecord>>,
        now: u64,
        tx: &mut Tx,
    ) -> Vec<String> {
        let mut touched = vec![];
        let Some(job) = self.jobs.get_mut(job_id) else {
            return touched;
        };
        if job.state.is_terminal() {
            return touched;
        }
        job.state = state;
        job.message = message.clone();
        job.finished_ms = now;
        if let Some(s) = steps {
            job.steps = s;
        }
        tx.job(job);
        let job = job.clone();
        if let Some(req) = self
            .requests
            .values()
            .find(|r| r.job_id.as_deref() == Some(job_id))
            .map(|r| r.id.clone())
        {
            self.requests.remove(&req);
            tx.drop_request(&req);
        }
        if let Some(lease_id) = &job.lease_id {
            if self.leases.remove(lease_id).is_some() {
                tx.drop_lease(lease_id);
            }
            if let Some(rig) = job.rig.as_ref().and_then(|r| self.rigs.get_mut(r)) {
                touched.push(rig.name.clone());
                if rig.lease_id.as_deref() == Some(lease_id) {
                    rig.lease_id = None;
                    if rig.state == RigState::Leased {
                        rig.state = RigState::Idle;
                    }
                }
                match state {
                    JobState::Error => {
                        rig.consecutive_infra_errors += 1;
                        if job.health_check {
                            rig.state = RigState::Quarantined;
                            rig.reason = format!("health check failed: {message}");
                            rig.health_check_pending = false;
                        } else if rig.consecutive_infra_errors >= self.quarantine_after {
                            rig.state = RigState::Quarantined;
                            rig.reason = format!(
                                "{} consecutive infrastructure errors; last: {message}",
                                rig.consecutive_infra_errors
                            );
                            rig.health_check_pending = false;
                        } else {
                            rig.health_check_pending = true;
                        }
                    }
                    JobState::Failed if job.health_check => {
                        rig.state = RigState::Quarantined;
                        rig.reason = format!("health check failed: {message}");
                        rig.health_check_pending = false;
                    }
                    // A health check clears the way for the next job but does not wipe the record: only a
                    // real job that ran to a verdict shows the rig works, so errors that recur between passing
                    // health checks still add up to a quarantine.
                    JobState::Passed | JobState::Failed if job.health_check => {
                        rig.health_check_pending = false;
                    }
                    JobState::Passed | JobState::Failed => {
                        rig.consecutive_infra_errors = 0;
                    }

                    _ => {}
                }
                tx.rig(rig);
            }
        }
        // A failed sweep job is retried on the same rig, to tell flaky from broken.
        if let (JobState::Failed, Some(sweep_id)) = (state, &job.sweep_id) {
            if let Some(sweep) = self.sweeps.get(sweep_id).cloned() {
                if job.attempt < sweep.retries {
                    let id = self.next_id("job", tx);
                    let retry = JobRecord {
                        id: id.clone(),
                        state: JobState::Queued,
                        rig: None,
                        lease_id: None,
                        fencing_token: 0,
                        created_ms: now,
                        started_ms: 0,
                        finished_ms: 0,
                        message: format!("retry {} of {}", job.attempt + 1, job.id),
                        steps: vec![],
                        attempt: job.attempt + 1,
                        log_lines: 0,
                        ..job.clone()
                    };
                    self.enqueue_job(retry, tx);
                    let s = self.sweeps.get_mut(sweep_id).expect("exists");
                    s.job_ids.push(id);
                    tx.sweep(s);
                }
            }
        }
        touched
    }

    fn enqueue_job(&mut self, job: JobRecord, tx: &mut Tx) -> String {
        let req_id = self.next_id("req", tx);
        let req = RequestRecord {
            id: req_id.clone(),
            selector: job.selector.clone(),
            class: if job.health_check {
                Class::System
            } else {
                job.class
            },
            holder: job.submitter.clone(),
            created_ms: job.created_ms,
            duration_ms: 0,
            job_id: Some(job.id.clone()),
        };
        tx.request(&req);
        tx.job(&job);
        self.requests.insert(req_id.clone(), req);
        self.jobs.insert(job.id.clone(), job);
        req_id
    }

    /// Creates health-check jobs for idle rigs that need one.
    fn plan_health_checks(&mut self, health_plan: &str, now: u64, tx: &mut Tx) {
        let need: Vec<String> = self
            .rigs
            .values()
            .filter(|r| r.health_check_pending && r.state == RigState::Idle)
            .filter(|r| {
                !self.jobs.values().any(|j| {
                    j.health_check
                        && !j.state.is_terminal()
                        && j.selector.rig.as_deref() == Some(&r.name)
                })
            })
            .map(|r| r.name.clone())
            .collect();
        for rig in need {
            let id = self.next_id("job", tx);
            let mut job = NewJob {
                selector: Selector {
                    rig: Some(rig.clone()),
                    labels: Default::default(),
                },
                plan_name: "health-check".into(),
                plan_toml: health_plan.to_string(),
                artifact_sha256: String::new(),
                firmware_name: String::new(),
                class: Class::System,
                submitter: "farm-controller".into(),
                timeout_ms: 5 * 60 * 1000,
                sweep_id: None,
                health_check: true,
            }
            .queued(id, now);
            job.message = format!("health check of {rig} after an infrastructure error");
            self.enqueue_job(job, tx);
        }
    }
}

impl Farm {
    /// Opens the store and rebuilds the state from it.
    pub async fn open(cfg: Config) -> Result<Arc<Farm>, StoreError> {
        let store = Store::open(&cfg.data_dir)?;
        let snap = store.load()?;
        let mut st = State {
            fencing: snap.fencing,
            seq: snap.seq,
            quarantine_after: cfg.quarantine_after,
            ..Default::default()
        };
        for r in snap.rigs {
            st.rigs.insert(r.name.clone(), r);
        }
        for l in snap.leases {
            st.leases.insert(l.id.clone(), l);
        }
        for r in snap.requests {
            st.requests.insert(r.id.clone(), r);
        }
        for mut j in snap.jobs {
            j.log_lines = store.logs(&j.id, 0).map(|l| l.len() as u64).unwrap_or(0);
            st.jobs.insert(j.id.clone(), j);
        }
        for a in snap.artifacts {
            st.artifacts.insert(a.sha256.clone(), a);
        }
        for s in snap.sweeps {
            st.sweeps.insert(s.id.clone(), s);
        }
        // No agent is connected yet: every rig is offline until its agent registers again. Leases and running
        // jobs stay as they were; agents report what they run when they reconnect.
        let mut tx = Tx::new();
        let now = now_ms();
        for r in st.rigs.values_mut() {
            if matches!(r.state, RigState::Idle) {
                r.state = RigState::Offline;
                r.reason = "waiting for its agent to reconnect after a controller restart".into();
                tx.rig(r);
            }
        }
        // Reservations keep their own clock; job leases get a fresh grace period for their agent to come back.
        for l in st.leases.values_mut() {
            if l.kind == LeaseKind::Job {
                l.expires_ms = now + cfg.agent_timeout.as_millis() as u64;
            }
        }
        // The restart's own bookkeeping is on disk before anything is served.
        store.commit(tx).await?;
        tracing::info!(
            rigs = st.rigs.len(),
            jobs = st.jobs.len(),
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
        }))
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn deliver(st: &State, out: Outbox) {
        for (agent, msg) in out {
            match st.agents.get(&agent) {
                Some(s) if !s.lost => {
                    let _ = s.tx.send(msg);
                }
                _ => tracing::warn!(
                    agent,
                    "agent not connected; it will be told when it registers"
                ),
            }
        }
    }

    /// Commits `tx`, then delivers `out` and emits events. The order is the durability guarantee.
    async fn finish(
        &self,
        st: &State,
        tx: Tx,
        out: Outbox,
        events: Vec<Event>,
    ) -> Result<(), Status> {
        self.store.commit(tx).await?;
        Self::deliver(st, out);
        for e in events {
            self.emit(e);
        }
        Ok(())
    }

    /// Schedules and commits; used after any change that may free or need a rig.
    async fn reschedule(
        &self,
        st: &mut State,
        mut tx: Tx,
        mut out: Outbox,
        mut events: Vec<Event>,
    ) -> Result<(), Status> {
        let now = now_ms();
        st.plan_health_checks(&self.cfg.health_check_plan, now, &mut tx);
        let (more, granted) = st.schedule(now, self.cfg.aging, &mut tx);
        for (_, m) in &more {
            if let Some(pb::controller_message::Msg::Assign(a)) = &m.msg {
                events.push(Event::Job(a.job_id.clone()));
                events.push(Event::Rig(a.rig.clone()));
            }
        }
        out.extend(more);
        events.extend(granted.into_iter().map(|(r, _)| Event::Request(r)));
        self.finish(st, tx, out, events).await
    }

    // ----- client operations --------------------------------------------------------------------------------

    pub async fn reserve(
        &self,
        caller: &Caller,
        selector: Selector,
        class: Class,
        duration: Duration,
        wait: bool,
    ) -> Result<Reservation, Status> {
        if duration.is_zero() || duration > Duration::from_secs(7 * 24 * 3600) {
            return Err(Status::invalid_argument(
                "--for must be between 1s and 7 days",
            ));
        }
        let mut st = self.state.lock().await;
        if !st.rigs.values().any(|r| selector.matches(r)) {
            return Err(Status::failed_precondition(format!(
                "no rig matches {}",
                selector.describe()
            )));
        }
        let now = now_ms();
        let mut tx = Tx::new();
        let id = st.next_id("req", &mut tx);
        let req = RequestRecord {
            id: id.clone(),
            selector,
            class,
            holder: caller.name.clone(),
            created_ms: now,
            duration_ms: duration.as_millis() as u64,
            job_id: None,
        };
        st.requests.insert(id.clone(), req.clone());
        tx.request(&req);
        let (out, granted) = st.schedule(now, self.cfg.aging, &mut tx);
        let mut events: Vec<Event> = granted
            .iter()
            .map(|(r, _)| Event::Request(r.clone()))
            .collect();
        if let Some((_, lease_id)) = granted.iter().find(|(r, _)| *r == id) {
            let lease = st.leases[lease_id].clone();
            events.push(Event::Rig(lease.rig.clone()));
            self.finish(&st, tx, out, events).await?;
            return Ok(Reservation::Granted(lease));
        }
        let waiting = st.waiting_because(&req, now, self.cfg.aging);
        if !wait {
            // Not waiting: drop the request again (other grants in this pass still stand).
            st.requests.remove(&id);
            tx.drop_request(&id);
            self.finish(&st, tx, out, events).await?;
            return Err(Status::resource_exhausted(format!(
                "no rig free now: {waiting} (use --wait to queue)"
            )));
        }
        let position = st.position(&id, now, self.cfg.aging);
        events.push(Event::Request(id.clone()));
        self.finish(&st, tx, out, events).await?;
        Ok(Reservation::Queued {
            request_id: id,
            position,
            waiting_because: waiting,
        })
    }

    pub async fn cancel_request(&self, caller: &Caller, id: &str) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let Some(req) = st.requests.get(id).cloned() else {
            return Err(Status::not_found(format!("no waiting request {id}")));
        };
        if req.holder != caller.name && !caller.is_admin() {
            return Err(Status::permission_denied(format!(
                "request {id} belongs to {}",
                req.holder
            )));
        }
        if let Some(job) = &req.job_id {
            drop(st);
            return self.cancel_job(caller, job).await.map(drop);
        }
        let mut tx = Tx::new();
        st.requests.remove(id);
        tx.drop_request(id);
        self.finish(&st, tx, vec![], vec![Event::Request(id.to_string())])
            .await
    }

    pub async fn release(&self, caller: &Caller, lease_id: &str) -> Result<LeaseRecord, Status> {
        let mut st = self.state.lock().await;
        let Some(lease) = st.leases.get(lease_id).cloned() else {
            return Err(Status::not_found(format!(
                "no active lease {lease_id} (released or expired already?)"
            )));
        };
        if lease.holder != caller.name && !caller.is_admin() {
            return Err(Status::permission_denied(format!(
                "lease {lease_id} is held by {}; only the holder or an admin can release it",
                lease.holder
            )));
        }
        if lease.kind == LeaseKind::Job {
            let job = lease.job_id.clone().unwrap_or_default();
            return Err(Status::failed_precondition(format!(
                "lease {lease_id} belongs to job {job}: cancel the job instead"
            )));
        }
        let mut tx = Tx::new();
        Self::drop_reservation(&mut st, &lease, &mut tx);
        self.reschedule(&mut st, tx, vec![], vec![Event::Rig(lease.rig.clone())])
            .await?;
        Ok(lease)
    }

    fn drop_reservation(st: &mut State, lease: &LeaseRecord, tx: &mut Tx) {
        st.leases.remove(&lease.id);
        tx.drop_lease(&lease.id);
        if let Some(r) = st.rigs.get_mut(&lease.rig) {
            if r.lease_id.as_deref() == Some(&lease.id) {
                r.lease_id = None;
                if r.state == RigState::Leased {
                    r.state = RigState::Idle;
                }
                tx.rig(r);
            }
        }
    }

    pub async fn extend(
        &self,
        caller: &Caller,
        lease_id: &str,
        by: Duration,
    ) -> Result<LeaseRecord, Status> {
        let mut st = self.state.lock().await;
        let Some(lease) = st.leases.get_mut(lease_id) else {
            return Err(Status::not_found(format!("no active lease {lease_id}")));
        };
        if lease.holder != caller.name && !caller.is_admin() {
            return Err(Status::permission_denied(format!(
                "lease {lease_id} is held by {}",
                lease.holder
            )));
        }
        if lease.kind != LeaseKind::Reservation {
            return Err(Status::failed_precondition(
                "only reservations are extended; job leases follow their job",
            ));
        }
        lease.expires_ms = lease.expires_ms.max(now_ms()) + by.as_millis() as u64;
        let l = lease.clone();
        let mut tx = Tx::new();
        tx.lease(&l);
        self.finish(&st, tx, vec![], vec![Event::Rig(l.rig.clone())])
            .await?;
        Ok(l)
    }

    pub async fn put_artifact(&self, rec: ArtifactRecord) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let mut tx = Tx::new();
        tx.artifact(&rec);
        st.artifacts.insert(rec.sha256.clone(), rec);
        self.finish(&st, tx, vec![], vec![]).await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn submit_job(
        &self,
        caller: &Caller,
        selector: Selector,
        plan_toml: String,
        artifact_sha256: String,
        firmware_name: String,
        timeout: Duration,
        class: Class,
        sweep_id: Option<String>,
    ) -> Result<JobRecord, Status> {
        let plan = bench_agent::plan::Plan::parse(&plan_toml, std::path::Path::new("<plan>"))
            .map_err(|e| Status::invalid_argument(format!("invalid plan: {e}")))?;
        if timeout.is_zero() {
            return Err(Status::invalid_argument("timeout must be more than zero"));
        }
        let mut st = self.state.lock().await;
        if plan.needs_firmware().is_some() && artifact_sha256.is_empty() {
            return Err(Status::invalid_argument(
                "the plan flashes firmware: upload an artifact and give its sha256",
            ));
        }
        if !artifact_sha256.is_empty() && !st.artifacts.contains_key(&artifact_sha256) {
            return Err(Status::failed_precondition(format!(
                "artifact {artifact_sha256} is not stored: upload it first"
            )));
        }
        if !st.rigs.values().any(|r| selector.matches(r)) {
            return Err(Status::failed_precondition(format!(
                "no rig matches {}",
                selector.describe()
            )));
        }
        let now = now_ms();
        let mut tx = Tx::new();
        let id = st.next_id("job", &mut tx);
        let job = NewJob {
            selector,
            plan_name: plan.name.clone(),
            plan_toml,
            artifact_sha256,
            firmware_name,
            class,
            submitter: caller.name.clone(),
            timeout_ms: timeout.as_millis() as u64,
            sweep_id,
            health_check: false,
        }
        .queued(id.clone(), now);
        st.enqueue_job(job, &mut tx);
        self.reschedule(&mut st, tx, vec![], vec![Event::Job(id.clone())])
            .await?;
        Ok(st.jobs[&id].clone())
    }

    pub async fn cancel_job(&self, caller: &Caller, id: &str) -> Result<JobRecord, Status> {
        let mut st = self.state.lock().await;
        let Some(job) = st.jobs.get(id).cloned() else {
            return Err(Status::not_found(format!("no job {id}")));
        };
        if job.submitter != caller.name && !caller.is_admin() {
            return Err(Status::permission_denied(format!(
                "job {id} was submitted by {}; only they or an admin can cancel it",
                job.submitter
            )));
        }
        if job.state.is_terminal() {
            return Ok(job);
        }
        let mut tx = Tx::new();
        let mut out = vec![];
        if job.rig.is_some() && job.lease_id.is_some() {
            if let Some(agent) = job
                .rig
                .as_ref()
                .and_then(|r| st.rigs.get(r))
                .map(|r| r.agent.clone())
            {
                out.push((agent, cancel_msg(&job)));
            }
        }
        let touched = st.finish_job(
            id,
            JobState::Cancelled,
            format!("cancelled by {}", caller.name),
            None,
            now_ms(),
            &mut tx,
        );
        let mut events = vec![Event::Job(id.to_string())];
        events.extend(touched.into_iter().map(Event::Rig));
        self.reschedule(&mut st, tx, out, events).await?;
        Ok(st.jobs[id].clone())
    }

    pub async fn set_rig_state(
        &self,
        caller: &Caller,
        rig: &str,
        action: &str,
        reason: &str,
    ) -> Result<RigRecord, Status> {
        let mut st = self.state.lock().await;
        let connected = {
            let Some(r) = st.rigs.get(rig) else {
                return Err(Status::not_found(format!("no rig {rig}")));
            };
            st.agents.get(&r.agent).is_some_and(|a| !a.lost)
        };
        let r = st.rigs.get_mut(rig).expect("checked");
        let mut tx = Tx::new();
        match action {
            "quarantine" | "maintenance" => {
                if r.state == RigState::Leased {
                    return Err(Status::failed_precondition(format!(
                        "{rig} is leased ({}); release it or cancel its job first",
                        r.lease_id.clone().unwrap_or_default()
                    )));
                }
                r.state = if action == "quarantine" {
                    RigState::Quarantined
                } else {
                    RigState::Maintenance
                };
                r.reason = if reason.is_empty() {
                    format!("{action} by {}", caller.name)
                } else {
                    format!("{reason} ({action} by {})", caller.name)
                };
            }
            "restore" => {
                if !matches!(
                    r.state,
                    RigState::Quarantined | RigState::Maintenance | RigState::Offline
                ) {
                    return Err(Status::failed_precondition(format!(
                        "{rig} is {}: nothing to restore",
                        r.state.to_pb().short()
                    )));
                }
                r.state = if connected {
                    RigState::Idle
                } else {
                    RigState::Offline
                };
                r.reason = if connected {
                    String::new()
                } else {
                    "restored, waiting for its agent".into()
                };
                r.consecutive_infra_errors = 0;
                r.health_check_pending = false;
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}': expected quarantine, restore or maintenance"
                )))
            }
        }
        tx.rig(r);
        let rec = r.clone();
        self.reschedule(&mut st, tx, vec![], vec![Event::Rig(rig.to_string())])
            .await?;
        Ok(rec)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn submit_sweep(
        &self,
        caller: &Caller,
        name: String,
        labels: BTreeMap<String, String>,
        plan_toml: String,
        artifact_sha256: String,
        firmware_name: String,
        timeout: Duration,
        class: Class,
        retries: u32,
    ) -> Result<SweepRecord, Status> {
        let plan = bench_agent::plan::Plan::parse(&plan_toml, std::path::Path::new("<plan>"))
            .map_err(|e| Status::invalid_argument(format!("invalid plan: {e}")))?;
        if name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a sweep needs a name (it is compared with the previous sweep of that name)",
            ));
        }
        let rigs: Vec<String> = {
            let st = self.state.lock().await;
            let sel = Selector {
                rig: None,
                labels: labels.clone(),
            };
            st.rigs
                .values()
                .filter(|r| sel.matches(r))
                .map(|r| r.name.clone())
                .collect()
        };
        if rigs.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no rig matches {}",
                Selector {
                    rig: None,
                    labels: labels.clone()
                }
                .describe()
            )));
        }
        let mut st = self.state.lock().await;
        if !artifact_sha256.is_empty() && !st.artifacts.contains_key(&artifact_sha256) {
            return Err(Status::failed_precondition(format!(
                "artifact {artifact_sha256} is not stored: upload it first"
            )));
        }
        let now = now_ms();
        let mut tx = Tx::new();
        let id = st.next_id("sweep", &mut tx);
        let previous = st
            .sweeps
            .values()
            .filter(|s| s.name == name)
            .max_by_key(|s| (s.created_ms, s.id.clone()))
            .map(|s| s.id.clone());
        let mut sweep = SweepRecord {
            id: id.clone(),
            name,
            labels,
            job_ids: vec![],
            created_ms: now,
            previous,
            retries,
            plan_name: plan.name.clone(),
            submitter: caller.name.clone(),
        };
        for rig in rigs {
            let jid = st.next_id("job", &mut tx);
            let job = NewJob {
                selector: Selector {
                    rig: Some(rig),
                    labels: Default::default(),
                },
                plan_name: plan.name.clone(),
                plan_toml: plan_toml.clone(),
                artifact_sha256: artifact_sha256.clone(),
                firmware_name: firmware_name.clone(),
                class,
                submitter: caller.name.clone(),
                timeout_ms: timeout.as_millis() as u64,
                sweep_id: Some(id.clone()),
                health_check: false,
            }
            .queued(jid.clone(), now);
            st.enqueue_job(job, &mut tx);
            sweep.job_ids.push(jid);
        }
        tx.sweep(&sweep);
        st.sweeps.insert(id.clone(), sweep.clone());
        self.reschedule(&mut st, tx, vec![], vec![]).await?;
        Ok(sweep)
    }

    // ----- agent link ---------------------------------------------------------------------------------------

    /// A new agent connection. Returns the session id and the channel to the agent.
    pub async fn agent_connected(
        &self,
        agent: &str,
        tx: mpsc::UnboundedSender<pb::ControllerMessage>,
    ) -> u64 {
        let mut st = self.state.lock().await;
        st.next_conn += 1;
        let conn = st.next_conn;
        st.agents.insert(
            agent.to_string(),
            AgentSession {
                conn,
                tx,
                last_heartbeat: Instant::now(),
                rigs: vec![],
                lost: false,
            },
        );
        conn
    }

    /// Registration: rigs, and reconciliation of the jobs the agent reports.
    pub async fn agent_register(
        &self,
        agent: &str,
        conn: u64,
        reg: pb::Register,
    ) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let now = now_ms();
        let mut tx = Tx::new();
        let mut out = Outbox::new();
        let mut events = vec![];
        let connected_here = st.agents.get(agent).is_some_and(|s| s.conn == conn);
        if !connected_here {
            return Err(Status::aborted(
                "superseded by a newer connection of the same agent",
            ));
        }
        // Fencing tokens only grow: never hand out one the agent has already seen.
        let newest = reg.rigs.iter().map(|r| r.newest_token).max().unwrap_or(0);
        if newest > st.fencing {
            tracing::warn!(
                agent,
                newest,
                ours = st.fencing,
                "agent has seen newer fencing tokens than the store; skipping ahead"
            );
            st.fencing = newest;
            tx.meta("fencing", st.fencing);
        }
        let names: Vec<String> = reg.rigs.iter().map(|r| r.name.clone()).collect();
        for r in &reg.rigs {
            if let Some(other) = st
                .rigs
                .get(&r.name)
                .filter(|x| x.agent != agent && st.agents.get(&x.agent).is_some_and(|a| !a.lost))
            {
                return Err(Status::already_exists(format!(
                    "rig {} is already registered by agent {}",
                    r.name, other.agent
                )));
            }
            let rec = st.rigs.entry(r.name.clone()).or_insert_with(|| RigRecord {
                name: r.name.clone(),
                agent: agent.to_string(),
                labels: Default::default(),
                state: RigState::Offline,
                drive_serial: String::new(),
                drive_model: String::new(),
                firmware_revision: String::new(),
                reason: String::new(),
                lease_id: None,
                consecutive_infra_errors: 0,
                health_check_pending: false,
                last_seen_ms: now,
            });
            rec.agent = agent.to_string();
            rec.labels = r
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            rec.drive_serial = r.drive_serial.clone();
            rec.drive_model = r.drive_model.clone();
            if !r.firmware_revision.is_empty() {
                rec.firmware_revision = r.firmware_revision.clone();
            }
            rec.last_seen_ms = now;
            if rec.state == RigState::Offline {
                rec.state = if rec.lease_id.is_some() {
                    RigState::Leased
                } else {
                    RigState::Idle
                };
                rec.reason.clear();
            }
            tx.rig(rec);
            events.push(Event::Rig(r.name.clone()));
        }
        // Rigs this agent had before but no longer lists.
        let gone: Vec<String> = st
            .rigs
            .values()
            .filter(|r| r.agent == agent && !names.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        for g in gone {
            let r = st.rigs.get_mut(&g).expect("listed");
            if r.state != RigState::Quarantined {
                r.state = RigState::Offline;
                r.reason = format!("no longer in agent {agent}'s rig file");
                tx.rig(r);
            }
        }
        if let Some(s) = st.agents.get_mut(agent) {
            s.rigs = names.clone();
            s.last_heartbeat = Instant::now();
        }
        // Reconcile jobs.
        let mut abandon = vec![];
        let mut reported_running = vec![];
        for j in &reg.jobs {
            let current = st
                .jobs
                .get(&j.job_id)
                .filter(|job| !job.state.is_terminal() && job.fencing_token == j.fencing_token)
                .cloned();
            match (&j.result, current) {
                (Some(result), Some(_)) => {
                    let touched = self.apply_result(&mut st, result, now, &mut tx);
                    events.push(Event::Job(j.job_id.clone()));
                    events.extend(touched.into_iter().map(Event::Rig));
                    out.push((agent.to_string(), stored_msg(&j.job_id)));
                }
                (Some(_), None) => {
                    // Already decided (e.g. it timed out or was cancelled meanwhile) or fenced off: keep ours.
                    out.push((agent.to_string(), stored_msg(&j.job_id)));
                }
                (None, Some(job)) => {
                    reported_running.push(job.id.clone());
                    if let Some(l) = job.lease_id.as_ref().and_then(|l| st.leases.get_mut(l)) {
                        l.expires_ms = now + self.cfg.agent_timeout.as_millis() as u64;
                    }
                }
                (None, None) => abandon.push(j.job_id.clone()),
            }
        }
        // Jobs we think run on this agent's rigs but it does not report.
        let ours: Vec<JobRecord> = st
            .jobs
            .values()
            .filter(|j| {
                !j.state.is_terminal()
                    && j.rig.as_ref().is_some_and(|r| names.contains(r))
                    && j.lease_id.is_some()
            })
            .filter(|j| !reported_running.contains(&j.id))
            .cloned()
            .collect();
        for job in ours {
            if job.state == JobState::Assigned {
                let size = st
                    .artifacts
                    .get(&job.artifact_sha256)
                    .map(|a| a.size)
                    .unwrap_or(0);
                out.push((agent.to_string(), assign_msg(&job, size)));
            } else {
                let touched = st.finish_job(
                    &job.id,
                    JobState::Error,
                    format!("agent {agent} reconnected without this job (it restarted while running it)"),
                    None, now,
                    &mut tx,
                );
                events.push(Event::Job(job.id.clone()));
                events.extend(touched.into_iter().map(Event::Rig));
            }
        }
        tracing::info!(
            agent,
            rigs = names.len(),
            running = reported_running.len(),
            abandoned = abandon.len(),
            "agent registered"
        );
        // `Registered` is the first message on this connection, ahead of any assignment this registration makes
        // possible, and it goes out only once the reconciliation is stored.
        let registered = pb::Registered {
            heartbeat_ms: self.cfg.heartbeat_interval.as_millis() as u64,
            abandon_job_ids: abandon,
        };
        out.insert(
            0,
            (
                agent.to_string(),
                pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Registered(registered)),
                },
            ),
        );
        self.reschedule(&mut st, tx, out, events).await
    }

    fn apply_result(
        &self,
        st: &mut State,
        r: &pb::JobResult,
        now: u64,
        tx: &mut Tx,
    ) -> Vec<String> {
        let state = match r.outcome.as_str() {
            "passed" => JobState::Passed,
            "failed" => JobState::Failed,
            "timed_out" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Error,
        };
        if let Some(job) = st.jobs.get_mut(&r.job_id) {
            if !r.firmware_revision.is_empty() {
                job.firmware_revision = r.firmware_revision.clone();
            }
        }
        let steps = r.steps.iter().map(StepRecord::from_pb).collect();
        let touched = st.finish_job(&r.job_id, state, r.message.clone(), Some(steps), now, tx);
        // What the rig runs now.
        if let (Some(rig), false) = (
            st.jobs.get(&r.job_id).and_then(|j| j.rig.clone()),
            r.firmware_revision.is_empty(),
        ) {
            if state == JobState::Passed || state == JobState::Failed {
                if let Some(rr) = st.rigs.get_mut(&rig) {
                    rr.firmware_revision = r.firmware_revision.clone();
                    tx.rig(rr);
                }
            }
        }
        touched
    }

    pub async fn agent_heartbeat(&self, agent: &str, conn: u64, hb: &pb::Heartbeat) {
        let mut st = self.state.lock().await;
        let now = now_ms();
        let Some(s) = st.agents.get_mut(agent).filter(|s| s.conn == conn) else {
            return;
        };
        s.last_heartbeat = Instant::now();
        let lost = s.lost;
        if lost {
            return; // it must register again
        }
        let expires = now + self.cfg.agent_timeout.as_millis() as u64;
        for j in &hb.running_job_ids {
            if let Some(lease) = st.jobs.get(j).and_then(|j| j.lease_id.clone()) {
                if let Some(l) = st.leases.get_mut(&lease) {
                    l.expires_ms = expires;
                }
            }
        }
    }

    pub async fn agent_progress(&self, agent: &str, p: pb::JobProgress) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let Some(job) = st.jobs.get_mut(&p.job_id) else {
            return Ok(());
        };
        if job.fencing_token != p.fencing_token || job.state.is_terminal() {
            return Ok(()); // fenced off or already decided
        }
        let mut tx = Tx::new();
        let mut events = vec![];
        if !p.lines.is_empty() {
            let first = job.log_lines;
            job.log_lines += p.lines.len() as u64;
            self.store.append_logs(&p.job_id, first, &p.lines).await?;
            events.push(Event::Log(p.job_id.clone()));
        }
        let job = st.jobs.get_mut(&p.job_id).expect("present");
        if let Some(s) = pb::JobState::try_from(p.state)
            .ok()
            .and_then(JobState::from_pb)
        {
            if matches!(s, JobState::Flashing | JobState::Testing) && s != job.state {
                job.state = s;
                tx.job(job);
                events.push(Event::Job(job.id.clone()));
            }
        }
        if let Some(step) = &p.step {
            let rec = StepRecord::from_pb(step);
            job.steps.retain(|s| s.number != rec.number);
            job.steps.push(rec);
            job.steps.sort_by_key(|s| s.number);
            tx.job(job);
            events.push(Event::Job(job.id.clone()));
        }
        let _ = agent;
        self.finish(&st, tx, vec![], events).await
    }

    pub async fn agent_result(&self, agent: &str, r: pb::JobResult) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let now = now_ms();
        let mut tx = Tx::new();
        let mut events = vec![Event::Job(r.job_id.clone())];
        let current = st
            .jobs
            .get(&r.job_id)
            .is_some_and(|j| !j.state.is_terminal() && j.fencing_token == r.fencing_token);
        if current {
            let touched = self.apply_result(&mut st, &r, now, &mut tx);
            events.extend(touched.into_iter().map(Event::Rig));
        } else {
            tracing::info!(
                agent,
                job = r.job_id,
                token = r.fencing_token,
                "result for a job that is decided or fenced off; keeping the stored outcome"
            );
        }
        let out = vec![(agent.to_string(), stored_msg(&r.job_id))];
        self.reschedule(&mut st, tx, out, events).await
    }

    pub async fn agent_refused(&self, agent: &str, r: pb::Refused) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let now = now_ms();
        let mut tx = Tx::new();
        let current = st
            .jobs
            .get(&r.job_id)
            .is_some_and(|j| !j.state.is_terminal() && j.fencing_token == r.fencing_token);
        let mut events = vec![];
        if current {
            let touched = st.finish_job(
                &r.job_id,
                JobState::Error,
                format!("agent {agent} refused the job: {}", r.reason),
                None,
                now,
                &mut tx,
            );
            events.push(Event::Job(r.job_id.clone()));
            events.extend(touched.into_iter().map(Event::Rig));
        }
        self.reschedule(&mut st, tx, vec![], events).await
    }

    pub async fn agent_disconnected(&self, agent: &str, conn: u64) {
        let mut st = self.state.lock().await;
        // The session stays until its heartbeats time out: a quick reconnect keeps running jobs alive.
        if let Some(s) = st.agents.get_mut(agent).filter(|s| s.conn == conn) {
            tracing::info!(agent, "agent stream closed; waiting for it to reconnect");
            let (tx, _) = mpsc::unbounded_channel();
            s.tx = tx;
        }
    }

    /// Periodic work: silent agents, expired reservations, job timeouts, then scheduling.
    pub async fn tick(&self) -> Result<(), Status> {
        let mut st = self.state.lock().await;
        let now = now_ms();
        let mut tx = Tx::new();
        let mut out = Outbox::new();
        let mut events = vec![];
        let timeout = self.cfg.agent_timeout;
        let silent: Vec<String> = st
            .agents
            .iter()
            .filter(|(_, s)| !s.lost && s.last_heartbeat.elapsed() > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for agent in silent {
            let secs = timeout.as_secs_f64();
            tracing::warn!(
                agent,
                "no heartbeat for {secs:.0}s: its rigs go offline and its jobs end as error"
            );
            st.agents.get_mut(&agent).expect("listed").lost = true;
            let rigs: Vec<String> = st
                .rigs
                .values()
                .filter(|r| r.agent == agent)
                .map(|r| r.name.clone())
                .collect();
            for rig in &rigs {
                let jobs: Vec<String> = st
                    .jobs
                    .values()
                    .filter(|j| {
                        !j.state.is_terminal()
                            && j.rig.as_deref() == Some(rig)
                            && j.lease_id.is_some()
                    })
                    .map(|j| j.id.clone())
                    .collect();
                for j in jobs {
                    st.finish_job(
                        &j,
                        JobState::Error,
                        format!("agent {agent} stopped answering (no heartbeat for {secs:.0}s)"),
                        None,
                        now,
                        &mut tx,
                    );
                    events.push(Event::Job(j));
                }
                let r = st.rigs.get_mut(rig).expect("listed");
                if r.state != RigState::Quarantined && r.state != RigState::Maintenance {
                    r.state = RigState::Offline;
                    r.reason = format!(
                        "agent {agent} silent since {}",
                        humantime::format_rfc3339_seconds(SystemTime::now() - timeout)
                    );
                }
                // Reservations on an offline rig stay until they expire; nothing runs meanwhile.
                tx.rig(r);
                events.push(Event::Rig(rig.clone()));
            }
        }
        let expired: Vec<LeaseRecord> = st
            .leases
            .values()
            .filter(|l| l.kind == LeaseKind::Reservation && l.expires_ms <= now)
            .cloned()
            .collect();
        for l in expired {
            tracing::info!(
                lease = l.id,
                rig = l.rig,
                holder = l.holder,
                "reservation expired"
            );
            Self::drop_reservation(&mut st, &l, &mut tx);
            events.push(Event::Rig(l.rig.clone()));
        }
        let timed_out: Vec<JobRecord> = st
            .jobs
            .values()
            .filter(|j| {
                !j.state.is_terminal() && j.timeout_ms > 0 && now > j.created_ms + j.timeout_ms
            })
            .cloned()
            .collect();
        for job in timed_out {
            if let Some(agent) = job
                .rig
                .as_ref()
                .and_then(|r| st.rigs.get(r))
                .map(|r| r.agent.clone())
            {
                if job.lease_id.is_some() {
                    out.push((agent, cancel_msg(&job)));
                }
            }
            let what = if job.state == JobState::Queued {
                "no rig became free within the job timeout of"
            } else {
                "job timeout exceeded:"
            };
            let msg = format!(
                "{what} {}",
                humantime::format_duration(Duration::from_millis(job.timeout_ms))
            );
            st.finish_job(&job.id, JobState::TimedOut, msg, None, now, &mut tx);
            events.push(Event::Job(job.id.clone()));
        }
        self.reschedule(&mut st, tx, out, events).await
    }
}

fn stored_msg(job_id: &str) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Stored(pb::ResultStored {
            job_id: job_id.to_string(),
        })),
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
