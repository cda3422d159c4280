//! Proving the result: the new revision runs from the target slot and the drive is healthy, or the image is
//! staged for the next reset; when the new image came up wrong, rolling back to the previous one and proving
//! that.

use super::activate::NeededReset;
use super::flow::{describe_nvme, Updater};
use super::report::{FailureKind, RollbackReport, UpdateFailure, UpdateResult, UpdateStep};
use crate::controller::CommitOutcome;
use nvme_spec::CommitAction;

impl Updater<'_> {
    /// Checks the running revision, active slot and health. Err = why the new firmware is not good.
    pub(super) fn verify(&mut self, target: u8) -> Result<(), String> {
        let ctrl = self.drive.controller().clone();
        let id = ctrl
            .identify_controller()
            .map_err(|e| format!("Identify Controller failed: {e}"))?;
        let log = ctrl
            .firmware_slot_log()
            .map_err(|e| format!("reading the Firmware Slot log failed: {e}"))?;
        let fr = id.firmware_revision().to_string();
        self.report.running_revision = Some(fr.clone());
        self.report.running_slot = Some(log.active_slot());
        let expected = self.report.expected_revision.clone().unwrap_or_default();
        if log.active_slot() != target || (!expected.is_empty() && fr != expected) {
            if fr == self.report.previous_revision && log.active_slot() == self.report.previous_slot
            {
                return Err(format!(
                    "the drive fell back to slot {} ({fr}): the new image in slot {target} did not boot",
                    log.active_slot()
                ));
            }
            return Err(format!(
                "the drive runs {fr} from slot {}, expected {} from slot {target}",
                log.active_slot(),
                if expected.is_empty() {
                    "the new image"
                } else {
                    &expected
                }
            ));
        }
        let smart = ctrl
            .smart_log()
            .map_err(|e| format!("reading SMART / Health failed: {e}"))?;
        let new_bits = smart.critical_warning & !self.critical_warning_before;
        if new_bits != 0 {
            return Err(format!(
                "{fr} is running but SMART reports new critical warning bits {new_bits:#04x} ({})",
                nvme_spec::log_page::critical_warning::describe(new_bits)
            ));
        }
        if let Some(&nsid) = ctrl
            .active_namespaces()
            .map_err(|e| format!("listing namespaces failed: {e}"))?
            .first()
        {
            let ns = ctrl
                .identify_namespace(nsid)
                .map_err(|e| format!("Identify Namespace {nsid} failed: {e}"))?;
            let bs = ns.block_size() as u32;
            let mut buf = vec![0u8; bs as usize];
            ctrl.read(nsid, 0, &mut buf, bs).map_err(|e| {
                format!("{fr} is running but reading LBA 0 of namespace {nsid} failed: {e}")
            })?;
        }
        self.note(
            UpdateStep::Verify,
            format!("verified: {fr} runs from slot {target}, SMART clean, namespace readable"),
        );
        Ok(())
    }

    pub(super) fn verify_staged(&mut self, target: u8) -> Result<(), UpdateFailure> {
        let log = self.drive.controller().firmware_slot_log().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Verify,
                kind,
                format!("reading the Firmware Slot log failed: {e}"),
                status,
                "committed, unverified".into(),
            )
        })?;
        let expected = self.report.expected_revision.clone().unwrap_or_default();
        let staged_rev = log.revision(target).unwrap_or("");
        if log.next_active_slot() != Some(target)
            || (!expected.is_empty() && staged_rev != expected)
        {
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                format!(
                    "after commit the slot log shows slot {target} = '{staged_rev}' and next active slot {:?}, expected '{expected}' pending in slot {target}",
                    log.next_active_slot()
                ),
                None,
                format!("running {} from slot {}", self.report.previous_revision, log.active_slot()),
            ));
        }
        self.report.running_revision = Some(self.report.previous_revision.clone());
        self.report.running_slot = Some(log.active_slot());
        self.report.outcome = UpdateResult::Staged;
        self.note(
            UpdateStep::Verify,
            format!("slot {target} holds {staged_rev} and activates at the next reset"),
        );
        Ok(())
    }

    pub(super) fn handle_bad_activation(
        &mut self,
        target: u8,
        cause: String,
    ) -> Result<(), UpdateFailure> {
        self.note(UpdateStep::Verify, cause.clone());
        let prev_slot = self.report.previous_slot;
        let prev_rev = self.report.previous_revision.clone();
        let fell_back = self.report.running_slot == Some(prev_slot)
            && self.report.running_revision.as_deref() == Some(&prev_rev);
        if fell_back {
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!("running the previous firmware {prev_rev} from slot {prev_slot} (the drive fell back by itself); slot {target} holds the image that failed"),
            ));
        }
        if !self.opts.rollback || prev_slot == target || prev_slot == 0 {
            let why = if !self.opts.rollback {
                "rollback disabled"
            } else {
                "the previous image was overwritten"
            };
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!(
                    "running {} from slot {} ({why})",
                    self.report
                        .running_revision
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    self.report.running_slot.unwrap_or(0)
                ),
            ));
        }
        // 7. Roll back.
        self.note(
            UpdateStep::Rollback,
            format!("rolling back to slot {prev_slot} ({prev_rev})"),
        );
        let result = self.roll_back(prev_slot, &prev_rev);
        let verified = result.is_ok();
        let message = match &result {
            Ok(()) => format!("rolled back to {prev_rev} in slot {prev_slot}, verified running"),
            Err(e) => format!("rollback to slot {prev_slot} failed: {e}"),
        };
        self.note(UpdateStep::Rollback, message.clone());
        self.report.rollback = Some(RollbackReport {
            slot: prev_slot,
            revision: prev_rev.clone(),
            verified,
            message: message.clone(),
        });
        if verified {
            self.report.outcome = UpdateResult::RolledBack;
            Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!("rolled back: running the previous firmware {prev_rev} from slot {prev_slot} (verified); slot {target} holds the image that failed"),
            ))
        } else {
            Err(self.fail(
                UpdateStep::Rollback,
                FailureKind::Verification,
                format!("{cause}; {message}"),
                None,
                "unknown: the rollback did not verify".into(),
            ))
        }
    }

    fn roll_back(&mut self, slot: u8, revision: &str) -> Result<(), String> {
        let ctrl = self.drive.controller().clone();
        let needs = match ctrl
            .firmware_commit(slot, CommitAction::ActivateOnReset)
            .map_err(|e| e.to_string())?
        {
            CommitOutcome::NeedsReset(s) => {
                NeededReset::from_status(s).unwrap_or(NeededReset::Controller)
            }
            CommitOutcome::Committed => NeededReset::Controller,
        };
        self.give_reset(needs, slot, UpdateStep::Rollback)
            .map_err(|f| f.message)?;
        self.drive
            .wait_ready(self.opts.come_back_timeout)
            .map_err(|e| e.to_string())?;
        self.report.device_name_after = Some(self.drive.controller().device_name());
        let id = self
            .drive
            .controller()
            .identify_controller()
            .map_err(|e| e.to_string())?;
        let log = self
            .drive
            .controller()
            .firmware_slot_log()
            .map_err(|e| e.to_string())?;
        self.report.running_revision = Some(id.firmware_revision().to_string());
        self.report.running_slot = Some(log.active_slot());
        if id.firmware_revision() != revision || log.active_slot() != slot {
            return Err(format!(
                "after rollback the drive runs {} from slot {}",
                id.firmware_revision(),
                log.active_slot()
            ));
        }
        Ok(())
    }
}
