//! A rig's page (`/rigs/<name>`: state, why it is out of service, its drive, the lease holding it and when that
//! ends, its jobs, failure rate and io trend) and a firmware build's page (`/builds/<sha256>`: every job of the
//! build, each step's pass rate, and its io metrics against the drive model's history, with the regression
//! threshold set by the build that ran on that model before it; a build worse than that is flagged).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use nvfarm_model::farm::{Job, JobState, LeaseKind};
use nvfarm_model::Outcome;

use super::charts::{pass_rates as pass_rate_chart, trend, Point};
use super::job_pages::jobs_table;
use super::page::{class, esc, page, pager, when, PAGE};
use crate::core::trends::{self, IO_METRICS};
use crate::core::{Farm, JobFilter};

#[derive(Debug, Default, Deserialize)]
pub(super) struct Paged {
    #[serde(default)]
    page: usize,
}

/// Each step's (passed, runs) over the ended jobs, in the order steps first appear.
fn pass_rates<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Vec<(String, u32, u32)> {
    let mut v: Vec<(String, u32, u32)> = vec![];
    for j in jobs.into_iter().filter(|j| j.state.is_terminal()) {
        for s in j.steps.iter().filter(|s| s.outcome != Outcome::Skipped) {
            let i = v
                .iter()
                .position(|(n, _, _)| *n == s.name)
                .unwrap_or_else(|| {
                    v.push((s.name.clone(), 0, 0));
                    v.len() - 1
                });
            v[i].2 += 1;
            if s.outcome == Outcome::Passed {
                v[i].1 += 1;
            }
        }
    }
    v
}

fn pass_rate_table(h: &mut String, jobs: &[Job]) {
    let rates = pass_rates(jobs);
    if rates.is_empty() {
        return;
    }
    h.push_str("<h2>Pass rate per step</h2><table><tr><th>step</th><th>passed</th><th>runs</th><th>pass rate</th></tr>");
    for (name, passed, runs) in rates {
        let rate = passed as f64 / runs as f64;
        let cls = if passed == runs { "ok" } else { "bad" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{passed}</td><td>{runs}</td><td class={cls}>{:.0}%</td></tr>",
            esc(&name),
            rate * 100.0
        );
    }
    h.push_str("</table>");
}

/// `metric`'s values over `jobs` (oldest first), with the jobs `mine` marks.
fn series(jobs: &[Job], metric: &str, mine: impl Fn(&Job) -> bool) -> Vec<Point> {
    let mut pts: Vec<Point> = jobs
        .iter()
        .filter_map(|j| {
            let v = j
                .steps
                .iter()
                .find_map(|s| s.metrics.get(metric).copied())?;
            Some(Point {
                at_ms: j.created_ms,
                value: v,
                mine: mine(j),
            })
        })
        .collect();
    pts.sort_by_key(|p| p.at_ms);
    pts
}

pub(super) async fn rig(
    State(farm): State<Arc<Farm>>,
    Path(name): Path<String>,
    Query(q): Query<Paged>,
) -> Response {
    let rigs = farm.rigs(&BTreeMap::new()).await;
    let Some(st) = rigs.into_iter().find(|r| r.rig.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            page("no such rig", &format!("<h1>no rig {}</h1>", esc(&name))),
        )
            .into_response();
    };
    let r = &st.rig;
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Rig {} <span class={}>{}</span></h1>",
        esc(&r.name),
        class(r.state.as_str()),
        r.state.as_str()
    );
    if !r.reason.is_empty() {
        let _ = write!(
            h,
            "<p class={}>why: {}</p>",
            class(r.state.as_str()),
            esc(&r.reason)
        );
    }
    let lease = match &st.lease {
        Some(l) if l.kind == LeaseKind::Job => format!(
            "job <a href=\"/jobs/{0}\">{0}</a> (held while it runs)",
            esc(l.job_id.as_deref().unwrap_or("?"))
        ),
        Some(l) => format!(
            "reserved by {} until {}",
            esc(&l.holder),
            when(l.expires_ms)
        ),
        None => "-".into(),
    };
    let slots: Vec<String> = r
        .firmware_slots
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}: {}", i + 1, s.as_deref().unwrap_or("empty")))
        .collect();
    let _ = write!(
        h,
        "<table><tr><th>agent</th><td>{}</td></tr><tr><th>labels</th><td>{}</td></tr><tr><th>drive</th><td>{} (serial {})</td></tr>\
         <tr><th>firmware</th><td>{} from slot {} · slots {}</td></tr><tr><th>lease</th><td>{lease}</td></tr>\
         <tr><th>last seen</th><td>{}</td></tr><tr><th>infrastructure errors in a row</th><td>{}</td></tr></table>",
        esc(&r.agent),
        esc(&nvfarm_model::farm::labels_text(&r.labels)),
        esc(&r.drive_model),
        esc(&r.drive_serial),
        esc(&r.firmware_revision),
        r.active_slot,
        esc(&slots.join(", ")),
        when(r.last_seen_ms),
        r.consecutive_infra_errors,
    );
    let recent = farm
        .jobs(&JobFilter {
            rig: Some(name.clone()),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let ended: Vec<&Job> = recent
        .iter()
        .filter(|j| j.state.is_terminal() && !j.health_check)
        .collect();
    if !ended.is_empty() {
        let bad = ended
            .iter()
            .filter(|j| {
                matches!(
                    j.state,
                    JobState::Failed | JobState::Error | JobState::TimedOut
                )
            })
            .count();
        let infra = ended.iter().filter(|j| j.state == JobState::Error).count();
        let _ = write!(
            h,
            "<p id=failure-rate>failure rate over its last {} jobs: {:.0}% ({bad} failed, errored or timed out; {infra} of them infrastructure errors)</p>",
            ended.len(),
            bad as f64 * 100.0 / ended.len() as f64
        );
    }
    for (metric, title, unit, _) in IO_METRICS {
        let pts = series(&recent, metric, |_| true);
        if let Some(svg) = trend(&format!("{title} on {}", r.name), unit, &pts, None) {
            let _ = write!(h, "<div class=chart>{svg}</div>");
        }
    }
    let page_jobs = farm
        .jobs(&JobFilter {
            rig: Some(name.clone()),
            offset: q.page * PAGE,
            limit: PAGE,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    h.push_str("<h2>Jobs</h2>");
    jobs_table(&mut h, &page_jobs);
    pager(
        &mut h,
        &format!("/rigs/{}", super::page::urlencode(&name)),
        q.page,
        page_jobs.len(),
    );
    page(&format!("rig {}", r.name), &h).into_response()
}

pub(super) async fn build(State(farm): State<Arc<Farm>>, Path(sha): Path<String>) -> Response {
    let jobs = match farm
        .jobs(&JobFilter {
            build: Some(sha.clone()),
            ..Default::default()
        })
        .await
    {
        Ok(j) => j,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                page(
                    "build",
                    &format!("<p class=bad>{}</p>", esc(&e.to_string())),
                ),
            )
                .into_response()
        }
    };
    let Some(first) = jobs.last() else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "no such build",
                &format!("<h1>no jobs of build {}</h1>", esc(&sha)),
            ),
        )
            .into_response();
    };
    let full_sha = first.artifact_sha256.clone();
    let mut names: Vec<&str> = jobs
        .iter()
        .flat_map(|j| [j.firmware_revision.as_str(), j.firmware_name.as_str()])
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names.dedup();
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Build {}</h1><p>{} · sha256 {}</p>",
        esc(&full_sha[..12.min(full_sha.len())]),
        esc(&names.join(", ")),
        esc(&full_sha)
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        *counts.entry(j.state.as_str()).or_default() += 1;
    }
    h.push_str("<p>");
    for (s, n) in &counts {
        let _ = write!(h, "<span class={}>{n} {s}</span> ", class(s));
    }
    h.push_str("</p>");
    pass_rate_table(&mut h, &jobs);
    // Per drive model: this build's io metrics against the model's history, the threshold from the build that ran
    // on that model before this one.
    let mut models: Vec<String> = jobs
        .iter()
        .map(|j| j.drive_model.clone())
        .filter(|m| !m.is_empty())
        .collect();
    models.sort();
    models.dedup();
    for model in &models {
        let history = farm.model_history(model).await.unwrap_or_default();
        let previous = trends::previous_build(&history, &full_sha);
        let regressed = trends::regressions(&history, &full_sha, model);
        let _ = write!(h, "<h2>Trends on {}</h2>", esc(model));
        // Each step's pass rate per build on this model, builds in the order they first ran.
        let mut builds: Vec<(u64, String, String)> = vec![];
        for j in history
            .iter()
            .filter(|j| !j.artifact_sha256.is_empty() && !j.health_check)
        {
            match builds.iter_mut().find(|b| b.1 == j.artifact_sha256) {
                Some(b) => b.0 = b.0.min(j.created_ms),
                None => builds.push((
                    j.created_ms,
                    j.artifact_sha256.clone(),
                    if j.firmware_revision.is_empty() {
                        j.artifact_sha256[..8.min(j.artifact_sha256.len())].to_string()
                    } else {
                        j.firmware_revision.clone()
                    },
                )),
            }
        }
        builds.sort();
        let per_build: Vec<Vec<(String, u32, u32)>> = builds
            .iter()
            .map(|(_, sha, _)| pass_rates(history.iter().filter(|j| &j.artifact_sha256 == sha)))
            .collect();
        let mut step_names: Vec<String> = vec![];
        for r in &per_build {
            for (n, _, _) in r {
                if !step_names.contains(n) {
                    step_names.push(n.clone());
                }
            }
        }
        let lines: Vec<(String, Vec<Option<f64>>)> = step_names
            .iter()
            .map(|n| {
                let rates = per_build
                    .iter()
                    .map(|r| {
                        r.iter()
                            .find(|(s, _, _)| s == n)
                            .map(|(_, p, runs)| *p as f64 * 100.0 / *runs as f64)
                    })
                    .collect();
                (n.clone(), rates)
            })
            .collect();
        let labels: Vec<String> = builds.iter().map(|b| b.2.clone()).collect();
        let mine_at = builds.iter().position(|b| b.1 == full_sha);
        if let Some(svg) = pass_rate_chart(
            &format!("pass rate per step, {model}"),
            &labels,
            &lines,
            mine_at,
        ) {
            let _ = write!(h, "<div class=chart>{svg}</div>");
        }
        if let Some(p) = &previous {
            let _ = write!(h, "<p>compared with the previous build on this model, <a href=\"/builds/{0}\">{1}</a></p>", esc(p), esc(&p[..12.min(p.len())]));
        }
        for (metric, title, unit, higher_better) in IO_METRICS {
            let pts = series(&history, metric, |j| j.artifact_sha256 == full_sha);
            let threshold = previous
                .as_deref()
                .and_then(|p| trends::metric_mean(&history, p, metric))
                .map(|m| trends::threshold(m, higher_better));
            if let Some(r) = regressed.iter().find(|r| r.metric == metric) {
                let _ = write!(
                    h,
                    "<p class=regressed>regressed: {title} {:.0} {unit} against the previous build's {:.0} (threshold {:.0})</p>",
                    r.mean, r.previous_mean, r.threshold
                );
            }
            if let Some(svg) = trend(&format!("{title}, {model}"), unit, &pts, threshold) {
                let _ = write!(h, "<div class=chart>{svg}</div>");
            }
        }
    }
    h.push_str("<h2>Jobs</h2>");
    jobs_table(&mut h, &jobs);
    page(
        &format!("build {}", &full_sha[..12.min(full_sha.len())]),
        &h,
    )
    .into_response()
}
