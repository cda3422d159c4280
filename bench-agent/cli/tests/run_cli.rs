//! `bench-agent run` and `bench-agent io` end to end on simulated rigs: outcomes, exit codes, JUnit, logs.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{nvme_flash, run, workspace, Lab};

#[test]
fn the_smoke_plan_passes_with_a_good_image() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let fw = lab.image("2.0.0", "ok");
    let smoke = workspace().join("plans/smoke.toml");
    // The plan's 1000-IOPS floor is a drive's; the debug-built simulator under a parallel test suite may not
    // reach it, so this run lowers it (the io step still runs, verifies and reports its IOPS).
    let (code, report, junit, err) = lab.run_plan_with(
        &rigs,
        smoke.to_str().unwrap(),
        Some(&fw),
        &["--set", "randrw-verify.min_iops=1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["firmware"]["revision"], "2.0.0");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|s| s["outcome"] == "passed"), "{report:#}");
    let io = &steps[3];
    assert!(io["metrics"]["read_iops"].as_f64().unwrap() > 0.0);
    assert!(io["metrics"]["read_lat_p99_us"].as_f64().unwrap() > 0.0);
    assert_eq!(io["metrics"]["verify_mismatches"], 0.0);
    assert!(
        junit.contains(r#"tests="5" failures="0" errors="0" skipped="0""#),
        "{junit}"
    );
    // The I/O reached the simulated drive's SMART counters.
    let (_, smart, _) = run(
        &nvme_flash(),
        &[&format!("sim:{}", lab.p("drive")), "log", "smart", "--json"],
    );
    let smart: Value = serde_json::from_str(&smart).unwrap();
    assert_ne!(smart["data_units_written"], "0");
}

/// `--set STEP.KEY=VALUE` changes a step's setting for one run: the report names the change, the changed
/// threshold is the one applied, and a change the plan cannot take is refused before anything runs.
#[test]
fn a_set_override_changes_one_step_and_the_report_says_so() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let smoke = workspace().join("plans/smoke.toml");
    let root = lab.root.to_str().unwrap().to_string();
    let base = |set: &str| {
        vec![
            "run".to_string(),
            "--rigs".into(),
            rigs.clone(),
            "--rig".into(),
            "r1".into(),
            "--plan".into(),
            smoke.to_str().unwrap().into(),
            "--json".into(),
            "--work-dir".into(),
            root.clone(),
            "--set".into(),
            "flash.timeout=\"5m\"".into(),
            "--set".into(),
            set.into(),
            "--firmware".into(),
            lab.image("2.0.0", "ok"),
        ]
    };
    let args = base("randrw-verify.min_iops=100000000");
    let (code, out, err) = lab.agent(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        code, 1,
        "an unreachable IOPS threshold fails the io step: {err}"
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["plan_changes"],
        serde_json::json!(["flash.timeout=\"5m\"", "randrw-verify.min_iops=100000000"])
    );
    assert_eq!(report["steps"][3]["outcome"], "failed");
    assert!(
        report["steps"][3]["message"]
            .as_str()
            .unwrap()
            .contains("below the minimum 100000000"),
        "{report:#}"
    );
    assert!(
        err.contains("plan changed: step randrw-verify min_iops = 100000000"),
        "{err}"
    );
    let args = base("no-such-step.min_iops=1");
    let (code, _, err) = lab.agent(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--set 'no-such-step.min_iops=1'") && err.contains("randrw-verify"),
        "{err}"
    );
}

#[test]
fn an_image_that_breaks_a_check_fails_the_plan() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let fw = lab.image("2.0.0", "boot-fail");
    let smoke = workspace().join("plans/smoke.toml");
    let (code, report, junit, err) = lab.run_plan(&rigs, smoke.to_str().unwrap(), Some(&fw));
    assert_eq!(code, 1, "{err}");
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["steps"][0]["outcome"], "failed");
    assert!(
        report["steps"][0]["message"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{report:#}"
    );
    assert_eq!(report["steps"][1]["outcome"], "skipped");
    assert!(junit.contains("<failure message="), "{junit}");
    assert!(
        junit.contains(r#"failures="1" errors="0" skipped="4""#),
        "{junit}"
    );
}

#[test]
fn a_check_that_fails_continues_to_the_next_step() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "p.toml",
        r#"name = "ids"
[[step]]
kind = "identify"
expect = { mn = "SOMETHING ELSE", sn = "TST0001" }
[[step]]
kind = "smart"
critical_warning = 0
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 1, "{err}");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains(r#"mn is "NVFARM SIM X1", expected "SOMETHING ELSE""#),
        "{msg}"
    );
    assert_eq!(
        report["steps"][1]["outcome"], "passed",
        "identify continues on failure by default"
    );
}

#[test]
fn an_injected_hang_ends_as_timed_out() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "p.toml",
        "name = \"hang\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"identify\"\nexpect = { sn = \"TST0001\" }\ntimeout = \"1s\"\n[[step]]\nkind = \"smart\"\n",
    );
    // Create the drive by a first run, then break it.
    let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}");
    let (c, _, e) = run(
        &nvme_flash(),
        &[
            "sim",
            "fault",
            &lab.p("drive"),
            "hang",
            "--opcode",
            "identify",
        ],
    );
    assert_eq!(c, 0, "{e}");
    let (code, report, junit, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 4, "{err}");
    assert_eq!(report["outcome"], "timed_out");
    assert_eq!(report["steps"][0]["outcome"], "passed");
    assert_eq!(report["steps"][1]["outcome"], "timed_out");
    let msg = report["steps"][1]["message"].as_str().unwrap();
    assert!(
        msg.contains("Identify Controller got no answer within"),
        "{msg}"
    );
    assert_eq!(report["steps"][2]["outcome"], "skipped");
    assert!(junit.contains(r#"type="timeout""#), "{junit}");
}

#[test]
fn a_vanished_drive_is_an_infrastructure_error() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "p.toml",
        "name = \"v\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"smart\"\n",
    );
    let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}");
    run(&nvme_flash(), &["sim", "fault", &lab.p("drive"), "vanish"]);
    let (code, report, junit, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 3, "{err}");
    assert_eq!(report["outcome"], "error");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("is not present") && msg.contains("dropped off the bus"),
        "{msg}"
    );
    assert!(junit.contains(r#"type="infrastructure""#), "{junit}");
    // A power cycle brings it back and the plan passes again.
    let rigs_plan = lab.plan(
        "pc.toml",
        "name = \"pc\"\n[[step]]\nkind = \"power_cycle\"\n[[step]]\nkind = \"smart\"\n",
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &rigs_plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
}

#[test]
fn a_pty_console_line_is_matched() {
    let lab = Lab::new();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = nix::unistd::ttyname(&pty.slave).unwrap();
    let rigs = lab.rigs(&format!(
        "console = {{ serial = \"{}\", baud = 115200 }}",
        slave.display()
    ));
    let plan = lab.plan(
        "p.toml",
        r#"name = "console"
[[step]]
kind = "console_expect"
pattern = 'boot: rig {rig.name} ok \(\d+ ms\)'
timeout = "10s"
[[step]]
kind = "console_expect"
pattern = 'never printed'
timeout = "500ms"
"#,
    );
    let mut master = std::fs::File::from(pty.master);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        master
            .write_all(b"noise\r\nboot: rig r1 ok (42 ms)\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(master);
    });
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    writer.join().unwrap();
    assert_eq!(code, 1, "{err}\n{report:#}");
    assert_eq!(report["steps"][0]["outcome"], "passed", "{report:#}");
    assert!(report["steps"][0]["message"]
        .as_str()
        .unwrap()
        .contains("boot: rig r1 ok (42 ms)"));
    assert_eq!(report["steps"][1]["outcome"], "failed");
    assert!(report["steps"][1]["message"]
        .as_str()
        .unwrap()
        .contains("no console line matched /never printed/"));
    let console: Vec<&str> = report["console"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(console, ["noise", "boot: rig r1 ok (42 ms)"]);
    let log = report["steps"][0]["log"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|l| l.as_str().unwrap().contains("console +")
                && l.as_str().unwrap().contains("noise")),
        "{log:?}"
    );
}

#[test]
fn an_invalid_plan_is_rejected_before_the_drive_is_touched() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let good = lab.plan("good.toml", "name = \"g\"\n[[step]]\nkind = \"smart\"\n");
    assert_eq!(lab.run_plan(&rigs, &good, None).0, 0);
    let snapshot = |dir: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&lab.p("drive"));
    let bad = lab.plan("bad.toml", "name = \"b\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"io\"\nrw = \"randread\"\nbs = \"4k\"\niodepth = 0\nruntime = \"1s\"\n");
    let (code, _, _, err) = lab.run_plan(&rigs, &bad, None);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml") && err.contains("step 2 (io) key 'iodepth'"),
        "{err}"
    );
    assert_eq!(
        snapshot(&lab.p("drive")),
        before,
        "the drive's state directory changed"
    );
    // A plan that flashes needs --firmware, also checked up front.
    let flash = lab.plan("flash.toml", "name = \"f\"\n[[step]]\nkind = \"flash\"\n");
    let (code, _, _, err) = lab.run_plan(&rigs, &flash, None);
    assert_eq!(code, 2);
    assert!(
        err.contains("step 1 (1-flash) flashes firmware: give --firmware FILE"),
        "{err}"
    );
    assert_eq!(snapshot(&lab.p("drive")), before);
}

#[test]
fn a_bad_rig_file_names_the_rig_and_key() {
    let lab = Lab::new();
    let rigs = lab.rigs("consol = { sim = true }");
    let plan = lab.plan("p.toml", "name = \"g\"\n[[step]]\nkind = \"smart\"\n");
    let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 2);
    assert!(
        err.contains("rigs.toml: rig 'r1'") && err.contains("consol"),
        "{err}"
    );
    assert!(!Path::new(&lab.p("drive")).exists(), "nothing was created");
}

#[test]
fn verify_catches_a_corrupted_block() {
    let lab = Lab::new();
    let target = lab.p("data.bin");
    let (code, out, err) = lab.agent(&[
        "io",
        "--target",
        &target,
        "--rw",
        "write",
        "--bs",
        "4k",
        "--iodepth",
        "8",
        "--size",
        "1M",
        "--verify",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("verify: 256 blocks checked, all good"),
        "{out}"
    );
    let (code, out, _) = lab.agent(&[
        "io", "--target", &target, "--rw", "read", "--bs", "4k", "--size", "1M", "--verify",
    ]);
    assert_eq!(code, 0, "{out}");
    // Flip one byte in block 77.
    let mut data = std::fs::read(&target).unwrap();
    data[77 * 4096 + 1000] ^= 0x40;
    std::fs::write(&target, data).unwrap();
    let (code, out, _) = lab.agent(&[
        "io",
        "--target",
        &target,
        "--rw",
        "randread",
        "--bs",
        "4k",
        "--iodepth",
        "4",
        "--size",
        "1M",
        "--verify",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert!(j["verify"]["mismatches"].as_u64().unwrap() >= 1);
    assert_eq!(j["verify"]["first"]["offset"], 77 * 4096);
    assert!(
        j["verify"]["first"]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{j}"
    );
}

#[test]
fn io_reports_fio_style_results() {
    let lab = Lab::new();
    let target = lab.p("f.bin");
    let (code, out, err) = lab.agent(&[
        "io",
        "--target",
        &target,
        "--rw",
        "randrw",
        "--rwmixread",
        "70",
        "--bs",
        "4k",
        "--iodepth",
        "16",
        "--runtime",
        "1s",
        "--size",
        "16M",
        "--numjobs",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["jobs"].as_array().unwrap().len(), 2);
    let (r, w) = (
        j["read"]["ios"].as_f64().unwrap(),
        j["write"]["ios"].as_f64().unwrap(),
    );
    assert!(r > 0.0 && w > 0.0);
    let mix = r / (r + w);
    assert!((0.6..0.8).contains(&mix), "read share {mix}");
    for k in [
        "min_ns", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "max_ns",
    ] {
        assert!(j["read"]["lat"][k].as_u64().unwrap() > 0, "{k}");
    }
    assert!(j["read"]["lat"]["p50_ns"].as_u64() <= j["read"]["lat"]["p99_ns"].as_u64());
    assert_eq!(
        std::fs::metadata(&target).unwrap().len(),
        32 << 20,
        "two jobs of 16M each"
    );
    let (code, _, err) = lab.agent(&[
        "io",
        "--target",
        &target,
        "--rw",
        "sideways",
        "--runtime",
        "1s",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("sideways"), "{err}");
    let (code, _, err) = lab.agent(&[
        "io",
        "--target",
        &target,
        "--rw",
        "read",
        "--bs",
        "1000",
        "--runtime",
        "1s",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid io option 'bs'"), "{err}");
}

#[test]
fn a_file_that_is_not_a_firmware_image_is_invalid_input_not_a_test_failure() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let junk = lab.p("junk.bin");
    std::fs::write(&junk, vec![0x5a; 4097]).unwrap();
    let smoke = workspace().join("plans/smoke.toml");
    let (code, report, junit, err) = lab.run_plan(&rigs, smoke.to_str().unwrap(), Some(&junk));
    assert_eq!(code, 2, "{err}");
    assert_eq!(report["outcome"], "invalid");
    assert_eq!(report["steps"][0]["outcome"], "invalid");
    assert!(
        report["steps"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a whole number of dwords"),
        "{report:#}"
    );
    assert!(junit.contains(r#"type="invalid""#), "{junit}");
}

#[test]
fn script_output_of_any_shape_never_fails_a_passing_script() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    // Bytes that are not UTF-8 followed by more output than a pipe holds; then a 4 MB line without a break;
    // braces that are shell syntax, not placeholders.
    let plan = lab.plan(
        "p.toml",
        r#"name = "noisy"
[[step]]
name = "bad-bytes"
kind = "script"
command = "printf 'bad \\377\\376 bytes\\n'; seq 1 100000; echo done"
[[step]]
name = "endless-line"
kind = "script"
command = "head -c 4000000 /dev/zero | tr '\\0' x; echo; echo after"
[[step]]
name = "braces"
kind = "script"
command = "echo 1 2 | awk '{print $2}'; echo ${NVFARM_RIG}"
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let log = |i: usize| -> Vec<String> {
        report["steps"][i]["log"]
            .as_array()
            .unwrap()
            .iter()
            // "[  0.020s] text" → "text"
            .map(|l| {
                let l = l.as_str().unwrap();
                l.split_once("] ").map_or(l, |(_, t)| t).to_string()
            })
            .collect()
    };
    let bad = log(0);
    assert!(
        bad.iter().any(|l| l == "bad \u{fffd}\u{fffd} bytes"),
        "{:?}",
        &bad[..3]
    );
    assert_eq!(bad.last().map(String::as_str), Some("done"));
    let endless = log(1);
    let long = endless
        .iter()
        .find(|l| l.starts_with("xxxx"))
        .expect("the long line");
    assert!(
        long.len() < 10_000 && long.ends_with("[line truncated: 3991808 more bytes dropped]"),
        "{}",
        &long[long.len().saturating_sub(80)..]
    );
    assert_eq!(endless.last().map(String::as_str), Some("after"));
    assert_eq!(log(2)[1..], ["2".to_string(), "r1".to_string()]);
}

#[test]
fn values_from_the_drive_are_data_never_code() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    // A placeholder in shell text is refused before the drive is touched, with the variable to use instead.
    let plan = lab.plan(
        "p.toml",
        "name = \"splice\"\n[[step]]\nkind = \"script\"\ncommand = \"echo {drive.model}\"\n",
    );
    let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("read $NVFARM_DRIVE_MODEL instead"), "{err}");
    // Through the environment the value arrives as data; in a console pattern it matches itself.
    let plan = lab.plan(
        "q.toml",
        r#"name = "env"
[[step]]
kind = "script"
command = 'test "$NVFARM_DRIVE_SERIAL" = TST0001 && test "$SN" = TST0001 && echo "model: $NVFARM_DRIVE_MODEL"'
env = { SN = "{drive.serial}" }
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    // A revision with a regex metacharacter matches itself in a console pattern (unescaped, `0+` would not).
    let rigs = lab.rigs("console = { sim = true }");
    let fw = lab.image("2.0+b1", "ok");
    let plan = lab.plan(
        "r.toml",
        r#"name = "console"
[[step]]
kind = "flash"
[[step]]
kind = "console_expect"
pattern = 'activating firmware {firmware.revision} from slot \d'
timeout = "5s"
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, Some(&fw));
    assert_eq!(code, 0, "{err}\n{report:#}");
}

#[test]
fn a_drive_lost_during_the_commit_is_power_cycled_and_read_back() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.plan(
        "p.toml",
        "name = \"f\"\n[[step]]\nkind = \"flash\"\nwait_timeout = \"2s\"\n",
    );
    // The agent creates the simulated drive on first use.
    let smart = lab.plan("s.toml", "name = \"s\"\n[[step]]\nkind = \"smart\"\n");
    let (code, _, _, err) = lab.run_plan(&rigs, &smart, None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        &nvme_flash(),
        &[
            "sim",
            "fault",
            &lab.p("drive"),
            "vanish",
            "--opcode",
            "fw-commit",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, Some(&fw));
    assert_eq!(code, 3, "{err}\n{report:#}");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("the drive was lost during Firmware Commit")
            && msg.contains("after a recovery power cycle the drive runs 1.0.0 from slot 1"),
        "{msg}"
    );
}

#[test]
fn a_plan_this_bench_cannot_run_is_invalid_and_nothing_runs() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let victim = lab.p("victim.bin");
    let check = |plan: &str, rigs: &str, expect: &str| {
        let plan = lab.plan("p.toml", plan);
        let (code, report, junit, err) = lab.run_plan(rigs, &plan, None);
        assert_eq!(code, 2, "{err}\n{report:#}");
        assert_eq!(report["outcome"], "invalid", "{report:#}");
        let msg = report["steps"][0]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{msg}");
        assert!(
            report["steps"]
                .as_array()
                .unwrap()
                .iter()
                .skip(1)
                .all(|s| s["outcome"] == "skipped"),
            "{report:#}"
        );
        assert!(junit.contains(r#"type="invalid""#), "{junit}");
    };
    // A program that is not there, and a file the rig does not own: found before the first step runs.
    check(
        "name = \"p\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"script\"\ncommand = \"/no/such/check.sh --fast\"\n",
        &rigs,
        "step 2: script program /no/such/check.sh cannot be found",
    );
    check(
        &format!("name = \"p\"\n[[step]]\nkind = \"io\"\nrw = \"write\"\nsize = \"1M\"\ntarget = \"{victim}\"\n"),
        &rigs,
        "is not rig r1's drive and not under its io_paths (none)",
    );
    assert!(!Path::new(&victim).exists(), "nothing was written");
    // A bench that runs no scripts.
    let no_scripts = lab.rigs_with("scripts = \"none\"", "");
    check(
        "name = \"p\"\n[[step]]\nkind = \"script\"\ncommand = \"true\"\n",
        &no_scripts,
        "this bench does not run script steps",
    );
    // A path the rig file allows is fine.
    let scratch = lab.p("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let allowed = lab.rigs_with("", &format!("io_paths = [\"{scratch}\"]"));
    let plan = lab.plan(
        "ok.toml",
        &format!("name = \"p\"\n[[step]]\nkind = \"io\"\nrw = \"write\"\nsize = \"1M\"\ntarget = \"{scratch}/data.bin\"\n"),
    );
    let (code, report, _, err) = lab.run_plan(&allowed, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
}

#[test]
fn a_confined_bench_runs_its_own_programs_directly_without_a_shell() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let dir = lab.p("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let prog = format!("{dir}/args.sh");
    std::fs::write(
        &prog,
        "#!/bin/sh\nfor a in \"$@\"; do echo \"arg: $a\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rigs = lab.rigs_with(&format!("scripts = {{ dir = \"{dir}\" }}"), "");
    let plan = lab.plan(
        "p.toml",
        "name = \"p\"\n[[step]]\nkind = \"script\"\ncommand = \"args.sh 'a b' '$HOME;rm -rf /'\"\n",
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let log: Vec<&str> = report["steps"][0]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(log.iter().any(|l| l.ends_with("arg: a b")), "{log:?}");
    assert!(
        log.iter().any(|l| l.ends_with("arg: $HOME;rm -rf /")),
        "no shell expanded anything: {log:?}"
    );
    // Anything outside the directory is refused.
    let plan = lab.plan(
        "q.toml",
        "name = \"q\"\n[[step]]\nkind = \"script\"\ncommand = \"/bin/sh -c true\"\n",
    );
    let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 2, "{err}");
}

/// A rig file with one simulated rig `r1` whose drive only a power cycle activates, with or without power.
fn conventional_rig(lab: &Lab, power: bool) -> String {
    let text = format!(
        r#"[agent]
name = "test"
[[rig]]
name = "r1"
drive = {{ sim = "{}", serial = "TST0001", firmware = "1.0.0", size = "128M", boot_time = "50ms", activation = "conventional" }}
{}
"#,
        lab.p("drive"),
        if power { "power = { sim = true }" } else { "" }
    );
    let f = lab.p(if power {
        "rigs-power.toml"
    } else {
        "rigs-bare.toml"
    });
    std::fs::write(&f, text).unwrap();
    f
}

fn smart_counts(lab: &Lab) -> (String, String) {
    let (_, smart, _) = run(
        &nvme_flash(),
        &[&format!("sim:{}", lab.p("drive")), "log", "smart", "--json"],
    );
    let smart: Value = serde_json::from_str(&smart).unwrap();
    (
        smart["power_cycles"].as_str().unwrap().to_string(),
        smart["unsafe_shutdowns"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_drive_only_a_power_cycle_activates_is_flashed_through_the_rigs_power_or_blamed_on_the_rig() {
    let lab = Lab::new();
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.plan(
        "flash.toml",
        "name = \"f\"\n[[step]]\nkind = \"flash\"\n[[step]]\nkind = \"smart\"\n",
    );
    // Without power control the rig cannot activate the image: an infrastructure error naming the reset,
    // and the drive really still runs the old image with the new one pending.
    let bare = conventional_rig(&lab, false);
    let (code, report, junit, err) = lab.run_plan(&bare, &plan, Some(&fw));
    assert_eq!(code, 3, "{err}\n{report:#}");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("needs a conventional reset (power cycle)")
            && msg.contains("still running 1.0.0"),
        "{msg}"
    );
    assert!(junit.contains(r#"type="infrastructure""#), "{junit}");
    assert_eq!(smart_counts(&lab).0, "0", "nothing power-cycled the drive");
    // With the rig's power control it is flashed, after a shutdown notification: no unsafe shutdown.
    let powered = conventional_rig(&lab, true);
    let (code, report, _, err) = lab.run_plan(&powered, &plan, Some(&fw));
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert_eq!(report["firmware"]["revision"], "2.0.0");
    assert_eq!(smart_counts(&lab), ("1".to_string(), "0".to_string()));
}

#[test]
fn a_power_cycle_step_is_orderly_and_counts_no_unsafe_shutdown() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "pc.toml",
        "name = \"pc\"\n[[step]]\nkind = \"power_cycle\"\noff_time = \"10ms\"\n",
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let log = report["steps"][0]["log"].to_string();
    assert!(log.contains("shutdown notification sent"), "{log}");
    assert_eq!(smart_counts(&lab), ("1".to_string(), "0".to_string()));
    // A bare power cut (the simulator's switch, as a tripped relay) is an unsafe shutdown.
    run(&nvme_flash(), &["sim", "power", &lab.p("drive"), "off"]);
    run(&nvme_flash(), &["sim", "power", &lab.p("drive"), "on"]);
    run(&nvme_flash(), &[&format!("sim:{}", lab.p("drive")), "wait"]);
    assert_eq!(smart_counts(&lab), ("2".to_string(), "1".to_string()));
}

/// A simulated drive in the lab (64 MiB, fast boots), as `sim:DIR`.
fn sim_drive(lab: &Lab, extra: &[&str]) -> String {
    let dir = lab.p("drive");
    let mut args = vec![
        "sim",
        "create",
        &dir,
        "--size",
        "64M",
        "--boot-time",
        "50ms",
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = run(&nvme_flash(), &args);
    assert_eq!(code, 0, "{err}");
    format!("sim:{dir}")
}

fn smart_of(dev: &str) -> Value {
    let (code, out, err) = run(&nvme_flash(), &[dev, "log", "smart", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn io_on_a_simulated_drive_goes_through_its_controller_and_is_counted_by_it() {
    let lab = Lab::new();
    let dev = sim_drive(&lab, &[]);
    // 256 writes of 4 KiB with verify: 256 reads back, every one a command the drive counts.
    let (code, out, err) = lab.agent(&[
        "io",
        "--target",
        &dev,
        "--rw",
        "write",
        "--bs",
        "4k",
        "--iodepth",
        "4",
        "--size",
        "1M",
        "--verify",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["engine"], "sim_nvme");
    assert_eq!(r["verify"]["blocks_checked"], 256);
    let s = smart_of(&dev);
    assert_eq!(s["host_write_commands"], "256");
    assert_eq!(
        s["host_read_commands"], "256",
        "the verify read-back is counted"
    );
    // A status fault on reads is an I/O failure naming the status.
    let dir = lab.p("drive");
    run(
        &nvme_flash(),
        &[
            "sim", "fault", &dir, "status", "0x0281", "--opcode", "read", "--count", "1",
        ],
    );
    let (code, _, err) = lab.agent(&[
        "io", "--target", &dev, "--rw", "read", "--bs", "4k", "--size", "64k",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Unrecovered Read Error") || err.contains("0x281"),
        "{err}"
    );
    // MDTS (128 KiB here) bounds one command (the drive refuses a larger one with Invalid Field): a 512 KiB I/O
    // goes as four commands, as the kernel splits a large request, and its data reads back.
    let before = smart_of(&dev);
    let (code, out, err) = lab.agent(&[
        "io", "--target", &dev, "--rw", "write", "--bs", "512k", "--size", "1M", "--verify",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["verify"]["mismatches"], 0, "{out}");
    assert!(
        r["ring"]
            .as_str()
            .unwrap_or_default()
            .contains("split into 4 commands of at most 131072 bytes"),
        "{out}"
    );
    let after = smart_of(&dev);
    let delta = |k: &str| {
        let n = |v: &Value| v[k].as_str().unwrap().parse::<u64>().unwrap();
        n(&after) - n(&before)
    };
    assert_eq!(delta("host_write_commands"), 8, "2 I/Os of 4 commands each");
    assert_eq!(delta("host_read_commands"), 8);
    // A drive that lost power is an infrastructure error, not a test failure.
    run(&nvme_flash(), &["sim", "power", &dir, "off"]);
    let (code, _, err) = lab.agent(&[
        "io", "--target", &dev, "--rw", "read", "--bs", "4k", "--size", "64k",
    ]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn an_io_step_on_a_sim_rig_sees_the_drives_faults_and_the_media_target_bypasses_them() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = |target: &str| {
        lab.plan(
            &format!("io-{target}.toml"),
            &format!("name = \"io\"\n[[step]]\nkind = \"io\"\nrw = \"randread\"\nbs = \"4k\"\nsize = \"1M\"\niodepth = 4\nruntime = \"300ms\"\ntarget = \"{target}\"\n"),
        )
    };
    let (code, report, _, err) = lab.run_plan(&rigs, &plan("namespace"), None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let log = report["steps"][0]["log"].to_string();
    assert!(
        log.contains("NVMe commands to the simulated controller"),
        "{log}"
    );
    // Blocks 100-199 are now bad: the step through the controller fails on them (random reads over 256
    // blocks for 300 ms meet them), the media target reads the file underneath and does not see it.
    run(
        &nvme_flash(),
        &[
            "sim",
            "fault",
            &lab.p("drive"),
            "media-error",
            "--lba",
            "100",
            "--blocks",
            "100",
        ],
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan("namespace"), None);
    assert_eq!(code, 1, "{err}\n{report:#}");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("I/O failed") && msg.contains("Unrecovered Read Error"),
        "{msg}"
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan("media"), None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let log = report["steps"][0]["log"].to_string();
    assert!(log.contains("io_uring"), "{log}");
}

#[test]
fn nvme_steps_send_the_commands_a_plan_writes_and_check_their_statuses() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "nvme.toml",
        r#"name = "nvme checks"
[[step]]
name = "smart log"
kind = "nvme"
opcode = 0x02
cdw10 = 0x007f0002
data_in = 512
[[step]]
name = "identify with a bad CNS"
kind = "nvme"
opcode = 0x06
cdw10 = 0xff
data_in = 4096
expect = "Invalid Field in Command"
[[step]]
name = "read past the end"
kind = "nvme"
queue = "io"
opcode = 0x02
cdw10 = 0xffffffff
cdw11 = 0xff
data_in = 4096
expect = "lba_out_of_range"
[[step]]
name = "mark LBA 5 bad"
kind = "nvme"
queue = "io"
opcode = 0x04
cdw10 = 5
[[step]]
name = "read it"
kind = "nvme"
queue = "io"
opcode = 0x02
cdw10 = 5
data_in = 4096
expect = 0x0281
[[step]]
name = "expects what a drive does not do"
kind = "nvme"
opcode = 0xc1
data_out = "00112233"
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 1, "the last step fails: {err}\n{report:#}");
    let steps = report["steps"].as_array().unwrap();
    let outcomes: Vec<&str> = steps
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["passed", "passed", "passed", "passed", "passed", "failed"],
        "{report:#}"
    );
    assert_eq!(steps[4]["metrics"]["status_code"], 0x281 as f64);
    let msg = steps[5]["message"].as_str().unwrap();
    assert!(
        msg.contains("completed with Invalid Command Opcode")
            && msg.contains("expected Successful Completion"),
        "{msg}"
    );
    assert!(steps[0]["log"].to_string().contains("data: "), "{report:#}");
}

#[test]
fn a_bad_nvme_step_is_refused_naming_the_field_and_what_would_be_valid() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    for (body, field, says) in [
        ("opcode = 300", "opcode", "0 to 255"),
        (
            "opcode = 0x01\ndata_in = 512",
            "data_in",
            "sends no data to the host",
        ),
        (
            "opcode = 0x06\ndata_out = \"00\"",
            "data_out",
            "takes no data from the host",
        ),
        (
            "opcode = 0x06\ndata_in = 4096\nexpect = \"Bogus Status\"",
            "expect",
            "not a status the spec names",
        ),
        (
            "opcode = 0x06\ndata_in = 99999999",
            "data_in",
            "0 to 1048576",
        ),
        ("opcode = 0x03", "opcode", "moves data both ways"),
        (
            "opcode = 0x06\nqueue = \"sq3\"",
            "queue",
            "expected admin or io",
        ),
    ] {
        let plan = lab.plan(
            "bad.toml",
            &format!("name = \"b\"\n[[step]]\nkind = \"nvme\"\n{body}\n"),
        );
        let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(field) && err.contains(says), "{body}: {err}");
    }
}

#[test]
fn an_io_verify_workload_runs_through_a_firmware_update_and_its_data_reads_back_after_activation() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.plan(
        "par.toml",
        r#"name = "flash under load"
[[step]]
kind = "parallel"
name = "io while flashing"
[[step.steps]]
kind = "io"
rw = "randrw"
bs = "4k"
iodepth = 4
size = "2M"
runtime = "2s"
verify = true
[[step.steps]]
kind = "flash"
[[step]]
kind = "identify"
expect = { fr = "{firmware.revision}" }
"#,
    );
    let (code, report, junit, err) = lab.run_plan(&rigs, &plan, Some(&fw));
    assert_eq!(code, 0, "{err}\n{report:#}");
    let group = &report["steps"][0];
    assert_eq!(group["kind"], "parallel");
    let msg = group["message"].as_str().unwrap();
    assert!(
        msg.contains("1.1-io: passed") && msg.contains("1.2-flash: passed"),
        "{msg}"
    );
    // The io member's verify read back every block it wrote, across the activation's reset.
    assert!(
        group["metrics"]["1.1-io.verify_mismatches"] == 0.0,
        "{group:#}"
    );
    let log = group["log"].to_string();
    assert!(
        log.contains("[1.2-flash]") && log.contains("[1.1-io]"),
        "{log}"
    );
    // The revision the flash found is what the next step checks.
    assert_eq!(report["steps"][1]["outcome"], "passed", "{report:#}");
    assert_eq!(report["firmware"]["revision"], "2.0.0");
    assert!(
        junit.contains(r#"tests="2" failures="0" errors="0""#),
        "{junit}"
    );
}

#[test]
fn a_group_ends_as_its_worst_member_and_bad_groups_are_refused() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "par.toml",
        r#"name = "group"
[[step]]
kind = "parallel"
steps = [
  { kind = "smart" },
  { kind = "nvme", opcode = 0xc1, data_out = "00" },
]
[[step]]
kind = "smart"
"#,
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 1, "{err}\n{report:#}");
    assert_eq!(report["steps"][0]["outcome"], "failed");
    assert_eq!(
        report["steps"][1]["outcome"], "skipped",
        "a failed group stops the plan by default"
    );
    for (body, says) in [
        ("steps = [{ kind = \"smart\" }]", "2 to 8 steps"),
        (
            "steps = [{ kind = \"smart\" }, { kind = \"parallel\", steps = [{ kind = \"smart\" }, { kind = \"smart\" }] }]",
            "cannot hold another group",
        ),
        ("steps = [{ kind = \"smart\" }, { kind = \"console_expect\", pattern = \"x\" }]", "console_expect"),
        ("steps = [{ kind = \"flash\" }, { kind = \"flash\" }]", "at most one flash"),
        ("steps = [{ kind = \"smart\" }, { kind = \"io\", rw = \"bogus\" }]", "steps[1]"),
    ] {
        let plan = lab.plan("bad.toml", &format!("name = \"b\"\n[[step]]\nkind = \"parallel\"\n{body}\n"));
        let (code, _, _, err) = lab.run_plan(&rigs, &plan, None);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(says), "{body}: {err}");
    }
}

#[test]
fn a_read_verify_after_an_unsafe_power_cut_catches_writes_the_cache_lost() {
    let lab = Lab::new();
    let dev = sim_drive(&lab, &["--write-cache", "4M"]);
    let dir = lab.p("drive");
    let write = |lab: &Lab| {
        let (code, _, err) = lab.agent(&[
            "io", "--target", &dev, "--rw", "write", "--bs", "4k", "--size", "256k", "--verify",
            "--seed", "7",
        ]);
        assert_eq!(code, 0, "{err}");
    };
    let read_verify = |lab: &Lab| {
        let (code, out, err) = lab.agent(&[
            "io", "--target", &dev, "--rw", "read", "--bs", "4k", "--size", "256k", "--verify",
            "--seed", "7", "--json",
        ]);
        (
            code,
            serde_json::from_str::<Value>(&out).unwrap_or(Value::Null),
            err,
        )
    };
    // Written, flushed (the write run's own read-back does not flush), then cut: everything is there.
    write(&lab);
    run(&nvme_flash(), &[&dev, "flush"]);
    run(&nvme_flash(), &["sim", "power", &dir, "off"]);
    run(&nvme_flash(), &["sim", "power", &dir, "on"]);
    run(&nvme_flash(), &[&dev, "wait"]);
    let (code, r, err) = read_verify(&lab);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["verify"]["mismatches"], 0);
    // Written over a fresh region and cut without a flush: the read-verify names the lost blocks.
    run(
        &nvme_flash(),
        &[&dev, "dsm", "--slbs", "0", "--blocks", "64", "--ad"],
    );
    write(&lab);
    run(&nvme_flash(), &["sim", "power", &dir, "off"]);
    run(&nvme_flash(), &["sim", "power", &dir, "on"]);
    run(&nvme_flash(), &[&dev, "wait"]);
    let (code, r, err) = read_verify(&lab);
    assert_eq!(code, 1, "{err}\n{r:#}");
    assert_eq!(r["verify"]["mismatches"], 64, "{r:#}");
    assert!(
        r["verify"]["first"]["reason"]
            .as_str()
            .unwrap()
            .contains("no verify header"),
        "{r:#}"
    );
}

#[test]
fn an_io_step_gated_on_the_previous_run_fails_when_the_drive_gets_slower() {
    let lab = Lab::new();
    let rigs = lab.rigs("");
    let plan = lab.plan(
        "gate.toml",
        "name = \"gate\"\n[[step]]\nname = \"randread\"\nkind = \"io\"\nrw = \"randread\"\nbs = \"4k\"\niodepth = 4\nsize = \"1M\"\nruntime = \"400ms\"\nbaseline = \"previous\"\nmax_regression = \"30%\"\n",
    );
    let (code, report, _, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert!(
        report["steps"][0]["log"]
            .to_string()
            .contains("this run is the baseline"),
        "{report:#}"
    );
    assert!(lab.root.join("history/r1/gate.json").is_file());
    // Every read now takes 20 ms longer: far more than 30% fewer IOPS than the run before.
    run(
        &nvme_flash(),
        &[
            "sim",
            "fault",
            &lab.p("drive"),
            "latency",
            "20ms",
            "--opcode",
            "read",
        ],
    );
    let (code, report, junit, err) = lab.run_plan(&rigs, &plan, None);
    assert_eq!(code, 1, "{err}\n{report:#}");
    let msg = report["steps"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("read_iops")
            && msg.contains("vs previous")
            && msg.contains("worse than the 30% allowed"),
        "{msg}"
    );
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(
        report["steps"][0]["log"]
            .to_string()
            .contains("baseline: read_iops"),
        "{report:#}"
    );
    // A baseline that is not one, or a threshold without a baseline, is refused.
    for (extra, says) in [
        (
            "baseline = \"last-week\"",
            "the only baseline is \"previous\"",
        ),
        ("max_regression = \"5%\"", "add baseline = \"previous\""),
        (
            "baseline = \"previous\"\nmax_regression = \"lots\"",
            "a percentage",
        ),
    ] {
        let bad = lab.plan(
            "bad.toml",
            &format!(
                "name = \"b\"\n[[step]]\nkind = \"io\"\nrw = \"read\"\nruntime = \"1s\"\n{extra}\n"
            ),
        );
        let (code, _, _, err) = lab.run_plan(&rigs, &bad, None);
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(says), "{extra}: {err}");
    }
}

#[test]
fn a_lost_overwrite_is_caught_by_a_read_verify_that_knows_the_seed() {
    let lab = Lab::new();
    let dev = sim_drive(&lab, &["--write-cache", "4M"]);
    let dir = lab.p("drive");
    let io = |lab: &Lab, rw: &str, seed: &str| {
        let (code, out, err) = lab.agent(&[
            "io", "--target", &dev, "--rw", rw, "--bs", "4k", "--size", "256k", "--verify",
            "--seed", seed, "--json",
        ]);
        (
            code,
            serde_json::from_str::<Value>(&out).unwrap_or(Value::Null),
            err,
        )
    };
    // Seed 1 on the media; seed 2 written over it but only into the cache, then a bare power cut.
    assert_eq!(io(&lab, "write", "1").0, 0);
    run(&nvme_flash(), &[&dev, "flush"]);
    assert_eq!(io(&lab, "write", "2").0, 0);
    run(&nvme_flash(), &["sim", "power", &dir, "off"]);
    run(&nvme_flash(), &["sim", "power", &dir, "on"]);
    run(&nvme_flash(), &[&dev, "wait"]);
    // Every block is intact (seed 1's data), so only knowing the seed finds the lost overwrite.
    let (code, r, err) = io(&lab, "read", "2");
    assert_eq!(code, 1, "{err}\n{r:#}");
    assert_eq!(r["verify"]["mismatches"], 64, "{r:#}");
    let why = r["verify"]["first"]["reason"].as_str().unwrap();
    assert!(
        why.contains("written with seed 1, expected seed 2"),
        "{why}"
    );
    let (code, r, err) = io(&lab, "read", "1");
    assert_eq!(code, 0, "{err}\n{r:#}");
}
