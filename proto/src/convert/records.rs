//! The farm's records on the wire: selectors, leases, rigs, jobs, queue entries, sweeps and their reports.

use nvfarm_model::farm::{
    Job, Lease, LeaseKind, Priority, QueueEntry, Request, Rig, RigStatus, Selector, SkippedRig,
    Sweep, SweepCell, SweepReport,
};

use super::{
    bad, change, change_pb, job_state_opt, job_state_pb, map, opt, outcome_opt, outcome_pb,
    priority, priority_pb, rig_state, rig_state_pb, slots, slots_pb, steps, sweep_outcome,
    sweep_outcome_pb, WireError,
};
use crate::v1 as pb;

impl From<&Selector> for pb::Selector {
    fn from(s: &Selector) -> Self {
        pb::Selector {
            rig: s.rig.clone().unwrap_or_default(),
            labels: s.labels.clone().into_iter().collect(),
        }
    }
}

impl From<pb::Selector> for Selector {
    fn from(s: pb::Selector) -> Self {
        Selector {
            rig: opt(s.rig),
            labels: map(s.labels),
        }
    }
}

/// A selector from an optional wire field (absent = any rig).
pub fn selector(s: Option<pb::Selector>) -> Selector {
    s.map(Selector::from).unwrap_or_default()
}

impl From<&Lease> for pb::Lease {
    fn from(l: &Lease) -> Self {
        pb::Lease {
            id: l.id.clone(),
            rig: l.rig.clone(),
            holder: l.holder.clone(),
            fencing_token: l.fencing_token,
            granted_ms: l.granted_ms,
            expires_ms: l.expires_ms,
            kind: match l.kind {
                LeaseKind::Reservation => "reservation".into(),
                LeaseKind::Job => "job".into(),
            },
            job_id: l.job_id.clone().unwrap_or_default(),
            stopping: l.stopping.clone().unwrap_or_default(),
            request_id: l.request_id.clone().unwrap_or_default(),
            claimed: l.claimed,
        }
    }
}

impl TryFrom<pb::Lease> for Lease {
    type Error = WireError;
    fn try_from(l: pb::Lease) -> Result<Self, WireError> {
        Ok(Lease {
            kind: match l.kind.as_str() {
                "reservation" => LeaseKind::Reservation,
                "job" => LeaseKind::Job,
                other => {
                    return Err(bad(
                        "Lease.kind",
                        format!("'{other}': expected reservation or job"),
                    ))
                }
            },
            id: l.id,
            rig: l.rig,
            holder: l.holder,
            fencing_token: l.fencing_token,
            job_id: opt(l.job_id),
            granted_ms: l.granted_ms,
            expires_ms: l.expires_ms,
            stopping: opt(l.stopping),
            request_id: opt(l.request_id),
            claimed: l.claimed,
        })
    }
}

impl From<&RigStatus> for pb::Rig {
    fn from(s: &RigStatus) -> Self {
        let r = &s.rig;
        pb::Rig {
            name: r.name.clone(),
            agent: r.agent.clone(),
            labels: r.labels.clone().into_iter().collect(),
            state: rig_state_pb(r.state) as i32,
            drive_serial: r.drive_serial.clone(),
            drive_model: r.drive_model.clone(),
            firmware_revision: r.firmware_revision.clone(),
            reason: r.reason.clone(),
            lease_id: r.lease_id.clone().unwrap_or_default(),
            holder: s
                .lease
                .as_ref()
                .map(|l| l.holder.clone())
                .unwrap_or_default(),
            lease_expires_ms: s
                .lease
                .as_ref()
                .filter(|l| l.kind == LeaseKind::Reservation)
                .map(|l| l.expires_ms)
                .unwrap_or(0),
            consecutive_infra_errors: r.consecutive_infra_errors,
            health_check_pending: r.health_check_pending,
            lease: s.lease.as_ref().map(pb::Lease::from),
            last_seen_ms: r.last_seen_ms,
            active_slot: r.active_slot as u32,
            firmware_slots: slots_pb(&r.firmware_slots),
        }
    }
}

impl TryFrom<pb::Rig> for RigStatus {
    type Error = WireError;
    fn try_from(r: pb::Rig) -> Result<Self, WireError> {
        Ok(RigStatus {
            rig: Rig {
                state: rig_state(r.state)?,
                name: r.name,
                agent: r.agent,
                labels: map(r.labels),
                drive_serial: r.drive_serial,
                drive_model: r.drive_model,
                firmware_revision: r.firmware_revision,
                reason: r.reason,
                lease_id: opt(r.lease_id),
                consecutive_infra_errors: r.consecutive_infra_errors,
                health_check_pending: r.health_check_pending,
                last_seen_ms: r.last_seen_ms,
                active_slot: u8::try_from(r.active_slot).map_err(|_| {
                    bad(
                        "Rig.active_slot",
                        format!("{} is not a slot", r.active_slot),
                    )
                })?,
                firmware_slots: slots(r.firmware_slots),
            },
            lease: r.lease.map(Lease::try_from).transpose()?,
        })
    }
}

impl From<&Job> for pb::Job {
    fn from(j: &Job) -> Self {
        pb::Job {
            id: j.id.clone(),
            state: job_state_pb(j.state) as i32,
            rig: j.rig.clone().unwrap_or_default(),
            drive_model: j.drive_model.clone(),
            selector: Some(pb::Selector::from(&j.selector)),
            plan_name: j.plan_name.clone(),
            artifact_sha256: j.artifact_sha256.clone(),
            firmware_name: j.firmware_name.clone(),
            firmware_revision: j.firmware_revision.clone(),
            priority: priority_pb(j.priority) as i32,
            submitter: j.submitter.clone(),
            created_ms: j.created_ms,
            started_ms: j.started_ms,
            finished_ms: j.finished_ms,
            timeout_ms: j.timeout_ms,
            message: j.message.clone(),
            steps: j.steps.iter().map(pb::StepResult::from).collect(),
            lease_id: j.lease_id.clone().unwrap_or_default(),
            fencing_token: j.fencing_token,
            sweep_id: j.sweep_id.clone().unwrap_or_default(),
            attempt: j.attempt,
            plan_toml: j.plan_toml.clone(),
            health_check: j.health_check,
            log_lines: j.log_lines,
            settled: j.settled,
        }
    }
}

impl TryFrom<pb::Job> for Job {
    type Error = WireError;
    fn try_from(j: pb::Job) -> Result<Self, WireError> {
        Ok(Job {
            state: job_state_opt(j.state, "Job.state")?
                .ok_or_else(|| bad("Job.state", "missing (unspecified)"))?,
            priority: priority(j.priority, "Job.priority")?.unwrap_or(Priority::Ci),
            steps: steps(j.steps)?,
            id: j.id,
            rig: opt(j.rig),
            drive_model: j.drive_model,
            selector: selector(j.selector),
            plan_name: j.plan_name,
            plan_toml: j.plan_toml,
            artifact_sha256: j.artifact_sha256,
            firmware_name: j.firmware_name,
            firmware_revision: j.firmware_revision,
            submitter: j.submitter,
            created_ms: j.created_ms,
            started_ms: j.started_ms,
            finished_ms: j.finished_ms,
            timeout_ms: j.timeout_ms,
            message: j.message,
            lease_id: opt(j.lease_id),
            fencing_token: j.fencing_token,
            sweep_id: opt(j.sweep_id),
            attempt: j.attempt,
            health_check: j.health_check,
            log_lines: j.log_lines,
            settled: j.settled,
        })
    }
}

impl From<&QueueEntry> for pb::QueueEntry {
    fn from(e: &QueueEntry) -> Self {
        let r = &e.request;
        pb::QueueEntry {
            request_id: r.id.clone(),
            position: e.position,
            priority: priority_pb(r.priority) as i32,
            selector: Some(pb::Selector::from(&r.selector)),
            holder: r.holder.clone(),
            created_ms: r.created_ms,
            job_id: r.job_id.clone().unwrap_or_default(),
            waiting_because: e.waiting_because.clone(),
            duration_ms: r.duration_ms,
            detached: r.detached,
            expires_ms: r.expires_ms,
        }
    }
}

impl TryFrom<pb::QueueEntry> for QueueEntry {
    type Error = WireError;
    fn try_from(e: pb::QueueEntry) -> Result<Self, WireError> {
        Ok(QueueEntry {
            position: e.position,
            request: Request {
                priority: priority(e.priority, "QueueEntry.priority")?.unwrap_or(Priority::Ci),
                id: e.request_id,
                selector: selector(e.selector),
                holder: e.holder,
                created_ms: e.created_ms,
                duration_ms: e.duration_ms,
                job_id: opt(e.job_id),
                detached: e.detached,
                expires_ms: e.expires_ms,
            },
            waiting_because: e.waiting_because,
        })
    }
}

/// A sweep on the wire, with whether every job of it has ended.
pub fn sweep_pb(s: &Sweep, done: bool) -> pb::Sweep {
    pb::Sweep {
        id: s.id.clone(),
        name: s.name.clone(),
        job_ids: s.job_ids.clone(),
        created_ms: s.created_ms,
        done,
        previous_sweep_id: s.previous.clone().unwrap_or_default(),
        labels: s.labels.clone().into_iter().collect(),
        retries: s.retries,
        plan_name: s.plan_name.clone(),
        submitter: s.submitter.clone(),
        skipped: s
            .skipped
            .iter()
            .map(|k| pb::SkippedRig {
                rig: k.rig.clone(),
                reason: k.reason.clone(),
            })
            .collect(),
    }
}

impl From<pb::Sweep> for Sweep {
    fn from(s: pb::Sweep) -> Self {
        Sweep {
            id: s.id,
            name: s.name,
            labels: map(s.labels),
            job_ids: s.job_ids,
            created_ms: s.created_ms,
            previous: opt(s.previous_sweep_id),
            retries: s.retries,
            plan_name: s.plan_name,
            submitter: s.submitter,
            skipped: s
                .skipped
                .into_iter()
                .map(|k| SkippedRig {
                    rig: k.rig,
                    reason: k.reason,
                })
                .collect(),
        }
    }
}

impl From<&SweepReport> for pb::SweepReport {
    fn from(r: &SweepReport) -> Self {
        pb::SweepReport {
            sweep: Some(sweep_pb(&r.sweep, r.done)),
            rigs: r.rigs.clone(),
            steps: r.steps.clone(),
            cells: r
                .cells
                .iter()
                .map(|c| pb::SweepCell {
                    rig: c.rig.clone(),
                    step: c.step.clone(),
                    outcome: c
                        .outcome
                        .map(outcome_pb)
                        .unwrap_or(pb::Outcome::Unspecified) as i32,
                    previous_outcome: c
                        .previous_outcome
                        .map(outcome_pb)
                        .unwrap_or(pb::Outcome::Unspecified)
                        as i32,
                    change: change_pb(c.change) as i32,
                    detail: c.detail.clone(),
                })
                .collect(),
            jobs: r.jobs.iter().map(pb::Job::from).collect(),
            outcome: sweep_outcome_pb(r.outcome) as i32,
        }
    }
}

impl TryFrom<pb::SweepReport> for SweepReport {
    type Error = WireError;
    fn try_from(r: pb::SweepReport) -> Result<Self, WireError> {
        let sweep = r.sweep.ok_or_else(|| bad("SweepReport.sweep", "missing"))?;
        Ok(SweepReport {
            done: sweep.done,
            sweep: Sweep::from(sweep),
            rigs: r.rigs,
            steps: r.steps,
            cells: r
                .cells
                .into_iter()
                .map(|c| {
                    Ok(SweepCell {
                        outcome: outcome_opt(c.outcome, "SweepCell.outcome")?,
                        previous_outcome: outcome_opt(
                            c.previous_outcome,
                            "SweepCell.previous_outcome",
                        )?,
                        change: change(c.change)?,
                        rig: c.rig,
                        step: c.step,
                        detail: c.detail,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            jobs: r
                .jobs
                .into_iter()
                .map(Job::try_from)
                .collect::<Result<_, _>>()?,
            outcome: sweep_outcome(r.outcome)?,
        })
    }
}
