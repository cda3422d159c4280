//! Outcomes and run reports: what a plan run produced, kept apart by kind everywhere (report, exit code, JUnit).
//!
//! - `passed`: the step's checks held.
//! - `failed`: the drive or its firmware did something wrong (a check failed, a command was rejected).
//! - `error`: the infrastructure failed (drive gone, power control broken, rig unusable): not the firmware's fault.
//! - `timed_out`: the step (or a command in it) ran past its time limit.
//! - `skipped`: not run, because an earlier step stopped the plan.
//! - `cancelled`: the run was cancelled.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::console::ConsoleLine;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Skipped,
    Failed,
    Cancelled,
    TimedOut,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
            Outcome::TimedOut => "timed_out",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The process exit code for a run that ended this way: 0 passed, 1 failed, 3 infrastructure error,
    /// 4 timed out or cancelled.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Passed | Outcome::Skipped => 0,
            Outcome::Failed => 1,
            Outcome::Error => 3,
            Outcome::TimedOut | Outcome::Cancelled => 4,
        }
    }

    /// The plan's outcome from its steps: an infrastructure error outranks a timeout, which outranks a
    /// cancellation, which outranks a test failure; skipped steps do not count.
    pub fn overall(steps: impl IntoIterator<Item = Outcome>) -> Outcome {
        steps
            .into_iter()
            .filter(|o| *o != Outcome::Skipped)
            .max()
            .unwrap_or(Outcome::Passed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Outcome::Passed,
            Outcome::Failed,
            Outcome::Error,
            Outcome::TimedOut,
            Outcome::Skipped,
            Outcome::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| format!("unknown outcome '{s}'"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub number: usize,
    pub name: String,
    pub kind: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// One line saying what happened (the failure's cause when not passed).
    pub message: String,
    pub log: Vec<String>,
    /// Numbers worth comparing across runs: IOPS, latency percentiles, temperatures.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FirmwareInfo {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// Revision the drive should report: a simulated image's header, or what the flash step verified.
    pub revision: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub plan: String,
    pub rig: String,
    pub firmware: Option<FirmwareInfo>,
    pub outcome: Outcome,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    pub duration_ms: u64,
    pub steps: Vec<StepReport>,
    pub console: Vec<ConsoleLine>,
}

impl RunReport {
    pub fn summary(&self) -> String {
        let count = |o: Outcome| self.steps.iter().filter(|s| s.outcome == o).count();
        format!(
            "{} on {}: {} ({} passed, {} failed, {} error, {} timed out, {} skipped) in {:.1}s",
            self.plan,
            self.rig,
            self.outcome.as_str().to_uppercase(),
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::Error),
            count(Outcome::TimedOut),
            count(Outcome::Skipped),
            self.duration_ms as f64 / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_outcome_and_exit_codes() {
        use Outcome::*;
        assert_eq!(Outcome::overall([Passed, Skipped]), Passed);
        assert_eq!(Outcome::overall([Passed, Failed, Skipped]), Failed);
        assert_eq!(Outcome::overall([Failed, TimedOut]), TimedOut);
        assert_eq!(Outcome::overall([TimedOut, Error, Failed]), Error);
        assert_eq!(Outcome::overall([]), Passed);
        assert_eq!(
            [Passed, Failed, Error, TimedOut, Cancelled].map(Outcome::exit_code),
            [0, 1, 3, 4, 4]
        );
        assert_eq!("timed_out".parse::<Outcome>(), Ok(TimedOut));
    }
}
