//! The real-kernel tiers' shared half: booting QEMU once with a guest script (tests/qemu/vm.sh) and reading
//! what the guest left in its output directory (files, exit codes, JSON), and comparing nvme-cli's JSON with
//! nvme-flash's field by field.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{bin, workspace};

/// One finished VM run: the guest script's outputs.
#[derive(Debug)]
pub struct VmRun {
    _tmp: tempfile::TempDir,
    out: PathBuf,
}

impl VmRun {
    /// Boots the VM with `tests/qemu/<script>`, the workspace's `nvme-flash` and `bench-agent` and `extra`
    /// files (visible in the guest as vm.sh says), and waits for the guest to power off. Panics (the test fails)
    /// if a tool is missing or vm.sh fails, with its output.
    pub fn boot(script: &str, extra: impl FnOnce(&Path) -> Vec<PathBuf>) -> VmRun {
        for tool in ["qemu-system-x86_64", "busybox", "nvme", "cpio"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .unwrap()
                .status
                .success();
            assert!(
                found,
                "'{tool}' is not installed: run scripts/setup.sh (the QEMU tiers are part of the test suite)"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let extra = extra(tmp.path());
        let out = tmp.path().join("vm");
        let ws = workspace();
        let run = Command::new(ws.join("tests/qemu/vm.sh"))
            .arg(ws.join("tests/qemu").join(script))
            .arg(&out)
            .arg(bin("nvme-flash"))
            .arg(bin("bench-agent"))
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "vm.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        VmRun { _tmp: tmp, out }
    }

    /// The guest's output directory.
    pub fn dir(&self) -> &Path {
        &self.out
    }

    /// A file the guest wrote; panics with the guest's log if it is missing.
    pub fn read(&self, name: &str) -> String {
        let p = self.out.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(self.out.join("guest.log")).unwrap_or_default();
            panic!("{}: {e}\nguest log:\n{log}", p.display())
        })
    }

    /// An exit code the guest wrote (`echo $? > F`).
    pub fn rc(&self, name: &str) -> i32 {
        let s = self.read(name);
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: '{s}' is not an exit code: {e}"))
    }

    /// A JSON file the guest wrote.
    pub fn json(&self, name: &str) -> Value {
        let s = self.read(name);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{name} is not JSON: {e}\n{s}"))
    }
}

/// Every field nvme-cli prints, nvme-flash prints with the same value (a missing or different field fails the
/// test, naming it); returns how many fields were compared.
pub fn agreeing_fields(cli: &Value, ours: &Value, what: &str) -> usize {
    let cli = cli
        .as_object()
        .unwrap_or_else(|| panic!("{what}: nvme-cli output is not an object: {cli}"));
    let ours = ours
        .as_object()
        .unwrap_or_else(|| panic!("{what}: nvme-flash output is not an object: {ours}"));
    let mut compared = 0;
    for (k, v) in cli {
        let mine = ours
            .get(k)
            .unwrap_or_else(|| panic!("{what}: nvme-cli prints '{k}' but nvme-flash does not"));
        assert_eq!(
            mine, v,
            "{what}: field '{k}' differs (nvme-cli {v}, nvme-flash {mine})"
        );
        compared += 1;
    }
    compared
}
