//! The messages between a bench-agent and the controller, as both sides handle them. On the wire they are the
//! `AgentLink` protobuf messages; `nvfarm-proto` converts, nothing else sees the generated types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::farm::{DriveFirmware, JobState};
use crate::outcome::Outcome;
use crate::report::{LogLine, StepReport};

/// The longest an agent waits between two attempts to reach the controller. A restarted controller gives each
/// agent that had jobs `health.agent_timeout` plus this long to come back before it ends their jobs.
pub const AGENT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A rig as its agent reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRig {
    /// The rig's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The drive's serial number (empty if the drive did not answer).
    pub drive_serial: String,
    /// The drive's model.
    pub drive_model: String,
    /// The running firmware revision.
    pub firmware_revision: String,
    /// The newest fencing token this agent has accepted for the rig.
    pub newest_token: u64,
    /// The drive is still being probed; its identity follows in a [`FromAgent::Identity`].
    #[serde(default)]
    pub probing: bool,
}

/// A rig's drive identity, sent as each probe answers (or gives up) after registration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RigIdentity {
    /// The rig.
    pub rig: String,
    /// The drive's serial number.
    pub drive_serial: String,
    /// The drive's model.
    pub drive_model: String,
    /// The running firmware revision.
    pub firmware_revision: String,
    /// `false`: the drive did not answer within the probe's bound (the fields are empty).
    pub answered: bool,
}

/// A job the agent holds: running, or finished while the controller could not hear it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldJob {
    /// The job.
    pub job_id: String,
    /// Its rig.
    pub rig: String,
    /// The token it was assigned with.
    pub fencing_token: u64,
    /// Set when finished.
    pub result: Option<JobResult>,
}

/// The first message of an agent's session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The agent's name.
    pub agent: String,
    /// Its rigs.
    pub rigs: Vec<AgentRig>,
    /// The jobs it holds.
    pub jobs: Vec<HeldJob>,
    /// Its version.
    pub version: String,
}

/// A live-ness signal with the jobs the agent runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counts up within a session.
    pub seq: u64,
    /// The jobs running now.
    pub running_job_ids: Vec<String>,
}

/// Progress of a running job, batched: its phase, new log lines, and the steps that ended since the last batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// The job.
    pub job_id: String,
    /// The token it runs under.
    pub fencing_token: u64,
    /// `Flashing` or `Testing`, when known.
    pub phase: Option<JobState>,
    /// New log lines, in order, each with its step's number.
    pub lines: Vec<LogLine>,
    /// Steps that ended, in order.
    pub steps: Vec<StepReport>,
}

/// How a job ended on the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: String,
    /// The token it ran under.
    pub fencing_token: u64,
    /// How it ended (never `skipped`).
    pub outcome: Outcome,
    /// One line: why.
    pub message: String,
    /// Every step's result.
    pub steps: Vec<StepReport>,
    /// The revision of the build the job flashed, as verified (empty if it flashed nothing or did not verify).
    pub firmware_revision: String,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// What the drive runs after the job, read whatever the outcome (None: the drive did not answer).
    #[serde(default)]
    pub drive: Option<DriveFirmware>,
}

impl JobResult {
    /// A job that ended before any step ran.
    pub fn early(job_id: &str, fencing_token: u64, outcome: Outcome, message: String) -> Self {
        JobResult {
            job_id: job_id.to_string(),
            fencing_token,
            outcome,
            message,
            steps: vec![],
            firmware_revision: String::new(),
            duration_ms: 0,
            drive: None,
        }
    }
}

/// The agent will not run an assignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The job.
    pub job_id: String,
    /// The token it was assigned with.
    pub fencing_token: u64,
    /// Why.
    pub reason: String,
}

/// Anything an agent says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromAgent {
    /// Registration (first on a session).
    Register(Registration),
    /// Still alive.
    Heartbeat(Heartbeat),
    /// A running job's progress.
    Progress(JobProgress),
    /// A job ended.
    Result(JobResult),
    /// An assignment was refused.
    Refused(Refusal),
    /// A rig's drive identity, once probed.
    Identity(RigIdentity),
}

/// Work for an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The job.
    pub job_id: String,
    /// The rig to run it on.
    pub rig: String,
    /// Its lease's token; the agent refuses a token not newer than one it accepted for the rig.
    pub fencing_token: u64,
    /// The plan (TOML).
    pub plan_toml: String,
    /// The firmware build to fetch (empty for plans that flash nothing).
    pub artifact_sha256: String,
    /// Its size.
    pub artifact_size: u64,
    /// Its file name.
    pub firmware_name: String,
    /// Time left for the job.
    pub timeout_ms: u64,
}

/// Anything the controller tells an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToAgent {
    /// Registration accepted (always first on a session).
    Registered {
        /// The heartbeat interval expected.
        heartbeat_ms: u64,
        /// Jobs from the agent's report the controller no longer wants.
        abandon_job_ids: Vec<String>,
    },
    /// Run a job.
    Assign(Assignment),
    /// Stop a job.
    Cancel {
        /// The job.
        job_id: String,
        /// The token it runs under.
        fencing_token: u64,
    },
    /// A result is stored; the agent may forget it.
    Stored {
        /// The job.
        job_id: String,
    },
}
