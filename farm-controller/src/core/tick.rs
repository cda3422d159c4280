//! The periodic work: agents silent too long lose their rigs and running jobs, reservations expire, jobs past
//! their overall timeout are stopped, stopped jobs whose agent never confirmed free their rig (after a health
//! check); then whatever was freed is scheduled.

use std::time::Duration;

use nvfarm_model::farm::{JobState, Lease, LeaseKind, RigState};
use nvfarm_model::time::{now_ms, rfc3339};

use super::jobs::{finish, finish_holding, give_up, stop};
use super::leases::drop_reservation;
use super::state::State;
use super::{Effects, Farm, FarmError, FarmEvent};

/// How often the tick schedules over every free rig, as a backstop: every change already schedules the rigs
/// and requests it writes, so this pass finds nothing unless a change touched a rig without writing it.
const FULL_PASS_EVERY: Duration = Duration::from_secs(30);

/// Marks agents silent for longer than `timeout` as lost: their rigs go offline, their running jobs end as
/// errors at once, and each such rig stays held (for up to `stop_grace`) until the agent, back, confirms the job
/// stopped or turns out not to have it: a silent agent may still be running it.
fn lose_silent_agents(
    st: &mut State,
    timeout: Duration,
    stop_grace: Duration,
    now: u64,
    fx: &mut Effects,
) {
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
        if let Some(s) = st.agents.get_mut(&agent) {
            s.lost = true;
        }
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
                    !j.state.is_terminal() && j.rig.as_deref() == Some(rig) && j.lease_id.is_some()
                })
                .map(|j| j.id.clone())
                .collect();
            // Stops it had not confirmed stay held until it does or their deadline passes.
            for j in jobs {
                finish_holding(
                    st,
                    &j,
                    JobState::Error,
                    format!("agent {agent} stopped answering (no heartbeat for {secs:.0}s)"),
                    now,
                    now.saturating_add(nvme_spec::units::millis(stop_grace)),
                    fx,
                );
            }
            if let Some(r) = st.rigs.get_mut(rig) {
                if r.state != RigState::Quarantined && r.state != RigState::Maintenance {
                    r.state = RigState::Offline;
                    r.reason = format!(
                        "agent {agent} silent since {}",
                        rfc3339(now.saturating_sub(nvme_spec::units::millis(timeout)))
                    );
                }
                // Reservations on an offline rig stay until they expire; nothing runs meanwhile.
                fx.tx.rig(r);
                fx.event(FarmEvent::Rig(rig.clone()));
            }
        }
    }
}

/// Ends jobs whose agent never came back after a controller restart: it gets `health.restart_grace` (the
/// grace the restart gave each job lease); one that does not return loses the job (error) and its rig goes offline. An
/// agent with a session is watched by its heartbeats instead ([`lose_silent_agents`]).
fn expire_job_leases(st: &mut State, timeout: Duration, now: u64, fx: &mut Effects) {
    let expired: Vec<Lease> = st
        .leases
        .values()
        .filter(|l| {
            l.kind == LeaseKind::Job
                && l.stopping.is_none()
                && l.expires_ms > 0
                && l.expires_ms <= now
        })
        .cloned()
        .collect();
    for l in expired {
        let Some(job) = l.job_id.as_deref() else {
            continue;
        };
        let agent = st.agent_of(&l.rig).unwrap_or_default();
        if st.agents.contains_key(&agent) {
            continue;
        }
        let why = format!(
            "agent {agent} did not come back within {} after the controller restarted",
            humantime::format_duration(timeout)
        );
        tracing::warn!(job, rig = l.rig, "{why}");
        finish(st, job, JobState::Error, why.clone(), None, now, fx);
        if let Some(r) = st.rigs.get_mut(&l.rig) {
            if r.state != RigState::Quarantined && r.state != RigState::Maintenance {
                r.state = RigState::Offline;
                r.reason = why;
                fx.tx.rig(r);
                fx.event(FarmEvent::Rig(l.rig.clone()));
            }
        }
    }
}

/// Withdraws reservation requests nobody waits for any more: a client that watched and went away (killed, or
/// cut off by a restart and not back) for `grace`, and detached requests past their wait. Then releases
/// reservations granted to a waiting client that never received them within `claim_timeout`.
fn drop_abandoned(
    st: &mut State,
    grace: Duration,
    claim_timeout: Duration,
    now: u64,
    fx: &mut Effects,
) {
    let gone: Vec<(String, &'static str)> = st
        .requests
        .values()
        .filter(|r| r.job_id.is_none())
        .filter_map(|r| {
            if r.detached {
                (r.expires_ms > 0 && r.expires_ms <= now)
                    .then_some((r.id.clone(), "its detached wait ended"))
            } else {
                let abandoned = st.watches.get(&r.id).is_none_or(|w| w.abandoned(grace));
                abandoned.then_some((r.id.clone(), "its waiting client went away"))
            }
        })
        .collect();
    for (id, why) in gone {
        tracing::info!(request = id, "withdrawing the request: {why}");
        st.requests.remove(&id);
        st.watches.remove(&id);
        fx.tx.drop_request(&id);
        fx.event(FarmEvent::Request(id));
    }
    let claim_ms = nvme_spec::units::millis(claim_timeout);
    let unclaimed: Vec<Lease> = st
        .leases
        .values()
        .filter(|l| {
            l.kind == LeaseKind::Reservation
                && !l.claimed
                && l.granted_ms.saturating_add(claim_ms) <= now
        })
        .cloned()
        .collect();
    for l in unclaimed {
        tracing::info!(
            lease = l.id,
            rig = l.rig,
            holder = l.holder,
            "releasing a reservation nobody claimed"
        );
        drop_reservation(st, &l, &mut fx.tx);
        fx.event(FarmEvent::Rig(l.rig.clone()));
    }
}

/// Ends reservations whose time is up.
fn expire_reservations(st: &mut State, now: u64, fx: &mut Effects) {
    let expired: Vec<Lease> = st
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
        drop_reservation(st, &l, &mut fx.tx);
        fx.event(FarmEvent::Rig(l.rig.clone()));
    }
}

/// Ends jobs past their overall timeout (queueing included); a running one's agent is told to stop.
fn time_out_jobs(st: &mut State, stop_grace: Duration, now: u64, fx: &mut Effects) {
    let timed_out: Vec<String> = st
        .jobs
        .values()
        .filter(|j| {
            !j.state.is_terminal()
                && j.timeout_ms > 0
                && now > j.created_ms.saturating_add(j.timeout_ms)
        })
        .map(|j| j.id.clone())
        .collect();
    for id in timed_out {
        let Some(job) = st.jobs.get(&id).cloned() else {
            continue;
        };
        let what = if job.state == JobState::Queued {
            "no rig became free within the job timeout of"
        } else {
            "job timeout exceeded:"
        };
        let msg = format!(
            "{what} {}",
            humantime::format_duration(Duration::from_millis(job.timeout_ms))
        );
        stop(
            st,
            &id,
            JobState::TimedOut,
            msg,
            now,
            now.saturating_add(stop_grace.as_millis() as u64),
            fx,
        );
    }
}

/// Frees the rigs of stopped jobs whose agent did not confirm within the grace period (after a health check).
fn give_up_on_stops(st: &mut State, now: u64, fx: &mut Effects) {
    let overdue: Vec<String> = st
        .leases
        .values()
        .filter(|l| l.stopping.is_some() && l.expires_ms <= now)
        .filter_map(|l| l.job_id.clone())
        .collect();
    for job in overdue {
        tracing::warn!(
            job,
            "its agent did not confirm the job stopped in time; the rig gets a health check"
        );
        give_up(st, &job, now, fx);
    }
}

/// The earliest time (Unix ms) any of the tick's deadlines falls due: a reservation's end, an unclaimed grant's
/// claim timeout, a detached request's wait, an unwatched request's grace, a job lease whose agent never came
/// back after a restart, a job's timeout, a stop's grace. `u64::MAX` when nothing is pending.
fn next_deadline(st: &State, grace: Duration, claim_timeout: Duration, now: u64) -> u64 {
    let mut due = u64::MAX;
    let claim_ms = nvme_spec::units::millis(claim_timeout);
    for l in st.leases.values() {
        if l.stopping.is_some() {
            due = due.min(l.expires_ms);
            continue;
        }
        match l.kind {
            LeaseKind::Reservation => {
                due = due.min(l.expires_ms);
                if !l.claimed {
                    due = due.min(l.granted_ms.saturating_add(claim_ms));
                }
            }
            LeaseKind::Job => {
                // A connected agent's job leases are renewed by its heartbeats; silence is watched per agent.
                let agent = st.agent_of(&l.rig).unwrap_or_default();
                if l.expires_ms > 0 && !st.agents.contains_key(&agent) {
                    due = due.min(l.expires_ms);
                }
            }
        }
    }
    for r in st.requests.values().filter(|r| r.job_id.is_none()) {
        if r.detached {
            if r.expires_ms > 0 {
                due = due.min(r.expires_ms);
            }
            continue;
        }
        match st.watches.get(&r.id) {
            None => due = due.min(now),
            Some(w) if w.count == 0 => {
                let left = grace.saturating_sub(w.idle_since.elapsed());
                due = due.min(now.saturating_add(nvme_spec::units::millis(left)));
            }
            Some(_) => {}
        }
    }
    for j in st.jobs.values() {
        if !j.state.is_terminal() && j.timeout_ms > 0 {
            // Timed out once strictly past it.
            due = due.min(j.created_ms.saturating_add(j.timeout_ms).saturating_add(1));
        }
    }
    due
}

impl Farm {
    /// Periodic work: silent agents (every time: one check per agent); then, only once a deadline is due or a
    /// change touched one, expired reservations, abandoned requests, job timeouts, unconfirmed stops; then
    /// scheduling (every 30 s over every free rig, as a backstop). Returns whether it looked at the deadlines.
    pub async fn tick(&self) -> Result<bool, FarmError> {
        let mut st = self.lock().await?;
        let now = now_ms();
        let mut fx = Effects::default();
        lose_silent_agents(
            &mut st,
            self.cfg.agent_timeout,
            self.cfg.stop_grace,
            now,
            &mut fx,
        );
        let all = st
            .full_pass_at
            .is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY);
        if all {
            st.full_pass_at = Some(std::time::Instant::now());
        }
        let due = all || now >= st.next_due_ms;
        if due {
            expire_reservations(&mut st, now, &mut fx);
            drop_abandoned(
                &mut st,
                self.cfg.watch_grace,
                self.cfg.claim_timeout,
                now,
                &mut fx,
            );
            expire_job_leases(&mut st, self.cfg.restart_grace, now, &mut fx);
            time_out_jobs(&mut st, self.cfg.stop_grace, now, &mut fx);
            give_up_on_stops(&mut st, now, &mut fx);
        }
        self.reschedule_in(st, fx, all).await?;
        if due {
            // From the state as it is now (a commit may have reset it; this is the fresh answer).
            let mut st = self.lock().await?;
            st.next_due_ms =
                next_deadline(&st, self.cfg.watch_grace, self.cfg.claim_timeout, now_ms());
        }
        Ok(due)
    }
}
