//! Jobs for people: `/jobs` (filtered by rig, build, model, plan and state, paged), `/jobs/<id>` (timestamps,
//! durations, the step running now, each step's metrics and log, a live log while it runs), and the job's raw
//! log (`/jobs/<id>/log`), JUnit report (`/jobs/<id>/junit.xml`) and live events (`/jobs/<id>/events`,
//! server-sent events: each new log line, and a `state` event when the job changes).

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_stream::StreamExt;

use nvfarm_model::farm::Job;
use nvfarm_model::Outcome;

use super::page::{class, esc, page, pager, query, took, when, PAGE};
use crate::core::{Farm, FarmEvent, JobFilter};

/// `/jobs` filters.
#[derive(Debug, Default, Deserialize)]
pub(super) struct JobsPage {
    rig: Option<String>,
    build: Option<String>,
    model: Option<String>,
    plan: Option<String>,
    state: Option<String>,
    #[serde(default)]
    page: usize,
}

/// The step a job that holds its rig runs now: the first of its plan's steps with no result yet.
fn running_step(j: &Job) -> Option<String> {
    if j.state.is_terminal() || j.started_ms == 0 {
        return None;
    }
    let plan =
        nvfarm_model::plan::Plan::parse(&j.plan_toml, std::path::Path::new(&j.plan_name)).ok()?;
    plan.steps
        .iter()
        .find(|s| !j.steps.iter().any(|r| r.number == s.number))
        .map(|s| format!("{} {}", s.number, s.title()))
}

/// A jobs table (newest first) with links to each job, rig and build.
pub(super) fn jobs_table(h: &mut String, jobs: &[Job]) {
    h.push_str("<table><tr><th>job</th><th>state</th><th>submitted</th><th>took</th><th>rig</th><th>model</th><th>build</th><th>plan</th><th>by</th><th>message</th></tr>");
    for j in jobs {
        let s = j.state.as_str();
        let build = if j.artifact_sha256.is_empty() {
            "-".to_string()
        } else {
            let label = if j.firmware_revision.is_empty() {
                &j.artifact_sha256[..12.min(j.artifact_sha256.len())]
            } else {
                &j.firmware_revision
            };
            format!(
                "<a href=\"/builds/{}\">{}</a>",
                esc(&j.artifact_sha256),
                esc(label)
            )
        };
        let rig = j
            .rig
            .as_deref()
            .map(|r| format!("<a href=\"/rigs/{0}\">{0}</a>", esc(r)))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            h,
            "<tr><td><a href=\"/jobs/{0}\">{0}</a></td><td class={1}>{2}</td><td>{3}</td><td>{4}</td><td>{rig}</td><td>{5}</td><td>{build}</td><td>{6}</td><td>{7}</td><td>{8}</td></tr>",
            esc(&j.id),
            class(s),
            s,
            when(j.created_ms),
            took(j.started_ms, j.finished_ms),
            esc(&j.drive_model),
            esc(&j.plan_name),
            esc(&j.submitter),
            esc(&j.message)
        );
    }
    h.push_str("</table>");
}

pub(super) async fn jobs(State(farm): State<Arc<Farm>>, Query(q): Query<JobsPage>) -> Response {
    let state = q.state.clone().filter(|s| !s.is_empty());
    // A state filter is applied here: fetch a few pages' worth and filter.
    let f = JobFilter {
        rig: q.rig.clone().filter(|s| !s.is_empty()),
        build: q.build.clone().filter(|s| !s.is_empty()),
        drive_model: q.model.clone().filter(|s| !s.is_empty()),
        plan: q.plan.clone().filter(|s| !s.is_empty()),
        offset: if state.is_some() { 0 } else { q.page * PAGE },
        limit: if state.is_some() { 0 } else { PAGE },
        ..Default::default()
    };
    let jobs = match farm.jobs(&f).await {
        Ok(j) => j,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                page("jobs", &format!("<p class=bad>{}</p>", esc(&e.to_string()))),
            )
                .into_response()
        }
    };
    let jobs: Vec<Job> = match &state {
        Some(s) => jobs
            .into_iter()
            .filter(|j| j.state.as_str() == s)
            .skip(q.page * PAGE)
            .take(PAGE)
            .collect(),
        None => jobs,
    };
    let mut h = String::from("<h1>Jobs</h1><form method=get action=/jobs>");
    for (name, v) in [
        ("rig", &q.rig),
        ("build", &q.build),
        ("model", &q.model),
        ("plan", &q.plan),
        ("state", &q.state),
    ] {
        let _ = write!(
            h,
            "<label>{name} <input name={name} value=\"{}\" size=12></label> ",
            esc(v.as_deref().unwrap_or(""))
        );
    }
    h.push_str("<button>filter</button></form>");
    if jobs.is_empty() {
        h.push_str("<p>no jobs match</p>");
    } else {
        jobs_table(&mut h, &jobs);
    }
    let base = format!(
        "/jobs{}",
        query(&[
            ("rig", &q.rig),
            ("build", &q.build),
            ("model", &q.model),
            ("plan", &q.plan),
            ("state", &q.state)
        ])
    );
    pager(&mut h, &base, q.page, jobs.len());
    page("jobs", &h).into_response()
}

pub(super) async fn job(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let Ok(mut j) = farm.job(&id).await else {
        return (
            StatusCode::NOT_FOUND,
            page("no such job", &format!("<h1>no job {}</h1>", esc(&id))),
        )
            .into_response();
    };
    let lines = farm.logs(&id, 0).unwrap_or_default();
    let seen = lines.len();
    j.attach_logs(lines.iter().map(|(_, l)| l));
    let mut h = String::new();
    let s = j.state.as_str();
    let _ = write!(
        h,
        "<h1>{0} <span id=state class={1}>{2}</span></h1><p id=message>{3}</p>",
        esc(&j.id),
        class(s),
        s,
        esc(&j.message)
    );
    let running = running_step(&j);
    let _ = write!(
        h,
        "<table><tr><th>rig</th><td>{}</td></tr><tr><th>drive model</th><td>{}</td></tr><tr><th>plan</th><td>{}</td></tr>\
         <tr><th>firmware</th><td>{} {} (<a href=\"/builds/{}\">{}</a>)</td></tr><tr><th>submitted</th><td>{} by {}</td></tr>\
         <tr><th>got its rig</th><td>{} (queued {})</td></tr><tr><th>ended</th><td>{} (ran {})</td></tr>\
         <tr><th>running now</th><td id=running>{}</td></tr><tr><th>fencing token</th><td>{}</td></tr>\
         <tr><th>reports</th><td><a href=\"/jobs/{id}/junit.xml\">JUnit</a> · <a href=\"/jobs/{id}/log\">raw log</a> · <a href=\"/api/jobs/{id}\">JSON</a></td></tr></table>",
        j.rig.as_deref().map(|r| format!("<a href=\"/rigs/{0}\">{0}</a>", esc(r))).unwrap_or_else(|| "-".into()),
        esc(&j.drive_model),
        esc(&j.plan_name),
        esc(&j.firmware_name),
        esc(&j.firmware_revision),
        esc(&j.artifact_sha256),
        esc(&j.artifact_sha256.chars().take(12).collect::<String>()),
        when(j.created_ms),
        esc(&j.submitter),
        when(j.started_ms),
        took(j.created_ms, j.started_ms),
        when(j.finished_ms),
        took(j.started_ms, j.finished_ms),
        running.as_deref().map(esc).unwrap_or_else(|| "-".into()),
        j.fencing_token,
        id = esc(&j.id),
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
    h.push_str("<h3>live</h3><pre id=live>");
    for l in other {
        h.push_str(&esc(l));
        h.push('\n');
    }
    h.push_str("</pre>");
    if !j.state.is_terminal() {
        // New lines as they come, without reloading the page; the page reloads once when the job ends.
        let _ = write!(
            h,
            "<script>const es=new EventSource('/jobs/{id}/events?from={seen}');\
             es.addEventListener('line',e=>{{const p=document.getElementById('live');p.textContent+=e.data+'\\n';}});\
             es.addEventListener('state',e=>{{const d=JSON.parse(e.data);const s=document.getElementById('state');s.textContent=d.state;\
             document.getElementById('running').textContent=d.running||'-';if(d.ended){{es.close();location.reload();}}}});</script>",
            id = esc(&j.id)
        );
    }
    page(&j.id, &h).into_response()
}

/// `/jobs/<id>/log`: every log line as text, each with its step.
pub(super) async fn raw_log(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    if farm.job(&id).await.is_err() {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    }
    match farm.logs(&id, 0) {
        Ok(lines) => {
            let mut t = String::new();
            for (_, l) in lines {
                let _ = writeln!(t, "[step {}] {}", l.step, l.text);
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `/jobs/<id>/junit.xml`: the job's JUnit report, as `farmctl run --junit` writes it.
pub(super) async fn junit(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let Ok(mut j) = farm.job(&id).await else {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    };
    let lines = farm.logs(&id, 0).unwrap_or_default();
    j.attach_logs(lines.iter().map(|(_, l)| l));
    let r = j.run_report();
    let x = nvfarm_model::junit::document(&[(&r, format!("{}@{}", r.plan, r.rig))]);
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        x,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct From {
    #[serde(default)]
    from: u64,
}

/// `/jobs/<id>/events?from=N`: log lines from line N on (`line` events), then the job's changes (`state`
/// events with `state`, `running` and `ended`) until it ends.
pub(super) async fn events(
    State(farm): State<Arc<Farm>>,
    Path(id): Path<String>,
    Query(q): Query<From>,
) -> Response {
    if farm.job(&id).await.is_err() {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    }
    let rx = farm.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let mut next = q.from;
        let mut rx = rx;
        loop {
            // Lines not sent yet, then the state.
            if let Ok(lines) = farm.logs(&id, next) {
                for (n, l) in lines {
                    next = n + 1;
                    if tx
                        .send(
                            Event::default()
                                .event("line")
                                .data(format!("[step {}] {}", l.step, l.text)),
                        )
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let Ok(j) = farm.job(&id).await else { return };
            let running = running_step(&j);
            let ended = j.state.is_terminal();
            let data = serde_json::json!({ "state": j.state.as_str(), "running": running, "ended": ended });
            if tx
                .send(Event::default().event("state").data(data.to_string()))
                .await
                .is_err()
                || ended
            {
                return;
            }
            // Wait for a change of this job (or a periodic look, in case events were missed).
            let wait = async {
                loop {
                    match rx.recv().await {
                        Ok(FarmEvent::Job(j) | FarmEvent::Log(j)) if j == id => return,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out).map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
