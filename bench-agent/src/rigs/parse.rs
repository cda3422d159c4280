//! Reading a rig file in two stages (TOML, then each rig alone) so every error names the file, the rig and the
//! key.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use flash_tools::device::DeviceAddr;
use flash_tools::sim::state::{ResetRequirement, Timing};
use nvme_spec::units::{parse_duration, parse_size};

use super::{
    AgentSection, ConsoleKind, ConsoleSpec, DriveSelector, DriveSpec, Inventory, PowerKind,
    PowerSpec, Rig, RigError, ScriptPolicy, SimSettings,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRig {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    drive: DriveSpec,
    power: Option<PowerSpec>,
    console: Option<ConsoleSpec>,
    #[serde(default)]
    io_paths: Vec<std::path::PathBuf>,
}

/// `scripts` in `[agent]`: "any" (the default), "none", or `{ dir = "/absolute/dir" }`.
fn script_policy(v: Option<&toml::Value>) -> Result<ScriptPolicy, String> {
    const VALID: &str = "expected \"any\", \"none\" or { dir = \"/absolute/path\" }";
    match v {
        None => Ok(ScriptPolicy::Any),
        Some(toml::Value::String(s)) if s == "any" => Ok(ScriptPolicy::Any),
        Some(toml::Value::String(s)) if s == "none" => Ok(ScriptPolicy::Forbidden),
        Some(toml::Value::Table(t)) => {
            if let Some(k) = t.keys().find(|k| *k != "dir") {
                return Err(format!("unknown key '{k}'; {VALID}"));
            }
            match t.get("dir").and_then(toml::Value::as_str) {
                Some(d) if Path::new(d).is_absolute() => {
                    Ok(ScriptPolicy::Confined(canonical(Path::new(d))))
                }
                Some(d) => Err(format!("dir '{d}' is not an absolute path")),
                None => Err(format!("missing dir; {VALID}")),
            }
        }
        Some(other) => Err(format!("{other} is not valid; {VALID}")),
    }
}

/// The first two rigs that name the same drive (serial, PCI address, device path, simulated drive directory),
/// serial console or power relay channel, with what they share.
fn shared_hardware(rigs: &[Rig]) -> Option<(String, String, String)> {
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for r in rigs {
        let mut keys = vec![drive_identity(&r.drive)];
        if let Some(ConsoleKind::Serial { path, .. }) = &r.console {
            keys.push(format!("serial console {}", canonical(path).display()));
        }
        if let Some(PowerKind::UsbRelay(u)) = &r.power {
            keys.push(format!(
                "USB relay {:04x}:{:04x}{} channel {}",
                u.vid,
                u.pid,
                u.serial
                    .as_ref()
                    .map(|s| format!(" serial {s}"))
                    .unwrap_or_default(),
                u.channel
            ));
        }
        for k in keys {
            if let Some(first) = owner.insert(k.clone(), &r.name) {
                return Some((first.to_string(), r.name.clone(), k));
            }
        }
    }
    None
}

/// One name per physical (or simulated) drive: `/dev/nvme0n1`, `/dev/ng0n1` and `/dev/nvme0` are one controller.
fn drive_identity(d: &DriveSelector) -> String {
    match d {
        DriveSelector::Sim { dir, .. } => {
            format!("simulated drive directory {}", canonical(dir).display())
        }
        DriveSelector::Real(addr) => match addr.parse::<DeviceAddr>() {
            Ok(DeviceAddr::Path(p)) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match controller_of(&name) {
                    Some(n) => format!("drive nvme{n}"),
                    None => format!("drive {}", canonical(&p).display()),
                }
            }
            Ok(DeviceAddr::Serial(sn)) => format!("drive serial {sn}"),
            Ok(DeviceAddr::Pci(pci)) => format!("drive at PCI {}", pci.to_ascii_lowercase()),
            _ => format!("drive {addr}"),
        },
    }
}

/// `nvme3`, `nvme3n1`, `ng3n1` → 3.
fn controller_of(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("nvme")
        .or_else(|| name.strip_prefix("ng"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let ns_ok = tail.is_empty()
        || tail
            .strip_prefix('n')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    (!digits.is_empty() && ns_ok).then(|| digits.parse().ok())?
}

/// The path with `.` and `..` resolved (through the filesystem when it exists).
fn canonical(p: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        let mut out = std::path::PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    })
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

    /// Validates rig file `text`; `file` names it in errors, sim directories resolve against `work_dir`.
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
        let scripts = script_policy(agent.scripts.as_ref())
            .map_err(|reason| invalid("[agent] key 'scripts'".into(), reason))?;
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
        if let Some((a, b, what)) = shared_hardware(&rigs) {
            return Err(invalid(
                format!("rigs '{a}' and '{b}'"),
                format!("both use {what}; each drive, console and power channel belongs to one rig (two rigs on one drive would flash it twice at once)"),
            ));
        }
        Ok(Inventory {
            file: file.to_path_buf(),
            agent: agent.name,
            scripts,
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
                write_cache: match &d.write_cache {
                    None => 0,
                    Some(s) => parse_size(s).map_err(|e| ("drive.write_cache".to_string(), e))?,
                },
                activation: match d.activation.as_deref() {
                    None | Some("controller") => ResetRequirement::Controller,
                    Some("subsystem") => ResetRequirement::Subsystem,
                    Some("conventional") => ResetRequirement::Conventional,
                    Some(other) => {
                        return Err((
                            "drive.activation".into(),
                            format!(
                            "'{other}' is not a reset: give controller, subsystem or conventional"
                        ),
                        ))
                    }
                },
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
                ("activation", d.activation.is_some()),
                ("write_cache", d.write_cache.is_some()),
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
        for p in &raw.io_paths {
            if !p.is_absolute() {
                return Err((
                    "io_paths".into(),
                    format!("'{}' is not an absolute path", p.display()),
                ));
            }
        }
        Ok(Rig {
            name: raw.name,
            labels: raw.labels,
            drive,
            power,
            console,
            io_paths: raw.io_paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rigs::UsbRelaySpec;
    use flash_tools::device::Sysfs;
    use flash_tools::sim::SimController;

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
    fn one_drive_named_by_two_rigs_is_refused_naming_both() {
        let two = |a: &str, b: &str| {
            format!(
                "[agent]\nname = \"x\"\n[[rig]]\nname = \"r1\"\ndrive = {a}\n[[rig]]\nname = \"r2\"\ndrive = {b}\n"
            )
        };
        for (a, b, what) in [
            (
                "{ serial = \"S1\" }",
                "{ serial = \"S1\" }",
                "drive serial S1",
            ),
            (
                "{ pci = \"0000:3B:00.0\" }",
                "{ pci = \"0000:3b:00.0\" }",
                "drive at PCI 0000:3b:00.0",
            ),
            (
                "{ path = \"/dev/nvme3\" }",
                "{ path = \"/dev/ng3n1\" }",
                "drive nvme3",
            ),
            (
                "{ sim = \"sim/a\" }",
                "{ sim = \"sim/../sim/a\" }",
                "simulated drive directory /work/sim/a",
            ),
        ] {
            let e = parse(&two(a, b)).unwrap_err();
            assert!(
                e.contains("rigs 'r1' and 'r2'") && e.contains(&format!("both use {what}")),
                "{e}"
            );
        }
        let shared_console = "[agent]\nname = \"x\"\n[[rig]]\nname = \"r1\"\ndrive = { serial = \"A\" }\nconsole = { serial = \"/dev/ttyUSB0\" }\n[[rig]]\nname = \"r2\"\ndrive = { serial = \"B\" }\nconsole = { serial = \"/dev/ttyUSB0\" }\n";
        assert!(parse(shared_console)
            .unwrap_err()
            .contains("both use serial console /dev/ttyUSB0"));
        // Different drives are fine.
        assert!(parse(&two(
            "{ path = \"/dev/nvme3\" }",
            "{ path = \"/dev/nvme31\" }"
        ))
        .is_ok());
    }

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
