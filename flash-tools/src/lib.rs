//! flash-tools: nvfarm's NVMe layer.
//!
//! - [`transport`]: the passthrough seam; [`linux`] implements it with kernel ioctls, [`sim`] with a simulated
//!   controller whose state lives in a directory.
//! - [`target`]: the NVMe/TCP target that serves simulated drives to real NVMe over Fabrics hosts.
//! - [`controller`]: typed commands over the seam.
//! - [`device`]: naming drives in ways that survive resets (serial, PCI address, `sim:DIR`) and opening them.
//! - [`firmware`]: the firmware update flow (download, commit, activate, verify, roll back).
//! - [`wait`]: running a device self-test or a sanitize to its end, bounded and stoppable.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]

pub mod controller;
pub mod device;
pub mod firmware;
pub mod linux;
pub mod sim;
pub mod target;
pub mod transport;
pub mod wait;

pub use controller::{Controller, NvmeError};
pub use transport::{Completion, Data, Passthru, ResetKind, TransportError};
