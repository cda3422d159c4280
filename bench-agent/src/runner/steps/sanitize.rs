//! `sanitize`: sanitize the drive and wait for the drive to report the end.

use std::time::Instant;

use std::sync::atomic::Ordering;

use flash_tools::wait::{self, Bounds, SanitizeEnd, Stopped};
use nvfarm_model::plan::SanitizeKind;
use nvfarm_model::Outcome;
use nvme_spec::command::sanitize_action;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    action: SanitizeKind,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let d = ctx.drive(deadline)?;
    let a = match action {
        SanitizeKind::BlockErase => sanitize_action::BLOCK_ERASE,
        SanitizeKind::CryptoErase => sanitize_action::CRYPTO_ERASE,
        SanitizeKind::Overwrite => sanitize_action::OVERWRITE,
    };
    let cancel = ctx.opts.cancel.clone();
    let end = wait::sanitize(
        d.controller(),
        a,
        Bounds {
            deadline,
            cancelled: &|| cancel.load(Ordering::Relaxed),
            progress: &mut |pct| log.line(format!("sanitize in progress ({pct}%)")),
        },
    )
    .map_err(|e| Fail::nvme("Sanitize", &e))?;
    match end {
        SanitizeEnd::Completed(_) => Ok(format!("sanitize ({action:?}) completed")),
        SanitizeEnd::Failed(st) => Err(Fail::failed(format!(
            "sanitize ({action:?}) failed (SSTAT {:#x})",
            st.sstat
        ))),
        SanitizeEnd::Stopped {
            why: Stopped::Cancelled,
            status,
        } => Err(Fail::new(
            Outcome::Cancelled,
            format!(
                "cancelled while the drive sanitizes ({}% done; a sanitize cannot be aborted and goes on)",
                status.sprog as u64 * 100 / 65536
            ),
        )),
        SanitizeEnd::Stopped { .. } => Err(Fail::new(
            Outcome::TimedOut,
            "sanitize did not complete in time (it goes on in the drive)",
        )),
    }
}
