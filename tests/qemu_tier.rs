//! The real-kernel tier: boots QEMU (tests/qemu/vm.sh) with the Debian cloud kernel and QEMU's emulated NVMe
//! controller, runs nvme-cli, nvme-flash and bench-agent there (tests/qemu/guest-nvme-layer.sh), and checks that
//! nvme-flash's ioctl path agrees with nvme-cli on every field both print, that I/O passthrough agrees with the
//! block layer, that a firmware update fails cleanly on a controller that cannot be flashed, and that the io
//! engine's uring_cmd backend moves data through /dev/ng0n1.
//!
//! Needs qemu-system-x86_64, busybox-static, nvme-cli and cpio (`scripts/setup.sh` installs them).

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use nvfarm_tests::bin;
use nvfarm_tests::vm::{agreeing_fields, VmRun};

/// Boots the VM once (nextest runs every test in its own process, so this file has one test).
fn vm() -> &'static VmRun {
    static VM: OnceLock<VmRun> = OnceLock::new();
    VM.get_or_init(|| {
        VmRun::boot("guest-nvme-layer.sh", |tmp| {
            let image = tmp.join("fw.img");
            let st = Command::new(bin("nvme-flash"))
                .args(["sim", "image", "--rev", "9.9.9", "-o"])
                .arg(&image)
                .status()
                .unwrap();
            assert!(st.success());
            vec![image]
        })
    })
}

/// Every field nvme-cli prints must be printed by nvme-flash with the same value.
fn assert_agrees(cli: &Value, ours: &Value, what: &str) {
    let compared = agreeing_fields(cli, ours, what);
    assert!(compared >= 10, "{what}: only {compared} fields compared");
}

fn identify_controller_matches_nvme_cli() {
    assert_eq!(vm().rc("flash-id-ctrl.rc"), 0);
    assert_agrees(
        &vm().json("cli-id-ctrl.json"),
        &vm().json("flash-id-ctrl.json"),
        "id-ctrl",
    );
    assert_eq!(
        vm().json("flash-id-ctrl.json")["sn"],
        "NVFARMQEMU0001      "
    );
}

fn smart_log_matches_nvme_cli() {
    assert_eq!(vm().rc("flash-smart.rc"), 0);
    assert_agrees(
        &vm().json("cli-smart.json"),
        &vm().json("flash-smart.json"),
        "smart-log",
    );
}

fn identify_namespace_and_error_log_match_nvme_cli() {
    assert_eq!(vm().rc("flash-id-ns.rc"), 0);
    assert_agrees(
        &vm().json("cli-id-ns.json"),
        &vm().json("flash-id-ns.json"),
        "id-ns",
    );
    assert_eq!(vm().rc("flash-error.rc"), 0);
    assert_agrees(
        &vm().json("cli-error.json")["errors"][0],
        &vm().json("flash-error.json")["errors"][0],
        "error-log",
    );
}

fn other_logs_parse_on_a_real_controller() {
    assert_eq!(vm().rc("flash-fw.rc"), 0);
    let fw = vm().json("flash-fw.json");
    assert_eq!(fw["active_slot"], 1);
    assert_eq!(
        fw["slots"][0]["read_only"], true,
        "QEMU reports FRMW slot 1 read-only"
    );
    assert_eq!(vm().rc("flash-effects.rc"), 0);
    let effects = vm().json("flash-effects.json");
    assert!(
        effects
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "Identify"),
        "{effects}"
    );
}

fn drives_are_found_by_serial_and_pci_address_through_sysfs() {
    assert_eq!(
        vm().rc("flash-by-serial.rc"),
        0,
        "{}",
        vm().read("guest.log")
    );
    assert_eq!(vm().rc("flash-by-pci.rc"), 0, "{}", vm().read("guest.log"));
    assert_eq!(
        vm().json("flash-by-serial.json")["sn"],
        vm().json("cli-id-ctrl.json")["sn"]
    );
    assert_eq!(
        vm().json("flash-by-pci.json")["sn"],
        vm().json("cli-id-ctrl.json")["sn"]
    );
    let list = vm().json("flash-list.json");
    assert_eq!(list[0]["name"], "nvme0");
    assert_eq!(list[0]["serial"], "NVFARMQEMU0001");
}

fn update_fails_cleanly_on_a_controller_without_firmware_download() {
    assert_eq!(vm().rc("update.rc"), 1, "{}", vm().read("update.err"));
    let r = vm().json("update.json");
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["failure"]["step"], "download");
    assert_eq!(
        r["failure"]["status"],
        "Invalid Command Opcode (0x4001, DNR)"
    );
    let msg = r["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("does not support Firmware Image Download"),
        "{msg}"
    );
    let state = r["failure"]["drive_state"].as_str().unwrap();
    assert!(
        state.contains("nothing committed")
            && state.contains(r["previous_revision"].as_str().unwrap()),
        "{state}"
    );
}

fn reset_and_io_passthrough_work_on_the_real_driver() {
    // A controller reset ends the same way through nvme-cli and through nvme-flash, and the drive is back after each.
    assert_eq!(vm().rc("cli-reset.rc"), 0, "{}", vm().read("cli-reset.out"));
    assert_eq!(
        vm().rc("cli-reset-wait.rc"),
        0,
        "{}",
        vm().read("cli-reset-wait.err")
    );
    assert_eq!(vm().rc("reset.rc"), 0, "{}", vm().read("reset.err"));
    assert_eq!(vm().rc("wait.rc"), 0, "{}", vm().read("wait.err"));
    assert_eq!(vm().rc("flash-after-reset.rc"), 0);
    assert_eq!(vm().rc("write.rc"), 0, "{}", vm().read("write.err"));
    assert_eq!(vm().rc("read.rc"), 0, "{}", vm().read("read.err"));
    assert_eq!(
        vm().rc("read-back.cmp"),
        0,
        "NVMe Read returned different data than NVMe Write stored"
    );
    assert_eq!(
        vm().rc("dd.cmp"),
        0,
        "the block layer reads different data than NVMe Write stored"
    );
}

fn uring_cmd_moves_data_through_the_generic_char_device() {
    assert_eq!(
        vm().rc("uring-cmd-write.rc"),
        0,
        "{}",
        vm().read("guest.log")
    );
    let w = vm().json("uring-cmd-write.json");
    assert_eq!(w["engine"], "uring_cmd");
    assert!(
        w["ring"]
            .as_str()
            .unwrap()
            .contains("SQE128/CQE32 NVMe passthrough"),
        "{w}"
    );
    assert_eq!(w["write"]["bytes"], 8 << 20);
    assert_eq!(w["verify"]["mismatches"], 0);
    assert_eq!(w["verify"]["blocks_checked"], 128);
    // What passthrough wrote, passthrough reads back and the block layer (io_uring, O_DIRECT) reads the same.
    assert_eq!(
        vm().rc("uring-cmd-read.rc"),
        0,
        "{}",
        vm().read("guest.log")
    );
    let r = vm().json("uring-cmd-read.json");
    assert_eq!(r["verify"]["blocks_checked"], 128);
    assert_eq!(r["verify"]["mismatches"], 0);
    assert_eq!(vm().rc("block-read.rc"), 0, "{}", vm().read("guest.log"));
    let b = vm().json("block-read.json");
    assert_eq!(b["engine"], "uring");
    assert_eq!(b["verify"]["mismatches"], 0);
    assert_eq!(b["verify"]["blocks_checked"], 128);
    // A random passthrough run with latency percentiles.
    assert_eq!(
        vm().rc("uring-cmd-randread.rc"),
        0,
        "{}",
        vm().read("guest.log")
    );
    let rr = vm().json("uring-cmd-randread.json");
    assert!(rr["read"]["ios"].as_u64().unwrap() > 0);
    assert!(
        rr["read"]["lat"]["p99_ns"].as_u64().unwrap()
            >= rr["read"]["lat"]["p50_ns"].as_u64().unwrap()
    );
}

fn a_failed_passthrough_command_reaps_every_command_in_flight() {
    assert_eq!(
        vm().rc("uring-cmd-inject.rc"),
        1,
        "{}",
        vm().read("uring-cmd-inject.err")
    );
    let err = vm().read("uring-cmd-inject.err");
    assert!(err.contains("Input/output error"), "{err}");
    assert!(
        err.contains("were cancelled and reaped before their buffers were released"),
        "{err}"
    );
}

/// Whether nvme-cli and nvme-flash ended the same way (both succeeded, or both failed).
fn same_outcome(what: &str) {
    let (cli, ours) = (
        vm().rc(&format!("nvm-cli-{what}.rc")),
        vm().rc(&format!("nvm-flash-{what}.rc")),
    );
    assert_eq!(
        cli == 0,
        ours == 0,
        "{what}: nvme-cli exited {cli}, nvme-flash {ours}: {}",
        vm().read(&format!("nvm-flash-{what}.err"))
    );
}

fn the_nvm_commands_agree_with_nvme_cli_where_the_controller_advertises_them() {
    let oncs = vm().json("cli-id-ctrl.json")["oncs"].as_u64().unwrap();
    // What QEMU's controller advertises must work through nvme-flash, exactly as through nvme-cli.
    for (bit, what) in [(0, "compare"), (3, "wz"), (2, "dsm")] {
        same_outcome(what);
        if oncs & (1 << bit) != 0 {
            assert_eq!(
                vm().rc(&format!("nvm-flash-{what}.rc")),
                0,
                "{what} is advertised in ONCS {oncs:#x}: {}",
                vm().read(&format!("nvm-flash-{what}.err"))
            );
        }
    }
    // A mismatching compare fails through both, with the status by name in ours.
    same_outcome("compare-bad");
    if oncs & 1 != 0 {
        assert_eq!(vm().rc("nvm-flash-compare-bad.rc"), 1);
        assert!(
            vm().read("nvm-flash-compare-bad.err")
                .contains("Compare Failure"),
            "{}",
            vm().read("nvm-flash-compare-bad.err")
        );
    }
    same_outcome("flush");
    assert_eq!(vm().rc("nvm-flash-flush.rc"), 0);
    // After write zeroes and deallocate, both ranges hold the same bytes.
    assert_eq!(
        vm().rc("nvm-ranges.cmp"),
        0,
        "the range nvme-cli worked on and the range nvme-flash worked on differ"
    );
    // Write Uncorrectable and the read after it end the same way through both (QEMU may not implement it).
    same_outcome("uncor");
    same_outcome("uncor-read");
    // A passthrough I/O larger than MDTS (512 KiB on QEMU's controller) goes as several commands the kernel
    // accepts, and what they wrote reads back through the block layer.
    assert_eq!(
        vm().rc("uring-cmd-mdts.rc"),
        0,
        "{}",
        vm().read("uring-cmd-mdts.err")
    );
    let w: serde_json::Value = serde_json::from_str(&vm().read("uring-cmd-mdts.json")).unwrap();
    assert_eq!(w["verify"]["mismatches"], 0);
    assert!(
        w["ring"]
            .as_str()
            .unwrap_or_default()
            .contains("split into"),
        "{w}"
    );
    assert_eq!(
        vm().rc("uring-cmd-mdts-blk.rc"),
        0,
        "{}",
        vm().read("uring-cmd-mdts-blk.err")
    );
    let r: serde_json::Value = serde_json::from_str(&vm().read("uring-cmd-mdts-blk.json")).unwrap();
    assert_eq!(r["verify"]["mismatches"], 0);
    assert_eq!(r["verify"]["blocks_checked"], w["verify"]["blocks_checked"]);
}

fn a_subsystem_reset_ends_as_nvme_clis_does() {
    let (cli, ours) = (vm().rc("cli-nssr.rc"), vm().rc("flash-nssr.rc"));
    assert_eq!(
        cli == 0,
        ours == 0,
        "nvme subsystem-reset exited {cli} ({}), nvme-flash reset --subsystem {ours} ({})",
        vm().read("cli-nssr.out"),
        vm().read("flash-nssr.err")
    );
    if ours != 0 {
        let err = vm().read("flash-nssr.err");
        assert!(err.contains("CAP.NSSRS"), "says why: {err}");
    }
    // Either way the drive is there afterwards.
    assert_eq!(
        vm().rc("cli-nssr-wait.rc"),
        0,
        "{}",
        vm().read("cli-nssr-wait.err")
    );
    assert_eq!(
        vm().rc("flash-nssr-wait.rc"),
        0,
        "{}",
        vm().read("flash-nssr-wait.err")
    );
}

/// An orderly power cycle on a real PCIe drive: the agent's shutdown notification is the
/// driver's remove of the PCI device, and the bus rescan brings the same drive back.
fn an_orderly_power_cycle_takes_the_drive_off_the_bus_and_finds_it_again() {
    assert_eq!(
        vm().rc("cycle.rc"),
        0,
        "{}\n{}\ncontrollers before: {}\n{}",
        vm().read("cycle.err"),
        vm().read("cycle.json"),
        vm().read("cycle-ctrls-before"),
        vm().read("cycle-dmesg")
    );
    let r = vm().json("cycle.json");
    let log = r["steps"][0]["log"].to_string();
    assert!(
        log.contains("shutdown notification sent"),
        "the driver's remove is the shutdown notification: {log}"
    );
    assert_eq!(r["steps"][1]["outcome"], "passed", "{r:#}");
    assert!(log.contains("drive up as nvme"), "{log}");
    // The drive with that serial is back, at the same PCI address, after the rescan.
    assert_eq!(
        vm().read("cycle-pci-after").trim(),
        vm().read("cycle-pci-before").trim()
    );
}

/// One VM boot, every check. Each check's message says what disagreed.
#[test]
fn qemu_tier() {
    identify_controller_matches_nvme_cli();
    smart_log_matches_nvme_cli();
    identify_namespace_and_error_log_match_nvme_cli();
    other_logs_parse_on_a_real_controller();
    drives_are_found_by_serial_and_pci_address_through_sysfs();
    update_fails_cleanly_on_a_controller_without_firmware_download();
    reset_and_io_passthrough_work_on_the_real_driver();
    uring_cmd_moves_data_through_the_generic_char_device();
    a_failed_passthrough_command_reaps_every_command_in_flight();
    the_nvm_commands_agree_with_nvme_cli_where_the_controller_advertises_them();
    a_subsystem_reset_ends_as_nvme_clis_does();
    an_orderly_power_cycle_takes_the_drive_off_the_bus_and_finds_it_again();
}
