//! Webhooks against local receivers: a finished sweep, its new failure, a quarantined rig and a lost agent are
//! each POSTed once (a failed attempt retried), a chat webhook gets one line, and a receiver that never answers
//! holds up nothing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use nvfarm_tests::lab::Lab;

/// A receiver on loopback that answers 500 to the first `fail_first` POSTs and 200 to the rest, and keeps the
/// bodies (as JSON) of each kind.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(vec![]));
        let refused = Arc::new(Mutex::new(vec![]));
        let (g, r) = (got.clone(), refused.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let Some(body) = read_request(&mut s) else {
                    continue;
                };
                n += 1;
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if let Ok(v) = serde_json::from_slice(&body) {
                    if n <= fail_first { &r } else { &g }
                        .lock()
                        .unwrap()
                        .push(v);
                }
            }
        });
        Receiver { port, got, refused }
    }
    fn events(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
    fn of(&self, event: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }
}

/// One HTTP request's body (Content-Length framed).
fn read_request(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = vec![];
    let mut b = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}

#[test]
fn sweeps_failures_quarantines_and_lost_agents_reach_the_webhooks_and_a_dead_receiver_holds_up_nothing(
) {
    let json = Receiver::start(1);
    let chat = Receiver::start(0);
    // Accepts and never answers.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let hooks = format!(
        "[dashboard]\nurl = \"http://farm.example:7701\"\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nretries = 3\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{}/chat\"\nformat = \"slack\"\nevents = [\"rig_quarantined\"]\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{dead_port}/dead\"\ntimeout = \"1s\"\nretries = 20\n",
        json.port, chat.port
    );
    let mut lab = Lab::new(&hooks);
    lab.start_controller();
    let file = lab.rigs("bench", 2);
    lab.start_agent("bench", &file, None);
    lab.wait("two idle rigs", Duration::from_secs(20), || {
        let r = lab.rigs_json();
        r.len() == 2 && r.iter().all(|x| x["state"] == "idle")
    });
    let fw = lab.image("2.0.0", "ok");
    let plan = lab.quick_plan(
        "sweep.toml",
        "sweep-plan",
        "[[step]]\nname = \"randread\"\nkind = \"io\"\nrw = \"randread\"\nbs = \"4k\"\niodepth = 4\nruntime = \"1s\"\nsize = \"16M\"\n\
         [[step]]\nname = \"self-test\"\nkind = \"selftest\"\n",
    );
    let plan = plan.as_str();
    let sweep = || {
        lab.farmctl(&[
            "--json",
            "sweep",
            "--firmware",
            &fw,
            "--plan",
            plan,
            "--name",
            "nightly",
        ])
    };
    let o = sweep();
    assert_eq!(o.code, 0, "{}", o.all());
    let first = o.json()["sweep"]["id"].as_str().unwrap().to_string();
    lab.wait("the first sweep's notice", Duration::from_secs(20), || {
        json.of("sweep_finished").len() == 1
    });
    let n = &json.of("sweep_finished")[0];
    assert_eq!(n["sweep"]["id"], first.as_str());
    assert_eq!(n["sweep"]["outcome"], "passed");
    assert_eq!(
        n["links"]["sweep"],
        format!("http://farm.example:7701/api/sweeps/{first}")
    );
    assert_eq!(n["changes"], serde_json::json!([]));
    assert_eq!(
        n["links"]["page"],
        format!("http://farm.example:7701/sweeps/{first}")
    );

    // The second sweep, of a newer build: bench-r2's self-test now fails, a new failure; every read is 5 ms
    // late, a regression against the previous sweep and against the previous build.
    for rig in ["bench-r1", "bench-r2"] {
        lab.sim_fault("bench", rig, &["latency", "5ms", "--opcode", "read"]);
    }
    lab.sim_fault("bench", "bench-r2", &["self-test-failure", "--count", "10"]);
    let newer = lab.image("2.1.0", "ok");
    let o = lab.farmctl(&[
        "--json",
        "sweep",
        "--firmware",
        &newer,
        "--plan",
        plan,
        "--name",
        "nightly",
    ]);
    assert_eq!(o.code, 1, "{}", o.all());
    let newer_sha = o.json()["jobs"][0]["artifact_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let second = o.json()["sweep"]["id"].as_str().unwrap().to_string();
    lab.wait(
        "the second sweep's notices",
        Duration::from_secs(20),
        || {
            json.of("sweep_finished").len() == 2
                && json.of("new_failure").len() == 1
                && json.of("regression").len() == 2
        },
    );
    let regressions = json.of("regression");
    // Against the previous sweep of the name, and against the build that ran before this one on the model.
    let rg = regressions
        .iter()
        .find(|r| r.get("against").is_none())
        .unwrap_or_else(|| panic!("{regressions:#?}"));
    let by_build = regressions
        .iter()
        .find(|r| r["against"] == "previous_build")
        .unwrap_or_else(|| panic!("{regressions:#?}"));
    assert_eq!(by_build["build"], newer_sha.as_str());
    assert_eq!(
        by_build["links"]["build"],
        format!("http://farm.example:7701/builds/{newer_sha}")
    );
    let r = &by_build["regressions"][0];
    assert_eq!(
        (&r["metric"], &r["model"]),
        (&"read_iops".into(), &"NVFARM SIM X1".into()),
        "{by_build:#}"
    );
    assert!(
        r["mean"].as_f64().unwrap() < r["threshold"].as_f64().unwrap(),
        "{by_build:#}"
    );
    eprintln!("build regression notice as POSTed:\n{by_build:#}");
    assert_eq!(rg["sweep"]["id"], second.as_str());
    let cells = rg["changes"].as_array().unwrap();
    assert!(
        cells.iter().any(|c| c["rig"] == "bench-r1"
            && c["step"] == "randread"
            && c["change"] == "regressed"),
        "{rg:#}"
    );
    let nf = &json.of("new_failure")[0];
    eprintln!("new_failure notice as POSTed:\n{nf:#}");
    assert_eq!(nf["sweep"]["id"], second.as_str());
    assert_eq!(nf["sweep"]["previous"], first.as_str());
    assert_eq!(nf["sweep"]["outcome"], "failed");
    let changes = nf["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{nf:#}");
    assert_eq!(
        (
            &changes[0]["rig"],
            &changes[0]["step"],
            &changes[0]["change"]
        ),
        (
            &"bench-r2".into(),
            &"self-test".into(),
            &"new_failure".into()
        )
    );
    assert!(
        nf["sweep"]["jobs"][0]["link"]
            .as_str()
            .unwrap()
            .starts_with("http://farm.example:7701/jobs/job-"),
        "{nf:#}"
    );

    // An operator quarantines a rig: both hooks hear of it, the chat one as a line of text.
    let o = lab.farmctl(&["rig", "quarantine", "bench-r1", "--reason", "bad cable"]);
    assert_eq!(o.code, 0, "{}", o.all());
    lab.wait("the quarantine notices", Duration::from_secs(20), || {
        json.of("rig_quarantined").len() == 1 && !chat.events().is_empty()
    });
    let q = &json.of("rig_quarantined")[0];
    assert_eq!(q["rig"]["name"], "bench-r1");
    assert!(
        q["rig"]["reason"].as_str().unwrap().contains("bad cable"),
        "{q:#}"
    );
    let text = chat.events()[0]["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("rig bench-r1 quarantined") && text.contains("bad cable"),
        "{text}"
    );
    assert_eq!(
        chat.events().len(),
        1,
        "the chat hook wants quarantines only: {:?}",
        chat.events()
    );

    // The agent dies: its rigs go offline, one notice names the agent and them.
    lab.stop_agent("bench", nix::sys::signal::Signal::SIGKILL);
    lab.wait("the agent-lost notice", Duration::from_secs(20), || {
        !json.of("agent_lost").is_empty()
    });
    let lost = &json.of("agent_lost")[0];
    assert_eq!(lost["agent"], "bench");
    let rigs: Vec<&str> = lost["rigs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(rigs.contains(&"bench-r2"), "{lost:#}");
    // Each notice arrived once; the very first attempt, answered 500, was retried.
    let all = json.events();
    assert_eq!(
        all.iter()
            .filter(|v| v["event"] == "sweep_finished")
            .count(),
        2,
        "{all:#?}"
    );
    assert_eq!(
        all.iter().filter(|v| v["event"] == "new_failure").count(),
        1
    );
    let refused = json.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["event"], "sweep_finished");
    assert_eq!(refused[0]["sweep"]["id"], first.as_str());
    drop(dead);
}
