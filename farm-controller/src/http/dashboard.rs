//! The dashboard's front page, `/`: rigs (linked to their pages, with who holds each and until when), the queue
//! with reasons, pass/fail per firmware build (linked to the build's page) and recent jobs. The other pages:
//! [`super::job_pages`], [`super::sweep_pages`], [`super::rig_build_pages`].
//!
//! Outcomes keep their distinctions here too: failed (the firmware), error (the infrastructure), timed out,
//! cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;

use nvfarm_model::farm::{labels_text, JobState, LeaseKind};

use super::page::{class, esc, page, when};
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

pub(super) async fn index(State(farm): State<Arc<Farm>>) -> Html<String> {
    let rigs = farm.rigs(&BTreeMap::new()).await;
    let queue = farm.queue().await;
    let (jobs, jobs_error) = match farm
        .jobs(&JobFilter {
            limit: 500,
            ..Default::default()
        })
        .await
    {
        Ok(j) => (j, None),
        Err(e) => (vec![], Some(e)),
    };
    let mut h = String::new();
    let _ = write!(h, "<meta http-equiv=refresh content=10><h1>nvfarm</h1>");
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
            Some(l) => format!(
                "reserved by {} until {}",
                esc(&l.holder),
                when(l.expires_ms)
            ),
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
            "<tr><td><a href=\"/rigs/{0}\">{0}</a></td><td>{1}</td><td class={2}>{state}{hc}</td><td>{who}</td><td>{3}</td><td>{4} {5}</td><td>{6}</td></tr>",
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
            "<tr><td><a href=\"/builds/{0}\">{0}</a></td><td>{1}</td><td class=ok>{2}</td><td class=bad>{3}</td><td class=infra>{4}</td><td class=timeout>{5}</td><td class=muted>{6}</td><td>{running}</td></tr>",
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
    h.push_str("<h2>Recent jobs</h2>");
    let recent: Vec<_> = jobs.iter().take(20).cloned().collect();
    super::job_pages::jobs_table(&mut h, &recent);
    h.push_str("<p><a href=\"/jobs\">all jobs</a> · <a href=\"/sweeps\">sweeps</a></p>");
    page("farm", &h)
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
