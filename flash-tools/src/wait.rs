//! Running long drive operations to their end: a device self-test and a sanitize, each bounded by a deadline
//! and stoppable (an aborted self-test is aborted on the drive too). `nvme-flash self-test --wait` and the plan
//! runner share these, so both detect the end the same way and neither can wait forever.

use std::thread;
use std::time::{Duration, Instant};

use nvme_spec::command::self_test_code;
use nvme_spec::{SanitizeStatus, SelfTestResult, NSID_ALL};

use crate::controller::{Controller, NvmeError};

/// How often the drive is polled: quickly at first (short operations end soon), then at most every 200 ms.
#[derive(Debug)]
struct Poll(Duration);

impl Poll {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(200);
    fn new() -> Self {
        Poll(Self::FIRST)
    }
    fn sleep(&mut self) {
        thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

/// Why a wait ended before the operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The deadline passed.
    Deadline,
    /// The caller asked to stop.
    Cancelled,
}

/// What bounds a wait and what it reports along the way.
pub struct Bounds<'a> {
    /// When to give up.
    pub deadline: Instant,
    /// Polled between reads of the drive; `true` stops the wait.
    pub cancelled: &'a dyn Fn() -> bool,
    /// Called with the percentage done whenever it changes.
    pub progress: &'a mut dyn FnMut(u8),
}

impl std::fmt::Debug for Bounds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounds")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Bounds<'_> {
    fn stopped(&self) -> Option<Stopped> {
        if (self.cancelled)() {
            Some(Stopped::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Stopped::Deadline)
        } else {
            None
        }
    }
}

/// How a device self-test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfTestEnd {
    /// The drive finished it; this is its result (completed or the failure the drive logged).
    Finished(SelfTestResult),
    /// The drive shows no self-test running yet has no result in its log: a firmware defect.
    NoResult,
    /// The wait ended first; the self-test was aborted on the drive.
    Stopped {
        /// Why.
        why: Stopped,
        /// The last percentage the drive reported.
        last_percent: u8,
    },
}

/// Starts self-test `code` (short or extended) on namespace `nsid` (`NSID_ALL`: every namespace and the
/// controller) and waits for its result.
pub fn self_test(
    ctrl: &Controller,
    nsid: u32,
    code: u8,
    bounds: Bounds<'_>,
) -> Result<SelfTestEnd, NvmeError> {
    ctrl.device_self_test(nsid, code)?;
    let mut last = None;
    let mut poll = Poll::new();
    loop {
        if let Some(why) = bounds.stopped() {
            // Best effort: the caller is told what happened either way.
            let _ = ctrl.device_self_test(NSID_ALL, self_test_code::ABORT);
            return Ok(SelfTestEnd::Stopped {
                why,
                last_percent: last.unwrap_or(0),
            });
        }
        let now = ctrl.self_test_log()?;
        // The drive sets the current operation when it accepts the command and clears it when the test ends
        // (NVMe base specification, Device Self-test): nothing running now means ours ended, and the newest entry
        // is its result. The log's length or head need not change: a full log (20 entries, oldest dropped) of
        // identical results looks the same before and after.
        if now.current_operation == 0 {
            return Ok(match now.results.first() {
                Some(r) => SelfTestEnd::Finished(r.clone()),
                None => SelfTestEnd::NoResult,
            });
        }
        if last != Some(now.completion) {
            last = Some(now.completion);
            (bounds.progress)(now.completion);
        }
        poll.sleep();
    }
}

/// How a sanitize ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SanitizeEnd {
    /// The drive says it completed.
    Completed(SanitizeStatus),
    /// The drive says it failed.
    Failed(SanitizeStatus),
    /// The wait ended first (a sanitize cannot be aborted; it continues on the drive).
    Stopped {
        /// Why.
        why: Stopped,
        /// The last status read.
        status: SanitizeStatus,
    },
}

/// Starts sanitize `action` and waits for the drive to report its end.
pub fn sanitize(
    ctrl: &Controller,
    action: u8,
    bounds: Bounds<'_>,
) -> Result<SanitizeEnd, NvmeError> {
    ctrl.sanitize(action, 0)?;
    let mut last = None;
    let mut poll = Poll::new();
    loop {
        let st = ctrl.sanitize_status()?;
        match st.sstat & 0x7 {
            1 | 4 => return Ok(SanitizeEnd::Completed(st)),
            3 => return Ok(SanitizeEnd::Failed(st)),
            _ => {}
        }
        if let Some(why) = bounds.stopped() {
            return Ok(SanitizeEnd::Stopped { why, status: st });
        }
        let pct = (st.sprog as u64 * 100 / 65536) as u8;
        if last != Some(pct) {
            last = Some(pct);
            (bounds.progress)(pct);
        }
        poll.sleep();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sim::state::Timing;
    use crate::sim::{SimConfig, SimController};
    use nvme_spec::log_page::self_test_result;

    #[test]
    fn twenty_five_self_tests_in_a_row_each_end_with_their_result() {
        let t = tempfile::tempdir().unwrap();
        let sim = SimController::create(
            &t.path().join("drive"),
            &SimConfig {
                timing: Timing {
                    boot_ms: 10,
                    self_test_short_ms: 30,
                    self_test_extended_ms: 60,
                },
                ..SimConfig::default()
            },
        )
        .unwrap();
        let ctrl = Controller::new(Arc::new(sim)).with_timeout(Some(Duration::from_secs(5)));
        while ctrl.identify_controller().is_err() {
            thread::sleep(Duration::from_millis(5));
        }
        for n in 1..=25 {
            let end = self_test(
                &ctrl,
                NSID_ALL,
                self_test_code::SHORT,
                Bounds {
                    deadline: Instant::now() + Duration::from_secs(10),
                    cancelled: &|| false,
                    progress: &mut |_| {},
                },
            )
            .unwrap();
            match end {
                SelfTestEnd::Finished(r) => assert_eq!(r.result, self_test_result::COMPLETED),
                other => panic!("self-test {n} did not end with a result: {other:?}"),
            }
        }
        // The log keeps the newest 20, as a drive's does.
        assert_eq!(ctrl.self_test_log().unwrap().results.len(), 20);
    }
}
