//! Power control of a rig's drive: a USB HID relay board (rusb), external commands, or the simulated drive's
//! power.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flash_tools::sim::SimController;

use crate::rigs::{CommandPowerSpec, PowerKind, UsbRelaySpec};

/// Why power control failed.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// libusb cannot be used on this machine.
    #[error("USB is not available on this machine ({0}); a usb_relay power control needs libusb and a USB bus")]
    NoUsb(String),
    /// The relay board is not connected.
    #[error("no USB relay {vid:04x}:{pid:04x}{} is connected (found: {found}); check the cable and the rig file's power.usb_relay", serial.as_ref().map(|s| format!(" with serial {s}")).unwrap_or_default())]
    RelayNotFound {
        /// USB vendor ID.
        vid: u16,
        /// USB product ID.
        pid: u16,
        /// USB serial number asked for.
        serial: Option<String>,
        /// Boards that are connected.
        found: String,
    },
    /// A USB transfer failed.
    #[error("USB relay {vid:04x}:{pid:04x}: {op} failed: {reason}; check permissions (udev rule or root)")]
    Usb {
        /// USB vendor ID.
        vid: u16,
        /// USB product ID.
        pid: u16,
        /// What was attempted.
        op: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A power command failed.
    #[error("power command `{command}` failed ({status}): {stderr}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The simulated drive's power could not be switched.
    #[error("simulated power: {0}")]
    Sim(#[from] flash_tools::sim::SimError),
}

/// Switching a rig's drive on and off.
pub trait PowerControl: Send + Sync + fmt::Debug {
    /// Switches power on or off.
    fn set(&self, on: bool) -> Result<(), PowerError>;
    /// Off, wait `off_time` (cut short once `stop` says so), on: power is always switched on again.
    fn cycle(&self, off_time: Duration, stop: &dyn Fn() -> bool) -> Result<(), PowerError> {
        self.set(false)?;
        sleep_unless(off_time, stop);
        self.set(true)
    }
    /// What this power control is, for logs.
    fn describe(&self) -> String;
}

/// Sleeps `d`, waking early once `stop` says so.
fn sleep_unless(d: Duration, stop: &dyn Fn() -> bool) {
    let end = std::time::Instant::now() + d;
    while !stop() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Builds the power control a rig file describes. `sim_dir` is the rig's simulated drive, if any.
pub fn from_spec(
    kind: &PowerKind,
    rig: &str,
    sim_dir: Option<&std::path::Path>,
) -> Box<dyn PowerControl> {
    match kind {
        PowerKind::UsbRelay(spec) => Box::new(UsbRelay { spec: spec.clone() }),
        PowerKind::Command(spec) => Box::new(CommandPower {
            spec: spec.clone(),
            rig: rig.to_string(),
        }),
        PowerKind::Sim => Box::new(SimPower {
            dir: sim_dir
                .expect("validated: sim power needs a sim drive")
                .to_path_buf(),
        }),
    }
}

/// A USB HID relay board of the common "USBRelayN" kind (V-USB, 16c0:05df): relay state is set with a HID
/// SET_REPORT feature report `[0xFF, channel]` (on) or `[0xFD, channel]` (off).
#[derive(Debug)]
pub struct UsbRelay {
    /// The rig file's settings.
    pub spec: UsbRelaySpec,
}

const HID_SET_REPORT: u8 = 0x09;
const REQUEST_TYPE_CLASS_INTERFACE_OUT: u8 = 0x21;
const FEATURE_REPORT: u16 = 0x0300;

impl UsbRelay {
    fn open(&self) -> Result<rusb::DeviceHandle<rusb::Context>, PowerError> {
        use rusb::UsbContext;
        let (vid, pid) = (self.spec.vid, self.spec.pid);
        // rusb::devices() panics without a USB bus; a Context reports the failure instead.
        let ctx = rusb::Context::new().map_err(|e| PowerError::NoUsb(e.to_string()))?;
        let devices = ctx
            .devices()
            .map_err(|e| PowerError::NoUsb(e.to_string()))?;
        let mut found = vec![];
        for dev in devices.iter() {
            let Ok(desc) = dev.device_descriptor() else {
                continue;
            };
            found.push(format!(
                "{:04x}:{:04x}",
                desc.vendor_id(),
                desc.product_id()
            ));
            if desc.vendor_id() != vid || desc.product_id() != pid {
                continue;
            }
            let handle = dev.open().map_err(|e| PowerError::Usb {
                vid,
                pid,
                op: "open",
                reason: e.to_string(),
            })?;
            if let Some(want) = &self.spec.serial {
                let serial = desc
                    .serial_number_string_index()
                    .and_then(|i| handle.read_string_descriptor_ascii(i).ok())
                    .unwrap_or_default();
                if &serial != want {
                    continue;
                }
            }
            return Ok(handle);
        }
        Err(PowerError::RelayNotFound {
            vid,
            pid,
            serial: self.spec.serial.clone(),
            found: if found.is_empty() {
                "no USB devices".into()
            } else {
                found.join(", ")
            },
        })
    }
}

impl PowerControl for UsbRelay {
    fn set(&self, on: bool) -> Result<(), PowerError> {
        let (vid, pid) = (self.spec.vid, self.spec.pid);
        let handle = self.open()?;
        if handle.kernel_driver_active(0).unwrap_or(false) {
            handle
                .detach_kernel_driver(0)
                .map_err(|e| PowerError::Usb {
                    vid,
                    pid,
                    op: "detach kernel driver",
                    reason: e.to_string(),
                })?;
        }
        let mut report = [0u8; 8];
        report[0] = if on { 0xFF } else { 0xFD };
        report[1] = self.spec.channel;
        handle
            .write_control(
                REQUEST_TYPE_CLASS_INTERFACE_OUT,
                HID_SET_REPORT,
                FEATURE_REPORT,
                0,
                &report,
                Duration::from_secs(2),
            )
            .map_err(|e| PowerError::Usb {
                vid,
                pid,
                op: "set relay",
                reason: e.to_string(),
            })?;
        Ok(())
    }
    fn describe(&self) -> String {
        format!(
            "USB relay {:04x}:{:04x} channel {}",
            self.spec.vid, self.spec.pid, self.spec.channel
        )
    }
}

/// External commands (a PDU's CLI, a smart plug's API call), run with `sh -c` and `NVFARM_RIG` set.
#[derive(Debug)]
pub struct CommandPower {
    /// The rig file's settings.
    pub spec: CommandPowerSpec,
    /// The rig (in the commands' environment).
    pub rig: String,
}

impl CommandPower {
    fn run(&self, command: &str) -> Result<(), PowerError> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("NVFARM_RIG", &self.rig)
            .output()
            .map_err(|e| PowerError::Command {
                command: command.into(),
                status: "not started".into(),
                stderr: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PowerError::Command {
                command: command.into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

impl PowerControl for CommandPower {
    fn set(&self, on: bool) -> Result<(), PowerError> {
        self.run(if on { &self.spec.on } else { &self.spec.off })
    }
    fn cycle(&self, off_time: Duration, stop: &dyn Fn() -> bool) -> Result<(), PowerError> {
        match &self.spec.cycle {
            Some(c) => self.run(c),
            None => {
                self.set(false)?;
                sleep_unless(off_time, stop);
                self.set(true)
            }
        }
    }
    fn describe(&self) -> String {
        format!("command power (on: `{}`)", self.spec.on)
    }
}

/// The simulated drive's power switch.
#[derive(Debug)]
pub struct SimPower {
    /// The simulated drive's directory.
    pub dir: PathBuf,
}

impl PowerControl for SimPower {
    fn set(&self, on: bool) -> Result<(), PowerError> {
        Ok(SimController::open(&self.dir)?.set_power(on)?)
    }
    fn describe(&self) -> String {
        format!("simulated power of {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_usb_relay_is_a_clear_error_not_a_panic() {
        let relay = UsbRelay {
            spec: UsbRelaySpec {
                vid: 0x16c0,
                pid: 0x05df,
                channel: 1,
                serial: None,
            },
        };
        let e = relay.set(true).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, PowerError::NoUsb(_) | PowerError::RelayNotFound { .. }),
            "unexpected error kind: {msg}"
        );
        assert!(msg.contains("USB"), "{msg}");
    }

    #[test]
    fn command_power_runs_and_reports_failures() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let p = CommandPower {
            spec: CommandPowerSpec {
                on: format!("echo on $NVFARM_RIG >> {}", log.display()),
                off: format!("echo off >> {}", log.display()),
                cycle: None,
            },
            rig: "r1".into(),
        };
        p.cycle(Duration::from_millis(1), &|| false).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "off\non r1\n");
        let bad = CommandPower {
            spec: CommandPowerSpec {
                on: "echo nope >&2; exit 3".into(),
                off: "true".into(),
                cycle: None,
            },
            rig: "r".into(),
        };
        let e = bad.set(true).unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("nope"), "{e}");
    }

    #[test]
    fn sim_power_counts_cycles() {
        let t = tempfile::tempdir().unwrap();
        let sim = SimController::create(&t.path().join("d"), &Default::default()).unwrap();
        let p = SimPower {
            dir: sim.dir().to_path_buf(),
        };
        p.cycle(Duration::from_millis(1), &|| false).unwrap();
        assert_eq!(sim.state().unwrap().counters.power_cycles, 1);
    }
}
