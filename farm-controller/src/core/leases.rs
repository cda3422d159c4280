//! Reservations and grants: reserving a rig (now or by waiting), releasing and extending a reservation,
//! withdrawing a waiting request, and turning the scheduler's grants into leases (and job assignments).

use std::time::Duration;

use nvfarm_model::farm::{JobState, Lease, LeaseKind, Priority, Request, RigState, Selector};
use nvfarm_model::link::{Assignment, ToAgent};
use nvfarm_model::time::{now_ms, rfc3339};

use super::matching::{all_unusable, matching};
use super::state::{State, Watch};
use super::{scheduler, Effects, Farm, FarmError, FarmEvent};
use crate::auth::Caller;
use crate::store::Tx;

/// Longest reservation or extension.
pub const MAX_RESERVATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a client asks for.
#[derive(Clone, Debug)]
pub struct ReserveRequest {
    /// Which rigs.
    pub selector: Selector,
    /// How urgently.
    pub priority: Priority,
    /// For how long.
    pub duration: Duration,
    /// Queue and wait rather than fail when nothing is free.
    pub wait: bool,
    /// Queue and return at once: the request keeps its place with nobody watching it.
    pub detach: bool,
}

/// Outcome of a reservation attempt.
#[derive(Debug)]
pub enum Reservation {
    /// A rig is yours.
    Granted(Lease),
    /// Queued (with `wait`).
    Queued {
        /// The request to watch.
        request_id: String,
        /// Its place in the queue.
        position: u32,
        /// Why it waits.
        waiting_because: String,
    },
}

/// The job's Assign message, with the time it has left.
pub(crate) fn assignment(st: &State, job_id: &str, now: u64) -> Option<ToAgent> {
    let job = st.jobs.get(job_id)?;
    Some(ToAgent::Assign(Assignment {
        job_id: job.id.clone(),
        rig: job.rig.clone().unwrap_or_default(),
        fencing_token: job.fencing_token,
        plan_toml: job.plan_toml.clone(),
        artifact_sha256: job.artifact_sha256.clone(),
        artifact_size: st
            .artifacts
            .get(&job.artifact_sha256)
            .map(|a| a.size)
            .unwrap_or(0),
        firmware_name: job.firmware_name.clone(),
        timeout_ms: job
            .timeout_ms
            .saturating_sub(now.saturating_sub(job.created_ms)),
    }))
}

/// Grants what the change so far in `fx` made possible: it looks at the rigs and requests the change writes.
/// Returns each granted request with its lease.
pub(crate) fn grant_changed(
    st: &mut State,
    now: u64,
    aging: Duration,
    fx: &mut Effects,
) -> Vec<(String, String)> {
    let rigs = fx.tx.rigs_written().to_vec();
    let requests = fx.tx.requests_touched().to_vec();
    let scope = scheduler::Scope::Changed {
        rigs: &rigs,
        requests: &requests,
    };
    grant_waiting(st, scope, now, aging, fx)
}

/// Grants every request the scheduler serves now among `scope`: a lease per grant, and for a job's request the
/// job's assignment to its rig's agent. Returns each granted request with its lease.
pub(crate) fn grant_waiting(
    st: &mut State,
    scope: scheduler::Scope<'_>,
    now: u64,
    aging: Duration,
    fx: &mut Effects,
) -> Vec<(String, String)> {
    let mut granted = vec![];
    for g in scheduler::schedule(&st.rigs, &st.requests, scope, now, aging) {
        let Some(req) = st.requests.remove(&g.request) else {
            continue;
        };
        fx.tx.drop_request(&req.id);
        let token = st.next_token(&mut fx.tx);
        let lease_id = st.next_id("lease", &mut fx.tx);
        let (kind, expires_ms) = match &req.job_id {
            Some(_) => (LeaseKind::Job, 0),
            None => (LeaseKind::Reservation, now.saturating_add(req.duration_ms)),
        };
        let lease = Lease {
            id: lease_id.clone(),
            rig: g.rig.clone(),
            holder: req.holder.clone(),
            fencing_token: token,
            kind,
            job_id: req.job_id.clone(),
            granted_ms: now,
            expires_ms,
            stopping: None,
            request_id: Some(req.id.clone()),
            // A job's lease is its agent's; a detached request's holder is not waiting to receive it.
            claimed: req.job_id.is_some() || req.detached,
        };
        fx.tx.lease(&lease);
        st.leases.insert(lease_id.clone(), lease);
        granted.push((req.id.clone(), lease_id.clone()));
        let Some(rig) = st.rigs.get_mut(&g.rig) else {
            continue;
        };
        rig.state = RigState::Leased;
        rig.lease_id = Some(lease_id.clone());
        fx.tx.rig(rig);
        let agent = rig.agent.clone();
        let drive_model = rig.drive_model.clone();
        st.watches.remove(&req.id);
        fx.event(FarmEvent::Request(req.id.clone()));
        fx.event(FarmEvent::Rig(g.rig.clone()));
        if let Some(job_id) = &req.job_id {
            if let Some(job) = st.jobs.get_mut(job_id) {
                job.state = JobState::Assigned;
                job.rig = Some(g.rig.clone());
                job.drive_model = drive_model;
                job.lease_id = Some(lease_id);
                job.fencing_token = token;
                job.started_ms = now;
                fx.tx.job(job);
            }
            if let Some(msg) = assignment(st, job_id, now) {
                fx.send(&agent, msg);
            }
            fx.event(FarmEvent::Job(job_id.clone()));
        }
    }
    granted
}

/// Ends a reservation: the lease goes, the rig is free again.
pub(crate) fn drop_reservation(st: &mut State, lease: &Lease, tx: &mut Tx) {
    st.leases.remove(&lease.id);
    tx.drop_lease(lease);
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

impl Farm {
    /// Reserves a rig now, or queues the request when `wait` is set.
    pub async fn reserve(
        &self,
        caller: &Caller,
        r: ReserveRequest,
    ) -> Result<Reservation, FarmError> {
        if r.duration.is_zero() || r.duration > MAX_RESERVATION {
            return Err(FarmError::InvalidArgument(
                "--for must be between 1s and 7 days".into(),
            ));
        }
        if r.priority == Priority::System {
            return Err(FarmError::InvalidArgument(
                "priority system is reserved for the controller's health checks".into(),
            ));
        }
        let wait = r.wait || r.detach;
        let mut st = self.lock().await?;
        let rigs = matching(&st.rigs, &r.selector).map_err(FarmError::InvalidArgument)?;
        if !wait {
            if let Some(why) = all_unusable(&rigs) {
                return Err(FarmError::FailedPrecondition(format!(
                    "no rig matching {} can be reserved: {why} (--wait queues until one can)",
                    r.selector.describe()
                )));
            }
        }
        let now = now_ms();
        let mut fx = Effects::default();
        let id = st.next_id("req", &mut fx.tx);
        let req = Request {
            id: id.clone(),
            selector: r.selector,
            priority: r.priority,
            holder: caller.name.clone(),
            created_ms: now,
            duration_ms: nvme_spec::units::millis(r.duration),
            job_id: None,
            detached: r.detach,
            expires_ms: if r.detach {
                now.saturating_add(nvme_spec::units::millis(self.cfg.detached_wait))
            } else {
                0
            },
        };
        st.requests.insert(req.clone());
        st.watches.insert(id.clone(), Watch::idle());
        fx.tx.request(&req);
        let granted = grant_changed(&mut st, now, self.cfg.aging, &mut fx);
        let mine = granted
            .iter()
            .find(|(r, _)| *r == id)
            .and_then(|(_, l)| st.leases.get(l))
            .cloned();
        if let Some(mut lease) = mine {
            // Granted at once: the answer carries it, so it is claimed.
            lease.claimed = true;
            fx.tx.lease(&lease);
            st.leases.insert(lease.id.clone(), lease.clone());
            self.commit(st, fx).await?;
            return Ok(Reservation::Granted(lease));
        }
        if !wait {
            let waiting = scheduler::waiting_because(
                &st.rigs,
                &st.leases,
                &st.requests,
                &req,
                now,
                self.cfg.aging,
            );
            // Not waiting: drop the request again (other grants in this pass still stand).
            st.requests.remove(&id);
            st.watches.remove(&id);
            fx.tx.drop_request(&id);
            self.commit(st, fx).await?;
            return Err(FarmError::Busy(format!(
                "no rig free now: {waiting} (use --wait to queue)"
            )));
        }
        let (position, waiting) = scheduler::standing(
            &st.rigs,
            &st.leases,
            &st.requests,
            &req,
            now,
            self.cfg.aging,
        );
        fx.event(FarmEvent::Request(id.clone()));
        self.commit(st, fx).await?;
        Ok(Reservation::Queued {
            request_id: id,
            position,
            waiting_because: waiting,
        })
    }

    /// Withdraws a waiting request (a job's request cancels the job).
    pub async fn cancel_request(&self, caller: &Caller, id: &str) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        let Some(req) = st.requests.get(id).cloned() else {
            return Err(FarmError::NotFound(format!("no waiting request {id}")));
        };
        if req.holder != caller.name && !caller.is_admin() {
            return Err(FarmError::PermissionDenied(format!(
                "request {id} belongs to {}",
                req.holder
            )));
        }
        if let Some(job) = &req.job_id {
            drop(st);
            return self.cancel_job(caller, job).await.map(drop);
        }
        let mut fx = Effects::default();
        st.requests.remove(id);
        fx.tx.drop_request(id);
        fx.event(FarmEvent::Request(id.to_string()));
        self.commit(st, fx).await
    }

    /// Ends a reservation early; only its holder or an admin may.
    pub async fn release(&self, caller: &Caller, lease_id: &str) -> Result<Lease, FarmError> {
        let mut st = self.lock().await?;
        let Some(lease) = st.leases.get(lease_id).cloned() else {
            return Err(FarmError::NotFound(format!(
                "no active lease {lease_id} (released or expired already?)"
            )));
        };
        if lease.holder != caller.name && !caller.is_admin() {
            return Err(FarmError::PermissionDenied(format!(
                "lease {lease_id} is held by {}; only the holder or an admin can release it",
                lease.holder
            )));
        }
        if lease.kind == LeaseKind::Job {
            let job = lease.job_id.clone().unwrap_or_default();
            return Err(FarmError::FailedPrecondition(format!(
                "lease {lease_id} belongs to job {job}: cancel the job instead"
            )));
        }
        let mut fx = Effects::default();
        drop_reservation(&mut st, &lease, &mut fx.tx);
        fx.event(FarmEvent::Rig(lease.rig.clone()));
        self.reschedule(st, fx).await?;
        Ok(lease)
    }

    /// Extends a reservation by `by`; only its holder or an admin may.
    pub async fn extend(
        &self,
        caller: &Caller,
        lease_id: &str,
        by: Duration,
    ) -> Result<Lease, FarmError> {
        let mut st = self.lock().await?;
        let Some(lease) = st.leases.get_mut(lease_id) else {
            return Err(FarmError::NotFound(format!("no active lease {lease_id}")));
        };
        if lease.holder != caller.name && !caller.is_admin() {
            return Err(FarmError::PermissionDenied(format!(
                "lease {lease_id} is held by {}",
                lease.holder
            )));
        }
        if lease.kind != LeaseKind::Reservation {
            return Err(FarmError::FailedPrecondition(
                "only reservations are extended; job leases follow their job".into(),
            ));
        }
        let now = now_ms();
        let from = lease.expires_ms.max(now);
        let max_ms = MAX_RESERVATION.as_millis() as u64;
        let room = (now.saturating_add(max_ms)).saturating_sub(from);
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        if by.is_zero() || by_ms > room {
            return Err(FarmError::InvalidArgument(format!(
                "--for {}: a reservation may run at most {} ahead; lease {lease_id} ends at {}, so it can be extended by at most {}",
                humantime::format_duration(by),
                humantime::format_duration(MAX_RESERVATION),
                rfc3339(lease.expires_ms),
                humantime::format_duration(Duration::from_secs(room / 1000)),
            )));
        }
        let mut l = lease.clone();
        l.expires_ms = from + by_ms;
        let mut fx = Effects::default();
        fx.tx.lease(&l);
        fx.event(FarmEvent::Rig(l.rig.clone()));
        st.leases.insert(l.id.clone(), l.clone());
        self.commit(st, fx).await?;
        Ok(l)
    }

    /// A client watches request `id` until the guard goes: a reservation request nobody watches for
    /// `queue.watch_grace` is withdrawn (unless detached). The guard's [`WatchGuard::status`] holds where the
    /// request stands and wakes only when that changes.
    pub async fn watching(self: &std::sync::Arc<Self>, id: &str) -> WatchGuard {
        let mut st = self.state.lock().await;
        if st.requests.contains_key(id) {
            st.watches
                .entry(id.to_string())
                .or_insert_with(Watch::idle)
                .watch();
        }
        let status = super::watchers::subscribe(&mut st, id, now_ms(), self.cfg.aging);
        // The first status it sees is on disk before the client hears it.
        let seq = st.applied;
        drop(st);
        let _ = self.durable(seq).await;
        WatchGuard {
            farm: self.clone(),
            id: id.to_string(),
            status,
        }
    }

    /// Recomputes where watched request `id` stands (time alone can move it: aging), waking its watchers
    /// only if that changed.
    pub async fn refresh_watch(&self, id: &str) {
        let status = self
            .read(|st| super::watchers::status(st, id, now_ms(), self.cfg.aging))
            .await;
        if let Some((tx, status)) = status {
            super::watchers::send(&tx, status);
        }
    }

    /// The client waiting for request `id` received its lease: the reservation is claimed.
    pub async fn claim(&self, lease_id: &str) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        let Some(l) = st.leases.get_mut(lease_id).filter(|l| !l.claimed) else {
            return Ok(());
        };
        l.claimed = true;
        let l = l.clone();
        let mut fx = Effects::default();
        fx.tx.lease(&l);
        self.commit(st, fx).await
    }
}

/// A client watching a request; dropping it ends the watch.
#[derive(Debug)]
pub struct WatchGuard {
    farm: std::sync::Arc<Farm>,
    id: String,
    /// Where the request stands; changes only when its position, reason or outcome does.
    pub status: tokio::sync::watch::Receiver<super::RequestStatus>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let (farm, id) = (self.farm.clone(), std::mem::take(&mut self.id));
        tokio::spawn(async move {
            let mut st = farm.state.lock().await;
            if let Some(w) = st.watches.get_mut(&id) {
                w.unwatch();
                // Its abandonment clock starts: the tick must look again.
                st.next_due_ms = 0;
            }
        });
    }
}
