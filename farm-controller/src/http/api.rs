//! The read-only JSON API: the farm's records as `nvfarm-model` serializes them, the same shapes `farmctl
//! --json` prints.
//!
//! - `GET /api/rigs[?labels=k=v,...]`: every rig with its lease;
//! - `GET /api/jobs[?rig=R&sweep=S&limit=N]`: jobs, newest first (without plan text);
//! - `GET /api/jobs/<id>`: one job, each step with its log lines;
//! - `GET /api/queue`: waiting requests in service order with reasons;
//! - `GET /api/sweeps`, `GET /api/sweeps/<id>[?threshold=PCT]`: sweeps, and one sweep's report.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use nvfarm_model::farm::parse_labels;

use crate::core::{Farm, FarmError, JobFilter};

/// An error as JSON with the matching HTTP status.
fn error(e: FarmError) -> Response {
    let status = match e {
        FarmError::NotFound(_) => StatusCode::NOT_FOUND,
        FarmError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        FarmError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::CONFLICT,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct RigsQuery {
    labels: Option<String>,
}

pub(super) async fn rigs(State(farm): State<Arc<Farm>>, Query(q): Query<RigsQuery>) -> Response {
    let labels = match q.labels.as_deref().map(parse_labels).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => return error(FarmError::InvalidArgument(format!("labels: {e}"))),
    };
    Json(farm.rigs(&labels).await).into_response()
}

/// `/api/jobs?rig=&sweep=&build=&model=&plan=&since=&until=&offset=&limit=`: `build` is a sha256 prefix (6+
/// hex digits) or a revision; `since` and `until` are Unix ms or RFC 3339 times (`2026-12-01T00:00:00Z`).
#[derive(Debug, Deserialize)]
pub(super) struct JobsQuery {
    rig: Option<String>,
    sweep: Option<String>,
    build: Option<String>,
    model: Option<String>,
    plan: Option<String>,
    since: Option<String>,
    until: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A time in a query: Unix ms or RFC 3339.
fn query_time(what: &str, v: Option<String>) -> Result<Option<u64>, FarmError> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(ms));
    }
    humantime::parse_rfc3339_weak(&v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_millis() as u64))
        .ok_or_else(|| {
            FarmError::InvalidArgument(format!(
                "{what}: '{v}' is neither Unix milliseconds nor an RFC 3339 time (2026-12-01T00:00:00Z)"
            ))
        })
}

pub(super) async fn jobs(State(farm): State<Arc<Farm>>, Query(q): Query<JobsQuery>) -> Response {
    let (since_ms, until_ms) = match (query_time("since", q.since), query_time("until", q.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    let jobs = farm
        .jobs(&JobFilter {
            rig: q.rig,
            sweep_id: q.sweep,
            build: q.build,
            drive_model: q.model,
            plan: q.plan,
            since_ms,
            until_ms,
            offset: q.offset.unwrap_or(0),
            limit: q.limit.unwrap_or(50),
        })
        .await;
    let jobs = match jobs {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    Json(jobs.iter().map(|j| j.summary()).collect::<Vec<_>>()).into_response()
}

pub(super) async fn job(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let mut job = match farm.job(&id).await {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    match farm.logs(&id, 0) {
        Ok(lines) => job.attach_logs(lines.iter().map(|(_, l)| l)),
        Err(e) => return error(e),
    }
    Json(job).into_response()
}

pub(super) async fn queue(State(farm): State<Arc<Farm>>) -> Response {
    Json(farm.queue().await).into_response()
}

pub(super) async fn sweeps(State(farm): State<Arc<Farm>>) -> Response {
    Json(farm.sweeps().await).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct SweepQuery {
    threshold: Option<f64>,
}

pub(super) async fn sweep(
    State(farm): State<Arc<Farm>>,
    Path(id): Path<String>,
    Query(q): Query<SweepQuery>,
) -> Response {
    match farm.sweep_report(&id, q.threshold.unwrap_or(25.0)).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(e),
    }
}
