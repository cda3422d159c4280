//! The drive's life between commands: time passing (boots end, self-tests progress and finish), power going
//! off and on (safely or not), resets, and dropping off and returning to the bus. Every command applies these
//! first, so the drive's state is always that of "now".

use std::fs;

use nvme_spec::command::admin as admin_op;
use nvme_spec::log_page::self_test_result;
use nvme_spec::{Command, Queue, Status, NSID_ALL};

use super::faults::FaultKind;
use super::image::{self, Behaviour};
use super::state::{Power, RunningSelfTest, SelfTestRecord, SimState};
use super::{bus, Ctx, SimController, SimError, CONSOLE_FILE, STAGING_FILE};
use crate::transport::{Passthru, TransportError};

impl Ctx<'_> {
    /// Appends a line to the drive's serial console.
    pub(super) fn console(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CONSOLE_FILE))
        {
            let _ = writeln!(
                f,
                "[{:>10}.{:03}] nvfsim: {line}",
                self.now / 1000,
                self.now % 1000
            );
        }
    }

    /// `Some(error)` when the drive cannot take commands now.
    pub(super) fn presence(&self, sim: &SimController) -> Option<TransportError> {
        match self.st.power {
            Power::On { .. } => None,
            Power::Booting { until_ms, .. } => Some(TransportError::NotReady {
                device: sim.name(),
                detail: format!(
                    "firmware booting, ready in {} ms",
                    until_ms.saturating_sub(self.now)
                ),
            }),
            Power::Gone {
                until_ms: Some(t), ..
            } => Some(sim.gone(&format!(
                "off the bus, re-enumerating in {} ms",
                t.saturating_sub(self.now)
            ))),
            Power::Gone { powered: false, .. } => Some(sim.gone("powered off")),
            Power::Gone { .. } => {
                Some(sim.gone("dropped off the bus; it returns only when power-cycled"))
            }
        }
    }

    /// Applies elapsed time.
    pub(super) fn tick(&mut self) -> Result<(), SimError> {
        let now = self.now;
        match self.st.power.clone() {
            Power::Booting { since_ms, until_ms } if now >= until_ms => {
                self.st.power = Power::On { since_ms };
                let fw = &self.st.firmware;
                let line = if fw.running_failed {
                    format!(
                        "firmware {} self-check FAILED: media path disabled",
                        fw.running_revision
                    )
                } else {
                    format!(
                        "firmware {} ready (slot {})",
                        fw.running_revision, fw.active_slot
                    )
                };
                self.console(&line);
            }
            Power::Gone {
                since_ms,
                until_ms: Some(t),
                powered,
                ..
            } if now >= t => {
                let since_ms = if powered { since_ms } else { now };
                self.reenumerate()?;
                self.console(&format!("PCIe link up (nvme{})", self.st.instance));
                self.st.power = Power::Booting {
                    since_ms,
                    until_ms: now + self.st.timing.boot_ms,
                };
            }
            _ => {}
        }
        if let Some(run) = &self.st.self_test.running {
            if now >= run.started_ms + run.duration_ms {
                let run = self.st.self_test.running.take().expect("checked");
                self.finish_self_test(&run);
            }
        }
        Ok(())
    }

    pub(super) fn finish_self_test(&mut self, run: &RunningSelfTest) {
        let poh = self.st.power_on_hours(self.now);
        let mut rec = SelfTestRecord {
            code: run.code,
            result: self_test_result::COMPLETED,
            segment: 0,
            power_on_hours: poh,
            nsid: run.nsid,
            failing_lba: None,
            status_code_type: 0,
            status_code: 0,
        };
        if self.st.firmware.running_failed {
            rec.result = self_test_result::FATAL_OR_UNKNOWN;
        } else if let Some(i) = self.faults.find(
            FaultKind::SelfTestFailure,
            Queue::Admin,
            admin_op::DEVICE_SELF_TEST,
        ) {
            self.faults_changed |= self.faults.consume(i);
            rec.result = self_test_result::SEGMENTS_FAILED;
            rec.segment = 2;
            rec.failing_lba = Some(self.st.namespace.blocks() / 3);
            rec.status_code_type = 2;
            rec.status_code = 0x81;
        }
        self.push_self_test(rec);
    }

    pub(super) fn push_self_test(&mut self, rec: SelfTestRecord) {
        self.st.self_test.results.insert(0, rec);
        self.st.self_test.results.truncate(20);
    }

    /// Ends a running self-test with `result` (an abort).
    pub(super) fn abort_self_test(&mut self, result: u8) {
        if let Some(run) = self.st.self_test.running.take() {
            let poh = self.st.power_on_hours(self.now);
            self.push_self_test(SelfTestRecord {
                code: run.code,
                result,
                segment: 0,
                power_on_hours: poh,
                nsid: run.nsid,
                failing_lba: None,
                status_code_type: 0,
                status_code: 0,
            });
        }
    }

    pub(super) fn record_failure(&mut self, queue: Queue, cmd: &Command, status: Status) {
        let sqid = if queue == Queue::Admin { 0 } else { 1 };
        let lba = if queue == Queue::Io { cmd.slba() } else { 0 };
        // An error not specific to a namespace names FFFFFFFFh.
        let nsid = if cmd.nsid == 0 { NSID_ALL } else { cmd.nsid };
        self.st.take_cmdid();
        self.st
            .record_error(sqid, status.raw(), nsid, lba, error_location(queue, status));
    }

    /// Takes a new instance number and, on a bus, publishes the drive under it.
    pub(super) fn reenumerate(&mut self) -> Result<(), SimError> {
        match self.st.bus.clone() {
            Some(bus) => {
                bus::unpublish(&bus, self.st.instance)?;
                self.st.instance = bus::allocate_instance(&bus)?;
                bus::publish(&bus, self.st, self.dir)?;
            }
            None => self.st.instance += 1,
        }
        Ok(())
    }

    /// The drive leaves the bus until `until_ms` (None = until power-cycled), still powered.
    pub(super) fn drop_off_bus(&mut self, until_ms: Option<u64>) -> Result<(), SimError> {
        let since_ms = self.st.power.since_ms();
        if let Some(bus) = &self.st.bus {
            bus::unpublish(bus, self.st.instance)?;
        }
        self.st.power = Power::Gone {
            since_ms,
            until_ms,
            powered: true,
            reenumerate: true,
        };
        self.console("PCIe link down");
        Ok(())
    }

    pub(super) fn clear_staging(&mut self) {
        self.st.firmware.staged.clear();
        let _ = fs::remove_file(self.dir.join(STAGING_FILE));
    }

    pub(super) fn power_off(&mut self) {
        let since = match self.st.power {
            Power::On { since_ms } | Power::Booting { since_ms, .. } => Some(since_ms),
            Power::Gone {
                since_ms,
                powered: true,
                ..
            } => Some(since_ms),
            Power::Gone { powered: false, .. } => None,
        };
        let Some(since) = since else { return };
        self.st.counters.power_on_ms += self.now.saturating_sub(since) as u128;
        // Without a completed shutdown notification, losing power is an unsafe shutdown, pending writes or not.
        if !self.st.shut_down {
            self.st.counters.unsafe_shutdowns += 1;
            let lost = self.st.namespace.cached.len();
            if lost > 0 {
                self.console(&format!(
                    "power lost without a shutdown notification: {lost} write(s) in the volatile write cache never reached the media"
                ));
            } else if self.st.dirty {
                self.console("power lost with writes not flushed");
            }
        }
        super::cache::drop_all(self);
        self.st.dirty = false;
        self.st.shut_down = false;
        self.clear_staging();
        self.abort_self_test(self_test_result::ABORTED_UNKNOWN);
        self.st.features_current = self.st.features_saved.clone();
        // A drive that was still on the bus is removed cleanly and keeps its name; one that had already dropped
        // off re-enumerates under a new one.
        let reenumerate = matches!(self.st.power, Power::Gone { .. });
        if let (false, Some(bus)) = (reenumerate, &self.st.bus) {
            let _ = bus::unpublish(bus, self.st.instance);
        }
        self.st.power = Power::Gone {
            since_ms: self.now,
            until_ms: None,
            powered: false,
            reenumerate,
        };
        self.console("power off");
    }

    pub(super) fn power_on(&mut self) -> Result<(), SimError> {
        let Power::Gone {
            powered: false,
            reenumerate,
            ..
        } = self.st.power
        else {
            return Ok(());
        };
        self.st.counters.power_cycles += 1;
        self.console(&format!(
            "power on; booting firmware {} from slot {}",
            self.st.firmware.running_revision, self.st.firmware.active_slot
        ));
        if reenumerate {
            self.reenumerate()?;
        } else if let Some(bus) = self.st.bus.clone() {
            bus::publish(&bus, self.st, self.dir)?;
        }
        self.st.power = Power::Booting {
            since_ms: self.now,
            until_ms: self.now + self.st.timing.boot_ms,
        };
        if let Some(slot) = self.st.firmware.next_slot {
            self.activate(slot)?;
        }
        Ok(())
    }

    /// Power lost without warning (injected during a firmware download): the drive restarts by itself.
    pub(super) fn power_loss(&mut self) {
        self.st.shut_down = false;
        self.power_off();
        let _ = self.power_on();
    }

    /// A shutdown notification (CC.SHN = normal) that completes: volatile writes are flushed, and power may go
    /// now without an unsafe shutdown.
    pub(super) fn shutdown_notify(&mut self) -> Result<(), SimError> {
        super::cache::write_back(self)?;
        self.st.dirty = false;
        self.st.shut_down = true;
        self.console("shutdown notification: writes flushed, shutdown complete");
        Ok(())
    }

    /// A controller level reset: aborts a self-test, drops partial downloads, restores saved features and
    /// activates the pending firmware slot if a controller reset is what activates it.
    pub(super) fn controller_reset(&mut self) -> Result<(), SimError> {
        self.reset_as(
            "controller reset",
            super::state::ResetRequirement::Controller,
        )
    }

    /// An NVM subsystem reset: a controller reset of the whole subsystem, which also activates an image that
    /// needs a subsystem reset.
    pub(super) fn subsystem_reset(&mut self) -> Result<(), SimError> {
        self.reset_as(
            "NVM subsystem reset",
            super::state::ResetRequirement::Subsystem,
        )
    }

    /// A reset that activates pending images needing at most `reaches` (controller < subsystem < conventional).
    fn reset_as(
        &mut self,
        what: &str,
        reaches: super::state::ResetRequirement,
    ) -> Result<(), SimError> {
        use super::state::ResetRequirement::*;
        self.console(what);
        self.st.shut_down = false;
        self.abort_self_test(self_test_result::ABORTED_BY_RESET);
        self.clear_staging();
        self.st.features_current = self.st.features_saved.clone();
        let since_ms = self.st.power.since_ms();
        self.st.power = Power::Booting {
            since_ms,
            until_ms: self.now + self.st.timing.boot_ms,
        };
        let activates = match self.st.firmware.activation_reset {
            Controller => true,
            Subsystem => reaches == Subsystem,
            Conventional => false,
        };
        match self.st.firmware.next_slot {
            Some(slot) if activates => self.activate(slot)?,
            Some(slot) => self.console(&format!(
                "slot {slot} stays pending: its image activates only at {} (the running firmware {} carries on)",
                match self.st.firmware.activation_reset {
                    Subsystem => "an NVM subsystem reset or a power cycle",
                    _ => "a power cycle (conventional reset)",
                },
                self.st.firmware.running_revision
            )),
            None => {}
        }
        Ok(())
    }

    /// Boots the image in `slot`, with that image's behaviour.
    pub(crate) fn activate(&mut self, slot: u8) -> Result<(), SimError> {
        self.st.firmware.next_slot = None;
        let Some(img) = self.st.firmware.image(slot).cloned() else {
            return Ok(());
        };
        let previous = self.st.firmware.active_slot;
        let since_ms = self.st.power.since_ms();
        self.console(&format!(
            "activating firmware {} from slot {slot}",
            img.revision
        ));
        let boot = |ms: u64| Power::Booting {
            since_ms,
            until_ms: self.now + ms,
        };
        let run = |st: &mut SimState, failed: bool| {
            st.firmware.active_slot = slot;
            st.firmware.running_revision = img.revision.clone();
            st.firmware.running_failed = failed;
        };
        match img.behaviour {
            Behaviour::Ok => {
                run(self.st, false);
                self.st.power = boot(self.st.timing.boot_ms);
            }
            Behaviour::BootFail => {
                run(self.st, true);
                self.st.power = boot(self.st.timing.boot_ms);
            }
            Behaviour::SlowBoot => {
                run(self.st, false);
                self.st.power = boot(img.behaviour_ms as u64);
            }
            Behaviour::Vanish => {
                run(self.st, false);
                let until = (img.behaviour_ms != image::FOREVER_MS)
                    .then(|| self.now + img.behaviour_ms as u64);
                self.drop_off_bus(until)?;
            }
            Behaviour::Fallback => {
                // The boot ROM gives up on the new image and boots the previous slot (or any other good one).
                let fallback = if previous != slot && self.st.firmware.image(previous).is_some() {
                    Some(previous)
                } else {
                    (1..=self.st.firmware.slots).find(|&s| {
                        s != slot
                            && self
                                .st
                                .firmware
                                .image(s)
                                .is_some_and(|i| i.behaviour == Behaviour::Ok)
                    })
                };
                match fallback.and_then(|s| self.st.firmware.image(s).cloned().map(|i| (s, i))) {
                    Some((s, i)) => {
                        self.console(&format!(
                            "firmware {} in slot {slot} failed to boot; boot ROM falls back to slot {s} ({})",
                            img.revision, i.revision
                        ));
                        self.console(&format!(
                            "firmware {} in slot {slot} failed to boot; boot ROM falls back to slot {s} ({})",
                            img.revision, i.revision
                        ));
                        self.st.firmware.active_slot = s;
                        self.st.firmware.running_revision = i.revision;
                        self.st.firmware.running_failed = false;
                    }
                    None => run(self.st, true),
                }
                self.st.power = boot(self.st.timing.boot_ms * 2);
            }
        }
        Ok(())
    }
}

/// Where in the submission queue entry the field a status complains about lies (bits 7:0 the byte, 10:8 the
/// bit), for the Error Information log; FFFFh when the status is not about a field.
fn error_location(queue: Queue, status: Status) -> u16 {
    use nvme_spec::status::code;
    // Byte offsets in the 64-byte entry: NSID at 4, CDW10 at 40, CDW12 at 48.
    match status.code() {
        code::INVALID_NAMESPACE => 4,
        code::LBA_OUT_OF_RANGE => 40,
        // I/O: the length (NLB, CDW12) is what a data error is about; admin: the selector in CDW10.
        code::INVALID_FIELD if queue == Queue::Io => 48,
        code::INVALID_FIELD
        | code::INVALID_FIRMWARE_SLOT
        | code::INVALID_LOG_PAGE
        | code::INVALID_FORMAT => 40,
        _ => 0xffff,
    }
}
