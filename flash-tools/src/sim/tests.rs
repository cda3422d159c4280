//! One test file for the simulated controller's command behaviour: many short scenarios over one drive fixture.
//!
//! Command-level tests of the simulated controller through the same [`Controller`] API real drives use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::faults::{Fault, FaultKind};
use super::image::{self, Behaviour, ImageSpec};
use super::*;
use crate::controller::{CommitOutcome, Controller, NvmeError};
use nvme_spec::command::self_test_code;
use nvme_spec::features::{fid, select};
use nvme_spec::log_page::self_test_result;
use nvme_spec::status::code;
use nvme_spec::{CommitAction, NSID_ALL};

fn fast() -> Timing {
    Timing {
        boot_ms: 20,
        self_test_short_ms: 300,
        self_test_extended_ms: 600,
    }
}

fn drive(cfg: SimConfig) -> (tempfile::TempDir, SimController, Controller) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("drive");
    let sim = SimController::create(
        &dir,
        &SimConfig {
            timing: fast(),
            ..cfg
        },
    )
    .unwrap();
    let ctrl = Controller::new(Arc::new(sim.clone())).with_timeout(Some(Duration::from_secs(5)));
    (t, sim, ctrl)
}

fn wait_up(ctrl: &Controller) {
    let start = Instant::now();
    while let Err(e) = ctrl.identify_controller() {
        assert!(e.is_absent(), "unexpected error waiting for the drive: {e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "drive never came back: {e}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn download(ctrl: &Controller, img: &[u8]) {
    for (i, chunk) in img.chunks(64 * 1024).enumerate() {
        ctrl.firmware_download(i as u64 * 64 * 1024, chunk).unwrap();
    }
}

fn status_of(r: Result<impl std::fmt::Debug, NvmeError>) -> u16 {
    r.unwrap_err().status().expect("an NVMe status").code()
}

fn img(rev: &str) -> Vec<u8> {
    image::build(&ImageSpec::new(rev)).unwrap()
}

#[test]
fn identify_reports_configuration() {
    let (_t, _sim, ctrl) = drive(SimConfig {
        slots: 4,
        slot1_readonly: true,
        fwug: 2,
        mdts: 6,
        ..Default::default()
    });
    let id = ctrl.identify_controller().unwrap();
    assert_eq!(id.serial(), "NVFSIM0001");
    assert_eq!(id.model(), "NVFARM SIM X1");
    assert_eq!(id.firmware_revision(), "1.0.0");
    assert_eq!(id.firmware_slots(), 4);
    assert!(id.slot1_read_only());
    assert!(id.activation_without_reset());
    assert_eq!(id.firmware_update_granularity(), Some(8192));
    assert_eq!(id.max_transfer_bytes(), Some(256 * 1024));
    assert!(id.supports_firmware_commands());
    let ns = ctrl.identify_namespace(1).unwrap();
    assert_eq!(ns.block_size(), 4096);
    assert_eq!(ns.size_bytes(), 1 << 30);
    assert_eq!(ctrl.active_namespaces().unwrap(), vec![1]);
    assert_eq!(
        status_of(ctrl.identify_namespace(7)),
        code::INVALID_NAMESPACE
    );
}

#[test]
fn commit_action_0_stores_without_activating() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    download(&ctrl, &img("2.0"));
    assert_eq!(
        ctrl.firmware_commit(2, CommitAction::Replace).unwrap(),
        CommitOutcome::Committed
    );
    let log = ctrl.firmware_slot_log().unwrap();
    assert_eq!(log.revision(2), Some("2.0"));
    assert_eq!(log.active_slot(), 1);
    assert_eq!(log.next_active_slot(), None);
    ctrl.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0",
        "action 0 never activates"
    );
}

#[test]
fn commit_action_1_activates_at_reset() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    download(&ctrl, &img("2.0"));
    ctrl.firmware_commit(3, CommitAction::ReplaceActivateOnReset)
        .unwrap();
    let log = ctrl.firmware_slot_log().unwrap();
    assert_eq!(log.next_active_slot(), Some(3));
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
    ctrl.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "2.0"
    );
    let log = ctrl.firmware_slot_log().unwrap();
    assert_eq!((log.active_slot(), log.next_active_slot()), (3, None));
}

#[test]
fn commit_action_2_activates_an_existing_slot_at_reset() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    download(&ctrl, &img("2.0"));
    ctrl.firmware_commit(2, CommitAction::ReplaceActivateOnReset)
        .unwrap();
    ctrl.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    // Back to slot 1 without downloading anything.
    ctrl.firmware_commit(1, CommitAction::ActivateOnReset)
        .unwrap();
    ctrl.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
    // An empty slot cannot be activated.
    assert_eq!(
        status_of(ctrl.firmware_commit(3, CommitAction::ActivateOnReset)),
        code::INVALID_FIRMWARE_SLOT
    );
}

#[test]
fn commit_action_3_activates_immediately_or_asks_for_a_reset() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    download(&ctrl, &img("3.0"));
    assert_eq!(
        ctrl.firmware_commit(2, CommitAction::ActivateNow).unwrap(),
        CommitOutcome::Committed
    );
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "3.0"
    );

    let (_t2, _sim2, ctrl2) = drive(SimConfig {
        activation_without_reset: false,
        ..Default::default()
    });
    download(&ctrl2, &img("3.0"));
    match ctrl2.firmware_commit(2, CommitAction::ActivateNow).unwrap() {
        CommitOutcome::NeedsReset(s) => assert_eq!(s.code(), code::FW_NEEDS_CONTROLLER_RESET),
        other => panic!("expected a reset request, got {other:?}"),
    }
    assert_eq!(
        ctrl2.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
    ctrl2.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl2);
    assert_eq!(
        ctrl2.identify_controller().unwrap().firmware_revision(),
        "3.0"
    );
}

/// nvme-cli 2.3's `fw-download` sends whole transfer units, so the image arrives with its last chunk
/// zero-padded; the drive keeps the image and drops the padding. Bytes other than zeros past the image's end
/// make it invalid.
#[test]
fn an_image_downloaded_with_zero_padding_commits_and_garbage_after_it_does_not() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let good = img("2.5.0");
    let mut padded = good.clone();
    padded.resize(good.len().div_ceil(64 * 1024) * 64 * 1024, 0);
    assert!(padded.len() > good.len());
    download(&ctrl, &padded);
    ctrl.firmware_commit(2, CommitAction::Replace).unwrap();
    assert_eq!(ctrl.firmware_slot_log().unwrap().revision(2), Some("2.5.0"));
    let mut garbage = padded;
    *garbage.last_mut().unwrap() = 0x5a;
    download(&ctrl, &garbage);
    assert_eq!(
        status_of(ctrl.firmware_commit(3, CommitAction::Replace)),
        code::INVALID_FIRMWARE_IMAGE
    );
}

#[test]
fn corrupt_truncated_and_foreign_images_are_invalid() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let mut bad = img("2.0");
    let n = bad.len();
    bad[n - 10] ^= 0x55;
    download(&ctrl, &bad);
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::ReplaceActivateOnReset)),
        code::INVALID_FIRMWARE_IMAGE
    );
    let good = img("2.0");
    download(&ctrl, &good[..good.len() - 4096]);
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::Replace)),
        code::INVALID_FIRMWARE_IMAGE
    );
    let foreign = image::build(&ImageSpec {
        model: Some("OTHER MODEL".into()),
        ..ImageSpec::new("2.0")
    })
    .unwrap();
    download(&ctrl, &foreign);
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::Replace)),
        code::INVALID_FIRMWARE_IMAGE
    );
    // Commit without any download.
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::Replace)),
        code::INVALID_FIRMWARE_IMAGE
    );
    let log = ctrl.firmware_slot_log().unwrap();
    assert_eq!(log.revision(2), None);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
}

#[test]
fn read_only_slot_1_and_missing_slots_are_invalid_slots() {
    let (_t, _sim, ctrl) = drive(SimConfig {
        slot1_readonly: true,
        slots: 2,
        ..Default::default()
    });
    download(&ctrl, &img("2.0"));
    let e = ctrl
        .firmware_commit(1, CommitAction::ReplaceActivateOnReset)
        .unwrap_err();
    assert_eq!(e.status().unwrap().code(), code::INVALID_FIRMWARE_SLOT);
    assert!(e.status().unwrap().dnr());
    assert!(e.to_string().contains("Invalid Firmware Slot"), "{e}");
    download(&ctrl, &img("2.0"));
    assert_eq!(
        status_of(ctrl.firmware_commit(5, CommitAction::Replace)),
        code::INVALID_FIRMWARE_SLOT
    );
    // Slot 0: the controller picks slot 2, the only writable one.
    download(&ctrl, &img("2.0"));
    ctrl.firmware_commit(0, CommitAction::Replace).unwrap();
    assert_eq!(ctrl.firmware_slot_log().unwrap().revision(2), Some("2.0"));
}

#[test]
fn overlapping_download_ranges_are_rejected() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let image = img("2.0");
    ctrl.firmware_download(0, &image[..64 * 1024]).unwrap();
    ctrl.firmware_download(64 * 1024, &image[64 * 1024..128 * 1024])
        .unwrap();
    let e = ctrl
        .firmware_download(96 * 1024, &image[96 * 1024..160 * 1024])
        .unwrap_err();
    assert_eq!(e.status().unwrap().code(), code::OVERLAPPING_RANGE);
    assert!(e.to_string().contains("Overlapping Range"), "{e}");
    // Misaligned offsets (FWUG 4 KiB) and oversized chunks (MDTS 128 KiB) are invalid fields.
    assert_eq!(
        status_of(ctrl.firmware_download(130 * 1024 + 4, &image[..4096])),
        code::INVALID_FIELD
    );
    assert_eq!(
        status_of(ctrl.firmware_download(0, &image[..256 * 1024])),
        code::INVALID_FIELD
    );
}

#[test]
fn power_loss_during_download_discards_it_and_counts() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault {
        after: Some(2),
        ..Fault::new(FaultKind::PowerLossDuringDownload)
    })
    .unwrap();
    let image = img("2.0");
    ctrl.firmware_download(0, &image[..64 * 1024]).unwrap();
    ctrl.firmware_download(64 * 1024, &image[64 * 1024..128 * 1024])
        .unwrap();
    let e = ctrl
        .firmware_download(128 * 1024, &image[128 * 1024..192 * 1024])
        .unwrap_err();
    assert!(e.is_absent(), "{e}");
    assert!(e.to_string().contains("power was lost"), "{e}");
    wait_up(&ctrl);
    let smart = ctrl.smart_log().unwrap();
    assert_eq!(smart.power_cycles, 1);
    assert_eq!(smart.unsafe_shutdowns, 1);
    // The partial image is gone: committing now finds nothing valid. The fault fired once.
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::Replace)),
        code::INVALID_FIRMWARE_IMAGE
    );
    assert!(sim.faults().unwrap().faults.is_empty());
    download(&ctrl, &image);
    ctrl.firmware_commit(2, CommitAction::Replace).unwrap();
}

#[test]
fn behaviours_after_activation() {
    for (behaviour, want_rev, want_slot, io_ok) in [
        (Behaviour::BootFail, "bad", 2, false),
        (Behaviour::Fallback, "1.0.0", 1, true),
        (Behaviour::SlowBoot, "slow", 2, true),
    ] {
        let (_t, _sim, ctrl) = drive(SimConfig::default());
        let spec = ImageSpec {
            behaviour,
            behaviour_ms: 300,
            ..ImageSpec::new(want_rev)
        };
        let spec = if behaviour == Behaviour::Fallback {
            ImageSpec {
                revision: "2.0".into(),
                ..spec
            }
        } else {
            spec
        };
        download(&ctrl, &image::build(&spec).unwrap());
        ctrl.firmware_commit(2, CommitAction::ReplaceActivateOnReset)
            .unwrap();
        ctrl.reset(ResetKind::Controller).unwrap();
        if behaviour == Behaviour::SlowBoot {
            let e = ctrl.identify_controller().unwrap_err();
            assert!(e.is_absent() && e.to_string().contains("booting"), "{e}");
        }
        wait_up(&ctrl);
        let id = ctrl.identify_controller().unwrap();
        assert_eq!(id.firmware_revision(), want_rev, "{behaviour}");
        assert_eq!(
            ctrl.firmware_slot_log().unwrap().active_slot(),
            want_slot,
            "{behaviour}"
        );
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            ctrl.read(1, 0, &mut buf, 4096).is_ok(),
            io_ok,
            "{behaviour}"
        );
        let cw = ctrl.smart_log().unwrap().critical_warning;
        assert_eq!(cw != 0, !io_ok, "{behaviour}: critical warning {cw:#x}");
    }
}

#[test]
fn vanishing_image_reenumerates_under_a_new_instance() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    let before = sim.state().unwrap().instance;
    let spec = ImageSpec {
        behaviour: Behaviour::Vanish,
        behaviour_ms: 200,
        ..ImageSpec::new("2.0")
    };
    download(&ctrl, &image::build(&spec).unwrap());
    ctrl.firmware_commit(2, CommitAction::ReplaceActivateOnReset)
        .unwrap();
    ctrl.reset(ResetKind::Controller).unwrap();
    let e = ctrl.identify_controller().unwrap_err();
    assert!(e.to_string().contains("off the bus"), "{e}");
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "2.0"
    );
    assert_ne!(sim.state().unwrap().instance, before);
}

#[test]
fn vanish_fault_lasts_until_power_cycle() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault::new(FaultKind::Vanish)).unwrap();
    let e = ctrl.identify_controller().unwrap_err();
    assert!(e.is_absent(), "{e}");
    std::thread::sleep(Duration::from_millis(100));
    let e = ctrl.identify_controller().unwrap_err();
    assert!(e.to_string().contains("power-cycled"), "{e}");
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    assert_eq!(ctrl.smart_log().unwrap().power_cycles, 1);
}

#[test]
fn hang_fault_times_out_and_clears() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault {
        opcode: Some("identify".into()),
        ..Fault::new(FaultKind::Hang)
    })
    .unwrap();
    let ctrl = ctrl.with_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let e = ctrl.identify_controller().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        e.to_string()
            .contains("Identify Controller got no answer within 300ms"),
        "{e}"
    );
    // Other commands are unaffected.
    ctrl.smart_log().unwrap();
    sim.clear_faults().unwrap();
    ctrl.identify_controller().unwrap();
}

#[test]
fn status_faults_count_down_and_are_logged() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault {
        status: Some(0x4006),
        opcode: Some("get-log-page".into()),
        count: Some(2),
        ..Fault::new(FaultKind::Status)
    })
    .unwrap();
    assert_eq!(status_of(ctrl.smart_log()), code::INTERNAL_ERROR);
    assert_eq!(status_of(ctrl.smart_log()), code::INTERNAL_ERROR);
    let smart = ctrl.smart_log().unwrap();
    assert_eq!(smart.num_err_log_entries, 2);
    let log = ctrl.error_log(4).unwrap();
    let valid: Vec<_> = log.valid().collect();
    assert_eq!(valid.len(), 2);
    assert_eq!(valid[0].error_count, 2, "newest first");
    assert_eq!(valid[0].status().raw(), 0x4006);
}

#[test]
fn io_moves_data_and_smart_counters() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    ctrl.write(1, 10, &data, 4096).unwrap();
    let mut back = vec![0u8; 8192];
    ctrl.read(1, 10, &mut back, 4096).unwrap();
    assert_eq!(back, data);
    ctrl.compare(1, 10, &data, 4096).unwrap();
    let mut other = data.clone();
    other[5] ^= 1;
    assert_eq!(
        status_of(ctrl.compare(1, 10, &other, 4096)),
        code::COMPARE_FAILURE
    );
    ctrl.write_zeroes(1, 10, 1).unwrap();
    ctrl.read(1, 10, &mut back, 4096).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0) && back[4096..] == data[4096..]);
    let blocks = sim.state().unwrap().namespace.blocks();
    assert_eq!(
        status_of(ctrl.read(1, blocks - 1, &mut back, 4096)),
        code::LBA_OUT_OF_RANGE
    );
    let smart = ctrl.smart_log().unwrap();
    assert_eq!(smart.host_write_commands, 2);
    assert_eq!(smart.host_read_commands, 4, "two reads and two compares");
    assert_eq!(
        smart.data_units_written, 1,
        "16 sectors round up to one unit of 1000"
    );
    // A power cut without a shutdown notification is an unsafe shutdown, whether or not writes were pending
    // (a flush does not make it safe); after a completed shutdown notification it is not.
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    ctrl.write(1, 0, &data, 4096).unwrap();
    ctrl.flush(1).unwrap();
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    let smart = ctrl.smart_log().unwrap();
    assert_eq!((smart.power_cycles, smart.unsafe_shutdowns), (2, 2));
    ctrl.write(1, 0, &data, 4096).unwrap();
    assert!(
        sim.shutdown().unwrap(),
        "a powered drive completes a shutdown"
    );
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    let smart = ctrl.smart_log().unwrap();
    assert_eq!((smart.power_cycles, smart.unsafe_shutdowns), (3, 2));
    // The notification covers one power cut: the next bare cut is unsafe again.
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    assert_eq!(ctrl.smart_log().unwrap().unsafe_shutdowns, 3);
}

#[test]
fn media_error_fault_fails_reads_of_those_blocks() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault {
        lba: Some(100),
        blocks: Some(4),
        ..Fault::new(FaultKind::MediaError)
    })
    .unwrap();
    let mut buf = vec![0u8; 4096];
    ctrl.read(1, 99, &mut buf, 4096).unwrap();
    assert_eq!(
        status_of(ctrl.read(1, 102, &mut buf, 4096)),
        code::UNRECOVERED_READ_ERROR
    );
    assert_eq!(ctrl.smart_log().unwrap().media_errors, 1);
}

#[test]
fn self_test_progresses_completes_and_can_fail() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    ctrl.device_self_test(NSID_ALL, self_test_code::SHORT)
        .unwrap();
    let log = ctrl.self_test_log().unwrap();
    assert_eq!(log.current_operation, 1);
    assert_eq!(
        status_of(ctrl.device_self_test(NSID_ALL, self_test_code::SHORT)),
        code::SELF_TEST_IN_PROGRESS
    );
    std::thread::sleep(Duration::from_millis(350));
    let log = ctrl.self_test_log().unwrap();
    assert_eq!(log.current_operation, 0);
    assert_eq!(log.results[0].result, self_test_result::COMPLETED);
    assert_eq!(log.results[0].code, 1);

    sim.add_fault(Fault::new(FaultKind::SelfTestFailure))
        .unwrap();
    ctrl.device_self_test(NSID_ALL, self_test_code::EXTENDED)
        .unwrap();
    std::thread::sleep(Duration::from_millis(650));
    let log = ctrl.self_test_log().unwrap();
    assert_eq!(log.results[0].result, self_test_result::SEGMENTS_FAILED);
    assert_eq!(log.results[0].code, 2);
    assert_eq!(log.results.len(), 2);

    ctrl.device_self_test(NSID_ALL, self_test_code::SHORT)
        .unwrap();
    ctrl.device_self_test(NSID_ALL, self_test_code::ABORT)
        .unwrap();
    assert_eq!(
        ctrl.self_test_log().unwrap().results[0].result,
        self_test_result::ABORTED_BY_COMMAND
    );
}

#[test]
fn format_changes_block_size_and_erases() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    ctrl.write(1, 0, &[0xAA; 4096], 4096).unwrap();
    ctrl.format_nvm(1, 0, 1).unwrap();
    let ns = ctrl.identify_namespace(1).unwrap();
    assert_eq!(ns.block_size(), 512);
    let mut buf = vec![0xffu8; 512];
    ctrl.read(1, 0, &mut buf, 512).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(status_of(ctrl.format_nvm(1, 5, 0)), code::INVALID_FORMAT);
}

#[test]
fn sanitize_erases_and_reports_status() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    ctrl.write(1, 0, &[0xAA; 4096], 4096).unwrap();
    ctrl.sanitize(nvme_spec::command::sanitize_action::CRYPTO_ERASE, 0)
        .unwrap();
    let mut buf = vec![0xffu8; 4096];
    ctrl.read(1, 0, &mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(ctrl.sanitize_status().unwrap().sstat & 0x7, 1);
}

#[test]
fn features_current_saved_and_reset() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    assert_eq!(
        ctrl.get_feature(fid::TEMPERATURE_THRESHOLD, select::CURRENT, 0)
            .unwrap(),
        343
    );
    ctrl.set_feature(fid::TEMPERATURE_THRESHOLD, 350, false, 0)
        .unwrap();
    ctrl.set_feature(fid::VOLATILE_WRITE_CACHE, 0, true, 0)
        .unwrap();
    assert_eq!(
        ctrl.get_feature(fid::TEMPERATURE_THRESHOLD, select::CURRENT, 0)
            .unwrap(),
        350
    );
    ctrl.reset(ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.get_feature(fid::TEMPERATURE_THRESHOLD, select::CURRENT, 0)
            .unwrap(),
        343,
        "not saved"
    );
    assert_eq!(
        ctrl.get_feature(fid::VOLATILE_WRITE_CACHE, select::CURRENT, 0)
            .unwrap(),
        0,
        "saved"
    );
    assert_eq!(
        status_of(ctrl.set_feature(fid::NUMBER_OF_QUEUES, 1, false, 0)),
        code::FEATURE_NOT_CHANGEABLE
    );
    assert_eq!(status_of(ctrl.get_feature(0x77, 0, 0)), code::INVALID_FIELD);
}

#[test]
fn state_persists_across_reopen_and_rejects_recreation() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    {
        let sim = SimController::create(
            &dir,
            &SimConfig {
                timing: fast(),
                ..Default::default()
            },
        )
        .unwrap();
        let ctrl = Controller::new(Arc::new(sim));
        download(&ctrl, &img("2.0"));
        ctrl.firmware_commit(2, CommitAction::ActivateNow).unwrap();
        wait_up(&ctrl);
        ctrl.write(1, 3, &[7u8; 4096], 4096).unwrap();
    }
    let ctrl = Controller::new(Arc::new(SimController::open(&dir).unwrap()));
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "2.0"
    );
    let mut buf = vec![0u8; 4096];
    ctrl.read(1, 3, &mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    let e = SimController::create(&dir, &SimConfig::default()).unwrap_err();
    assert!(matches!(e, SimError::Exists { .. }), "{e}");
    let e = SimController::open(&t.path().join("nothing")).unwrap_err();
    assert!(e.to_string().contains("nvme-flash sim create"), "{e}");
}

#[test]
fn invalid_configs_name_the_field() {
    let t = tempfile::tempdir().unwrap();
    for (cfg, field) in [
        (
            SimConfig {
                slots: 8,
                ..Default::default()
            },
            "slots",
        ),
        (
            SimConfig {
                serial: "x".repeat(21),
                ..Default::default()
            },
            "serial",
        ),
        (
            SimConfig {
                block_size: 1000,
                ..Default::default()
            },
            "block_size",
        ),
        (
            SimConfig {
                size_bytes: 1000,
                ..Default::default()
            },
            "size",
        ),
        (
            SimConfig {
                slots: 1,
                slot1_readonly: true,
                ..Default::default()
            },
            "slot1_readonly",
        ),
    ] {
        let e = SimController::create(&t.path().join(field), &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{e}");
        assert!(!t.path().join(field).join(state::STATE_FILE).exists());
    }
}

#[test]
fn a_corrupt_fault_file_is_reported_by_name() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    std::fs::write(
        sim.dir().join(faults::FAULT_FILE),
        "[[fault]]\nkind = \"latency\"\n",
    )
    .unwrap();
    let e = ctrl.identify_controller().unwrap_err().to_string();
    assert!(e.contains("faults.toml") && e.contains("'ms'"), "{e}");
}

#[test]
fn latency_fault_slows_matching_commands() {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault {
        ms: Some(150),
        opcode: Some("get-log-page".into()),
        ..Fault::new(FaultKind::Latency)
    })
    .unwrap();
    let t0 = Instant::now();
    ctrl.smart_log().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

#[test]
fn unknown_opcodes_are_invalid() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let e = ctrl
        .submit(
            nvme_spec::Queue::Admin,
            &nvme_spec::Command::new(0xC5),
            crate::transport::Data::None,
        )
        .unwrap_err();
    assert_eq!(e.status().unwrap().raw(), 0x4001);
}

/// Downloads and commits a v2 image with `action`, returning the commit's outcome.
fn commit_v2(ctrl: &Controller, action: CommitAction) -> Result<CommitOutcome, NvmeError> {
    download(ctrl, &img("2.0.0"));
    ctrl.firmware_commit(2, action)
}

#[test]
fn each_activation_requirement_answers_its_status_and_only_a_reset_that_reaches_it_activates() {
    use crate::transport::ResetKind;
    // (requirement, status of commit action 1, resets that leave the old image running, the one that activates)
    let cases = [
        (
            ResetRequirement::Controller,
            None,
            vec![],
            ResetKind::Controller,
        ),
        (
            ResetRequirement::Subsystem,
            Some(code::FW_NEEDS_SUBSYSTEM_RESET),
            vec![ResetKind::Controller],
            ResetKind::Subsystem,
        ),
    ];
    for (req, status, no, yes) in cases {
        let (_t, sim, ctrl) = drive(SimConfig {
            activation: req,
            ..Default::default()
        });
        let out = commit_v2(&ctrl, CommitAction::ReplaceActivateOnReset).unwrap();
        match status {
            None => assert_eq!(out, CommitOutcome::Committed, "{req:?}"),
            Some(c) => assert!(
                matches!(out, CommitOutcome::NeedsReset(s) if s.code() == c),
                "{req:?}: {out:?}"
            ),
        }
        for kind in no {
            sim.reset(kind).unwrap();
            wait_up(&ctrl);
            let id = ctrl.identify_controller().unwrap();
            assert_eq!(id.firmware_revision(), "1.0.0", "{req:?} after {kind:?}");
            assert_eq!(
                ctrl.firmware_slot_log().unwrap().next_active_slot(),
                Some(2),
                "still pending"
            );
        }
        sim.reset(yes).unwrap();
        wait_up(&ctrl);
        assert_eq!(
            ctrl.identify_controller().unwrap().firmware_revision(),
            "2.0.0",
            "{req:?} after {yes:?}"
        );
    }
    // Conventional: neither reset activates it; a power cycle does.
    let (_t, sim, ctrl) = drive(SimConfig {
        activation: ResetRequirement::Conventional,
        ..Default::default()
    });
    let out = commit_v2(&ctrl, CommitAction::ReplaceActivateOnReset).unwrap();
    assert!(
        matches!(out, CommitOutcome::NeedsReset(s) if s.code() == code::FW_NEEDS_CONVENTIONAL_RESET),
        "{out:?}"
    );
    for kind in [ResetKind::Controller, ResetKind::Subsystem] {
        sim.reset(kind).unwrap();
        wait_up(&ctrl);
        assert_eq!(
            ctrl.identify_controller().unwrap().firmware_revision(),
            "1.0.0",
            "{kind:?}"
        );
    }
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "2.0.0"
    );
}

#[test]
fn a_drive_without_nssrs_refuses_a_subsystem_reset_as_linux_does() {
    use crate::transport::ResetKind;
    let (_t, sim, ctrl) = drive(SimConfig {
        activation: ResetRequirement::Subsystem,
        subsystem_reset: false,
        ..Default::default()
    });
    commit_v2(&ctrl, CommitAction::ReplaceActivateOnReset).unwrap();
    let e = sim.reset(ResetKind::Subsystem).unwrap_err();
    assert!(
        matches!(e, TransportError::Os { errno, .. } if errno == nix::errno::Errno::ENOTTY),
        "{e}"
    );
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
}

#[test]
fn activating_now_past_mtfa_answers_0x112_and_activates_nothing_until_a_reset() {
    let (_t, sim, ctrl) = drive(SimConfig {
        mtfa_ms: 500,
        ..Default::default()
    });
    assert_eq!(ctrl.identify_controller().unwrap().mtfa, 5, "100 ms units");
    let slow = image::build(&ImageSpec {
        behaviour: Behaviour::SlowBoot,
        behaviour_ms: 800,
        ..ImageSpec::new("2.0.0")
    })
    .unwrap();
    download(&ctrl, &slow);
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::ActivateNow)),
        code::FW_NEEDS_MAX_TIME_VIOLATION
    );
    let log = ctrl.firmware_slot_log().unwrap();
    assert_eq!(log.revision(2), Some("2.0.0"), "the image is in its slot");
    assert_eq!(log.next_active_slot(), None, "nothing pending");
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "1.0.0"
    );
    // Committed again for activation at a reset, a controller reset runs it.
    assert_eq!(
        ctrl.firmware_commit(2, CommitAction::ActivateOnReset)
            .unwrap(),
        CommitOutcome::Committed
    );
    sim.reset(crate::transport::ResetKind::Controller).unwrap();
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "2.0.0"
    );
    // A quick image activates at once under the same MTFA.
    download(&ctrl, &img("3.0.0"));
    assert_eq!(
        ctrl.firmware_commit(3, CommitAction::ActivateNow).unwrap(),
        CommitOutcome::Committed
    );
    wait_up(&ctrl);
    assert_eq!(
        ctrl.identify_controller().unwrap().firmware_revision(),
        "3.0.0"
    );
}

#[test]
fn write_uncorrectable_blocks_fail_reads_until_rewritten_and_dsm_deallocates_to_zeros() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let data = vec![0xa5u8; 4 * 4096];
    ctrl.write(1, 100, &data, 4096).unwrap();
    ctrl.write_uncorrectable(1, 101, 2).unwrap();
    let mut back = vec![0u8; 4096];
    // Blocks 101 and 102 are bad; 100 and 103 are not.
    ctrl.read(1, 100, &mut back, 4096).unwrap();
    for lba in [101, 102] {
        assert_eq!(
            status_of(ctrl.read(1, lba, &mut back, 4096)),
            code::UNRECOVERED_READ_ERROR,
            "LBA {lba}"
        );
    }
    assert_eq!(
        status_of(ctrl.compare(1, 100, &data, 4096)),
        code::UNRECOVERED_READ_ERROR,
        "a compare reads the bad blocks too"
    );
    ctrl.read(1, 103, &mut back, 4096).unwrap();
    let smart = ctrl.smart_log().unwrap();
    assert_eq!(smart.media_errors, 3);
    // Rewriting one of them heals only that one; write zeroes heals the other.
    ctrl.write(1, 101, &data[..4096], 4096).unwrap();
    ctrl.read(1, 101, &mut back, 4096).unwrap();
    assert_eq!(
        status_of(ctrl.read(1, 102, &mut back, 4096)),
        code::UNRECOVERED_READ_ERROR
    );
    ctrl.write_zeroes(1, 102, 1).unwrap();
    ctrl.read(1, 102, &mut back, 4096).unwrap();
    assert!(back.iter().all(|&b| b == 0));
    // Deallocate 100..104: zeros, and marked blocks in a deallocated range are good again.
    ctrl.write_uncorrectable(1, 103, 1).unwrap();
    ctrl.dataset_management(
        1,
        &[nvme_spec::DsmRange {
            attributes: 0,
            blocks: 4,
            slba: 100,
        }],
        true,
    )
    .unwrap();
    let mut four = vec![1u8; 4 * 4096];
    ctrl.read(1, 100, &mut four, 4096).unwrap();
    assert!(
        four.iter().all(|&b| b == 0),
        "deallocated blocks read as zeros (DLFEAT 1)"
    );
    // Ranges past the end are refused; ranges without AD change nothing.
    ctrl.write(1, 100, &data[..4096], 4096).unwrap();
    let blocks = _sim.state().unwrap().namespace.blocks();
    let past = nvme_spec::DsmRange {
        attributes: 0,
        blocks: 2,
        slba: blocks - 1,
    };
    assert_eq!(
        status_of(ctrl.dataset_management(1, &[past], true)),
        code::LBA_OUT_OF_RANGE
    );
    let hint = nvme_spec::DsmRange {
        attributes: 1,
        blocks: 1,
        slba: 100,
    };
    ctrl.dataset_management(1, &[hint], false).unwrap();
    ctrl.read(1, 100, &mut back, 4096).unwrap();
    assert_eq!(back, data[..4096]);
}

#[test]
fn oncs_and_the_effects_log_list_exactly_what_the_simulator_implements() {
    use nvme_spec::command::io;
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    let id = ctrl.identify_controller().unwrap();
    assert_eq!(
        id.oncs, 0x1f,
        "compare, write uncorrectable, DSM, write zeroes, save/select"
    );
    let log = ctrl.effects_log().unwrap();
    let supported: Vec<u8> = (0..=255u8)
        .filter(|&op| log.io[op as usize] & nvme_spec::log_page::effects::CSUPP != 0)
        .collect();
    assert_eq!(
        supported,
        vec![
            io::FLUSH,
            io::WRITE,
            io::READ,
            io::WRITE_UNCORRECTABLE,
            io::COMPARE,
            io::WRITE_ZEROES,
            io::DATASET_MANAGEMENT
        ]
    );
    // Every listed opcode is answered by something other than Invalid Opcode, every other one with it.
    let mut buf = vec![0u8; 4096];
    for op in 0..=255u8 {
        let cmd = nvme_spec::Command {
            opcode: op,
            nsid: 1,
            ..Default::default()
        };
        // The opcode's low bits give its data direction; bidirectional ones cannot be sent through this API.
        let data = match op & 3 {
            0 => crate::transport::Data::None,
            1 => crate::transport::Data::ToDevice(&buf[..]),
            2 => crate::transport::Data::FromDevice(&mut buf[..]),
            _ => continue,
        };
        let c = ctrl.submit_raw(nvme_spec::Queue::Io, &cmd, data).unwrap();
        assert_eq!(
            c.status.code() == code::INVALID_OPCODE,
            !supported.contains(&op),
            "opcode {op:#04x}: {}",
            c.status
        );
        buf = vec![0u8; 4096];
    }
}

#[test]
fn a_transfer_larger_than_mdts_is_invalid_field() {
    let (_t, _sim, ctrl) = drive(SimConfig {
        mdts: 1, // 8 KiB
        ..Default::default()
    });
    assert_eq!(
        ctrl.identify_controller().unwrap().max_transfer_bytes(),
        Some(8192)
    );
    let mut two = vec![0u8; 8192];
    ctrl.read(1, 0, &mut two, 4096).unwrap();
    let mut three = vec![0u8; 3 * 4096];
    assert_eq!(
        status_of(ctrl.read(1, 0, &mut three, 4096)),
        code::INVALID_FIELD
    );
    assert_eq!(
        status_of(ctrl.write(1, 0, &three, 4096)),
        code::INVALID_FIELD
    );
    // Admin commands too: a firmware download chunk over MDTS.
    assert_eq!(
        status_of(ctrl.firmware_download(0, &three)),
        code::INVALID_FIELD
    );
}

#[test]
fn error_log_entries_name_the_namespace_and_the_field_in_error() {
    let (_t, _sim, ctrl) = drive(SimConfig::default());
    // An admin command not about a namespace: NSID FFFFFFFFh; the bad CNS lives in CDW10 (byte 40).
    let cmd = nvme_spec::Command {
        opcode: nvme_spec::command::admin::IDENTIFY,
        cdw10: 0xff,
        ..Default::default()
    };
    let mut buf = vec![0u8; 4096];
    let c = ctrl
        .submit_raw(
            nvme_spec::Queue::Admin,
            &cmd,
            crate::transport::Data::FromDevice(&mut buf),
        )
        .unwrap();
    assert_eq!(c.status.code(), code::INVALID_FIELD);
    // A read past the end of namespace 1: its NSID, the LBA, SLBA in CDW10.
    let blocks = _sim.state().unwrap().namespace.blocks();
    let mut one = vec![0u8; 4096];
    assert_eq!(
        status_of(ctrl.read(1, blocks, &mut one, 4096)),
        code::LBA_OUT_OF_RANGE
    );
    // A firmware image the drive rejects is not about a field: FFFFh.
    download(&ctrl, b"not an image, just 32 bytes here");
    assert_eq!(
        status_of(ctrl.firmware_commit(2, CommitAction::ReplaceActivateOnReset)),
        code::INVALID_FIRMWARE_IMAGE
    );
    let log = ctrl.error_log(3).unwrap();
    let e: Vec<_> = log.valid().collect();
    assert_eq!(e.len(), 3);
    let (img, read, identify) = (&e[0], &e[1], &e[2]);
    assert_eq!(
        (identify.sqid, identify.nsid, identify.parm_error_location),
        (0, 0xffff_ffff, 40)
    );
    assert_eq!(
        (read.sqid, read.nsid, read.lba, read.parm_error_location),
        (1, 1, blocks, 40)
    );
    assert_eq!((img.nsid, img.parm_error_location), (0xffff_ffff, 0xffff));
}

#[test]
fn a_failed_self_test_says_its_status_code_is_valid_and_sanitize_status_counts_passes_and_global_erase(
) {
    let (_t, sim, ctrl) = drive(SimConfig::default());
    sim.add_fault(Fault::new(FaultKind::SelfTestFailure))
        .unwrap();
    ctrl.device_self_test(1, self_test_code::SHORT).unwrap();
    let start = Instant::now();
    let r = loop {
        let log = ctrl.self_test_log().unwrap();
        if log.current_operation == 0 {
            break log.results[0].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.result, self_test_result::SEGMENTS_FAILED);
    assert_eq!(
        r.valid_diagnostic_info, 0xf,
        "NSIDV, FLBAV, SCTV and SCV: the status code fields are valid"
    );
    // An overwrite sanitize of 3 passes: completed, 3 passes, global data erased; a write clears GDE.
    let cmd = nvme_spec::Command {
        cdw10: (nvme_spec::command::sanitize_action::OVERWRITE as u32) | (3 << 4),
        ..nvme_spec::Command::sanitize(nvme_spec::command::sanitize_action::OVERWRITE, false, 0)
    };
    let c = ctrl
        .submit_raw(nvme_spec::Queue::Admin, &cmd, crate::transport::Data::None)
        .unwrap();
    assert!(c.status.is_success(), "{}", c.status);
    let s = ctrl.sanitize_status().unwrap();
    assert_eq!(s.sstat & 0x7, 1, "completed");
    assert_eq!((s.sstat >> 3) & 0x1f, 3, "overwrite passes");
    assert_ne!(s.sstat & (1 << 8), 0, "global data erased");
    ctrl.write(1, 0, &vec![1u8; 4096], 4096).unwrap();
    assert_eq!(ctrl.sanitize_status().unwrap().sstat & (1 << 8), 0);
}

#[test]
fn the_volatile_write_cache_loses_unflushed_writes_to_an_unsafe_power_cut_only() {
    let (_t, sim, ctrl) = drive(SimConfig {
        write_cache_bytes: 64 * 1024,
        ..Default::default()
    });
    assert_eq!(ctrl.identify_controller().unwrap().vwc, 1);
    let media = sim.dir().join(NAMESPACE_FILE);
    let on_media = |lba: u64| {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; 4096];
        std::fs::File::open(&media)
            .unwrap()
            .read_exact_at(&mut b, lba * 4096)
            .unwrap();
        b
    };
    let a = vec![0xaau8; 4096];
    let mut back = vec![0u8; 4096];
    // Cached: the host reads its write, the media does not have it yet.
    ctrl.write(1, 10, &a, 4096).unwrap();
    ctrl.read(1, 10, &mut back, 4096).unwrap();
    assert_eq!(back, a);
    assert!(on_media(10).iter().all(|&b| b == 0));
    // A bare power cut loses it.
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    ctrl.read(1, 10, &mut back, 4096).unwrap();
    assert!(back.iter().all(|&b| b == 0), "the unflushed write is gone");
    // Flush, FUA and a shutdown notification each put it on the media.
    ctrl.write(1, 10, &a, 4096).unwrap();
    ctrl.flush(1).unwrap();
    assert_eq!(on_media(10), a);
    let b = vec![0xbbu8; 4096];
    let fua = nvme_spec::Command::write(1, 11, 1).with_fua();
    ctrl.submit_raw(
        nvme_spec::Queue::Io,
        &fua,
        crate::transport::Data::ToDevice(&b),
    )
    .unwrap();
    assert_eq!(on_media(11), b);
    let c = vec![0xccu8; 4096];
    ctrl.write(1, 12, &c, 4096).unwrap();
    assert!(sim.shutdown().unwrap());
    sim.power_cycle().unwrap();
    wait_up(&ctrl);
    for (lba, want) in [(10, &a), (11, &b), (12, &c)] {
        ctrl.read(1, lba, &mut back, 4096).unwrap();
        assert_eq!(&back, want, "LBA {lba} survived");
    }
    // A full cache writes itself back: 17 writes of 4 KiB into 64 KiB.
    for i in 0..17u64 {
        ctrl.write(1, 100 + i, &a, 4096).unwrap();
    }
    assert_eq!(on_media(100), a, "written back when the cache filled");
    // Without a cache (the default) a write is on the media at once.
    let (_t2, sim2, ctrl2) = drive(SimConfig::default());
    assert_eq!(ctrl2.identify_controller().unwrap().vwc, 0);
    ctrl2.write(1, 3, &a, 4096).unwrap();
    sim2.power_cycle().unwrap();
    wait_up(&ctrl2);
    ctrl2.read(1, 3, &mut back, 4096).unwrap();
    assert_eq!(back, a);
}
