//! The HTTP side: a dashboard for people, a read-only JSON API for tools, and `/metrics` for Prometheus.
//!
//! - the dashboard: [`dashboard`] (`/`), [`job_pages`] (`/jobs`, `/jobs/<id>` with its live log, raw log and
//!   JUnit), [`sweep_pages`] (`/sweeps`, `/sweeps/<id>`), [`rig_build_pages`] (`/rigs/<name>`, `/builds/<sha>`),
//!   sharing [`page`] and drawing [`charts`] (SVG, on the server);
//! - [`api`]: `/api/rigs`, `/api/jobs`, `/api/jobs/<id>`, `/api/queue`, `/api/sweeps`, `/api/sweeps/<id>`, each
//!   record in the same JSON shape `farmctl --json` prints;
//! - [`metrics`]: `/metrics` in Prometheus text format;
//! - [`access`]: with tokens configured, all of it needs one (read-only roles suffice).

mod access;
mod api;
mod charts;
mod dashboard;
mod job_pages;
mod metrics;
mod page;
mod rig_build_pages;
mod sweep_pages;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::core::Farm;

/// Every HTTP route.
pub fn router(farm: Arc<Farm>, stats: crate::stats::Stats) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/jobs", get(job_pages::jobs))
        .route("/jobs/{id}", get(job_pages::job))
        .route("/jobs/{id}/log", get(job_pages::raw_log))
        .route("/jobs/{id}/junit.xml", get(job_pages::junit))
        .route("/jobs/{id}/events", get(job_pages::events))
        .route("/sweeps", get(sweep_pages::sweeps))
        .route("/sweeps/{id}", get(sweep_pages::sweep))
        .route("/rigs/{name}", get(rig_build_pages::rig))
        .route("/builds/{sha}", get(rig_build_pages::build))
        .route("/api/rigs", get(api::rigs))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/queue", get(api::queue))
        .route("/api/sweeps", get(api::sweeps))
        .route("/api/sweeps/{id}", get(api::sweep))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::Extension(stats))
        .layer(axum::middleware::from_fn_with_state(
            farm.clone(),
            access::readers_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            farm.config().listen,
            grpc_on_the_wrong_port,
        ))
        .with_state(farm)
}

/// A gRPC call (farmctl, an agent) sent to this HTTP port gets a gRPC error that names the gRPC port, rather
/// than a bare 404 the client cannot explain.
async fn grpc_on_the_wrong_port(
    axum::extract::State(grpc): axum::extract::State<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        return next.run(req).await;
    }
    // Where the client reached us, with the gRPC port (a wildcard listen address means "this host").
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string())
        })
        .unwrap_or_else(|| grpc.ip().to_string());
    let message = wrong_port_message(&host, grpc.port());
    axum::response::Response::builder()
        .status(axum::http::StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", "3") // INVALID_ARGUMENT: the client's address is wrong
        .header("grpc-message", percent_encode(&message))
        .body(axum::body::Body::empty())
        .unwrap_or_default()
}

fn wrong_port_message(host: &str, grpc_port: u16) -> String {
    format!(
        "this is the controller's HTTP port (dashboard, /api, /metrics); farmctl and agents use its gRPC port: --controller http://{host}:{grpc_port}"
    )
}

/// grpc-message is percent-encoded: everything outside printable ASCII, and '%'.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
