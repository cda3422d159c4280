//! `selftest`: run a device self-test to its result, aborting it at the deadline or on cancel.

use std::sync::atomic::Ordering;
use std::time::Instant;

use flash_tools::wait::{self, Bounds, SelfTestEnd, Stopped};
use nvfarm_model::plan::SelfTestKind;
use nvfarm_model::Outcome;
use nvme_spec::command::self_test_code;
use nvme_spec::log_page::self_test_result;
use nvme_spec::NSID_ALL;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    test: SelfTestKind,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let d = ctx.drive(deadline)?;
    let code = match test {
        SelfTestKind::Short => self_test_code::SHORT,
        SelfTestKind::Extended => self_test_code::EXTENDED,
    };
    log.line(format!("{test:?} self-test starting"));
    let cancel = ctx.opts.cancel.clone();
    let end = wait::self_test(
        d.controller(),
        NSID_ALL,
        code,
        Bounds {
            deadline,
            cancelled: &|| cancel.load(Ordering::Relaxed),
            progress: &mut |pct| log.line(format!("self-test {pct}% done")),
        },
    )
    .map_err(|e| Fail::nvme("Device Self-test", &e))?;
    match end {
        SelfTestEnd::Finished(r) => {
            log.metric("self_test_result", r.result as f64);
            if r.result == self_test_result::COMPLETED {
                return Ok(format!("{test:?} self-test completed without error"));
            }
            let detail = if r.segment != 0 {
                format!(" (segment {}, failing LBA {})", r.segment, r.failing_lba)
            } else {
                String::new()
            };
            Err(Fail::failed(format!(
                "{test:?} self-test {}{detail}",
                r.result_text
            )))
        }
        SelfTestEnd::NoResult => Err(Fail::failed(format!(
            "{test:?} self-test: the drive shows no self-test running and no result in its log"
        ))),
        SelfTestEnd::Stopped { why, last_percent } => {
            let (outcome, why) = match why {
                Stopped::Cancelled => (Outcome::Cancelled, "cancelled; aborted"),
                Stopped::Deadline => (Outcome::TimedOut, "did not finish in time; aborted"),
            };
            Err(Fail::new(
                outcome,
                format!("{test:?} self-test {why} (last at {last_percent}%)"),
            ))
        }
    }
}
