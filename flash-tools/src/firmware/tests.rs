//! The update flow against simulated drives where the outcome depends on what the rig can do.

use std::time::Duration;

use super::*;
use crate::device::{DeviceAddr, Drive, Locator, Sysfs};
use crate::sim::image::{self, ImageSpec};
use crate::sim::state::{ResetRequirement, Timing};
use crate::sim::{SimConfig, SimController};

fn sim(dir: &std::path::Path, activation: ResetRequirement) -> (SimController, Drive) {
    let sim = SimController::create(
        dir,
        &SimConfig {
            activation,
            timing: Timing {
                boot_ms: 20,
                ..Timing::default()
            },
            ..SimConfig::default()
        },
    )
    .unwrap();
    let drive = Drive::open(
        Locator::new(DeviceAddr::Sim(dir.to_path_buf()), Sysfs::new("/sys")),
        Some(Duration::from_secs(5)),
    )
    .unwrap();
    (sim, drive)
}

fn opts() -> UpdateOptions {
    UpdateOptions {
        come_back_timeout: Duration::from_secs(10),
        ..UpdateOptions::default()
    }
}

#[test]
fn without_power_control_a_drive_needing_a_power_cycle_is_left_committed_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let (sim, mut drive) = sim(&t.path().join("d"), ResetRequirement::Conventional);
    let img = image::build(&ImageSpec::new("2.0.0")).unwrap();
    let r = update(&mut drive, &img, &opts(), &mut NoProgress);
    assert_eq!(r.outcome, UpdateResult::Failed);
    let f = r.failure.expect("a failure");
    assert_eq!(f.kind, FailureKind::ResetUnavailable);
    assert_eq!(f.step, UpdateStep::Activate);
    assert!(
        f.message
            .contains("needs a conventional reset (power cycle)"),
        "{}",
        f.message
    );
    assert_eq!(
        f.drive_state,
        "new image committed to slot 2, activates at a conventional reset (power cycle); still running 1.0.0 from slot 1"
    );
    // That is the drive's real state: old image running, new one pending, no reset tried.
    let st = sim.state().unwrap();
    assert_eq!(st.firmware.running_revision, "1.0.0");
    assert_eq!(st.firmware.next_slot, Some(2));
    assert_eq!(st.counters.power_cycles, 0);
}

#[test]
fn a_power_cycle_activates_it_and_is_called_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let (sim, mut drive) = sim(&dir, ResetRequirement::Conventional);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    let power = PowerCycle {
        describe: "test relay".into(),
        run: std::sync::Arc::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            SimController::open(&dir)
                .and_then(|s| s.power_cycle())
                .map_err(|e| e.to_string())
        }),
    };
    let img = image::build(&ImageSpec::new("2.0.0")).unwrap();
    let r = update(
        &mut drive,
        &img,
        &UpdateOptions {
            power_cycle: Some(power),
            ..opts()
        },
        &mut NoProgress,
    );
    assert_eq!(r.outcome, UpdateResult::Updated, "{r}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let c = sim.state().unwrap().counters;
    assert_eq!((c.power_cycles, c.unsafe_shutdowns), (1, 0));
}
