//! One executor per step kind. Each gets the run's context, the step's deadline and its log, and returns the
//! message of a passed step or a [`Fail`](super::context::Fail) with the outcome it deserves.

mod console_expect;
mod flash;
mod format;
mod identify;
mod io;
mod nvme;
mod parallel;
mod power_cycle;
mod sanitize;
mod script;
mod selftest;
mod smart;
mod wait_for_drive;

use std::time::Instant;

use nvfarm_model::plan::{Step, StepKind};

use super::context::{Ctx, StepLog, StepResult};

/// Runs one step until it ends or `deadline` passes.
pub(crate) fn exec(
    ctx: &mut Ctx<'_>,
    step: &Step,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    match &step.kind {
        StepKind::Flash {
            activate,
            slot,
            wait_timeout,
            rollback,
        } => flash::run(
            ctx,
            *activate,
            *slot,
            *wait_timeout,
            *rollback,
            deadline,
            log,
        ),
        StepKind::Identify { expect } => identify::run(ctx, expect, deadline, log),
        StepKind::Smart { .. } => smart::run(ctx, &step.kind, deadline, log),
        StepKind::SelfTest { test } => selftest::run(ctx, *test, deadline, log),
        StepKind::Format { lbaf, ses } => format::run(ctx, *lbaf, *ses, deadline),
        StepKind::Sanitize { action } => sanitize::run(ctx, *action, deadline, log),
        StepKind::Io(io) => io::run(ctx, &step.name, io, deadline, log),
        StepKind::PowerCycle { off_time, wait } => {
            power_cycle::run(ctx, *off_time, *wait, deadline, log)
        }
        StepKind::WaitForDrive => wait_for_drive::run(ctx, deadline, log),
        StepKind::ConsoleExpect { pattern } => console_expect::run(ctx, pattern, deadline, log),
        StepKind::Nvme(cmd) => nvme::run(ctx, cmd, deadline, log),
        StepKind::Parallel { steps } => parallel::run(ctx, steps, deadline, log),
        StepKind::Script {
            command,
            env,
            expect_exit,
        } => script::run(ctx, command, env, *expect_exit, deadline, log),
    }
}
