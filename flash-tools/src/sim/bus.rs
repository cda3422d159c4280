//! A sysfs-shaped directory that simulated drives enumerate into, so drive lookup by serial number or PCI address
//! runs the same code for simulated and real drives.
//!
//! A bus directory mirrors the parts of `/sys` that [`crate::device`] reads:
//! `class/nvme/nvmeN/{serial,model,firmware_rev,address,transport,state}`, plus `nvfarm_sim_state` holding the
//! drive's state directory (where a real tree would lead to `/dev/nvmeN`). Instance numbers only grow, as a
//! kernel hands out a new one when a drive re-enumerates while its old node is still held, so a drive that drops
//! off the bus and returns shows up under a new name. Like real sysfs, `firmware_rev` is written at enumeration
//! and goes stale after an activation without re-enumeration: verification must use passthrough, not sysfs.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::state::SimState;
use super::{SimController, SimError};

/// Directory inside a bus that marks it as one and holds its registry.
pub const REGISTRY: &str = "nvfarm-sim";
/// File in a `class/nvme/nvmeN` entry naming the simulated drive's state directory.
pub const STATE_LINK: &str = "nvfarm_sim_state";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |source| SimError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Is `root` a simulated bus (rather than a real or fake sysfs tree)?
pub fn is_bus(root: &Path) -> bool {
    root.join(REGISTRY).is_dir()
}

/// Creates the bus skeleton if needed.
pub fn init(bus: &Path) -> Result<(), SimError> {
    for d in [bus.join("class/nvme"), bus.join(REGISTRY).join("drives")] {
        fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    Ok(())
}

/// Takes the next controller instance number on this bus.
pub fn allocate_instance(bus: &Path) -> Result<u32, SimError> {
    init(bus)?;
    let path = bus.join(REGISTRY).join("next_instance");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| SimError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(&path))?;
    let n: u32 = text.trim().parse().unwrap_or(0);
    file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
    file.set_len(0).map_err(io_err(&path))?;
    write!(file, "{}", n + 1).map_err(io_err(&path))?;
    Ok(n)
}

fn entry(bus: &Path, instance: u32) -> PathBuf {
    bus.join("class/nvme").join(format!("nvme{instance}"))
}

fn registry_file(bus: &Path, serial: &str) -> PathBuf {
    let safe: String = serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    bus.join(REGISTRY).join("drives").join(safe)
}

/// Writes the drive's `class/nvme/nvmeN` entry and registers it.
pub fn publish(bus: &Path, st: &SimState, state_dir: &Path) -> Result<(), SimError> {
    init(bus)?;
    let dir = entry(bus, st.instance);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let files = [
        ("serial", format!("{:<20}\n", st.serial)),
        ("model", format!("{:<40}\n", st.model)),
        (
            "firmware_rev",
            format!("{:<8}\n", st.firmware.running_revision),
        ),
        ("address", format!("{}\n", st.pci_address)),
        ("transport", "pcie\n".to_string()),
        ("state", "live\n".to_string()),
        (STATE_LINK, format!("{}\n", state_dir.display())),
    ];
    for (name, content) in files {
        let p = dir.join(name);
        fs::write(&p, content).map_err(io_err(&p))?;
    }
    let reg = registry_file(bus, &st.serial);
    fs::write(&reg, format!("{}\n", state_dir.display())).map_err(io_err(&reg))?;
    Ok(())
}

/// Removes the drive's `class/nvme/nvmeN` entry (it dropped off the bus); it stays registered.
pub fn unpublish(bus: &Path, instance: u32) -> Result<(), SimError> {
    let dir = entry(bus, instance);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SimError::Io { path: dir, source }),
    }
}

/// Lets every registered drive apply what happened while nobody looked (a drive whose off-bus time ran out
/// re-enumerates), the way hotplug would have, before a lookup scans `class/nvme`.
pub fn settle(bus: &Path) -> Result<(), SimError> {
    let reg = bus.join(REGISTRY).join("drives");
    let entries = match fs::read_dir(&reg) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SimError::Io { path: reg, source }),
    };
    for e in entries.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let dir = PathBuf::from(text.trim());
        if let Ok(sim) = SimController::open(&dir) {
            sim.tick()?;
        }
    }
    Ok(())
}
