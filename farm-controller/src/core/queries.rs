//! Read-only views of the farm for the services and the dashboard: rigs with their leases, jobs, logs, the
//! queue with reasons, a waiting request's status, sweeps and their reports, artifacts, metrics.

use std::collections::BTreeMap;

use nvfarm_model::farm::{
    Artifact, Job, JobState, Lease, QueueEntry, RigState, RigStatus, Selector, Sweep, SweepReport,
};
use nvfarm_model::time::now_ms;
use nvfarm_model::LogLine;

use super::state::State;
use super::{scheduler, sweeps, Farm, FarmError};

/// Which jobs to list: every field given must match.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs on this rig.
    pub rig: Option<String>,
    /// Only jobs of this sweep.
    pub sweep_id: Option<String>,
    /// Only jobs of this firmware build: a prefix (6 or more hex digits) of its sha256, or its revision.
    pub build: Option<String>,
    /// Only jobs whose rig's drive was this model.
    pub drive_model: Option<String>,
    /// Only jobs of this plan (by name).
    pub plan: Option<String>,
    /// Only jobs submitted at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Only jobs submitted before this time (Unix ms).
    pub until_ms: Option<u64>,
    /// Skip this many matching jobs (newest first), for paging.
    pub offset: usize,
    /// At most this many (newest first); 0 = all.
    pub limit: usize,
}

/// The most jobs one listing returns (a page); ask for the next with an offset.
pub const MAX_JOBS_PAGE: usize = 10_000;

/// What a job filter looks at, from a resident job or a stored job's summary.
pub(crate) struct JobKeys<'a> {
    pub rig: Option<&'a str>,
    pub sweep_id: Option<&'a str>,
    pub sha256: &'a str,
    pub revision: &'a str,
    pub drive_model: &'a str,
    pub plan: &'a str,
    pub created_ms: u64,
}

impl JobFilter {
    /// Refuses a filter that cannot be meant: a page larger than [`MAX_JOBS_PAGE`], an empty time range, an
    /// empty build.
    pub fn check(&self) -> Result<(), FarmError> {
        if self.limit > MAX_JOBS_PAGE {
            return Err(FarmError::InvalidArgument(format!(
                "limit {} is more than one page holds (at most {MAX_JOBS_PAGE}; page with offset)",
                self.limit
            )));
        }
        if let (Some(s), Some(u)) = (self.since_ms, self.until_ms) {
            if s >= u {
                return Err(FarmError::InvalidArgument(format!(
                    "since ({}) is not before until ({}): the time range is empty",
                    nvfarm_model::time::rfc3339(s),
                    nvfarm_model::time::rfc3339(u)
                )));
            }
        }
        if self.build.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err(FarmError::InvalidArgument(
                "build is empty: give a sha256 prefix (6+ hex digits) or a revision".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn matches(&self, k: &JobKeys<'_>) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == got)
        };
        eq(&self.rig, k.rig)
            && eq(&self.sweep_id, k.sweep_id)
            && eq(&self.drive_model, Some(k.drive_model))
            && eq(&self.plan, Some(k.plan))
            && self.since_ms.is_none_or(|s| k.created_ms >= s)
            && self.until_ms.is_none_or(|u| k.created_ms < u)
            && self
                .build
                .as_deref()
                .is_none_or(|b| build_matches(b, k.sha256, k.revision))
    }
}

/// Whether a build given as `b` (a sha256 prefix of 6 or more hex digits, or a revision) is the job's.
pub(crate) fn build_matches(b: &str, sha256: &str, revision: &str) -> bool {
    let b = b.trim();
    let hex = b.len() >= 6 && b.chars().all(|c| c.is_ascii_hexdigit());
    (hex && !sha256.is_empty() && sha256.starts_with(&b.to_ascii_lowercase()))
        || (!revision.is_empty() && revision == b)
}

impl<'a> From<&'a Job> for JobKeys<'a> {
    fn from(j: &'a Job) -> Self {
        JobKeys {
            rig: j.rig.as_deref(),
            sweep_id: j.sweep_id.as_deref(),
            sha256: &j.artifact_sha256,
            revision: &j.firmware_revision,
            drive_model: &j.drive_model,
            plan: &j.plan_name,
            created_ms: j.created_ms,
        }
    }
}

/// Where a waiting request stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestStatus {
    /// Still waiting.
    Waiting {
        /// Its place in the queue.
        position: u32,
        /// Why.
        waiting_because: String,
    },
    /// Granted this lease (which is still active).
    Granted(Lease),
    /// No longer waiting, and no active lease from it.
    Ended(String),
}

/// Counts for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    /// Rigs per state.
    pub rigs: BTreeMap<RigState, usize>,
    /// Jobs per state.
    pub jobs: BTreeMap<JobState, usize>,
    /// Waiting requests.
    pub queue_length: usize,
    /// Agents with a live session.
    pub agents_connected: usize,
    /// Active leases.
    pub leases: usize,
    /// Of them, reservations (the rest are jobs').
    pub reservations: usize,
    /// The last fencing token handed out.
    pub fencing_token: u64,
    /// Changes committed since the controller started.
    pub commits: u64,
    /// Flushes of the store since the controller started (concurrent changes share one).
    pub store_flushes: u64,
}

fn rig_status(st: &State, r: &nvfarm_model::farm::Rig) -> RigStatus {
    RigStatus {
        rig: r.clone(),
        lease: r.lease_id.as_ref().and_then(|l| st.leases.get(l)).cloned(),
    }
}

/// The queue in service order, each entry with its place among the requests competing with it and why it
/// waits (the reason is worked out once per selector: requests with the same selector wait for the same rigs).
fn queue(st: &State, now: u64, aging: std::time::Duration) -> Vec<QueueEntry> {
    // The reason when no matching rig is usable, by selector and whether the request is a health check (only
    // a health check may take a rig waiting for one); `None` when a rig is usable, and the reason then counts
    // who is ahead.
    let mut fixed: BTreeMap<(&Selector, bool), Option<String>> = BTreeMap::new();
    scheduler::positions(&st.rigs, &st.requests, now, aging)
        .into_iter()
        .map(|(position, r)| {
            let ahead = position.saturating_sub(1) as usize;
            let key = (
                &r.selector,
                r.priority == nvfarm_model::farm::Priority::System,
            );
            let waiting_because = fixed
                .entry(key)
                .or_insert_with(|| {
                    let mut asked = false;
                    let why = scheduler::waiting_because_at(&st.rigs, &st.leases, r, || {
                        asked = true;
                        0
                    });
                    (!asked).then_some(why)
                })
                .clone()
                .unwrap_or_else(|| {
                    scheduler::waiting_because_at(&st.rigs, &st.leases, r, || ahead)
                });
            QueueEntry {
                position,
                request: r.clone(),
                waiting_because,
            }
        })
        .collect()
}

/// Where request `id` stands now.
pub(crate) fn request_status(
    st: &State,
    id: &str,
    now: u64,
    aging: std::time::Duration,
) -> RequestStatus {
    if let Some(r) = st.requests.get(id) {
        let (position, waiting_because) =
            scheduler::standing(&st.rigs, &st.leases, &st.requests, r, now, aging);
        return RequestStatus::Waiting {
            position,
            waiting_because,
        };
    }
    match st.lease_for_request(id) {
        Some(lease) => RequestStatus::Granted(lease.clone()),
        None => RequestStatus::Ended(
            "the request is no longer waiting (cancelled, or its lease already ended)".into(),
        ),
    }
}

impl Farm {
    /// Rigs with these labels (all rigs for an empty map), by name.
    pub async fn rigs(&self, labels: &BTreeMap<String, String>) -> Vec<RigStatus> {
        let sel = Selector::labels(labels.clone());
        self.read(|st| {
            st.rigs
                .values()
                .filter(|r| sel.matches(r))
                .map(|r| rig_status(st, r))
                .collect()
        })
        .await
    }

    /// One rig.
    pub async fn rig(&self, name: &str) -> Result<RigStatus, FarmError> {
        self.read(|st| {
            st.rigs
                .get(name)
                .map(|r| rig_status(st, r))
                .ok_or_else(|| FarmError::NotFound(format!("no rig {name}")))
        })
        .await
    }

    /// One job: from memory while it runs or holds a rig, from the store once it has finished.
    pub async fn job(&self, id: &str) -> Result<Job, FarmError> {
        self.read(|st| self.job_in(st, id)).await
    }

    /// Job `id` from `st`, or from the store if it has left memory.
    pub(crate) fn job_in(&self, st: &State, id: &str) -> Result<Job, FarmError> {
        match st.jobs.get(id) {
            Some(j) => Ok(j.clone()),
            None => self
                .store
                .job(id)?
                .ok_or_else(|| FarmError::NotFound(format!("no job {id}"))),
        }
    }

    /// Jobs, newest first: the resident ones from memory, the finished ones from the store (read without
    /// holding the state, then answered once what it saw is durable).
    pub async fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>, FarmError> {
        f.check()?;
        let mut jobs: Vec<Job> = self
            .read(|st| {
                st.jobs
                    .values()
                    .filter(|j| f.matches(&JobKeys::from(*j)))
                    .cloned()
                    .collect()
            })
            .await;
        let resident: std::collections::HashSet<String> =
            jobs.iter().map(|j| j.id.clone()).collect();
        // The page is [offset, offset + limit) of the merged, sorted list: each source gives its first
        // offset + limit.
        let want = if f.limit > 0 { f.offset + f.limit } else { 0 };
        jobs.extend(
            self.store
                .jobs_where(|h| !resident.contains(&h.id) && f.matches(&h.keys()), want)?,
        );
        // Everything the scan saw was applied by the change numbered `applied` now.
        let seq = self.state.lock().await.applied;
        self.durable(seq).await?;
        jobs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        let mut jobs: Vec<Job> = jobs.into_iter().skip(f.offset).collect();
        if f.limit > 0 {
            jobs.truncate(f.limit);
        }
        Ok(jobs)
    }

    /// A job's log lines from line `from` on, with their numbers.
    pub fn logs(&self, job_id: &str, from: u64) -> Result<Vec<(u64, LogLine)>, FarmError> {
        Ok(self.store.logs(job_id, from)?)
    }

    /// The queue in service order, with reasons.
    pub async fn queue(&self) -> Vec<QueueEntry> {
        self.read(|st| queue(st, now_ms(), self.cfg.aging)).await
    }

    /// A queued job's place in the queue and why it waits (`None` once it has a rig or ended).
    pub async fn job_waiting(&self, job_id: &str) -> Option<(u32, String)> {
        self.read(|st| {
            let req = st.requests.for_job(job_id)?;
            Some(scheduler::standing(
                &st.rigs,
                &st.leases,
                &st.requests,
                req,
                now_ms(),
                self.cfg.aging,
            ))
        })
        .await
    }

    /// Where a waiting request stands.
    pub async fn request_status(&self, id: &str) -> RequestStatus {
        self.read(|st| request_status(st, id, now_ms(), self.cfg.aging))
            .await
    }

    /// A sweep and whether every job of it has ended.
    pub async fn sweep(&self, id: &str) -> Result<(Sweep, bool), FarmError> {
        self.read(|st| {
            let s = st
                .sweeps
                .get(id)
                .ok_or_else(|| FarmError::NotFound(format!("no sweep {id}")))?;
            Ok((s.clone(), sweeps::done(st, s)))
        })
        .await
    }

    /// A sweep's report against the previous sweep of its name.
    pub async fn sweep_report(
        &self,
        id: &str,
        threshold_pct: f64,
    ) -> Result<SweepReport, FarmError> {
        self.read(|st| {
            let s = st
                .sweeps
                .get(id)
                .ok_or_else(|| FarmError::NotFound(format!("no sweep {id}")))?;
            // Its jobs and its predecessor's, finished ones from the store.
            let previous = s.previous.as_ref().and_then(|p| st.sweeps.get(p));
            let mut jobs = sweeps::Jobs::new();
            for j in s
                .job_ids
                .iter()
                .chain(previous.iter().flat_map(|p| &p.job_ids))
            {
                jobs.insert(j.clone(), self.job_in(st, j)?);
            }
            Ok(sweeps::report(st, &jobs, s, threshold_pct))
        })
        .await
    }

    /// Active leases, soonest to end first; only `holder`'s with `Some`.
    pub async fn leases(&self, holder: Option<&str>) -> Vec<Lease> {
        self.read(|st| {
            let mut v: Vec<Lease> = st
                .leases
                .values()
                .filter(|l| holder.is_none_or(|h| l.holder == h))
                .cloned()
                .collect();
            v.sort_by(|a, b| a.expires_ms.cmp(&b.expires_ms).then(a.id.cmp(&b.id)));
            v
        })
        .await
    }

    /// Sweeps named `name` (every sweep with `None`), newest first, with whether each is done.
    pub async fn sweeps_named(&self, name: Option<&str>) -> Vec<(Sweep, bool)> {
        self.read(|st| {
            let mut v: Vec<(Sweep, bool)> = st
                .sweeps
                .values()
                .filter(|s| name.is_none_or(|n| s.name == n))
                .map(|s| (s.clone(), sweeps::done(st, s)))
                .collect();
            v.sort_by(|a, b| {
                b.0.created_ms
                    .cmp(&a.0.created_ms)
                    .then(b.0.id.cmp(&a.0.id))
            });
            v
        })
        .await
    }

    /// Every sweep, newest first.
    pub async fn sweeps(&self) -> Vec<Sweep> {
        self.read(|st| {
            let mut v: Vec<Sweep> = st.sweeps.values().cloned().collect();
            v.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
            v
        })
        .await
    }

    /// A stored artifact.
    pub async fn artifact(&self, sha256: &str) -> Option<Artifact> {
        self.read(|st| st.artifacts.get(sha256).cloned()).await
    }

    /// Records an artifact whose bytes are in place.
    pub async fn put_artifact(&self, a: Artifact) -> Result<(), FarmError> {
        let mut st = self.lock().await?;
        let mut fx = super::Effects::default();
        fx.tx.artifact(&a);
        st.artifacts.insert(a.sha256.clone(), a);
        self.commit(st, fx).await
    }

    /// Counts for `/metrics`.
    pub async fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.read(metrics).await;
        m.store_flushes = self.store.flushes();
        m
    }
}

/// Counts for `/metrics`.
fn metrics(st: &State) -> MetricsSnapshot {
    let mut m = MetricsSnapshot {
        queue_length: st.requests.len(),
        agents_connected: st.agents.values().filter(|a| !a.lost).count(),
        leases: st.leases.len(),
        reservations: st
            .leases
            .values()
            .filter(|l| l.kind == nvfarm_model::farm::LeaseKind::Reservation)
            .count(),
        fencing_token: st.fencing,
        commits: st.applied,
        ..Default::default()
    };
    for s in RigState::ALL {
        m.rigs.insert(s, 0);
    }
    for s in JobState::ALL {
        m.jobs.insert(s, 0);
    }
    for r in st.rigs.values() {
        *m.rigs.entry(r.state).or_default() += 1;
    }
    for j in st.jobs.values() {
        *m.jobs.entry(j.state).or_default() += 1;
    }
    for (s, n) in &st.finished {
        *m.jobs.entry(*s).or_default() += *n as usize;
    }
    m
}
