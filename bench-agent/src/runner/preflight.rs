//! What a plan needs from this bench, checked before any step runs: its `script` steps are allowed by the rig
//! file and name programs that exist and can run; its `io` steps write only to the rig's own drive or to a
//! path the rig file allows. A plan that fails here is invalid input (exit 2) and touches nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nvfarm_model::plan::{IoTarget, Plan, StepKind};

use crate::rigs::{Inventory, Rig, ScriptPolicy};

/// A plan step this bench will not run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The step's number.
    pub step: u32,
    /// What is wrong and what would work.
    pub reason: String,
}

/// The first step of `plan` that `rig` (in `inventory`) cannot run.
pub fn check(plan: &Plan, inventory: &Inventory, rig: &Rig) -> Result<(), Refused> {
    // Members of parallel groups too.
    for step in plan.all_steps() {
        let refuse = |reason: String| Refused {
            step: step.number,
            reason,
        };
        match &step.kind {
            StepKind::Script { command, .. } => {
                script_program(&inventory.scripts, command, &inventory.file).map_err(refuse)?;
            }
            StepKind::Io(io) => {
                if let IoTarget::Path(p) = &io.target {
                    io_path_allowed(rig, p).map_err(refuse)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// How a `script` step's command runs under `policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `sh -c COMMAND`.
    Shell(String),
    /// The program (inside the confined directory) with its arguments, no shell.
    Direct(PathBuf, Vec<String>),
}

/// Decides how `command` runs under `policy`, or why it may not: a forbidden script, a program outside the
/// confined directory, or one that is missing or not executable.
pub fn script_program(
    policy: &ScriptPolicy,
    command: &str,
    rig_file: &Path,
) -> Result<Launch, String> {
    let words = shlex::split(command)
        .ok_or_else(|| format!("command `{command}` has an unbalanced quote"))?;
    let Some(program) = words.first() else {
        return Err("command is empty".into());
    };
    match policy {
        ScriptPolicy::Forbidden => Err(format!(
            "this bench does not run script steps ({} sets [agent] scripts = \"none\")",
            rig_file.display()
        )),
        ScriptPolicy::Any => {
            // A program named by path must be there; bare names are left to the shell's PATH and builtins.
            if program.contains('/') {
                executable(Path::new(program))?;
            }
            Ok(Launch::Shell(command.to_string()))
        }
        ScriptPolicy::Confined(dir) => {
            // Relative names resolve inside the directory; `..` or a symlink out of it is caught below.
            let candidate = if Path::new(program).is_absolute() {
                PathBuf::from(program)
            } else {
                dir.join(program)
            };
            let real = std::fs::canonicalize(&candidate).map_err(|e| {
                format!(
                    "script program {} cannot be found ({e}); this bench runs only programs in {}",
                    candidate.display(),
                    dir.display()
                )
            })?;
            if !real.starts_with(dir) {
                return Err(format!(
                    "script program {} is outside {}, the only directory this bench runs scripts from ({} [agent] scripts)",
                    real.display(),
                    dir.display(),
                    rig_file.display()
                ));
            }
            executable(&real)?;
            Ok(Launch::Direct(real, words[1..].to_vec()))
        }
    }
}

fn executable(p: &Path) -> Result<(), String> {
    let m = std::fs::metadata(p)
        .map_err(|e| format!("script program {} cannot be found ({e})", p.display()))?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "script program {} is not an executable file (chmod +x it?)",
            p.display()
        ));
    }
    Ok(())
}

/// An io step's explicit path must be the rig's own drive (its media, or a device node of its controller) or lie
/// under one of the rig's `io_paths`.
fn io_path_allowed(rig: &Rig, p: &Path) -> Result<(), String> {
    let real = real_path(p);
    if rig.media_path().is_some_and(|m| real_path(&m) == real) {
        return Ok(());
    }
    if rig.io_paths.iter().any(|a| real.starts_with(real_path(a))) {
        return Ok(());
    }
    if own_device_node(rig, &real) {
        return Ok(());
    }
    let allowed = if rig.io_paths.is_empty() {
        "none".to_string()
    } else {
        rig.io_paths
            .iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "io target {} is not rig {}'s drive and not under its io_paths ({allowed}); use target = \"namespace\" or add the path to the rig's io_paths",
        p.display(),
        rig.name
    ))
}

/// `/dev/nvmeXnY` or `/dev/ngXnY` of the rig's own controller (a real drive given by device path).
fn own_device_node(rig: &Rig, real: &Path) -> bool {
    let crate::rigs::DriveSelector::Real(addr) = &rig.drive else {
        return false;
    };
    let Some(ctrl) = addr.strip_prefix("/dev/nvme").map(|n| {
        n.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    }) else {
        return false;
    };
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    [format!("nvme{ctrl}n"), format!("ng{ctrl}n")]
        .iter()
        .any(|prefix| {
            name.strip_prefix(prefix.as_str())
                .is_some_and(|ns| !ns.is_empty() && ns.chars().all(|c| c.is_ascii_digit()))
        })
}

/// The path with symlinks resolved where it exists (a path that does not exist yet resolves by its parent).
fn real_path(p: &Path) -> PathBuf {
    if let Ok(r) = std::fs::canonicalize(p) {
        return r;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            real_path(parent).join(name)
        }
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_bench_runs_only_executables_in_its_directory_without_a_shell() {
        let t = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(t.path()).unwrap();
        let ok = dir.join("check.sh");
        std::fs::write(&ok, "#!/bin/sh\necho ok\n").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.join("data.txt");
        std::fs::write(&plain, "x").unwrap();
        let policy = ScriptPolicy::Confined(dir.clone());
        let file = Path::new("rigs/b.toml");
        assert_eq!(
            script_program(&policy, "check.sh --fast 'a b'", file).unwrap(),
            Launch::Direct(ok.clone(), vec!["--fast".into(), "a b".into()])
        );
        let e = script_program(&policy, "/bin/sh -c 'rm -rf /'", file).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = script_program(&policy, "../../bin/true", file).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = script_program(&policy, "data.txt", file).unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        let e = script_program(&policy, "missing.sh", file).unwrap_err();
        assert!(e.contains("cannot be found"), "{e}");
        let e = script_program(&ScriptPolicy::Forbidden, "true", file).unwrap_err();
        assert!(e.contains("scripts = \"none\""), "{e}");
        assert_eq!(
            script_program(&ScriptPolicy::Any, "echo {a,b} | wc", file).unwrap(),
            Launch::Shell("echo {a,b} | wc".into())
        );
        let e = script_program(&ScriptPolicy::Any, "/no/such/tool --x", file).unwrap_err();
        assert!(e.contains("/no/such/tool cannot be found"), "{e}");
    }
}
