//! Outcome counters and duration histograms for `/metrics`, fed by following the farm's committed job changes:
//! how long jobs waited in the queue and ran, how long each step kind and each flash took, and how jobs and
//! steps ended per rig, drive model and step. The counts start at zero with each controller process, as
//! Prometheus counters do; the farm's own records keep the history.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;

use nvfarm_model::farm::Job;

use crate::core::{Farm, FarmEvent};

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

fn histogram() -> Histogram {
    // 0.1 s to about 7 h, doubling: a flash takes seconds, a soak hours.
    Histogram::new(exponential_buckets(0.1, 2.0, 18))
}

/// Every series this module keeps (cheap to clone: clones share their counts).
#[derive(Clone, Debug)]
pub struct Stats {
    job_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    queue_wait_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    step_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    flash_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    job_outcomes: Family<Labels, Counter>,
    step_outcomes: Family<Labels, Counter>,
    seen: Arc<Mutex<Seen>>,
}

/// Which jobs have been counted: started (queue wait) and ended (everything else). Bounded: the oldest ids go
/// first (a job id that old will not change again).
#[derive(Debug, Default)]
struct Seen {
    started: BTreeSet<String>,
    ended: BTreeSet<String>,
}

/// How many job ids [`Seen`] keeps of each kind.
const SEEN_MAX: usize = 100_000;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            job_seconds: Family::new_with_constructor(histogram),
            queue_wait_seconds: Family::new_with_constructor(histogram),
            step_seconds: Family::new_with_constructor(histogram),
            flash_seconds: Family::new_with_constructor(histogram),
            job_outcomes: Family::default(),
            step_outcomes: Family::default(),
            seen: Arc::default(),
        }
    }
}

impl Stats {
    /// Adds every series to `reg` (which prefixes their names).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "job_duration_seconds",
            "Jobs from getting their rig to ending, by outcome",
            self.job_seconds.clone(),
        );
        reg.register(
            "queue_wait_seconds",
            "Jobs from submission to getting a rig, by priority",
            self.queue_wait_seconds.clone(),
        );
        reg.register(
            "step_duration_seconds",
            "Steps of ended jobs, by step kind and outcome",
            self.step_seconds.clone(),
        );
        reg.register(
            "flash_duration_seconds",
            "Flash steps (download, commit, activate, verify), by outcome and drive model",
            self.flash_seconds.clone(),
        );
        reg.register(
            "job_outcomes",
            "Ended jobs by rig, drive model and outcome",
            self.job_outcomes.clone(),
        );
        reg.register(
            "step_outcomes",
            "Steps of ended jobs by step name, drive model and outcome",
            self.step_outcomes.clone(),
        );
    }

    /// Counts what `j` tells that was not counted yet: its queue wait once it has a rig, its duration, steps
    /// and outcome once it has ended.
    pub fn observe(&self, j: &Job) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if j.started_ms > 0 && insert(&mut seen.started, &j.id) {
            self.queue_wait_seconds
                .get_or_create(&vec![("priority", j.priority.as_str().to_string())])
                .observe(secs(j.started_ms.saturating_sub(j.created_ms)));
        }
        if !j.state.is_terminal() {
            return;
        }
        if !insert(&mut seen.ended, &j.id) {
            return;
        }
        drop(seen);
        let model = if j.drive_model.is_empty() {
            "unknown".to_string()
        } else {
            j.drive_model.clone()
        };
        let outcome = j.state.as_str().to_string();
        self.job_outcomes
            .get_or_create(&vec![
                ("rig", j.rig.clone().unwrap_or_else(|| "none".into())),
                ("model", model.clone()),
                ("outcome", outcome.clone()),
            ])
            .inc();
        if j.started_ms > 0 && j.finished_ms >= j.started_ms {
            self.job_seconds
                .get_or_create(&vec![("outcome", outcome)])
                .observe(secs(j.finished_ms - j.started_ms));
        }
        for s in &j.steps {
            let so = s.outcome.as_str().to_string();
            self.step_outcomes
                .get_or_create(&vec![
                    ("step", s.name.clone()),
                    ("model", model.clone()),
                    ("outcome", so.clone()),
                ])
                .inc();
            if s.outcome == nvfarm_model::Outcome::Skipped {
                continue;
            }
            self.step_seconds
                .get_or_create(&vec![("kind", s.kind.clone()), ("outcome", so.clone())])
                .observe(secs(s.duration_ms));
            if s.kind == "flash" {
                self.flash_seconds
                    .get_or_create(&vec![("outcome", so), ("model", model.clone())])
                    .observe(secs(s.duration_ms));
            }
        }
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Adds `id`; `false` if it was there. Keeps at most [`SEEN_MAX`], dropping the smallest (oldest) ids.
fn insert(set: &mut BTreeSet<String>, id: &str) -> bool {
    if !set.insert(id.to_string()) {
        return false;
    }
    while set.len() > SEEN_MAX {
        set.pop_first();
    }
    true
}

/// Follows the farm's committed job changes into `stats` until the farm stops.
pub async fn run(farm: Arc<Farm>, stats: Stats) {
    let mut rx = farm.subscribe();
    let stopping = farm.stopping();
    tokio::pin!(stopping);
    loop {
        let id = tokio::select! {
            r = rx.recv() => match r {
                Ok(FarmEvent::Job(id)) => id,
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!("metrics missed {n} farm events (the controller was busy): some durations are not counted");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            _ = &mut stopping => return,
        };
        // Several events for one job in a burst: look once.
        let mut ids: HashMap<String, ()> = HashMap::from([(id, ())]);
        while let Ok(e) = rx.try_recv() {
            if let FarmEvent::Job(id) = e {
                ids.insert(id, ());
            }
        }
        for id in ids.into_keys() {
            if let Ok(j) = farm.job(&id).await {
                stats.observe(&j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::farm::JobState;
    use nvfarm_model::{Outcome, StepReport};

    fn job(state: JobState) -> Job {
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "id": "job-000001", "state": "queued", "rig": "r1", "selector": {"rig": "r1", "labels": {}},
            "plan_name": "p", "artifact_sha256": "", "firmware_name": "", "firmware_revision": "",
            "priority": "ci", "submitter": "ci", "created_ms": 1_000, "started_ms": 0, "finished_ms": 0,
            "timeout_ms": 0, "message": "", "steps": [], "lease_id": null, "fencing_token": 0,
            "sweep_id": null, "attempt": 0, "health_check": false, "log_lines": 0
        }))
        .unwrap();
        j.state = state;
        j.drive_model = "M1".into();
        j
    }

    fn text(s: &Stats) -> String {
        let mut reg = Registry::with_prefix("nvfarm");
        s.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn a_job_is_counted_once_when_it_starts_and_once_when_it_ends() {
        let s = Stats::default();
        let mut j = job(JobState::Queued);
        s.observe(&j);
        assert!(
            !text(&s).contains("nvfarm_queue_wait_seconds_count"),
            "{}",
            text(&s)
        );
        j.state = JobState::Testing;
        j.started_ms = 3_500;
        s.observe(&j);
        s.observe(&j);
        assert!(
            text(&s).contains("nvfarm_queue_wait_seconds_count{priority=\"ci\"} 1"),
            "{}",
            text(&s)
        );
        assert!(
            text(&s).contains("nvfarm_queue_wait_seconds_sum{priority=\"ci\"} 2.5"),
            "{}",
            text(&s)
        );
        j.state = JobState::Failed;
        j.finished_ms = 13_500;
        j.steps = vec![
            StepReport {
                number: 1,
                name: "flash".into(),
                kind: "flash".into(),
                outcome: Outcome::Failed,
                duration_ms: 9_000,
                ..StepReport::default()
            },
            StepReport {
                number: 2,
                name: "smart".into(),
                kind: "smart".into(),
                outcome: Outcome::Skipped,
                ..StepReport::default()
            },
        ];
        s.observe(&j);
        s.observe(&j);
        let t = text(&s);
        for want in [
            "nvfarm_job_duration_seconds_count{outcome=\"failed\"} 1",
            "nvfarm_job_duration_seconds_sum{outcome=\"failed\"} 10.0",
            "nvfarm_job_outcomes_total{rig=\"r1\",model=\"M1\",outcome=\"failed\"} 1",
            "nvfarm_step_outcomes_total{step=\"flash\",model=\"M1\",outcome=\"failed\"} 1",
            "nvfarm_step_outcomes_total{step=\"smart\",model=\"M1\",outcome=\"skipped\"} 1",
            "nvfarm_flash_duration_seconds_sum{outcome=\"failed\",model=\"M1\"} 9.0",
            "nvfarm_step_duration_seconds_count{kind=\"flash\",outcome=\"failed\"} 1",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        assert!(
            !t.contains("kind=\"smart\""),
            "a skipped step has no duration:\n{t}"
        );
    }
}
