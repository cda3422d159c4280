//! `format`: Format NVM on namespace 1.

use std::time::Instant;

use super::super::context::{Ctx, Fail, StepResult};

pub(super) fn run(ctx: &mut Ctx<'_>, lbaf: u8, ses: u8, deadline: Instant) -> StepResult {
    let d = ctx.drive(deadline)?;
    d.controller()
        .format_nvm(1, lbaf, ses)
        .map_err(|e| Fail::nvme("Format NVM", &e))?;
    Ok(format!(
        "formatted namespace 1 with LBA format {lbaf}, secure erase setting {ses}"
    ))
}
