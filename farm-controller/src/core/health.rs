//! Rig health: the bookkeeping after each job (infrastructure errors add up to a quarantine; a health check
//! must pass before a rig that had one is leased again), the health-check jobs themselves, and the operator's
//! quarantine / maintenance / restore.

use nvfarm_model::farm::{Job, JobState, Priority, Rig, RigState, Selector};

use super::jobs::{enqueue, give_up, new_job, JobRequest};
use super::state::State;
use super::{Effects, Farm, FarmError, FarmEvent};
use crate::auth::Caller;

/// What an operator does to a rig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RigAction {
    /// Take it out of service with a reason.
    Quarantine,
    /// Put it into maintenance.
    Maintenance,
    /// Return it to service (clearing its error count).
    Restore,
}

impl std::str::FromStr for RigAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quarantine" => Ok(RigAction::Quarantine),
            "maintenance" => Ok(RigAction::Maintenance),
            "restore" => Ok(RigAction::Restore),
            other => Err(format!(
                "unknown action '{other}': expected quarantine, restore or maintenance"
            )),
        }
    }
}

/// A rig's health bookkeeping after `job` ended as `state`.
pub(crate) fn after_job(
    rig: &mut Rig,
    job: &Job,
    state: JobState,
    message: &str,
    quarantine_after: u32,
) {
    match state {
        JobState::Error => {
            rig.consecutive_infra_errors += 1;
            if job.health_check {
                rig.state = RigState::Quarantined;
                rig.reason = format!("health check failed: {message}");
                rig.health_check_pending = false;
            } else if rig.consecutive_infra_errors >= quarantine_after {
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
        // A health check clears the way for the next job but does not wipe the record: only a real job that ran
        // to a verdict shows the rig works, so errors that recur between passing health checks still add up to a
        // quarantine.
        JobState::Passed if job.health_check => {
            rig.health_check_pending = false;
        }
        JobState::Passed | JobState::Failed => {
            rig.consecutive_infra_errors = 0;
        }
        _ => {}
    }
}

/// Queues a health-check job for every idle rig that needs one and has none queued: among the rigs the change
/// in `fx` writes, or among all rigs when `all` is set (the tick's periodic full pass).
pub(crate) fn plan_health_checks(
    st: &mut State,
    health_plan: &str,
    all: bool,
    now: u64,
    fx: &mut Effects,
) {
    let mut written: Vec<String> = if all {
        st.rigs.keys().cloned().collect()
    } else {
        fx.tx.rigs_written().to_vec()
    };
    written.sort();
    written.dedup();
    let need: Vec<String> = written
        .iter()
        .filter_map(|n| st.rigs.get(n))
        .filter(|r| r.health_check_pending && r.state == RigState::Idle)
        .filter(|r| {
            !st.jobs.values().any(|j| {
                j.health_check
                    && !j.state.is_terminal()
                    && j.selector.rig.as_deref() == Some(r.name.as_str())
            })
        })
        .map(|r| r.name.clone())
        .collect();
    for rig in need {
        let id = st.next_id("job", &mut fx.tx);
        let request = JobRequest {
            selector: Selector::rig(&rig),
            plan_toml: health_plan.to_string(),
            artifact_sha256: String::new(),
            firmware_name: String::new(),
            timeout: std::time::Duration::from_secs(5 * 60),
            priority: Priority::System,
            sweep_id: None,
            wait: true,
        };
        let mut job = new_job(id, &request, "health-check", "farm-controller", now);
        job.health_check = true;
        job.message = format!("health check of {rig} after an infrastructure error");
        enqueue(st, job, fx);
    }
}

impl Farm {
    /// Quarantines, puts into maintenance, or restores a rig.
    pub async fn set_rig_state(
        &self,
        caller: &Caller,
        rig: &str,
        action: RigAction,
        reason: &str,
    ) -> Result<Rig, FarmError> {
        let mut st = self.lock().await?;
        let Some(agent) = st.agent_of(rig) else {
            return Err(FarmError::NotFound(format!("no rig {rig}")));
        };
        let connected = st.connected(&agent);
        let Some(r) = st.rigs.get_mut(rig) else {
            return Err(FarmError::NotFound(format!("no rig {rig}")));
        };
        match action {
            RigAction::Quarantine | RigAction::Maintenance => {
                if r.state == RigState::Leased {
                    return Err(FarmError::FailedPrecondition(format!(
                        "{rig} is leased ({}); release it or cancel its job first",
                        r.lease_id.clone().unwrap_or_default()
                    )));
                }
                let (state, word) = if action == RigAction::Quarantine {
                    (RigState::Quarantined, "quarantine")
                } else {
                    (RigState::Maintenance, "maintenance")
                };
                r.state = state;
                r.reason = if reason.is_empty() {
                    format!("{word} by {}", caller.name)
                } else {
                    format!("{reason} ({word} by {})", caller.name)
                };
            }
            RigAction::Restore => {
                if !matches!(
                    r.state,
                    RigState::Quarantined | RigState::Maintenance | RigState::Offline
                ) {
                    return Err(FarmError::FailedPrecondition(format!(
                        "{rig} is {}: nothing to restore",
                        r.state
                    )));
                }
                // A rig still held (a reservation that outlived its agent's absence, a stop not yet confirmed)
                // stays held: restoring it must not let the scheduler grant it twice.
                r.state = if !connected {
                    RigState::Offline
                } else if r.lease_id.is_some() {
                    RigState::Leased
                } else {
                    RigState::Idle
                };
                r.reason = if connected {
                    String::new()
                } else {
                    "restored, waiting for its agent".into()
                };
                r.consecutive_infra_errors = 0;
                r.health_check_pending = false;
            }
        }
        let mut fx = Effects::default();
        fx.tx.rig(r);
        let rec = r.clone();
        fx.event(FarmEvent::Rig(rig.to_string()));
        self.reschedule(st, fx).await?;
        Ok(rec)
    }

    /// Gives `rig` to agent `to` (admins only): the rig is offline until that agent registers it, and its old
    /// agent can no longer register it or speak for its jobs.
    pub async fn move_rig(&self, caller: &Caller, rig: &str, to: &str) -> Result<Rig, FarmError> {
        if !caller.is_admin() {
            return Err(FarmError::PermissionDenied(format!(
                "moving a rig to another agent is an admin action; '{}' has role {}",
                caller.name,
                caller.role.as_str()
            )));
        }
        if to.trim().is_empty() {
            return Err(FarmError::InvalidArgument(
                "--to: give the agent's name".into(),
            ));
        }
        let mut st = self.lock().await?;
        let now = nvfarm_model::time::now_ms();
        let mut fx = Effects::default();
        let Some(held) = st.rigs.get(rig).map(|r| r.lease_id.clone()) else {
            return Err(FarmError::NotFound(format!("no rig {rig}")));
        };
        if let Some(lease) = held.and_then(|l| st.leases.get(&l).cloned()) {
            match (&lease.stopping, &lease.job_id) {
                // Held only until a stopped job's agent confirms: the admin gives up waiting (the rig gets a
                // health check under its new agent).
                (Some(_), Some(job)) => {
                    tracing::warn!(
                        rig,
                        job,
                        by = caller.name,
                        "moving a rig whose stopped job was never confirmed"
                    );
                    give_up(&mut st, job, now, &mut fx);
                }
                _ => {
                    return Err(FarmError::FailedPrecondition(format!(
                        "{rig} is leased ({}); release it or cancel its job first",
                        lease.id
                    )))
                }
            }
        }
        let Some(r) = st.rigs.get_mut(rig) else {
            return Err(FarmError::NotFound(format!("no rig {rig}")));
        };
        let from = std::mem::replace(&mut r.agent, to.to_string());
        if r.state != RigState::Quarantined && r.state != RigState::Maintenance {
            r.state = RigState::Offline;
        }
        r.reason = format!(
            "moved from agent {from} to {to} by {}; waiting for {to} to register it",
            caller.name
        );
        let rec = r.clone();
        fx.tx.rig(&rec);
        fx.event(FarmEvent::Rig(rig.to_string()));
        self.reschedule(st, fx).await?;
        tracing::info!(rig, from, to, by = caller.name, "rig moved");
        Ok(rec)
    }
}
