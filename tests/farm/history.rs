//! Results over time: jobs by rig, firmware build, drive model, plan and time range, through farmctl and the
//! JSON API; past sweeps and one sweep's matrix; whose leases are whose.

use nvfarm_tests::lab::Lab;

use crate::{http_get, http_json, lab_with_agent};

/// `farmctl --json history ARGS`, which must succeed.
fn history(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json", "history"];
    a.extend_from_slice(args);
    let o = lab.farmctl(&a);
    assert_eq!(o.code, 0, "{}", o.all());
    o.json()
}

#[test]
fn history_finds_jobs_by_rig_build_model_plan_and_time_and_sweeps_and_leases_are_listed() {
    let mut lab = lab_with_agent(2);
    let plan = lab.path("quick.toml");
    let plan = plan.to_str().unwrap();
    let good = lab.image("2.0.0", "ok");
    let bad = lab.image("2.1.0", "boot-fail");
    let run = |fw: &str, rig: &str| {
        lab.farmctl(&[
            "--json",
            "run",
            "--firmware",
            fw,
            "--plan",
            plan,
            "--rig",
            rig,
        ])
    };
    let o = run(&good, "bench-r1");
    assert_eq!(o.code, 0, "{}", o.all());
    let o = run(&bad, "bench-r2");
    assert_eq!(o.code, 1, "{}", o.all());
    let bad_sha = o.json()["artifact_sha256"].as_str().unwrap().to_string();
    let o = lab.farmctl(&[
        "sweep",
        "--firmware",
        &good,
        "--plan",
        plan,
        "--labels",
        "model=X1",
        "--name",
        "nightly",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());

    let ids = |h: &serde_json::Value| -> Vec<String> {
        h["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    // By rig: its run and its sweep job, newest first.
    let h = history(&lab, &["--rig", "bench-r1"]);
    let jobs = h["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{h:#}");
    assert!(jobs.iter().all(|j| j["rig"] == "bench-r1"), "{h:#}");
    assert!(jobs[0]["created_ms"].as_u64() >= jobs[1]["created_ms"].as_u64());
    // By build: a sha256 prefix finds the failing build's one job; its steps' pass rates say where it broke.
    let h = history(&lab, &["--build", &bad_sha[..8]]);
    assert_eq!(h["jobs"].as_array().unwrap().len(), 1, "{h:#}");
    assert_eq!(h["jobs"][0]["state"], "failed");
    let flash = h["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "flash")
        .unwrap_or_else(|| panic!("{h:#}"));
    assert_eq!(
        (flash["runs"].as_u64(), flash["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(flash["pass_rate"], 0.0);
    // By revision: the good build's three jobs.
    let h = history(&lab, &["--build", "2.0.0"]);
    assert_eq!(h["jobs"].as_array().unwrap().len(), 3, "{h:#}");
    assert!(
        h["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["pass_rate"] == 1.0),
        "{h:#}"
    );
    // By drive model (as the rig reported it): all four; by plan and a time range, with paging.
    let all = history(&lab, &["--model", "NVFARM SIM X1"]);
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4, "{all:#}");
    assert_eq!(
        history(&lab, &["--model", "NO SUCH MODEL"])["jobs"],
        serde_json::json!([])
    );
    let page = history(
        &lab,
        &[
            "--plan", "quick", "--since", "1h", "--limit", "2", "--offset", "1",
        ],
    );
    assert_eq!(ids(&page), ids(&all)[1..3].to_vec());
    assert_eq!(
        history(&lab, &["--until", "1h"])["jobs"],
        serde_json::json!([])
    );
    // The text form: a table of jobs and one of steps.
    let o = lab.farmctl(&["history", "--rig", "bench-r2"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains("PASS RATE") && o.stdout.contains("NVFARM SIM X1"),
        "{}",
        o.all()
    );
    // Absurd input is refused, naming it.
    let o = lab.farmctl(&["history", "--since", "2026-13-45"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("2026-13-45"), "{}", o.all());
    let o = lab.farmctl(&["history", "--limit", "100000"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("at most 10000"), "{}", o.all());
    let o = lab.farmctl(&["history", "--since", "1h", "--until", "2h"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("empty"), "{}", o.all());

    // The same through the JSON API.
    let api = http_json(
        lab.http,
        &format!("/api/jobs?build={}&model=NVFARM%20SIM%20X1", &bad_sha[..8]),
    );
    assert_eq!(api.as_array().unwrap().len(), 1, "{api:#}");
    assert_eq!(api[0]["drive_model"], "NVFARM SIM X1");
    let api = http_json(
        lab.http,
        "/api/jobs?plan=quick&since=2000-01-01T00:00:00Z&limit=2&offset=1",
    );
    assert_eq!(
        api.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        ids(&all)[1..3].to_vec()
    );
    let resp = http_get(lab.http, "/api/jobs?since=yesterday");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("'yesterday'"), "{resp}");

    // /metrics counts what happened: outcomes per rig and model, durations of jobs, flashes and queue waits.
    let want = [
        "nvfarm_job_outcomes_total{rig=\"bench-r2\",model=\"NVFARM SIM X1\",outcome=\"failed\"} 1",
        "nvfarm_job_outcomes_total{rig=\"bench-r1\",model=\"NVFARM SIM X1\",outcome=\"passed\"} 2",
        "nvfarm_flash_duration_seconds_count{outcome=\"failed\",model=\"NVFARM SIM X1\"} 1",
        "nvfarm_flash_duration_seconds_count{outcome=\"passed\",model=\"NVFARM SIM X1\"} 3",
        "nvfarm_step_outcomes_total{step=\"identify\",model=\"NVFARM SIM X1\",outcome=\"skipped\"} 1",
        "nvfarm_job_duration_seconds_count{outcome=\"passed\"} 3",
        "nvfarm_queue_wait_seconds_count{priority=\"nightly\"} 2",
    ];
    let mut metrics = String::new();
    lab.wait(
        "the metrics to count every job",
        std::time::Duration::from_secs(10),
        || {
            metrics = http_get(lab.http, "/metrics");
            want.iter().all(|w| metrics.contains(w))
        },
    );
    assert!(
        metrics.contains("# TYPE nvfarm_job_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nvfarm_leases_by_kind{kind=\"reservation\"} 0"),
        "{metrics}"
    );
    // Every series the Grafana dashboard reads is one /metrics serves.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            nvfarm_tests::workspace().join("packaging/grafana/nvfarm-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let families: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut read = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("nvfarm_"))
            {
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    families.contains(family),
                    "the dashboard's panel '{}' reads {name}, which /metrics does not serve",
                    p["title"]
                );
                read += 1;
            }
        }
    }
    assert!(read >= 10, "{read}");

    // After a restart, the same answers come from the store.
    lab.stop_controller(nix::sys::signal::Signal::SIGKILL);
    lab.start_controller();
    assert_eq!(
        ids(&history(&lab, &["--model", "NVFARM SIM X1"])),
        ids(&all)
    );
    assert_eq!(
        history(&lab, &["--build", &bad_sha[..8]])["jobs"][0]["state"],
        "failed"
    );

    // Sweeps: the list, and one sweep's matrix.
    let o = lab.farmctl(&["--json", "sweeps"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let sweeps = o.json();
    assert_eq!(sweeps.as_array().unwrap().len(), 1, "{sweeps:#}");
    assert_eq!(sweeps[0]["name"], "nightly");
    assert_eq!(sweeps[0]["done"], true);
    let id = sweeps[0]["id"].as_str().unwrap();
    let o = lab.farmctl(&["--json", "sweep", "show", id]);
    assert_eq!(o.code, 0, "{}", o.all());
    let r = o.json();
    assert_eq!(r["sweep"]["id"], id);
    assert_eq!(r["outcome"], "passed");
    assert_eq!(r["rigs"].as_array().unwrap().len(), 2);
    let o = lab.farmctl(&["sweep", "show", "sweep-999999"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("sweep-999999"), "{}", o.all());
    let o = lab.farmctl(&["sweeps", "--name", "weekly"]);
    assert!(o.stdout.contains("no sweeps"), "{}", o.all());

    // Leases: mine are the ones I reserved.
    let mut reserve = lab.farmctl_cmd(&["reserve", "--rig", "bench-r1", "--for", "10m", "--wait"]);
    reserve.env("USER", "alice");
    let o = nvfarm_tests::lab::Out::of(reserve);
    assert_eq!(o.code, 0, "{}", o.all());
    let leases_as = |user: &str, mine: bool| {
        let mut a = vec!["--json", "leases"];
        if mine {
            a.push("--mine");
        }
        let mut c = lab.farmctl_cmd(&a);
        c.env("USER", user);
        let o = nvfarm_tests::lab::Out::of(c);
        assert_eq!(o.code, 0, "{}", o.all());
        o.json()
    };
    let mine = leases_as("alice", true);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine:#}");
    assert_eq!(mine[0]["rig"], "bench-r1");
    assert_eq!(mine[0]["holder"], "alice");
    assert!(mine[0]["expires_ms"].as_u64().unwrap() > 0);
    assert_eq!(leases_as("bob", true), serde_json::json!([]));
    assert_eq!(leases_as("bob", false).as_array().unwrap().len(), 1);
}
