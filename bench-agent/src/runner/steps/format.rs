//! `format`: Format NVM on namespace 1.

use std::time::Instant;

use super::super::context::{Ctx, Fail, StepResult};

pub(super) fn run(ctx: &mut Ctx<'_>, lbaf: u8, ses: u8, deadline: Instant) -> StepResult {
    let d = ctx.drive(deadline)?;
    // One command: a cancel is honoured before it is sent; once sent, the drive finishes it.
    if ctx.opts.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Fail::new(
            nvfarm_model::Outcome::Cancelled,
            "cancelled before Format NVM was sent",
        ));
    }
    d.controller()
        .format_nvm(1, lbaf, ses)
        .map_err(|e| Fail::nvme("Format NVM", &e))?;
    Ok(format!(
        "formatted namespace 1 with LBA format {lbaf}, secure erase setting {ses}"
    ))
}
