//! Conversions between the wire messages and `nvfarm-model`'s types: `From<&model>` to build a message,
//! `TryFrom<message>` to read one. Reading checks every enum and required field and names what is wrong, so a
//! malformed or hostile message becomes a [`WireError`], never a panic or a silently defaulted value.

use std::collections::BTreeMap;

use nvfarm_model::farm::{
    Change, Job, JobState, Lease, LeaseKind, Priority, QueueEntry, Request, Rig, RigState,
    RigStatus, Selector, Sweep, SweepCell, SweepOutcome, SweepReport,
};
use nvfarm_model::link::{
    AgentRig, Assignment, FromAgent, Heartbeat, HeldJob, JobProgress, JobResult, Refusal,
    Registration, ToAgent,
};
use nvfarm_model::{LogLine, Outcome, StepReport};

use crate::v1 as pb;

/// A message that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct WireError {
    /// `Message.field`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError {
        field,
        reason: reason.into(),
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn map<K: Ord, V>(m: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    m.into_iter().collect()
}

// ----- enums ----------------------------------------------------------------------------------------------

/// The wire value of an outcome.
pub fn outcome_pb(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Passed => pb::Outcome::Passed,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::Error => pb::Outcome::Error,
        Outcome::TimedOut => pb::Outcome::TimedOut,
        Outcome::Skipped => pb::Outcome::Skipped,
        Outcome::Cancelled => pb::Outcome::Cancelled,
    }
}

/// An outcome from the wire; `None` for unspecified (e.g. a sweep cell whose step did not run).
pub fn outcome_opt(v: i32, field: &'static str) -> Result<Option<Outcome>, WireError> {
    Ok(Some(
        match pb::Outcome::try_from(v).map_err(|_| bad(field, format!("unknown outcome {v}")))? {
            pb::Outcome::Unspecified => return Ok(None),
            pb::Outcome::Passed => Outcome::Passed,
            pb::Outcome::Failed => Outcome::Failed,
            pb::Outcome::Error => Outcome::Error,
            pb::Outcome::TimedOut => Outcome::TimedOut,
            pb::Outcome::Skipped => Outcome::Skipped,
            pb::Outcome::Cancelled => Outcome::Cancelled,
        },
    ))
}

/// A required outcome from the wire.
pub fn outcome(v: i32, field: &'static str) -> Result<Outcome, WireError> {
    outcome_opt(v, field)?.ok_or_else(|| bad(field, "missing (unspecified)"))
}

/// The wire value of a priority.
pub fn priority_pb(p: Priority) -> pb::Priority {
    match p {
        Priority::Nightly => pb::Priority::Nightly,
        Priority::Ci => pb::Priority::Ci,
        Priority::Interactive => pb::Priority::Interactive,
        Priority::System => pb::Priority::System,
    }
}

/// A priority from the wire; `None` for unspecified (the caller picks the default).
pub fn priority(v: i32, field: &'static str) -> Result<Option<Priority>, WireError> {
    Ok(Some(
        match pb::Priority::try_from(v).map_err(|_| bad(field, format!("unknown priority {v}")))? {
            pb::Priority::Unspecified => return Ok(None),
            pb::Priority::Nightly => Priority::Nightly,
            pb::Priority::Ci => Priority::Ci,
            pb::Priority::Interactive => Priority::Interactive,
            pb::Priority::System => Priority::System,
        },
    ))
}

/// The wire value of a job state.
pub fn job_state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::JobQueued,
        JobState::Assigned => pb::JobState::JobAssigned,
        JobState::Flashing => pb::JobState::JobFlashing,
        JobState::Testing => pb::JobState::JobTesting,
        JobState::Passed => pb::JobState::JobPassed,
        JobState::Failed => pb::JobState::JobFailed,
        JobState::Error => pb::JobState::JobError,
        JobState::TimedOut => pb::JobState::JobTimedOut,
        JobState::Cancelled => pb::JobState::JobCancelled,
    }
}

/// A job state from the wire; `None` for unspecified.
pub fn job_state_opt(v: i32, field: &'static str) -> Result<Option<JobState>, WireError> {
    Ok(Some(
        match pb::JobState::try_from(v).map_err(|_| bad(field, format!("unknown job state {v}")))? {
            pb::JobState::Unspecified => return Ok(None),
            pb::JobState::JobQueued => JobState::Queued,
            pb::JobState::JobAssigned => JobState::Assigned,
            pb::JobState::JobFlashing => JobState::Flashing,
            pb::JobState::JobTesting => JobState::Testing,
            pb::JobState::JobPassed => JobState::Passed,
            pb::JobState::JobFailed => JobState::Failed,
            pb::JobState::JobError => JobState::Error,
            pb::JobState::JobTimedOut => JobState::TimedOut,
            pb::JobState::JobCancelled => JobState::Cancelled,
        },
    ))
}

fn rig_state_pb(s: RigState) -> pb::RigState {
    match s {
        RigState::Idle => pb::RigState::RigIdle,
        RigState::Leased => pb::RigState::RigLeased,
        RigState::Offline => pb::RigState::RigOffline,
        RigState::Quarantined => pb::RigState::RigQuarantined,
        RigState::Maintenance => pb::RigState::RigMaintenance,
    }
}

fn rig_state(v: i32) -> Result<RigState, WireError> {
    let field = "Rig.state";
    Ok(
        match pb::RigState::try_from(v).map_err(|_| bad(field, format!("unknown rig state {v}")))? {
            pb::RigState::Unspecified => return Err(bad(field, "missing (unspecified)")),
            pb::RigState::RigIdle => RigState::Idle,
            pb::RigState::RigLeased => RigState::Leased,
            pb::RigState::RigOffline => RigState::Offline,
            pb::RigState::RigQuarantined => RigState::Quarantined,
            pb::RigState::RigMaintenance => RigState::Maintenance,
        },
    )
}

fn change_pb(c: Option<Change>) -> pb::Change {
    match c {
        None => pb::Change::None,
        Some(Change::NewFailure) => pb::Change::NewFailure,
        Some(Change::Fixed) => pb::Change::Fixed,
        Some(Change::StillFailing) => pb::Change::StillFailing,
        Some(Change::Flaky) => pb::Change::Flaky,
        Some(Change::Regressed) => pb::Change::Regressed,
    }
}

fn change(v: i32) -> Result<Option<Change>, WireError> {
    Ok(
        match pb::Change::try_from(v)
            .map_err(|_| bad("SweepCell.change", format!("unknown change {v}")))?
        {
            pb::Change::None => None,
            pb::Change::NewFailure => Some(Change::NewFailure),
            pb::Change::Fixed => Some(Change::Fixed),
            pb::Change::StillFailing => Some(Change::StillFailing),
            pb::Change::Flaky => Some(Change::Flaky),
            pb::Change::Regressed => Some(Change::Regressed),
        },
    )
}

fn sweep_outcome_pb(o: SweepOutcome) -> pb::SweepOutcome {
    match o {
        SweepOutcome::Running => pb::SweepOutcome::SweepRunning,
        SweepOutcome::Passed => pb::SweepOutcome::SweepPassed,
        SweepOutcome::Failed => pb::SweepOutcome::SweepFailed,
        SweepOutcome::Error => pb::SweepOutcome::SweepError,
    }
}

fn sweep_outcome(v: i32) -> Result<SweepOutcome, WireError> {
    let field = "SweepReport.outcome";
    Ok(
        match pb::SweepOutcome::try_from(v)
            .map_err(|_| bad(field, format!("unknown sweep outcome {v}")))?
        {
            pb::SweepOutcome::Unspecified => return Err(bad(field, "missing (unspecified)")),
            pb::SweepOutcome::SweepRunning => SweepOutcome::Running,
            pb::SweepOutcome::SweepPassed => SweepOutcome::Passed,
            pb::SweepOutcome::SweepFailed => SweepOutcome::Failed,
            pb::SweepOutcome::SweepError => SweepOutcome::Error,
        },
    )
}

// ----- steps and logs -------------------------------------------------------------------------------------

impl From<&StepReport> for pb::StepResult {
    fn from(s: &StepReport) -> Self {
        pb::StepResult {
            number: s.number,
            name: s.name.clone(),
            kind: s.kind.clone(),
            outcome: outcome_pb(s.outcome) as i32,
            duration_ms: s.duration_ms,
            message: s.message.clone(),
            metrics: s.metrics.clone().into_iter().collect(),
            log: s.log.clone(),
        }
    }
}

impl TryFrom<pb::StepResult> for StepReport {
    type Error = WireError;
    fn try_from(s: pb::StepResult) -> Result<Self, WireError> {
        Ok(StepReport {
            number: s.number,
            name: s.name,
            kind: s.kind,
            outcome: outcome(s.outcome, "StepResult.outcome")?,
            duration_ms: s.duration_ms,
            message: s.message,
            log: s.log,
            metrics: map(s.metrics),
        })
    }
}

impl From<&LogLine> for pb::LogLine {
    fn from(l: &LogLine) -> Self {
        pb::LogLine {
            step: l.step,
            text: l.text.clone(),
        }
    }
}

impl From<pb::LogLine> for LogLine {
    fn from(l: pb::LogLine) -> Self {
        LogLine {
            step: l.step,
            text: l.text,
        }
    }
}

fn steps(v: Vec<pb::StepResult>) -> Result<Vec<StepReport>, WireError> {
    v.into_iter().map(StepReport::try_from).collect()
}

// ----- farm records ---------------------------------------------------------------------------------------

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

// ----- the agent link -------------------------------------------------------------------------------------

impl From<&JobResult> for pb::JobResult {
    fn from(r: &JobResult) -> Self {
        pb::JobResult {
            job_id: r.job_id.clone(),
            fencing_token: r.fencing_token,
            outcome: outcome_pb(r.outcome) as i32,
            message: r.message.clone(),
            steps: r.steps.iter().map(pb::StepResult::from).collect(),
            firmware_revision: r.firmware_revision.clone(),
            duration_ms: r.duration_ms,
        }
    }
}

impl TryFrom<pb::JobResult> for JobResult {
    type Error = WireError;
    fn try_from(r: pb::JobResult) -> Result<Self, WireError> {
        let o = outcome(r.outcome, "JobResult.outcome")?;
        if o == Outcome::Skipped {
            return Err(bad("JobResult.outcome", "a job cannot end as skipped"));
        }
        Ok(JobResult {
            job_id: r.job_id,
            fencing_token: r.fencing_token,
            outcome: o,
            message: r.message,
            steps: steps(r.steps)?,
            firmware_revision: r.firmware_revision,
            duration_ms: r.duration_ms,
        })
    }
}

impl From<&Registration> for pb::Register {
    fn from(r: &Registration) -> Self {
        pb::Register {
            agent: r.agent.clone(),
            rigs: r
                .rigs
                .iter()
                .map(|g| pb::AgentRig {
                    name: g.name.clone(),
                    labels: g.labels.clone().into_iter().collect(),
                    drive_serial: g.drive_serial.clone(),
                    drive_model: g.drive_model.clone(),
                    firmware_revision: g.firmware_revision.clone(),
                    newest_token: g.newest_token,
                })
                .collect(),
            jobs: r
                .jobs
                .iter()
                .map(|j| pb::AgentJob {
                    job_id: j.job_id.clone(),
                    rig: j.rig.clone(),
                    fencing_token: j.fencing_token,
                    result: j.result.as_ref().map(pb::JobResult::from),
                })
                .collect(),
            version: r.version.clone(),
        }
    }
}

impl TryFrom<pb::Register> for Registration {
    type Error = WireError;
    fn try_from(r: pb::Register) -> Result<Self, WireError> {
        Ok(Registration {
            agent: r.agent,
            rigs: r
                .rigs
                .into_iter()
                .map(|g| AgentRig {
                    name: g.name,
                    labels: map(g.labels),
                    drive_serial: g.drive_serial,
                    drive_model: g.drive_model,
                    firmware_revision: g.firmware_revision,
                    newest_token: g.newest_token,
                })
                .collect(),
            jobs: r
                .jobs
                .into_iter()
                .map(|j| {
                    Ok(HeldJob {
                        job_id: j.job_id,
                        rig: j.rig,
                        fencing_token: j.fencing_token,
                        result: j.result.map(JobResult::try_from).transpose()?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            version: r.version,
        })
    }
}

fn agent_msg(m: pb::agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

impl From<&FromAgent> for pb::AgentMessage {
    fn from(m: &FromAgent) -> Self {
        use pb::agent_message::Msg;
        agent_msg(match m {
            FromAgent::Register(r) => Msg::Register(r.into()),
            FromAgent::Heartbeat(h) => Msg::Heartbeat(pb::Heartbeat {
                seq: h.seq,
                running_job_ids: h.running_job_ids.clone(),
            }),
            FromAgent::Progress(p) => Msg::Progress(pb::JobProgress {
                job_id: p.job_id.clone(),
                fencing_token: p.fencing_token,
                state: p
                    .phase
                    .map(job_state_pb)
                    .unwrap_or(pb::JobState::Unspecified) as i32,
                lines: p.lines.iter().map(pb::LogLine::from).collect(),
                step: p.step.as_ref().map(pb::StepResult::from),
            }),
            FromAgent::Result(r) => Msg::Result(r.into()),
            FromAgent::Refused(r) => Msg::Refused(pb::Refused {
                job_id: r.job_id.clone(),
                fencing_token: r.fencing_token,
                reason: r.reason.clone(),
            }),
        })
    }
}

impl TryFrom<pb::AgentMessage> for FromAgent {
    type Error = WireError;
    fn try_from(m: pb::AgentMessage) -> Result<Self, WireError> {
        use pb::agent_message::Msg;
        Ok(
            match m
                .msg
                .ok_or_else(|| bad("AgentMessage.msg", "empty message"))?
            {
                Msg::Register(r) => FromAgent::Register(r.try_into()?),
                Msg::Heartbeat(h) => FromAgent::Heartbeat(Heartbeat {
                    seq: h.seq,
                    running_job_ids: h.running_job_ids,
                }),
                Msg::Progress(p) => FromAgent::Progress(JobProgress {
                    phase: job_state_opt(p.state, "JobProgress.state")?,
                    step: p.step.map(StepReport::try_from).transpose()?,
                    job_id: p.job_id,
                    fencing_token: p.fencing_token,
                    lines: p.lines.into_iter().map(LogLine::from).collect(),
                }),
                Msg::Result(r) => FromAgent::Result(r.try_into()?),
                Msg::Refused(r) => FromAgent::Refused(Refusal {
                    job_id: r.job_id,
                    fencing_token: r.fencing_token,
                    reason: r.reason,
                }),
            },
        )
    }
}

impl From<&ToAgent> for pb::ControllerMessage {
    fn from(m: &ToAgent) -> Self {
        use pb::controller_message::Msg;
        pb::ControllerMessage {
            msg: Some(match m {
                ToAgent::Registered {
                    heartbeat_ms,
                    abandon_job_ids,
                } => Msg::Registered(pb::Registered {
                    heartbeat_ms: *heartbeat_ms,
                    abandon_job_ids: abandon_job_ids.clone(),
                }),
                ToAgent::Assign(a) => Msg::Assign(pb::Assign {
                    job_id: a.job_id.clone(),
                    rig: a.rig.clone(),
                    fencing_token: a.fencing_token,
                    plan_toml: a.plan_toml.clone(),
                    artifact_sha256: a.artifact_sha256.clone(),
                    artifact_size: a.artifact_size,
                    firmware_name: a.firmware_name.clone(),
                    timeout_ms: a.timeout_ms,
                }),
                ToAgent::Cancel {
                    job_id,
                    fencing_token,
                } => Msg::Cancel(pb::CancelJob {
                    job_id: job_id.clone(),
                    fencing_token: *fencing_token,
                }),
                ToAgent::Stored { job_id } => Msg::Stored(pb::ResultStored {
                    job_id: job_id.clone(),
                }),
            }),
        }
    }
}

impl TryFrom<pb::ControllerMessage> for ToAgent {
    type Error = WireError;
    fn try_from(m: pb::ControllerMessage) -> Result<Self, WireError> {
        use pb::controller_message::Msg;
        Ok(
            match m
                .msg
                .ok_or_else(|| bad("ControllerMessage.msg", "empty message"))?
            {
                Msg::Registered(r) => ToAgent::Registered {
                    heartbeat_ms: r.heartbeat_ms,
                    abandon_job_ids: r.abandon_job_ids,
                },
                Msg::Assign(a) => ToAgent::Assign(Assignment {
                    job_id: a.job_id,
                    rig: a.rig,
                    fencing_token: a.fencing_token,
                    plan_toml: a.plan_toml,
                    artifact_sha256: a.artifact_sha256,
                    artifact_size: a.artifact_size,
                    firmware_name: a.firmware_name,
                    timeout_ms: a.timeout_ms,
                }),
                Msg::Cancel(c) => ToAgent::Cancel {
                    job_id: c.job_id,
                    fencing_token: c.fencing_token,
                },
                Msg::Stored(s) => ToAgent::Stored { job_id: s.job_id },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> StepReport {
        StepReport {
            number: 2,
            name: "identify".into(),
            kind: "identify".into(),
            outcome: Outcome::Failed,
            duration_ms: 12,
            message: "fr is 1.0".into(),
            log: vec![],
            metrics: [("iops".to_string(), 5.0)].into(),
        }
    }

    #[test]
    fn a_step_result_survives_the_wire() {
        let s = step();
        assert_eq!(StepReport::try_from(pb::StepResult::from(&s)).unwrap(), s);
        for o in Outcome::ALL {
            assert_eq!(outcome(outcome_pb(o) as i32, "x").unwrap(), o);
        }
    }

    #[test]
    fn nonsense_on_the_wire_is_named() {
        let mut m = pb::StepResult::from(&step());
        m.outcome = 0;
        let e = StepReport::try_from(m.clone()).unwrap_err();
        assert_eq!(e.field, "StepResult.outcome");
        m.outcome = 99;
        assert!(StepReport::try_from(m).unwrap_err().reason.contains("99"));
        let e = FromAgent::try_from(pb::AgentMessage { msg: None }).unwrap_err();
        assert_eq!(e.field, "AgentMessage.msg");
        let r = pb::JobResult {
            outcome: pb::Outcome::Skipped as i32,
            ..Default::default()
        };
        assert!(JobResult::try_from(r).is_err());
    }

    #[test]
    fn agent_messages_survive_the_wire() {
        let msgs = [
            FromAgent::Progress(JobProgress {
                job_id: "job-1".into(),
                fencing_token: 7,
                phase: Some(JobState::Flashing),
                lines: vec![LogLine {
                    step: 1,
                    text: "downloading".into(),
                }],
                step: Some(step()),
            }),
            FromAgent::Result(JobResult {
                job_id: "job-1".into(),
                fencing_token: 7,
                outcome: Outcome::Failed,
                message: "m".into(),
                steps: vec![step()],
                firmware_revision: "2.0.0".into(),
                duration_ms: 3,
            }),
        ];
        for m in msgs {
            assert_eq!(FromAgent::try_from(pb::AgentMessage::from(&m)).unwrap(), m);
        }
        let a = ToAgent::Cancel {
            job_id: "job-2".into(),
            fencing_token: 9,
        };
        assert_eq!(
            ToAgent::try_from(pb::ControllerMessage::from(&a)).unwrap(),
            a
        );
    }
}
