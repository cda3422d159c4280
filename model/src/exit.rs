//! The exit codes every nvfarm command shares (`nvme-flash`, `bench-agent run`, `farmctl run` and `sweep`), so a
//! pipeline tells a failed test from a broken farm the same way whichever tool it called.

use crate::outcome::Outcome;

/// How a command ended, as a process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitCode {
    /// 0: everything passed.
    Passed = 0,
    /// 1: a test failed; the firmware or the drive did something wrong.
    Failed = 1,
    /// 2: bad input or usage (a plan, rig file, firmware file, flag or value that cannot work).
    Usage = 2,
    /// 3: the infrastructure failed (rig unusable, agent lost, controller unreachable, no usable rig).
    Infrastructure = 3,
    /// 4: timed out or cancelled.
    TimedOut = 4,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for a run that ended with `outcome`.
    pub fn from_outcome(outcome: Outcome) -> ExitCode {
        match outcome {
            Outcome::Passed | Outcome::Skipped => ExitCode::Passed,
            Outcome::Failed => ExitCode::Failed,
            Outcome::Invalid => ExitCode::Usage,
            Outcome::Error => ExitCode::Infrastructure,
            Outcome::TimedOut | Outcome::Cancelled => ExitCode::TimedOut,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_codes() {
        use Outcome::*;
        assert_eq!(
            [Passed, Skipped, Failed, Error, TimedOut, Cancelled]
                .map(|o| ExitCode::from_outcome(o).code()),
            [0, 0, 1, 3, 4, 4]
        );
        assert_eq!(ExitCode::Usage.code(), 2);
    }
}
