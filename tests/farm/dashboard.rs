//! The dashboard in a real browser (Debian's headless chromium) on a populated farm: every page loads, shows
//! what it is for (the sweep matrix with its new failure, a rig's failure rate and trend, a build's pass rates
//! and its regression against the build before it, a job's timestamps and reports), and is kept as a
//! screenshot in `target/dashboard-screenshots/`. A running job's live log arrives as server-sent events.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nvfarm_tests::lab::Lab;
use nvfarm_tests::workspace;

use crate::{http_get, lab_with_agent};

fn chromium() -> &'static str {
    let found = Command::new("sh")
        .arg("-c")
        .arg("command -v chromium")
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "chromium is not installed: run scripts/setup.sh (the dashboard test needs it)"
    );
    "chromium"
}

/// Loads `path` in headless chromium: the DOM after its scripts ran, and a screenshot at `shot`.
fn browse(lab: &Lab, path: &str, shot: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", lab.http);
    let dir = screenshots();
    let profile = lab.path(&format!("chromium-{shot}"));
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,1800")
        .arg("--virtual-time-budget=2000");
    };
    let mut dom = Command::new(chromium());
    common(&mut dom);
    let out = dom.arg("--dump-dom").arg(&url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = dir.join(format!("{shot}.png"));
    let mut s = Command::new(chromium());
    common(&mut s);
    let o = s
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        o.status.success() && png.exists(),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("screenshot of {path}: {}", png.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshots() -> PathBuf {
    let d = workspace().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

const IO_PLAN: &str = r#"name = "perf"
[[step]]
name = "flash"
kind = "flash"
[[step]]
name = "identify"
kind = "identify"
expect = { fr = "{firmware.revision}" }
[[step]]
name = "randread"
kind = "io"
rw = "randread"
bs = "4k"
iodepth = 4
runtime = "1s"
size = "16M"
[[step]]
name = "self-test"
kind = "selftest"
"#;

#[test]
fn every_page_shows_a_populated_farm_in_a_real_browser() {
    let lab = lab_with_agent(2);
    let plan = lab.path("perf.toml");
    std::fs::write(&plan, IO_PLAN).unwrap();
    let plan = plan.to_str().unwrap().to_string();
    let fast = lab.image("2.0.0", "ok");
    let slow = lab.image("2.1.0", "ok");
    let sweep = |fw: &str| {
        let o = lab.farmctl(&[
            "--json",
            "sweep",
            "--firmware",
            fw,
            "--plan",
            &plan,
            "--name",
            "nightly",
        ]);
        (
            o.code,
            o.json()["sweep"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            o,
        )
    };
    let (code, first, o) = sweep(&fast);
    assert_eq!(code, 0, "{}", o.all());
    // The next build is slower on reads (every read 5 ms late) and bench-r2's self-test now fails.
    for rig in ["bench-r1", "bench-r2"] {
        lab.sim_fault("bench", rig, &["latency", "5ms", "--opcode", "read"]);
    }
    lab.sim_fault("bench", "bench-r2", &["self-test-failure", "--count", "10"]);
    let (code, second, o) = sweep(&slow);
    assert_eq!(code, 1, "{}", o.all());
    let slow_sha = o.json()["jobs"][0]["artifact_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let job = o.json()["jobs"][0]["id"].as_str().unwrap().to_string();

    let index = browse(&lab, "/", "index");
    assert!(
        index.contains("href=\"/rigs/bench-r1\"") && index.contains("href=\"/builds/"),
        "{index}"
    );
    assert!(
        index.contains("Recent jobs") && index.contains("href=\"/sweeps\""),
        "{index}"
    );

    let sweeps = browse(&lab, "/sweeps", "sweeps");
    assert!(
        sweeps.contains(&first) && sweeps.contains(&second) && sweeps.contains("nightly"),
        "{sweeps}"
    );

    let matrix = browse(&lab, &format!("/sweeps/{second}"), "sweep");
    assert!(matrix.contains("id=\"matrix\""), "{matrix}");
    let row = matrix
        .split("<tr>")
        .find(|r| r.contains("/rigs/bench-r2"))
        .unwrap_or_else(|| panic!("no bench-r2 row: {matrix}"));
    assert!(
        row.contains("class=\"new_failure\"") && row.contains("new failure"),
        "{row}"
    );
    assert!(
        row.contains("href=\"/jobs/job-"),
        "each rig links to its job: {row}"
    );
    assert!(
        matrix.contains(&format!("compared with <a href=\"/sweeps/{first}\">")),
        "{matrix}"
    );

    let rig = browse(&lab, "/rigs/bench-r2", "rig");
    assert!(
        rig.contains("failure rate over its last 2 jobs: 50%"),
        "{rig}"
    );
    assert!(
        rig.contains("<svg") && rig.contains("read IOPS on bench-r2"),
        "an io trend chart: {rig}"
    );

    let build = browse(&lab, &format!("/builds/{slow_sha}"), "build");
    assert!(build.contains("Pass rate per step"), "{build}");
    let selftest = build
        .split("<tr>")
        .find(|r| r.contains("<td>self-test</td>"))
        .unwrap_or_else(|| panic!("{build}"));
    assert!(
        selftest.contains("<td>1</td><td>2</td>") && selftest.contains("50%"),
        "{selftest}"
    );
    assert!(
        build.contains("class=\"regressed\"") && build.contains("regressed: read IOPS"),
        "the slower build is flagged against the one before it: {build}"
    );
    assert!(
        build.contains("regression threshold"),
        "the threshold is drawn: {build}"
    );

    let page = browse(&lab, &format!("/jobs/{job}"), "job");
    for want in [
        "submitted",
        "got its rig",
        "ran ",
        "JUnit",
        "raw log",
        "randread (io)",
    ] {
        assert!(page.contains(want), "{want} missing: {page}");
    }
    let junit = http_get(lab.http, &format!("/jobs/{job}/junit.xml"));
    assert!(
        junit.contains("<testsuite ") && junit.contains("randread"),
        "{junit}"
    );
    let log = http_get(lab.http, &format!("/jobs/{job}/log"));
    assert!(log.contains("[step 1]"), "{log}");
    let jobs = browse(&lab, "/jobs?rig=bench-r2&state=failed", "jobs");
    assert!(jobs.contains(&job) || jobs.contains("failed"), "{jobs}");
    assert!(
        !jobs.contains("bench-r1\">bench-r1"),
        "the rig filter holds: {jobs}"
    );
}

#[test]
fn a_running_jobs_log_arrives_live_as_server_sent_events() {
    let lab = lab_with_agent(1);
    let plan = lab.path("ticks.toml");
    std::fs::write(
        &plan,
        "name = \"ticks\"\n[[step]]\nname = \"ticks\"\nkind = \"script\"\ncommand = \"for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.3; done\"\n",
    )
    .unwrap();
    let mut run = lab.farmctl_cmd(&["run", "--plan", plan.to_str().unwrap(), "--rig", "bench-r1"]);
    let mut child = run
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    lab.wait("the job to start", Duration::from_secs(20), || {
        let j = crate::http_json(lab.http, "/api/jobs");
        match j[0]["id"].as_str() {
            Some(i) if j[0]["state"] == "testing" || j[0]["state"] == "assigned" => {
                id = i.to_string();
                true
            }
            _ => false,
        }
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", lab.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /jobs/{id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("\"ended\":true") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before the job did: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("text/event-stream"), "{got}");
    for i in 1..=6 {
        assert!(
            got.contains(&format!("tick {i}")),
            "tick {i} missing: {got}"
        );
    }
    assert!(
        got.contains("event: line") && got.contains("event: state"),
        "{got}"
    );
    assert!(got.contains("\"state\":\"passed\""), "{got}");
    let _ = child.wait();
}
