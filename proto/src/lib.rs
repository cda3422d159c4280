//! nvfarm's wire protocol, generated from `nvfarm.proto`.
//!
//! - [`v1::farm_server`] / [`v1::farm_client`]: what farmctl calls on the controller.
//! - [`v1::agent_link_server`] / [`v1::agent_link_client`]: the bench-agent's bidirectional stream and artifact
//!   downloads.

#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("nvfarm.v1");
}

pub use v1::*;

/// Size of artifact chunks on the wire (artifacts are never sent as one message).
pub const ARTIFACT_CHUNK: usize = 256 * 1024;

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::JobPassed
                | JobState::JobFailed
                | JobState::JobError
                | JobState::JobTimedOut
                | JobState::JobCancelled
        )
    }
    /// Short lowercase name: queued, assigned, flashing, testing, passed, failed, error, timed_out, cancelled.
    pub fn short(self) -> &'static str {
        match self {
            JobState::Unspecified => "unknown",
            JobState::JobQueued => "queued",
            JobState::JobAssigned => "assigned",
            JobState::JobFlashing => "flashing",
            JobState::JobTesting => "testing",
            JobState::JobPassed => "passed",
            JobState::JobFailed => "failed",
            JobState::JobError => "error",
            JobState::JobTimedOut => "timed_out",
            JobState::JobCancelled => "cancelled",
        }
    }
    /// From a plan outcome name.
    pub fn from_outcome(outcome: &str) -> Option<Self> {
        Some(match outcome {
            "passed" => JobState::JobPassed,
            "failed" => JobState::JobFailed,
            "error" => JobState::JobError,
            "timed_out" => JobState::JobTimedOut,
            "cancelled" => JobState::JobCancelled,
            _ => return None,
        })
    }
}

impl RigState {
    pub fn short(self) -> &'static str {
        match self {
            RigState::Unspecified => "unknown",
            RigState::RigIdle => "idle",
            RigState::RigLeased => "leased",
            RigState::RigOffline => "offline",
            RigState::RigQuarantined => "quarantined",
            RigState::RigMaintenance => "maintenance",
        }
    }
}

impl Priority {
    pub fn short(self) -> &'static str {
        match self {
            Priority::Unspecified | Priority::Ci => "ci",
            Priority::Nightly => "nightly",
            Priority::Interactive => "interactive",
        }
    }
}

/// The controller endpoint a client (farmctl, bench-agent) connects to: timeouts and keep-alives, and for
/// `https://` URLs TLS trusting the system roots plus the lab CA in the PEM file named by `FARM_CA`.
/// The error says which part of the setup is wrong.
pub fn controller_endpoint(url: &str) -> Result<tonic::transport::Endpoint, String> {
    use std::time::Duration;
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid controller URL '{url}': {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if url.starts_with("https://") {
        // A lab's controller usually has a certificate from the lab's own CA.
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Ok(ca) = std::env::var("FARM_CA") {
            let pem = std::fs::read(&ca).map_err(|e| format!("FARM_CA {ca}: {e}"))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(|e| format!("TLS setup: {e}"))?;
    }
    Ok(ep)
}
