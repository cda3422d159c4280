//! A cancel (Ctrl-C / SIGTERM on `bench-agent run`, the controller's cancel in daemon mode) stops every step kind
//! at its next safe point, in bounded time: the interrupted step ends `cancelled`, the rest `skipped`, the drive
//! is left in a known state, and the reports are still written.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{nvme_flash, run, Lab};

/// How long a cancelled run may take to end at most (the steps below would each run a minute or more).
const BOUND: Duration = Duration::from_secs(30);

struct Cancelled {
    code: i32,
    report: Value,
    junit: String,
    stderr: String,
}

/// Runs `plan` on the lab's rig and sends SIGINT after `after`.
fn cancel_during(
    lab: &Lab,
    rigs: &str,
    plan: &str,
    firmware: Option<&str>,
    after: Duration,
) -> Cancelled {
    let junit = lab.p("junit.xml");
    let work = lab.root.to_str().unwrap().to_string();
    let mut args = vec![
        "run",
        "--rigs",
        rigs,
        "--rig",
        "r1",
        "--plan",
        plan,
        "--junit",
        &junit,
        "--json",
        "--work-dir",
        &work,
    ];
    if let Some(f) = firmware {
        args.extend(["--firmware", f]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench-agent"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run did not stop within {BOUND:?} of the cancel:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Cancelled {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        junit: std::fs::read_to_string(&junit).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Creates the rig's simulated drive (as the first run on the rig does).
fn drive_ready(lab: &Lab, rigs: &str) -> String {
    let plan = lab.plan(
        "warmup.toml",
        "name = \"w\"\n[[step]]\nkind = \"wait_for_drive\"\n",
    );
    let (code, _, err) = lab.agent(&[
        "run",
        "--rigs",
        rigs,
        "--rig",
        "r1",
        "--plan",
        &plan,
        "--work-dir",
        lab.root.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    format!("sim:{}", lab.p("drive"))
}

/// The step named `name` in the report.
fn step<'a>(c: &'a Cancelled, name: &str) -> &'a Value {
    c.report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no report:\n{}", c.stderr))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {}", c.report))
}

/// The interrupted step is cancelled well before it would have ended, the next one skipped, exit 4, and the
/// JUnit file says the same.
fn check(c: &Cancelled, interrupted: &str, natural: Duration) {
    assert_eq!(c.code, 4, "{}", c.stderr);
    let s = step(c, interrupted);
    assert_eq!(s["outcome"], "cancelled", "{}", c.report);
    assert!(
        s["duration_ms"].as_u64().unwrap() < natural.as_millis() as u64 / 2,
        "{interrupted} ran on after the cancel: {s}"
    );
    assert_eq!(step(c, "after")["outcome"], "skipped", "{}", c.report);
    assert!(c.junit.contains(r#"type="cancelled""#), "{}", c.junit);
    assert!(
        c.junit
            .contains("<skipped message=\"not run: the run was cancelled\"/>"),
        "{}",
        c.junit
    );
}

const AFTER: &str = "\n[[step]]\nname = \"after\"\nkind = \"smart\"\n";

#[test]
fn a_long_io_step_stops_at_the_cancel_long_before_its_runtime() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"soak\"\nkind = \"io\"\nrw = \"randrw\"\nbs = \"4k\"\niodepth = 32\nruntime = \"120s\"\nsize = \"32M\"\nverify = true\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "soak", Duration::from_secs(120));
    assert!(
        step(&c, "soak")["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{}",
        c.report
    );
}

#[test]
fn waiting_for_a_drive_that_is_gone_stops_at_the_cancel() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let dev = drive_ready(&lab, &rigs);
    let (code, _, err) = run(
        &nvme_flash(),
        &["sim", "fault", dev.trim_start_matches("sim:"), "vanish"],
    );
    assert_eq!(code, 0, "{err}");
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"wait\"\nkind = \"wait_for_drive\"\ntimeout = \"120s\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "wait", Duration::from_secs(120));
}

#[test]
fn a_power_cycle_is_cut_short_and_power_comes_back_on() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let dev = drive_ready(&lab, &rigs);
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"cycle\"\nkind = \"power_cycle\"\noff_time = \"120s\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "cycle", Duration::from_secs(120));
    let (code, out, err) = run(
        &nvme_flash(),
        &["sim", "status", dev.trim_start_matches("sim:"), "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert!(
        st["power"]["state"] == "on" || st["power"]["state"] == "booting",
        "power must be back on: {st}"
    );
}

#[test]
fn a_flash_stops_between_download_chunks_and_commits_nothing() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let dev = drive_ready(&lab, &rigs);
    let dir = dev.trim_start_matches("sim:").to_string();
    // Each download chunk takes 1.5 s: the cancel lands during the first.
    let (code, _, err) = run(
        &nvme_flash(),
        &[
            "sim",
            "fault",
            &dir,
            "latency",
            "1500ms",
            "--opcode",
            "admin:0x11",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"flash\"\nkind = \"flash\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, Some(&fw), Duration::from_millis(700));
    check(&c, "flash", Duration::from_secs(5));
    let msg = step(&c, "flash")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("nothing was committed"), "{msg}");
    let (_, out, _) = run(&nvme_flash(), &[&dev, "info", "--json"]);
    let id: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(id["fr"].as_str().unwrap().trim(), "1.0.0");
}

#[test]
fn an_extended_self_test_is_aborted_on_the_drive() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let dev = drive_ready(&lab, &rigs);
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"dst\"\nkind = \"selftest\"\ntest = \"extended\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "dst", Duration::from_secs(60));
    let (_, out, _) = run(&nvme_flash(), &[&dev, "log", "selftest", "--json"]);
    let log: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        log["current_operation"], 0,
        "the self-test was aborted: {log}"
    );
}

#[test]
fn a_console_wait_and_a_script_stop_at_the_cancel() {
    let lab = Lab::new();
    let rigs = lab.rigs("console = { sim = true }");
    let plan = lab.plan(
        "p.toml",
        &format!("name = \"p\"\n[[step]]\nname = \"console\"\nkind = \"console_expect\"\npattern = \"never printed\"\ntimeout = \"120s\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "console", Duration::from_secs(120));
    let plan = lab.plan(
        "q.toml",
        &format!("name = \"q\"\n[[step]]\nname = \"script\"\nkind = \"script\"\ncommand = \"sleep 120\"\n{AFTER}"),
    );
    let c = cancel_during(&lab, &rigs, &plan, None, Duration::from_millis(1500));
    check(&c, "script", Duration::from_secs(120));
}
