//! What the bench-agent CLI tests share: a lab directory with a simulated rig, plans, images, and running the
//! binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Lab {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

pub fn nvme_flash() -> PathBuf {
    // The workspace's nvme-flash, built alongside this crate's binaries.
    let mut p = PathBuf::from(env!("CARGO_BIN_EXE_bench-agent"));
    p.set_file_name("nvme-flash");
    assert!(
        p.exists(),
        "{} missing: build the workspace binaries first (cargo build --bins)",
        p.display()
    );
    p
}

pub fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

impl Lab {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Lab { _tmp: tmp, root }
    }
    pub fn p(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
    /// A rig file with one simulated rig `r1` (plus `console` extra), drive under the lab.
    pub fn rigs(&self, console: &str) -> String {
        self.rigs_with("", console)
    }
    /// A rig file with `agent` lines in `[agent]` and one simulated rig `r1` (plus `rig` lines), drive under the
    /// lab.
    pub fn rigs_with(&self, agent: &str, rig: &str) -> String {
        let console = rig;
        let text = format!(
            r#"[agent]
name = "test"
{agent}
[[rig]]
name = "r1"
labels = {{ model = "X1" }}
drive = {{ sim = "{}", serial = "TST0001", firmware = "1.0.0", size = "128M", boot_time = "50ms", self_test_short = "300ms", self_test_extended = "60s" }}
power = {{ sim = true }}
{console}
"#,
            self.p("drive")
        );
        let f = self.p("rigs.toml");
        std::fs::write(&f, text).unwrap();
        f
    }
    pub fn plan(&self, name: &str, text: &str) -> String {
        let f = self.p(name);
        std::fs::write(&f, text).unwrap();
        f
    }
    pub fn image(&self, rev: &str, behaviour: &str) -> String {
        let out = self.p(&format!("fw-{rev}-{behaviour}.img"));
        let (code, _, err) = run(
            &nvme_flash(),
            &[
                "sim",
                "image",
                "--rev",
                rev,
                "--behaviour",
                behaviour,
                "-o",
                &out,
            ],
        );
        assert_eq!(code, 0, "{err}");
        out
    }
    pub fn agent(&self, args: &[&str]) -> (i32, String, String) {
        run(Path::new(env!("CARGO_BIN_EXE_bench-agent")), args)
    }
    pub fn run_plan(
        &self,
        rigs: &str,
        plan: &str,
        firmware: Option<&str>,
    ) -> (i32, Value, String, String) {
        self.run_plan_with(rigs, plan, firmware, &[])
    }

    /// `run_plan` with more `bench-agent run` arguments (e.g. `--set STEP.KEY=VALUE`).
    pub fn run_plan_with(
        &self,
        rigs: &str,
        plan: &str,
        firmware: Option<&str>,
        extra: &[&str],
    ) -> (i32, Value, String, String) {
        let junit = self.p("junit.xml");
        let mut args = vec![
            "run",
            "--rigs",
            rigs,
            "--rig",
            "r1",
            "--plan",
            plan,
            "--junit",
            &junit,
            "--json",
            "--work-dir",
            &self.root.to_str().unwrap(),
        ];
        if let Some(f) = firmware {
            args.extend(["--firmware", f]);
        }
        args.extend_from_slice(extra);
        let (code, out, err) = self.agent(&args);
        let report = serde_json::from_str(&out).unwrap_or(Value::Null);
        let junit = std::fs::read_to_string(self.p("junit.xml")).unwrap_or_default();
        (code, report, junit, err)
    }
}

pub fn workspace() -> PathBuf {
    // bench-agent/cli → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}
