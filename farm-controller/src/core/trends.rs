//! A firmware build against the build before it: on each drive model, the io metrics its jobs measured
//! (IOPS, bandwidth, p99 latency) against the previous build's on that model — the newest other build with a job
//! there before this build's first. A mean worse than the previous build's by more than [`BUILD_THRESHOLD`] is a
//! regression. The build page draws these; the notifier tells webhooks when a finished sweep's build has one.

use serde::Serialize;

use nvfarm_model::farm::Job;

use super::{Farm, FarmError, JobFilter};

/// The io metrics compared: (step metric, title, unit, whether higher is better).
pub const IO_METRICS: [(&str, &str, &str, bool); 6] = [
    ("read_iops", "read IOPS", "IOPS", true),
    ("write_iops", "write IOPS", "IOPS", true),
    ("read_bw_mib_s", "read bandwidth", "MiB/s", true),
    ("write_bw_mib_s", "write bandwidth", "MiB/s", true),
    ("read_lat_p99_us", "read latency p99", "µs", false),
    ("write_lat_p99_us", "write latency p99", "µs", false),
];

/// How much worse than the previous build's mean a build's mean may be (the sweeps' default, 25 %).
pub const BUILD_THRESHOLD: f64 = 0.25;

/// How many of a model's newest jobs the comparison looks at.
const HISTORY: usize = 200;

/// An io metric a build did worse on than the build before it on one drive model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildRegression {
    /// The drive model.
    pub model: String,
    /// The step metric (`read_iops`, ...).
    pub metric: &'static str,
    /// What it is, for people.
    pub title: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// This build's mean.
    pub mean: f64,
    /// The previous build's mean.
    pub previous_mean: f64,
    /// The bound this build's mean crossed.
    pub threshold: f64,
    /// The previous build (sha256).
    pub previous_build: String,
}

/// The first value of `metric` a job's steps measured.
pub fn job_metric(j: &Job, metric: &str) -> Option<f64> {
    j.steps.iter().find_map(|s| s.metrics.get(metric).copied())
}

/// The mean of `metric` over `sha`'s jobs in `history`.
pub fn metric_mean(history: &[Job], sha: &str, metric: &str) -> Option<f64> {
    let (n, sum) = history
        .iter()
        .filter(|j| j.artifact_sha256 == sha)
        .filter_map(|j| job_metric(j, metric))
        .fold((0u32, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum / n as f64)
}

/// The build that ran before `sha` in `history` (one model's jobs): the newest other build with a job before
/// `sha`'s first.
pub fn previous_build(history: &[Job], sha: &str) -> Option<String> {
    let first = history
        .iter()
        .filter(|j| j.artifact_sha256 == sha)
        .map(|j| j.created_ms)
        .min()?;
    history
        .iter()
        .filter(|j| {
            j.artifact_sha256 != sha && !j.artifact_sha256.is_empty() && j.created_ms < first
        })
        .max_by_key(|j| j.created_ms)
        .map(|j| j.artifact_sha256.clone())
}

/// The bound `metric` must stay within, from the previous build's mean.
pub fn threshold(previous_mean: f64, higher_is_better: bool) -> f64 {
    if higher_is_better {
        previous_mean * (1.0 - BUILD_THRESHOLD)
    } else {
        previous_mean * (1.0 + BUILD_THRESHOLD)
    }
}

/// `sha`'s regressions against the previous build in `history` (one model's jobs).
pub fn regressions(history: &[Job], sha: &str, model: &str) -> Vec<BuildRegression> {
    let Some(prev) = previous_build(history, sha) else {
        return vec![];
    };
    IO_METRICS
        .iter()
        .filter_map(|&(metric, title, unit, higher)| {
            let mean = metric_mean(history, sha, metric)?;
            let previous_mean = metric_mean(history, &prev, metric)?;
            let t = threshold(previous_mean, higher);
            let worse = if higher { mean < t } else { mean > t };
            worse.then(|| BuildRegression {
                model: model.to_string(),
                metric,
                title,
                unit,
                mean,
                previous_mean,
                threshold: t,
                previous_build: prev.clone(),
            })
        })
        .collect()
}

impl Farm {
    /// The newest jobs (at most 200) that ran on drive model `model`, from memory and the store.
    pub async fn model_history(&self, model: &str) -> Result<Vec<Job>, FarmError> {
        self.jobs(&JobFilter {
            drive_model: Some(model.to_string()),
            limit: HISTORY,
            ..Default::default()
        })
        .await
    }

    /// Build `sha`'s (its full sha256) regressions against the previous build, on every drive model it ran on.
    pub async fn build_regressions(&self, sha: &str) -> Result<Vec<BuildRegression>, FarmError> {
        let jobs = self
            .jobs(&JobFilter {
                build: Some(sha.to_string()),
                ..Default::default()
            })
            .await?;
        let mut models: Vec<&str> = jobs
            .iter()
            .map(|j| j.drive_model.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        models.sort();
        models.dedup();
        let mut out = vec![];
        for m in models {
            out.extend(regressions(&self.model_history(m).await?, sha, m));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::StepReport;

    fn job(id: u32, sha: &str, at: u64, iops: f64) -> Job {
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "id": format!("job-{id:06}"), "state": "passed", "rig": "r1", "selector": {"rig": "r1", "labels": {}},
            "plan_name": "p", "artifact_sha256": sha, "firmware_name": "", "firmware_revision": "",
            "priority": "ci", "submitter": "ci", "created_ms": at, "started_ms": at, "finished_ms": at + 1,
            "timeout_ms": 0, "message": "", "steps": [], "lease_id": null, "fencing_token": 0,
            "sweep_id": null, "attempt": 0, "health_check": false, "log_lines": 0
        }))
        .unwrap();
        j.steps = vec![StepReport {
            number: 1,
            name: "io".into(),
            kind: "io".into(),
            metrics: [("read_iops".to_string(), iops)].into(),
            ..StepReport::default()
        }];
        j
    }

    #[test]
    fn a_build_is_held_against_the_one_that_ran_before_it_on_the_model() {
        let h = vec![
            job(1, "aaa", 10, 1000.0),
            job(2, "aaa", 11, 1100.0),
            job(3, "bbb", 20, 900.0),
            job(4, "ccc", 30, 700.0),
            job(5, "ccc", 31, 760.0),
        ];
        assert_eq!(previous_build(&h, "ccc").as_deref(), Some("bbb"));
        assert_eq!(previous_build(&h, "aaa"), None, "the first build has none");
        assert_eq!(metric_mean(&h, "aaa", "read_iops"), Some(1050.0));
        // bbb: 900 against aaa's 1050: within 25 %. ccc: 730 against bbb's 900 (threshold 675): within.
        assert!(regressions(&h, "bbb", "M").is_empty());
        assert!(regressions(&h, "ccc", "M").is_empty());
        let mut h2 = h.clone();
        h2.push(job(6, "ddd", 40, 500.0));
        let r = regressions(&h2, "ddd", "M");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (r[0].metric, r[0].previous_build.as_str()),
            ("read_iops", "ccc")
        );
        assert_eq!(
            (r[0].mean, r[0].previous_mean, r[0].threshold),
            (500.0, 730.0, 547.5)
        );
        assert_eq!(threshold(100.0, false), 125.0, "latency: higher is worse");
    }
}
