//! The farm's main paths end to end: the CI stage, sweeps, leases, restarts, TLS, tokens.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{http_get, http_json, lab_with_agent, long_plan, wait_child};
use nvfarm_tests::lab::Lab;

#[test]
fn a_ci_run_passes_and_a_failing_build_fails_with_the_right_exit_codes_and_junit() {
    let lab = lab_with_agent(2);
    let good = lab.image("2.0.0", "ok");
    let plan = lab.path("quick.toml");
    let junit = lab.path("ok.xml");
    let o = lab.farmctl(&[
        "run",
        "--firmware",
        &good,
        "--plan",
        plan.to_str().unwrap(),
        "--labels",
        "model=X1",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("== [ 1] flash (flash)") && l.contains(" PASSED ")),
        "{}",
        o.all()
    );
    assert!(o.stderr.contains("PASSED"), "{}", o.all());
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(r#"tests="3" failures="0" errors="0" skipped="0""#),
        "{x}"
    );

    let bad = lab.image("2.1.0", "boot-fail");
    let junit = lab.path("bad.xml");
    let o = lab.farmctl(&[
        "--json",
        "run",
        "--firmware",
        &bad,
        "--plan",
        plan.to_str().unwrap(),
        "--rig",
        "bench-r2",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 1, "{}", o.all());
    let j = o.json();
    assert_eq!(j["state"], "failed");
    assert_eq!(j["rig"], "bench-r2");
    assert!(
        j["message"].as_str().unwrap().contains("rolled back"),
        "{j}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.contains("<failure message="), "{x}");
    assert!(x.contains(r#"failures="1""#), "{x}");
    // Each testcase carries its own step's log (attributed by step number, not by name).
    let flash_case = &x[x.find("01 flash (flash)").unwrap()..];
    let flash_case = &flash_case[..flash_case.find("</testcase>").unwrap()];
    assert!(flash_case.contains("rolling back to slot"), "{flash_case}");
    assert!(!flash_case.contains("== [ 2]"), "{flash_case}");

    // One JSON shape per record: farmctl --json prints what the controller's /api serves.
    let id = j["id"].as_str().unwrap();
    let cli = lab.farmctl(&["--json", "job", id]).json();
    assert_eq!(cli, http_json(lab.http, &format!("/api/jobs/{id}")));
    assert!(
        cli["steps"][0]["log"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x.as_str().unwrap().contains("download"))),
        "{cli:#}"
    );
    assert_eq!(
        lab.farmctl(&["--json", "rigs"]).json(),
        http_json(lab.http, "/api/rigs")
    );
    assert_eq!(
        lab.farmctl(&["--json", "jobs", "--limit", "5"]).json(),
        http_json(lab.http, "/api/jobs?limit=5")
    );
    assert_eq!(
        lab.farmctl(&["--json", "queue"]).json(),
        http_json(lab.http, "/api/queue")
    );
    assert_eq!(
        http_json(lab.http, "/api/jobs/job-999999")["error"],
        "no job job-999999"
    );

    // No rig could ever match: bad input (2), naming what would. A broken plan: bad input (2), caught before
    // anything is sent.
    let o = lab.farmctl(&[
        "run",
        "--firmware",
        &good,
        "--plan",
        plan.to_str().unwrap(),
        "--labels",
        "model=NOPE",
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr
            .contains("no rig has model=NOPE; values of model: X1"),
        "{}",
        o.all()
    );
    std::fs::write(
        lab.path("broken.toml"),
        "name = \"b\"\n[[step]]\nkind = \"teleport\"\n",
    )
    .unwrap();
    let o = lab.farmctl(&[
        "run",
        "--firmware",
        &good,
        "--plan",
        lab.path("broken.toml").to_str().unwrap(),
        "--rig",
        "bench-r1",
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr
            .contains("broken.toml: step 1 key 'kind': unknown kind 'teleport'"),
        "{}",
        o.all()
    );
    // The dashboard tells the outcomes apart.
    let page = http_get(lab.http, "/");
    assert!(
        page.contains("class=ok>passed") && page.contains("class=bad>failed"),
        "{page}"
    );
    let metrics = http_get(lab.http, "/metrics");
    assert!(
        metrics.contains("nvfarm_jobs{state=\"passed\"} 1")
            && metrics.contains("nvfarm_jobs{state=\"failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_firmware_file_the_drive_cannot_take_is_bad_input_and_never_quarantines_the_rig() {
    let lab = lab_with_agent(1);
    let junk = lab.path("junk.bin");
    std::fs::write(&junk, vec![0x5a; 4097]).unwrap();
    let plan = lab.path("quick.toml");
    // Three in a row: more than the default quarantine threshold of infrastructure errors.
    for _ in 0..3 {
        let o = lab.farmctl(&[
            "--json",
            "run",
            "--firmware",
            junk.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--rig",
            "bench-r1",
        ]);
        assert_eq!(o.code, 2, "{}", o.all());
        let j = o.json();
        assert_eq!(j["state"], "invalid", "{j}");
        assert!(
            j["message"]
                .as_str()
                .unwrap()
                .contains("not a whole number of dwords"),
            "{j}"
        );
    }
    let rig = &lab.rigs_json()[0];
    assert_eq!(rig["state"], "idle", "{rig}");
    assert_eq!(rig["consecutive_infra_errors"], 0, "{rig}");
    assert_eq!(rig["health_check_pending"], false, "{rig}");
}

#[test]
fn two_clients_racing_for_one_rig_get_it_one_after_the_other() {
    let lab = lab_with_agent(1);
    let spawn = || {
        lab.farmctl_cmd(&[
            "--json", "reserve", "--rig", "bench-r1", "--for", "1m", "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let mut a = spawn();
    let mut b = spawn();
    // Exactly one is granted; the other waits in the queue.
    let start = Instant::now();
    let (mut winner, mut loser) = loop {
        if let Some(st) = a.try_wait().unwrap() {
            assert!(st.success());
            break (a, b);
        }
        if let Some(st) = b.try_wait().unwrap() {
            assert!(st.success());
            break (b, a);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "neither reservation was granted\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    winner
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let lease: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(lease["rig"], "bench-r1");
    // The other client's request is in the queue (it may reach the controller after the winner's grant).
    lab.wait(
        "the second request to queue",
        Duration::from_secs(20),
        || {
            lab.farmctl(&["--json", "queue"])
                .json()
                .as_array()
                .is_some_and(|q| q.len() == 1)
        },
    );
    assert!(
        loser.try_wait().unwrap().is_none(),
        "both clients got the rig"
    );
    let q = lab.farmctl(&["--json", "queue"]).json();
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["position"], 1);
    let why = q[0]["waiting_because"].as_str().unwrap();
    assert!(why.contains("bench-r1 reserved by"), "{why}");
    let rigs = lab.rigs_json();
    assert_eq!(rigs[0]["state"], "leased");
    // Release: the waiting client gets it, with a newer fencing token.
    let o = lab.farmctl(&["release", lease["id"].as_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.all());
    let st = wait_child(&mut loser, Duration::from_secs(20));
    assert!(st.success());
    let mut out = String::new();
    loser
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let second: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(second["rig"], "bench-r1");
    assert!(second["fencing_token"].as_u64() > lease["fencing_token"].as_u64());
    assert!(lab
        .farmctl(&["--json", "queue"])
        .json()
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_reservation_expires_and_frees_the_rig() {
    let lab = lab_with_agent(1);
    let o = lab.farmctl(&["--json", "reserve", "--rig", "bench-r1", "--for", "1s"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let lease = o.json();
    assert_eq!(lab.rig_state("bench-r1"), "leased");
    lab.wait("the reservation to expire", Duration::from_secs(10), || {
        lab.rig_state("bench-r1") == "idle"
    });
    let o = lab.farmctl(&["release", lease["id"].as_str().unwrap()]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("no active lease"), "{}", o.all());
    // Without --wait a busy farm says why instead of queueing.
    lab.farmctl(&["reserve", "--rig", "bench-r1", "--for", "1m"]);
    let o = lab.farmctl(&["reserve", "--rig", "bench-r1", "--for", "1m"]);
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.stderr.contains("no rig free now") && o.stderr.contains("--wait"),
        "{}",
        o.all()
    );
}

#[test]
fn a_job_whose_agent_dies_ends_as_error_and_the_rig_returns_after_a_health_check() {
    let mut lab = lab_with_agent(1);
    let fw = lab.image("2.0.0", "ok");
    let plan = long_plan(&lab, 30);
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lab.wait(
        "the job to reach its soak step",
        Duration::from_secs(30),
        || {
            let jobs = lab.farmctl(&["--json", "jobs"]).json();
            jobs[0]["state"] == "testing"
        },
    );
    lab.stop_agent("bench", Signal::SIGKILL);
    let st = wait_child(&mut run, Duration::from_secs(30));
    assert_eq!(
        st.code(),
        Some(3),
        "an agent lost is an infrastructure error\n{}",
        lab.logs()
    );
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "error");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("stopped answering"),
        "{job}"
    );
    let rig = &lab.rigs_json()[0];
    assert_eq!(rig["state"], "offline");
    assert!(rig["reason"].as_str().unwrap().contains("silent"), "{rig}");
    assert_eq!(rig["health_check_pending"], true);
    // The agent comes back: a health check runs first, then the rig is idle again.
    let file = lab.path("bench.toml");
    lab.start_agent("bench", &file, None);
    lab.wait("the health check to pass", Duration::from_secs(30), || {
        let jobs = lab.farmctl(&["--json", "jobs"]).json();
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["plan_name"] == "health-check" && j["state"] == "passed")
    });
    lab.wait("the rig to be idle", Duration::from_secs(10), || {
        let r = &lab.rigs_json()[0];
        r["state"] == "idle" && r["health_check_pending"] == false
    });
}

#[test]
fn the_controller_killed_mid_job_comes_back_with_the_truth_and_no_double_lease() {
    let mut lab = lab_with_agent(1);
    let fw = lab.image("2.0.0", "ok");
    let plan = long_plan(&lab, 4);
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lab.wait("the job to be testing", Duration::from_secs(30), || {
        lab.farmctl(&["--json", "jobs"]).json()[0]["state"] == "testing"
    });
    let job_id = lab.farmctl(&["--json", "jobs"]).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = lab.job(&job_id)["fencing_token"].as_u64().unwrap();
    // A reservation request for the same rig waits while the job holds it.
    let mut waiter = lab
        .farmctl_cmd(&[
            "--json", "reserve", "--rig", "bench-r1", "--for", "1m", "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.wait(
        "the reservation request to queue",
        Duration::from_secs(20),
        || {
            lab.farmctl(&["--json", "queue"])
                .json()
                .as_array()
                .is_some_and(|q| q.len() == 1)
        },
    );
    lab.stop_controller(Signal::SIGKILL);
    // The job finishes while the controller is down: the agent spools its result.
    let spooled = lab.path(&format!("work-bench/agent/results/{job_id}.json"));
    lab.wait(
        "the agent to spool the result",
        Duration::from_secs(30),
        || spooled.exists(),
    );
    lab.start_controller();
    // farmctl run reconnects and reports the true outcome.
    let st = wait_child(&mut run, Duration::from_secs(60));
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(st.code(), Some(0), "{out}\n{}", lab.logs());
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(
        job["steps"].as_array().unwrap().len(),
        3,
        "every step result survived: {job}"
    );
    assert_eq!(job["fencing_token"].as_u64(), Some(token));
    // The waiting reservation (its request was acknowledged before the crash) is granted afterwards, with a
    // newer token: the rig was never held twice.
    let _ = waiter.kill();
    let _ = waiter.wait();
    lab.wait(
        "the queued reservation to be granted",
        Duration::from_secs(20),
        || lab.rig_state("bench-r1") == "leased",
    );
    let rigs = lab.rigs_json();
    let lease_id = rigs[0]["lease_id"].as_str().unwrap().to_string();
    let o = lab.farmctl(&["--json", "extend", &lease_id, "--for", "1m"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.json()["fencing_token"].as_u64().unwrap() > token);
}

#[test]
fn a_sweep_shows_the_rig_that_regressed_as_a_new_failure() {
    let lab = lab_with_agent(4);
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.quick_plan(
        "sweep.toml",
        "sweep-plan",
        "[[step]]\nname = \"self-test\"\nkind = \"selftest\"\n",
    );
    let plan = plan.as_str();
    let o = lab.farmctl(&[
        "sweep",
        "--firmware",
        &fw,
        "--plan",
        plan,
        "--labels",
        "model=X1",
        "--name",
        "nightly",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("PASSED"), "{}", o.all());
    // Break one rig: its next self-test fails.
    lab.sim_fault("bench", "bench-r3", &["self-test-failure", "--count", "10"]);
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
        "--name",
        "nightly",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 1, "{}", o.all());
    let r = o.json();
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["rigs"].as_array().unwrap().len(), 4);
    let changes: Vec<(String, String, String)> = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["change"].is_null())
        .map(|c| {
            (
                c["rig"].as_str().unwrap().into(),
                c["step"].as_str().unwrap().into(),
                c["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![("bench-r3".into(), "self-test".into(), "new_failure".into())],
        "{r:#}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(x.matches("<testsuite ").count(), 4, "{x}");
    assert_eq!(x.matches("<failure ").count(), 1, "{x}");
    // Each step carries its own log: every testcase of every suite has output.
    assert_eq!(
        x.matches("<system-out>").count(),
        x.matches("<testcase ").count(),
        "{x}"
    );
}

#[test]
fn tokens_are_required_and_roles_enforced() {
    let tokens = "[[token]]\nname = \"alice\"\ntoken = \"alice-token-0123456789\"\nrole = \"user\"\n\
                  [[token]]\nname = \"bob\"\ntoken = \"bob-token-012345678901\"\nrole = \"user\"\n\
                  [[token]]\nname = \"bench\"\ntoken = \"bench-agent-token-0123456789\"\nrole = \"agent\"\n";
    let mut lab = Lab::new(tokens);
    lab.start_controller();
    // No token, wrong token, and an agent token used as a client are refused with a clear status.
    let o = lab.farmctl(&["rigs"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr.contains("authentication failed: no token"),
        "{}",
        o.all()
    );
    let o = lab.farmctl(&["--token", "wrong-token-000000000", "rigs"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("unknown token"), "{}", o.all());
    let o = lab.farmctl(&["--token", "bench-agent-token-0123456789", "rigs"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("permission denied") && o.stderr.contains("has role agent"),
        "{}",
        o.all()
    );
    // An agent with the wrong token cannot register; with its own token it can.
    let file = lab.rigs("bench", 1);
    lab.start_agent("bench", &file, Some("alice-token-0123456789"));
    lab.wait("the agent to be refused", Duration::from_secs(20), || {
        std::fs::read_to_string(lab.path("bench.log"))
            .unwrap_or_default()
            .contains("needs role agent")
    });
    assert!(lab
        .farmctl(&["--token", "alice-token-0123456789", "--json", "rigs"])
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    lab.stop_agent("bench", Signal::SIGTERM);
    lab.start_agent("bench", &file, Some("bench-agent-token-0123456789"));
    lab.wait("the agent to register", Duration::from_secs(20), || {
        lab.farmctl(&["--token", "alice-token-0123456789", "--json", "rigs"])
            .json()
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let log = std::fs::read_to_string(lab.path("bench.log")).unwrap();
    assert!(log.contains("needs role agent"), "{log}");
    // Only the holder (or an admin) releases or extends a reservation.
    let alice = |args: &[&str]| {
        let mut a = vec!["--token", "alice-token-0123456789"];
        a.extend_from_slice(args);
        lab.farmctl(&a)
    };
    let o = alice(&["--json", "reserve", "--rig", "bench-r1", "--for", "10m"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let lease = o.json()["id"].as_str().unwrap().to_string();
    for args in [
        vec!["release", lease.as_str()],
        vec!["extend", lease.as_str(), "--for", "1m"],
    ] {
        let mut a = vec!["--token", "bob-token-012345678901"];
        a.extend_from_slice(&args);
        let o = lab.farmctl(&a);
        assert_eq!(o.code, 2, "{args:?}: {}", o.all());
        assert!(o.stderr.contains("held by alice"), "{}", o.all());
    }
    assert_eq!(lab_rig_state_as(&lab, "alice-token-0123456789"), "leased");
    let o = alice(&["release", &lease]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(lab_rig_state_as(&lab, "alice-token-0123456789"), "idle");
}

fn lab_rig_state_as(lab: &Lab, token: &str) -> String {
    lab.farmctl(&["--token", token, "--json", "rigs"]).json()[0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_controller_serves_tls_to_agents_and_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .args([
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(st.success());
    let mut lab = Lab::new(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    lab.start_controller();
    let https = format!("https://127.0.0.1:{}", lab.grpc);
    let farmctl = |ca: Option<&std::path::Path>, args: &[&str]| {
        let mut c = std::process::Command::new(nvfarm_tests::bin("farmctl"));
        c.args(["--controller", &https])
            .args(args)
            .env_remove("FARM_TOKEN")
            .env_remove("FARM_CA");
        if let Some(ca) = ca {
            c.env("FARM_CA", ca);
        }
        c.output().unwrap()
    };
    // Without trusting the lab's CA the connection is refused.
    let o = farmctl(None, &["rigs"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // An agent and a client that trust it work over TLS.
    let file = lab.rigs("bench", 1);
    let mut agent = std::process::Command::new(nvfarm_tests::bin("bench-agent"))
        .args([
            "--controller",
            &https,
            "--rigs",
            file.to_str().unwrap(),
            "--work-dir",
            lab.path("work").to_str().unwrap(),
        ])
        .env("FARM_CA", &cert)
        .env_remove("FARM_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let o = farmctl(Some(&cert), &["--json", "rigs"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let rigs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if rigs
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["state"] == "idle")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent did not register over TLS\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let fw = lab.image("2.0.0", "ok");
    let o = farmctl(
        Some(&cert),
        &[
            "run",
            "--firmware",
            &fw,
            "--plan",
            lab.path("quick.toml").to_str().unwrap(),
            "--rig",
            "bench-r1",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn a_sweep_retries_a_failed_rig_and_calls_a_pass_on_retry_flaky() {
    let lab = lab_with_agent(2);
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.path("st.toml");
    std::fs::write(
        &plan,
        "name = \"st\"\n[[step]]\nname = \"self-test\"\nkind = \"selftest\"\n",
    )
    .unwrap();
    // bench-r1's next self-test fails once; the retry passes.
    lab.sim_fault("bench", "bench-r1", &["self-test-failure", "--count", "1"]);
    let o = lab.farmctl(&[
        "--json",
        "sweep",
        "--firmware",
        &fw,
        "--plan",
        plan.to_str().unwrap(),
        "--name",
        "flaky-check",
        "--retries",
        "1",
    ]);
    assert_eq!(o.code, 0, "a pass on retry is not a failure: {}", o.all());
    let r = o.json();
    let cell = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rig"] == "bench-r1")
        .cloned()
        .unwrap();
    assert_eq!(cell["outcome"], "passed");
    assert_eq!(cell["change"], "flaky", "{r:#}");
    assert_eq!(
        r["jobs"].as_array().unwrap().len(),
        3,
        "two rigs plus one retry: {r:#}"
    );
}

#[test]
fn a_farm_job_gated_on_the_previous_run_fails_when_the_drive_gets_slower() {
    let lab = lab_with_agent(1);
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.path("gate.toml");
    std::fs::write(
        &plan,
        "name = \"gate\"\n[[step]]\nname = \"flash\"\nkind = \"flash\"\n[[step]]\nname = \"randread\"\nkind = \"io\"\nrw = \"randread\"\nbs = \"4k\"\niodepth = 4\nsize = \"1M\"\nruntime = \"400ms\"\nbaseline = \"previous\"\nmax_regression = \"30%\"\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let run = |junit: &str| {
        let junit = lab.path(junit);
        let o = lab.farmctl(&[
            "--json",
            "run",
            "--firmware",
            &fw,
            "--plan",
            plan,
            "--rig",
            "bench-r1",
            "--junit",
            junit.to_str().unwrap(),
        ]);
        (o, std::fs::read_to_string(&junit).unwrap_or_default())
    };
    // The first job on the rig is the baseline, kept by the agent that ran it.
    let (o, x) = run("first.xml");
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(x.contains("this run is the baseline"), "{x}");
    // Every read now takes 20 ms longer: the next job through the farm fails the step against the one before.
    lab.sim_fault(
        "bench",
        "bench-r1",
        &["latency", "20ms", "--opcode", "read"],
    );
    let (o, x) = run("second.xml");
    assert_eq!(o.code, 1, "a regression is a test failure: {}", o.all());
    assert_eq!(o.json()["state"], "failed", "{}", o.all());
    assert!(
        x.contains("failures=\"1\"") && x.contains("errors=\"0\""),
        "{x}"
    );
    assert!(
        x.contains("read_iops")
            && x.contains("vs previous")
            && x.contains("worse than the 30% allowed"),
        "{x}"
    );
}
