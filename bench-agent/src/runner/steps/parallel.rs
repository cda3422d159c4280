//! `parallel`: a group of steps run at the same time, each on its own thread with its own view of the rig (an
//! io workload while the firmware is flashed and activated, while the drive is reset or power-cycled). The group
//! waits for every member and ends as the worst of them; each member's log lines and metrics appear in the
//! group's under the member's name, and values a member sets (the firmware revision a flash found) are kept.

use std::collections::BTreeMap;
use std::time::Instant;

use nvfarm_model::plan::Step;
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};
use super::super::Quiet;

/// What one member did.
struct Member {
    outcome: Outcome,
    message: String,
    lines: Vec<String>,
    metrics: BTreeMap<String, f64>,
    vars: BTreeMap<String, String>,
}

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    members: &[Step],
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    log.line(format!(
        "{} steps at once: {}",
        members.len(),
        members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let before = ctx.vars.clone();
    let done: Vec<Member> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .map(|m| {
                let mut mctx = ctx.member();
                s.spawn(move || {
                    let t0 = Instant::now();
                    let mut quiet = Quiet;
                    let mut mlog = StepLog::new(m, &mut quiet, t0);
                    let r = super::exec(&mut mctx, m, deadline.min(t0 + m.timeout), &mut mlog);
                    let (lines, metrics) = mlog.finish();
                    let (outcome, message) = match r {
                        Ok(msg) => (Outcome::Passed, msg),
                        Err(f) => (f.outcome, f.message),
                    };
                    Member {
                        outcome,
                        message,
                        lines,
                        metrics,
                        vars: mctx.vars,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Member {
                    outcome: Outcome::Error,
                    message: "the step's thread panicked (a bug in bench-agent)".into(),
                    lines: vec![],
                    metrics: BTreeMap::new(),
                    vars: BTreeMap::new(),
                })
            })
            .collect()
    });
    let mut summary = vec![];
    for (m, d) in members.iter().zip(&done) {
        for l in &d.lines {
            log.line(format!("[{}] {l}", m.name));
        }
        for (k, v) in &d.metrics {
            log.metric(&format!("{}.{k}", m.name), *v);
        }
        // What a member learned (a flash's new revision) counts for the steps after the group.
        for (k, v) in &d.vars {
            if before.get(k) != Some(v) {
                ctx.vars.insert(k.clone(), v.clone());
            }
        }
        summary.push(format!("{}: {} ({})", m.name, d.outcome, d.message));
    }
    let worst = Outcome::overall(done.iter().map(|d| d.outcome));
    let message = summary.join("; ");
    if worst == Outcome::Passed {
        Ok(message)
    } else {
        Err(Fail::new(worst, message))
    }
}
