//! Failure paths end to end: cancels and stops, unusable rigs, input mistakes, and what the CI stage says.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{lab_with_agent, long_plan, wait_child};
use nvfarm_tests::lab::Lab;

#[test]
fn ctrl_c_cancels_the_job_and_the_junit_shows_what_ran_what_was_cut_and_what_never_ran() {
    let lab = lab_with_agent(1);
    let fw = lab.image("2.0.0", "ok");
    let plan = long_plan(&lab, 60);
    let junit = lab.path("cancelled.xml");
    let mut run = lab
        .farmctl_cmd(&[
            "run",
            "--firmware",
            &fw,
            "--plan",
            &plan,
            "--rig",
            "bench-r1",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lab.wait("the soak step", Duration::from_secs(30), || {
        lab.farmctl(&["--json", "jobs"]).json()[0]["state"] == "testing"
    });
    let id = lab.farmctl(&["--json", "jobs"]).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.id() as i32), Signal::SIGINT).unwrap();
    let st = wait_child(&mut run, Duration::from_secs(60));
    let mut err = String::new();
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(4), "{err}");
    assert!(err.contains(&format!("job {id} cancelled")), "{err}");
    // farmctl waited for the agent: the report has the steps that ran, the one cut short, and the rest.
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"tests="3" failures="0" errors="1" skipped="1""#),
        "{x}"
    );
    assert!(x.contains(r#"type="cancelled""#), "{x}");
    let job = lab.job(&id);
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["settled"], true, "{job}");
    // The agent read the drive after the cancel: the rig shows what it runs now.
    let rig = lab
        .rigs_json()
        .into_iter()
        .find(|r| r["name"] == "bench-r1")
        .unwrap();
    assert_eq!(rig["state"], "idle", "{rig}");
    assert_eq!(rig["firmware_revision"], "2.0.0", "{rig}");
    assert!(rig["active_slot"].as_u64().unwrap() >= 1, "{rig}");
    let quick = lab.path("quick.toml");
    let o = lab.farmctl(&[
        "--json",
        "run",
        "--firmware",
        &fw,
        "--plan",
        quick.to_str().unwrap(),
        "--rig",
        "bench-r1",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let log = std::fs::read_to_string(lab.path("bench.log")).unwrap();
    assert!(log.contains("cancel requested by the controller"), "{log}");
}

#[test]
fn an_agent_stopped_with_sigterm_reports_its_job_as_cancelled() {
    let mut lab = lab_with_agent(1);
    let fw = lab.image("2.0.0", "ok");
    let plan = long_plan(&lab, 60);
    let mut run = lab
        .farmctl_cmd(&[
            "--json",
            "run",
            "--firmware",
            &fw,
            "--plan",
            &plan,
            "--rig",
            "bench-r1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.wait("the soak step", Duration::from_secs(30), || {
        lab.farmctl(&["--json", "jobs"]).json()[0]["state"] == "testing"
    });
    let t0 = Instant::now();
    lab.stop_agent("bench", Signal::SIGTERM);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the agent took {:?} to stop",
        t0.elapsed()
    );
    let st = wait_child(&mut run, Duration::from_secs(20));
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(st.code(), Some(4), "{out}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    let soak = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "soak")
        .cloned()
        .unwrap();
    assert_eq!(soak["outcome"], "cancelled", "{job}");
}

#[test]
fn the_controller_address_is_forgiving_and_its_mistakes_are_explained() {
    let mut lab = Lab::new("");
    lab.start_controller();
    // host:port without a scheme is http://host:port.
    let o = lab.farmctl_at(&format!("127.0.0.1:{}", lab.grpc), &["rigs"]);
    assert_eq!(o.code, 0, "{}", o.all());
    // The dashboard's port answers a gRPC call by naming the gRPC port: a usage mistake.
    let o = lab.farmctl_at(&format!("http://127.0.0.1:{}", lab.http), &["rigs"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr.contains("this is the controller's HTTP port")
            && o.stderr
                .contains(&format!("--controller http://127.0.0.1:{}", lab.grpc)),
        "{}",
        o.all()
    );
    // A server that accepts connections but never answers: an infrastructure error, not a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let o = lab.farmctl_at(&addr, &["rigs"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("keep-alive timed out") || o.stderr.contains("no answer within"),
        "{}",
        o.all()
    );
    let o = lab.farmctl_at("grpc://127.0.0.1:1", &["rigs"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr.contains("unsupported scheme grpc://"),
        "{}",
        o.all()
    );
}

#[test]
fn the_ci_stage_writes_junit_even_when_it_never_got_to_run() {
    let lab = Lab::new("");
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.path("quick.toml");
    let junit = lab.path("unreachable.xml");
    // No controller listens on port 1.
    let o = lab.farmctl_at(
        "http://127.0.0.1:1",
        &[
            "run",
            "--firmware",
            &fw,
            "--plan",
            plan.to_str().unwrap(),
            "--rig",
            "bench-r1",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}", o.all());
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"<testsuite name="quick@bench-r1""#)
            && x.contains(r#"type="infrastructure""#)
            && x.contains("cannot reach the controller"),
        "{x}"
    );
    // A plan that does not parse: invalid input, in the JUnit too.
    let bad = lab.path("bad.toml");
    std::fs::write(&bad, "name = \"bad\"\n[[step]]\nkind = \"warp-drive\"\n").unwrap();
    let junit = lab.path("invalid.xml");
    let o = lab.farmctl_at(
        "http://127.0.0.1:1",
        &[
            "run",
            "--firmware",
            &fw,
            "--plan",
            bad.to_str().unwrap(),
            "--rig",
            "bench-r1",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"type="invalid""#) && x.contains("warp-drive"),
        "{x}"
    );
}

#[test]
fn an_unusable_rig_is_refused_at_once_with_its_reason_and_input_mistakes_say_what_would_work() {
    let lab = lab_with_agent(2);
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.path("quick.toml");
    let plan = plan.to_str().unwrap();
    let o = lab.farmctl(&[
        "rig",
        "quarantine",
        "bench-r2",
        "--reason",
        "drive smells of smoke",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let junit = lab.path("quarantined.xml");
    let run = |target: &[&str], extra: &[&str]| {
        let mut args = vec!["run", "--firmware", &fw, "--plan", plan];
        args.extend_from_slice(target);
        args.extend_from_slice(extra);
        lab.farmctl(&args)
    };
    // A quarantined rig: exit 3 with the reason, never "busy"; the JUnit says so too.
    let o = run(
        &["--rig", "bench-r2"],
        &["--junit", junit.to_str().unwrap()],
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr
            .contains("bench-r2 quarantined: drive smells of smoke")
            && !o.stderr.contains("busy"),
        "{}",
        o.all()
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"type="infrastructure""#) && x.contains("drive smells of smoke"),
        "{x}"
    );
    let o = lab.farmctl(&["reserve", "--rig", "bench-r2"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(o.stderr.contains("quarantined"), "{}", o.all());
    // Every rig with the labels unusable: 3; one usable: it runs there.
    let o = lab.farmctl(&["rig", "maintenance", "bench-r1", "--reason", "recabling"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let o = run(&["--labels", "model=X1"], &[]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("bench-r1 in maintenance: recabling")
            && o.stderr.contains("bench-r2 quarantined"),
        "{}",
        o.all()
    );
    // Asked to wait, it queues and says why; it times out in the queue.
    let o = run(&["--rig", "bench-r2"], &["--wait", "--timeout", "2s"]);
    assert_eq!(o.code, 4, "{}", o.all());
    assert!(
        o.stderr.contains("queued (position 1)") && o.stderr.contains("bench-r2 quarantined"),
        "{}",
        o.all()
    );
    // Names and labels that no rig has: usage errors with what would work.
    let o = run(&["--rig", "bench-rl"], &[]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr
            .contains("no rig named 'bench-rl' (did you mean 'bench-r1'?)")
            && o.stderr.contains("rigs: bench-r1, bench-r2"),
        "{}",
        o.all()
    );
    let o = run(&["--labels", "modle=X1"], &[]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("did you mean 'model'?"), "{}", o.all());
    let o = run(&["--labels", "model=X9"], &[]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("values of model: X1"), "{}", o.all());
    // A sweep runs where it can and reports the rest as skipped, with why.
    let o = lab.farmctl(&["rig", "restore", "bench-r1"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let junit = lab.path("sweep.xml");
    let o = lab.farmctl(&[
        "--json",
        "sweep",
        "--firmware",
        &fw,
        "--plan",
        plan,
        "--labels",
        "model=X1",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let r = o.json();
    assert_eq!(
        r["rigs"],
        serde_json::json!(["bench-r1", "bench-r2"]),
        "{r:#}"
    );
    let skipped = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rig"] == "bench-r2")
        .cloned()
        .unwrap();
    assert_eq!(skipped["outcome"], "skipped", "{r:#}");
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("quarantined: drive smells of smoke"),
        "{r:#}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"<testsuite name="quick@bench-r2""#)
            && x.contains("<skipped message=\"not run: quarantined"),
        "{x}"
    );
    // Nothing to cancel on a finished job.
    let id = lab.farmctl(&["--json", "jobs"]).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = lab.farmctl(&["cancel", &id]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr.contains("had already finished (passed"),
        "{}",
        o.all()
    );
}

/// A lab whose controller stores at most `job_log` of each job's log.
fn lab_with_log_cap(job_log: &str) -> Lab {
    let mut lab = Lab::new(&format!("[limits]\njob_log = \"{job_log}\""));
    lab.start_controller();
    let file = lab.rigs("bench", 1);
    lab.start_agent("bench", &file, None);
    lab.wait("the rig to be idle", Duration::from_secs(20), || {
        lab.rig_state("bench-r1") == "idle"
    });
    lab
}

#[test]
fn huge_output_is_bounded_on_its_way_and_in_the_store_and_the_job_still_passes() {
    let lab = lab_with_log_cap("256K");
    let plan = lab.path("noisy.toml");
    std::fs::write(
        &plan,
        r#"name = "noisy"
[[step]]
name = "one-huge-line"
kind = "script"
command = "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo after-the-line"
[[step]]
name = "many-lines"
kind = "script"
command = "seq 1 100000"
[[step]]
name = "health"
kind = "smart"
"#,
    )
    .unwrap();
    let o = lab.farmctl(&[
        "--json",
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--rig",
        "bench-r1",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let job = o.json();
    assert_eq!(job["steps"].as_array().unwrap().len(), 3, "{job}");
    let id = job["id"].as_str().unwrap();
    let logs = lab.farmctl(&["logs", id]);
    assert_eq!(logs.code, 0, "{}", logs.all());
    assert!(
        logs.stdout
            .contains("[line truncated: 9991808 more bytes dropped]")
            && logs.stdout.contains("after-the-line"),
        "{}",
        &logs.stdout[..logs.stdout.len().min(2000)]
    );
    assert!(
        logs.stdout
            .contains("[log truncated: this job's stored log reached"),
        "{}",
        &logs.stdout[logs.stdout.len().saturating_sub(2000)..]
    );
    assert!(
        logs.stdout.len() < 300 * 1024,
        "{} bytes",
        logs.stdout.len()
    );
    // The agent stayed connected throughout.
    assert_eq!(lab.rig_state("bench-r1"), "idle");
}

#[test]
fn a_ten_thousand_step_plan_runs_through_the_farm_with_its_agent_alive_and_a_proportionate_store() {
    let lab = lab_with_agent(1);
    let plan = lab.path("tenk.toml");
    let mut text = String::from("name = \"tenk\"\n");
    for _ in 0..10_000 {
        text.push_str("[[step]]\nkind = \"smart\"\n");
    }
    std::fs::write(&plan, text).unwrap();
    let o = lab.farmctl(&[
        "--json",
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--rig",
        "bench-r1",
        "--timeout",
        "10m",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let job = o.json();
    assert_eq!(job["state"], "passed", "{}", job["message"]);
    assert_eq!(job["steps"].as_array().unwrap().len(), 10_000);
    let ctl_log = std::fs::read_to_string(lab.path("controller.log")).unwrap();
    assert!(
        !ctl_log.contains("no heartbeat"),
        "the agent was declared lost"
    );
    // The store holds the job's steps and log once, not a copy per step.
    let store = dir_size(&lab.path("ctl"));
    assert!(store < 100 << 20, "{store} bytes of store for one job");
    // A restart reads every step back.
    let mut lab = lab;
    lab.stop_controller(Signal::SIGKILL);
    lab.start_controller();
    let id = job["id"].as_str().unwrap();
    assert_eq!(lab.job(id)["steps"].as_array().unwrap().len(), 10_000);
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

#[test]
fn a_plan_the_bench_refuses_is_invalid_input_through_the_farm_and_the_rig_stays_healthy() {
    let lab = lab_with_agent(1);
    let plan = lab.path("missing.toml");
    std::fs::write(
        &plan,
        "name = \"m\"\n[[step]]\nkind = \"smart\"\n[[step]]\nkind = \"script\"\ncommand = \"/opt/does-not-exist/check.sh\"\n",
    )
    .unwrap();
    let junit = lab.path("missing.xml");
    let o = lab.farmctl(&[
        "--json",
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--rig",
        "bench-r1",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    let job = o.json();
    assert_eq!(job["state"], "invalid", "{job}");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("script program /opt/does-not-exist/check.sh cannot be found"),
        "{job}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.contains(r#"type="invalid""#), "{x}");
    let rig = lab
        .rigs_json()
        .into_iter()
        .find(|r| r["name"] == "bench-r1")
        .unwrap();
    assert_eq!(rig["state"], "idle", "{rig}");
    assert_eq!(rig["consecutive_infra_errors"], 0, "{rig}");
}

#[test]
fn a_drive_that_hangs_at_registration_shows_as_probing_while_its_neighbours_take_work() {
    let mut lab = lab_with_agent(3);
    lab.stop_agent("bench", Signal::SIGKILL);
    // bench-r2's drive stops answering Identify: its probe at the next registration hangs until the bound.
    lab.sim_fault("bench", "bench-r2", &["hang", "--opcode", "identify"]);
    lab.wait(
        "the controller to see the agent gone",
        Duration::from_secs(30),
        || lab.rig_state("bench-r1") == "offline",
    );
    let file = lab.path("bench.toml");
    lab.start_agent("bench", &file, None);
    // Its neighbours register and go idle without waiting for it; it shows as probing meanwhile.
    let mut seen = vec![];
    lab.wait(
        "bench-r1 and bench-r3 idle",
        Duration::from_secs(30),
        || {
            seen = lab.rigs_json();
            let state = |n: &str| {
                seen.iter()
                    .find(|r| r["name"] == n)
                    .map(|r| r["state"].clone())
            };
            state("bench-r1") == Some("idle".into()) && state("bench-r3") == Some("idle".into())
        },
    );
    let r2 = seen
        .iter()
        .find(|r| r["name"] == "bench-r2")
        .expect("bench-r2 listed");
    assert_eq!(
        r2["state"], "probing",
        "the hung drive's rig is probing, not idle: {r2:#}"
    );
    let o = lab.farmctl(&["reserve", "--rig", "bench-r2", "--for", "1m"]);
    assert_ne!(o.code, 0, "a probing rig is not handed out: {}", o.all());
    assert!(o.stderr.contains("probed"), "{}", o.all());
    // The probe is bounded: the rig becomes idle, saying its drive did not answer.
    lab.wait(
        "bench-r2 idle after its probe gave up",
        Duration::from_secs(30),
        || lab.rig_state("bench-r2") == "idle",
    );
    let r2 = lab
        .rigs_json()
        .into_iter()
        .find(|r| r["name"] == "bench-r2")
        .unwrap();
    assert!(
        r2.to_string().contains("did not answer the identity probe"),
        "{r2:#}"
    );
}
