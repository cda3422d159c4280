//! `/metrics` in the OpenMetrics text format (Prometheus scrapes it): the farm's state as gauges at scrape time
//! (rigs by state, jobs by state, the queue, agents, leases by kind), the store's commit and flush counters, and
//! [`crate::stats`]'s duration histograms and outcome counters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::Farm;
use crate::stats::Stats;

type Labels = Vec<(&'static str, String)>;

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(v.min(i64::MAX as u64) as i64);
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

pub(super) async fn metrics(
    State(farm): State<Arc<Farm>>,
    Extension(stats): Extension<Stats>,
) -> Response {
    let s = farm.metrics().await;
    let mut reg = Registry::with_prefix("nvfarm");
    let rigs = Family::<Labels, Gauge>::default();
    for (state, n) in &s.rigs {
        rigs.get_or_create(&vec![("state", state.to_string())])
            .set(*n as i64);
    }
    reg.register("rigs", "Rigs by state", rigs);
    let jobs = Family::<Labels, Gauge>::default();
    for (state, n) in &s.jobs {
        jobs.get_or_create(&vec![("state", state.to_string())])
            .set(*n as i64);
    }
    reg.register("jobs", "Jobs by state (all stored jobs)", jobs);
    reg.register(
        "queue_length",
        "Waiting requests",
        gauge(s.queue_length as u64),
    );
    reg.register(
        "agents_connected",
        "Agents with a live session",
        gauge(s.agents_connected as u64),
    );
    reg.register("leases", "Active leases", gauge(s.leases as u64));
    let by_kind = Family::<Labels, Gauge>::default();
    for (kind, n) in [
        ("reservation", s.reservations),
        ("job", s.leases - s.reservations),
    ] {
        by_kind
            .get_or_create(&vec![("kind", kind.to_string())])
            .set(n as i64);
    }
    reg.register("leases_by_kind", "Active leases by kind", by_kind);
    reg.register(
        "fencing_token",
        "Last fencing token issued (only grows, across restarts)",
        gauge(s.fencing_token),
    );
    reg.register(
        "commits",
        "Changes committed since the controller started",
        counter(s.commits),
    );
    reg.register(
        "store_flushes",
        "Store flushes since the controller started (concurrent changes share one)",
        counter(s.store_flushes),
    );
    stats.register(&mut reg);
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &reg) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
