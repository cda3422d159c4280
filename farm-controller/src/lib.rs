//! farm-controller: leases rigs to CI jobs and engineers, queues and schedules work, survives restarts, tracks
//! rig health, stores every result.
//!
//! - [`core`]: the farm's state and every transition of it, in domain types only.
//! - [`store`]: durable storage (sled) behind a small interface.
//! - [`grpc`]: the Farm and AgentLink services; [`http`]: dashboard, JSON API and metrics.
//! - [`config`]: the configuration file; [`auth`]: callers and roles.
//! - [`stats`]: duration histograms and outcome counters for `/metrics`;
//! - [`notify`]: webhooks told about finished sweeps, new failures, regressions, quarantines, lost agents.
//! - [`server`]: runs all of it until shutdown.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]

pub mod auth;
pub mod config;
pub mod core;
pub mod grpc;
pub mod http;
pub mod notify;
pub mod server;
pub mod stats;
pub mod store;
