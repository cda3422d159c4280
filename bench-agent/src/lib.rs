//! bench-agent: runs on each Linux test machine and owns its rigs.
//!
//! - [`rigs`]: the rig inventory file (drives, power, consoles, labels).
//! - [`io`]: the io_uring io engine (`bench-agent io`, the `io` plan step).
//! - [`power`], [`console`]: power control and serial console capture.
//! - [`agent`]: daemon mode, connected to a farm-controller.
//! - [`plan`]: test plans; [`runner`] runs one on a rig; [`outcome`] and [`junit`] report it.
pub mod agent;
pub mod console;
pub mod io;
pub mod junit;
pub mod outcome;
pub mod plan;
pub mod power;
pub mod rigs;
pub mod runner;
