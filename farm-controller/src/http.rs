//! The HTTP side: a dashboard for people and `/metrics` for Prometheus.
//!
//! - `/`: rigs (state, holder, labels), the queue with reasons, recent jobs, and pass/fail per firmware build.
//! - `/jobs/<id>`: one job's steps, metrics and log.
//! - `/metrics`: Prometheus text format.
//!
//! Outcomes keep their distinctions here too: failed (the firmware), error (the infrastructure), timed out,
//! cancelled.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::model::*;
use crate::state::{now_ms, Farm};

pub fn router(farm: Arc<Farm>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(farm)
}

fn esc(s: &str) -> String {
    bench_agent::junit::escape(s)
}

fn state_class(s: &str) -> &'static str {
    match s {
        "passed" | "idle" => "ok",
        "failed" | "quarantined" => "bad",
        "error" | "offline" => "infra",
        "timed_out" => "timeout",
        "cancelled" | "maintenance" => "muted",
        _ => "busy",
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:90%}th{background:#f3f3f3}\
.ok{background:#d9f2d9}.bad{background:#f8d0d0}.infra{background:#ffe0b3}.timeout{background:#f2e6ff}.muted{color:#777}.busy{background:#dde8f7}\
pre{background:#f7f7f7;padding:.6em;font-size:85%;overflow-x:auto}";

async fn index(AxState(farm): AxState<Arc<Farm>>) -> Html<String> {
    let st = farm.state.lock().await;
    let now = now_ms();
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5><title>nvfarm</title><style>{STYLE}</style></head><body><h1>nvfarm</h1>");
    let _ = write!(h, "<h2>Rigs ({})</h2><table><tr><th>rig</th><th>agent</th><th>state</th><th>holder / reason</th><th>labels</th><th>drive</th><th>firmware</th></tr>", st.rigs.len());
    for r in st.rigs.values() {
        let state = r.state.to_pb().short();
        let who = match r.lease_id.as_ref().and_then(|l| st.leases.get(l)) {
            Some(l) => match &l.job_id {
                Some(j) => format!(
                    "job <a href=\"/jobs/{0}\">{0}</a> ({1})",
                    esc(j),
                    esc(&l.holder)
                ),
                None => format!("reserved by {}", esc(&l.holder)),
            },
            None => esc(&r.reason),
        };
        let hc = if r.health_check_pending {
            " (health check pending)"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class={}>{state}{hc}</td><td>{who}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.agent),
            state_class(state),
            esc(&labels_text(&r.labels)),
            esc(&r.drive_model),
            esc(&r.drive_serial),
            esc(&r.firmware_revision)
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<h2>Queue ({})</h2><table><tr><th>#</th><th>request</th><th>class</th><th>wants</th><th>for</th><th>waiting because</th></tr>", st.requests.len());
    for (i, r) in st.ordered_requests(now, farm.cfg.aging).iter().enumerate() {
        let what = r
            .job_id
            .as_ref()
            .map(|j| format!("job <a href=\"/jobs/{0}\">{0}</a>", esc(j)))
            .unwrap_or_else(|| "reservation".into());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} ({what})</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&r.id),
            r.class,
            esc(&r.selector.describe()),
            esc(&r.holder),
            esc(&st.waiting_because(r, now, farm.cfg.aging))
        );
    }
    h.push_str("</table>");
    // Pass/fail per firmware build.
    let mut builds: BTreeMap<(String, String), BTreeMap<&'static str, u32>> = BTreeMap::new();
    for j in st
        .jobs
        .values()
        .filter(|j| !j.health_check && !j.artifact_sha256.is_empty())
    {
        let key = (
            j.artifact_sha256.chars().take(12).collect::<String>(),
            if j.firmware_revision.is_empty() {
                j.firmware_name.clone()
            } else {
                j.firmware_revision.clone()
            },
        );
        *builds
            .entry(key)
            .or_default()
            .entry(j.state.as_str())
            .or_default() += 1;
    }
    h.push_str("<h2>Firmware builds</h2><table><tr><th>sha256</th><th>revision / file</th><th>passed</th><th>failed</th><th>error</th><th>timed out</th><th>cancelled</th><th>running</th></tr>");
    for ((sha, rev), counts) in &builds {
        let c = |k: &str| counts.get(k).copied().unwrap_or(0);
        let running = c("queued") + c("assigned") + c("flashing") + c("testing");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=ok>{}</td><td class=bad>{}</td><td class=infra>{}</td><td class=timeout>{}</td><td class=muted>{}</td><td>{running}</td></tr>",
            esc(sha),
            esc(rev),
            c("passed"),
            c("failed"),
            c("error"),
            c("timed_out"),
            c("cancelled")
        );
    }
    h.push_str("</table>");
    let mut jobs: Vec<&JobRecord> = st.jobs.values().collect();
    jobs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    h.push_str("<h2>Recent jobs</h2><table><tr><th>job</th><th>state</th><th>rig</th><th>plan</th><th>firmware</th><th>by</th><th>message</th></tr>");
    for j in jobs.iter().take(50) {
        let s = j.state.as_str();
        let _ = write!(
            h,
            "<tr><td><a href=\"/jobs/{0}\">{0}</a></td><td class={1}>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
            esc(&j.id),
            state_class(s),
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

async fn job_page(AxState(farm): AxState<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let job = farm.state.lock().await.jobs.get(&id).cloned();
    let Some(j) = job else {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    };
    let mut h = String::new();
    let s = j.state.as_str();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><title>{0}</title><style>{STYLE}</style></head><body><p><a href=\"/\">nvfarm</a></p><h1>{0} <span class={1}>{2}</span></h1><p>{3}</p>",
        esc(&j.id),
        state_class(s),
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
            "<tr><td>{}</td><td>{} ({})</td><td class={}>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            st.number,
            esc(&st.name),
            esc(&st.kind),
            state_class(&st.outcome),
            esc(&st.outcome),
            st.duration_ms as f64 / 1000.0,
            esc(&st.message),
            esc(&metrics.join(" "))
        );
    }
    h.push_str("</table><h2>Log</h2><pre>");
    if let Ok(lines) = farm.store.logs(&id, 0) {
        for (_, l) in lines {
            h.push_str(&esc(&l));
            h.push('\n');
        }
    }
    h.push_str("</pre></body></html>");
    Html(h).into_response()
}

async fn metrics(AxState(farm): AxState<Arc<Farm>>) -> Response {
    let st = farm.state.lock().await;
    let mut m = String::new();
    m.push_str("# HELP nvfarm_rigs Rigs by state.\n# TYPE nvfarm_rigs gauge\n");
    for state in ["idle", "leased", "offline", "quarantined", "maintenance"] {
        let n = st
            .rigs
            .values()
            .filter(|r| r.state.to_pb().short() == state)
            .count();
        let _ = writeln!(m, "nvfarm_rigs{{state=\"{state}\"}} {n}");
    }
    m.push_str("# HELP nvfarm_jobs Jobs by state (all stored jobs).\n# TYPE nvfarm_jobs gauge\n");
    for state in [
        "queued",
        "assigned",
        "flashing",
        "testing",
        "passed",
        "failed",
        "error",
        "timed_out",
        "cancelled",
    ] {
        let n = st
            .jobs
            .values()
            .filter(|j| j.state.as_str() == state)
            .count();
        let _ = writeln!(m, "nvfarm_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(m, "# HELP nvfarm_queue_length Waiting requests.\n# TYPE nvfarm_queue_length gauge\nnvfarm_queue_length {}", st.requests.len());
    let connected = st.agents.values().filter(|a| !a.lost).count();
    let _ = writeln!(m, "# HELP nvfarm_agents_connected Agents heard from recently.\n# TYPE nvfarm_agents_connected gauge\nnvfarm_agents_connected {connected}");
    let _ = writeln!(m, "# HELP nvfarm_fencing_token Last fencing token issued.\n# TYPE nvfarm_fencing_token counter\nnvfarm_fencing_token {}", st.fencing);
    let _ = writeln!(
        m,
        "# HELP nvfarm_leases Active leases.\n# TYPE nvfarm_leases gauge\nnvfarm_leases {}",
        st.leases.len()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}
