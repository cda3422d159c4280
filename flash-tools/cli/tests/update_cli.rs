//! `nvme-flash` end to end on simulated drives: every update scenario, with exit codes, messages and the state
//! the drive is left in.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn nvme_flash(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nvme-flash"))
        .args(args)
        .output()
        .expect("run nvme-flash");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn ok(args: &[&str]) -> Run {
    let r = nvme_flash(args);
    assert_eq!(r.code, 0, "nvme-flash {args:?} failed:\n{}", r.all());
    r
}

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Lab { _tmp: tmp, root }
    }
    fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
    /// A drive with fast boots; extra `sim create` flags appended.
    fn drive(&self, name: &str, extra: &[&str]) -> String {
        let dir = self.path(name);
        let mut args = vec![
            "sim",
            "create",
            &dir,
            "--boot-time",
            "50ms",
            "--size",
            "64M",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        format!("sim:{dir}")
    }
    fn image(&self, name: &str, rev: &str, extra: &[&str]) -> String {
        let out = self.path(name);
        let mut args = vec!["sim", "image", "--rev", rev, "-o", &out];
        args.extend_from_slice(extra);
        ok(&args);
        out
    }
}

fn running(dev: &str, extra: &[&str]) -> String {
    let mut args = vec![dev, "info", "--json"];
    args.extend_from_slice(extra);
    ok(&args).json()["fr"].as_str().unwrap().trim().to_string()
}

#[test]
fn a_good_image_updates_and_verifies() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.1.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["outcome"], "updated");
    assert_eq!(j["previous_revision"], "1.0.0");
    assert_eq!(j["running_revision"], "2.1.0");
    assert_eq!(j["target_slot"], 2);
    assert_eq!(j["running_slot"], 2);
    assert_eq!(j["chunks"], 3, "256 KiB + header in 128 KiB chunks");
    assert_eq!(running(&dev, &[]), "2.1.0");
    // Progress lines went to stderr, naming each step.
    for step in [
        "check image",
        "inspect drive",
        "download",
        "commit",
        "activate",
        "wait for drive",
        "verify",
    ] {
        assert!(
            r.stderr.contains(step),
            "missing step '{step}' in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn a_corrupt_image_is_rejected_and_the_old_firmware_keeps_running() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let mut bytes = std::fs::read(&img).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&img, bytes).unwrap();
    let r = nvme_flash(&[&dev, "update", &img]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("Invalid Firmware Image (0x4107, DNR)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("step 'commit'"), "{}", r.stdout);
    assert!(r.stdout.contains("still running 1.0.0"), "{}", r.stdout);
    assert_eq!(running(&dev, &[]), "1.0.0");
}

#[test]
fn read_only_slot_1_is_an_invalid_slot() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--slot1-readonly"]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--slot", "1", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let j = r.json();
    assert_eq!(j["failure"]["step"], "commit");
    assert_eq!(
        j["failure"]["status"],
        "Invalid Firmware Slot (0x4106, DNR)"
    );
    assert!(
        j["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("FRMW marks slot 1 read-only"),
        "{j}"
    );
    assert_eq!(running(&dev, &[]), "1.0.0");
    // Without --slot the tool picks a writable slot and succeeds.
    ok(&[&dev, "update", &img]);
    assert_eq!(running(&dev, &[]), "2.0.0");
}

#[test]
fn an_overlapping_download_is_reported_by_name() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    ok(&[&dev, "fw-download", &img, "--xfer", "64k"]);
    // Re-sending the image from offset 64 KiB overlaps what the drive holds.
    let r = nvme_flash(&[
        &dev,
        "fw-download",
        &img,
        "--xfer",
        "64k",
        "--offset",
        "64k",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("Overlapping Range (0x4114, DNR)"),
        "{}",
        r.stderr
    );
}

#[test]
fn power_loss_during_download_commits_nothing_and_a_retry_succeeds() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let dir = lab.path("d");
    let img = lab.image("fw.img", "2.0.0", &[]);
    ok(&["sim", "fault", &dir, "power-loss", "--after", "1"]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(
        r.code,
        3,
        "a lost drive is an infrastructure failure: {}",
        r.all()
    );
    let j = r.json();
    assert_eq!(j["failure"]["step"], "download");
    assert!(
        j["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("power was lost"),
        "{j}"
    );
    let state = j["failure"]["drive_state"].as_str().unwrap();
    assert!(
        state.contains("running 1.0.0") && state.contains("nothing was committed"),
        "{state}"
    );
    let smart = ok(&[&dev, "log", "smart", "--json"]).json();
    assert_eq!(smart["unsafe_shutdowns"], "1");
    assert_eq!(smart["power_cycles"], "1");
    let fw = ok(&[&dev, "log", "fw", "--json"]).json();
    assert_eq!(
        fw["next_active_slot"],
        Value::Null,
        "no activation is pending"
    );
    assert_eq!(
        fw["slots"][1]["revision"],
        Value::Null,
        "nothing was committed to slot 2"
    );
    // The fault fired once; the retry goes through.
    let r = ok(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.json()["outcome"], "updated");
}

#[test]
fn an_image_that_fails_to_boot_is_rolled_back() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("bad.img", "2.0.0", &["--behaviour", "boot-fail"]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let j = r.json();
    assert_eq!(j["outcome"], "rolled_back");
    let msg = j["failure"]["message"].as_str().unwrap();
    assert!(msg.starts_with("2.0.0 is running but"), "{msg}");
    assert!(
        msg.contains("critical warning bits 0x04") || msg.contains("Internal Error"),
        "{msg}"
    );
    assert_eq!(j["rollback"]["verified"], true);
    assert_eq!(j["rollback"]["revision"], "1.0.0");
    assert!(
        j["failure"]["drive_state"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{j}"
    );
    assert_eq!(running(&dev, &[]), "1.0.0");
    let fw = ok(&[&dev, "log", "fw", "--json"]).json();
    assert_eq!(fw["active_slot"], 1);
}

#[test]
fn an_image_the_drive_falls_back_from_is_a_failed_update() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fb.img", "2.0.0", &["--behaviour", "fallback"]);
    let r = nvme_flash(&[&dev, "update", &img]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("fell back to slot 1 (1.0.0)"),
        "{}",
        r.stdout
    );
    assert_eq!(running(&dev, &[]), "1.0.0");
}

#[test]
fn a_drive_that_vanishes_after_activation_is_found_under_its_new_name() {
    let lab = Lab::new();
    let bus = lab.path("bus");
    lab.drive("d", &["--serial", "VANISH01", "--bus", &bus]);
    let img = lab.image(
        "v.img",
        "2.0.0",
        &["--behaviour", "vanish", "--duration", "700ms"],
    );
    let listed = ok(&["list", "--sysfs-root", &bus, "--json"]).json();
    assert_eq!(listed[0]["name"], "nvme0");
    assert_eq!(listed[0]["serial"], "VANISH01");
    let r = nvme_flash(&[
        "serial=VANISH01",
        "update",
        &img,
        "--sysfs-root",
        &bus,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["device_name_before"], "nvme0");
    assert_eq!(j["device_name_after"], "nvme1");
    assert_eq!(j["running_revision"], "2.0.0");
    assert!(
        r.stderr.contains("re-enumerated as nvme1 (was nvme0)"),
        "{}",
        r.stderr
    );
    let listed = ok(&["list", "--sysfs-root", &bus, "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "nvme1");
}

#[test]
fn a_drive_that_stays_gone_is_reported_unreachable() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image(
        "v.img",
        "2.0.0",
        &["--behaviour", "vanish", "--duration", "forever"],
    );
    let r = nvme_flash(&[&dev, "update", &img, "--wait-timeout", "1s", "--json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert_eq!(j["failure"]["step"], "wait_for_drive");
    assert!(
        j["failure"]["drive_state"]
            .as_str()
            .unwrap()
            .contains("needs a power cycle"),
        "{j}"
    );
    ok(&["sim", "power-cycle", &lab.path("d")]);
    ok(&[&dev, "wait", "--for", "5s"]);
    assert_eq!(
        running(&dev, &[]),
        "2.0.0",
        "the committed image runs after the power cycle"
    );
}

#[test]
fn a_slow_booting_image_is_waited_for() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image(
        "s.img",
        "2.0.0",
        &["--behaviour", "slow-boot", "--duration", "1500ms"],
    );
    let r = ok(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.json()["outcome"], "updated");
    let waited = r
        .stderr
        .lines()
        .find(|l| l.contains("is back as"))
        .unwrap()
        .to_string();
    assert!(
        waited.contains("after 1s") || waited.contains("after 2s"),
        "{waited}"
    );
}

#[test]
fn a_hung_command_times_out_with_a_clear_error() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    ok(&[
        "sim",
        "fault",
        &lab.path("d"),
        "hang",
        "--opcode",
        "identify",
    ]);
    let r = nvme_flash(&[&dev, "info", "--timeout", "700ms"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr
            .contains("Identify Controller got no answer within 700ms (hung command)"),
        "{}",
        r.stderr
    );
    // An update hits the same hang at its first step and says so.
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--timeout", "500ms", "--json"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(r.json()["failure"]["kind"], "timeout");
    ok(&["sim", "fault", &lab.path("d"), "clear"]);
    ok(&[&dev, "info"]);
}

#[test]
fn a_controller_without_firmware_download_fails_cleanly() {
    // The drive answers Firmware Image Download the way QEMU's controller does.
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    ok(&[
        "sim",
        "fault",
        &lab.path("d"),
        "status",
        "0x4001",
        "--opcode",
        "fw-download",
    ]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("does not support Firmware Image Download: it answered Invalid Command Opcode (0x4001, DNR)"),
        "{}",
        r.stdout
    );
    assert_eq!(running(&dev, &[]), "1.0.0");
}

#[test]
fn transient_chunk_errors_are_retried() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    ok(&[
        "sim",
        "fault",
        &lab.path("d"),
        "status",
        "0x0006",
        "--opcode",
        "fw-download",
        "--count",
        "2",
    ]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = ok(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.json()["chunk_retries"], 2);
}

#[test]
fn a_sha256_mismatch_sends_nothing() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--sha256", &"0".repeat(64)]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("sha256 mismatch"), "{}", r.stdout);
    let errors = ok(&[&dev, "log", "smart", "--json"]).json();
    assert_eq!(errors["num_err_log_entries"], "0");
}

#[test]
fn next_reset_stages_and_a_later_reset_activates() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = ok(&[&dev, "update", &img, "--activate", "next-reset", "--json"]);
    assert_eq!(r.json()["outcome"], "staged");
    assert_eq!(running(&dev, &[]), "1.0.0");
    ok(&[&dev, "reset"]);
    ok(&[&dev, "wait"]);
    assert_eq!(running(&dev, &[]), "2.0.0");
}

#[test]
fn activate_now_uses_commit_action_3() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = ok(&[&dev, "update", &img, "--activate", "now"]);
    assert!(r.stderr.contains("activated without reset"), "{}", r.stderr);
    assert_eq!(running(&dev, &[]), "2.0.0");
    // A drive that needs a reset for action 3 says so, and the tool performs it.
    let dev2 = lab.drive("d2", &["--no-immediate-activation"]);
    let r = ok(&[&dev2, "update", &img, "--activate", "now"]);
    assert!(
        r.stderr
            .contains("Firmware Activation Requires Controller Level Reset"),
        "{}",
        r.stderr
    );
    assert_eq!(running(&dev2, &[]), "2.0.0");
}

#[test]
fn fw_commit_runs_each_action() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    ok(&[&dev, "fw-download", &img]);
    ok(&[&dev, "fw-commit", "--slot", "2", "--action", "0"]);
    ok(&[&dev, "fw-commit", "--slot", "2", "--action", "2"]);
    assert_eq!(
        ok(&[&dev, "log", "fw", "--json"]).json()["next_active_slot"],
        2
    );
    ok(&[&dev, "fw-download", &img]);
    ok(&[&dev, "fw-commit", "--slot", "3", "--action", "1"]);
    assert_eq!(
        ok(&[&dev, "log", "fw", "--json"]).json()["next_active_slot"],
        3
    );
    ok(&[&dev, "fw-commit", "--slot", "2", "--action", "3"]);
    ok(&[&dev, "wait"]);
    let fw = ok(&[&dev, "log", "fw", "--json"]).json();
    assert_eq!(fw["active_slot"], 2);
    let r = nvme_flash(&[&dev, "fw-commit", "--slot", "2", "--action", "9"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("expected 0, 1, 2 or 3"), "{}", r.stderr);
}

#[test]
fn bad_device_addresses_and_missing_drives_are_clear_errors() {
    let r = nvme_flash(&["sda", "info"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("invalid device 'sda'") && r.stderr.contains("serial=SERIAL"),
        "{}",
        r.stderr
    );
    let r = nvme_flash(&["sim:/nonexistent/drive", "info"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("nvme-flash sim create"), "{}", r.stderr);
    let lab = Lab::new();
    let r = nvme_flash(&["serial=NOPE", "info", "--sysfs-root", &lab.path("empty")]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("no NVMe controller matches serial=NOPE"),
        "{}",
        r.stderr
    );
    let r = nvme_flash(&["sim", "create", &lab.path("x"), "--slots", "9"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("'slots'"), "{}", r.stderr);
    assert!(!Path::new(&lab.path("x")).join("sim.json").exists());
}

#[test]
fn self_test_wait_reports_the_result() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--self-test-short", "300ms"]);
    let r = ok(&[&dev, "self-test", "short", "--wait", "--json"]);
    assert_eq!(r.json()["result"], 0);
    ok(&["sim", "fault", &lab.path("d"), "self-test-failure"]);
    let r = nvme_flash(&[&dev, "self-test", "short", "--wait", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(
        r.json()["result_text"],
        "completed with one or more failed segments"
    );
}

#[test]
fn a_file_that_is_not_a_firmware_image_is_bad_input_and_nothing_is_sent() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    // Not a whole number of dwords: no NVMe drive could take it.
    let odd = lab.path("odd.bin");
    std::fs::write(&odd, vec![0x5a; 4097]).unwrap();
    let r = nvme_flash(&[&dev, "update", &odd]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stdout.contains("not a whole number of dwords"),
        "{}",
        r.all()
    );
    // Aligned but not in this drive's image format: the simulated drive's format is known, so it is bad input too.
    let junk = lab.path("junk.bin");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let r = nvme_flash(&[&dev, "update", &junk, "--json"]);
    assert_eq!(r.code, 2, "{}", r.all());
    let j = r.json();
    assert_eq!(j["failure"]["kind"], "bad_input");
    assert!(
        j["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("not a firmware image for this simulated drive"),
        "{j}"
    );
    assert_eq!(j["chunks"], 0, "nothing was downloaded: {j}");
    assert_eq!(running(&dev, &[]), "1.0.0");
}

#[test]
fn a_command_that_times_out_leaves_the_state_unknown_until_it_is_recovered_and_read_back() {
    let lab = Lab::new();
    let dev = lab.drive("d", &[]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    for (opcode, step, command) in [
        ("fw-commit", "commit", "Firmware Commit"),
        ("fw-download", "download", "Firmware Image Download"),
    ] {
        ok(&[
            "sim",
            "fault",
            &lab.path("d"),
            "hang",
            "--opcode",
            opcode,
            "--count",
            "1",
        ]);
        let r = nvme_flash(&[&dev, "update", &img, "--timeout", "500ms", "--json"]);
        assert_eq!(r.code, 4, "{}", r.all());
        let f = &r.json()["failure"];
        assert_eq!(f["step"], step, "{f}");
        assert_eq!(f["kind"], "timeout", "{f}");
        let state = f["drive_state"].as_str().unwrap();
        assert!(
            !state.starts_with("unchanged")
                && state.contains(&format!("was unknown after {command} timed out"))
                && state.contains("after a controller reset the drive runs 1.0.0 from slot 1"),
            "{state}"
        );
    }
    // Recovered for real: the next update goes through.
    let r = ok(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.json()["outcome"], "updated");
}

fn smart(dev: &str) -> (u64, u64) {
    let j = ok(&[dev, "log", "smart", "--json"]).json();
    // 128-bit counters are JSON strings, as nvme-cli prints them.
    let n = |k: &str| j[k].as_str().unwrap().parse::<u64>().unwrap();
    (n("power_cycles"), n("unsafe_shutdowns"))
}

#[test]
fn a_drive_that_needs_a_subsystem_reset_gets_one_not_a_controller_reset() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--activation", "subsystem"]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["running_revision"], "2.0.0");
    assert!(
        r.stderr
            .contains("Firmware Activation Requires NVM Subsystem Reset"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("NVM subsystem reset to activate slot 2"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("controller reset to activate"),
        "{}",
        r.stderr
    );
    assert_eq!(smart(&dev), (0, 0), "no power cycle was needed");
}

#[test]
fn a_subsystem_reset_the_drive_refuses_falls_back_to_an_orderly_power_cycle() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--activation", "subsystem", "--no-subsystem-reset"]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["running_revision"], "2.0.0");
    assert!(
        r.stderr.contains("the NVM subsystem reset was refused"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("in place of the NVM subsystem reset"),
        "{}",
        r.stderr
    );
    assert_eq!(
        smart(&dev),
        (1, 0),
        "one power cycle, after a shutdown notification: not an unsafe shutdown"
    );
}

#[test]
fn a_drive_only_a_power_cycle_activates_is_power_cycled_and_a_controller_reset_is_not_trusted() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--activation", "conventional"]);
    let img = lab.image("fw.img", "2.0.0", &[]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["running_revision"], "2.0.0");
    assert!(
        r.stderr
            .contains("Firmware Activation Requires Conventional Reset"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("shutdown notification sent first"),
        "{}",
        r.stderr
    );
    assert_eq!(smart(&dev), (1, 0));
    // With --power-cycle-cmd the command does it (here: a command that fails, so the update says so).
    let dev2 = lab.drive("d2", &["--activation", "conventional"]);
    let r = nvme_flash(&[
        &dev2,
        "update",
        &img,
        "--power-cycle-cmd",
        "echo relay offline >&2; exit 4",
    ]);
    assert_eq!(r.code, 3, "an infrastructure failure: {}", r.all());
    assert!(r.all().contains("relay offline"), "{}", r.all());
    assert!(
        r.all()
            .contains("activates at a conventional reset (power cycle); still running 1.0.0"),
        "{}",
        r.all()
    );
    assert_eq!(running(&dev2, &[]), "1.0.0");
}

#[test]
fn activating_now_past_mtfa_commits_again_and_resets() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--mtfa", "500ms"]);
    let img = lab.image(
        "s.img",
        "2.0.0",
        &["--behaviour", "slow-boot", "--duration", "800ms"],
    );
    let r = nvme_flash(&[&dev, "update", &img, "--activate", "now", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["running_revision"], "2.0.0");
    assert!(
        r.stderr.contains("would exceed MTFA, 500ms"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("controller reset to activate slot 2"),
        "{}",
        r.stderr
    );
    // An absurd MTFA is refused with what would be valid.
    let bad = nvme_flash(&["sim", "create", &lab.path("x"), "--mtfa", "2h"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--mtfa 2h"), "{}", bad.stderr);
}

#[test]
fn a_rollback_gives_the_reset_the_drive_asks_for_too() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--activation", "conventional"]);
    let img = lab.image("bad.img", "2.0.0", &["--behaviour", "boot-fail"]);
    let r = nvme_flash(&[&dev, "update", &img, "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let j = r.json();
    assert_eq!(j["outcome"], "rolled_back", "{j}");
    assert_eq!(j["rollback"]["verified"], true);
    assert_eq!(running(&dev, &[]), "1.0.0");
    assert_eq!(
        smart(&dev),
        (2, 0),
        "one orderly power cycle to activate, one to roll back"
    );
}

#[test]
fn the_nvm_commands_act_on_the_drive_as_nvme_cli_names_them() {
    let lab = Lab::new();
    let dev = lab.drive("d", &["--mdts", "1"]);
    let data = lab.path("data.bin");
    std::fs::write(&data, vec![0x5au8; 8 * 4096]).unwrap();
    // 8 blocks through a drive whose MDTS is 8 KiB: split into commands of 2 blocks.
    ok(&[&dev, "write", "--slba", "10", "--data", &data]);
    let back = lab.path("back.bin");
    ok(&[&dev, "read", "--slba", "10", "--blocks", "8", "-o", &back]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&data).unwrap());
    ok(&[&dev, "compare", "-s", "10", "-c", "7", "-d", &data]);
    // Write Uncorrectable: the block reads back as an Unrecovered Read Error (exit 1, the status by name).
    ok(&[
        &dev,
        "write-uncor",
        "--start-block",
        "12",
        "--block-count",
        "0",
    ]);
    let r = nvme_flash(&[&dev, "read", "--slba", "12", "-o", &back]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Unrecovered Read Error"), "{}", r.stderr);
    let r = nvme_flash(&[&dev, "compare", "-s", "10", "-c", "7", "-d", &data]);
    assert_eq!(r.code, 1, "{}", r.all());
    // Write Zeroes heals it and zeroes it; the compare now fails as a mismatch.
    ok(&[&dev, "write-zeroes", "-s", "12", "-c", "1"]);
    ok(&[&dev, "read", "--slba", "12", "--blocks", "2", "-o", &back]);
    assert!(std::fs::read(&back).unwrap().iter().all(|&b| b == 0));
    let r = nvme_flash(&[&dev, "compare", "-s", "10", "-c", "7", "-d", &data]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("Compare Failure"), "{}", r.stderr);
    // Deallocate two ranges; read back zeros.
    ok(&[&dev, "dsm", "--slbs", "10,16", "--blocks", "2,2", "--ad"]);
    ok(&[&dev, "read", "--slba", "16", "--blocks", "2", "-o", &back]);
    assert!(std::fs::read(&back).unwrap().iter().all(|&b| b == 0));
    ok(&[&dev, "flush"]);
    // Bad input names the flags and what would be valid.
    let r = nvme_flash(&[&dev, "dsm", "--slbs", "1,2", "--blocks", "1"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--slbs gives 2 range(s) and --blocks 1"),
        "{}",
        r.stderr
    );
    let r = nvme_flash(&[&dev, "compare", "-s", "0", "-c", "1", "-d", &data]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--block-count 1 compares 2 block(s)"),
        "{}",
        r.stderr
    );
    let r = nvme_flash(&[&dev, "write-zeroes", "-s", "0", "-c", "70000"]);
    assert_eq!(r.code, 2, "{}", r.all());
}
