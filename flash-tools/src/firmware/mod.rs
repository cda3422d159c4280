//! Firmware update: the flow that takes a drive from one firmware revision to another and proves it.
pub mod update;
pub use update::*;
