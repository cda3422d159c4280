//! The farm end to end, real processes on loopback: farm-controller, bench-agent daemons with simulated rigs,
//! farmctl. Each test builds its own lab (ports, data dir, rigs). One test binary, scenarios grouped by theme:
//!
//! - [`dashboard`]: every page in headless chromium on a populated farm (screenshots kept), the live log;
//! - [`ci_examples`]: `examples/ci/` run against a sim farm (GitLab through gitlab-ci-local; the Jenkinsfile checked);
//! - [`scenarios`]: the farm's main paths (CI stage, sweeps, leases, restarts, TLS, tokens);
//! - [`failure_paths`]: cancels, stops, unusable rigs, input mistakes, and what the CI stage reports then;
//! - [`faults`]: the controller while its parts fail or are attacked (paused agents, foreign agents, roles);
//! - [`history`]: results over time (jobs by rig, build, model, plan and time; sweeps; leases);
//! - [`webhooks`]: notices to local receivers (sweeps, new failures, quarantines, lost agents).

mod ci_examples;
mod dashboard;
mod failure_paths;
mod faults;
mod history;
mod scenarios;
mod webhooks;

use std::io::Read;
use std::time::{Duration, Instant};

use nvfarm_tests::lab::Lab;

pub(crate) fn lab_with_agent(rigs: usize) -> Lab {
    let mut lab = Lab::new("");
    lab.start_controller();
    let file = lab.rigs("bench", rigs);
    lab.start_agent("bench", &file, None);
    lab.wait(
        "the agent's rigs to be idle",
        Duration::from_secs(20),
        || {
            let r = lab.rigs_json();
            r.len() == rigs && r.iter().all(|x| x["state"] == "idle")
        },
    );
    lab
}

/// The body of `GET path` as JSON (chunked or not).
pub(crate) fn http_json(port: u16, path: &str) -> serde_json::Value {
    let resp = http_get(port, path);
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

pub(crate) fn http_get(port: u16, path: &str) -> String {
    http_get_with(port, path, "")
}

/// `GET path` with extra header lines (each ending in \r\n); the whole response.
pub(crate) fn http_get_with(port: u16, path: &str, headers: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub(crate) fn wait_child(
    c: &mut std::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < within,
            "process did not finish in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn long_plan(lab: &Lab, secs: u32) -> String {
    let p = lab.path("long.toml");
    std::fs::write(&p, format!("name = \"long\"\n[[step]]\nname = \"flash\"\nkind = \"flash\"\n[[step]]\nname = \"soak\"\nkind = \"script\"\ncommand = \"sleep {secs}\"\n[[step]]\nname = \"health\"\nkind = \"smart\"\n")).unwrap();
    p.display().to_string()
}
