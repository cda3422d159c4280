//! `nvme`: one NVMe command with the fields the plan gives, sent through the same passthrough seam as every
//! other step, and checked against the status the plan expects. A new check needs a plan, not new code.

use std::time::{Duration, Instant};

use flash_tools::controller::describe;
use flash_tools::Data;
use nvfarm_model::plan::{CommandQueue, NvmeCommandStep};
use nvfarm_model::Outcome;
use nvme_spec::{Command, Queue, Status};

use super::super::context::{Ctx, Fail, StepLog, StepResult};

/// How many bytes of the returned data the log shows.
const SHOWN: usize = 64;

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    s: &NvmeCommandStep,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let d = ctx.drive(deadline)?;
    let ctrl = d.controller().clone().with_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100)),
    ));
    let queue = match s.queue {
        CommandQueue::Admin => Queue::Admin,
        CommandQueue::Io => Queue::Io,
    };
    let cmd = Command {
        opcode: s.opcode,
        nsid: s.nsid,
        cdw10: s.cdw[0],
        cdw11: s.cdw[1],
        cdw12: s.cdw[2],
        cdw13: s.cdw[3],
        cdw14: s.cdw[4],
        cdw15: s.cdw[5],
        ..Default::default()
    };
    let what = describe(queue, &cmd);
    log.line(format!(
        "{what}: nsid {:#x}, cdw10-15 {:#x?}{}{}",
        s.nsid,
        s.cdw,
        if s.data_in > 0 {
            format!(", {} bytes in", s.data_in)
        } else {
            String::new()
        },
        if s.data_out.is_empty() {
            String::new()
        } else {
            format!(", {} bytes out", s.data_out.len())
        }
    ));
    let mut buf = vec![0u8; s.data_in as usize];
    let data = if s.data_in > 0 {
        Data::FromDevice(&mut buf)
    } else if !s.data_out.is_empty() {
        Data::ToDevice(&s.data_out)
    } else {
        Data::None
    };
    let c = ctrl.submit_raw(queue, &cmd, data).map_err(|e| {
        let outcome = if e.is_timeout() {
            Outcome::TimedOut
        } else {
            Outcome::Error
        };
        Fail::new(outcome, format!("{what} got no completion: {e}"))
    })?;
    log.metric("status_code", c.status.code() as f64);
    log.line(format!(
        "completed: {} (dword 0 {:#010x})",
        c.status, c.result
    ));
    if s.data_in > 0 {
        let shown: String = buf.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
        log.line(format!(
            "data: {shown}{}",
            if buf.len() > SHOWN { " ..." } else { "" }
        ));
    }
    let want = Status::from_code(s.expect);
    if c.status.code() != s.expect {
        return Err(Fail::failed(format!(
            "{what} completed with {}, expected {} ({:#05x})",
            c.status,
            want.name(),
            s.expect
        )));
    }
    Ok(format!("{what}: {} as expected", want.name()))
}
