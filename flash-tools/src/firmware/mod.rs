//! The firmware update flow: the one path that takes a drive from one firmware revision to another and proves
//! it.
//!
//! 1. **Check the image**: non-empty, a whole number of dwords, the caller's sha256 if given. Images are opaque
//!    here: the revision to expect comes from the caller, or from what the drive lists for the target slot after
//!    the commit.
//! 2. **Inspect** the drive: Identify (FR, FRMW, FWUG, MDTS, OACS) and the Firmware Slot log, to know what runs
//!    now, where to put the new image and which slot to fall back to.
//! 3. **Download** in chunks no larger than MDTS, aligned to FWUG; a chunk the drive rejects without DNR is
//!    retried with backoff.
//! 4. **Commit** (action 1 for activation at reset, 3 for immediate activation).
//! 5. **Activate** with the reset the drive's commit status asks for (0x111 controller, 0x110 NVM subsystem,
//!    0x10B conventional = a power cycle through the rig's power control; 0x112 commits again for activation at
//!    a reset) and **wait** for the drive to come back, possibly under another device name. A reset nothing can
//!    give stops the update with the drive's state and the reset it needs.
//! 6. **Verify** over passthrough (sysfs goes stale): Identify FR is the new revision, the slot log says the
//!    target slot is active, and the drive is healthy (no new SMART critical warning, a read of LBA 0 works).
//! 7. On a failed verification, **roll back**: activate the previous slot, reset, wait, verify the old revision.
//!
//! Every failure names its step, the NVMe status by name, and the state the drive was left in.
//!
//! - [`report`]: what the flow reports (options, steps, outcome, failure, events);
//! - `flow`: the run from check to commit and activation; `activate`: which reset activates an image, and
//!   giving it; `download`: the image transfer and the commit's
//!   failures; `verify`: verification, the staged case, and rollback; `recover`: the drive's state after a
//!   command timed out (reset, wait, read back).

mod activate;
mod download;
mod flow;
mod recover;
mod report;
#[cfg(test)]
mod tests;
mod verify;

pub use activate::NeededReset;
pub use flow::update;
pub use report::{
    FailureKind, NoProgress, PowerCycle, Progress, RollbackReport, UpdateEvent, UpdateFailure,
    UpdateOptions, UpdateReport, UpdateResult, UpdateStep,
};
