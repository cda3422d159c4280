//! The agent's lease journal: what a bench-agent held, when, under which fencing token. One JSON object per line
//! in `<work-dir>/agent/journal.jsonl`, appended (and synced) by the agent as it accepts and ends work, so that
//! an operator or an audit (the chaos suite's double-grant check) can tell from the agent's own record whether
//! two leases ever held one of its rigs at the same time.
//!
//! A lease starts at [`JournalEvent::Accepted`] (the agent wrote the fencing token to disk) and ends at
//! [`JournalEvent::Released`] (the job stopped touching the rig and its rig lock was dropped), or at the next
//! [`JournalEvent::AgentStarted`] of the same work directory (the process that held it is gone).

use serde::{Deserialize, Serialize};

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When (Unix ms, the agent's clock).
    pub at_ms: u64,
    /// The agent process that wrote it.
    pub pid: u32,
    /// What happened.
    #[serde(flatten)]
    pub event: JournalEvent,
}

/// What the agent records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JournalEvent {
    /// The agent process started: whatever an earlier process held, it holds no more.
    AgentStarted,
    /// The agent accepted an assignment: its token is on disk, and the job holds the rig from now on.
    Accepted {
        /// The rig.
        rig: String,
        /// The job.
        job: String,
        /// The lease's fencing token.
        token: u64,
    },
    /// The job stopped touching the rig.
    Released {
        /// The rig.
        rig: String,
        /// The job.
        job: String,
        /// The lease's fencing token.
        token: u64,
        /// How it ended, as the agent reports it (`passed`, `cancelled`, ...).
        outcome: String,
    },
}

/// A span during which one lease held a rig, by the agent's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSpan {
    /// The rig.
    pub rig: String,
    /// The job.
    pub job: String,
    /// The lease's fencing token.
    pub token: u64,
    /// Accepted at (Unix ms).
    pub from_ms: u64,
    /// Released at, or when the agent restarted; `None`: still held when the journal ends.
    pub to_ms: Option<u64>,
}

/// Parses a journal; a line that does not parse (a torn last line after a crash) is skipped and counted.
pub fn parse(text: &str) -> (Vec<JournalEntry>, usize) {
    let mut bad = 0;
    let entries = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(e) => Some(e),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (entries, bad)
}

/// The spans the entries describe, in the order they were accepted.
pub fn spans(entries: &[JournalEntry]) -> Vec<HeldSpan> {
    let mut out: Vec<HeldSpan> = vec![];
    let mut open: Vec<usize> = vec![];
    for e in entries {
        match &e.event {
            JournalEvent::AgentStarted => {
                for i in open.drain(..) {
                    out[i].to_ms = Some(e.at_ms);
                }
            }
            JournalEvent::Accepted { rig, job, token } => {
                open.push(out.len());
                out.push(HeldSpan {
                    rig: rig.clone(),
                    job: job.clone(),
                    token: *token,
                    from_ms: e.at_ms,
                    to_ms: None,
                });
            }
            JournalEvent::Released { job, token, .. } => {
                if let Some(pos) = open
                    .iter()
                    .position(|&i| out[i].job == *job && out[i].token == *token)
                {
                    let i = open.remove(pos);
                    out[i].to_ms = Some(e.at_ms);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, event: JournalEvent) -> JournalEntry {
        JournalEntry {
            at_ms,
            pid: 1,
            event,
        }
    }

    fn accepted(job: &str, token: u64) -> JournalEvent {
        JournalEvent::Accepted {
            rig: "r".into(),
            job: job.into(),
            token,
        }
    }

    #[test]
    fn a_span_ends_at_its_release_or_at_the_next_start() {
        let e = vec![
            at(1, JournalEvent::AgentStarted),
            at(2, accepted("a", 5)),
            at(3, accepted("b", 6)),
            at(
                4,
                JournalEvent::Released {
                    rig: "r".into(),
                    job: "a".into(),
                    token: 5,
                    outcome: "passed".into(),
                },
            ),
            at(9, JournalEvent::AgentStarted),
            at(10, accepted("c", 7)),
        ];
        let s = spans(&e);
        assert_eq!(
            s.iter()
                .map(|s| (s.job.as_str(), s.from_ms, s.to_ms))
                .collect::<Vec<_>>(),
            vec![("a", 2, Some(4)), ("b", 3, Some(9)), ("c", 10, None)]
        );
    }

    #[test]
    fn lines_round_trip_and_a_torn_line_is_counted() {
        let line = serde_json::to_string(&at(7, accepted("job-1", 3))).unwrap();
        assert_eq!(
            line,
            r#"{"at_ms":7,"pid":1,"event":"accepted","rig":"r","job":"job-1","token":3}"#
        );
        let (e, bad) = parse(&format!("{line}\n{{\"at_ms\":8,\"pi"));
        assert_eq!((e.len(), bad), (1, 1));
    }
}
