//! Helpers for nvfarm's end-to-end tests: finding the workspace's binaries and scripts, a farm on loopback, the
//! QEMU tiers' VM runs, benchmarks and chaos runs.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A binary of the workspace (`nvme-flash`, `bench-agent`, ...), built by the same cargo invocation as the tests
/// (`cargo test --workspace` builds every member's binaries first), found next to the running executable: a test
/// (`target/<profile>/deps/<test>`) or a binary of this package (`target/<profile>/chaos`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("target/<profile>");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test.sh does)",
        p.display()
    );
    p
}

pub mod bench;
pub mod chaos;
pub mod vm;

pub mod lab {
    //! A farm on loopback for end-to-end tests: a controller, agents with simulated rigs, farmctl.

    use std::net::TcpListener;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::bin;

    #[derive(Debug)]
    pub struct Out {
        pub code: i32,
        pub stdout: String,
        pub stderr: String,
    }

    impl Out {
        /// Runs `cmd` to its end.
        pub fn of(mut cmd: Command) -> Out {
            let o = cmd.output().unwrap();
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).into(),
            }
        }
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
                panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
            })
        }
        pub fn all(&self) -> String {
            format!(
                "exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[derive(Debug)]
    pub struct Lab {
        pub dir: tempfile::TempDir,
        pub grpc: u16,
        pub http: u16,
        controller: Option<Child>,
        agents: Vec<(String, Option<Child>)>,
    }

    /// Quick plan: flash, check the revision, SMART.
    pub const QUICK_PLAN: &str = r#"name = "quick"
[[step]]
name = "flash"
kind = "flash"
[[step]]
name = "identify"
kind = "identify"
expect = { fr = "{firmware.revision}" }
[[step]]
name = "health"
kind = "smart"
critical_warning = 0
"#;

    impl Lab {
        /// A lab whose controller config is the fast-heartbeat defaults plus `extra` TOML.
        pub fn new(extra: &str) -> Lab {
            let dir = tempfile::tempdir().unwrap();
            let (grpc, http) = (free_port(), free_port());
            let cfg = format!(
                "[health]\nheartbeat_interval = \"200ms\"\nagent_timeout = \"1500ms\"\n{extra}\n"
            );
            std::fs::write(dir.path().join("controller.toml"), cfg).unwrap();
            std::fs::write(dir.path().join("quick.toml"), QUICK_PLAN).unwrap();
            Lab {
                dir,
                grpc,
                http,
                controller: None,
                agents: vec![],
            }
        }

        pub fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        pub fn url(&self) -> String {
            format!("http://127.0.0.1:{}", self.grpc)
        }

        pub fn start_controller(&mut self) {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path("controller.log"))
                .unwrap();
            let child = Command::new(bin("farm-controller"))
                .args(["--config", self.path("controller.toml").to_str().unwrap()])
                .args(["--data-dir", self.path("ctl").to_str().unwrap()])
                .args([
                    "--listen",
                    &format!("127.0.0.1:{}", self.grpc),
                    "--http",
                    &format!("127.0.0.1:{}", self.http),
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            self.controller = Some(child);
            self.wait("the controller to listen", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", self.grpc)).is_ok()
            });
        }

        /// The controller's process id, while it runs.
        pub fn controller_pid(&self) -> Option<u32> {
            self.controller.as_ref().map(|c| c.id())
        }

        /// Kills the controller with `signal` and waits for it to exit.
        pub fn stop_controller(&mut self, signal: nix::sys::signal::Signal) {
            if let Some(mut c) = self.controller.take() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
                let _ = c.wait();
            }
        }

        /// Writes a rig file for agent `agent` with `n` simulated rigs (`<agent>-r1`...) of model X1.
        pub fn rigs(&self, agent: &str, n: usize) -> PathBuf {
            let mut t = format!("[agent]\nname = \"{agent}\"\n");
            for i in 1..=n {
                t.push_str(&format!(
                    "[[rig]]\nname = \"{agent}-r{i}\"\nlabels = {{ model = \"X1\", slot = \"{i}\" }}\n\
                     drive = {{ sim = \"sim/{agent}-r{i}\", serial = \"{}{i:04}\", size = \"64M\", boot_time = \"50ms\", self_test_short = \"300ms\" }}\n\
                     power = {{ sim = true }}\nconsole = {{ sim = true }}\n",
                    agent.to_uppercase().replace('-', "")
                ));
            }
            let p = self.path(&format!("{agent}.toml"));
            std::fs::write(&p, t).unwrap();
            p
        }

        pub fn start_agent(&mut self, agent: &str, rigs: &Path, token: Option<&str>) {
            let url = self.url();
            self.start_agent_via(agent, rigs, token, &url);
        }

        /// Starts agent `agent` with its link to the controller at `controller` (e.g. through a proxy).
        pub fn start_agent_via(
            &mut self,
            agent: &str,
            rigs: &Path,
            token: Option<&str>,
            controller: &str,
        ) {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(&format!("{agent}.log")))
                .unwrap();
            let mut cmd = Command::new(bin("bench-agent"));
            cmd.args(["--controller", controller, "--rigs", rigs.to_str().unwrap()])
                .args([
                    "--work-dir",
                    self.path(&format!("work-{agent}")).to_str().unwrap(),
                ])
                .env_remove("FARM_TOKEN")
                .stdout(Stdio::null())
                .stderr(log);
            if let Some(t) = token {
                cmd.args(["--token", t]);
            }
            let child = cmd.spawn().unwrap();
            match self.agents.iter_mut().find(|(n, _)| n == agent) {
                Some(slot) => slot.1 = Some(child),
                None => self.agents.push((agent.to_string(), Some(child))),
            }
        }

        pub fn stop_agent(&mut self, agent: &str, signal: nix::sys::signal::Signal) {
            if let Some((_, Some(mut c))) = self
                .agents
                .iter_mut()
                .find(|(n, _)| n == agent)
                .map(|(n, c)| (n.clone(), c.take()))
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
                let _ = c.wait();
            }
        }

        /// Sends `signal` to agent `agent` without waiting for it (SIGSTOP/SIGCONT).
        pub fn signal_agent(&self, agent: &str, signal: nix::sys::signal::Signal) {
            let child = self
                .agents
                .iter()
                .find(|(n, _)| n == agent)
                .and_then(|(_, c)| c.as_ref())
                .expect("agent running");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        }

        pub fn sim_dir(&self, agent: &str, rig: &str) -> PathBuf {
            self.path(&format!("work-{agent}/sim/{rig}"))
        }

        pub fn farmctl_cmd(&self, args: &[&str]) -> Command {
            self.farmctl_cmd_at(&self.url(), args)
        }

        /// farmctl pointed at `controller` (any address, right or wrong).
        pub fn farmctl_cmd_at(&self, controller: &str, args: &[&str]) -> Command {
            let mut c = Command::new(bin("farmctl"));
            c.args(["--controller", controller])
                .args(args)
                .current_dir(self.dir.path())
                .env_remove("FARM_TOKEN")
                .env_remove("FARM_CONTROLLER");
            c
        }

        pub fn farmctl(&self, args: &[&str]) -> Out {
            Out::of(self.farmctl_cmd(args))
        }

        /// farmctl pointed at `controller`, run to its end.
        pub fn farmctl_at(&self, controller: &str, args: &[&str]) -> Out {
            Out::of(self.farmctl_cmd_at(controller, args))
        }

        pub fn image(&self, rev: &str, behaviour: &str) -> String {
            let out = self.path(&format!("fw-{rev}-{behaviour}.img"));
            let st = Command::new(bin("nvme-flash"))
                .args([
                    "sim",
                    "image",
                    "--rev",
                    rev,
                    "--behaviour",
                    behaviour,
                    "-o",
                    out.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            out.display().to_string()
        }

        pub fn nvme_flash(&self, args: &[&str]) -> Out {
            let o = Command::new(bin("nvme-flash")).args(args).output().unwrap();
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).into(),
            }
        }

        /// Injects a fault into agent `agent`'s simulated rig `rig` (`nvme-flash sim fault DIR FAULT...`), which
        /// must succeed.
        pub fn sim_fault(&self, agent: &str, rig: &str, fault: &[&str]) {
            let dir = self.sim_dir(agent, rig);
            let mut args = vec!["sim", "fault", dir.to_str().unwrap()];
            args.extend_from_slice(fault);
            let o = self.nvme_flash(&args);
            assert_eq!(o.code, 0, "sim fault {fault:?} on {rig}: {}", o.all());
        }

        /// Writes [`QUICK_PLAN`] as `file` in the lab, named `name`, with `extra` (more `[[step]]`s) after it;
        /// returns its path.
        pub fn quick_plan(&self, file: &str, name: &str, extra: &str) -> String {
            let p = self.path(file);
            let text = QUICK_PLAN.replace("name = \"quick\"", &format!("name = \"{name}\""));
            std::fs::write(&p, format!("{text}{extra}")).unwrap();
            p.display().to_string()
        }

        /// Polls `cond` until true, panicking with the logs after `within`.
        pub fn wait(&self, what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
            let start = Instant::now();
            while !cond() {
                if start.elapsed() > within {
                    panic!(
                        "timed out after {within:?} waiting for {what}\n{}",
                        self.logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// Rigs as farmctl --json reports them.
        pub fn rigs_json(&self) -> Vec<serde_json::Value> {
            let o = self.farmctl(&["--json", "rigs"]);
            if o.code != 0 {
                return vec![];
            }
            o.json().as_array().cloned().unwrap_or_default()
        }

        pub fn rig_state(&self, rig: &str) -> String {
            self.rigs_json()
                .iter()
                .find(|r| r["name"] == rig)
                .map(|r| r["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default()
        }

        pub fn job(&self, id: &str) -> serde_json::Value {
            self.farmctl(&["--json", "job", id]).json()
        }

        pub fn logs(&self) -> String {
            let mut s = String::new();
            for f in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    s.push_str(&format!("--- {} (last 40 lines)\n", f.path().display()));
                    for l in tail.iter().rev() {
                        s.push_str(l);
                        s.push('\n');
                    }
                }
            }
            s
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            for (_, c) in self.agents.iter_mut() {
                if let Some(mut c) = c.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            if let Some(mut c) = self.controller.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
