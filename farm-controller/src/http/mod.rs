//! The HTTP side: a dashboard for people, a read-only JSON API for tools, and `/metrics` for Prometheus.
//!
//! - [`dashboard`]: `/` and `/jobs/<id>`;
//! - [`api`]: `/api/rigs`, `/api/jobs`, `/api/jobs/<id>`, `/api/queue`, `/api/sweeps`, `/api/sweeps/<id>`, each
//!   record in the same JSON shape `farmctl --json` prints;
//! - [`metrics`]: `/metrics` in Prometheus text format.

mod api;
mod dashboard;
mod metrics;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::core::Farm;

/// Every HTTP route.
pub fn router(farm: Arc<Farm>) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/jobs/{id}", get(dashboard::job_page))
        .route("/api/rigs", get(api::rigs))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/queue", get(api::queue))
        .route("/api/sweeps", get(api::sweeps))
        .route("/api/sweeps/{id}", get(api::sweep))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(farm)
}
