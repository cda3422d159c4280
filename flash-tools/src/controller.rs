//! Typed NVMe commands over any [`Passthru`]: build the command, submit it, check the status, parse the data.
//!
//! [`Controller`] is what the rest of nvfarm talks to. A command that completes with a non-success status becomes
//! [`NvmeError::Status`], naming the command and the status by its spec name.

use std::sync::Arc;
use std::time::Duration;

use crate::transport::{Completion, Data, Passthru, ResetKind, TransportError};
use nvme_spec::command::{cns, opcode_name, CommitAction};
use nvme_spec::log_page::{lid, ERROR_ENTRY_LEN, FW_SLOT_LEN, SELF_TEST_LEN, SMART_LEN};
use nvme_spec::{
    identify, Command, EffectsLog, ErrorLog, FirmwareSlotLog, IdentifyController,
    IdentifyNamespace, Queue, SanitizeStatus, SelfTestLog, SmartLog, Status, NSID_ALL,
};

/// A command failed: either the drive answered with an error status or it never answered.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// The drive completed the command with an error status.
    #[error("{command} on {device} failed: {status}")]
    Status {
        /// The device it was sent to.
        device: String,
        /// The command, by name.
        command: String,
        /// The status the drive answered.
        status: Status,
    },
    /// The command never got a status.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl NvmeError {
    /// The NVMe status, if the drive answered.
    pub fn status(&self) -> Option<Status> {
        match self {
            NvmeError::Status { status, .. } => Some(*status),
            NvmeError::Transport(_) => None,
        }
    }
    /// The drive is absent or not answering yet: worth waiting for.
    pub fn is_absent(&self) -> bool {
        matches!(self, NvmeError::Transport(t) if t.is_absent())
    }
    /// The command got no answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, NvmeError::Transport(t) if t.is_timeout())
    }
}

/// Outcome of a Firmware Commit that the drive accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Done; for actions 1 and 2 the image activates at the next reset.
    Committed,
    /// Committed, and the drive says activation needs this reset (status 0x10B, 0x110 or 0x111).
    NeedsReset(Status),
}

/// One NVMe controller behind a passthrough transport.
#[derive(Debug, Clone)]
pub struct Controller {
    dev: Arc<dyn Passthru>,
    timeout: Option<Duration>,
}

impl Controller {
    /// Talks to the controller behind `dev`.
    pub fn new(dev: Arc<dyn Passthru>) -> Self {
        Controller { dev, timeout: None }
    }
    /// Sets the per-command timeout (None = the transport's default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
    /// The per-command timeout (None: the transport's default).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// The transport underneath.
    pub fn transport(&self) -> &Arc<dyn Passthru> {
        &self.dev
    }
    /// The device's name, for messages.
    pub fn name(&self) -> String {
        self.dev.name()
    }
    /// The OS device name it enumerated as (`nvme0`).
    pub fn device_name(&self) -> String {
        self.dev.device_name()
    }

    /// Submits and turns a non-success status into [`NvmeError::Status`].
    pub fn submit(
        &self,
        queue: Queue,
        cmd: &Command,
        data: Data<'_>,
    ) -> Result<Completion, NvmeError> {
        let c = self.dev.submit(queue, cmd, data, self.timeout)?;
        if c.status.is_success() {
            Ok(c)
        } else {
            Err(NvmeError::Status {
                device: self.dev.name(),
                command: describe(queue, cmd),
                status: c.status,
            })
        }
    }
    /// Submits and returns the completion whatever its status (for callers that act on specific statuses).
    pub fn submit_raw(
        &self,
        queue: Queue,
        cmd: &Command,
        data: Data<'_>,
    ) -> Result<Completion, TransportError> {
        self.dev.submit(queue, cmd, data, self.timeout)
    }

    fn admin_in(&self, cmd: &Command, len: usize) -> Result<Vec<u8>, NvmeError> {
        let mut buf = vec![0u8; len];
        self.submit(Queue::Admin, cmd, Data::FromDevice(&mut buf))?;
        Ok(buf)
    }

    // ----- Identify ---------------------------------------------------------------------------------------

    /// Identify Controller, the raw 4096 bytes.
    pub fn identify_controller_raw(&self) -> Result<Vec<u8>, NvmeError> {
        self.admin_in(
            &Command::identify(cns::CONTROLLER, 0),
            identify::IDENTIFY_LEN,
        )
    }
    /// Identify Controller (CNS 01h).
    pub fn identify_controller(&self) -> Result<IdentifyController, NvmeError> {
        Ok(IdentifyController::parse(&self.identify_controller_raw()?))
    }
    /// Identify Namespace (CNS 00h) for `nsid`.
    pub fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace, NvmeError> {
        let b = self.admin_in(
            &Command::identify(cns::NAMESPACE, nsid),
            identify::IDENTIFY_LEN,
        )?;
        Ok(IdentifyNamespace::parse(&b))
    }
    /// The active namespace IDs (CNS 02h).
    pub fn active_namespaces(&self) -> Result<Vec<u32>, NvmeError> {
        let b = self.admin_in(
            &Command::identify(cns::ACTIVE_NAMESPACES, 0),
            identify::IDENTIFY_LEN,
        )?;
        Ok(identify::parse_namespace_list(&b))
    }

    // ----- Get Log Page -----------------------------------------------------------------------------------

    /// Reads `len` bytes (rounded up to a dword) of log `lid`.
    pub fn get_log(&self, log_id: u8, nsid: u32, len: usize) -> Result<Vec<u8>, NvmeError> {
        let len = len.div_ceil(4) * 4;
        let mut buf = self.admin_in(
            &Command::get_log_page(log_id, nsid, len as u32, 0, 0, false),
            len,
        )?;
        buf.truncate(len);
        Ok(buf)
    }
    /// The SMART / Health Information log for the whole controller.
    pub fn smart_log(&self) -> Result<SmartLog, NvmeError> {
        Ok(SmartLog::parse(&self.get_log(
            lid::SMART,
            NSID_ALL,
            SMART_LEN,
        )?))
    }
    /// The Firmware Slot Information log.
    pub fn firmware_slot_log(&self) -> Result<FirmwareSlotLog, NvmeError> {
        Ok(FirmwareSlotLog::parse(&self.get_log(
            lid::FIRMWARE_SLOT,
            NSID_ALL,
            FW_SLOT_LEN,
        )?))
    }
    /// The newest `entries` error log entries.
    pub fn error_log(&self, entries: usize) -> Result<ErrorLog, NvmeError> {
        Ok(ErrorLog::parse(&self.get_log(
            lid::ERROR,
            NSID_ALL,
            entries.max(1) * ERROR_ENTRY_LEN,
        )?))
    }
    /// The Commands Supported and Effects log.
    pub fn effects_log(&self) -> Result<EffectsLog, NvmeError> {
        Ok(EffectsLog::parse(&self.get_log(
            lid::COMMANDS_EFFECTS,
            NSID_ALL,
            nvme_spec::log_page::EFFECTS_LEN,
        )?))
    }
    /// The Device Self-test log.
    pub fn self_test_log(&self) -> Result<SelfTestLog, NvmeError> {
        Ok(SelfTestLog::parse(&self.get_log(
            lid::SELF_TEST,
            NSID_ALL,
            SELF_TEST_LEN,
        )?))
    }
    /// The Sanitize Status log.
    pub fn sanitize_status(&self) -> Result<SanitizeStatus, NvmeError> {
        Ok(SanitizeStatus::parse(&self.get_log(
            lid::SANITIZE_STATUS,
            NSID_ALL,
            nvme_spec::log_page::SANITIZE_STATUS_LEN,
        )?))
    }

    // ----- Features ---------------------------------------------------------------------------------------

    /// Get Features; returns completion dword 0.
    pub fn get_feature(&self, fid: u8, select: u8, nsid: u32) -> Result<u32, NvmeError> {
        Ok(self
            .submit(
                Queue::Admin,
                &Command::get_features(fid, select, nsid, 0),
                Data::None,
            )?
            .result)
    }
    /// Set Features: `fid` to `value` (with `save`, persistently).
    pub fn set_feature(
        &self,
        fid: u8,
        value: u32,
        save: bool,
        nsid: u32,
    ) -> Result<u32, NvmeError> {
        Ok(self
            .submit(
                Queue::Admin,
                &Command::set_features(fid, value, save, nsid),
                Data::None,
            )?
            .result)
    }

    // ----- Firmware ---------------------------------------------------------------------------------------

    /// Firmware Image Download of `chunk` at byte `offset`.
    pub fn firmware_download(&self, offset: u64, chunk: &[u8]) -> Result<(), NvmeError> {
        let cmd = Command::firmware_download(offset, chunk.len() as u32);
        self.submit(Queue::Admin, &cmd, Data::ToDevice(chunk))
            .map(drop)
    }
    /// Firmware Commit; activation-needs-reset statuses are reported as [`CommitOutcome::NeedsReset`].
    pub fn firmware_commit(
        &self,
        slot: u8,
        action: CommitAction,
    ) -> Result<CommitOutcome, NvmeError> {
        let cmd = Command::firmware_commit(slot, action);
        let c = self.submit_raw(Queue::Admin, &cmd, Data::None)?;
        if c.status.is_success() {
            Ok(CommitOutcome::Committed)
        } else if c.status.is_activation_pending() {
            Ok(CommitOutcome::NeedsReset(c.status))
        } else {
            Err(NvmeError::Status {
                device: self.dev.name(),
                command: describe(Queue::Admin, &cmd),
                status: c.status,
            })
        }
    }

    // ----- Maintenance ------------------------------------------------------------------------------------

    /// Starts (or with code 0xF aborts) a device self-test on `nsid`.
    pub fn device_self_test(&self, nsid: u32, code: u8) -> Result<(), NvmeError> {
        self.submit(
            Queue::Admin,
            &Command::device_self_test(nsid, code),
            Data::None,
        )
        .map(drop)
    }
    /// Format NVM on `nsid` with LBA format `lbaf` and secure erase setting `ses`.
    pub fn format_nvm(&self, nsid: u32, lbaf: u8, ses: u8) -> Result<(), NvmeError> {
        self.submit(
            Queue::Admin,
            &Command::format_nvm(nsid, lbaf, ses),
            Data::None,
        )
        .map(drop)
    }
    /// Starts a sanitize operation (`action`, with `pattern` for overwrite).
    pub fn sanitize(&self, action: u8, pattern: u32) -> Result<(), NvmeError> {
        self.submit(
            Queue::Admin,
            &Command::sanitize(action, false, pattern),
            Data::None,
        )
        .map(drop)
    }
    /// Resets the controller or the NVM subsystem.
    pub fn reset(&self, kind: ResetKind) -> Result<(), NvmeError> {
        Ok(self.dev.reset(kind)?)
    }
    /// Asks the host to rescan the namespaces.
    pub fn rescan(&self) -> Result<(), NvmeError> {
        Ok(self.dev.rescan()?)
    }

    // ----- I/O --------------------------------------------------------------------------------------------

    /// Reads `buf.len()` bytes from `slba` of `nsid` in blocks of `block_size` bytes.
    pub fn read(
        &self,
        nsid: u32,
        slba: u64,
        buf: &mut [u8],
        block_size: u32,
    ) -> Result<(), NvmeError> {
        let blocks = (buf.len() as u64 / block_size as u64) as u32;
        self.submit(
            Queue::Io,
            &Command::read(nsid, slba, blocks),
            Data::FromDevice(buf),
        )
        .map(drop)
    }
    /// Writes `buf` at `slba` of `nsid` in blocks of `block_size` bytes.
    pub fn write(
        &self,
        nsid: u32,
        slba: u64,
        buf: &[u8],
        block_size: u32,
    ) -> Result<(), NvmeError> {
        let blocks = (buf.len() as u64 / block_size as u64) as u32;
        self.submit(
            Queue::Io,
            &Command::write(nsid, slba, blocks),
            Data::ToDevice(buf),
        )
        .map(drop)
    }
    /// Compares `buf` with the data at `slba` of `nsid` (a mismatch is a Compare Failure status).
    pub fn compare(
        &self,
        nsid: u32,
        slba: u64,
        buf: &[u8],
        block_size: u32,
    ) -> Result<(), NvmeError> {
        let blocks = (buf.len() as u64 / block_size as u64) as u32;
        self.submit(
            Queue::Io,
            &Command::compare(nsid, slba, blocks),
            Data::ToDevice(buf),
        )
        .map(drop)
    }
    /// Write Zeroes over `blocks` blocks from `slba` of `nsid`.
    pub fn write_zeroes(&self, nsid: u32, slba: u64, blocks: u32) -> Result<(), NvmeError> {
        self.submit(
            Queue::Io,
            &Command::write_zeroes(nsid, slba, blocks, false),
            Data::None,
        )
        .map(drop)
    }
    /// Write Uncorrectable over `blocks` blocks from `slba` of `nsid`: reads of them fail until they are
    /// written again.
    pub fn write_uncorrectable(&self, nsid: u32, slba: u64, blocks: u32) -> Result<(), NvmeError> {
        self.submit(
            Queue::Io,
            &Command::write_uncorrectable(nsid, slba, blocks),
            Data::None,
        )
        .map(drop)
    }
    /// Dataset Management over `ranges` of `nsid` (1 to 256 of them); `deallocate` sets AD.
    pub fn dataset_management(
        &self,
        nsid: u32,
        ranges: &[nvme_spec::DsmRange],
        deallocate: bool,
    ) -> Result<(), NvmeError> {
        let data = nvme_spec::DsmRange::encode(ranges);
        self.submit(
            Queue::Io,
            &Command::dataset_management(nsid, ranges.len() as u32, deallocate),
            Data::ToDevice(&data),
        )
        .map(drop)
    }
    /// Flush the volatile write cache of `nsid`.
    pub fn flush(&self, nsid: u32) -> Result<(), NvmeError> {
        self.submit(Queue::Io, &Command::flush(nsid), Data::None)
            .map(drop)
    }
}

/// "Get Log Page (SMART / Health, 02h)"-style description for messages.
pub fn describe(queue: Queue, cmd: &Command) -> String {
    let name = opcode_name(queue, cmd.opcode);
    match (queue, cmd.opcode) {
        (Queue::Admin, nvme_spec::command::admin::GET_LOG_PAGE) => {
            let which = match cmd.log_id() {
                lid::ERROR => "Error Information",
                lid::SMART => "SMART / Health",
                lid::FIRMWARE_SLOT => "Firmware Slot",
                lid::COMMANDS_EFFECTS => "Commands Supported and Effects",
                lid::SELF_TEST => "Device Self-test",
                lid::SANITIZE_STATUS => "Sanitize Status",
                _ => "log",
            };
            format!("{name} ({which}, {:02x}h)", cmd.log_id())
        }
        (Queue::Admin, nvme_spec::command::admin::IDENTIFY) => {
            let which = match cmd.cns() {
                cns::NAMESPACE => "Namespace",
                cns::CONTROLLER => "Controller",
                cns::ACTIVE_NAMESPACES => "Active Namespace List",
                _ => "CNS",
            };
            format!("{name} {which}")
        }
        (Queue::Admin, nvme_spec::command::admin::FIRMWARE_COMMIT) => {
            format!(
                "{name} (slot {}, action {})",
                cmd.fw_slot(),
                cmd.fw_commit_action()
            )
        }
        (Queue::Admin, nvme_spec::command::admin::FIRMWARE_DOWNLOAD) => {
            let (off, len) = cmd.fw_download_range();
            format!("{name} ({len} bytes at offset {off:#x})")
        }
        _ => format!("{name} ({:02x}h)", cmd.opcode),
    }
}
