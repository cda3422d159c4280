//! nvfarm's wire protocol, generated from `nvfarm.proto`, and the one place its messages meet the rest of the
//! code.
//!
//! - [`v1`]: the generated messages and services: [`v1::farm_server`] / [`v1::farm_client`] (what farmctl calls
//!   on the controller), [`v1::agent_link_server`] / [`v1::agent_link_client`] (the bench-agent's bidirectional
//!   stream and artifact downloads).
//! - [`convert`]: conversions to and from `nvfarm-model`'s types; decoding checks every enum and names the field
//!   of a message that does not make sense.
//! - [`client`]: what every client of the controller shares: the endpoint (timeouts, keep-alive, TLS with a lab
//!   CA) and the bearer-token interceptor.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]

pub mod client;
pub mod convert;

/// The generated protocol.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("nvfarm.v1");
}

/// Size of artifact chunks on the wire (artifacts are never sent as one message).
pub const ARTIFACT_CHUNK: usize = 256 * 1024;
