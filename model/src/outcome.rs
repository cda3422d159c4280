//! How a step, a run or a job ended, kept apart by kind everywhere (report, exit code, JUnit, dashboard):
//!
//! - `passed`: the step's checks held.
//! - `failed`: the drive or its firmware did something wrong (a check failed, a command was rejected).
//! - `error`: the infrastructure failed (drive gone, power control broken, rig unusable): not the firmware's fault.
//! - `timed_out`: the step (or a command in it) ran past its time limit.
//! - `skipped`: not run, because an earlier step stopped the plan.
//! - `cancelled`: the run was cancelled.
//! - `invalid`: the input cannot be used here (a firmware file that is not an image for this drive, a plan step
//!   the bench cannot run): the submitter's to fix, not the drive's fault and not the farm's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How something ended. The order is severity: a run's outcome is its worst step's.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The checks held.
    #[default]
    Passed,
    /// Not run because an earlier step stopped the plan.
    Skipped,
    /// The drive or its firmware did something wrong.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// A step or command ran past its time limit.
    TimedOut,
    /// The input cannot be used here (firmware, plan).
    Invalid,
    /// The infrastructure failed.
    Error,
}

impl Outcome {
    /// Every outcome, in severity order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Passed,
        Outcome::Skipped,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::TimedOut,
        Outcome::Invalid,
        Outcome::Error,
    ];

    /// The lowercase name used in JSON, JUnit and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
            Outcome::TimedOut => "timed_out",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Invalid => "invalid",
        }
    }

    /// The plan's outcome from its steps: an infrastructure error outranks invalid input, which outranks a
    /// timeout, which outranks a cancellation, which outranks a test failure; skipped steps do not count.
    pub fn overall(steps: impl IntoIterator<Item = Outcome>) -> Outcome {
        steps
            .into_iter()
            .filter(|o| *o != Outcome::Skipped)
            .max()
            .unwrap_or(Outcome::Passed)
    }

    /// Anything but passed or skipped: a JUnit failure or error.
    pub fn is_problem(self) -> bool {
        !matches!(self, Outcome::Passed | Outcome::Skipped)
    }

    /// A failure of some kind (failed, error, timed out): what a sweep compares across runs.
    pub fn is_bad(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Error | Outcome::TimedOut)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!("unknown outcome '{s}': expected passed, failed, error, timed_out, skipped, cancelled or invalid")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_step_decides() {
        use Outcome::*;
        assert_eq!(Outcome::overall([Passed, Skipped]), Passed);
        assert_eq!(Outcome::overall([Passed, Failed, Skipped]), Failed);
        assert_eq!(Outcome::overall([Failed, TimedOut]), TimedOut);
        assert_eq!(Outcome::overall([TimedOut, Error, Failed]), Error);
        assert_eq!(Outcome::overall([Failed, Invalid, Skipped]), Invalid);
        assert_eq!(Outcome::overall([]), Passed);
        assert_eq!("timed_out".parse::<Outcome>(), Ok(TimedOut));
        assert!("green"
            .parse::<Outcome>()
            .unwrap_err()
            .contains("timed_out"));
    }
}
