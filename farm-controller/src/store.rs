//! Durable storage behind a small interface, so the scheduler does not care what engine keeps its records.
//!
//! Today the engine is sled: one tree of records under prefixed keys (`rig/`, `lease/`, `req/`, `job/`, `art/`,
//! `sweep/`, `meta/`) and one tree of job log lines. A state transition is one [`Tx`] applied as a single sled
//! batch (atomic) and flushed to disk before the caller acknowledges anything, so a crash (kill -9) loses no
//! acknowledged change and never shows half of one. Artifact bytes live as files named by their sha256.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the store in {dir}: {source}; is another farm-controller using this data dir?"
    )]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the store holds, loaded at startup.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub rigs: Vec<RigRecord>,
    pub leases: Vec<LeaseRecord>,
    pub requests: Vec<RequestRecord>,
    pub jobs: Vec<JobRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    pub sweeps: Vec<SweepRecord>,
    /// The last fencing token handed out.
    pub fencing: u64,
    /// The last id sequence number handed out.
    pub seq: u64,
}

/// A set of changes applied atomically.
#[derive(Default)]
pub struct Tx {
    batch: sled::Batch,
    empty: bool,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("empty", &self.empty).finish()
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl Tx {
    pub fn new() -> Self {
        Tx {
            batch: sled::Batch::default(),
            empty: true,
        }
    }
    fn put<T: Serialize>(&mut self, key: String, v: &T) {
        self.batch.insert(key.as_bytes(), json(v));
        self.empty = false;
    }
    fn del(&mut self, key: String) {
        self.batch.remove(key.as_bytes());
        self.empty = false;
    }
    pub fn rig(&mut self, r: &RigRecord) {
        self.put(format!("rig/{}", r.name), r)
    }
    pub fn lease(&mut self, l: &LeaseRecord) {
        self.put(format!("lease/{}", l.id), l)
    }
    pub fn drop_lease(&mut self, id: &str) {
        self.del(format!("lease/{id}"))
    }
    pub fn request(&mut self, r: &RequestRecord) {
        self.put(format!("req/{}", r.id), r)
    }
    pub fn drop_request(&mut self, id: &str) {
        self.del(format!("req/{id}"))
    }
    pub fn job(&mut self, j: &JobRecord) {
        self.put(format!("job/{}", j.id), j)
    }
    pub fn artifact(&mut self, a: &ArtifactRecord) {
        self.put(format!("art/{}", a.sha256), a)
    }
    pub fn sweep(&mut self, s: &SweepRecord) {
        self.put(format!("sweep/{}", s.id), s)
    }
    pub fn meta(&mut self, key: &str, v: u64) {
        self.put(format!("meta/{key}"), &v)
    }
    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    main: sled::Tree,
    logs: sled::Tree,
    blobs: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir.join("artifacts")).map_err(|source| StoreError::File {
            path: dir.join("artifacts"),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
        let main = db.open_tree("records")?;
        let logs = db.open_tree("logs")?;
        Ok(Store {
            db,
            main,
            logs,
            blobs: dir.join("artifacts"),
        })
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        let mut out = vec![];
        for kv in self.main.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into(),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    fn meta(&self, key: &str) -> Result<u64, StoreError> {
        match self.main.get(format!("meta/{key}"))? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: format!("meta/{key}"),
                reason: e.to_string(),
            }),
            None => Ok(0),
        }
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            rigs: self.scan("rig/")?,
            leases: self.scan("lease/")?,
            requests: self.scan("req/")?,
            jobs: self.scan("job/")?,
            artifacts: self.scan("art/")?,
            sweeps: self.scan("sweep/")?,
            fencing: self.meta("fencing")?,
            seq: self.meta("seq")?,
        })
    }

    /// Applies `tx` atomically and waits until it is on disk.
    pub async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        if tx.empty {
            return Ok(());
        }
        self.main.apply_batch(tx.batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Appends job log lines numbered from `first`.
    pub async fn append_logs(
        &self,
        job_id: &str,
        first: u64,
        lines: &[String],
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (i, line) in lines.iter().enumerate() {
            b.insert(log_key(job_id, first + i as u64), line.as_bytes());
        }
        self.logs.apply_batch(b)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Log lines of a job from line `from` on.
    pub fn logs(&self, job_id: &str, from: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = vec![];
        let start = log_key(job_id, from);
        let end = log_key(job_id, u64::MAX);
        for kv in self.logs.range(start..end) {
            let (k, v) = kv?;
            let n = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte suffix"));
            out.push((n, String::from_utf8_lossy(&v).into()));
        }
        Ok(out)
    }

    /// Flushes everything to disk (each commit already did).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(sha256)
    }

    pub fn artifacts_dir(&self) -> &Path {
        &self.blobs
    }
}

fn log_key(job_id: &str, n: u64) -> Vec<u8> {
    let mut k = job_id.as_bytes().to_vec();
    k.push(b'/');
    k.extend_from_slice(&n.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig(name: &str) -> RigRecord {
        RigRecord {
            name: name.into(),
            agent: "a".into(),
            labels: Default::default(),
            state: RigState::Idle,
            drive_serial: "S".into(),
            drive_model: "M".into(),
            firmware_revision: "1".into(),
            reason: String::new(),
            lease_id: None,
            consecutive_infra_errors: 0,
            health_check_pending: false,
            last_seen_ms: 0,
        }
    }

    #[tokio::test]
    async fn commits_survive_reopening() {
        let t = tempfile::tempdir().unwrap();
        {
            let s = Store::open(t.path()).unwrap();
            let mut tx = Tx::new();
            tx.rig(&rig("r1"));
            tx.rig(&rig("r2"));
            tx.meta("fencing", 41);
            s.commit(tx).await.unwrap();
            let mut tx = Tx::new();
            let mut r = rig("r2");
            r.state = RigState::Quarantined;
            tx.rig(&r);
            tx.meta("fencing", 42);
            s.commit(tx).await.unwrap();
            s.append_logs("job-1", 0, &["a".into(), "b".into()])
                .await
                .unwrap();
            s.append_logs("job-1", 2, &["c".into()]).await.unwrap();
            s.append_logs("job-10", 0, &["other".into()]).await.unwrap();
        }
        let s = Store::open(t.path()).unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.rigs.len(), 2);
        assert_eq!(snap.rigs[1].state, RigState::Quarantined);
        assert_eq!(snap.fencing, 42);
        let logs = s.logs("job-1", 1).unwrap();
        assert_eq!(logs, vec![(1, "b".into()), (2, "c".into())]);
    }

    #[test]
    fn a_second_controller_on_the_same_data_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let _a = Store::open(t.path()).unwrap();
        let e = Store::open(t.path()).unwrap_err().to_string();
        assert!(e.contains("another farm-controller"), "{e}");
    }
}
