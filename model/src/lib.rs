//! nvfarm's one vocabulary: the types every part of the farm speaks, with no I/O of their own.
//!
//! - [`plan`]: test plans (the model, the TOML parser, placeholders), validated completely before anything
//!   touches a drive.
//! - [`io`]: fio's option vocabulary for io workloads and its validation.
//! - [`outcome`], [`report`]: how a step and a run ended, what they logged and measured.
//! - [`junit`]: JUnit XML for CI systems; [`exit`]: the exit codes every nvfarm command shares.
//! - [`farm`]: the controller's records (rigs, leases, requests, jobs, sweeps) in the one JSON shape that
//!   `farmctl --json`, the controller's JSON API and its store all use.
//! - [`link`]: the messages between a bench-agent and the controller; [`journal`]: the agent's record of the
//!   leases it held.
//! - [`time`]: wall-clock milliseconds, the unit every record's timestamps use.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]

pub mod exit;
pub mod farm;
pub mod io;
pub mod journal;
pub mod junit;
pub mod link;
pub mod outcome;
pub mod plan;
pub mod report;
pub mod time;

pub use exit::ExitCode;
pub use outcome::Outcome;
pub use report::{ConsoleLine, FirmwareInfo, LogLine, RunReport, StepReport};
