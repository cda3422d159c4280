//! The agent link's messages on the wire: registration, heartbeats, progress, results, refusals, and what the
//! controller sends back.

use nvfarm_model::farm::DriveFirmware;
use nvfarm_model::link::{
    AgentRig, Assignment, FromAgent, Heartbeat, HeldJob, JobProgress, JobResult, Refusal,
    Registration, RigIdentity, ToAgent,
};
use nvfarm_model::{LogLine, Outcome, StepReport};

use super::{
    bad, job_state_opt, job_state_pb, map, outcome, outcome_pb, slots, slots_pb, steps, WireError,
};
use crate::v1 as pb;

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
            drive: r.drive.as_ref().map(|d| pb::DriveFirmware {
                revision: d.revision.clone(),
                active_slot: d.active_slot as u32,
                slots: slots_pb(&d.slots),
            }),
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
            drive: r
                .drive
                .map(|d| {
                    Ok::<_, WireError>(DriveFirmware {
                        revision: d.revision,
                        active_slot: u8::try_from(d.active_slot).map_err(|_| {
                            bad(
                                "DriveFirmware.active_slot",
                                format!("{} is not a slot", d.active_slot),
                            )
                        })?,
                        slots: slots(d.slots),
                    })
                })
                .transpose()?,
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
                    probing: g.probing,
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
                    probing: g.probing,
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
                steps: p.steps.iter().map(pb::StepResult::from).collect(),
            }),
            FromAgent::Result(r) => Msg::Result(r.into()),
            FromAgent::Refused(r) => Msg::Refused(pb::Refused {
                job_id: r.job_id.clone(),
                fencing_token: r.fencing_token,
                reason: r.reason.clone(),
            }),
            FromAgent::Identity(i) => Msg::Identity(pb::RigIdentity {
                rig: i.rig.clone(),
                drive_serial: i.drive_serial.clone(),
                drive_model: i.drive_model.clone(),
                firmware_revision: i.firmware_revision.clone(),
                answered: i.answered,
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
                    steps: p
                        .steps
                        .into_iter()
                        .map(StepReport::try_from)
                        .collect::<Result<_, _>>()?,
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
                Msg::Identity(i) => FromAgent::Identity(RigIdentity {
                    rig: i.rig,
                    drive_serial: i.drive_serial,
                    drive_model: i.drive_model,
                    firmware_revision: i.firmware_revision,
                    answered: i.answered,
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
