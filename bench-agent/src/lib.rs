//! bench-agent: runs on each Linux test machine and owns its rigs.
//!
//! - [`io`]: the io_uring io engine (`bench-agent io`, the `io` plan step).
pub mod io;
