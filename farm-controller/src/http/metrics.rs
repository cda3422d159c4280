//! `/metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::core::Farm;

pub(super) async fn metrics(State(farm): State<Arc<Farm>>) -> Response {
    let s = farm.metrics().await;
    let mut m = String::new();
    m.push_str("# HELP nvfarm_rigs Rigs by state.\n# TYPE nvfarm_rigs gauge\n");
    for (state, n) in &s.rigs {
        let _ = writeln!(m, "nvfarm_rigs{{state=\"{state}\"}} {n}");
    }
    m.push_str("# HELP nvfarm_jobs Jobs by state (all stored jobs).\n# TYPE nvfarm_jobs gauge\n");
    for (state, n) in &s.jobs {
        let _ = writeln!(m, "nvfarm_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(m, "# HELP nvfarm_queue_length Waiting requests.\n# TYPE nvfarm_queue_length gauge\nnvfarm_queue_length {}", s.queue_length);
    let _ = writeln!(m, "# HELP nvfarm_agents_connected Agents heard from recently.\n# TYPE nvfarm_agents_connected gauge\nnvfarm_agents_connected {}", s.agents_connected);
    let _ = writeln!(m, "# HELP nvfarm_fencing_token Last fencing token issued.\n# TYPE nvfarm_fencing_token counter\nnvfarm_fencing_token {}", s.fencing_token);
    let _ = writeln!(m, "# HELP nvfarm_commits_total Changes committed since the controller started.\n# TYPE nvfarm_commits_total counter\nnvfarm_commits_total {}", s.commits);
    let _ = writeln!(m, "# HELP nvfarm_store_flushes_total Store flushes since the controller started (concurrent changes share one).\n# TYPE nvfarm_store_flushes_total counter\nnvfarm_store_flushes_total {}", s.store_flushes);
    let _ = writeln!(
        m,
        "# HELP nvfarm_leases Active leases.\n# TYPE nvfarm_leases gauge\nnvfarm_leases {}",
        s.leases
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}
