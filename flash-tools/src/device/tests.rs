//! Finding a drive again: waits that start while the drive is off the bus.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::sim::state::Timing;
use crate::sim::{SimConfig, SimController};

/// A simulated drive published on a bus under `t`, with a `bus/pci/rescan` attribute; returns the bus and the
/// drive's `class/nvme` entry.
fn drive_on_a_bus(t: &Path) -> (PathBuf, PathBuf) {
    let bus = t.join("bus");
    SimController::create(
        &t.join("drive"),
        &SimConfig {
            bus: Some(bus.clone()),
            timing: Timing {
                boot_ms: 10,
                ..Timing::default()
            },
            ..SimConfig::default()
        },
    )
    .unwrap();
    fs::create_dir_all(bus.join("bus/pci")).unwrap();
    fs::write(bus.join("bus/pci/rescan"), "").unwrap();
    let entry = bus.join("class/nvme/nvme0");
    assert!(entry.is_dir());
    (bus, entry)
}

/// Waits for the drive by its serial on `bus`, with 1 s commands.
fn wait(bus: &Path, within: Duration, stop: &dyn Fn() -> bool) -> Result<Drive, DeviceError> {
    Drive::wait_found(
        Locator::new(DeviceAddr::Serial("NVFSIM0001".into()), Sysfs::new(bus)),
        Some(Duration::from_secs(1)),
        within,
        stop,
    )
}

#[test]
fn a_wait_that_starts_with_the_drive_off_the_bus_rescans_until_it_is_back() {
    let t = tempfile::tempdir().unwrap();
    let (bus, entry) = drive_on_a_bus(t.path());
    // The drive left the bus (as the kernel's remove does for a shutdown notification); like a PCI device, it
    // comes back only when the host rescans.
    let away = t.path().join("away");
    fs::rename(&entry, &away).unwrap();
    let rescan = bus.join("bus/pci/rescan");
    let kernel = {
        let (rescan, entry) = (rescan.clone(), entry.clone());
        thread::spawn(move || {
            let give_up = Instant::now() + Duration::from_secs(20);
            while Instant::now() < give_up {
                if fs::read_to_string(&rescan).unwrap_or_default() == "1" {
                    fs::rename(&away, &entry).unwrap();
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    let d = wait(&bus, Duration::from_secs(20), &|| false).expect("found again after the rescan");
    assert!(kernel.join().unwrap(), "the wait asked for a rescan");
    let id = d.controller().identify_controller().unwrap();
    assert_eq!(id.serial().trim(), "NVFSIM0001");
}

#[test]
fn a_drive_that_stays_off_the_bus_is_reported_not_back_with_what_was_seen_and_a_stop_ends_the_wait()
{
    let t = tempfile::tempdir().unwrap();
    let (bus, entry) = drive_on_a_bus(t.path());
    fs::remove_dir_all(&entry).unwrap();
    let e = wait(&bus, Duration::from_millis(300), &|| false).unwrap_err();
    assert!(matches!(e, DeviceError::NotBack { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("serial=NVFSIM0001"), "{msg}");
    assert!(msg.contains("no controllers present"), "{msg}");
    assert_eq!(fs::read_to_string(bus.join("bus/pci/rescan")).unwrap(), "1");
    let e = wait(&bus, Duration::from_secs(60), &|| true).unwrap_err();
    assert!(matches!(e, DeviceError::Stopped { .. }), "{e}");
}
