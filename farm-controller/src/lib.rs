//! farm-controller: leases rigs to CI jobs and engineers, queues and schedules work, survives restarts, tracks
//! rig health, stores every result.
//!
//! - [`config`]: the configuration file; [`auth`]: bearer tokens and roles.
//! - [`model`]: stored records; [`store`]: durable storage (sled) behind a small interface.
//! - [`state`]: the state machine (leases, queue, jobs, agents, health).
//! - [`service_farm`], [`service_agent`]: the gRPC services; [`http`]: dashboard and metrics.
//! - [`sweep`]: sweep reports and comparison with the previous sweep.
pub mod auth;
pub mod config;
pub mod http;
pub mod model;
pub mod server;
pub mod service_agent;
pub mod service_farm;
pub mod state;
pub mod store;
pub mod sweep;
