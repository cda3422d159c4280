//! Durable storage behind a small interface, so the scheduler does not care what engine keeps its records.
//!
//! Today the engine is sled: one tree of records under prefixed keys (`rig/`, `lease/`, `req/`, `job/`,
//! `step/<job>/<n>`, `art/`, `sweep/`, `meta/`) and one tree of job log lines. A state transition is one [`Tx`]
//! applied as a single sled batch (atomic) and flushed to disk before the caller acknowledges anything, so a
//! crash (kill -9) loses no acknowledged change and never shows half of one. Artifact bytes live as files named
//! by their sha256.
//!
//! Finished jobs are not loaded at startup ([`resident`] says which are): they stay here, read one at a time
//! ([`Store::job`]) or listed ([`Store::jobs_where`]) when a query asks for them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::collections::{BTreeMap, HashSet};

use nvfarm_model::farm::{Artifact, Job, JobState, Lease, Request, Rig, Sweep};
use nvfarm_model::{LogLine, StepReport};

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be opened.
    #[error(
        "cannot open the store in {dir}: {source}; is another farm-controller using this data dir?"
    )]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: sled::Error,
    },
    /// Another instance holds the database's lock (another farm-controller on the same directory).
    #[error(
        "the store in {dir} is in use by another farm-controller (it holds the database's lock); stop that one, or give this one its own data_dir"
    )]
    Busy {
        /// The data directory.
        dir: PathBuf,
    },
    /// A read or write failed.
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("record {key} is corrupt: {reason}; restore the data directory from a backup")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A flush that covered this change failed (the change is not acknowledged; memory is reloaded from the
    /// store).
    #[error("flushing the store failed: {0}")]
    Failed(String),
    /// A file beside the database (artifacts) failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the store holds, loaded at startup.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every rig.
    pub rigs: Vec<Rig>,
    /// Every active lease.
    pub leases: Vec<Lease>,
    /// Every waiting request.
    pub requests: Vec<Request>,
    /// Every job the controller keeps in memory ([`resident`]), with its steps and log line count.
    pub jobs: Vec<Job>,
    /// How many stored jobs are finished and not loaded, by state.
    pub finished: BTreeMap<JobState, u64>,
    /// Every stored artifact.
    pub artifacts: Vec<Artifact>,
    /// Every sweep.
    pub sweeps: Vec<Sweep>,
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
    /// Rigs written, and requests written or deleted, by name and id: what the scheduler and the watchers look
    /// at after the change.
    rigs: Vec<String>,
    requests: Vec<String>,
    /// Jobs written, and jobs whose lease it deletes: the ones that may leave memory after the change.
    jobs: Vec<String>,
    /// Whether it writes a record that carries a deadline (a lease, a request, a job).
    deadlines: bool,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("empty", &self.empty).finish()
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, maps with string keys): serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Tx {
    /// An empty transaction.
    pub fn new() -> Self {
        Tx {
            batch: sled::Batch::default(),
            empty: true,
            rigs: vec![],
            requests: vec![],
            jobs: vec![],
            deadlines: false,
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
    /// Writes a rig.
    pub fn rig(&mut self, r: &Rig) {
        self.rigs.push(r.name.clone());
        self.put(format!("rig/{}", r.name), r)
    }
    /// The rigs this transaction writes (a name may repeat).
    pub fn rigs_written(&self) -> &[String] {
        &self.rigs
    }
    /// The requests this transaction writes or deletes (an id may repeat).
    pub fn requests_touched(&self) -> &[String] {
        &self.requests
    }
    /// The jobs it writes and the jobs whose leases it deletes (an id may repeat).
    pub fn jobs_touched(&self) -> &[String] {
        &self.jobs
    }
    /// Whether it writes or deletes a lease, a request or a job: records whose deadlines the tick watches.
    pub fn touches_deadlines(&self) -> bool {
        self.deadlines
    }
    /// Writes a lease.
    pub fn lease(&mut self, l: &Lease) {
        self.deadlines = true;
        self.put(format!("lease/{}", l.id), l)
    }
    /// Deletes a lease.
    pub fn drop_lease(&mut self, l: &Lease) {
        self.deadlines = true;
        if let Some(j) = &l.job_id {
            self.jobs.push(j.clone());
        }
        self.del(format!("lease/{}", l.id))
    }
    /// Writes a waiting request.
    pub fn request(&mut self, r: &Request) {
        self.deadlines = true;
        self.requests.push(r.id.clone());
        self.put(format!("req/{}", r.id), r)
    }
    /// Deletes a request.
    pub fn drop_request(&mut self, id: &str) {
        self.deadlines = true;
        self.requests.push(id.to_string());
        self.del(format!("req/{id}"))
    }
    /// Writes a job's record, without its steps: steps are records of their own ([`Tx::step`]), so a job with
    /// 10,000 steps is not rewritten whole as each one ends.
    pub fn job(&mut self, j: &Job) {
        self.deadlines = true;
        self.jobs.push(j.id.clone());
        #[derive(Serialize)]
        struct WithoutSteps<'a> {
            #[serde(flatten)]
            job: &'a Job,
        }
        let mut v = serde_json::to_value(WithoutSteps { job: j }).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("steps".into(), serde_json::Value::Array(vec![]));
        }
        self.put(format!("job/{}", j.id), &v)
    }
    /// Writes one step of a job.
    pub fn step(&mut self, job_id: &str, s: &StepReport) {
        self.put(step_key(job_id, s.number), s)
    }
    /// Deletes one step of a job (replaced by a result without it).
    pub fn drop_step(&mut self, job_id: &str, number: u32) {
        self.del(step_key(job_id, number))
    }
    /// Writes an artifact's record.
    pub fn artifact(&mut self, a: &Artifact) {
        self.put(format!("art/{}", a.sha256), a)
    }
    /// Writes a sweep.
    pub fn sweep(&mut self, s: &Sweep) {
        self.put(format!("sweep/{}", s.id), s)
    }
    /// Writes a counter (`fencing`, `seq`).
    pub fn meta(&mut self, key: &str, v: u64) {
        self.put(format!("meta/{key}"), &v)
    }
    /// Something this change applied outside the transaction ([`Store::apply_logs`]) must be flushed with it.
    pub fn flush_too(&mut self) {
        self.empty = false;
    }
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

/// How long [`Store::open_waiting`] waits for another instance of the database to let its lock go.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether sled refused to open because another instance holds the database's file lock.
fn lock_busy(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The open database: the records tree and the log tree.
#[derive(Debug, Clone)]
struct Engine {
    db: sled::Db,
    main: sled::Tree,
    logs: sled::Tree,
}

impl Engine {
    /// Opens the database; [`StoreError::Busy`] while another instance holds its lock.
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| {
                if lock_busy(&source) {
                    StoreError::Busy {
                        dir: dir.to_path_buf(),
                    }
                } else {
                    StoreError::Open {
                        dir: dir.to_path_buf(),
                        source,
                    }
                }
            })?;
        let main = db.open_tree("records")?;
        let logs = db.open_tree("logs")?;
        Ok(Engine { db, main, logs })
    }
}

/// The controller's durable storage. A write that fails (a full disk) closes the database; the next use opens
/// it again from what is on disk, so the controller recovers by itself once the cause is gone, and never keeps
/// serving a database whose memory holds a change the disk does not.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    engine: std::sync::Arc<std::sync::RwLock<Option<Engine>>>,
    blobs: PathBuf,
    /// Flushes to disk so far ([`Store::sync`]).
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens (creating) the store in `dir`; a second controller on the same directory is refused.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir.join("artifacts")).map_err(|source| StoreError::File {
            path: dir.join("artifacts"),
            source,
        })?;
        let engine = Engine::open(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            engine: std::sync::Arc::new(std::sync::RwLock::new(Some(engine))),
            blobs: dir.join("artifacts"),
            flushes: Default::default(),
        })
    }

    /// Opens the store, waiting up to `within` for an instance of it that is closing to let the database's lock
    /// go (a controller restarted in the same process: the old one's background writers finish first). The wait
    /// yields to the runtime, so tasks still holding the old instance can run and drop it. Another controller
    /// that keeps the lock is refused with [`StoreError::Busy`] once `within` has passed.
    pub async fn open_waiting(dir: &Path, within: std::time::Duration) -> Result<Self, StoreError> {
        let began = tokio::time::Instant::now();
        loop {
            match Store::open(dir) {
                Err(StoreError::Busy { .. }) if began.elapsed() < within => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                r => return r,
            }
        }
    }

    /// The open database, opening it again if a failure closed it.
    fn engine(&self) -> Result<Engine, StoreError> {
        if let Some(e) = self.engine.read().expect("store lock").as_ref() {
            return Ok(e.clone());
        }
        let mut slot = self.engine.write().expect("store lock");
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let e = Engine::open(&self.dir)?;
        tracing::info!(dir = %self.dir.display(), "store reopened from disk after a failure");
        *slot = Some(e.clone());
        Ok(e)
    }

    fn scan<T: DeserializeOwned>(main: &sled::Tree, prefix: &str) -> Result<Vec<T>, StoreError> {
        let mut out = vec![];
        for kv in main.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into(),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    fn meta(main: &sled::Tree, key: &str) -> Result<u64, StoreError> {
        match main.get(format!("meta/{key}"))? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: format!("meta/{key}"),
                reason: e.to_string(),
            }),
            None => Ok(0),
        }
    }

    fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into(),
            reason: e.to_string(),
        })
    }

    /// A job's steps, by number (`None`: it has no step records; records written before steps had their own
    /// keep them inline).
    fn steps(main: &sled::Tree, job_id: &str) -> Result<Option<Vec<StepReport>>, StoreError> {
        let mut steps = vec![];
        for kv in main.scan_prefix(format!("step/{job_id}/").as_bytes()) {
            let (k, v) = kv?;
            steps.push(Self::decode(&k, &v)?); // keys sort by step number
        }
        Ok((!steps.is_empty()).then_some(steps))
    }

    /// A whole job from its record: steps from their own records, the log line count from the log tree.
    fn full_job(e: &Engine, key: &[u8], v: &[u8]) -> Result<Job, StoreError> {
        let mut j: Job = Self::decode(key, v)?;
        if let Some(steps) = Self::steps(&e.main, &j.id)? {
            j.steps = steps;
        }
        j.log_lines = Self::log_count_in(e, &j.id)?.0;
        Ok(j)
    }

    /// The jobs to keep in memory, whole, and how many finished ones stay on disk, by state. A finished job's
    /// record is decoded only as far as its [`JobSummary`]; its steps and logs are not read.
    fn resident_jobs(
        e: &Engine,
        held: &HashSet<String>,
    ) -> Result<(Vec<Job>, BTreeMap<JobState, u64>), StoreError> {
        let mut jobs = vec![];
        let mut finished = BTreeMap::new();
        for kv in e.main.scan_prefix(b"job/") {
            let (k, v) = kv?;
            let h: JobSummary = Self::decode(&k, &v)?;
            if resident(h.state, h.settled, held.contains(&h.id)) {
                jobs.push(Self::full_job(e, &k, &v)?);
            } else {
                *finished.entry(h.state).or_default() += 1;
            }
        }
        Ok((jobs, finished))
    }

    /// One job as stored, with its steps and log line count (`None`: no such job).
    pub fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let e = self.engine()?;
        let key = format!("job/{id}");
        match e.main.get(key.as_bytes())? {
            Some(v) => Ok(Some(Self::full_job(&e, key.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// The newest `limit` stored jobs (0: all) that `keep` accepts, newest first (by creation time, then id),
    /// whole. Only the chosen ones are read past their summary.
    pub fn jobs_where(
        &self,
        keep: impl Fn(&JobSummary) -> bool,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let e = self.engine()?;
        let mut chosen: Vec<(u64, String)> = vec![];
        for kv in e.main.scan_prefix(b"job/") {
            let (k, v) = kv?;
            let h: JobSummary = Self::decode(&k, &v)?;
            if keep(&h) {
                chosen.push((h.created_ms, h.id));
            }
        }
        chosen.sort_by(|a, b| b.cmp(a));
        if limit > 0 {
            chosen.truncate(limit);
        }
        let mut out = Vec::with_capacity(chosen.len());
        for (_, id) in chosen {
            let key = format!("job/{id}");
            if let Some(v) = e.main.get(key.as_bytes())? {
                out.push(Self::full_job(&e, key.as_bytes(), &v)?);
            }
        }
        Ok(out)
    }

    /// Everything the store holds.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let e = self.engine()?;
        let m = &e.main;
        let leases: Vec<Lease> = Self::scan(m, "lease/")?;
        let held: HashSet<String> = leases.iter().filter_map(|l| l.job_id.clone()).collect();
        let (jobs, finished) = Self::resident_jobs(&e, &held)?;
        Ok(Snapshot {
            rigs: Self::scan(m, "rig/")?,
            leases,
            requests: Self::scan(m, "req/")?,
            jobs,
            finished,
            artifacts: Self::scan(m, "art/")?,
            sweeps: Self::scan(m, "sweep/")?,
            fencing: Self::meta(m, "fencing")?,
            seq: Self::meta(m, "seq")?,
        })
    }

    /// Applies `tx` atomically and waits until it is on disk. On failure the database is closed, to be reopened
    /// from disk by the next use. (The controller applies and flushes separately, to share flushes: see
    /// [`Store::apply`] and [`Store::sync`].)
    pub async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        self.apply(tx)?;
        self.sync()
            .await
            .inspect_err(|e| self.close_after_failure(e))
    }

    /// Applies `tx` atomically, in memory and in the database's log: readable at once, durable after the next
    /// [`Store::sync`]. A failed apply changed nothing.
    pub fn apply(&self, tx: Tx) -> Result<(), StoreError> {
        if tx.empty {
            return Ok(());
        }
        self.engine()?.main.apply_batch(tx.batch)?;
        Ok(())
    }

    /// Waits until everything applied so far is on disk. On failure the caller decides when to close the
    /// database ([`Store::close_after_failure`]): nothing may be applied between the failure and the reload
    /// of what memory holds.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let e = self.engine()?;
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e.db.flush_async().await?;
        Ok(())
    }

    /// How many flushes [`Store::sync`] has started since the store was opened.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the database after a failed write or flush: its memory may hold what the disk does not. The next
    /// use opens it again from disk.
    pub fn close_after_failure(&self, e: &StoreError) {
        tracing::error!("store write failed ({e}); closing the store to reopen it from disk");
        *self.engine.write().expect("store lock") = None;
    }

    /// Appends job log lines numbered from `first`; `bytes` is the job's stored log size after them. The
    /// job's line and byte counts are written in the same batch, so a restart reads two numbers per job instead
    /// of every line ([`Store::log_count`]). Durable after the next [`Store::sync`].
    pub fn apply_logs(
        &self,
        job_id: &str,
        first: u64,
        lines: &[LogLine],
        bytes: u64,
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (i, line) in lines.iter().enumerate() {
            b.insert(log_key(job_id, first + i as u64), json(line));
        }
        let count = LogCount {
            lines: first + lines.len() as u64,
            bytes,
        };
        b.insert(log_count_key(job_id), json(&count));
        self.engine()?.logs.apply_batch(b)?;
        Ok(())
    }

    /// How many log lines job `job_id` has stored and their size in bytes: one read, whatever the log's
    /// length. A store written before the counts were kept is counted line by line once.
    pub fn log_count(&self, job_id: &str) -> Result<(u64, u64), StoreError> {
        Self::log_count_in(&self.engine()?, job_id)
    }

    fn log_count_in(e: &Engine, job_id: &str) -> Result<(u64, u64), StoreError> {
        if let Some(v) = e.logs.get(log_count_key(job_id))? {
            let c: LogCount = serde_json::from_slice(&v).map_err(|err| StoreError::Corrupt {
                key: format!("logs/{job_id}#count"),
                reason: err.to_string(),
            })?;
            return Ok((c.lines, c.bytes));
        }
        let lines = Self::logs_in(e, job_id, 0)?;
        let bytes = lines.iter().map(|(_, l)| l.text.len() as u64 + 1).sum();
        Ok((lines.len() as u64, bytes))
    }

    /// Log lines of a job from line `from` on, with their numbers.
    pub fn logs(&self, job_id: &str, from: u64) -> Result<Vec<(u64, LogLine)>, StoreError> {
        Self::logs_in(&self.engine()?, job_id, from)
    }

    fn logs_in(e: &Engine, job_id: &str, from: u64) -> Result<Vec<(u64, LogLine)>, StoreError> {
        let mut out = vec![];
        let start = log_key(job_id, from);
        let end = log_key(job_id, u64::MAX);
        for kv in e.logs.range(start..end) {
            let (k, v) = kv?;
            let mut n = [0u8; 8];
            n.copy_from_slice(&k[k.len().saturating_sub(8)..]);
            let line = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: format!("logs/{job_id}/{}", u64::from_be_bytes(n)),
                reason: e.to_string(),
            })?;
            out.push((u64::from_be_bytes(n), line));
        }
        Ok(out)
    }

    /// Flushes everything to disk (each commit already did).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.engine()?.db.flush()?;
        Ok(())
    }

    /// Where an artifact's bytes live.
    pub fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(sha256)
    }

    /// Where artifacts live (uploads are written here first, then renamed).
    pub fn artifacts_dir(&self) -> &Path {
        &self.blobs
    }
}

/// Whether a job is kept in memory: until it has ended, its agent has let go of it (settled) and no lease holds
/// a rig for it. Anything else about a finished job is read from the store when asked for.
pub fn resident(state: JobState, settled: bool, held: bool) -> bool {
    !state.is_terminal() || !settled || held
}

/// What a listing or the startup load reads of a job's record before deciding whether it needs the rest.
#[derive(Debug, serde::Deserialize)]
pub struct JobSummary {
    /// The job's id.
    pub id: String,
    /// Its state.
    pub state: JobState,
    /// Whether its agent has let go of it.
    #[serde(default = "settled_by_default")]
    pub settled: bool,
    /// The rig it ran on.
    #[serde(default)]
    pub rig: Option<String>,
    /// The sweep it belongs to.
    #[serde(default)]
    pub sweep_id: Option<String>,
    /// When it was submitted.
    #[serde(default)]
    pub created_ms: u64,
    /// Its plan's name.
    #[serde(default)]
    pub plan_name: String,
    /// Its firmware build.
    #[serde(default)]
    pub artifact_sha256: String,
    /// The revision the build reported.
    #[serde(default)]
    pub firmware_revision: String,
    /// Its rig's drive model.
    #[serde(default)]
    pub drive_model: String,
}

impl JobSummary {
    /// What a job filter looks at.
    pub(crate) fn keys(&self) -> crate::core::JobKeys<'_> {
        crate::core::JobKeys {
            rig: self.rig.as_deref(),
            sweep_id: self.sweep_id.as_deref(),
            sha256: &self.artifact_sha256,
            revision: &self.firmware_revision,
            drive_model: &self.drive_model,
            plan: &self.plan_name,
            created_ms: self.created_ms,
        }
    }
}

fn settled_by_default() -> bool {
    true
}

/// `step/<job>/<number, 10 digits>`: a job's steps sort by number.
fn step_key(job_id: &str, number: u32) -> String {
    format!("step/{job_id}/{number:010}")
}

/// A job's stored log size.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LogCount {
    lines: u64,
    bytes: u64,
}

/// `<job>#`: sorts before the job's lines (`<job>/...`), so a range over the lines never sees it.
fn log_count_key(job_id: &str) -> Vec<u8> {
    let mut k = job_id.as_bytes().to_vec();
    k.push(b'#');
    k
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

    use nvfarm_model::farm::RigState;

    fn rig(name: &str) -> Rig {
        let mut r = Rig::new(name, "a", 0);
        r.state = RigState::Idle;
        r
    }

    fn line(step: u32, text: &str) -> LogLine {
        LogLine {
            step,
            text: text.into(),
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
            s.apply_logs("job-1", 0, &[line(0, "a"), line(1, "b")], 4)
                .unwrap();
            s.apply_logs("job-1", 2, &[line(2, "c")], 6).unwrap();
            s.apply_logs("job-10", 0, &[line(1, "other")], 6).unwrap();
            s.sync().await.unwrap();
        }
        // sled lets its lock go once its own background flusher has dropped the last handle.
        let s = Store::open_waiting(t.path(), LOCK_WAIT).await.unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.rigs.len(), 2);
        assert_eq!(snap.rigs[1].state, RigState::Quarantined);
        assert_eq!(snap.fencing, 42);
        let logs = s.logs("job-1", 1).unwrap();
        assert_eq!(logs, vec![(1, line(1, "b")), (2, line(2, "c"))]);
        assert_eq!(s.log_count("job-1").unwrap(), (3, 6));
        assert_eq!(s.log_count("job-10").unwrap(), (1, 6));
        assert_eq!(s.log_count("job-2").unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn opening_waits_for_a_closing_instance_without_blocking_the_runtime_and_refuses_one_that_stays(
    ) {
        let t = tempfile::tempdir().unwrap();
        // An instance a task of this (single-threaded) runtime lets go a moment later, as a restarted
        // controller's leftover tasks do: the open waits for it, and must yield for that task to run at all.
        let first = Store::open(t.path()).unwrap();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            drop(first);
        });
        let second = Store::open_waiting(t.path(), LOCK_WAIT)
            .await
            .expect("the lock was let go well within the wait");
        closer.await.unwrap();
        // One that keeps it (another controller on the same directory) is refused, by name.
        let err = Store::open_waiting(t.path(), std::time::Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&t.path().display().to_string())
                && msg.contains("another farm-controller"),
            "{msg}"
        );
        drop(second);
        Store::open_waiting(t.path(), LOCK_WAIT).await.unwrap();
    }

    #[tokio::test]
    async fn a_jobs_log_size_is_read_from_its_count_not_from_its_lines() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let many: Vec<LogLine> = (0..1000).map(|i| line(i, "x")).collect();
        s.apply_logs("job-1", 0, &many, 2000).unwrap();
        // Take the lines away behind the count's back: the count still answers, so a restart reads one
        // record per job however long its log is.
        let e = s.engine().unwrap();
        for n in 0..1000u64 {
            e.logs.remove(log_key("job-1", n)).unwrap();
        }
        drop(e);
        assert!(s.logs("job-1", 0).unwrap().is_empty());
        assert_eq!(s.log_count("job-1").unwrap(), (1000, 2000));
        // A store from before the counts existed is counted line by line.
        let e = s.engine().unwrap();
        e.logs
            .insert(log_key("job-old", 0), json(&line(0, "abc")))
            .unwrap();
        drop(e);
        assert_eq!(s.log_count("job-old").unwrap(), (1, 4));
    }

    #[test]
    fn a_second_controller_on_the_same_data_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let _a = Store::open(t.path()).unwrap();
        let e = Store::open(t.path()).unwrap_err().to_string();
        assert!(e.contains("another farm-controller"), "{e}");
    }
}
