//! What a plan run produced: one [`StepReport`] per step and the [`RunReport`] around them, plus the log lines
//! and console lines they carry. These are the one shape a step result has from the runner to JUnit: the agent
//! sends them, the controller stores them, farmctl and the dashboard show them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;

/// One step's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    /// 1-based position in the plan (0 for the setup pseudo-step of a rig that could not be prepared). Log lines
    /// carry this number, so a step's log is found by it, never by its name (names need not be unique).
    pub number: u32,
    /// The step's name from the plan (or its default, `N-kind`).
    pub name: String,
    /// The step kind (`flash`, `io`, ...).
    pub kind: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time spent in the step.
    pub duration_ms: u64,
    /// One line saying what happened (the failure's cause when not passed).
    pub message: String,
    /// The step's log lines (empty where logs travel separately, as between agent and controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// Numbers worth comparing across runs: IOPS, latency percentiles, temperatures.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl StepReport {
    /// `name (kind)`, as step lists show it.
    pub fn title(&self) -> String {
        format!("{} ({})", self.name, self.kind)
    }

    /// The one-line status every list of steps prints: number, title, outcome, seconds, message.
    pub fn status_line(&self) -> String {
        format!(
            "[{:>2}] {:<26} {:<9} {:>6.1}s  {}",
            self.number,
            self.title(),
            self.outcome.as_str().to_uppercase(),
            self.duration_ms as f64 / 1000.0,
            self.message
        )
    }
}

/// The firmware build a run flashed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FirmwareInfo {
    /// The file it came from (or the name it was uploaded under).
    pub file: String,
    /// sha256 of the image, hex.
    pub sha256: String,
    /// Image size.
    pub bytes: u64,
    /// Revision the drive reported running it, when the flash step verified it (or the caller said).
    pub revision: Option<String>,
}

/// One captured console line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Milliseconds since capture started.
    pub at_ms: u64,
    /// The line, without its newline.
    pub text: String,
}

/// One line of a job's log, attributed to the step that wrote it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    /// The step's number ([`StepReport::number`]); 0 for lines outside any step (setup, the final summary).
    pub step: u32,
    /// The text.
    pub text: String,
}

/// A whole run of a plan on a rig.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// The plan's name.
    pub plan: String,
    /// Settings of the plan changed for this run (`bench-agent run --set STEP.KEY=VALUE`), as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_changes: Vec<String>,
    /// The rig it ran on.
    pub rig: String,
    /// The firmware it flashed, if any.
    pub firmware: Option<FirmwareInfo>,
    /// The worst step outcome.
    pub outcome: Outcome,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    /// Wall time of the whole run.
    pub duration_ms: u64,
    /// Every step of the plan, run or not.
    pub steps: Vec<StepReport>,
    /// The rig's console during the run.
    pub console: Vec<ConsoleLine>,
}

impl RunReport {
    /// `smoke on rig-a: FAILED (3 passed, 1 failed, ...) in 12.3s`.
    pub fn summary(&self) -> String {
        let count = |o: Outcome| self.steps.iter().filter(|s| s.outcome == o).count();
        format!(
            "{} on {}: {} ({} passed, {} failed, {} error, {} timed out, {} cancelled, {} skipped) in {:.1}s",
            self.plan,
            self.rig,
            self.outcome.as_str().to_uppercase(),
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::Error),
            count(Outcome::TimedOut),
            count(Outcome::Cancelled),
            count(Outcome::Skipped),
            self.duration_ms as f64 / 1000.0
        )
    }

    /// The first step that did not pass (or was not skipped), which says why the run ended as it did.
    pub fn first_problem(&self) -> Option<&StepReport> {
        self.steps
            .iter()
            .find(|s| !matches!(s.outcome, Outcome::Passed | Outcome::Skipped))
    }

    /// One line for a job's message: the summary when passed, else the step that decided the outcome.
    pub fn headline(&self) -> String {
        match (self.outcome, self.first_problem()) {
            (Outcome::Passed, _) | (_, None) => self.summary(),
            (_, Some(s)) => format!("step {} {}: {}: {}", s.number, s.name, s.outcome, s.message),
        }
    }
}

/// "Worse" direction of a headline metric: +1 higher is worse, -1 lower is worse, 0 not compared. Medians and
/// means of short runs swing too much between runs to call a change in them a regression; IOPS, bandwidth and
/// p99 latency are what a regression shows in.
pub fn direction(metric: &str) -> i32 {
    if metric.ends_with("_iops") || metric == "iops" || metric.contains("_bw_") {
        -1
    } else if metric.ends_with("_lat_p99_us") {
        1
    } else {
        0
    }
}
