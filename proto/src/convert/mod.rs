//! Conversions between the wire messages and `nvfarm-model`'s types: `From<&model>` to build a message,
//! `TryFrom<message>` to read one. Reading checks every enum and required field and names what is wrong, so a
//! malformed or hostile message becomes a [`WireError`], never a panic or a silently defaulted value.
//!
//! - this module: the enums, step results and log lines;
//! - `records`: the farm's records; `link`: the agent link's messages.

use std::collections::BTreeMap;

use nvfarm_model::farm::{Change, JobState, Priority, RigState, SweepOutcome};
use nvfarm_model::{LogLine, Outcome, StepReport};

use crate::v1 as pb;

mod link;
mod records;

pub use records::{selector, sweep_pb};

/// A message that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct WireError {
    /// `Message.field`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn map<K: Ord, V>(m: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
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
        Outcome::Invalid => pb::Outcome::Invalid,
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
            pb::Outcome::Invalid => Outcome::Invalid,
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
        JobState::Invalid => pb::JobState::JobInvalid,
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
            pb::JobState::JobInvalid => JobState::Invalid,
        },
    ))
}

pub(crate) fn rig_state_pb(s: RigState) -> pb::RigState {
    match s {
        RigState::Idle => pb::RigState::RigIdle,
        RigState::Leased => pb::RigState::RigLeased,
        RigState::Offline => pb::RigState::RigOffline,
        RigState::Quarantined => pb::RigState::RigQuarantined,
        RigState::Maintenance => pb::RigState::RigMaintenance,
        RigState::Probing => pb::RigState::RigProbing,
    }
}

pub(crate) fn rig_state(v: i32) -> Result<RigState, WireError> {
    let field = "Rig.state";
    Ok(
        match pb::RigState::try_from(v).map_err(|_| bad(field, format!("unknown rig state {v}")))? {
            pb::RigState::Unspecified => return Err(bad(field, "missing (unspecified)")),
            pb::RigState::RigIdle => RigState::Idle,
            pb::RigState::RigLeased => RigState::Leased,
            pb::RigState::RigOffline => RigState::Offline,
            pb::RigState::RigQuarantined => RigState::Quarantined,
            pb::RigState::RigMaintenance => RigState::Maintenance,
            pb::RigState::RigProbing => RigState::Probing,
        },
    )
}

pub(crate) fn change_pb(c: Option<Change>) -> pb::Change {
    match c {
        None => pb::Change::None,
        Some(Change::NewFailure) => pb::Change::NewFailure,
        Some(Change::Fixed) => pb::Change::Fixed,
        Some(Change::StillFailing) => pb::Change::StillFailing,
        Some(Change::Flaky) => pb::Change::Flaky,
        Some(Change::Regressed) => pb::Change::Regressed,
    }
}

pub(crate) fn change(v: i32) -> Result<Option<Change>, WireError> {
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

pub(crate) fn sweep_outcome_pb(o: SweepOutcome) -> pb::SweepOutcome {
    match o {
        SweepOutcome::Running => pb::SweepOutcome::SweepRunning,
        SweepOutcome::Passed => pb::SweepOutcome::SweepPassed,
        SweepOutcome::Failed => pb::SweepOutcome::SweepFailed,
        SweepOutcome::Error => pb::SweepOutcome::SweepError,
    }
}

pub(crate) fn sweep_outcome(v: i32) -> Result<SweepOutcome, WireError> {
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

/// Firmware slots on the wire: slot 1 first, "" for an empty slot.
pub(crate) fn slots_pb(s: &[Option<String>]) -> Vec<String> {
    s.iter().map(|r| r.clone().unwrap_or_default()).collect()
}

/// Firmware slots from the wire.
pub(crate) fn slots(s: Vec<String>) -> Vec<Option<String>> {
    s.into_iter().map(opt).collect()
}

pub(crate) fn steps(v: Vec<pb::StepResult>) -> Result<Vec<StepReport>, WireError> {
    v.into_iter().map(StepReport::try_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::link::{FromAgent, JobProgress, JobResult, ToAgent};

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
                steps: vec![step(), step()],
            }),
            FromAgent::Result(JobResult {
                job_id: "job-1".into(),
                fencing_token: 7,
                outcome: Outcome::Failed,
                message: "m".into(),
                steps: vec![step()],
                firmware_revision: "2.0.0".into(),
                duration_ms: 3,
                drive: Some(nvfarm_model::farm::DriveFirmware {
                    revision: "2.0.0".into(),
                    active_slot: 2,
                    slots: vec![Some("1.0.0".into()), Some("2.0.0".into()), None],
                }),
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
