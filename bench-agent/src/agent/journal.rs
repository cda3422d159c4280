//! The lease journal (`<work-dir>/agent/journal.jsonl`, format in [`nvfarm_model::journal`]): one synced line
//! each time the agent starts, accepts an assignment and lets go of a rig, so the agent's own record says which
//! lease held each rig when. The file is rotated to `journal.1.jsonl` past [`ROTATE_AT`] bytes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nvfarm_model::journal::{JournalEntry, JournalEvent};
use nvfarm_model::time::now_ms;

/// Past this size the journal is moved to `journal.1.jsonl` (replacing the older one) and started afresh.
pub const ROTATE_AT: u64 = 8 << 20;

/// The agent's lease journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl Journal {
    /// Opens (creating) the journal in `dir` and records that this process started.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let path = dir.join("journal.jsonl");
        let j = Journal {
            file: Mutex::new(open(&path)?),
            path,
        };
        j.record(JournalEvent::AgentStarted)?;
        Ok(j)
    }

    /// Appends `event` and syncs it to disk.
    pub fn record(&self, event: JournalEvent) -> std::io::Result<()> {
        let entry = JournalEntry {
            at_ms: now_ms(),
            pid: std::process::id(),
            event,
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // Appends only: a panic elsewhere while holding the lock leaves the file as it was.
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if f.metadata()?.len() >= ROTATE_AT {
            std::fs::rename(&self.path, self.path.with_extension("1.jsonl"))?;
            *f = open(&self.path)?;
        }
        f.write_all(&line)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_accept_and_release_is_a_line_that_survives_reopening() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path()).unwrap();
        j.record(JournalEvent::Accepted {
            rig: "r1".into(),
            job: "job-1".into(),
            token: 4,
        })
        .unwrap();
        drop(j);
        let j = Journal::open(t.path()).unwrap();
        j.record(JournalEvent::Released {
            rig: "r1".into(),
            job: "job-1".into(),
            token: 4,
            outcome: "cancelled".into(),
        })
        .unwrap();
        let text = std::fs::read_to_string(t.path().join("journal.jsonl")).unwrap();
        let (entries, bad) = nvfarm_model::journal::parse(&text);
        assert_eq!(bad, 0);
        let kinds: Vec<_> = entries
            .iter()
            .map(|e| match e.event {
                JournalEvent::AgentStarted => "start",
                JournalEvent::Accepted { .. } => "accept",
                JournalEvent::Released { .. } => "release",
            })
            .collect();
        assert_eq!(kinds, ["start", "accept", "start", "release"]);
        // The restart ends the span: the process that held it is gone.
        let spans = nvfarm_model::journal::spans(&entries);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].to_ms, Some(entries[2].at_ms));
    }
}
