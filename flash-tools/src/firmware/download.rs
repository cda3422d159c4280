//! Moving the image to the drive (chunks within MDTS, aligned to FWUG, retried without DNR) and naming what a
//! failed download or commit left on the drive.

use std::thread;
use std::time::Duration;

use super::flow::{describe_nvme, Updater};
use super::report::{FailureKind, UpdateFailure, UpdateStep};
use crate::controller::NvmeError;
use nvme_spec::status::code;
use nvme_spec::{CommitAction, IdentifyController, Status};

impl Updater<'_> {
    pub(super) fn download(
        &mut self,
        id: &IdentifyController,
        image: &[u8],
    ) -> Result<(), UpdateFailure> {
        let mdts = id.max_transfer_bytes().unwrap_or(u64::MAX);
        let gran = id.firmware_update_granularity().unwrap_or(4096);
        let cap = self.opts.max_chunk.min(mdts);
        let mut chunk = cap / gran * gran;
        if chunk == 0 {
            if gran > mdts {
                return Err(UpdateFailure {
                    step: UpdateStep::Download,
                    kind: FailureKind::Rejected,
                    message: format!("the drive's update granularity (FWUG, {gran} bytes) exceeds its maximum transfer size (MDTS, {mdts} bytes): it cannot be updated"),
                    status: None,
                    drive_state: self.untouched(),
                });
            }
            chunk = gran;
        }
        let total = image.len() as u64;
        self.report.chunk_bytes = chunk;
        self.report.chunks = total.div_ceil(chunk);
        self.note(
            UpdateStep::Download,
            format!(
                "downloading {total} bytes in {} chunk(s) of up to {chunk} bytes",
                self.report.chunks
            ),
        );
        let ctrl = self.drive.controller().clone();
        let mut offset = 0u64;
        while offset < total {
            if self.cancelled() {
                return Err(self.fail(
                    UpdateStep::Download,
                    FailureKind::Cancelled,
                    format!("cancelled after {offset} of {total} bytes were downloaded"),
                    None,
                    format!(
                        "unchanged: still running {} from slot {}; nothing was committed, the partial download is discarded at the next download or reset",
                        self.report.previous_revision, self.report.previous_slot
                    ),
                ));
            }
            let end = (offset + chunk).min(total);
            let piece = &image[offset as usize..end as usize];
            let mut attempt = 0;
            loop {
                match ctrl.firmware_download(offset, piece) {
                    Ok(()) => break,
                    Err(NvmeError::Status { status, .. })
                        if !status.dnr() && attempt < self.opts.chunk_retries =>
                    {
                        attempt += 1;
                        self.report.chunk_retries += 1;
                        self.note(UpdateStep::Download, format!("chunk at offset {offset:#x} answered {status}; retry {attempt} of {}", self.opts.chunk_retries));
                        thread::sleep(Duration::from_millis(50 << attempt.min(6)));
                    }
                    Err(e) => return Err(self.download_failure(id, offset, total, e)),
                }
            }
            offset = end;
            self.progress.download(offset, total);
        }
        Ok(())
    }

    fn download_failure(
        &mut self,
        id: &IdentifyController,
        offset: u64,
        total: u64,
        e: NvmeError,
    ) -> UpdateFailure {
        let (kind, status) = describe_nvme(&e);
        let mut message =
            format!("Firmware Image Download at offset {offset:#x} of {total} bytes failed: {e}");
        if e.status().is_some_and(|s| s.code() == code::INVALID_OPCODE) {
            message = format!(
                "the controller does not support Firmware Image Download: it answered {}{}",
                e.status().unwrap_or_default(),
                if id.supports_firmware_commands() {
                    ""
                } else {
                    " (and Identify OACS bit 2, firmware commands, is clear)"
                }
            );
        } else if e
            .status()
            .is_some_and(|s| s.code() == code::OVERLAPPING_RANGE)
        {
            message.push_str(" (the drive holds an overlapping portion from an earlier download)");
        }
        let drive_state = if kind == FailureKind::Unreachable {
            // Find out whether it came back and what it runs, so the report is exact.
            match self.drive.wait_ready(self.opts.come_back_timeout) {
                Ok(()) => match self.drive.controller().identify_controller() {
                    Ok(now) => format!(
                        "the drive came back as {} running {}; the partial download was lost and nothing was committed: rerun the update",
                        self.drive.controller().device_name(),
                        now.firmware_revision()
                    ),
                    Err(e) => format!("the drive came back but Identify fails ({e}); nothing was committed"),
                },
                Err(e) => format!("the drive did not come back ({e}); nothing was committed; it needs a power cycle"),
            }
        } else if kind == FailureKind::Timeout {
            self.recover_unknown_state(UpdateStep::Download, "Firmware Image Download timed out")
        } else {
            self.untouched()
        };
        self.fail(UpdateStep::Download, kind, message, status, drive_state)
    }

    pub(super) fn commit_failure(
        &mut self,
        id: &IdentifyController,
        slot: u8,
        action: CommitAction,
        e: NvmeError,
    ) -> UpdateFailure {
        let (kind, status) = describe_nvme(&e);
        let hint = match e.status().map(Status::code) {
            Some(code::INVALID_FIRMWARE_SLOT) if slot == 1 && id.slot1_read_only() => {
                " (Identify FRMW marks slot 1 read-only)".to_string()
            }
            Some(code::INVALID_FIRMWARE_SLOT) => {
                format!(" (the drive has {} slot(s))", id.firmware_slots())
            }
            Some(code::INVALID_FIRMWARE_IMAGE) => {
                " (the drive rejected the image: corrupt, truncated, or built for another model)"
                    .to_string()
            }
            Some(code::FW_ACTIVATION_PROHIBITED) => {
                " (the drive refuses this revision, e.g. a downgrade)".to_string()
            }
            _ => String::new(),
        };
        let drive_state = match kind {
            FailureKind::Timeout => {
                self.recover_unknown_state(UpdateStep::Commit, "Firmware Commit timed out")
            }
            FailureKind::Rejected => format!(
                "unchanged: still running {} from slot {}; the downloaded image was discarded",
                self.report.previous_revision, self.report.previous_slot
            ),
            _ => self.recover_unknown_state(
                UpdateStep::Commit,
                "the drive was lost during Firmware Commit",
            ),
        };
        self.fail(
            UpdateStep::Commit,
            kind,
            format!(
                "Firmware Commit (slot {slot}, action {}: {}) failed: {e}{hint}",
                action as u8,
                action.describe()
            ),
            status,
            drive_state,
        )
    }
}
