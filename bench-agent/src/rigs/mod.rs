//! Rig inventory: `rigs/<machine>.toml` says which drives, power relays and consoles this agent owns.
//!
//! ```toml
//! [agent]
//! name = "bench-07"
//! scripts = { dir = "/opt/nvfarm/scripts" }   # `script` steps: "any" (default), "none", or only programs in dir
//!
//! [[rig]]
//! name = "rig-07a"
//! labels = { model = "X1-1T", site = "lab-a" }
//! io_paths = ["/mnt/scratch-07a"]        # io steps may use these besides the rig's own drive (default: none)
//! drive = { serial = "S6ABC123" }        # or { pci = "0000:3b:00.0" }, { path = "/dev/nvme0" }, or a simulated drive:
//! # drive = { sim = "sim/rig-07a", serial = "SIM7A", model = "NVFARM SIM X1", firmware = "1.0.0", size = "1G" }
//! power = { usb_relay = { vid = 0x16c0, pid = 0x05df, channel = 1 } }   # or { command = { on = "...", off = "..." } }, { sim = true }
//! console = { serial = "/dev/ttyUSB0", baud = 115200 }                   # or { sim = true }
//! ```
//!
//! Every error names the file, the rig and the key. A simulated drive's directory is relative to the agent's
//! work directory and is created, from the rig's settings, the first time the rig is used.
//!
//! `script` steps run on the bench as the agent's user (root on a real bench). `scripts = "none"` refuses plans
//! with them; `scripts = { dir = ... }` runs only programs inside that directory, executed directly with their
//! arguments (no shell). An `io` step writes to the rig's own drive; any other path must be under one of the
//! rig's `io_paths`. A plan that breaks these is refused before any step runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use flash_tools::device::{DeviceAddr, Locator, Sysfs};
use flash_tools::sim::state::Timing;
use flash_tools::sim::{SimConfig, SimController};

use crate::console::Console;

mod parse;

/// Why a rig file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The file cannot be read.
    #[error("cannot read rig file {file}: {source}")]
    Read {
        /// The rig file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is invalid; `context` names the rig and key.
    #[error("{file}: {context}: {reason}")]
    Invalid {
        /// The rig file.
        file: PathBuf,
        /// Where.
        context: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// No rig has that name.
    #[error("{file}: no rig named '{name}' (rigs: {known})")]
    NoSuchRig {
        /// The rig file.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The rigs there are.
        known: String,
    },
    /// The rig's drive cannot be found or created.
    #[error("{file}: rig '{rig}': drive: {reason}")]
    Drive {
        /// The rig file.
        file: PathBuf,
        /// The rig.
        rig: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

/// A rig file's `[agent]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Unique name.
    pub name: String,
    /// Which `script` steps this bench runs (`"any"`, `"none"` or `{ dir = "..." }`).
    #[serde(default)]
    pub scripts: Option<toml::Value>,
}

/// Which `script` steps a bench runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ScriptPolicy {
    /// Any shell command (`sh -c`).
    Any,
    /// None: a plan with a script step is refused.
    Forbidden,
    /// Only programs inside this directory, run directly with their arguments (no shell).
    Confined(PathBuf),
}

/// A simulated drive's settings in a rig file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriveSpec {
    /// The simulated drive's power (sim rigs only).
    pub sim: Option<PathBuf>,
    /// Serial number.
    pub serial: Option<String>,
    /// A real drive by PCI address.
    pub pci: Option<String>,
    /// A real drive by device path.
    pub path: Option<PathBuf>,
    // Settings for a simulated drive created on first use:
    /// Model number.
    pub model: Option<String>,
    /// Factory firmware revision.
    pub firmware: Option<String>,
    /// Namespace size, bytes.
    pub size: Option<String>,
    /// Firmware slots.
    pub slots: Option<u8>,
    /// Slot 1 is read-only.
    pub slot1_readonly: Option<bool>,
    /// Logical block size.
    pub block_size: Option<u32>,
    /// Boot time of a simulated drive.
    pub boot_time: Option<String>,
    /// Short self-test duration of a simulated drive.
    pub self_test_short: Option<String>,
    /// Extended self-test duration of a simulated drive.
    pub self_test_extended: Option<String>,
    /// Which reset activates a simulated drive's committed image: `controller`, `subsystem` or `conventional`.
    pub activation: Option<String>,
    /// A simulated drive's volatile write cache size (e.g. "4M"; none by default).
    pub write_cache: Option<String>,
}

/// A USB HID relay board and channel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsbRelaySpec {
    /// USB vendor ID.
    pub vid: u16,
    /// USB product ID.
    pub pid: u16,
    /// Relay channel (1-based).
    pub channel: u8,
    /// USB serial number, to pick one of several identical boards.
    pub serial: Option<String>,
}

/// Power switched by external commands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandPowerSpec {
    /// Command that switches power on.
    pub on: String,
    /// Command that switches power off.
    pub off: String,
    /// Optional single command for a power cycle (default: off, wait, on).
    pub cycle: Option<String>,
}

/// A rig file's `power`: exactly one of the kinds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerSpec {
    /// A USB HID relay board.
    pub usb_relay: Option<UsbRelaySpec>,
    /// External commands.
    pub command: Option<CommandPowerSpec>,
    /// The simulated drive's power (sim rigs only).
    pub sim: Option<bool>,
}

/// A rig file's `console`: a serial port, or the simulated drive's log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSpec {
    /// Serial number.
    pub serial: Option<PathBuf>,
    /// Baud rate (default 115200).
    pub baud: Option<u32>,
    /// The simulated drive's power (sim rigs only).
    pub sim: Option<bool>,
}

/// Where a rig's drive is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveSelector {
    /// A simulated drive: its directory (resolved against the work dir) and how to create it.
    Sim {
        /// Its directory (resolved against the work directory).
        dir: PathBuf,
        /// How to create it on first use.
        config: SimSettings,
    },
    /// A real drive's address (`serial=`, `pci=`, a path).
    Real(String),
}

/// Settings for creating a simulated drive (a serializable subset of [`SimConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimSettings {
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Factory firmware revision.
    pub firmware: String,
    /// Namespace size, bytes.
    pub size: u64,
    /// Firmware slots.
    pub slots: u8,
    /// Slot 1 is read-only.
    pub slot1_readonly: bool,
    /// Logical block size.
    pub block_size: u32,
    /// Boot time after activation or power-on.
    pub boot_ms: u64,
    /// Short self-test duration.
    pub self_test_short_ms: u64,
    /// Extended self-test duration.
    pub self_test_extended_ms: u64,
    /// Which reset activates a committed image.
    pub activation: flash_tools::sim::state::ResetRequirement,
    /// Volatile write cache size (0: none).
    pub write_cache: u64,
}

/// How a rig's power is switched.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerKind {
    /// A USB HID relay board.
    UsbRelay(UsbRelaySpec),
    /// External commands.
    Command(CommandPowerSpec),
    /// The simulated drive.
    Sim,
}

/// Where a rig's console comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleKind {
    /// A serial port (or pty).
    Serial {
        /// The port.
        path: PathBuf,
        /// Baud rate.
        baud: u32,
    },
    /// The simulated drive.
    Sim,
}

/// One validated rig.
#[derive(Clone, Debug, Serialize)]
pub struct Rig {
    /// Unique name.
    pub name: String,
    /// What jobs select it by.
    pub labels: BTreeMap<String, String>,
    /// Its drive.
    pub drive: DriveSelector,
    /// Its power control, if any.
    pub power: Option<PowerKind>,
    /// Its console, if any.
    pub console: Option<ConsoleKind>,
    /// Paths its io steps may use besides its own drive.
    pub io_paths: Vec<PathBuf>,
}

/// A validated rig file.
#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    /// The rig file.
    pub file: PathBuf,
    /// The agent's name.
    pub agent: String,
    /// Which `script` steps it runs.
    pub scripts: ScriptPolicy,
    /// The rigs.
    pub rigs: Vec<Rig>,
}

impl Inventory {
    /// The rig named `name`, or an error listing the rigs there are.
    pub fn rig(&self, name: &str) -> Result<&Rig, RigError> {
        self.rigs
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RigError::NoSuchRig {
                file: self.file.clone(),
                name: name.to_string(),
                known: self
                    .rigs
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl SimSettings {
    /// The simulator's settings for creating this drive (published on `bus`, if given).
    pub fn to_config(&self, bus: Option<PathBuf>) -> SimConfig {
        SimConfig {
            serial: self.serial.clone(),
            model: self.model.clone(),
            firmware_revision: self.firmware.clone(),
            slots: self.slots,
            slot1_readonly: self.slot1_readonly,
            size_bytes: self.size,
            block_size: self.block_size,
            activation: self.activation,
            write_cache_bytes: self.write_cache,
            bus,
            timing: Timing {
                boot_ms: self.boot_ms,
                self_test_short_ms: self.self_test_short_ms,
                self_test_extended_ms: self.self_test_extended_ms,
            },
            ..SimConfig::default()
        }
    }
}

impl Rig {
    /// Makes sure the drive exists (creating a simulated one on first use) and returns how to reach it.
    pub fn locator(&self, file: &Path, sysfs: &Sysfs) -> Result<Locator, RigError> {
        match &self.drive {
            DriveSelector::Sim { dir, config } => {
                if SimController::open(dir).is_err() {
                    SimController::create(dir, &config.to_config(None)).map_err(|e| {
                        RigError::Drive {
                            file: file.to_path_buf(),
                            rig: self.name.clone(),
                            reason: format!(
                                "cannot create the simulated drive in {}: {e}",
                                dir.display()
                            ),
                        }
                    })?;
                    tracing::info!(rig = %self.name, dir = %dir.display(), "created simulated drive");
                }
                Ok(Locator::new(DeviceAddr::Sim(dir.clone()), sysfs.clone()))
            }
            DriveSelector::Real(addr) => {
                let addr: DeviceAddr = addr.parse().expect("validated at load");
                let loc = Locator::new(addr, sysfs.clone());
                loc.current().map_err(|e| RigError::Drive {
                    file: file.to_path_buf(),
                    rig: self.name.clone(),
                    reason: e.to_string(),
                })?;
                Ok(loc)
            }
        }
    }

    /// The simulated drive's directory, if this rig has one.
    pub fn sim_dir(&self) -> Option<&Path> {
        match &self.drive {
            DriveSelector::Sim { dir, .. } => Some(dir),
            DriveSelector::Real(_) => None,
        }
    }

    /// Where the drive's namespace 1 data lives when it is not a kernel block device (a simulated drive's
    /// media file); `None` for real drives.
    pub fn media_path(&self) -> Option<PathBuf> {
        self.sim_dir()
            .map(|d| d.join(flash_tools::sim::NAMESPACE_FILE))
    }

    /// What the rig's drive runs now (Identify and the Firmware Slot log), or `None` if it does not answer
    /// within `timeout`.
    pub fn read_firmware(
        &self,
        file: &Path,
        sysfs: &Sysfs,
        timeout: Duration,
    ) -> Option<nvfarm_model::farm::DriveFirmware> {
        let loc = self.locator(file, sysfs).ok()?;
        let d = flash_tools::device::Drive::open(loc, Some(timeout)).ok()?;
        let id = d.controller().identify_controller().ok()?;
        let log = d.controller().firmware_slot_log().ok()?;
        Some(nvfarm_model::farm::DriveFirmware {
            revision: id.firmware_revision().to_string(),
            active_slot: log.active_slot(),
            slots: (1..=id.firmware_slots().max(1))
                .map(|s| log.revision(s).map(str::to_string))
                .collect(),
        })
    }

    /// Starts capturing the rig's console, if it has one.
    pub fn open_console(&self) -> Result<Option<Console>, String> {
        Ok(match &self.console {
            None => None,
            Some(ConsoleKind::Serial { path, baud }) => {
                Some(Console::serial(path, *baud).map_err(|e| e.to_string())?)
            }
            Some(ConsoleKind::Sim) => {
                let dir = self
                    .sim_dir()
                    .ok_or("a simulated console needs a simulated drive")?;
                let sim = SimController::open(dir).map_err(|e| e.to_string())?;
                Some(Console::follow_file(&sim.console_path()))
            }
        })
    }

    /// Tells a simulated drive about I/O the io engine did on its media directly, so its SMART counters move
    /// as a drive's would. Real drives count their own.
    pub fn account_host_io(&self, r: &crate::io::IoReport, busy: Duration) {
        if let Some(dir) = self.sim_dir() {
            if let Ok(sim) = SimController::open(dir) {
                let _ =
                    sim.record_host_io(r.read.bytes, r.write.bytes, r.read.ios, r.write.ios, busy);
            }
        }
    }
}
