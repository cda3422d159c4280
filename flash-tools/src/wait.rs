//! Running long drive operations to their end: a device self-test and a sanitize, each bounded by a deadline
//! and stoppable (an aborted self-test is aborted on the drive too). `nvme-flash self-test --wait` and the plan
//! runner share these, so both detect the end the same way and neither can wait forever.

use std::thread;
use std::time::{Duration, Instant};

use nvme_spec::command::self_test_code;
use nvme_spec::{SanitizeStatus, SelfTestResult, NSID_ALL};

use crate::controller::{Controller, NvmeError};

/// How often the drive is polled.
const POLL: Duration = Duration::from_millis(200);

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
    let before = ctrl.self_test_log()?;
    ctrl.device_self_test(nsid, code)?;
    let mut last = None;
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
        // Finished when nothing runs and a new result heads the log (the log holds at most 20, newest first).
        let new_result = now.results.len() > before.results.len()
            || now.results.first() != before.results.first();
        if now.current_operation == 0 && new_result {
            let r = now.results.first().cloned().expect("a new result");
            return Ok(SelfTestEnd::Finished(r));
        }
        if last != Some(now.completion) {
            last = Some(now.completion);
            (bounds.progress)(now.completion);
        }
        thread::sleep(POLL);
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
        thread::sleep(POLL);
    }
}
