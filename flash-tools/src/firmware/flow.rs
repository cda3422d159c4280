//! The update run: check the image, inspect the drive, download, commit, activate, wait, then hand over to
//! verification.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::activate::NeededReset;
use super::report::{
    FailureKind, Progress, UpdateEvent, UpdateFailure, UpdateOptions, UpdateReport, UpdateResult,
    UpdateStep,
};
use crate::controller::{CommitOutcome, NvmeError};
use crate::device::{DeviceError, Drive};
use nvme_spec::status::{code, Status};
use nvme_spec::{Activation, CommitAction, IdentifyController};

/// One update in progress.
pub(super) struct Updater<'a> {
    pub drive: &'a mut Drive,
    pub opts: &'a UpdateOptions,
    pub progress: &'a mut dyn Progress,
    pub report: UpdateReport,
    pub started: Instant,
    pub critical_warning_before: u8,
}

/// Runs the whole update. Never panics on drive behaviour: every outcome is in the report.
pub fn update(
    drive: &mut Drive,
    image: &[u8],
    opts: &UpdateOptions,
    progress: &mut dyn Progress,
) -> UpdateReport {
    let report = UpdateReport {
        device: drive.locator.addr.to_string(),
        device_name_before: drive.controller().device_name(),
        device_name_after: None,
        serial: String::new(),
        model: String::new(),
        previous_revision: String::new(),
        previous_slot: 0,
        target_slot: 0,
        image_bytes: image.len() as u64,
        image_sha256: hex::encode(Sha256::digest(image)),
        expected_revision: opts.expect_revision.clone(),
        chunk_bytes: 0,
        chunks: 0,
        chunk_retries: 0,
        activation: opts.activation,
        running_revision: None,
        running_slot: None,
        outcome: UpdateResult::Failed,
        failure: None,
        rollback: None,
        elapsed_ms: 0,
        events: vec![],
    };
    let mut u = Updater {
        drive,
        opts,
        progress,
        report,
        started: Instant::now(),
        critical_warning_before: 0,
    };
    if let Err(f) = u.run(image) {
        u.note(f.step, format!("FAILED: {}", f.message));
        u.report.failure = Some(f);
        if u.report.outcome != UpdateResult::RolledBack {
            u.report.outcome = UpdateResult::Failed;
        }
    }
    u.report.elapsed_ms = u.started.elapsed().as_millis() as u64;
    u.report
}

pub(super) fn describe_nvme(e: &NvmeError) -> (FailureKind, Option<String>) {
    match e {
        NvmeError::Status { status, .. } => (FailureKind::Rejected, Some(status.to_string())),
        NvmeError::Transport(t) if t.is_timeout() => (FailureKind::Timeout, None),
        NvmeError::Transport(_) => (FailureKind::Unreachable, None),
    }
}

pub(super) fn describe_device(e: &DeviceError) -> (FailureKind, Option<String>) {
    match e {
        DeviceError::Nvme(n) => describe_nvme(n),
        e if e.is_timeout() => (FailureKind::Timeout, None),
        _ => (FailureKind::Unreachable, None),
    }
}

impl Updater<'_> {
    pub(super) fn note(&mut self, step: UpdateStep, message: impl Into<String>) {
        let ev = UpdateEvent {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            step,
            message: message.into(),
        };
        tracing::info!(step = %ev.step, "{}", ev.message);
        self.progress.event(&ev);
        self.report.events.push(ev);
    }

    pub(super) fn fail(
        &self,
        step: UpdateStep,
        kind: FailureKind,
        message: String,
        status: Option<String>,
        state: String,
    ) -> UpdateFailure {
        UpdateFailure {
            step,
            kind,
            message,
            status,
            drive_state: state,
        }
    }

    /// Whether the caller asked the update to stop.
    pub(super) fn cancelled(&self) -> bool {
        self.opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(super) fn untouched(&self) -> String {
        format!(
            "unchanged: still running {} from slot {}, nothing committed",
            self.report.previous_revision, self.report.previous_slot
        )
    }

    fn run(&mut self, image: &[u8]) -> Result<(), UpdateFailure> {
        // 1. Check the image.
        self.check_image(image)?;

        // 2. Inspect.
        let ctrl = self.drive.controller().clone();
        let id = ctrl.identify_controller().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Inspect,
                kind,
                format!("Identify Controller failed: {e}"),
                status,
                "unknown (not reachable)".into(),
            )
        })?;
        self.report.serial = id.serial().to_string();
        self.report.model = id.model().to_string();
        self.report.previous_revision = id.firmware_revision().to_string();
        let slots = ctrl.firmware_slot_log().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Inspect,
                kind,
                format!("reading the Firmware Slot log failed: {e}"),
                status,
                "unchanged".into(),
            )
        })?;
        self.report.previous_slot = slots.active_slot();
        self.critical_warning_before = ctrl.smart_log().map(|s| s.critical_warning).unwrap_or(0);
        self.note(
            UpdateStep::Inspect,
            format!(
                "{} {} (serial {}) runs {} from slot {} of {}{}; FWUG {}, MDTS {}",
                self.report.device_name_before,
                id.model(),
                id.serial(),
                id.firmware_revision(),
                slots.active_slot(),
                id.firmware_slots(),
                if id.slot1_read_only() {
                    " (slot 1 read-only)"
                } else {
                    ""
                },
                id.firmware_update_granularity()
                    .map_or("not reported".into(), |g| format!("{g} bytes")),
                id.max_transfer_bytes()
                    .map_or("unlimited".into(), |m| format!("{m} bytes")),
            ),
        );
        if !id.supports_firmware_commands() {
            self.note(
                UpdateStep::Inspect,
                "Identify OACS bit 2 is clear: the controller does not advertise Firmware Commit / Image Download; trying anyway",
            );
        }
        let target = self.choose_slot(&id, slots.active_slot())?;
        self.report.target_slot = target;

        // 3. Download.
        self.download(&id, image)?;

        // 4. Commit: the last point where a cancel stops the update; after it the update runs to a known state.
        if self.cancelled() {
            return Err(self.fail(
                UpdateStep::Commit,
                FailureKind::Cancelled,
                "cancelled after the download, before the commit".into(),
                None,
                format!(
                    "unchanged: still running {} from slot {}; nothing was committed",
                    self.report.previous_revision, self.report.previous_slot
                ),
            ));
        }
        let action = match self.opts.activation {
            Activation::Now => CommitAction::ActivateNow,
            _ => CommitAction::ReplaceActivateOnReset,
        };
        let outcome = match ctrl.firmware_commit(target, action) {
            Err(NvmeError::Status { status, .. })
                if status.code() == code::FW_NEEDS_MAX_TIME_VIOLATION && target != 0 =>
            {
                // The image is in the slot, but activating it now would take longer than the drive's MTFA:
                // commit it again for activation at a reset, and give that reset.
                self.note(
                    UpdateStep::Commit,
                    format!(
                        "committed to slot {target}; the drive answered {status} (activating now would exceed MTFA, {}): committing again to activate at a reset",
                        id.max_time_for_activation()
                            .map_or("not reported".into(), |d| humantime::format_duration(d).to_string())
                    ),
                );
                let again = CommitAction::ActivateOnReset;
                match ctrl
                    .firmware_commit(target, again)
                    .map_err(|e| self.commit_failure(&id, target, again, e))?
                {
                    CommitOutcome::Committed => CommitOutcome::NeedsReset(Status::from_code(
                        code::FW_NEEDS_CONTROLLER_RESET,
                    )),
                    o => o,
                }
            }
            r => r.map_err(|e| self.commit_failure(&id, target, action, e))?,
        };
        let mut reset_needed = match (self.opts.activation, outcome) {
            (Activation::NextReset, CommitOutcome::NeedsReset(s)) => {
                let needs = NeededReset::from_status(s).unwrap_or(NeededReset::Controller);
                self.note(
                    UpdateStep::Commit,
                    format!(
                        "committed to slot {target}; the drive answered {s}: activates at the next reset that reaches it ({})",
                        needs.describe()
                    ),
                );
                None
            }
            (_, CommitOutcome::NeedsReset(s)) => {
                let needs = NeededReset::from_status(s).unwrap_or(NeededReset::Controller);
                self.note(
                    UpdateStep::Commit,
                    format!(
                        "committed to slot {target}; the drive answered {s}: it needs {}",
                        needs.describe()
                    ),
                );
                Some(needs)
            }
            (Activation::Reset, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target} ({})", action.describe()),
                );
                Some(NeededReset::Controller)
            }
            (Activation::NextReset, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target}; activates at the next reset"),
                );
                None
            }
            (Activation::Now, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target} and activated without reset"),
                );
                None
            }
        };
        // What the drive says the new image is (the host cannot parse real images).
        let after_commit = self.drive.controller().firmware_slot_log().ok();
        if target == 0 {
            if let Some(log) = &after_commit {
                let chosen = log.next_active_slot().unwrap_or(log.active_slot());
                self.report.target_slot = chosen;
                self.note(
                    UpdateStep::Commit,
                    format!("the controller chose slot {chosen}"),
                );
            }
        }
        let target = self.report.target_slot;
        if self.report.expected_revision.is_none() {
            self.report.expected_revision = after_commit
                .as_ref()
                .and_then(|l| l.revision(target).map(str::to_string));
        }
        if self.opts.activation == Activation::NextReset && reset_needed.is_none() {
            return self.verify_staged(target);
        }

        // 5. Activate and wait.
        if let Some(needs) = reset_needed.take() {
            if let Err(f) = self.give_reset(needs, target, UpdateStep::Activate) {
                return Err(self.fail(
                    UpdateStep::Activate,
                    f.kind,
                    f.message,
                    f.status,
                    format!(
                        "new image committed to slot {target}, activates at {}; still running {} from slot {}",
                        needs.describe(),
                        self.report.previous_revision,
                        self.report.previous_slot
                    ),
                ));
            }
        }
        self.wait_for_drive(UpdateStep::WaitForDrive, target)?;

        // 6. Verify.
        match self.verify(target) {
            Ok(()) => {
                self.report.outcome = UpdateResult::Updated;
                Ok(())
            }
            Err(cause) => self.handle_bad_activation(target, cause),
        }
    }

    fn check_image(&mut self, image: &[u8]) -> Result<(), UpdateFailure> {
        let bad = |msg: String| UpdateFailure {
            step: UpdateStep::CheckImage,
            kind: FailureKind::BadInput,
            message: msg,
            status: None,
            drive_state: "untouched: nothing was sent to the drive".into(),
        };
        if image.is_empty() {
            return Err(bad("the image is empty".into()));
        }
        if image.len() % 4 != 0 {
            return Err(bad(format!(
                "the image is {} bytes, not a whole number of dwords (Firmware Image Download moves 4-byte units)",
                image.len()
            )));
        }
        if let Some(want) = &self.opts.sha256 {
            let want = want.trim().to_ascii_lowercase();
            if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("--sha256 '{want}' is not 64 hex digits")));
            }
            if want != self.report.image_sha256 {
                return Err(bad(format!(
                    "sha256 mismatch: the image hashes to {}, expected {want} (wrong or corrupted file)",
                    self.report.image_sha256
                )));
            }
        }
        if let Some(Err(why)) = self
            .drive
            .controller()
            .transport()
            .check_firmware_format(image)
        {
            return Err(bad(why));
        }
        self.note(
            UpdateStep::CheckImage,
            format!(
                "image: {} bytes, sha256 {}",
                image.len(),
                self.report.image_sha256
            ),
        );
        Ok(())
    }

    fn choose_slot(&mut self, id: &IdentifyController, active: u8) -> Result<u8, UpdateFailure> {
        let n = id.firmware_slots();
        if let Some(s) = self.opts.slot {
            if !(1..=7).contains(&s) {
                return Err(UpdateFailure {
                    step: UpdateStep::Inspect,
                    kind: FailureKind::BadInput,
                    message: format!(
                        "slot {s} is not a firmware slot: slots are 1 to 7 (this drive has {n})"
                    ),
                    status: None,
                    drive_state: self.untouched(),
                });
            }
            if s == active {
                self.note(
                    UpdateStep::Inspect,
                    format!("slot {s} holds the running image: rollback will not be possible"),
                );
            }
            return Ok(s);
        }
        match (1..=n).find(|&s| s != active && !(s == 1 && id.slot1_read_only())) {
            Some(s) => {
                self.note(
                    UpdateStep::Inspect,
                    format!("using slot {s}; slot {active} keeps the running image for rollback"),
                );
                Ok(s)
            }
            None => {
                self.note(UpdateStep::Inspect, "no spare writable slot: the controller picks one (rollback may not be possible)");
                Ok(0)
            }
        }
    }

    pub(super) fn wait_for_drive(
        &mut self,
        step: UpdateStep,
        target: u8,
    ) -> Result<(), UpdateFailure> {
        let before = self.drive.controller().device_name();
        self.note(
            step,
            format!(
                "waiting up to {} for the drive to come back",
                humantime::format_duration(self.opts.come_back_timeout)
            ),
        );
        let waited = Instant::now();
        if let Err(e) = self.drive.wait_ready(self.opts.come_back_timeout) {
            let (kind, status) = describe_device(&e);
            return Err(self.fail(
                step,
                kind,
                format!("the drive did not come back after activation: {e}"),
                status,
                format!("unknown: the new image is committed to slot {target}; the drive is off the bus and needs a power cycle"),
            ));
        }
        let after = self.drive.controller().device_name();
        self.report.device_name_after = Some(after.clone());
        let took =
            humantime::format_duration(Duration::from_millis(waited.elapsed().as_millis() as u64));
        if after != before {
            self.note(
                step,
                format!("the drive re-enumerated as {after} (was {before}) after {took}"),
            );
        } else {
            self.note(step, format!("the drive is back as {after} after {took}"));
        }
        Ok(())
    }
}
