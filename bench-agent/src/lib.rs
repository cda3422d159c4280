//! bench-agent: runs on each Linux test machine and owns its rigs.
//!
//! - [`rigs`]: the rig inventory file (drives, power, consoles, labels).
//! - [`runner`]: runs a test plan (from `nvfarm-model`) on a rig, one executor per step kind.
//! - [`io`]: the io_uring io engine (`bench-agent io`, the `io` plan step).
//! - [`power`], [`console`]: power control and serial console capture; [`lines`]: bytes to bounded log lines.
//! - [`agent`]: daemon mode, connected to a farm-controller.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]
pub mod agent;
pub mod console;
pub mod io;
pub mod lines;
pub mod power;
pub mod rigs;
pub mod runner;
