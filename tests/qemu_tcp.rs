//! The real-kernel tier, NVMe/TCP: boots QEMU (tests/qemu/vm.sh) and, inside the guest on its own loopback,
//! serves three simulated drives from one `nvme-flash sim serve`, attaches them with the kernel's nvme-tcp host
//! driver (`nvme connect`) and drives them through the real kernel (tests/qemu/guest-nvme-tcp.sh):
//! - nvme-cli and nvme-flash agree on Identify Controller and Namespace, SMART, the firmware slot log and the
//!   error log, and both agree with what the simulator says about itself;
//! - the fields that define a fabrics controller agree with the kernel's own target (nvmet) behind the same host
//!   driver, and an unknown subsystem is answered alike;
//! - a firmware update through the kernel activates (Identify, slot log and sysfs show the new revision), a
//!   corrupt image is refused with 0x107, a boot-fail image is rolled back, nvme-cli's own fw-download /
//!   fw-commit / reset reaches the same state, and a drive that comes back as another /dev/nvmeY is found again;
//! - the io engine verifies data through the block layer and uring_cmd and sees an injected latency and an
//!   injected status;
//! - `bench-agent run plans/smoke.toml` on a rig whose drive is the TCP-attached one passes, and fails at the
//!   flash step with a boot-fail image, rolled back;
//! - a drive that vanishes is reconnected by the kernel once it is power-cycled.
//!
//! Needs qemu-system-x86_64, busybox-static, nvme-cli and cpio (`scripts/setup.sh` installs them).

use std::sync::OnceLock;

use serde_json::Value;

use nvfarm_tests::vm::{agreeing_fields, VmRun};

/// Boots the VM once (this file has one test).
fn vm() -> &'static VmRun {
    static VM: OnceLock<VmRun> = OnceLock::new();
    VM.get_or_init(|| {
        VmRun::boot("guest-nvme-tcp.sh", |_| {
            vec![nvfarm_tests::workspace().join("plans/smoke.toml")]
        })
    })
}

fn iops(name: &str) -> f64 {
    vm().json(name)["read"]["iops"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: no read.iops\n{}", vm().read(name)))
}

/// nvme-cli's fw-log against nvme-flash's: the active slot, and every slot's revision (nvme-cli prints a slot's
/// 8 revision bytes as a little-endian u64 and leaves out empty slots). Returns the fields compared.
fn fw_log_agrees(cli: &Value, ours: &Value, what: &str) -> usize {
    let dev = cli
        .as_object()
        .and_then(|o| o.values().next())
        .unwrap_or_else(|| panic!("{what}: nvme-cli fw-log has no device: {cli}"));
    assert_eq!(
        dev["Active Firmware Slot (afi)"], ours["afi"],
        "{what}: afi"
    );
    let mut compared = 1;
    for slot in ours["slots"].as_array().unwrap() {
        let key = format!("Firmware Rev Slot {}", slot["slot"]);
        match slot["revision"].as_str() {
            Some(rev) => {
                let mut b = [b' '; 8];
                b[..rev.len()].copy_from_slice(rev.as_bytes());
                let want = u64::from_le_bytes(b).to_string();
                let got = dev[&key].as_str().unwrap_or_else(|| {
                    panic!("{what}: nvme-flash has {rev} in {key}, nvme-cli nothing: {dev}")
                });
                assert!(
                    got.split(' ').next() == Some(&want),
                    "{what}: {key}: nvme-cli '{got}', nvme-flash {rev} ({want})"
                );
            }
            None => assert!(
                dev.get(&key).is_none(),
                "{what}: {key} is empty in nvme-flash's log: {dev}"
            ),
        }
        compared += 1;
    }
    compared
}

/// nvme-cli's error-log against nvme-flash's, entry by entry (nvme-cli 2.3 prints NSID as a signed int, so
/// FFFFFFFFh, "every namespace", is -1 there). Returns the fields compared.
fn error_log_agrees(cli: &Value, ours: &Value) -> usize {
    let (cli, ours) = (
        cli["errors"].as_array().unwrap(),
        ours["errors"].as_array().unwrap(),
    );
    assert_eq!(cli.len(), ours.len(), "error-log entries");
    let mut compared = 0;
    for (i, (c, o)) in cli.iter().zip(ours).enumerate() {
        let mut c = c.clone();
        if c["nsid"] == -1 {
            c["nsid"] = 0xffff_ffffu32.into();
        }
        compared += agreeing_fields(&c, o, &format!("error-log entry {i}"));
    }
    compared
}

fn the_drives_attach_through_the_kernels_nvme_tcp_driver() {
    let vm = vm();
    assert_eq!(
        vm.rc("insmod-fabrics.rc"),
        0,
        "insmod nvme-fabrics.ko: {}",
        vm.read("guest.log")
    );
    assert_eq!(vm.rc("insmod-tcp.rc"), 0, "insmod nvme-tcp.ko");
    assert_eq!(
        vm.rc("connect.rc"),
        0,
        "nvme connect: {}\n{}",
        vm.read("connect.out"),
        vm.read("serve.err")
    );
    assert_eq!(vm.rc("connect2.rc"), 0, "{}", vm.read("connect2.out"));
    assert_eq!(vm.read("transport").trim(), "tcp");
    assert_ne!(
        vm.read("ctrl").trim(),
        vm.read("ctrl2").trim(),
        "two drives, two controllers"
    );
    assert_eq!(
        vm.rc("flash-by-serial.rc"),
        0,
        "the TCP-attached drive is found by serial"
    );
}

fn nvme_cli_and_nvme_flash_agree_on_every_shared_field() {
    let vm = vm();
    let id = vm.json("cli-id-ctrl.json");
    let n = agreeing_fields(&id, &vm.json("flash-id-ctrl.json"), "id-ctrl");
    assert!(n >= 50, "id-ctrl: only {n} fields compared");
    assert_eq!(id["subnqn"], "nqn.2024-01.dev.nvfarm:sim:NVFTCP0001");
    assert_eq!(id["sn"].as_str().unwrap().trim(), "NVFTCP0001");
    let ns = agreeing_fields(
        &vm.json("cli-id-ns.json"),
        &vm.json("flash-id-ns.json"),
        "id-ns",
    );
    assert!(ns >= 20, "id-ns: only {ns} fields compared");
    let smart = agreeing_fields(
        &vm.json("cli-smart.json"),
        &vm.json("flash-smart.json"),
        "smart-log",
    );
    assert!(smart >= 15, "smart-log: only {smart} fields compared");
    let fw = fw_log_agrees(&vm.json("cli-fw.json"), &vm.json("flash-fw.json"), "fw-log");
    let err = error_log_agrees(&vm.json("cli-error.json"), &vm.json("flash-error.json"));
    assert!(err >= 40, "error-log: only {err} fields compared");
    eprintln!("nvme-cli and nvme-flash agree over NVMe/TCP: id-ctrl {n}, id-ns {ns}, smart-log {smart}, fw-log {fw}, error-log {err} fields");
    // And both agree with the simulator's own account.
    let sim = vm.json("sim-status.json");
    assert_eq!(
        id["fr"].as_str().unwrap().trim(),
        sim["running_revision"].as_str().unwrap()
    );
    let flash_fw = vm.json("flash-fw.json");
    assert_eq!(flash_fw["active_slot"], sim["active_slot"]);
    let revs: Vec<Value> = flash_fw["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["revision"].clone())
        .collect();
    assert_eq!(Value::from(revs), sim["slots"]);
    assert_eq!(
        vm.json("cli-smart.json")["num_err_log_entries"],
        sim["error_count"].to_string(),
        "SMART's error log entries are the simulator's error count"
    );
}

/// The kernel's own target (nvmet) is a second NVMe/TCP controller behind the same host driver: the fields that
/// define a fabrics controller agree with ours, nvme-flash reads it as nvme-cli does, and an unknown subsystem is
/// answered alike (Linux names the field at fault from the Invalid Parameters result).
fn our_target_answers_as_the_kernels_nvmet_does() {
    let vm = vm();
    assert_eq!(vm.rc("insmod-nvmet.rc"), 0);
    assert_eq!(vm.rc("nvmet-ns.rc"), 0, "nvmet namespace enable");
    assert_eq!(
        vm.rc("nvmet-connect.rc"),
        0,
        "{}",
        vm.read("nvmet-connect.out")
    );
    let (nvmet, ours) = (vm.json("nvmet-id-ctrl.json"), vm.json("cli-id-ctrl.json"));
    for f in [
        "cntrltype",
        "iorcsz",
        "icdoff",
        "fcatt",
        "msdbd",
        "sgls",
        "ofcs",
        "sqes",
        "cqes",
    ] {
        assert_eq!(
            ours[f], nvmet[f],
            "Identify {f}: ours {}, nvmet {}",
            ours[f], nvmet[f]
        );
    }
    for id in [&nvmet, &ours] {
        assert!(
            id["ioccsz"].as_u64().unwrap() >= 4,
            "IOCCSZ holds at least the 64-byte SQE: {}",
            id["ioccsz"]
        );
    }
    assert_eq!(
        vm.rc("nvmet-flash-id-ctrl.rc"),
        0,
        "{}",
        vm.read("nvmet-flash-id-ctrl.err")
    );
    let n = agreeing_fields(
        &nvmet,
        &vm.json("nvmet-flash-id-ctrl.json"),
        "nvmet id-ctrl",
    );
    assert!(n >= 50, "nvmet id-ctrl: only {n} fields compared");
    eprintln!("nvmet: 9 fabrics Identify fields agree with ours; nvme-flash and nvme-cli agree on {n} of nvmet's");
    assert_ne!(vm.rc("nvmet-nosuch.rc"), 0);
    assert_ne!(vm.rc("sim-nosuch.rc"), 0);
    for f in ["nvmet-nosuch.dmesg", "sim-nosuch.dmesg"] {
        let log = vm.read(f);
        assert!(
            log.contains(
                r#"Connect Invalid Data Parameter, subsysnqn "nqn.2024-01.dev.nvfarm:nosuch""#
            ),
            "{f}: {log}"
        );
    }
}

fn firmware_updates_through_the_kernel_end_as_on_the_simulator() {
    let vm = vm();
    assert_eq!(
        vm.rc("update-good.rc"),
        0,
        "update: {}",
        vm.read("update-good.err")
    );
    assert_eq!(
        vm.read("sysfs-fw-after-update").trim(),
        "2.0.0",
        "sysfs firmware_rev after the update"
    );
    assert_eq!(
        vm.json("cli-id-ctrl-after-update.json")["fr"]
            .as_str()
            .unwrap()
            .trim(),
        "2.0.0"
    );
    assert!(
        vm.read("cli-fw-after-update.json").contains("2.0.0"),
        "{}",
        vm.read("cli-fw-after-update.json")
    );
    assert_eq!(
        vm.rc("update-corrupt.rc"),
        1,
        "a corrupt image is a test failure"
    );
    let err = vm.read("update-corrupt.err");
    assert!(
        err.contains("0x107") || err.contains("Invalid Firmware Image"),
        "{err}"
    );
    assert_eq!(
        vm.rc("update-bootfail.rc"),
        1,
        "{}",
        vm.read("update-bootfail.err")
    );
    assert_eq!(
        vm.read("sysfs-fw-after-bootfail").trim(),
        "2.0.0",
        "a boot-fail image is rolled back"
    );
    // nvme-cli's own download (its last chunk zero-padded to its transfer size), commit and reset.
    assert_eq!(
        vm.rc("cli-fw-download.rc"),
        0,
        "{}",
        vm.read("cli-fw-download.out")
    );
    assert_eq!(
        vm.rc("cli-fw-commit.rc"),
        0,
        "{}",
        vm.read("cli-fw-commit.out")
    );
    assert_eq!(vm.rc("cli-reset.rc"), 0, "{}", vm.read("cli-reset.out"));
    assert_eq!(vm.read("sysfs-fw-after-cli").trim(), "3.0.0");
    let after = vm.json("flash-fw-after-cli.json");
    fw_log_agrees(
        &vm.json("cli-fw-after-cli.json"),
        &after,
        "fw-log after nvme-cli's update",
    );
    assert_eq!(after["active_slot"], 3);
    assert_eq!(vm.json("sim-after-cli.json")["running_revision"], "3.0.0");
    // A drive that comes back as another controller: found again by serial, its new image verified.
    assert_eq!(
        vm.rc("update-rename.rc"),
        0,
        "{}\n{}",
        vm.read("update-rename.err"),
        vm.read("rename-cycle.out")
    );
    let (before, after) = (vm.read("rename-before"), vm.read("rename-after"));
    assert_ne!(
        before.trim(),
        after.trim(),
        "the drive came back under another name"
    );
    assert_eq!(vm.read("sysfs-fw-after-rename").trim(), "2.0.0");
    let log = vm.read("update-rename.err");
    assert!(
        log.contains(&format!(
            "re-enumerated as {} (was {})",
            after.trim(),
            before.trim()
        )),
        "{log}"
    );
}

fn io_through_the_kernel_sees_the_simulated_media_and_its_faults() {
    let vm = vm();
    assert_eq!(
        vm.rc("io-blk-verify.rc"),
        0,
        "{}",
        vm.read("io-blk-verify.err")
    );
    assert_eq!(
        vm.rc("io-ng-verify.rc"),
        0,
        "{}",
        vm.read("io-ng-verify.err")
    );
    for f in ["io-blk-verify.json", "io-ng-verify.json"] {
        assert_eq!(vm.json(f)["verify"]["mismatches"], 0, "{f}");
        assert_eq!(vm.json(f)["verify"]["blocks_checked"], 64, "{f}");
    }
    assert_eq!(vm.rc("fault.rc"), 0, "{}", vm.read("fault.out"));
    // Every read takes the 20 ms fault at least, on both paths, and the median moves with it.
    let lat = |f: &str, k: &str| {
        vm.json(f)["read"]["lat"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{f}: no read.lat.{k}: {}", vm.read(f)))
    };
    eprintln!(
        "randread 4k qd4 over NVMe/TCP: {:.0} IOPS, p50 {} µs; with a 20 ms read fault {:.0} IOPS, p50 {} µs (ng), {:.0} IOPS, p50 {} µs (block layer)",
        iops("io-ng-base.json"),
        lat("io-ng-base.json", "p50_ns") / 1000,
        iops("io-ng-slow.json"),
        lat("io-ng-slow.json", "p50_ns") / 1000,
        iops("io-blk-slow.json"),
        lat("io-blk-slow.json", "p50_ns") / 1000,
    );
    for f in ["io-ng-slow.json", "io-blk-slow.json"] {
        assert!(
            lat(f, "min_ns") >= 20_000_000,
            "{f}: a read finished sooner than the 20 ms latency fault allows: {}",
            vm.read(f)
        );
        assert!(
            lat(f, "p50_ns") > lat("io-ng-base.json", "p50_ns"),
            "{f}: the fault does not show in the median"
        );
    }
    // An injected Unrecovered Read Error: uring_cmd sees the NVMe status, the block layer ENODATA (the kernel's
    // BLK_STS_MEDIUM); both runs fail.
    assert_eq!(
        vm.rc("io-ng-status.rc"),
        1,
        "{}",
        vm.read("io-ng-status.err")
    );
    let e = vm.read("io-ng-status.err");
    assert!(e.contains("Unrecovered Read Error (0x4281"), "{e}");
    assert_eq!(
        vm.rc("io-blk-status.rc"),
        1,
        "{}",
        vm.read("io-blk-status.err")
    );
    let e = vm.read("io-blk-status.err");
    assert!(e.contains("No data available"), "{e}");
}

fn the_smoke_plan_runs_on_a_rig_whose_drive_is_attached_over_tcp() {
    let vm = vm();
    assert_eq!(vm.rc("smoke.rc"), 0, "{}", vm.read("smoke.err"));
    let r = vm.json("smoke.json");
    assert_eq!(r["outcome"], "passed");
    assert_eq!(r["plan"], "smoke");
    assert_eq!(
        r["plan_changes"],
        serde_json::json!(["randrw-verify.min_iops=10"])
    );
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "passed"),
        "{r:#}"
    );
    assert_eq!(r["steps"][3]["metrics"]["verify_mismatches"], 0.0);
    eprintln!(
        "smoke over NVMe/TCP: randrw-verify {:.0} read + {:.0} write IOPS",
        r["steps"][3]["metrics"]["read_iops"]
            .as_f64()
            .unwrap_or_default(),
        r["steps"][3]["metrics"]["write_iops"]
            .as_f64()
            .unwrap_or_default()
    );
    assert!(
        vm.read("smoke.xml")
            .contains(r#"tests="5" failures="0" errors="0""#),
        "{}",
        vm.read("smoke.xml")
    );
    // The boot-fail image fails the flash step, as on the simulator, and the drive runs 4.0.0 again.
    assert_eq!(
        vm.rc("smoke-bootfail.rc"),
        1,
        "{}",
        vm.read("smoke-bootfail.err")
    );
    let r = vm.json("smoke-bootfail.json");
    assert_eq!(r["steps"][0]["outcome"], "failed");
    let msg = r["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("rolled back") && msg.contains("4.0.0"),
        "{msg}"
    );
    assert_eq!(r["steps"][1]["outcome"], "skipped");
    assert_eq!(vm.read("sysfs-fw-after-smoke").trim(), "4.0.0");
}

fn a_vanished_drive_is_reconnected_after_a_power_cycle() {
    let vm = vm();
    assert_ne!(vm.rc("vanish-info.rc"), 0);
    assert_eq!(vm.read("state-vanished").trim(), "connecting");
    assert_eq!(
        vm.read("state-after-power-cycle").trim(),
        "live",
        "{}",
        vm.read("dmesg.txt")
    );
    assert_eq!(vm.rc("flash-after-vanish.rc"), 0);
    assert_eq!(vm.rc("disconnect.rc"), 0);
}

/// One VM boot, every check. Each check's message says what disagreed.
#[test]
fn a_simulated_drive_over_nvme_tcp_works_through_the_real_kernel() {
    the_drives_attach_through_the_kernels_nvme_tcp_driver();
    nvme_cli_and_nvme_flash_agree_on_every_shared_field();
    our_target_answers_as_the_kernels_nvmet_does();
    firmware_updates_through_the_kernel_end_as_on_the_simulator();
    io_through_the_kernel_sees_the_simulated_media_and_its_faults();
    the_smoke_plan_runs_on_a_rig_whose_drive_is_attached_over_tcp();
    a_vanished_drive_is_reconnected_after_a_power_cycle();
}
