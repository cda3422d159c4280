//! The NVMe protocol: commands, completion status, and the data structures commands return.
//!
//! Nothing here performs I/O. [`crate::transport`] moves commands to a controller; this module says what the
//! bytes mean.

pub(crate) mod bytes;
pub mod command;
pub mod features;
pub mod identify;
pub mod log_page;
pub mod status;

pub use command::{Command, CommitAction, Queue, NSID_ALL};
pub use identify::{IdentifyController, IdentifyNamespace, LbaFormat, PowerState};
pub use log_page::{
    EffectsLog, ErrorLog, ErrorLogEntry, FirmwareSlotLog, SanitizeStatus, SelfTestLog,
    SelfTestResult, SmartLog,
};
pub use status::Status;
