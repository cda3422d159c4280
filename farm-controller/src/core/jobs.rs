//! A job's life: submitted and queued, granted a rig (see [`super::leases`]), progressing, and ended by its
//! result, a cancel, a timeout or a lost agent. Ending a job frees its lease, does the rig's health bookkeeping
//! and, in a sweep, queues a retry of a failed job.

use std::path::Path;
use std::time::Duration;

use nvfarm_model::farm::{Job, JobState, Lease, LeaseKind, Priority, Request, RigState, Selector};
use nvfarm_model::link::{JobResult, ToAgent};
use nvfarm_model::plan::{Plan, StepKind};
use nvfarm_model::time::now_ms;
use nvfarm_model::StepReport;

use super::matching::{all_unusable, matching};
use super::state::State;
use super::{health, Effects, Farm, FarmError, FarmEvent};
use crate::auth::Caller;
use crate::config::Config;
use crate::store::Tx;

/// The longest a job may take, queueing included.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A job as a client submits it.
#[derive(Clone, Debug)]
pub struct JobRequest {
    /// Which rigs it may run on.
    pub selector: Selector,
    /// The plan (TOML).
    pub plan_toml: String,
    /// The firmware build (an uploaded artifact's sha256; empty for plans that flash nothing).
    pub artifact_sha256: String,
    /// The firmware file's name.
    pub firmware_name: String,
    /// Overall limit, queueing included.
    pub timeout: Duration,
    /// How urgently.
    pub priority: Priority,
    /// The sweep it belongs to.
    pub sweep_id: Option<String>,
    /// Queue even when every matching rig is quarantined, in maintenance or offline.
    pub wait: bool,
}

/// A queued job, not yet stored.
pub(crate) fn new_job(
    id: String,
    r: &JobRequest,
    plan_name: &str,
    submitter: &str,
    now: u64,
) -> Job {
    Job {
        id,
        state: JobState::Queued,
        rig: None,
        drive_model: String::new(),
        selector: r.selector.clone(),
        plan_name: plan_name.to_string(),
        plan_toml: r.plan_toml.clone(),
        artifact_sha256: r.artifact_sha256.clone(),
        firmware_name: r.firmware_name.clone(),
        firmware_revision: String::new(),
        priority: r.priority,
        submitter: submitter.to_string(),
        created_ms: now,
        started_ms: 0,
        finished_ms: 0,
        timeout_ms: r.timeout.as_millis() as u64,
        message: String::new(),
        steps: vec![],
        lease_id: None,
        fencing_token: 0,
        sweep_id: r.sweep_id.clone(),
        attempt: 0,
        health_check: false,
        log_lines: 0,
        settled: true,
    }
}

/// Stores a queued job and its request for a rig.
pub(crate) fn enqueue(st: &mut State, job: Job, fx: &mut Effects) -> String {
    let req_id = st.next_id("req", &mut fx.tx);
    let req = Request {
        id: req_id.clone(),
        selector: job.selector.clone(),
        priority: if job.health_check {
            Priority::System
        } else {
            job.priority
        },
        holder: job.submitter.clone(),
        created_ms: job.created_ms,
        duration_ms: 0,
        job_id: Some(job.id.clone()),
        detached: false,
        expires_ms: 0,
    };
    fx.tx.request(&req);
    fx.tx.job(&job);
    st.requests.insert(req);
    st.jobs.insert(job.id.clone(), job);
    req_id
}

/// Validates a plan a client sent, and that the caller may submit it: `script` steps run shell commands on the
/// bench, so only the roles in the config's `scripts.roles` may submit plans with them.
pub(crate) fn parse_plan(
    plan_toml: &str,
    caller: &Caller,
    cfg: &Config,
) -> Result<Plan, FarmError> {
    let plan = Plan::parse(plan_toml, Path::new("<plan>"))
        .map_err(|e| FarmError::InvalidArgument(format!("invalid plan: {e}")))?;
    // Inside parallel groups too.
    let scripts = plan
        .all_steps()
        .find(|s| matches!(s.kind, StepKind::Script { .. }));
    if let Some(step) = scripts {
        if !cfg.script_roles.contains(&caller.role) {
            let allowed: Vec<&str> = cfg.script_roles.iter().map(|r| r.as_str()).collect();
            return Err(FarmError::PermissionDenied(format!(
                "step {} ({}) is a script: plans with script steps run commands on the bench and need role {} (the controller's scripts.roles); '{}' has role {}",
                step.number,
                step.name,
                allowed.join(" or "),
                caller.name,
                caller.role.as_str()
            )));
        }
    }
    Ok(plan)
}

/// Records a job's end (outcome, message, steps) and withdraws its request; `false` if it had already ended.
fn decide(
    st: &mut State,
    job_id: &str,
    state: JobState,
    message: String,
    steps: Option<Vec<StepReport>>,
    now: u64,
    fx: &mut Effects,
) -> bool {
    let Some(job) = st.jobs.get_mut(job_id) else {
        return false;
    };
    if job.state.is_terminal() {
        return false;
    }
    job.state = state;
    job.message = message;
    job.finished_ms = now;
    if let Some(s) = steps {
        replace_steps(job, s, &mut fx.tx);
    }
    fx.tx.job(job);
    fx.event(FarmEvent::Job(job_id.to_string()));
    if let Some(req) = st.requests.for_job(job_id).map(|r| r.id.clone()) {
        st.requests.remove(&req);
        fx.tx.drop_request(&req);
    }
    true
}

/// Replaces a job's steps with the agent's final list (each step is its own record in the store).
fn replace_steps(job: &mut Job, steps: Vec<StepReport>, tx: &mut Tx) {
    for old in &job.steps {
        if !steps.iter().any(|s| s.number == old.number) {
            tx.drop_step(&job.id, old.number);
        }
    }
    for s in &steps {
        tx.step(&job.id, s);
    }
    job.steps = steps;
    job.steps.sort_by_key(|s| s.number);
}

/// Records steps that just ended (in place by number; a step reported again replaces the earlier report).
pub(crate) fn record_steps(job: &mut Job, steps: Vec<StepReport>, tx: &mut Tx) {
    for s in steps {
        tx.step(&job.id, &s);
        match job.steps.binary_search_by_key(&s.number, |x| x.number) {
            Ok(i) => job.steps[i] = s,
            Err(i) => job.steps.insert(i, s),
        }
    }
}

/// Lets go of an ended job's rig: the lease goes, the rig is free again (after its health bookkeeping), the job
/// is settled, and a failed sweep job with retries left is queued again.
fn release(st: &mut State, job_id: &str, now: u64, fx: &mut Effects) {
    let Some(job) = st.jobs.get_mut(job_id) else {
        return;
    };
    if !job.settled {
        job.settled = true;
        fx.tx.job(job);
        fx.event(FarmEvent::Job(job_id.to_string()));
    }
    let job = job.clone();
    if let Some(lease_id) = &job.lease_id {
        if let Some(l) = st.leases.remove(lease_id) {
            fx.tx.drop_lease(&l);
        }
        if let Some(rig) = job.rig.as_ref().and_then(|r| st.rigs.get_mut(r)) {
            if rig.lease_id.as_deref() == Some(lease_id) {
                rig.lease_id = None;
                if rig.state == RigState::Leased {
                    rig.state = RigState::Idle;
                }
            }
            health::after_job(rig, &job, job.state, &job.message, st.quarantine_after);
            fx.tx.rig(rig);
            fx.event(FarmEvent::Rig(rig.name.clone()));
        }
    }
    if job.state == JobState::Failed {
        retry_in_sweep(st, &job, now, fx);
    }
}

/// Ends a job whose agent is done with it (it reported the end, refused it, lost it, or it never got a rig).
pub(crate) fn finish(
    st: &mut State,
    job_id: &str,
    state: JobState,
    message: String,
    steps: Option<Vec<StepReport>>,
    now: u64,
    fx: &mut Effects,
) {
    if decide(st, job_id, state, message, steps, now, fx) {
        release(st, job_id, now, fx);
    }
}

/// Ends a job the controller decided to stop (cancel, timeout). A job running on a connected agent is told to
/// stop, and its rig stays held (`stopping`) until the agent confirms, or until `hold_until`; the queue says so.
pub(crate) fn stop(
    st: &mut State,
    job_id: &str,
    state: JobState,
    message: String,
    now: u64,
    hold_until: u64,
    fx: &mut Effects,
) {
    let Some(job) = st.jobs.get(job_id).cloned() else {
        return;
    };
    if !decide(st, job_id, state, message, None, now, fx) {
        return;
    }
    let agent = job.rig.as_deref().and_then(|r| st.agent_of(r));
    let held = match (&job.lease_id, agent) {
        (Some(lease_id), Some(agent)) if st.connected(&agent) => {
            fx.send(
                &agent,
                ToAgent::Cancel {
                    job_id: job.id.clone(),
                    fencing_token: job.fencing_token,
                },
            );
            match st.leases.get_mut(lease_id) {
                Some(l) => {
                    l.stopping = Some(
                        if state == JobState::TimedOut {
                            "timed-out"
                        } else {
                            "cancelled"
                        }
                        .into(),
                    );
                    l.expires_ms = hold_until;
                    fx.tx.lease(l);
                    true
                }
                None => false,
            }
        }
        _ => false,
    };
    if held {
        if let Some(j) = st.jobs.get_mut(job_id) {
            j.settled = false;
            fx.tx.job(j);
        }
    } else {
        release(st, job_id, now, fx);
    }
}

/// The lease that holds a rig for `job_id` until its agent confirms the job stopped (with `token`, if given): the
/// lease of a job the controller stopped (cancel, timeout), or a hold left on the rig of a job that ended without
/// its agent ([`finish_holding`], [`hold_abandoned`]).
fn stop_lease(st: &State, job_id: &str, token: Option<u64>) -> Option<Lease> {
    st.leases
        .values()
        .find(|l| {
            l.stopping.is_some()
                && l.job_id.as_deref() == Some(job_id)
                && token.is_none_or(|t| l.fencing_token == t)
        })
        .cloned()
}

/// Whether a rig is held for `job_id` (with this token) until its agent confirms the job stopped.
pub(crate) fn stopping(st: &State, job_id: &str, token: u64) -> bool {
    stop_lease(st, job_id, Some(token)).is_some()
}

/// The agent confirmed a stopped job ended: keep the steps it ran (the outcome stays as decided) and free the rig.
pub(crate) fn settle(
    st: &mut State,
    job_id: &str,
    steps: Option<Vec<StepReport>>,
    now: u64,
    fx: &mut Effects,
) {
    if let (Some(job), Some(steps)) = (st.jobs.get_mut(job_id), steps) {
        if !steps.is_empty() {
            replace_steps(job, steps, &mut fx.tx);
            fx.event(FarmEvent::Job(job_id.to_string()));
        }
    }
    let_go(st, job_id, now, fx);
}

/// A stopped job whose agent never confirmed: free the rig, but only after a health check.
pub(crate) fn give_up(st: &mut State, job_id: &str, now: u64, fx: &mut Effects) {
    let rig = stop_lease(st, job_id, None)
        .map(|l| l.rig)
        .or_else(|| st.jobs.get(job_id).and_then(|j| j.rig.clone()));
    let_go(st, job_id, now, fx);
    if let Some(r) = rig.and_then(|r| st.rigs.get_mut(&r)) {
        r.health_check_pending = true;
        r.reason = format!("its agent did not confirm that {job_id} stopped");
        fx.tx.rig(r);
    }
}

/// Frees what held a rig for stopped job `job_id`: its own lease while the job is unsettled (with the health
/// bookkeeping of its end), or a hold (the bookkeeping was done when the job ended).
fn let_go(st: &mut State, job_id: &str, now: u64, fx: &mut Effects) {
    let hold = stop_lease(st, job_id, None);
    let own = st.jobs.get(job_id).is_some_and(|j| {
        !j.settled && j.lease_id.is_some() && j.lease_id == hold.as_ref().map(|l| l.id.clone())
    });
    match hold {
        Some(l) if !own => drop_hold(st, &l, fx),
        _ => release(st, job_id, now, fx),
    }
}

/// Removes a hold lease; its rig is free again.
fn drop_hold(st: &mut State, l: &Lease, fx: &mut Effects) {
    st.leases.remove(&l.id);
    fx.tx.drop_lease(l);
    if let Some(rig) = st.rigs.get_mut(&l.rig) {
        if rig.lease_id.as_deref() == Some(l.id.as_str()) {
            rig.lease_id = None;
            if rig.state == RigState::Leased {
                rig.state = RigState::Idle;
            }
            fx.tx.rig(rig);
            fx.event(FarmEvent::Rig(rig.name.clone()));
        }
    }
}

/// Ends a job whose agent cannot be reached (lost, or gone since a restart): the job is decided and settled at
/// once (its followers get the outcome now), but its lease stays as a hold until `hold_until`, so the rig goes to
/// nobody while the agent may still be running the job; the agent's confirmation, its return without the job, or
/// the deadline (then with a health check) frees it.
pub(crate) fn finish_holding(
    st: &mut State,
    job_id: &str,
    state: JobState,
    message: String,
    now: u64,
    hold_until: u64,
    fx: &mut Effects,
) {
    let Some(lease_id) = st.jobs.get(job_id).and_then(|j| j.lease_id.clone()) else {
        return finish(st, job_id, state, message, None, now, fx);
    };
    if !decide(st, job_id, state, message.clone(), None, now, fx) {
        return;
    }
    let Some(job) = st.jobs.get_mut(job_id) else {
        return;
    };
    job.settled = true;
    fx.tx.job(job);
    let job = job.clone();
    match st.leases.get_mut(&lease_id) {
        Some(l) => {
            l.stopping = Some("agent-lost".into());
            l.expires_ms = hold_until;
            fx.tx.lease(l);
        }
        None => return,
    }
    if let Some(rig) = job.rig.as_ref().and_then(|r| st.rigs.get_mut(r)) {
        health::after_job(rig, &job, state, &message, st.quarantine_after);
        fx.tx.rig(rig);
        fx.event(FarmEvent::Rig(rig.name.clone()));
    }
    if job.state == JobState::Failed {
        retry_in_sweep(st, &job, now, fx);
    }
}

/// An agent reports running a job the controller had already let go of (ended and freed its rig while the agent
/// was away): the agent is told to abandon it, and the rig is held until it confirms (or `hold_until`), so
/// nothing new is granted the rig while the old job still touches it. Nothing is held if the rig is taken.
pub(crate) fn hold_abandoned(
    st: &mut State,
    job_id: &str,
    token: u64,
    now: u64,
    hold_until: u64,
    fx: &mut Effects,
) {
    let Some(rig) = st.jobs.get(job_id).and_then(|j| j.rig.clone()) else {
        return;
    };
    if token == 0 {
        // No grant ever carries token 0: the claim is malformed, and a hold under it would be a lease no
        // agent could ever have been given. The agent is still told to abandon the job.
        tracing::warn!(
            job = job_id,
            rig,
            "an agent reports running a job under fencing token 0, which is never handed out; not holding the rig for it"
        );
        return;
    }
    if st.rigs.get(&rig).is_none_or(|r| r.lease_id.is_some())
        || stop_lease(st, job_id, Some(token)).is_some()
    {
        return;
    }
    let id = st.next_id("lease", &mut fx.tx);
    let lease = Lease {
        id: id.clone(),
        rig: rig.clone(),
        holder: "farm-controller".into(),
        fencing_token: token,
        kind: LeaseKind::Job,
        job_id: Some(job_id.to_string()),
        granted_ms: now,
        expires_ms: hold_until,
        stopping: Some("abandoned".into()),
        request_id: None,
        claimed: true,
    };
    fx.tx.lease(&lease);
    st.leases.insert(id.clone(), lease);
    if let Some(r) = st.rigs.get_mut(&rig) {
        r.lease_id = Some(id);
        if r.state == RigState::Idle {
            r.state = RigState::Leased;
        }
        fx.tx.rig(r);
        fx.event(FarmEvent::Rig(rig));
    }
}

/// A failed sweep job is retried on the same rig, to tell flaky from broken.
fn retry_in_sweep(st: &mut State, job: &Job, now: u64, fx: &mut Effects) {
    let Some(sweep_id) = &job.sweep_id else {
        return;
    };
    let Some(retries) = st.sweeps.get(sweep_id).map(|s| s.retries) else {
        return;
    };
    if job.attempt >= retries {
        return;
    }
    let id = st.next_id("job", &mut fx.tx);
    let retry = Job {
        id: id.clone(),
        state: JobState::Queued,
        rig: None,
        drive_model: String::new(),
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
    enqueue(st, retry, fx);
    if let Some(s) = st.sweeps.get_mut(sweep_id) {
        s.job_ids.push(id);
        fx.tx.sweep(s);
    }
}

/// What the rig's drive runs, from an agent's result (read after every job, whatever its outcome).
pub(crate) fn record_drive(st: &mut State, r: &JobResult, fx: &mut Effects) {
    let (Some(drive), Some(rig)) = (&r.drive, st.jobs.get(&r.job_id).and_then(|j| j.rig.clone()))
    else {
        return;
    };
    if let Some(rr) = st.rigs.get_mut(&rig) {
        rr.firmware_revision = drive.revision.clone();
        rr.active_slot = drive.active_slot;
        rr.firmware_slots = drive.slots.clone();
        fx.tx.rig(rr);
        fx.event(FarmEvent::Rig(rig));
    }
}

/// Applies an agent's result to a current job: its outcome and steps, and what the rig runs now.
pub(crate) fn apply_result(st: &mut State, r: &JobResult, now: u64, fx: &mut Effects) {
    if let Some(job) = st.jobs.get_mut(&r.job_id) {
        if !r.firmware_revision.is_empty() {
            job.firmware_revision = r.firmware_revision.clone();
        }
    }
    record_drive(st, r, fx);
    finish(
        st,
        &r.job_id,
        JobState::ended(r.outcome),
        r.message.clone(),
        Some(r.steps.clone()),
        now,
        fx,
    );
}

impl Farm {
    /// Queues a job (and schedules it at once if a rig is free).
    pub async fn submit_job(&self, caller: &Caller, r: JobRequest) -> Result<Job, FarmError> {
        let plan = parse_plan(&r.plan_toml, caller, &self.cfg)?;
        if r.timeout.is_zero() || r.timeout > MAX_JOB_TIMEOUT {
            return Err(FarmError::InvalidArgument(format!(
                "--timeout {}: must be more than zero and at most {}",
                humantime::format_duration(r.timeout),
                humantime::format_duration(MAX_JOB_TIMEOUT)
            )));
        }
        if r.priority == Priority::System {
            return Err(FarmError::InvalidArgument(
                "priority system is reserved for the controller's health checks".into(),
            ));
        }
        let mut st = self.lock().await?;
        if plan.flash_step().is_some() && r.artifact_sha256.is_empty() {
            return Err(FarmError::InvalidArgument(
                "the plan flashes firmware: upload an artifact and give its sha256".into(),
            ));
        }
        if !r.artifact_sha256.is_empty() && !st.artifacts.contains_key(&r.artifact_sha256) {
            return Err(FarmError::FailedPrecondition(format!(
                "artifact {} is not stored: upload it first",
                r.artifact_sha256
            )));
        }
        let rigs = matching(&st.rigs, &r.selector).map_err(FarmError::InvalidArgument)?;
        if !r.wait {
            if let Some(why) = all_unusable(&rigs) {
                return Err(FarmError::FailedPrecondition(format!(
                    "no rig matching {} can take work now: {why} (--wait queues the job until one can)",
                    r.selector.describe()
                )));
            }
        }
        let now = now_ms();
        let mut fx = Effects::default();
        let id = st.next_id("job", &mut fx.tx);
        let job = new_job(id.clone(), &r, &plan.name, &caller.name, now);
        enqueue(&mut st, job, &mut fx);
        fx.event(FarmEvent::Job(id.clone()));
        self.reschedule(st, fx).await?;
        self.job(&id).await
    }

    /// Cancels a job; only its submitter or an admin may. A running job's agent is told to stop.
    pub async fn cancel_job(&self, caller: &Caller, id: &str) -> Result<Job, FarmError> {
        let mut st = self.lock().await?;
        self.page_in(&mut st, id)?;
        let Some(job) = st.jobs.get(id).cloned() else {
            return Err(FarmError::NotFound(format!("no job {id}")));
        };
        if job.submitter != caller.name && !caller.is_admin() {
            return Err(FarmError::PermissionDenied(format!(
                "job {id} was submitted by {}; only they or an admin can cancel it",
                job.submitter
            )));
        }
        if job.state.is_terminal() {
            return Err(FarmError::InvalidArgument(format!(
                "job {id} had already finished ({}{}): nothing to cancel",
                job.state,
                if job.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", job.message)
                }
            )));
        }
        let mut fx = Effects::default();
        let now = now_ms();
        stop(
            &mut st,
            id,
            JobState::Cancelled,
            format!("cancelled by {}", caller.name),
            now,
            now.saturating_add(self.cfg.stop_grace.as_millis() as u64),
            &mut fx,
        );
        self.reschedule(st, fx).await?;
        self.job(id).await
    }
}
