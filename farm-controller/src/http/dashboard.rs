//! The dashboard: `/` (rigs, the queue with reasons, recent jobs, pass/fail per firmware build) and
//! `/jobs/<id>` (one job's steps, metrics, and each step's log).
//!
//! Outcomes keep their distinctions here too: failed (the firmware), error (the infrastructure), timed out,
//! cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use nvfarm_model::farm::{labels_text, JobState, LeaseKind};
use nvfarm_model::junit::escape as esc;
use nvfarm_model::Outcome;

use crate::core::{Farm, JobFilter};

/// One firmware build on the dashboard: its sha256 (the first 12 digits), every revision and file name its jobs
/// gave it, and how many of its jobs are in each state.
#[derive(Debug, PartialEq)]
struct BuildRow {
    sha: String,
    names: BTreeSet<String>,
    counts: BTreeMap<JobState, u32>,
}

/// Groups jobs `(sha256, revision, file name, state)` by build. A build is its sha256: jobs that knew its revision
/// and jobs that only had its file name are the same build, counted once.
fn build_rows<'a>(
    jobs: impl IntoIterator<Item = (&'a str, &'a str, &'a str, JobState)>,
) -> Vec<BuildRow> {
    let mut rows: BTreeMap<String, BuildRow> = BTreeMap::new();
    for (sha, revision, name, state) in jobs {
        let sha: String = sha.chars().take(12).collect();
        let row = rows.entry(sha.clone()).or_insert_with(|| BuildRow {
            sha,
            names: BTreeSet::new(),
            counts: BTreeMap::new(),
        });
        row.names.extend(
            [revision, name]
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        );
        *row.counts.entry(state).or_default() += 1;
    }
    rows.into_values().collect()
}

/// The CSS class for a state or outcome name.
fn class(s: &str) -> &'static str {
    match s {
        "passed" | "idle" => "ok",
        "failed" | "quarantined" => "bad",
        "error" | "offline" => "infra",
        "timed_out" => "timeout",
        "cancelled" | "maintenance" | "skipped" => "muted",
        "invalid" => "invalid",
        _ => "busy",
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:90%}th{background:#f3f3f3}\
.ok{background:#d9f2d9}.bad{background:#f8d0d0}.infra{background:#ffe0b3}.timeout{background:#f2e6ff}.invalid{background:#fff3b0}.muted{color:#777}.busy{background:#dde8f7}\
pre{background:#f7f7f7;padding:.6em;font-size:85%;overflow-x:auto}";

pub(super) async fn index(State(farm): State<Arc<Farm>>) -> Html<String> {
    let rigs = farm.rigs(&BTreeMap::new()).await;
    let queue = farm.queue().await;
    let (jobs, jobs_error) = match farm.jobs(&JobFilter::default()).await {
        Ok(j) => (j, None),
        Err(e) => (vec![], Some(e)),
    };
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5><title>nvfarm</title><style>{STYLE}</style></head><body><h1>nvfarm</h1>");
    if let Some(e) = jobs_error {
        let _ = write!(
            h,
            "<p class=bad>jobs cannot be listed: {}</p>",
            esc(&e.to_string())
        );
    }
    let _ = write!(h, "<h2>Rigs ({})</h2><table><tr><th>rig</th><th>agent</th><th>state</th><th>holder / reason</th><th>labels</th><th>drive</th><th>firmware</th></tr>", rigs.len());
    for s in &rigs {
        let r = &s.rig;
        let who = match &s.lease {
            Some(l) if l.kind == LeaseKind::Job => format!(
                "job <a href=\"/jobs/{0}\">{0}</a> ({1})",
                esc(l.job_id.as_deref().unwrap_or("?")),
                esc(&l.holder)
            ),
            Some(l) => format!("reserved by {}", esc(&l.holder)),
            None => esc(&r.reason),
        };
        let hc = if r.health_check_pending {
            " (health check pending)"
        } else {
            ""
        };
        let state = r.state.as_str();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class={}>{state}{hc}</td><td>{who}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.agent),
            class(state),
            esc(&labels_text(&r.labels)),
            esc(&r.drive_model),
            esc(&r.drive_serial),
            esc(&r.firmware_revision)
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<h2>Queue ({})</h2><table><tr><th>#</th><th>request</th><th>class</th><th>wants</th><th>for</th><th>waiting because</th></tr>", queue.len());
    for e in &queue {
        let r = &e.request;
        let what = r
            .job_id
            .as_ref()
            .map(|j| format!("job <a href=\"/jobs/{0}\">{0}</a>", esc(j)))
            .unwrap_or_else(|| "reservation".into());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} ({what})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.position,
            esc(&r.id),
            r.priority,
            esc(&r.selector.describe()),
            esc(&r.holder),
            esc(&e.waiting_because)
        );
    }
    h.push_str("</table>");
    // Pass/fail per firmware build.
    let builds = build_rows(
        jobs.iter()
            .filter(|j| !j.health_check && !j.artifact_sha256.is_empty())
            .map(|j| {
                (
                    j.artifact_sha256.as_str(),
                    j.firmware_revision.as_str(),
                    j.firmware_name.as_str(),
                    j.state,
                )
            }),
    );
    h.push_str("<h2>Firmware builds</h2><table><tr><th>sha256</th><th>revision / file</th><th>passed</th><th>failed</th><th>error</th><th>timed out</th><th>cancelled</th><th>running</th></tr>");
    for b in &builds {
        let (sha, counts) = (&b.sha, &b.counts);
        let rev = b.names.iter().cloned().collect::<Vec<_>>().join(", ");
        let c = |k: JobState| counts.get(&k).copied().unwrap_or(0);
        let running = c(JobState::Queued)
            + c(JobState::Assigned)
            + c(JobState::Flashing)
            + c(JobState::Testing);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=ok>{}</td><td class=bad>{}</td><td class=infra>{}</td><td class=timeout>{}</td><td class=muted>{}</td><td>{running}</td></tr>",
            esc(sha),
            esc(&rev),
            c(JobState::Passed),
            c(JobState::Failed),
            c(JobState::Error),
            c(JobState::TimedOut),
            c(JobState::Cancelled)
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Recent jobs</h2><table><tr><th>job</th><th>state</th><th>rig</th><th>plan</th><th>firmware</th><th>by</th><th>message</th></tr>");
    for j in jobs.iter().take(50) {
        let s = j.state.as_str();
        let _ = write!(
            h,
            "<tr><td><a href=\"/jobs/{0}\">{0}</a></td><td class={1}>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
            esc(&j.id),
            class(s),
            s,
            esc(j.rig.as_deref().unwrap_or("-")),
            esc(&j.plan_name),
            esc(&j.firmware_name),
            esc(&j.submitter),
            esc(&j.message)
        );
    }
    h.push_str("</table></body></html>");
    Html(h)
}

pub(super) async fn job_page(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let Ok(mut j) = farm.job(&id).await else {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    };
    let lines = farm.logs(&id, 0).unwrap_or_default();
    j.attach_logs(lines.iter().map(|(_, l)| l));
    let mut h = String::new();
    let s = j.state.as_str();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><title>{0}</title><style>{STYLE}</style></head><body><p><a href=\"/\">nvfarm</a></p><h1>{0} <span class={1}>{2}</span></h1><p>{3}</p>",
        esc(&j.id),
        class(s),
        s,
        esc(&j.message)
    );
    let _ = write!(
        h,
        "<table><tr><th>rig</th><td>{}</td></tr><tr><th>plan</th><td>{}</td></tr><tr><th>firmware</th><td>{} {} ({})</td></tr><tr><th>submitted by</th><td>{}</td></tr><tr><th>fencing token</th><td>{}</td></tr></table>",
        esc(j.rig.as_deref().unwrap_or("-")),
        esc(&j.plan_name),
        esc(&j.firmware_name),
        esc(&j.firmware_revision),
        esc(&j.artifact_sha256),
        esc(&j.submitter),
        j.fencing_token
    );
    h.push_str("<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>outcome</th><th>seconds</th><th>message</th><th>metrics</th></tr>");
    for st in &j.steps {
        let metrics: Vec<String> = st
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v:.1}"))
            .collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"#step-{0}\">{0}</a></td><td>{1}</td><td class={2}>{3}</td><td>{4:.1}</td><td>{5}</td><td>{6}</td></tr>",
            st.number,
            esc(&st.title()),
            class(st.outcome.as_str()),
            st.outcome,
            st.duration_ms as f64 / 1000.0,
            esc(&st.message),
            esc(&metrics.join(" "))
        );
    }
    h.push_str("</table><h2>Log</h2>");
    for st in j
        .steps
        .iter()
        .filter(|s| s.outcome != Outcome::Skipped || !s.log.is_empty())
    {
        let _ = write!(
            h,
            "<h3 id=\"step-{}\">{} {}</h3><pre>",
            st.number,
            st.number,
            esc(&st.title())
        );
        for l in &st.log {
            h.push_str(&esc(l));
            h.push('\n');
        }
        h.push_str("</pre>");
    }
    let other: Vec<&str> = lines
        .iter()
        .filter(|(_, l)| !j.steps.iter().any(|s| s.number == l.step))
        .map(|(_, l)| l.text.as_str())
        .collect();
    if !other.is_empty() {
        h.push_str("<h3>outside any step</h3><pre>");
        for l in other {
            h.push_str(&esc(l));
            h.push('\n');
        }
        h.push_str("</pre>");
    }
    h.push_str("</body></html>");
    Html(h).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_one_row_whether_its_jobs_knew_its_revision_or_only_its_file_name() {
        let sha_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let sha_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let rows = build_rows([
            (sha_a, "2.0.0", "fw.img", JobState::Passed),
            (sha_a, "", "fw.img", JobState::Failed),
            (sha_a, "", "fw-copy.img", JobState::Passed),
            (sha_b, "", "other.img", JobState::Error),
        ]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].sha, "aaaaaaaaaaaa");
        assert_eq!(
            rows[0].names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["2.0.0", "fw-copy.img", "fw.img"]
        );
        assert_eq!(rows[0].counts[&JobState::Passed], 2);
        assert_eq!(rows[0].counts[&JobState::Failed], 1);
        assert_eq!(rows[1].counts[&JobState::Error], 1);
        assert_eq!(rows[1].names.len(), 1);
    }
}
