//! Agent sessions: connecting, registering (rigs, and reconciliation of the jobs the agent holds), heartbeats,
//! progress, results, refusals, and disconnecting. Messages for an agent go out only after the change that
//! produced them is stored.

use std::time::Instant;

use tokio::sync::mpsc;

use nvfarm_model::farm::{JobState, Rig, RigState};
use nvfarm_model::link::{Heartbeat, JobProgress, JobResult, Refusal, Registration, ToAgent};
use nvfarm_model::time::now_ms;
use nvfarm_model::LogLine;

use super::jobs::{
    apply_result, finish, give_up, hold_abandoned, record_drive, record_steps, settle, stopping,
};
use super::leases::assignment;
use super::state::AgentSession;
use super::{Effects, Farm, FarmError, FarmEvent};

/// Where a session's messages to its agent go.
pub type AgentSender = mpsc::UnboundedSender<ToAgent>;

impl Farm {
    /// A new agent connection; returns its connection number (a reconnect supersedes the older one).
    pub async fn agent_connected(&self, agent: &str, tx: AgentSender) -> u64 {
        let mut st = self.state.lock().await;
        st.next_conn += 1;
        let conn = st.next_conn;
        st.agents.insert(
            agent.to_string(),
            AgentSession {
                conn,
                tx,
                last_heartbeat: Instant::now(),
                lost: false,
            },
        );
        conn
    }

    /// Registration: the agent's rigs, and reconciliation of the jobs it reports. `Registered` is the first
    /// message on the connection, ahead of any assignment this registration makes possible.
    pub async fn agent_register(
        &self,
        agent: &str,
        conn: u64,
        reg: Registration,
    ) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        let now = now_ms();
        let mut fx = Effects::default();
        if st.agents.get(agent).is_none_or(|s| s.conn != conn) {
            return Err(FarmError::Superseded(
                "superseded by a newer connection of the same agent".into(),
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
            fx.tx.meta("fencing", st.fencing);
        }
        let names: Vec<String> = reg.rigs.iter().map(|r| r.name.clone()).collect();
        for r in &reg.rigs {
            // A rig belongs to the agent that first registered it, or the one the config names; moving it is an
            // admin's act (`farmctl rig move`), never a side effect of another agent registering it.
            let named = self.cfg.rig_owners.get(&r.name);
            if let Some(owner) = named.filter(|o| *o != agent) {
                return Err(FarmError::Conflict(format!(
                    "rig {} belongs to agent {owner} (the controller's config, rigs.owners); agent {agent} may not register it",
                    r.name
                )));
            }
            if let Some(other) = st
                .rigs
                .get(&r.name)
                .filter(|x| x.agent != agent && named.is_none())
            {
                return Err(FarmError::Conflict(format!(
                    "rig {} belongs to agent {}, which registered it first; an admin can move it: farmctl rig move {} --to {agent}",
                    r.name, other.agent, r.name
                )));
            }
            let rec = st
                .rigs
                .entry(r.name.clone())
                .or_insert_with(|| Rig::new(&r.name, agent, now));
            rec.agent = agent.to_string();
            rec.labels = r.labels.clone();
            if !r.probing {
                rec.drive_serial = r.drive_serial.clone();
                rec.drive_model = r.drive_model.clone();
                if !r.firmware_revision.is_empty() {
                    rec.firmware_revision = r.firmware_revision.clone();
                }
            }
            rec.last_seen_ms = now;
            if matches!(rec.state, RigState::Offline | RigState::Probing) {
                rec.state = if rec.lease_id.is_some() {
                    RigState::Leased
                } else if r.probing {
                    // Listed at once; it takes work once its identity arrives ([`Farm::agent_identity`]).
                    RigState::Probing
                } else {
                    RigState::Idle
                };
                rec.reason.clear();
            }
            fx.tx.rig(rec);
            fx.event(FarmEvent::Rig(r.name.clone()));
        }
        // Rigs this agent had before but no longer lists.
        let gone: Vec<String> = st
            .rigs
            .values()
            .filter(|r| r.agent == agent && !names.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        for g in gone {
            if let Some(r) = st.rigs.get_mut(&g) {
                if r.state != RigState::Quarantined {
                    r.state = RigState::Offline;
                    r.reason = format!("no longer in agent {agent}'s rig file");
                    fx.tx.rig(r);
                }
            }
        }
        if let Some(s) = st.agents.get_mut(agent) {
            s.last_heartbeat = Instant::now();
        }
        // Reconcile jobs (a finished one it still reports is read back from the store for the purpose).
        for j in &reg.jobs {
            self.page_in(&mut st, &j.job_id)?;
        }
        let mut abandon = vec![];
        let mut reported_running = vec![];
        let grace = now.saturating_add(self.cfg.agent_timeout.as_millis() as u64);
        let hold_until = now.saturating_add(nvme_spec::units::millis(self.cfg.stop_grace));
        for j in &reg.jobs {
            if !st.owns_job(agent, &j.job_id) {
                abandon.push(j.job_id.clone());
                continue;
            }
            let current = st
                .jobs
                .get(&j.job_id)
                .filter(|job| !job.state.is_terminal() && job.fencing_token == j.fencing_token)
                .cloned();
            if stopping(&st, &j.job_id, j.fencing_token) {
                // We stopped it; the agent either finished stopping while disconnected or is still at it.
                match &j.result {
                    Some(result) => {
                        record_drive(&mut st, result, &mut fx);
                        settle(&mut st, &j.job_id, Some(result.steps.clone()), now, &mut fx);
                        fx.send(agent, stored(&j.job_id));
                    }
                    None => {
                        reported_running.push(j.job_id.clone());
                        fx.send(
                            agent,
                            ToAgent::Cancel {
                                job_id: j.job_id.clone(),
                                fencing_token: j.fencing_token,
                            },
                        );
                    }
                }
                continue;
            }
            match (&j.result, current) {
                (Some(result), Some(_)) => {
                    apply_result(&mut st, result, now, &mut fx);
                    fx.send(agent, stored(&j.job_id));
                }
                (Some(_), None) => {
                    // Already decided (e.g. it timed out or was cancelled meanwhile) or fenced off: keep ours.
                    fx.send(agent, stored(&j.job_id));
                }
                (None, Some(job)) => {
                    reported_running.push(job.id.clone());
                    if let Some(l) = job.lease_id.as_ref().and_then(|l| st.leases.get_mut(l)) {
                        l.expires_ms = grace;
                    }
                }
                (None, None) => {
                    // Decided and let go while the agent was away, yet still running there: abandoned, and
                    // its rig held until the agent confirms it stopped.
                    hold_abandoned(
                        &mut st,
                        &j.job_id,
                        j.fencing_token,
                        now,
                        hold_until,
                        &mut fx,
                    );
                    abandon.push(j.job_id.clone());
                }
            }
        }
        // Jobs we think run on this agent's rigs but it does not report.
        let ours: Vec<(String, JobState)> = st
            .jobs
            .values()
            .filter(|j| {
                !j.state.is_terminal()
                    && j.rig.as_ref().is_some_and(|r| names.contains(r))
                    && j.lease_id.is_some()
                    && !reported_running.contains(&j.id)
            })
            .map(|j| (j.id.clone(), j.state))
            .collect();
        // Jobs we stopped on this agent's rigs that it no longer has: it restarted before confirming.
        let lost_stops: Vec<String> = st
            .leases
            .values()
            .filter(|l| l.stopping.is_some() && names.contains(&l.rig))
            .filter_map(|l| l.job_id.clone())
            .filter(|j| !reported_running.contains(j))
            .collect();
        for job in lost_stops {
            give_up(&mut st, &job, now, &mut fx);
        }
        for (job, state) in ours {
            if state == JobState::Assigned {
                if let Some(msg) = assignment(&st, &job, now) {
                    fx.send(agent, msg);
                }
            } else {
                finish(
                    &mut st,
                    &job,
                    JobState::Error,
                    format!("agent {agent} reconnected without this job (it restarted while running it)"),
                    None,
                    now,
                    &mut fx,
                );
            }
        }
        tracing::info!(
            agent,
            rigs = names.len(),
            running = reported_running.len(),
            abandoned = abandon.len(),
            "agent registered"
        );
        fx.out.insert(
            0,
            (
                agent.to_string(),
                ToAgent::Registered {
                    heartbeat_ms: self.cfg.heartbeat_interval.as_millis() as u64,
                    abandon_job_ids: abandon,
                },
            ),
        );
        self.reschedule(st, fx).await
    }

    /// A rig's drive identity, probed after registration: recorded, and a probing rig becomes idle (able to
    /// take work) whether or not its drive answered; one that did not answer says so in its reason.
    pub async fn agent_identity(
        &self,
        agent: &str,
        conn: u64,
        id: nvfarm_model::link::RigIdentity,
    ) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        if st.agents.get(agent).is_none_or(|s| s.conn != conn) || !st.alive(agent) {
            return Ok(());
        }
        let Some(rec) = st.rigs.get_mut(&id.rig).filter(|r| r.agent == agent) else {
            tracing::warn!(
                agent,
                rig = id.rig,
                "ignoring the identity of a rig this agent does not own"
            );
            return Ok(());
        };
        rec.drive_serial = id.drive_serial;
        rec.drive_model = id.drive_model;
        if !id.firmware_revision.is_empty() {
            rec.firmware_revision = id.firmware_revision;
        }
        if rec.state == RigState::Probing {
            rec.state = RigState::Idle;
            rec.reason = if id.answered {
                String::new()
            } else {
                "its drive did not answer the identity probe at registration".into()
            };
        }
        let mut fx = Effects::default();
        fx.tx.rig(rec);
        fx.event(FarmEvent::Rig(id.rig.clone()));
        self.reschedule(st, fx).await
    }

    /// A heartbeat: the agent lives, and the leases of the jobs it runs are renewed.
    pub async fn agent_heartbeat(&self, agent: &str, conn: u64, hb: &Heartbeat) {
        let mut st = self.state.lock().await;
        let now = now_ms();
        if st.agents.get(agent).is_none_or(|s| s.conn != conn) || !st.alive(agent) {
            return;
        }
        let expires = now.saturating_add(self.cfg.agent_timeout.as_millis() as u64);
        for j in &hb.running_job_ids {
            if !st.owns_job(agent, j) {
                continue;
            }
            if let Some(lease) = st.jobs.get(j).and_then(|j| j.lease_id.clone()) {
                // A stopping job keeps its deadline: being alive is not confirming the stop.
                if let Some(l) = st.leases.get_mut(&lease).filter(|l| l.stopping.is_none()) {
                    l.expires_ms = expires;
                }
            }
        }
    }

    /// A running job's progress: log lines (up to the job's log cap), its phase, the steps that ended. A job
    /// stopped by the controller still takes its agent's lines and steps until the agent confirms the stop.
    pub async fn agent_progress(&self, agent: &str, p: JobProgress) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        if !st.alive(agent) {
            return Ok(());
        }
        self.page_in(&mut st, &p.job_id)?;
        if !st.owns_job(agent, &p.job_id) {
            tracing::warn!(
                agent,
                job = p.job_id,
                "ignoring progress for a job on a rig this agent does not own"
            );
            return Ok(());
        }
        let cap = self.cfg.job_log_cap;
        let used = st.log_bytes.get(&p.job_id).copied().unwrap_or(0);
        let Some(job) = st.jobs.get_mut(&p.job_id) else {
            return Ok(());
        };
        if job.fencing_token != p.fencing_token || (job.state.is_terminal() && job.settled) {
            return Ok(()); // fenced off or already decided
        }
        let mut fx = Effects::default();
        let (lines, used) = within_cap(p.lines, used, cap);
        if !lines.is_empty() {
            let first = job.log_lines;
            if let Err(e) = self.store.apply_logs(&p.job_id, first, &lines, used) {
                return Err(self.apply_failed(&mut st, e));
            }
            fx.tx.flush_too();
            job.log_lines += lines.len() as u64;
            fx.event(FarmEvent::Log(p.job_id.clone()));
        }
        if let Some(s) = p.phase {
            if matches!(s, JobState::Flashing | JobState::Testing)
                && s != job.state
                && !job.state.is_terminal()
            {
                job.state = s;
                fx.tx.job(job);
                fx.event(FarmEvent::Job(job.id.clone()));
            }
        }
        if !p.steps.is_empty() {
            record_steps(job, p.steps, &mut fx.tx);
            fx.event(FarmEvent::Job(job.id.clone()));
        }
        st.log_bytes.insert(p.job_id, used);
        self.commit(st, fx).await
    }

    /// A job's result; stored if it is the current job, confirmed to the agent either way.
    pub async fn agent_result(&self, agent: &str, r: JobResult) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        if !st.alive(agent) {
            return Ok(()); // it registers again and reports the result then
        }
        self.page_in(&mut st, &r.job_id)?;
        if !st.owns_job(agent, &r.job_id) {
            tracing::warn!(
                agent,
                job = r.job_id,
                "ignoring a result for a job on a rig this agent does not own"
            );
            return Ok(());
        }
        let now = now_ms();
        let mut fx = Effects::default();
        fx.event(FarmEvent::Job(r.job_id.clone()));
        let current = st
            .jobs
            .get(&r.job_id)
            .is_some_and(|j| !j.state.is_terminal() && j.fencing_token == r.fencing_token);
        if current {
            apply_result(&mut st, &r, now, &mut fx);
        } else if stopping(&st, &r.job_id, r.fencing_token) {
            tracing::info!(agent, job = r.job_id, "the agent confirmed the job stopped");
            record_drive(&mut st, &r, &mut fx);
            settle(&mut st, &r.job_id, Some(r.steps.clone()), now, &mut fx);
        } else {
            tracing::info!(
                agent,
                job = r.job_id,
                token = r.fencing_token,
                "result for a job that is decided or fenced off; keeping the stored outcome"
            );
        }
        fx.send(agent, stored(&r.job_id));
        self.reschedule(st, fx).await
    }

    /// The agent refused an assignment: the job ends as an infrastructure error.
    pub async fn agent_refused(&self, agent: &str, r: Refusal) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        if !st.alive(agent) {
            return Ok(());
        }
        self.page_in(&mut st, &r.job_id)?;
        if !st.owns_job(agent, &r.job_id) {
            return Ok(());
        }
        let current = st
            .jobs
            .get(&r.job_id)
            .is_some_and(|j| !j.state.is_terminal() && j.fencing_token == r.fencing_token);
        let mut fx = Effects::default();
        if current {
            finish(
                &mut st,
                &r.job_id,
                JobState::Error,
                format!("agent {agent} refused the job: {}", r.reason),
                None,
                now_ms(),
                &mut fx,
            );
        } else if stopping(&st, &r.job_id, r.fencing_token) {
            // Stopped before it started: nothing ran, the rig is free.
            settle(&mut st, &r.job_id, None, now_ms(), &mut fx);
        }
        self.reschedule(st, fx).await
    }

    /// The agent's stream closed. The session stays until its heartbeats time out: a quick reconnect keeps
    /// running jobs alive.
    pub async fn agent_disconnected(&self, agent: &str, conn: u64) {
        let mut st = self.state.lock().await;
        if let Some(s) = st.agents.get_mut(agent).filter(|s| s.conn == conn) {
            tracing::info!(agent, "agent stream closed; waiting for it to reconnect");
            let (tx, _) = mpsc::unbounded_channel();
            s.tx = tx;
        }
    }
}

fn stored(job_id: &str) -> ToAgent {
    ToAgent::Stored {
        job_id: job_id.to_string(),
    }
}

/// The lines that fit in a job's log of `cap` bytes with `used` taken, and the new total. The first line that
/// does not fit is replaced by one saying the log was truncated; nothing is kept after it.
fn within_cap(lines: Vec<LogLine>, used: u64, cap: u64) -> (Vec<LogLine>, u64) {
    if used >= cap {
        return (vec![], used);
    }
    let mut total = used;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let n = l.text.len() as u64 + 1;
        if total + n > cap {
            out.push(LogLine {
                step: l.step,
                text: format!(
                    "[log truncated: this job's stored log reached the controller's limit of {cap} bytes (limits.job_log); later lines were dropped]"
                ),
            });
            return (out, cap);
        }
        total += n;
        out.push(l);
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            step: 3,
            text: text.into(),
        }
    }

    #[test]
    fn a_job_log_stops_at_its_cap_with_one_line_saying_so() {
        let (kept, used) = within_cap(vec![line("aaaa"), line("bbbb")], 0, 100);
        assert_eq!((kept.len(), used), (2, 10));
        let (kept, used) = within_cap(
            vec![line("cccc"), line(&"d".repeat(200)), line("e")],
            10,
            100,
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].text, "cccc");
        assert!(
            kept[1].text.starts_with("[log truncated"),
            "{}",
            kept[1].text
        );
        assert_eq!(kept[1].step, 3);
        assert_eq!(used, 100);
        let (kept, _) = within_cap(vec![line("f")], used, 100);
        assert!(kept.is_empty(), "nothing after the marker");
    }
}
