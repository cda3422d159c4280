//! What the agent must not forget across restarts: the newest fencing token it accepted per rig, and job results
//! the controller has not yet confirmed storing. Both are files under `<work-dir>/agent/`, written atomically
//! (temp file, fsync, rename) before the agent acts on them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use nvfarm_model::link::JobResult;

/// The agent's durable state under `<work-dir>/agent/`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// The fencing tokens on disk, loaded once at open; written through on every change.
    tokens: std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The work directory cannot be used.
    #[error("cannot use {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fencing-token file exists but cannot be read as tokens: starting would turn fencing off.
    #[error("fencing token file {file} is unreadable ({reason}). The agent will not start without it: it is what stops a stale job from touching a rig after a newer one was assigned. Restore it from a backup; or, if it is lost for good, move it aside and start the agent only after the controller is up (its fencing counter only grows, so the tokens it hands out next are newer than any the agent accepted)")]
    CorruptTokens {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl Spool {
    /// Opens (creating) the spool under `work_dir`. A fencing-token file that exists but does not parse is an
    /// error, never an empty set of tokens.
    pub fn open(work_dir: &Path) -> Result<Self, SpoolError> {
        let dir = work_dir.join("agent");
        for d in [dir.join("results"), dir.join("artifacts")] {
            std::fs::create_dir_all(&d).map_err(|source| SpoolError::Dir { dir: d, source })?;
        }
        let file = dir.join("fencing.json");
        let tokens = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SpoolError::CorruptTokens {
                file: file.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SpoolError::CorruptTokens {
                    file,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Spool {
            dir,
            tokens: std::sync::Arc::new(std::sync::Mutex::new(tokens)),
        })
    }

    /// Where fetched firmware is cached.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    /// Newest accepted fencing token per rig.
    pub fn tokens(&self) -> BTreeMap<String, u64> {
        self.tokens.lock().expect("spool lock").clone()
    }

    /// Records `token` for `rig` durably; returns false (and records nothing) if an equal or newer token was
    /// already accepted for that rig. Memory changes only once the file is written.
    pub fn accept_token(&self, rig: &str, token: u64) -> std::io::Result<bool> {
        let mut held = self.tokens.lock().expect("spool lock");
        if held.get(rig).is_some_and(|&seen| seen >= token) {
            return Ok(false);
        }
        let mut next = held.clone();
        next.insert(rig.to_string(), token);
        write_atomic(
            &self.dir.join("fencing.json"),
            &serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?,
        )?;
        *held = next;
        Ok(true)
    }

    /// Records a finished job's result until the controller confirms storing it.
    pub fn save_result(&self, r: &JobResult) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        write_atomic(&self.result_path(&r.job_id), &json)
    }

    fn result_path(&self, job_id: &str) -> PathBuf {
        self.dir.join("results").join(format!("{job_id}.json"))
    }

    /// Forgets a result the controller stored.
    pub fn forget_result(&self, job_id: &str) {
        let _ = std::fs::remove_file(self.result_path(job_id));
    }

    /// Results not yet confirmed by the controller.
    pub fn pending_results(&self) -> Vec<JobResult> {
        let mut out = vec![];
        if let Ok(entries) = std::fs::read_dir(self.dir.join("results")) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    if let Ok(b) = std::fs::read(e.path()) {
                        match serde_json::from_slice(&b) {
                            Ok(r) => out.push(r),
                            Err(err) => tracing::warn!(
                                file = %e.path().display(),
                                "ignoring an unreadable spooled result: {err}"
                            ),
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_only_grow_and_results_persist() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path()).unwrap();
        assert!(s.accept_token("r1", 5).unwrap());
        assert!(
            !s.accept_token("r1", 5).unwrap(),
            "the same token twice is refused"
        );
        assert!(
            !s.accept_token("r1", 3).unwrap(),
            "an older token is refused"
        );
        assert!(s.accept_token("r2", 1).unwrap());
        let s2 = Spool::open(t.path()).unwrap();
        assert_eq!(s2.tokens().get("r1"), Some(&5));
        let r = JobResult::early("job-1", 5, nvfarm_model::Outcome::Passed, "ok".into());
        s2.save_result(&r).unwrap();
        assert_eq!(Spool::open(t.path()).unwrap().pending_results(), vec![r]);
        s2.forget_result("job-1");
        assert!(s2.pending_results().is_empty());
    }

    #[test]
    fn a_corrupt_token_file_stops_the_agent_instead_of_turning_fencing_off() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path()).unwrap();
        assert!(s.accept_token("r1", 9).unwrap());
        let file = t.path().join("agent/fencing.json");
        std::fs::write(&file, b"{\"r1\": 9").unwrap(); // torn
        let e = Spool::open(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("fencing token file")
                && e.contains("fencing.json")
                && e.contains("will not start"),
            "{e}"
        );
        // The file is left as it was, for the operator.
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"r1\": 9");
    }
}
