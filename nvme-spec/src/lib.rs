//! The NVMe specification as data: what the bytes of commands, completions and the structures commands return
//! mean, and the units people write sizes and durations in. Nothing here performs I/O; `flash-tools` moves these
//! commands to a controller.
//!
//! - [`command`]: the host-filled fields of a submission queue entry, builders and decoders for every command
//!   nvfarm sends, opcode names.
//! - [`status`]: completion status (SCT/SC/CRD/More/DNR) with the spec's names.
//! - [`identify`], [`log_page`], [`features`]: Identify Controller/Namespace, the log pages nvfarm reads, and
//!   feature identifiers; each parses from and encodes to the spec's layout.
//! - [`fabrics`], [`tcp`]: NVMe over Fabrics commands and properties, and the NVMe/TCP transport's PDUs.
//! - [`activation`]: how a committed firmware image is brought into service.
//! - [`units`]: sizes (`4k`, `1G`) and durations (`500ms`, `2m`) as users and fio write them.
#![warn(missing_docs)]
#![warn(clippy::wildcard_imports)]

pub mod activation;
pub mod bytes;
pub mod command;
pub mod fabrics;
pub mod features;
pub mod identify;
pub mod log_page;
pub mod status;
pub mod tcp;
pub mod units;

pub use activation::Activation;
pub use command::{Command, CommitAction, DsmRange, Queue, NSID_ALL};
pub use identify::{IdentifyController, IdentifyNamespace, LbaFormat, PowerState};
pub use log_page::{
    EffectsLog, ErrorLog, ErrorLogEntry, FirmwareSlotLog, SanitizeStatus, SelfTestLog,
    SelfTestResult, SmartLog,
};
pub use status::Status;
