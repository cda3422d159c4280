//! The controller while its parts fail or are attacked: paused agents, agents reaching for rigs that are not
//! theirs, roles that may not operate rigs.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{http_get, http_get_with, lab_with_agent};
use nvfarm_tests::lab::Lab;

#[test]
fn a_paused_agent_gets_its_rigs_back_soon_after_it_resumes() {
    let lab = lab_with_agent(1);
    // Paused longer than the controller's agent_timeout (1.5 s in the lab): declared lost, rigs offline.
    lab.signal_agent("bench", Signal::SIGSTOP);
    lab.wait("the rig to go offline", Duration::from_secs(20), || {
        lab.rig_state("bench-r1") == "offline"
    });
    lab.signal_agent("bench", Signal::SIGCONT);
    // Its next message closes the lost session; it registers again and the rig returns.
    lab.wait("the rig to come back", Duration::from_secs(15), || {
        lab.rig_state("bench-r1") == "idle"
    });
    let quick = lab.path("quick.toml");
    let fw = lab.image("2.0.0", "ok");
    let o = lab.farmctl(&[
        "run",
        "--firmware",
        &fw,
        "--plan",
        quick.to_str().unwrap(),
        "--rig",
        "bench-r1",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
}

#[test]
fn another_agents_token_cannot_take_a_silent_agents_rigs_and_users_cannot_quarantine() {
    let tokens = "[[token]]\nname = \"alice\"\ntoken = \"alice-token-0123456789\"\nrole = \"user\"\n\
                  [[token]]\nname = \"root\"\ntoken = \"root-token-01234567890\"\nrole = \"admin\"\n\
                  [[token]]\nname = \"bench\"\ntoken = \"bench-agent-token-0123456789\"\nrole = \"agent\"\n\
                  [[token]]\nname = \"rogue\"\ntoken = \"rogue-agent-token-0123456789\"\nrole = \"agent\"\n";
    let mut lab = Lab::new(tokens);
    lab.start_controller();
    let bench = lab.rigs("bench", 1);
    lab.start_agent("bench", &bench, Some("bench-agent-token-0123456789"));
    let rigs = |lab: &Lab| {
        lab.farmctl(&["--token", "alice-token-0123456789", "--json", "rigs"])
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    lab.wait("bench's rig", Duration::from_secs(20), || {
        rigs(&lab)
            .iter()
            .any(|r| r["name"] == "bench-r1" && r["state"] == "idle")
    });
    lab.stop_agent("bench", Signal::SIGKILL);
    // A second agent lists bench's rig as its own.
    let text = std::fs::read_to_string(&bench)
        .unwrap()
        .replace("name = \"bench\"", "name = \"rogue\"");
    let rogue = lab.path("rogue.toml");
    std::fs::write(&rogue, text).unwrap();
    lab.start_agent("rogue", &rogue, Some("rogue-agent-token-0123456789"));
    lab.wait(
        "the rogue agent to be refused",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(lab.path("rogue.log"))
                .unwrap_or_default()
                .contains("rig bench-r1 belongs to agent bench")
        },
    );
    let r = rigs(&lab)
        .into_iter()
        .find(|r| r["name"] == "bench-r1")
        .unwrap();
    assert_eq!(r["agent"], "bench", "{r}");
    // A user may not quarantine; an admin may, and may move the rig.
    let o = lab.farmctl(&[
        "--token",
        "alice-token-0123456789",
        "rig",
        "quarantine",
        "bench-r1",
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("permission denied"), "{}", o.all());
    let o = lab.farmctl(&[
        "--token",
        "alice-token-0123456789",
        "rig",
        "move",
        "bench-r1",
        "--to",
        "rogue",
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    let o = lab.farmctl(&[
        "--token",
        "root-token-01234567890",
        "rig",
        "move",
        "bench-r1",
        "--to",
        "rogue",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    lab.wait("the rig to be the rogue's", Duration::from_secs(30), || {
        rigs(&lab)
            .iter()
            .any(|r| r["name"] == "bench-r1" && r["agent"] == "rogue" && r["state"] == "idle")
    });
}

#[test]
fn with_tokens_the_dashboard_and_api_need_one_and_a_read_only_role_suffices() {
    let tokens = "[[token]]\nname = \"wall\"\ntoken = \"wall-screen-token-0123\"\nrole = \"viewer\"\n\
                  [[token]]\nname = \"bench\"\ntoken = \"bench-agent-token-0123456789\"\nrole = \"agent\"\n";
    let mut lab = Lab::new(tokens);
    lab.start_controller();
    let status = |r: &str| r.lines().next().unwrap_or_default().to_string();
    for path in ["/", "/api/rigs", "/api/jobs", "/metrics"] {
        let r = http_get(lab.http, path);
        assert!(status(&r).contains("401"), "{path}: {r}");
        assert!(
            r.contains("WWW-Authenticate: Basic") || r.contains("www-authenticate: Basic"),
            "{r}"
        );
    }
    let r = http_get_with(
        lab.http,
        "/api/rigs",
        "Authorization: Bearer wall-screen-token-0123\r\n",
    );
    assert!(status(&r).contains("200"), "{r}");
    // A browser sends the token as the Basic password (any user name): "x:wall-screen-token-0123".
    let r = http_get_with(
        lab.http,
        "/",
        "Authorization: Basic eDp3YWxsLXNjcmVlbi10b2tlbi0wMTIz\r\n",
    );
    assert!(status(&r).contains("200"), "{r}");
    let r = http_get_with(
        lab.http,
        "/api/jobs",
        "Authorization: Bearer bench-agent-token-0123456789\r\n",
    );
    assert!(status(&r).contains("403"), "{r}");
    assert!(status(&http_get(lab.http, "/healthz")).contains("200"));
    // A viewer reads over gRPC too, and cannot reserve.
    let o = lab.farmctl(&["--token", "wall-screen-token-0123", "rigs"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let o = lab.farmctl(&[
        "--token",
        "wall-screen-token-0123",
        "reserve",
        "--labels",
        "a=b",
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("permission denied"), "{}", o.all());
}

/// The queue as farmctl sees it.
fn queue(lab: &Lab) -> Vec<serde_json::Value> {
    lab.farmctl(&["--json", "queue"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn spawn_waiter(lab: &Lab) -> std::process::Child {
    lab.farmctl_cmd(&[
        "--json", "reserve", "--rig", "bench-r1", "--for", "5m", "--wait",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

#[test]
fn sigterm_stops_the_controller_promptly_and_agents_and_waiting_clients_come_back() {
    let mut lab = lab_with_agent(1);
    let o = lab.farmctl(&["--json", "reserve", "--rig", "bench-r1", "--for", "5m"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let held = o.json()["id"].as_str().unwrap().to_string();
    let mut waiter = spawn_waiter(&lab);
    lab.wait("the waiter to queue", Duration::from_secs(20), || {
        queue(&lab).len() == 1
    });
    let t0 = std::time::Instant::now();
    lab.stop_controller(Signal::SIGTERM);
    let stopped_in = t0.elapsed();
    eprintln!("the controller stopped {stopped_in:?} after SIGTERM");
    assert!(
        stopped_in < Duration::from_secs(30),
        "SIGTERM took {stopped_in:?}: streams kept it alive"
    );
    lab.start_controller();
    // The agent re-registers; the waiting client reconnects and keeps its place.
    lab.wait("the agent to come back", Duration::from_secs(20), || {
        lab.rig_state("bench-r1") == "leased"
    });
    lab.wait(
        "the waiter to be watching again",
        Duration::from_secs(20),
        || queue(&lab).len() == 1,
    );
    let o = lab.farmctl(&["release", &held]);
    assert_eq!(o.code, 0, "{}", o.all());
    let st = crate::wait_child(&mut waiter, Duration::from_secs(30));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut waiter.stdout.take().unwrap(), &mut out).unwrap();
    assert!(st.success(), "{out}");
    let lease: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(lease["rig"], "bench-r1");
}

#[test]
fn a_waiting_client_that_goes_away_leaves_nothing_held_and_a_detached_request_stays() {
    let mut lab = Lab::new("[queue]\nwatch_grace = \"5s\"\nclaim_timeout = \"1s\"");
    lab.start_controller();
    let file = lab.rigs("bench", 1);
    lab.start_agent("bench", &file, None);
    lab.wait("the rig", Duration::from_secs(20), || {
        lab.rig_state("bench-r1") == "idle"
    });
    let o = lab.farmctl(&["--json", "reserve", "--rig", "bench-r1", "--for", "5m"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let held = o.json()["id"].as_str().unwrap().to_string();
    // A waiting client is killed: its request is withdrawn once the grace is over.
    let mut w = spawn_waiter(&lab);
    lab.wait("the waiter to queue", Duration::from_secs(20), || {
        queue(&lab).len() == 1
    });
    w.kill().unwrap();
    w.wait().unwrap();
    lab.wait(
        "the abandoned request to go",
        Duration::from_secs(30),
        || queue(&lab).is_empty(),
    );
    // Another one is killed and the rig is freed before the grace is over: the grant reaches nobody and is
    // released after the claim timeout instead of holding the rig for its 5 minutes.
    let mut w = spawn_waiter(&lab);
    lab.wait("the waiter to queue", Duration::from_secs(20), || {
        queue(&lab).len() == 1
    });
    w.kill().unwrap();
    w.wait().unwrap();
    let o = lab.farmctl(&["release", &held]);
    assert_eq!(o.code, 0, "{}", o.all());
    lab.wait(
        "the unclaimed grant to be released",
        Duration::from_secs(30),
        || lab.rig_state("bench-r1") == "idle",
    );
    let log = std::fs::read_to_string(lab.path("controller.log")).unwrap();
    assert!(
        log.contains("releasing a reservation nobody claimed"),
        "{log}"
    );
    // A detached request stays with nobody watching, and is withdrawn on request.
    let o = lab.farmctl(&["reserve", "--rig", "bench-r1", "--for", "5m"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let o = lab.farmctl(&[
        "--json", "reserve", "--rig", "bench-r1", "--for", "5m", "--detach",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let id = o.json()["request_id"].as_str().unwrap().to_string();
    // A watched request queued after it, whose client dies, is withdrawn; the detached one stays.
    let mut w = spawn_waiter(&lab);
    lab.wait("both to queue", Duration::from_secs(20), || {
        queue(&lab).len() == 2
    });
    w.kill().unwrap();
    w.wait().unwrap();
    lab.wait(
        "the abandoned request to go",
        Duration::from_secs(30),
        || queue(&lab).len() == 1,
    );
    let q = queue(&lab);
    assert_eq!(q[0]["id"], id, "{q:?}");
    assert_eq!(q[0]["detached"], true, "{q:?}");
    let o = lab.farmctl(&["withdraw", &id]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(queue(&lab).is_empty());
}
