//! After a command timed out, the drive's state is unknown: the command may have run, partly run, or still be
//! running. Nothing is assumed. The drive is recovered the way the host can (a controller reset aborts whatever
//! it still runs; Linux's own timeout handling may have aborted or reset it already), waited for, and read back:
//! the report says what was found, or that it needs a power cycle.

use crate::transport::ResetKind;

use super::flow::Updater;
use super::report::UpdateStep;

impl Updater<'_> {
    /// Recovers after `what` happened in `step` (`Firmware Commit timed out`, `... lost the drive`) and says what
    /// state the drive is in now.
    pub(super) fn recover_unknown_state(&mut self, step: UpdateStep, what: &str) -> String {
        self.note(
            step,
            format!("{what}: the drive's state is unknown; resetting the controller and reading it back"),
        );
        let ctrl = self.drive.controller().clone();
        let reset = match ctrl.reset(ResetKind::Controller) {
            Ok(()) => "after a controller reset".to_string(),
            Err(e) if e.is_absent() => {
                "after a controller reset (the drive dropped off meanwhile)".to_string()
            }
            Err(e) => format!("the controller reset failed ({e}); after waiting"),
        };
        if let Err(e) = self.drive.wait_ready(self.opts.come_back_timeout) {
            return format!(
                "unknown: {what}, and {reset} the drive does not answer ({e}); it needs a power cycle"
            );
        }
        let (id, slots) = (ctrl.identify_controller(), ctrl.firmware_slot_log());
        match (id, slots) {
            (Ok(id), Ok(slots)) => {
                let held: Vec<String> = (1..=7)
                    .filter_map(|s| slots.revision(s).map(|r| format!("{s}: {r}")))
                    .collect();
                let pending = slots
                    .next_active_slot()
                    .map(|s| format!("; slot {s} activates at the next reset"))
                    .unwrap_or_default();
                format!(
                    "was unknown after {what}; {reset} the drive runs {} from slot {} (slots {}){pending}",
                    id.firmware_revision(),
                    slots.active_slot(),
                    held.join(", ")
                )
            }
            (Err(e), _) | (_, Err(e)) => {
                format!("unknown: {what}; {reset} the drive answers but cannot be read back ({e})")
            }
        }
    }
}
