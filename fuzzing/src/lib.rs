//! The fuzz harnesses. Each target takes raw bytes, feeds them to one of nvfarm's parsers, decoders or state
//! machines, and asserts what must hold for every input (a panic is a finding). `fuzz/` runs them under
//! libFuzzer (`scripts/fuzz.sh`); the normal test run replays the committed corpora in `fuzz/corpus/<target>/`
//! through the same functions (`tests/corpus.rs`), so every input that once found a bug stays a test.
//!
//! - [`files`]: plan and rig TOML, the simulated firmware image header;
//! - [`nvme`]: every NVMe structure parser, the status decoder and the NVMe/TCP PDU reader;
//! - [`wire`]: the agent link's protobuf messages and their conversion to the model;
//! - [`controller`]: the controller's client and agent message handlers driven as a state machine.

#![warn(missing_docs)]

pub mod controller;
pub mod files;
pub mod nvme;
pub mod wire;

/// A target: it takes one input and panics if an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and the `fuzz/corpus/<name>/` directory) and
/// the function its inputs go to.
pub const TARGETS: &[(&str, Target)] = &[
    ("plan_toml", files::plan_toml),
    ("rig_toml", files::rig_toml),
    ("sim_image", files::sim_image),
    ("nvme_structures", nvme::structures),
    ("tcp_pdu", nvme::tcp_pdu),
    ("agent_link", wire::agent_link),
    ("controller", controller::run),
];
