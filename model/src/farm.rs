//! The farm's records in one module (~660 lines, most of it field docs and their JSON tests): they reference
//! each other and are read together.
//!
//! The farm's records: rigs, leases, waiting requests, jobs, artifacts, sweeps and sweep reports.
//!
//! The controller keeps these in memory and in its store; `farmctl --json` and the controller's read-only JSON API
//! (`/api/...`) print exactly these shapes (serde), so a record reads the same wherever it is seen.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exit::ExitCode;
use crate::outcome::Outcome;
use crate::report::{FirmwareInfo, RunReport, StepReport};

/// Whether a rig can take work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RigState {
    /// Free.
    Idle,
    /// Held by a reservation or a job.
    Leased,
    /// Its agent is not connected.
    Offline,
    /// Taken out of service for a reason (repeated infrastructure errors, a failed health check, an operator).
    Quarantined,
    /// Taken out of service by an operator for work on it.
    Maintenance,
    /// Its agent registered it and is reading its drive's identity (a bounded probe; then idle).
    Probing,
}

impl RigState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RigState::Idle => "idle",
            RigState::Leased => "leased",
            RigState::Offline => "offline",
            RigState::Quarantined => "quarantined",
            RigState::Maintenance => "maintenance",
            RigState::Probing => "probing",
        }
    }
    /// Every state.
    pub const ALL: [RigState; 6] = [
        RigState::Idle,
        RigState::Leased,
        RigState::Offline,
        RigState::Quarantined,
        RigState::Maintenance,
        RigState::Probing,
    ];
}

impl fmt::Display for RigState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A rig: one drive with its power control and console, owned by one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rig {
    /// Unique name.
    pub name: String,
    /// The agent that owns it.
    pub agent: String,
    /// What jobs select it by (`model=X1-1T`).
    pub labels: BTreeMap<String, String>,
    /// Whether it can take work.
    pub state: RigState,
    /// The drive's serial number, as it reported at registration.
    pub drive_serial: String,
    /// The drive's model.
    pub drive_model: String,
    /// The firmware revision the drive runs, as last read from it (at registration and after every job).
    pub firmware_revision: String,
    /// The firmware slot it runs from (0: not read yet).
    #[serde(default)]
    pub active_slot: u8,
    /// What each firmware slot holds, slot 1 first (`None`: empty), as last read.
    #[serde(default)]
    pub firmware_slots: Vec<Option<String>>,
    /// Why it is offline / quarantined / in maintenance.
    pub reason: String,
    /// The lease holding it, when leased.
    pub lease_id: Option<String>,
    /// Infrastructure errors since the last job that ran to a verdict.
    pub consecutive_infra_errors: u32,
    /// The last job ended in an infrastructure error: a health check must pass before the rig is leased again.
    pub health_check_pending: bool,
    /// When its agent last registered it (Unix ms).
    pub last_seen_ms: u64,
}

impl Rig {
    /// A newly registered rig (offline until its agent's registration completes).
    pub fn new(name: &str, agent: &str, now_ms: u64) -> Rig {
        Rig {
            name: name.to_string(),
            agent: agent.to_string(),
            labels: BTreeMap::new(),
            state: RigState::Offline,
            drive_serial: String::new(),
            drive_model: String::new(),
            firmware_revision: String::new(),
            active_slot: 0,
            firmware_slots: vec![],
            reason: String::new(),
            lease_id: None,
            consecutive_infra_errors: 0,
            health_check_pending: false,
            last_seen_ms: now_ms,
        }
    }
}

/// A rig as clients see it: the record and the lease holding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RigStatus {
    /// The rig.
    #[serde(flatten)]
    pub rig: Rig,
    /// The lease holding it, if any.
    pub lease: Option<Lease>,
}

/// What a lease is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// Someone reserved the rig for a while.
    Reservation,
    /// A job runs on it.
    Job,
}

/// Exclusive use of a rig.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Unique id (`lease-000042`).
    pub id: String,
    /// The rig held.
    pub rig: String,
    /// Who holds it.
    pub holder: String,
    /// Only grows, per rig and across restarts; agents refuse work with an older token.
    pub fencing_token: u64,
    /// Reservation or job.
    pub kind: LeaseKind,
    /// The job, for job leases.
    pub job_id: Option<String>,
    /// When it was granted (Unix ms).
    pub granted_ms: u64,
    /// Reservations: when the lease ends. Jobs: renewed by the agent's heartbeats.
    pub expires_ms: u64,
    /// The job was cancelled or timed out and its agent has not yet confirmed it stopped (`cancelled`,
    /// `timed out`): the rig stays held until it does.
    #[serde(default)]
    pub stopping: Option<String>,
    /// The request it was granted to.
    #[serde(default)]
    pub request_id: Option<String>,
    /// A reservation granted to a waiting client counts once the client has received it; one nobody claims is
    /// released after a while. Direct and detached grants are claimed at once.
    #[serde(default = "yes")]
    pub claimed: bool,
}

/// How urgently work wants a rig: interactive > ci > nightly; `system` (the controller's health checks) goes
/// first on its own rig.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Nightly sweeps: only rigs nobody else waits for.
    Nightly,
    /// CI runs.
    Ci,
    /// People at a keyboard.
    Interactive,
    /// The controller's own health checks.
    System,
}

impl Priority {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Nightly => "nightly",
            Priority::Ci => "ci",
            Priority::Interactive => "interactive",
            Priority::System => "system",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "interactive" => Ok(Priority::Interactive),
            "ci" => Ok(Priority::Ci),
            "nightly" => Ok(Priority::Nightly),
            _ => Err(format!(
                "invalid priority '{s}': expected interactive, ci or nightly"
            )),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which rigs a request or job can use: one rig by name, or every rig carrying all the labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selector {
    /// A rig by name.
    pub rig: Option<String>,
    /// Labels every matching rig carries.
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Just the rig named `name`.
    pub fn rig(name: &str) -> Selector {
        Selector {
            rig: Some(name.to_string()),
            labels: BTreeMap::new(),
        }
    }

    /// Every rig with these labels.
    pub fn labels(labels: BTreeMap<String, String>) -> Selector {
        Selector { rig: None, labels }
    }

    /// Whether `rig` is one this selector picks.
    pub fn matches(&self, rig: &Rig) -> bool {
        self.rig.as_ref().is_none_or(|n| n == &rig.name)
            && self
                .labels
                .iter()
                .all(|(k, v)| rig.labels.get(k) == Some(v))
    }

    /// `rig r1`, `model=X1`, `any rig`: for messages.
    pub fn describe(&self) -> String {
        match (&self.rig, self.labels.is_empty()) {
            (Some(r), true) => format!("rig {r}"),
            (Some(r), false) => format!("rig {r} with {}", labels_text(&self.labels)),
            (None, false) => labels_text(&self.labels),
            (None, true) => "any rig".into(),
        }
    }
}

/// `k=v,k2=v2`.
pub fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `k=v,k2=v2` (what `--labels` takes).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("invalid label '{part}': expected key=value (e.g. model=X1-1T,site=lab-a)")
        })?;
        if k.trim().is_empty() {
            return Err(format!("invalid label '{part}': empty key"));
        }
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(m)
}

/// A waiting request for a rig: a reservation, or a job's need for one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique id (`req-000042`).
    pub id: String,
    /// Which rigs it can use.
    pub selector: Selector,
    /// Its priority class.
    #[serde(alias = "class")]
    pub priority: Priority,
    /// Who asked.
    pub holder: String,
    /// When it was queued (Unix ms); older requests go first within a class.
    pub created_ms: u64,
    /// Reservation length; 0 for jobs.
    pub duration_ms: u64,
    /// The job, for a job's request.
    pub job_id: Option<String>,
    /// Queued on purpose with nobody waiting (`reserve --detach`): it keeps its place until it is granted, expires
    /// or is withdrawn. Other reservation requests are withdrawn when their waiting client goes away.
    #[serde(default)]
    pub detached: bool,
    /// A detached request gives up waiting at this time (Unix ms; 0: never).
    #[serde(default)]
    pub expires_ms: u64,
}

/// A request in the queue, with its place and why it waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// 1-based place in service order.
    pub position: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
    /// Why it is not served yet, in words.
    pub waiting_because: String,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a rig.
    Queued,
    /// Given to a rig's agent, not started yet.
    Assigned,
    /// Flashing firmware.
    Flashing,
    /// Running test steps.
    Testing,
    /// Every step passed.
    Passed,
    /// A test failed.
    Failed,
    /// The infrastructure failed.
    Error,
    /// Ran past its time limit.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// The input (firmware, plan) cannot be used on the rig.
    Invalid,
}

impl Job {
    /// The job without its plan text, as lists show it.
    pub fn summary(&self) -> Job {
        Job {
            plan_toml: String::new(),
            ..self.clone()
        }
    }

    /// The job as a run report (for JUnit): the steps it ran; when it ended for a reason no step shows (a
    /// cancel or timeout its agent has not confirmed, no rig, a lost agent), one pseudo-step `job` saying why;
    /// and the plan's steps that never ran, skipped.
    pub fn run_report(&self) -> RunReport {
        let outcome = self.state.outcome().unwrap_or(Outcome::Error);
        let mut steps = self.steps.clone();
        if self.state.is_terminal() {
            let explained = steps.iter().any(|s| s.outcome.is_problem());
            if outcome != Outcome::Passed && !explained {
                steps.push(StepReport {
                    number: 0,
                    name: "job".into(),
                    kind: "job".into(),
                    outcome,
                    message: self.message.clone(),
                    ..StepReport::default()
                });
            }
            if outcome != Outcome::Passed {
                let plan =
                    crate::plan::Plan::parse(&self.plan_toml, std::path::Path::new("<plan>"));
                for p in plan.iter().flat_map(|p| &p.steps) {
                    if !steps.iter().any(|s| s.number == p.number) {
                        steps.push(StepReport {
                            number: p.number,
                            name: p.name.clone(),
                            kind: p.kind.name().into(),
                            outcome: Outcome::Skipped,
                            message: format!("not run: the job {}", self.state),
                            ..StepReport::default()
                        });
                    }
                }
            }
            steps.sort_by_key(|s| s.number);
        }
        RunReport {
            plan_changes: Vec::new(),
            plan: self.plan_name.clone(),
            rig: self.rig.clone().unwrap_or_else(|| "(no rig)".into()),
            firmware: (!self.artifact_sha256.is_empty()).then(|| FirmwareInfo {
                file: self.firmware_name.clone(),
                sha256: self.artifact_sha256.clone(),
                bytes: 0,
                revision: (!self.firmware_revision.is_empty())
                    .then(|| self.firmware_revision.clone()),
            }),
            outcome,
            started_at_ms: self.started_ms,
            duration_ms: self.finished_ms.saturating_sub(self.created_ms),
            steps,
            console: vec![],
        }
    }

    /// Gives each step the log lines it wrote (by step number).
    pub fn attach_logs<'a>(&mut self, lines: impl IntoIterator<Item = &'a crate::LogLine>) {
        for l in lines {
            if let Some(s) = self.steps.iter_mut().find(|s| s.number == l.step) {
                s.log.push(l.text.clone());
            }
        }
    }
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 10] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Flashing,
        JobState::Testing,
        JobState::Passed,
        JobState::Failed,
        JobState::Error,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Invalid,
    ];

    /// The job has ended.
    pub fn is_terminal(self) -> bool {
        self.outcome().is_some()
    }

    /// How an ended job ended.
    pub fn outcome(self) -> Option<Outcome> {
        Some(match self {
            JobState::Passed => Outcome::Passed,
            JobState::Failed => Outcome::Failed,
            JobState::Error => Outcome::Error,
            JobState::TimedOut => Outcome::TimedOut,
            JobState::Cancelled => Outcome::Cancelled,
            JobState::Invalid => Outcome::Invalid,
            _ => return None,
        })
    }

    /// The end state for a run's outcome (a run of only skipped steps passed).
    pub fn ended(outcome: Outcome) -> JobState {
        match outcome {
            Outcome::Passed | Outcome::Skipped => JobState::Passed,
            Outcome::Failed => JobState::Failed,
            Outcome::Error => JobState::Error,
            Outcome::TimedOut => JobState::TimedOut,
            Outcome::Cancelled => JobState::Cancelled,
            Outcome::Invalid => JobState::Invalid,
        }
    }

    /// The exit code a command waiting for a job in this state ends with (a job that has not ended is an
    /// infrastructure problem for a caller that stopped waiting).
    pub fn exit_code(self) -> ExitCode {
        self.outcome()
            .map(ExitCode::from_outcome)
            .unwrap_or(ExitCode::Infrastructure)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Flashing => "flashing",
            JobState::Testing => "testing",
            JobState::Passed => "passed",
            JobState::Failed => "failed",
            JobState::Error => "error",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Invalid => "invalid",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A job: a plan run on a rig for a firmware build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (`job-000042`).
    pub id: String,
    /// Where it is in its life.
    pub state: JobState,
    /// The rig it runs or ran on.
    pub rig: Option<String>,
    /// The model of the drive in that rig when the job was given it (Identify's model number, as the rig
    /// reported it; empty before then, and for jobs stored before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub drive_model: String,
    /// Which rigs it may use.
    pub selector: Selector,
    /// The plan's name.
    pub plan_name: String,
    /// The plan (TOML), as submitted (left out of job lists).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_toml: String,
    /// The firmware build (artifact sha256; empty for plans that flash nothing).
    pub artifact_sha256: String,
    /// The firmware file's name.
    pub firmware_name: String,
    /// The revision the drive reported running the build.
    pub firmware_revision: String,
    /// Its priority class.
    #[serde(alias = "class")]
    pub priority: Priority,
    /// Who submitted it.
    pub submitter: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// When a rig was assigned.
    pub started_ms: u64,
    /// When it ended.
    pub finished_ms: u64,
    /// Overall limit, queueing included.
    pub timeout_ms: u64,
    /// One line: why it ended as it did.
    pub message: String,
    /// Step results as they arrive.
    pub steps: Vec<StepReport>,
    /// Its lease, while it holds one.
    pub lease_id: Option<String>,
    /// Its lease's fencing token.
    pub fencing_token: u64,
    /// The sweep it belongs to.
    pub sweep_id: Option<String>,
    /// Attempt number within a sweep (retries of failed jobs).
    pub attempt: u32,
    /// A health check the controller scheduled itself.
    pub health_check: bool,
    /// Number of log lines stored.
    pub log_lines: u64,
    /// The rig let go of the job: it ended on its agent (or never ran, or its agent was given up on). A cancelled
    /// job is decided at once but settles only when its agent confirms it stopped.
    #[serde(default = "yes")]
    pub settled: bool,
}

fn yes() -> bool {
    true
}

/// What a drive runs, read from it (Identify and the Firmware Slot log).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveFirmware {
    /// The running revision.
    pub revision: String,
    /// The slot it runs from.
    pub active_slot: u8,
    /// What each slot holds, slot 1 first (`None`: empty).
    pub slots: Vec<Option<String>>,
}

/// A stored firmware build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// sha256 of the bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The file name it was uploaded under.
    pub name: String,
    /// When it was stored (Unix ms).
    pub stored_ms: u64,
}

/// One plan on every matching rig, compared with the previous sweep of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// Unique id (`sweep-000042`).
    pub id: String,
    /// The name sweeps are compared by.
    pub name: String,
    /// The labels that picked its rigs.
    pub labels: BTreeMap<String, String>,
    /// Its jobs, retries included.
    pub job_ids: Vec<String>,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// The previous sweep of the same name.
    pub previous: Option<String>,
    /// Re-runs of a failed rig.
    pub retries: u32,
    /// The plan's name.
    pub plan_name: String,
    /// Who submitted it.
    pub submitter: String,
    /// Matching rigs it did not run on, because they could not take work (quarantined, maintenance, offline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedRig>,
}

/// A rig a sweep matched but did not run on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRig {
    /// The rig.
    pub rig: String,
    /// Why (`quarantined: ...`).
    pub reason: String,
}

/// How a sweep cell changed against the previous sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Passed (or did not exist) last time, fails now.
    NewFailure,
    /// Failed last time, passes now.
    Fixed,
    /// Failed both times.
    StillFailing,
    /// Failed, then passed on a retry within this sweep.
    Flaky,
    /// Passed, but an io metric got worse than the threshold allows.
    Regressed,
}

impl Change {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::NewFailure => "new_failure",
            Change::Fixed => "fixed",
            Change::StillFailing => "still_failing",
            Change::Flaky => "flaky",
            Change::Regressed => "regressed",
        }
    }
}

/// One (rig, step) of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepCell {
    /// The rig.
    pub rig: String,
    /// The step's name (`(job)` when the job ended before any step ran).
    pub step: String,
    /// How it ended this time (`None`: the step did not run).
    pub outcome: Option<Outcome>,
    /// How it ended in the previous sweep.
    pub previous_outcome: Option<Outcome>,
    /// The change against the previous sweep, if notable.
    pub change: Option<Change>,
    /// The step's message, or what regressed.
    pub detail: String,
}

/// How a sweep as a whole stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepOutcome {
    /// Jobs are still running.
    Running,
    /// Everything passed with no regression.
    Passed,
    /// A test failed or an io metric regressed.
    Failed,
    /// Some job hit an infrastructure error or a timeout.
    Error,
}

impl SweepOutcome {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepOutcome::Running => "running",
            SweepOutcome::Passed => "passed",
            SweepOutcome::Failed => "failed",
            SweepOutcome::Error => "error",
        }
    }
}

/// A sweep's rig × step matrix compared with the previous sweep of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The sweep.
    pub sweep: Sweep,
    /// Every job has ended (retries included).
    pub done: bool,
    /// The rigs, in order.
    pub rigs: Vec<String>,
    /// The steps, in plan order.
    pub steps: Vec<String>,
    /// One cell per (rig, step).
    pub cells: Vec<SweepCell>,
    /// Its jobs, retries included.
    pub jobs: Vec<Job>,
    /// How it stands.
    pub outcome: SweepOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_labels() {
        let mut r = Rig::new("r1", "a", 0);
        r.labels = parse_labels("model=X1, site=lab").unwrap();
        assert!(Selector::rig("r1").matches(&r));
        assert!(!Selector::rig("r2").matches(&r));
        assert!(Selector::labels(parse_labels("model=X1").unwrap()).matches(&r));
        assert!(!Selector::labels(parse_labels("model=X2").unwrap()).matches(&r));
        assert_eq!(
            Selector::labels(r.labels.clone()).describe(),
            "model=X1,site=lab"
        );
        assert!(parse_labels("model").unwrap_err().contains("key=value"));
    }

    #[test]
    fn job_states_and_outcomes() {
        for s in JobState::ALL {
            assert_eq!(s.is_terminal(), s.outcome().is_some());
            if let Some(o) = s.outcome() {
                assert_eq!(JobState::ended(o), s);
            }
        }
    }

    #[test]
    fn a_rig_status_is_the_rig_flattened_with_its_lease() {
        let s = RigStatus {
            rig: Rig::new("r1", "a", 5),
            lease: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["name"], "r1");
        assert_eq!(v["state"], "offline");
        assert!(v["lease"].is_null());
        assert_eq!(serde_json::from_value::<RigStatus>(v).unwrap(), s);
    }

    fn cancelled_job(steps: Vec<StepReport>) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "job-000001", "state": "cancelled", "rig": "r1",
            "selector": {"rig": "r1", "labels": {}}, "plan_name": "p",
            "plan_toml": "name = \"p\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"smart\"\n",
            "artifact_sha256": "", "firmware_name": "", "firmware_revision": "",
            "priority": "ci", "submitter": "alice", "created_ms": 1, "started_ms": 2, "finished_ms": 3,
            "timeout_ms": 60000, "message": "cancelled by alice", "steps": steps,
            "lease_id": null, "fencing_token": 1, "sweep_id": null, "attempt": 0, "health_check": false,
            "log_lines": 0
        }))
        .unwrap()
    }

    fn step(number: u32, outcome: Outcome) -> StepReport {
        StepReport {
            number,
            name: format!("{number}-smart"),
            kind: "smart".into(),
            outcome,
            ..StepReport::default()
        }
    }

    #[test]
    fn a_cancelled_job_with_only_passed_steps_is_not_green_and_the_rest_is_skipped() {
        let r = cancelled_job(vec![step(1, Outcome::Passed)]).run_report();
        let got: Vec<(u32, Outcome)> = r.steps.iter().map(|s| (s.number, s.outcome)).collect();
        assert_eq!(
            got,
            vec![
                (0, Outcome::Cancelled),
                (1, Outcome::Passed),
                (2, Outcome::Skipped),
                (3, Outcome::Skipped)
            ]
        );
        let x = crate::junit::document(&[(&r, "p@r1".into())]);
        assert!(x.contains(r#"type="cancelled""#), "{x}");
        assert_eq!(x.matches("<skipped ").count(), 2, "{x}");
    }

    #[test]
    fn a_cancelled_job_its_agent_confirmed_keeps_the_agents_steps() {
        let r = cancelled_job(vec![
            step(1, Outcome::Passed),
            step(2, Outcome::Cancelled),
            step(3, Outcome::Skipped),
        ])
        .run_report();
        let got: Vec<(u32, Outcome)> = r.steps.iter().map(|s| (s.number, s.outcome)).collect();
        assert_eq!(
            got,
            vec![
                (1, Outcome::Passed),
                (2, Outcome::Cancelled),
                (3, Outcome::Skipped)
            ]
        );
    }
}
