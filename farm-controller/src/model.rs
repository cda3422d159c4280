//! The records the controller stores: rigs, leases, queued requests, jobs, artifacts and sweeps.
//!
//! They are plain serde structs kept in memory (the scheduler's view) and written to the store as JSON, so a
//! record on disk is readable with any sled tool and survives format-compatible upgrades.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use nvfarm_proto::v1 as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RigState {
    Idle,
    Leased,
    Offline,
    Quarantined,
    Maintenance,
}

impl RigState {
    pub fn to_pb(self) -> pb::RigState {
        match self {
            RigState::Idle => pb::RigState::RigIdle,
            RigState::Leased => pb::RigState::RigLeased,
            RigState::Offline => pb::RigState::RigOffline,
            RigState::Quarantined => pb::RigState::RigQuarantined,
            RigState::Maintenance => pb::RigState::RigMaintenance,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RigRecord {
    pub name: String,
    pub agent: String,
    pub labels: BTreeMap<String, String>,
    pub state: RigState,
    pub drive_serial: String,
    pub drive_model: String,
    pub firmware_revision: String,
    /// Why it is offline / quarantined / in maintenance.
    pub reason: String,
    pub lease_id: Option<String>,
    pub consecutive_infra_errors: u32,
    /// The last job ended in an infrastructure error: a health check must pass before the rig is leased again.
    pub health_check_pending: bool,
    pub last_seen_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    Reservation,
    Job,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub rig: String,
    pub holder: String,
    pub fencing_token: u64,
    pub kind: LeaseKind,
    pub job_id: Option<String>,
    pub granted_ms: u64,
    /// Reservations: when the lease ends. Jobs: renewed by the agent's heartbeats.
    pub expires_ms: u64,
}

impl LeaseRecord {
    pub fn to_pb(&self) -> pb::Lease {
        pb::Lease {
            id: self.id.clone(),
            rig: self.rig.clone(),
            holder: self.holder.clone(),
            fencing_token: self.fencing_token,
            granted_ms: self.granted_ms,
            expires_ms: self.expires_ms,
            kind: match self.kind {
                LeaseKind::Reservation => "reservation".into(),
                LeaseKind::Job => "job".into(),
            },
            job_id: self.job_id.clone().unwrap_or_default(),
        }
    }
}

/// interactive > ci > nightly; `System` (health checks) goes first on its own rig.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Nightly,
    Ci,
    Interactive,
    System,
}

impl Class {
    pub fn from_pb(p: i32) -> Class {
        match pb::Priority::try_from(p).unwrap_or(pb::Priority::Unspecified) {
            pb::Priority::Nightly => Class::Nightly,
            pb::Priority::Interactive => Class::Interactive,
            pb::Priority::Ci | pb::Priority::Unspecified => Class::Ci,
        }
    }
    pub fn to_pb(self) -> pb::Priority {
        match self {
            Class::Nightly => pb::Priority::Nightly,
            Class::Ci => pb::Priority::Ci,
            Class::Interactive | Class::System => pb::Priority::Interactive,
        }
    }
    pub fn rank(self) -> u32 {
        match self {
            Class::Nightly => 0,
            Class::Ci => 1,
            Class::Interactive => 2,
            Class::System => 10,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub rig: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn from_pb(s: Option<&pb::Selector>) -> Selector {
        match s {
            None => Selector::default(),
            Some(s) => Selector {
                rig: (!s.rig.is_empty()).then(|| s.rig.clone()),
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
        }
    }
    pub fn to_pb(&self) -> pb::Selector {
        pb::Selector {
            rig: self.rig.clone().unwrap_or_default(),
            labels: self.labels.clone().into_iter().collect(),
        }
    }
    pub fn matches(&self, rig: &RigRecord) -> bool {
        self.rig.as_ref().is_none_or(|n| n == &rig.name)
            && self
                .labels
                .iter()
                .all(|(k, v)| rig.labels.get(k) == Some(v))
    }
    pub fn describe(&self) -> String {
        match (&self.rig, self.labels.is_empty()) {
            (Some(r), true) => format!("rig {r}"),
            (Some(r), false) => format!("rig {r} with {}", labels_text(&self.labels)),
            (None, false) => labels_text(&self.labels),
            (None, true) => "any rig".into(),
        }
    }
}

pub fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A waiting request for a rig: a reservation, or a job's need for one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    pub selector: Selector,
    pub class: Class,
    pub holder: String,
    pub created_ms: u64,
    /// Reservation length; 0 for jobs.
    pub duration_ms: u64,
    pub job_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Assigned,
    Flashing,
    Testing,
    Passed,
    Failed,
    Error,
    TimedOut,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Passed
                | JobState::Failed
                | JobState::Error
                | JobState::TimedOut
                | JobState::Cancelled
        )
    }
    pub fn to_pb(self) -> pb::JobState {
        match self {
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
    pub fn from_pb(s: pb::JobState) -> Option<JobState> {
        Some(match s {
            pb::JobState::JobQueued => JobState::Queued,
            pb::JobState::JobAssigned => JobState::Assigned,
            pb::JobState::JobFlashing => JobState::Flashing,
            pb::JobState::JobTesting => JobState::Testing,
            pb::JobState::JobPassed => JobState::Passed,
            pb::JobState::JobFailed => JobState::Failed,
            pb::JobState::JobError => JobState::Error,
            pb::JobState::JobTimedOut => JobState::TimedOut,
            pb::JobState::JobCancelled => JobState::Cancelled,
            pb::JobState::Unspecified => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        self.to_pb().short()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub number: u32,
    pub name: String,
    pub kind: String,
    pub outcome: String,
    pub duration_ms: u64,
    pub message: String,
    pub metrics: BTreeMap<String, f64>,
}

impl StepRecord {
    pub fn from_pb(s: &pb::StepResult) -> Self {
        StepRecord {
            number: s.number,
            name: s.name.clone(),
            kind: s.kind.clone(),
            outcome: s.outcome.clone(),
            duration_ms: s.duration_ms,
            message: s.message.clone(),
            metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
    pub fn to_pb(&self) -> pb::StepResult {
        pb::StepResult {
            number: self.number,
            name: self.name.clone(),
            kind: self.kind.clone(),
            outcome: self.outcome.clone(),
            duration_ms: self.duration_ms,
            message: self.message.clone(),
            metrics: self.metrics.clone().into_iter().collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub rig: Option<String>,
    pub selector: Selector,
    pub plan_name: String,
    pub plan_toml: String,
    pub artifact_sha256: String,
    pub firmware_name: String,
    pub firmware_revision: String,
    pub class: Class,
    pub submitter: String,
    pub created_ms: u64,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub timeout_ms: u64,
    pub message: String,
    pub steps: Vec<StepRecord>,
    pub lease_id: Option<String>,
    pub fencing_token: u64,
    pub sweep_id: Option<String>,
    pub attempt: u32,
    /// A health check the controller scheduled itself.
    pub health_check: bool,
    /// Number of log lines stored.
    pub log_lines: u64,
}

impl JobRecord {
    pub fn to_pb(&self, with_plan: bool) -> pb::Job {
        pb::Job {
            id: self.id.clone(),
            state: self.state.to_pb() as i32,
            rig: self.rig.clone().unwrap_or_default(),
            selector: Some(self.selector.to_pb()),
            plan_name: self.plan_name.clone(),
            artifact_sha256: self.artifact_sha256.clone(),
            firmware_name: self.firmware_name.clone(),
            firmware_revision: self.firmware_revision.clone(),
            priority: self.class.to_pb() as i32,
            submitter: self.submitter.clone(),
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            timeout_ms: self.timeout_ms,
            message: self.message.clone(),
            steps: self.steps.iter().map(StepRecord::to_pb).collect(),
            lease_id: self.lease_id.clone().unwrap_or_default(),
            fencing_token: self.fencing_token,
            sweep_id: self.sweep_id.clone().unwrap_or_default(),
            attempt: self.attempt,
            plan_toml: if with_plan {
                self.plan_toml.clone()
            } else {
                String::new()
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub sha256: String,
    pub size: u64,
    pub name: String,
    pub stored_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub job_ids: Vec<String>,
    pub created_ms: u64,
    pub previous: Option<String>,
    pub retries: u32,
    pub plan_name: String,
    pub submitter: String,
}

/// What a new job needs; [`NewJob::queued`] makes the record.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub selector: Selector,
    pub plan_name: String,
    pub plan_toml: String,
    pub artifact_sha256: String,
    pub firmware_name: String,
    pub class: Class,
    pub submitter: String,
    pub timeout_ms: u64,
    pub sweep_id: Option<String>,
    pub health_check: bool,
}

impl NewJob {
    /// A queued job with id `id`, created at `now`.
    pub fn queued(self, id: String, now: u64) -> JobRecord {
        JobRecord {
            id,
            state: JobState::Queued,
            rig: None,
            selector: self.selector,
            plan_name: self.plan_name,
            plan_toml: self.plan_toml,
            artifact_sha256: self.artifact_sha256,
            firmware_name: self.firmware_name,
            firmware_revision: String::new(),
            class: self.class,
            submitter: self.submitter,
            created_ms: now,
            started_ms: 0,
            finished_ms: 0,
            timeout_ms: self.timeout_ms,
            message: String::new(),
            steps: vec![],
            lease_id: None,
            fencing_token: 0,
            sweep_id: self.sweep_id,
            attempt: 0,
            health_check: self.health_check,
            log_lines: 0,
        }
    }
}
