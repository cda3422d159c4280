//! Finding NVMe controllers the way the kernel lists them: `/sys/class/nvme/nvmeN/{serial,model,address,...}`.
//!
//! The root is a parameter so tests can point at a fake tree, and a simulated bus (see [`crate::sim::bus`]) is
//! such a tree whose entries lead to simulated drives instead of `/dev` nodes.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sim::bus;

/// One controller as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enumerated {
    /// `nvme0`.
    pub name: String,
    /// Serial number (trimmed).
    pub serial: String,
    /// Model number (trimmed).
    pub model: String,
    /// As sysfs caches it at enumeration: stale after an activation without re-enumeration.
    pub firmware_rev: String,
    /// PCI address (empty for fabrics).
    pub address: String,
    /// `pcie`, `tcp`, ...
    pub transport: String,
    /// For a simulated bus: the drive's state directory.
    pub sim_state: Option<PathBuf>,
}

/// A sysfs tree and the device directory its nodes live in.
#[derive(Clone, Debug)]
pub struct Sysfs {
    /// The sysfs root (`/sys`, or a test or simulated tree).
    pub root: PathBuf,
    /// Where device nodes live (`/dev`).
    pub dev: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

fn read_trimmed(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Sysfs {
    /// The tree under `root` with nodes in `/dev`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs {
            root: root.into(),
            dev: PathBuf::from("/dev"),
        }
    }

    /// Every controller under `class/nvme`, sorted by instance number.
    pub fn controllers(&self) -> std::io::Result<Vec<Enumerated>> {
        if bus::is_bus(&self.root) {
            bus::settle(&self.root).map_err(std::io::Error::other)?;
        }
        let class = self.root.join("class/nvme");
        let mut out = vec![];
        let entries = match fs::read_dir(&class) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(num) = name.strip_prefix("nvme") else {
                continue;
            };
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let d = e.path();
            let sim = read_trimmed(&d.join(bus::STATE_LINK));
            out.push(Enumerated {
                name,
                serial: read_trimmed(&d.join("serial")),
                model: read_trimmed(&d.join("model")),
                firmware_rev: read_trimmed(&d.join("firmware_rev")),
                address: read_trimmed(&d.join("address")),
                transport: read_trimmed(&d.join("transport")),
                sim_state: (!sim.is_empty()).then(|| PathBuf::from(sim)),
            });
        }
        out.sort_by_key(|c| c.name[4..].parse::<u32>().unwrap_or(u32::MAX));
        Ok(out)
    }

    /// The device node for a controller name.
    pub fn node(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_controller(root: &Path, name: &str, serial: &str, addr: &str) {
        let d = root.join("class/nvme").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("serial"), format!("{serial:<20}\n")).unwrap();
        fs::write(d.join("model"), "QEMU NVMe Ctrl\n").unwrap();
        fs::write(d.join("firmware_rev"), "7.2     \n").unwrap();
        fs::write(d.join("address"), format!("{addr}\n")).unwrap();
        fs::write(d.join("transport"), "pcie\n").unwrap();
    }

    #[test]
    fn lists_controllers_in_instance_order_and_trims_padding() {
        let t = tempfile::tempdir().unwrap();
        fake_controller(t.path(), "nvme10", "B", "0000:00:05.0");
        fake_controller(t.path(), "nvme2", "A", "0000:00:04.0");
        fs::create_dir_all(t.path().join("class/nvme/nvme-subsys0")).unwrap();
        let list = Sysfs::new(t.path()).controllers().unwrap();
        let names: Vec<_> = list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["nvme2", "nvme10"]);
        assert_eq!(list[0].serial, "A");
        assert_eq!(list[0].firmware_rev, "7.2");
        assert_eq!(list[1].address, "0000:00:05.0");
        assert_eq!(list[0].sim_state, None);
    }

    #[test]
    fn a_missing_tree_has_no_controllers() {
        assert!(Sysfs::new("/nonexistent-sysfs")
            .controllers()
            .unwrap()
            .is_empty());
    }
}
