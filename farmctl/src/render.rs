//! What farmctl prints: tables for people on stdout, the model's records as JSON for tools (`--json`, the same
//! shapes as the controller's `/api`), and progress on stderr.

use std::io::Write;

use nvfarm_model::farm::{labels_text, Job, Lease, QueueEntry, RigStatus, SweepReport};
use nvfarm_model::time::rfc3339;

/// Prints `v` as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => out(s),
        Err(e) => eprintln!("farmctl: cannot render JSON: {e}"),
    }
}

/// Prints a line on stdout.
pub fn out(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints a progress line on stderr.
pub fn note(line: impl std::fmt::Display) {
    eprintln!("farmctl: {line}");
}

/// Prints rows under headers, each column as wide as its widest cell (the last column is not padded).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    out(line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        out(line(r));
    }
}

/// The rig table.
pub fn rigs(rigs: &[RigStatus]) {
    let rows = rigs
        .iter()
        .map(|s| {
            let r = &s.rig;
            let who = match &s.lease {
                Some(l) => format!(
                    "{} ({}){}",
                    l.holder,
                    l.id,
                    if l.kind == nvfarm_model::farm::LeaseKind::Reservation {
                        format!(" until {}", rfc3339(l.expires_ms))
                    } else {
                        String::new()
                    }
                ),
                None => r.reason.clone(),
            };
            let mut state = r.state.to_string();
            if r.health_check_pending {
                state.push('*');
            }
            vec![
                r.name.clone(),
                r.agent.clone(),
                state,
                labels_text(&r.labels),
                r.firmware_revision.clone(),
                who,
            ]
        })
        .collect();
    table(
        &[
            "RIG",
            "AGENT",
            "STATE",
            "LABELS",
            "FIRMWARE",
            "HOLDER / REASON",
        ],
        rows,
    );
}

/// One lease, as `reserve` prints it.
pub fn reserved(l: &Lease) {
    out(format!(
        "reserved {} as {} until {} (fencing token {})",
        l.rig,
        l.id,
        rfc3339(l.expires_ms),
        l.fencing_token
    ));
}

/// The job table.
pub fn jobs(jobs: &[Job]) {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.state.to_string(),
                j.rig.clone().unwrap_or_else(|| "-".into()),
                j.plan_name.clone(),
                j.firmware_name.clone(),
                j.submitter.clone(),
                j.message.clone(),
            ]
        })
        .collect();
    table(
        &["JOB", "STATE", "RIG", "PLAN", "FIRMWARE", "BY", "MESSAGE"],
        rows,
    );
}

/// One job and its steps.
pub fn job(j: &Job) {
    out(format!(
        "{} {} on {} ({} by {}): {}",
        j.id,
        j.state.as_str().to_uppercase(),
        j.rig.as_deref().unwrap_or("-"),
        j.plan_name,
        j.submitter,
        j.message
    ));
    for s in &j.steps {
        out(format!("  {}", s.status_line()));
    }
}

/// The queue.
pub fn queue(q: &[QueueEntry]) {
    if q.is_empty() {
        out("the queue is empty");
        return;
    }
    for e in q {
        let r = &e.request;
        let what = match &r.job_id {
            None => "reservation".to_string(),
            Some(j) => format!("job {j}"),
        };
        out(format!(
            "{:>3}. {} ({what}, {}, {}): {}",
            e.position, r.id, r.priority, r.holder, e.waiting_because
        ));
    }
}

/// A sweep's rig × step matrix and its changes against the previous sweep.
pub fn sweep(r: &SweepReport) {
    let steps: Vec<String> = if r.steps.is_empty() {
        vec!["(job)".into()]
    } else {
        r.steps.clone()
    };
    let w = 16;
    let mut header = format!("{:<14}", "RIG");
    for s in &steps {
        header.push_str(&format!(" {:<w$}", s.chars().take(w).collect::<String>()));
    }
    out(header);
    for rig in &r.rigs {
        let mut row = format!("{rig:<14}");
        if let Some(k) = r.sweep.skipped.iter().find(|k| &k.rig == rig) {
            out(format!("{row} skipped, {}", k.reason));
            continue;
        }
        for s in &steps {
            let cell = r.cells.iter().find(|c| &c.rig == rig && &c.step == s);
            let text = match cell {
                Some(c) => {
                    let o = c.outcome.map(|o| o.as_str()).unwrap_or("not_run");
                    match c.change {
                        None => o.to_string(),
                        Some(ch) => format!("{o} [{}]", ch.as_str()),
                    }
                }
                None => "-".into(),
            };
            row.push_str(&format!(" {text:<w$}"));
        }
        out(row);
    }
    let notable: Vec<_> = r.cells.iter().filter(|c| c.change.is_some()).collect();
    if !notable.is_empty() {
        out("changes against the previous sweep:");
        for c in notable {
            out(format!(
                "  {} {}: {} ({} → {}){}",
                c.rig,
                c.step,
                c.change.map(|ch| ch.as_str()).unwrap_or(""),
                c.previous_outcome.map(|o| o.as_str()).unwrap_or("-"),
                c.outcome.map(|o| o.as_str()).unwrap_or("not_run"),
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.detail)
                }
            ));
        }
    }
    out(format!(
        "sweep {}: {}",
        r.sweep.id,
        r.outcome.as_str().to_uppercase()
    ));
}
