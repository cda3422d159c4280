//! bench-agent: runs on each Linux test machine and owns its rigs.
//!
//! - [`rigs`]: the rig inventory file (drives, power, consoles, labels).
//! - [`io`]: the io_uring io engine (`bench-agent io`, the `io` plan step).
//! - [`power`], [`console`]: power control and serial console capture.
pub mod console;
pub mod io;
pub mod power;
pub mod rigs;
