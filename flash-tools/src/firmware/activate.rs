//! Which reset activates a committed image, and giving the drive that reset with what the host and the rig
//! can do: a controller reset (`NVME_IOCTL_RESET`), an NVM subsystem reset (`NVME_IOCTL_SUBSYS_RESET`, where the
//! drive supports one), or a conventional reset (a power cycle through the rig's power control). A drive that
//! needs a reset nothing here can give is left as it is, and the failure says which reset it needs.

use super::flow::{describe_nvme, Updater};
use super::report::{FailureKind, UpdateStep};
use crate::transport::ResetKind;
use nvme_spec::status::{code, Status};

/// The reset a committed image needs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeededReset {
    /// A controller level reset (or anything more).
    Controller,
    /// An NVM subsystem reset or a conventional reset (0x110).
    Subsystem,
    /// A conventional reset: a power cycle (0x10B).
    Conventional,
}

impl NeededReset {
    /// What a Firmware Commit status says activates the image (`None`: not a "needs reset" status).
    pub fn from_status(s: Status) -> Option<NeededReset> {
        match s.code() {
            code::FW_NEEDS_CONTROLLER_RESET => Some(NeededReset::Controller),
            code::FW_NEEDS_SUBSYSTEM_RESET => Some(NeededReset::Subsystem),
            code::FW_NEEDS_CONVENTIONAL_RESET => Some(NeededReset::Conventional),
            _ => None,
        }
    }

    /// "a controller reset", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            NeededReset::Controller => "a controller reset",
            NeededReset::Subsystem => "an NVM subsystem reset",
            NeededReset::Conventional => "a conventional reset (power cycle)",
        }
    }
}

/// Why the reset could not be given.
pub(super) struct ResetFailed {
    pub kind: FailureKind,
    pub message: String,
    pub status: Option<String>,
}

impl Updater<'_> {
    /// Gives the drive `needed` (to activate the image committed to `slot`), noting each attempt under `step`.
    /// An NVM subsystem reset the drive refuses falls back to a power cycle where the rig has power control.
    pub(super) fn give_reset(
        &mut self,
        needed: NeededReset,
        slot: u8,
        step: UpdateStep,
    ) -> Result<(), ResetFailed> {
        let ctrl = self.drive.controller().clone();
        match needed {
            NeededReset::Controller => {
                self.note(step, format!("controller reset to activate slot {slot}"));
                match ctrl.reset(ResetKind::Controller) {
                    // A drive that drops off the bus while resetting is waited for next.
                    Err(e) if !e.is_absent() => {
                        let (kind, status) = describe_nvme(&e);
                        Err(ResetFailed {
                            kind,
                            message: format!("the controller reset failed: {e}"),
                            status,
                        })
                    }
                    _ => Ok(()),
                }
            }
            NeededReset::Subsystem => {
                self.note(step, format!("NVM subsystem reset to activate slot {slot}"));
                match ctrl.reset(ResetKind::Subsystem) {
                    Err(e) if !e.is_absent() => {
                        self.note(step, format!("the NVM subsystem reset was refused ({e})"));
                        if self.opts.power_cycle.is_some() {
                            self.power_cycle(slot, step, "in place of the NVM subsystem reset")
                        } else {
                            Err(ResetFailed {
                                kind: FailureKind::ResetUnavailable,
                                message: format!(
                                    "the drive needs an NVM subsystem reset to activate slot {slot}, refused it ({e}), and there is no power control for a power cycle instead"
                                ),
                                status: None,
                            })
                        }
                    }
                    _ => Ok(()),
                }
            }
            NeededReset::Conventional => {
                if self.opts.power_cycle.is_some() {
                    self.power_cycle(slot, step, "the conventional reset it needs")
                } else {
                    Err(ResetFailed {
                        kind: FailureKind::ResetUnavailable,
                        message: format!(
                            "the drive needs a conventional reset (power cycle) to activate slot {slot}, and there is no power control to give it one (a controller reset would leave the old image running)"
                        ),
                        status: None,
                    })
                }
            }
        }
    }

    fn power_cycle(&mut self, slot: u8, step: UpdateStep, why: &str) -> Result<(), ResetFailed> {
        let Some(p) = self.opts.power_cycle.clone() else {
            return Err(ResetFailed {
                kind: FailureKind::ResetUnavailable,
                message: "no power control".into(),
                status: None,
            });
        };
        if let Some(Ok(true)) = self.drive.controller().transport().shutdown() {
            self.note(
                step,
                "shutdown notification sent first: the power cut is not an unsafe shutdown",
            );
        }
        self.note(
            step,
            format!(
                "power cycle via {} ({why}) to activate slot {slot}",
                p.describe
            ),
        );
        (p.run)().map_err(|e| ResetFailed {
            kind: FailureKind::Unreachable,
            message: format!("the power cycle failed: {e}"),
            status: None,
        })
    }
}
