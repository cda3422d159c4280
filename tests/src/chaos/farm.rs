//! The farm the chaos suite runs: a controller whose data directory is a small tmpfs (so it can fill up), two
//! agents whose links go through fault proxies, simulated rigs of model X1 for the load and one rig of model P for
//! the queue-order probe, and what the suite reads back from it (rigs, jobs, the agents' lease journals).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nvfarm_model::journal::{self, HeldSpan};
use serde_json::Value;

use super::proxy::Proxy;
use crate::lab::Lab;

/// The agents and the rigs each owns.
pub const AGENTS: [(&str, &[&str]); 2] = [
    ("bench-a", &["a-r1", "a-r2", "a-probe"]),
    ("bench-b", &["b-r1", "b-r2"]),
];

/// The rig the queue-order probe uses (no load job can take it: it is model P).
pub const PROBE_RIG: &str = "a-probe";

/// The plan every load job runs: flash, check the revision, a second of verified I/O (so faults find jobs
/// mid-run), SMART; each step bounded.
pub const PLAN: &str = r#"name = "chaos"
[[step]]
name = "flash"
kind = "flash"
timeout = "30s"
[[step]]
name = "identify"
kind = "identify"
timeout = "10s"
expect = { fr = "{firmware.revision}" }
[[step]]
name = "io"
kind = "io"
timeout = "20s"
rw = "randrw"
bs = "4k"
iodepth = 4
runtime = "1s"
size = "8M"
verify = true
[[step]]
name = "health"
kind = "smart"
timeout = "10s"
critical_warning = 0
"#;

/// The controller's settings: fast heartbeats, short graces, so faults resolve within seconds.
const CONTROLLER_TOML: &str = r#"[health]
heartbeat_interval = "200ms"
agent_timeout = "1500ms"
stop_grace = "4s"
quarantine_after = 3

[queue]
watch_grace = "2s"
claim_timeout = "2s"
"#;

/// A tmpfs mounted on a directory, unmounted on drop.
#[derive(Debug)]
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "nvfarm-chaos"])
            .arg(dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !st.success() {
            return Err(format!(
                "mounting a {size} tmpfs on {} failed: the chaos suite needs root (CI runs as root)",
                dir.display()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The farm under test.
#[derive(Debug)]
pub struct ChaosFarm {
    /// The processes (dropped first: nothing may run on the tmpfs when it goes).
    pub lab: Lab,
    /// One proxy per agent, in [`AGENTS`] order.
    pub proxies: Vec<Proxy>,
    /// A good build and one that does not boot.
    pub good: String,
    /// A build the drive does not boot.
    pub boot_fail: String,
    /// The load plan.
    pub plan: PathBuf,
    _disk: Tmpfs,
}

fn rig_file(lab: &Lab, agent: &str, rigs: &[&str]) -> PathBuf {
    let mut t = format!("[agent]\nname = \"{agent}\"\n");
    for (i, rig) in rigs.iter().enumerate() {
        let model = if *rig == PROBE_RIG { "P" } else { "X1" };
        t.push_str(&format!(
            "[[rig]]\nname = \"{rig}\"\nlabels = {{ model = \"{model}\" }}\n\
             drive = {{ sim = \"sim/{rig}\", serial = \"CH{}{i:03}\", size = \"32M\", boot_time = \"50ms\" }}\n\
             power = {{ sim = true }}\nconsole = {{ sim = true }}\n",
            agent.to_uppercase().replace('-', ""),
        ));
    }
    let p = lab.path(&format!("{agent}.toml"));
    std::fs::write(&p, t).expect("write the rig file");
    p
}

impl ChaosFarm {
    /// Starts the farm and waits until every rig is idle.
    pub fn start() -> Result<ChaosFarm, String> {
        let mut lab = Lab::new("");
        std::fs::write(lab.path("controller.toml"), CONTROLLER_TOML).map_err(|e| e.to_string())?;
        let disk = Tmpfs::mount(&lab.path("ctl"), "48m")?;
        let plan = lab.path("chaos.toml");
        std::fs::write(&plan, PLAN).map_err(|e| e.to_string())?;
        lab.start_controller();
        let upstream = format!("127.0.0.1:{}", lab.grpc).parse().expect("address");
        let mut proxies = vec![];
        for (agent, rigs) in AGENTS {
            let proxy = Proxy::start(upstream);
            let file = rig_file(&lab, agent, rigs);
            lab.start_agent_via(agent, &file, None, &proxy.url());
            proxies.push(proxy);
        }
        let good = lab.image("2.0.0", "ok");
        let boot_fail = lab.image("9.9.9", "boot-fail");
        let farm = ChaosFarm {
            lab,
            proxies,
            good,
            boot_fail,
            plan,
            _disk: disk,
        };
        let all = AGENTS.iter().map(|(_, r)| r.len()).sum::<usize>();
        farm.wait_for("every rig to be idle", Duration::from_secs(30), || {
            let r = farm.rigs();
            r.len() == all && r.iter().all(|x| x["state"] == "idle")
        })?;
        Ok(farm)
    }

    /// Polls `cond` every 100 ms until it holds or `within` passes.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let t = std::time::Instant::now();
        while !cond() {
            if t.elapsed() > within {
                return Err(format!("{what}: not within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The controller's gRPC URL (what clients use; agents go through their proxies).
    pub fn url(&self) -> String {
        self.lab.url()
    }

    /// The rigs, as `farmctl --json rigs` prints them (empty when the controller does not answer).
    pub fn rigs(&self) -> Vec<Value> {
        self.lab.rigs_json()
    }

    /// The most recent jobs the controller knows (at most `limit`).
    pub fn jobs(&self, limit: u32) -> Option<Vec<Value>> {
        let o = self
            .lab
            .farmctl(&["--json", "jobs", "--limit", &limit.to_string()]);
        (o.code == 0)
            .then(|| o.json().as_array().cloned())
            .flatten()
    }

    /// One job by id: `Some(None)` if the controller says it does not exist, `None` if it does not answer.
    pub fn job(&self, id: &str) -> Option<Option<Value>> {
        let o = self.lab.farmctl(&["--json", "job", id]);
        match o.code {
            0 => Some(Some(o.json())),
            2 if o.stderr.contains("no job") || o.stderr.contains("not found") => Some(None),
            _ => None,
        }
    }

    /// The simulated drive directory of `rig`.
    pub fn sim_dir(&self, rig: &str) -> PathBuf {
        let agent = AGENTS
            .iter()
            .find(|(_, rigs)| rigs.contains(&rig))
            .map(|(a, _)| *a)
            .expect("a chaos rig");
        self.lab.sim_dir(agent, rig)
    }

    /// The agent that owns `rig`.
    pub fn agent_of(rig: &str) -> &'static str {
        AGENTS
            .iter()
            .find(|(_, rigs)| rigs.contains(&rig))
            .map(|(a, _)| *a)
            .expect("a chaos rig")
    }

    /// Restarts the controller after `signal`; returns how long it took to exit.
    pub fn restart_controller(&mut self, signal: Signal) -> Duration {
        let t = std::time::Instant::now();
        self.lab.stop_controller(signal);
        let stopped = t.elapsed();
        self.lab.start_controller();
        stopped
    }

    /// Stops agent `agent` with `signal` (waiting for it to exit); returns how long that took.
    pub fn stop_agent(&mut self, agent: &str, signal: Signal) -> Duration {
        let t = std::time::Instant::now();
        self.lab.stop_agent(agent, signal);
        t.elapsed()
    }

    /// Starts agent `agent` again, through its proxy.
    pub fn start_agent(&mut self, agent: &str) {
        let i = AGENTS
            .iter()
            .position(|(a, _)| *a == agent)
            .expect("a chaos agent");
        let file = self.lab.path(&format!("{agent}.toml"));
        let url = self.proxies[i].url();
        self.lab.start_agent_via(agent, &file, None, &url);
    }

    /// The proxy in front of `agent`.
    pub fn proxy(&self, agent: &str) -> &Proxy {
        let i = AGENTS
            .iter()
            .position(|(a, _)| *a == agent)
            .expect("a chaos agent");
        &self.proxies[i]
    }

    /// The controller's data directory (the tmpfs).
    pub fn data_dir(&self) -> PathBuf {
        self.lab.path("ctl")
    }

    /// Every span the agents' lease journals record, and how many torn lines they had.
    pub fn journal_spans(&self) -> (Vec<HeldSpan>, usize) {
        let mut spans = vec![];
        let mut torn = 0;
        for (agent, _) in AGENTS {
            let dir = self.lab.path(&format!("work-{agent}/agent"));
            // The rotated file first: it is older.
            let mut text = std::fs::read_to_string(dir.join("journal.1.jsonl")).unwrap_or_default();
            text.push_str(&std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default());
            let (entries, bad) = journal::parse(&text);
            torn += bad;
            spans.extend(journal::spans(&entries));
        }
        (spans, torn)
    }

    /// Rigs by name.
    pub fn rigs_by_name(&self) -> BTreeMap<String, Value> {
        self.rigs()
            .into_iter()
            .filter_map(|r| Some((r["name"].as_str()?.to_string(), r)))
            .collect()
    }
}
