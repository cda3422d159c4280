//! Each rig's last run of each plan, kept under the agent's work dir (`history/<rig>/<plan>.json`: every step's
//! metrics by step name), so an `io` step with `baseline = "previous"` is compared with the same step's previous
//! run on the same rig, in the standalone `bench-agent run` and in farm jobs alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nvfarm_model::report::direction;
use nvfarm_model::{Outcome, RunReport};

/// A run's metrics, by step name.
pub(crate) type Metrics = BTreeMap<String, BTreeMap<String, f64>>;

/// Where rig `rig` keeps its last run of `plan`.
pub(crate) fn file(dir: &Path, rig: &str, plan: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(safe(rig)).join(format!("{}.json", safe(plan)))
}

/// The metrics stored at `path` (none yet, or unreadable: empty, with a warning for the latter).
pub(crate) fn load(path: &Path) -> Metrics {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "ignoring an unreadable run history ({e}); this run becomes the baseline");
            Metrics::new()
        }),
        Err(_) => Metrics::new(),
    }
}

/// Keeps this run's metrics for the next one: every step that ran to a verdict (passed or failed) and measured
/// something; steps that did not run keep their previous metrics. Written whole and renamed into place.
pub(crate) fn save(path: &Path, previous: &Metrics, report: &RunReport) -> std::io::Result<()> {
    let mut next = previous.clone();
    for s in &report.steps {
        if matches!(s.outcome, Outcome::Passed | Outcome::Failed) && !s.metrics.is_empty() {
            next.insert(s.name.clone(), s.metrics.clone());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&next).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Each headline metric (IOPS, bandwidth, p99 latency) of `now` against `before`: one line per metric both
/// have, and those worse by more than `max_pct` percent.
pub(crate) fn compare(
    before: &BTreeMap<String, f64>,
    now: &BTreeMap<String, f64>,
    max_pct: f64,
) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut worse) = (vec![], vec![]);
    for (m, v) in now {
        let dir = direction(m);
        let Some(&p) = before.get(m) else {
            continue;
        };
        if dir == 0 || p <= 0.0 {
            continue;
        }
        let delta = (v - p) / p * 100.0;
        let line = format!("{m} {v:.1} vs previous {p:.1} ({delta:+.1}%)");
        if delta * dir as f64 > max_pct {
            worse.push(format!("{line}, worse than the {max_pct}% allowed"));
        }
        lines.push(line);
    }
    (lines, worse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_in_the_bad_direction_past_the_threshold_count() {
        let before: BTreeMap<String, f64> = [
            ("read_iops".to_string(), 1000.0),
            ("read_lat_p99_us".to_string(), 100.0),
            ("read_lat_mean_us".to_string(), 50.0),
        ]
        .into();
        let now: BTreeMap<String, f64> = [
            ("read_iops".to_string(), 850.0),
            ("read_lat_p99_us".to_string(), 105.0),
            ("read_lat_mean_us".to_string(), 500.0),
        ]
        .into();
        let (lines, worse) = compare(&before, &now, 10.0);
        assert_eq!(lines.len(), 2, "means are not compared: {lines:?}");
        assert_eq!(worse.len(), 1, "{worse:?}");
        assert!(
            worse[0].starts_with("read_iops 850.0 vs previous 1000.0 (-15.0%)"),
            "{worse:?}"
        );
        let (_, worse) = compare(&before, &now, 20.0);
        assert!(worse.is_empty());
        // Better is never worse.
        let faster: BTreeMap<String, f64> = [("read_iops".to_string(), 5000.0)].into();
        assert!(compare(&before, &faster, 0.0).1.is_empty());
        assert_eq!(
            file(Path::new("/h"), "rig 1", "nightly/x"),
            Path::new("/h/rig_1/nightly_x.json")
        );
    }
}
