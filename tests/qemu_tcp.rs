//! The real-kernel tier, NVMe/TCP: boots QEMU (tests/qemu/vm.sh) and, inside the guest on its own loopback,
//! serves a simulated drive with `nvme-flash sim serve`, attaches it with the kernel's nvme-tcp host driver
//! (`nvme connect`) and drives it through the real kernel (tests/qemu/guest-nvme-tcp.sh): nvme-cli and nvme-flash
//! agree on Identify, a firmware update through the kernel activates (Identify, slot log and sysfs show the new
//! revision), a corrupt image is refused with 0x107, a boot-fail image is rolled back, the io engine verifies
//! data through the block layer and uring_cmd and sees an injected latency, and a drive that vanishes is
//! reconnected by the kernel once it is power-cycled.
//!
//! Needs qemu-system-x86_64, busybox-static, nvme-cli and cpio (`scripts/setup.sh` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use nvfarm_tests::{bin, workspace};

fn vm_output() -> &'static Path {
    static OUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, out) = OUT.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("vm");
        let ws = workspace();
        let run = Command::new(ws.join("tests/qemu/vm.sh"))
            .arg(ws.join("tests/qemu/guest-nvme-tcp.sh"))
            .arg(&out)
            .arg(bin("nvme-flash"))
            .arg(bin("bench-agent"))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "vm.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        (tmp, out)
    });
    out
}

fn read(name: &str) -> String {
    let p = vm_output().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(vm_output().join("guest.log")).unwrap_or_default();
        panic!("{}: {e}\nguest log:\n{log}", p.display())
    })
}

fn rc(name: &str) -> i32 {
    read(name).trim().parse().unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name))
        .unwrap_or_else(|e| panic!("{name} is not JSON: {e}\n{}", read(name)))
}

/// Every field nvme-cli prints, nvme-flash prints with the same value; returns how many were compared.
fn agreeing_fields(cli: &Value, ours: &Value, what: &str) -> usize {
    let cli = cli
        .as_object()
        .unwrap_or_else(|| panic!("{what}: nvme-cli output is not an object"));
    let ours = ours.as_object().unwrap();
    let mut compared = 0;
    for (k, v) in cli {
        let mine = ours
            .get(k)
            .unwrap_or_else(|| panic!("{what}: nvme-cli prints '{k}' but nvme-flash does not"));
        assert_eq!(
            mine, v,
            "{what}: field '{k}' differs (nvme-cli {v}, nvme-flash {mine})"
        );
        compared += 1;
    }
    compared
}

fn iops(name: &str) -> f64 {
    json(name)["read"]["iops"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: no read.iops\n{}", read(name)))
}

#[test]
fn a_simulated_drive_over_nvme_tcp_works_through_the_real_kernel() {
    assert_eq!(
        rc("insmod-fabrics.rc"),
        0,
        "insmod nvme-fabrics.ko: {}",
        read("guest.log")
    );
    assert_eq!(rc("insmod-tcp.rc"), 0, "insmod nvme-tcp.ko");
    assert_eq!(
        rc("connect.rc"),
        0,
        "nvme connect: {}\n{}",
        read("connect.out"),
        read("serve.err")
    );
    assert_eq!(read("transport").trim(), "tcp");

    // Identify through the kernel's NVMe/TCP driver, both tools.
    let n = agreeing_fields(
        &json("cli-id-ctrl.json"),
        &json("flash-id-ctrl.json"),
        "id-ctrl",
    );
    assert!(n >= 50, "id-ctrl: only {n} fields compared");
    let id = json("cli-id-ctrl.json");
    assert_eq!(id["subnqn"], "nqn.2024-01.dev.nvfarm:sim:NVFTCP0001");
    assert_eq!(id["sn"].as_str().unwrap().trim(), "NVFTCP0001");
    let n = agreeing_fields(&json("cli-id-ns.json"), &json("flash-id-ns.json"), "id-ns");
    assert!(n >= 20, "id-ns: only {n} fields compared");
    let sim = json("sim-status.json");
    assert_eq!(
        id["fr"].as_str().unwrap().trim(),
        sim["running_revision"].as_str().unwrap_or("1.0.0")
    );
    assert_eq!(
        rc("flash-by-serial.rc"),
        0,
        "the TCP-attached drive is found by serial"
    );

    // Firmware through the kernel.
    assert_eq!(
        rc("update-good.rc"),
        0,
        "update: {}",
        read("update-good.err")
    );
    assert_eq!(
        read("sysfs-fw-after-update").trim(),
        "2.0.0",
        "sysfs firmware_rev after the update"
    );
    assert_eq!(
        json("cli-id-ctrl-after-update.json")["fr"]
            .as_str()
            .unwrap()
            .trim(),
        "2.0.0"
    );
    assert!(
        read("cli-fw-after-update.json").contains("2.0.0"),
        "{}",
        read("cli-fw-after-update.json")
    );
    assert_eq!(
        rc("update-corrupt.rc"),
        1,
        "a corrupt image is a test failure"
    );
    let err = read("update-corrupt.err");
    assert!(
        err.contains("0x107") || err.contains("Invalid Firmware Image"),
        "{err}"
    );
    assert_eq!(
        rc("update-bootfail.rc"),
        1,
        "{}",
        read("update-bootfail.err")
    );
    assert_eq!(
        read("sysfs-fw-after-bootfail").trim(),
        "2.0.0",
        "a boot-fail image is rolled back"
    );

    // Data, verified, through the block layer and the generic char device; a latency fault shows.
    assert_eq!(rc("io-blk-verify.rc"), 0, "{}", read("io-blk-verify.err"));
    assert_eq!(rc("io-ng-verify.rc"), 0, "{}", read("io-ng-verify.err"));
    assert_eq!(rc("fault.rc"), 0, "{}", read("fault.out"));
    let (base, slow, blk) = (
        iops("io-ng-base.json"),
        iops("io-ng-slow.json"),
        iops("io-blk-slow.json"),
    );
    eprintln!("randread 4k qd4 over NVMe/TCP: {base:.0} IOPS; with a 20 ms read fault {slow:.0} (ng), {blk:.0} (block layer)");
    assert!(
        slow < base / 2.0,
        "a 20 ms read latency fault is invisible on uring_cmd: {base} vs {slow}"
    );
    assert!(
        blk < 4.0 * 1000.0 / 20.0 * 1.5,
        "the block layer does not see the 20 ms fault: {blk} IOPS"
    );

    // Vanish: the kernel loses the controller and gets it back once the drive is power-cycled.
    assert_ne!(rc("vanish-info.rc"), 0);
    assert_eq!(read("state-vanished").trim(), "connecting");
    assert_eq!(
        read("state-after-power-cycle").trim(),
        "live",
        "{}",
        read("dmesg.txt")
    );
    assert_eq!(rc("flash-after-vanish.rc"), 0);
    assert_eq!(rc("disconnect.rc"), 0);
}
