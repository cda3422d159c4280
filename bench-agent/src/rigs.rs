//! Rig inventory: `rigs/<machine>.toml` says which drives, power relays and consoles this agent owns.
//!
//! ```toml
//! [agent]
//! name = "bench-07"
//!
//! [[rig]]
//! name = "rig-07a"
//! labels = { model = "X1-1T", site = "lab-a" }
//! drive = { serial = "S6ABC123" }        # or { pci = "0000:3b:00.0" }, { path = "/dev/nvme0" }, or a simulated drive:
//! # drive = { sim = "sim/rig-07a", serial = "SIM7A", model = "NVFARM SIM X1", firmware = "1.0.0", size = "1G" }
//! power = { usb_relay = { vid = 0x16c0, pid = 0x05df, channel = 1 } }   # or { command = { on = "...", off = "..." } }, { sim = true }
//! console = { serial = "/dev/ttyUSB0", baud = 115200 }                   # or { sim = true }
//! ```
//!
//! Every error names the file, the rig and the key. A simulated drive's directory is relative to the agent's
//! work directory and is created, from the rig's settings, the first time the rig is used.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use flash_tools::device::{DeviceAddr, Locator, Sysfs};
use flash_tools::sim::state::Timing;
use flash_tools::sim::{SimConfig, SimController};

use crate::console::Console;
use nvme_spec::units::{parse_duration, parse_size};

#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("cannot read rig file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {context}: {reason}")]
    Invalid {
        file: PathBuf,
        context: String,
        reason: String,
    },
    #[error("{file}: no rig named '{name}' (rigs: {known})")]
    NoSuchRig {
        file: PathBuf,
        name: String,
        known: String,
    },
    #[error("{file}: rig '{rig}': drive: {reason}")]
    Drive {
        file: PathBuf,
        rig: String,
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub name: String,
}

/// A simulated drive's settings in a rig file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriveSpec {
    pub sim: Option<PathBuf>,
    pub serial: Option<String>,
    pub pci: Option<String>,
    pub path: Option<PathBuf>,
    // Settings for a simulated drive created on first use:
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub size: Option<String>,
    pub slots: Option<u8>,
    pub slot1_readonly: Option<bool>,
    pub block_size: Option<u32>,
    pub boot_time: Option<String>,
    pub self_test_short: Option<String>,
    pub self_test_extended: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsbRelaySpec {
    pub vid: u16,
    pub pid: u16,
    pub channel: u8,
    /// USB serial number, to pick one of several identical boards.
    pub serial: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandPowerSpec {
    pub on: String,
    pub off: String,
    /// Optional single command for a power cycle (default: off, wait, on).
    pub cycle: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerSpec {
    pub usb_relay: Option<UsbRelaySpec>,
    pub command: Option<CommandPowerSpec>,
    pub sim: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSpec {
    pub serial: Option<PathBuf>,
    pub baud: Option<u32>,
    pub sim: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRig {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    drive: DriveSpec,
    power: Option<PowerSpec>,
    console: Option<ConsoleSpec>,
}

/// Where a rig's drive is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveSelector {
    /// A simulated drive: its directory (resolved against the work dir) and how to create it.
    Sim {
        dir: PathBuf,
        config: SimSettings,
    },
    Real(String),
}

/// Settings for creating a simulated drive (a serializable subset of [`SimConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimSettings {
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub size: u64,
    pub slots: u8,
    pub slot1_readonly: bool,
    pub block_size: u32,
    pub boot_ms: u64,
    pub self_test_short_ms: u64,
    pub self_test_extended_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerKind {
    UsbRelay(UsbRelaySpec),
    Command(CommandPowerSpec),
    Sim,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleKind {
    Serial { path: PathBuf, baud: u32 },
    Sim,
}

/// One validated rig.
#[derive(Clone, Debug, Serialize)]
pub struct Rig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub drive: DriveSelector,
    pub power: Option<PowerKind>,
    pub console: Option<ConsoleKind>,
}

/// A validated rig file.
#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    pub file: PathBuf,
    pub agent: String,
    pub rigs: Vec<Rig>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Inventory {
    /// Reads and validates a rig file; sim directories are resolved against `work_dir`.
    pub fn load(file: &Path, work_dir: &Path) -> Result<Self, RigError> {
        let text = std::fs::read_to_string(file).map_err(|source| RigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file, work_dir)
    }

    pub fn parse(text: &str, file: &Path, work_dir: &Path) -> Result<Self, RigError> {
        let invalid = |context: String, reason: String| RigError::Invalid {
            file: file.to_path_buf(),
            context,
            reason,
        };
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| invalid("TOML".into(), e.to_string()))?;
        for key in doc.keys() {
            if key != "agent" && key != "rig" {
                return Err(invalid(
                    format!("key '{key}'"),
                    "unknown top-level key; expected [agent] and [[rig]]".into(),
                ));
            }
        }
        let agent: AgentSection = doc
            .get("agent")
            .ok_or_else(|| {
                invalid(
                    "[agent]".into(),
                    "missing; add [agent] with name = \"...\"".into(),
                )
            })?
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| invalid("[agent]".into(), e.message().to_string()))?;
        if !valid_name(&agent.name) {
            return Err(invalid(
                "[agent] key 'name'".into(),
                "must be 1-64 characters of letters, digits, - _ .".into(),
            ));
        }
        let raw_rigs = match doc.get("rig") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a.clone(),
            _ => {
                return Err(invalid(
                    "[[rig]]".into(),
                    "no rigs; add at least one [[rig]] table".into(),
                ))
            }
        };
        let mut seen = HashSet::new();
        let mut rigs = vec![];
        for (i, value) in raw_rigs.into_iter().enumerate() {
            let label = value
                .get("name")
                .and_then(|v| v.as_str())
                .map(|n| format!("rig '{n}'"))
                .unwrap_or_else(|| format!("rig #{}", i + 1));
            let raw: RawRig = value
                .try_into()
                .map_err(|e: toml::de::Error| invalid(label.clone(), e.message().to_string()))?;
            if !valid_name(&raw.name) {
                return Err(invalid(
                    format!("{label} key 'name'"),
                    "must be 1-64 characters of letters, digits, - _ .".into(),
                ));
            }
            if !seen.insert(raw.name.clone()) {
                return Err(invalid(
                    label,
                    "duplicate rig name; every rig in a file needs its own name".into(),
                ));
            }
            rigs.push(
                Self::validate_rig(raw, &label, work_dir)
                    .map_err(|(key, reason)| invalid(format!("{label} key '{key}'"), reason))?,
            );
        }
        Ok(Inventory {
            file: file.to_path_buf(),
            agent: agent.name,
            rigs,
        })
    }

    fn validate_rig(raw: RawRig, _label: &str, work_dir: &Path) -> Result<Rig, (String, String)> {
        let d = &raw.drive;
        let selectors = [
            d.sim.is_some(),
            d.pci.is_some(),
            d.path.is_some(),
            d.serial.is_some() && d.sim.is_none(),
        ];
        if selectors.iter().filter(|&&b| b).count() != 1 {
            return Err((
                "drive".into(),
                "give exactly one of sim, serial, pci or path".into(),
            ));
        }
        let drive = if let Some(dir) = &d.sim {
            let dur =
                |key: &str, v: &Option<String>, default: u64| -> Result<u64, (String, String)> {
                    match v {
                        None => Ok(default),
                        Some(s) => parse_duration(s)
                            .map(|d| d.as_millis() as u64)
                            .map_err(|e| (format!("drive.{key}"), e)),
                    }
                };
            let defaults = Timing::default();
            let settings = SimSettings {
                serial: d
                    .serial
                    .clone()
                    .unwrap_or_else(|| format!("SIM-{}", raw.name))
                    .chars()
                    .take(20)
                    .collect(),
                model: d.model.clone().unwrap_or_else(|| "NVFARM SIM X1".into()),
                firmware: d.firmware.clone().unwrap_or_else(|| "1.0.0".into()),
                size: match &d.size {
                    None => 1 << 30,
                    Some(s) => parse_size(s).map_err(|e| ("drive.size".to_string(), e))?,
                },
                slots: d.slots.unwrap_or(3),
                slot1_readonly: d.slot1_readonly.unwrap_or(false),
                block_size: d.block_size.unwrap_or(4096),
                boot_ms: dur("boot_time", &d.boot_time, defaults.boot_ms)?,
                self_test_short_ms: dur(
                    "self_test_short",
                    &d.self_test_short,
                    defaults.self_test_short_ms,
                )?,
                self_test_extended_ms: dur(
                    "self_test_extended",
                    &d.self_test_extended,
                    defaults.self_test_extended_ms,
                )?,
            };
            // Let the simulator's own checks speak for impossible values, now rather than at first use.
            settings.to_config(None).validate().map_err(|e| match e {
                flash_tools::sim::SimError::Config { field, reason } => {
                    (format!("drive.{field}"), reason)
                }
                other => ("drive".to_string(), other.to_string()),
            })?;
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                work_dir.join(dir)
            };
            DriveSelector::Sim {
                dir,
                config: settings,
            }
        } else {
            for (key, set) in [
                ("model", d.model.is_some()),
                ("firmware", d.firmware.is_some()),
                ("size", d.size.is_some()),
                ("slots", d.slots.is_some()),
                ("slot1_readonly", d.slot1_readonly.is_some()),
                ("block_size", d.block_size.is_some()),
                ("boot_time", d.boot_time.is_some()),
            ] {
                if set {
                    return Err((
                        format!("drive.{key}"),
                        "only a simulated drive (drive.sim) takes this setting".into(),
                    ));
                }
            }
            let addr = if let Some(s) = &d.serial {
                format!("serial={s}")
            } else if let Some(p) = &d.pci {
                format!("pci={p}")
            } else {
                d.path.as_ref().expect("one selector").display().to_string()
            };
            let parsed: DeviceAddr = addr.parse().map_err(|e: String| ("drive".to_string(), e))?;
            DriveSelector::Real(parsed.to_string())
        };
        let power = match raw.power {
            None => None,
            Some(p) => {
                let n = [p.usb_relay.is_some(), p.command.is_some(), p.sim.is_some()]
                    .iter()
                    .filter(|&&b| b)
                    .count();
                if n != 1 {
                    return Err((
                        "power".into(),
                        "give exactly one of usb_relay, command or sim".into(),
                    ));
                }
                if let Some(u) = p.usb_relay {
                    if !(1..=8).contains(&u.channel) {
                        return Err((
                            "power.usb_relay.channel".into(),
                            format!("{} is not a relay channel (1-8)", u.channel),
                        ));
                    }
                    Some(PowerKind::UsbRelay(u))
                } else if let Some(c) = p.command {
                    if c.on.trim().is_empty() || c.off.trim().is_empty() {
                        return Err((
                            "power.command".into(),
                            "on and off must be non-empty commands".into(),
                        ));
                    }
                    Some(PowerKind::Command(c))
                } else if p.sim == Some(true) {
                    if !matches!(drive, DriveSelector::Sim { .. }) {
                        return Err((
                            "power.sim".into(),
                            "only a simulated drive has simulated power".into(),
                        ));
                    }
                    Some(PowerKind::Sim)
                } else {
                    None
                }
            }
        };
        let console = match raw.console {
            None => None,
            Some(c) => match (c.serial, c.sim) {
                (Some(path), None) => {
                    let baud = c.baud.unwrap_or(115_200);
                    if !(50..=4_000_000).contains(&baud) {
                        return Err((
                            "console.baud".into(),
                            format!("{baud} is not a serial baud rate"),
                        ));
                    }
                    Some(ConsoleKind::Serial { path, baud })
                }
                (None, Some(true)) => {
                    if !matches!(drive, DriveSelector::Sim { .. }) {
                        return Err((
                            "console.sim".into(),
                            "only a simulated drive has a simulated console".into(),
                        ));
                    }
                    Some(ConsoleKind::Sim)
                }
                (None, Some(false)) => None,
                _ => {
                    return Err((
                        "console".into(),
                        "give either serial (with optional baud) or sim = true".into(),
                    ))
                }
            },
        };
        Ok(Rig {
            name: raw.name,
            labels: raw.labels,
            drive,
            power,
            console,
        })
    }

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
    pub fn to_config(&self, bus: Option<PathBuf>) -> SimConfig {
        SimConfig {
            serial: self.serial.clone(),
            model: self.model.clone(),
            firmware_revision: self.firmware.clone(),
            slots: self.slots,
            slot1_readonly: self.slot1_readonly,
            size_bytes: self.size,
            block_size: self.block_size,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, String> {
        Inventory::parse(text, Path::new("rigs/test.toml"), Path::new("/work"))
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[agent]
name = "bench-07"

[[rig]]
name = "a"
labels = { model = "X1", site = "lab" }
drive = { sim = "sim/a", serial = "SIMA", firmware = "1.2.0", size = "256M", self_test_short = "500ms" }
power = { sim = true }
console = { sim = true }

[[rig]]
name = "b"
drive = { serial = "S6ABC123" }
power = { usb_relay = { vid = 0x16c0, pid = 0x05df, channel = 2 } }
console = { serial = "/dev/ttyUSB0" }
"#;

    #[test]
    fn parses_a_good_file() {
        let inv = parse(GOOD).unwrap();
        assert_eq!(inv.agent, "bench-07");
        assert_eq!(inv.rigs.len(), 2);
        let a = inv.rig("a").unwrap();
        match &a.drive {
            DriveSelector::Sim { dir, config } => {
                assert_eq!(dir, Path::new("/work/sim/a"));
                assert_eq!(config.firmware, "1.2.0");
                assert_eq!(config.size, 256 << 20);
                assert_eq!(config.self_test_short_ms, 500);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.labels.get("model").map(String::as_str), Some("X1"));
        let b = inv.rig("b").unwrap();
        assert_eq!(b.drive, DriveSelector::Real("serial=S6ABC123".into()));
        assert_eq!(
            b.console,
            Some(ConsoleKind::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 115_200
            })
        );
        assert!(matches!(
            b.power,
            Some(PowerKind::UsbRelay(UsbRelaySpec { channel: 2, .. }))
        ));
        let e = inv.rig("zz").unwrap_err().to_string();
        assert!(e.contains("no rig named 'zz'") && e.contains("a, b"), "{e}");
    }

    #[test]
    fn errors_name_file_rig_and_key() {
        let cases = [
            (
                GOOD.replace("power = { sim = true }", "powr = { sim = true }"),
                "rig 'a'",
                "powr",
            ),
            (
                GOOD.replace("channel = 2", "channel = 9"),
                "rig 'b' key 'power.usb_relay.channel'",
                "9",
            ),
            (
                GOOD.replace("name = \"b\"", "name = \"a\""),
                "rig 'a'",
                "duplicate",
            ),
            (
                GOOD.replace("size = \"256M\"", "size = \"lots\""),
                "rig 'a' key 'drive.size'",
                "lots",
            ),
            (
                GOOD.replace(
                    "drive = { serial = \"S6ABC123\" }",
                    "drive = { serial = \"S6\", pci = \"00:01.0\" }",
                ),
                "rig 'b' key 'drive'",
                "exactly one",
            ),
            (
                GOOD.replace(
                    "drive = { serial = \"S6ABC123\" }",
                    "drive = { serial = \"S6\", firmware = \"2\" }",
                ),
                "rig 'b' key 'drive.firmware'",
                "simulated",
            ),
            (
                GOOD.replace("firmware = \"1.2.0\"", "slots = 12"),
                "rig 'a' key 'drive.slots'",
                "1 to 7",
            ),
            (
                GOOD.replace(
                    "console = { serial = \"/dev/ttyUSB0\" }",
                    "console = { sim = true }",
                ),
                "rig 'b' key 'console.sim'",
                "simulated",
            ),
            (GOOD.replace("[agent]", "[agnt]"), "key 'agnt'", "unknown"),
        ];
        for (text, context, detail) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("rigs/test.toml: "), "{e}");
            assert!(e.contains(context), "expected '{context}' in: {e}");
            assert!(e.contains(detail), "expected '{detail}' in: {e}");
        }
    }

    #[test]
    fn a_missing_real_drive_is_named() {
        let inv = parse(GOOD).unwrap();
        let e = inv
            .rig("b")
            .unwrap()
            .locator(&inv.file, &Sysfs::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rig 'b'") && e.contains("serial=S6ABC123"),
            "{e}"
        );
    }

    #[test]
    fn a_simulated_drive_is_created_on_first_use() {
        let t = tempfile::tempdir().unwrap();
        let inv = Inventory::parse(GOOD, Path::new("rigs/test.toml"), t.path()).unwrap();
        let rig = inv.rig("a").unwrap();
        let loc = rig.locator(&inv.file, &Sysfs::default()).unwrap();
        let st = SimController::open(&t.path().join("sim/a"))
            .unwrap()
            .state()
            .unwrap();
        assert_eq!(st.serial, "SIMA");
        assert_eq!(st.firmware.running_revision, "1.2.0");
        assert_eq!(loc.addr, DeviceAddr::Sim(t.path().join("sim/a")));
        // A second use keeps the existing drive.
        rig.locator(&inv.file, &Sysfs::default()).unwrap();
    }
}
