//! The passthrough seam: the one place commands leave the process.
//!
//! A [`Passthru`] submits one NVMe command with an optional data buffer to a controller's admin or I/O queue and
//! returns the completion (status + result dword 0) or an OS-level error. Everything above this trait (typed
//! commands, firmware update, test plans) is the same for a real drive ([`crate::linux::LinuxIoctl`]) and the
//! simulated controller ([`crate::sim::SimController`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nvme_spec::command::opcode_name;
use nvme_spec::{Command, Queue, Status};

/// The data phase of a command.
#[derive(Debug)]
pub enum Data<'a> {
    /// No data.
    None,
    /// Host to controller (Write, Firmware Image Download, Set Features with data).
    ToDevice(&'a [u8]),
    /// Controller to host (Read, Identify, Get Log Page).
    FromDevice(&'a mut [u8]),
}

/// What a command's opcode says about its data (bits 1:0 of every NVMe opcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data transfer.
    None,
    /// Host to controller.
    ToDevice,
    /// Controller to host.
    FromDevice,
    /// Both ways (the controller reads and writes the buffer).
    Bidirectional,
}

impl Direction {
    /// The direction opcode `opcode` transfers data in.
    pub fn of(opcode: u8) -> Direction {
        match opcode & 0b11 {
            0b00 => Direction::None,
            0b01 => Direction::ToDevice,
            0b10 => Direction::FromDevice,
            _ => Direction::Bidirectional,
        }
    }
}

impl Data<'_> {
    /// Checks the buffer against the opcode's data direction before anything is sent: a controller may write
    /// only into a buffer lent mutably (`FromDevice`), so a shared `ToDevice` buffer for an opcode that returns
    /// data (or moves it both ways) is refused, as is data for an opcode that moves none, or a buffer longer
    /// than a command can describe.
    pub fn check(&self, queue: Queue, opcode: u8) -> Result<(), TransportError> {
        let dir = Direction::of(opcode);
        let wrong = match (self, dir) {
            (Data::None, _) => None,
            (_, Direction::None) if self.is_empty() => None,
            (_, Direction::None) => Some("it transfers no data, but a buffer was given"),
            (Data::ToDevice(_), Direction::FromDevice | Direction::Bidirectional) => Some(
                "the controller writes its data, but the buffer was lent read-only (to the device)",
            ),
            _ => None,
        };
        if let Some(reason) = wrong {
            return Err(TransportError::Misuse {
                command: format!("{} (opcode {opcode:#04x})", opcode_name(queue, opcode)),
                reason: reason.to_string(),
            });
        }
        if self.len() > u32::MAX as usize {
            return Err(TransportError::Misuse {
                command: format!("{} (opcode {opcode:#04x})", opcode_name(queue, opcode)),
                reason: format!("{} bytes is more than a command can transfer", self.len()),
            });
        }
        Ok(())
    }

    /// Bytes the data phase moves.
    pub fn len(&self) -> usize {
        match self {
            Data::None => 0,
            Data::ToDevice(b) => b.len(),
            Data::FromDevice(b) => b.len(),
        }
    }
    /// The data phase moves nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the controller answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Completion status.
    pub status: Status,
    /// Command-specific result (completion queue entry dword 0).
    pub result: u32,
}

impl Completion {
    /// A successful completion with `result`.
    pub fn ok(result: u32) -> Self {
        Completion {
            status: Status::SUCCESS,
            result,
        }
    }
    /// A completion with `status` and result 0.
    pub fn status(status: Status) -> Self {
        Completion { status, result: 0 }
    }
}

/// Which reset to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetKind {
    /// Controller level reset (`NVME_IOCTL_RESET`).
    Controller,
    /// NVM subsystem reset (`NVME_IOCTL_SUBSYS_RESET`).
    Subsystem,
}

/// The command never got an NVMe status: the OS, the bus or the drive's absence got in the way.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The device node cannot be opened.
    #[error("cannot open {path}: {source}; check that the device exists and that you run as root")]
    Open {
        /// The node.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device is not present.
    #[error("{device} is not present ({detail}); it dropped off the bus or lost power: wait for it to come back or power-cycle it")]
    Gone {
        /// The device.
        device: String,
        /// What the OS or the device said.
        detail: String,
    },
    /// The device is resetting or booting.
    #[error("{device} is not ready ({detail}); it is resetting or booting: retry once it is back")]
    NotReady {
        /// The device.
        device: String,
        /// What the OS or the device said.
        detail: String,
    },
    /// The command got no answer in time.
    #[error("{device}: {command} got no answer within {} (hung command); the drive needs a reset or a power cycle", humantime::format_duration(*timeout))]
    Timeout {
        /// The device.
        device: String,
        /// The command, by name.
        command: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The OS refused the operation.
    #[error("{device}: {op} failed: {errno}")]
    Os {
        /// The device.
        device: String,
        /// The operation.
        op: String,
        /// The errno.
        errno: nix::errno::Errno,
    },
    /// The caller built a command whose data buffer does not match it; nothing was sent.
    #[error("{command}: {reason}; nothing was sent (a bug in the caller)")]
    Misuse {
        /// The command.
        command: String,
        /// What does not match.
        reason: String,
    },
    /// The device exists but cannot be used (its backing state is broken).
    #[error("{device} cannot be used: {detail}")]
    Unusable {
        /// The device.
        device: String,
        /// What the OS or the device said.
        detail: String,
    },
}

impl TransportError {
    /// The drive is absent or not answering yet: worth waiting for.
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            TransportError::Gone { .. }
                | TransportError::NotReady { .. }
                | TransportError::Open { .. }
        )
    }
    /// The command got no answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout { .. })
    }
}

/// Submission of NVMe commands to one controller.
pub trait Passthru: Send + Sync + fmt::Debug {
    /// Submits `cmd` to `queue` with `data`, waiting at most `timeout` (None = the transport's default).
    fn submit(
        &self,
        queue: Queue,
        cmd: &Command,
        data: Data<'_>,
        timeout: Option<Duration>,
    ) -> Result<Completion, TransportError>;

    /// Resets the controller or the NVM subsystem.
    fn reset(&self, kind: ResetKind) -> Result<(), TransportError>;

    /// Asks the host to rescan the controller's namespaces.
    fn rescan(&self) -> Result<(), TransportError>;

    /// Gives the drive a shutdown notification (CC.SHN) before its power is cut, so the cut is not an unsafe
    /// shutdown: `Some(Ok(true))` once the drive completed it, `Some(Ok(false))` if the drive could not be told
    /// (not powered, off the bus), `None` where this transport cannot send one.
    fn shutdown(&self) -> Option<Result<bool, TransportError>> {
        None
    }

    /// The device's current name (`nvme0`, or `sim:/path` for the simulator), for messages.
    fn name(&self) -> String;

    /// The OS device name the drive enumerated as (`nvme0`; the simulator reports its simulated instance).
    fn device_name(&self) -> String {
        self.name()
    }

    /// Whether `image` is a firmware image in the device's own format, where the host can know: `None` when
    /// images are opaque to the host (a real drive judges them itself, at commit); `Some(Err(why))` for a file
    /// that is not an image this device could take at all.
    fn check_firmware_format(&self, _image: &[u8]) -> Option<Result<(), String>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::command::admin;

    #[test]
    fn a_buffer_must_match_the_opcode_direction() {
        let buf = [0u8; 64];
        let mut out = [0u8; 64];
        // Identify returns data: a read-only buffer would be written by the kernel.
        let e = Data::ToDevice(&buf)
            .check(Queue::Admin, admin::IDENTIFY)
            .unwrap_err();
        assert!(matches!(e, TransportError::Misuse { .. }), "{e}");
        assert!(e.to_string().contains("Identify (opcode 0x06)"), "{e}");
        assert!(Data::FromDevice(&mut out)
            .check(Queue::Admin, admin::IDENTIFY)
            .is_ok());
        // Firmware Image Download sends data; a mutable buffer is fine (the kernel only reads it).
        assert!(Data::ToDevice(&buf)
            .check(Queue::Admin, admin::FIRMWARE_DOWNLOAD)
            .is_ok());
        assert!(Data::FromDevice(&mut out)
            .check(Queue::Admin, admin::FIRMWARE_DOWNLOAD)
            .is_ok());
        // A bidirectional opcode (0x03: bits 11) needs a buffer lent mutably.
        assert!(Data::ToDevice(&buf).check(Queue::Admin, 0x03).is_err());
        assert!(Data::FromDevice(&mut out).check(Queue::Admin, 0x03).is_ok());
        // No data for an opcode that moves none.
        assert!(Data::ToDevice(&buf).check(Queue::Io, 0x00).is_err());
        assert!(Data::None.check(Queue::Io, 0x00).is_ok());
    }
}
