//! `console_expect`: wait for a console line matching a regular expression (placeholders filled in).

use std::time::{Duration, Instant};

use nvfarm_model::plan::placeholders::substitute_with;
use nvfarm_model::Outcome;
use regex::Regex;

use super::super::context::{Ctx, Fail, StepLog, StepResult};
use std::sync::atomic::Ordering;

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    pattern: &str,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let Some(console) = &ctx.console else {
        return Err(Fail::error(format!(
            "rig {} has no console (add console = ... to its rig file)",
            ctx.rig.name
        )));
    };
    // Values (a model name with `+` or `(`) match themselves: they are escaped, the pattern around them is not.
    let pat = substitute_with(pattern, &ctx.vars, regex::escape)
        .map_err(|e| Fail::error(format!("pattern: {e}")))?;
    let re = Regex::new(&pat).map_err(|e| Fail::error(format!("pattern /{pat}/: {e}")))?;
    // Wait in slices so a cancellation is noticed.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console.expect(
            &re,
            left.min(Duration::from_millis(250)),
            &mut ctx.console_cursor,
        ) {
            Ok(line) => {
                return Ok(format!(
                    "console matched /{pat}/ at +{:.3}s: {}",
                    line.at_ms as f64 / 1000.0,
                    line.text
                ))
            }
            Err(_) if ctx.opts.cancel.load(Ordering::Relaxed) => {
                return Err(Fail::new(
                    Outcome::Cancelled,
                    format!("cancelled while waiting for /{pat}/ on the console"),
                ))
            }
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => {
                let waited =
                    Duration::from_millis(log.started.elapsed().as_millis() as u64 / 10 * 10);
                return Err(Fail::failed(format!(
                    "no console line matched /{pat}/ within {} ({} line(s) captured)",
                    humantime::format_duration(waited),
                    console.len()
                )));
            }
        }
    }
}
