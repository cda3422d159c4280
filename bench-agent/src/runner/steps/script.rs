//! `script`: a shell command on the bench, with the rig, drive and build in its environment; killed at the
//! deadline or on cancel (its whole process group), its output copied into the step's log.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvfarm_model::plan::placeholders::substitute;
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

/// The environment a script sees: the rig, its drive's device names, the build under test.
fn environment(ctx: &Ctx<'_>, deadline: Instant) -> Vec<(String, String)> {
    let mut env = vec![("NVFARM_RIG".to_string(), ctx.rig.name.clone())];
    for (k, v) in &ctx.rig.labels {
        env.push((format!("NVFARM_RIG_LABEL_{}", k.to_uppercase()), v.clone()));
    }
    match ctx.rig.media_path() {
        Some(media) => {
            env.push(("NVFARM_DEVICE".into(), ctx.locator.addr.to_string()));
            env.push(("NVFARM_NAMESPACE".into(), media.display().to_string()));
        }
        None => match ctx.drive(deadline) {
            Ok(d) => {
                let name = d.controller().device_name();
                env.push(("NVFARM_DEVICE".into(), format!("/dev/{name}")));
                env.push(("NVFARM_NAMESPACE".into(), format!("/dev/{name}n1")));
                env.push((
                    "NVFARM_GENERIC".into(),
                    format!("/dev/{}n1", name.replacen("nvme", "ng", 1)),
                ));
            }
            Err(_) => env.push(("NVFARM_DEVICE".into(), ctx.locator.addr.to_string())),
        },
    }
    for (k, v) in [
        ("firmware.revision", "NVFARM_FIRMWARE_REV"),
        ("firmware.file", "NVFARM_FIRMWARE_FILE"),
        ("firmware.sha256", "NVFARM_FIRMWARE_SHA256"),
    ] {
        if let Some(val) = ctx.vars.get(k) {
            env.push((v.to_string(), val.clone()));
        }
    }
    env
}

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    command: &str,
    env: &BTreeMap<String, String>,
    expect_exit: i32,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let command =
        substitute(command, &ctx.vars).map_err(|e| Fail::error(format!("command: {e}")))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.envs(environment(ctx, deadline));
    for (k, v) in env {
        cmd.env(
            k,
            substitute(v, &ctx.vars).map_err(|e| Fail::error(format!("env.{k}: {e}")))?,
        );
    }
    log.line(format!("$ {command}"));
    let mut child = cmd
        .spawn()
        .map_err(|e| Fail::error(format!("cannot start `sh -c {command}`: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = vec![];
    for (stream, tag) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            "",
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            "stderr: ",
        ),
    ] {
        if let Some(s) = stream {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("{tag}{line}"));
                }
            }));
        }
    }
    drop(tx);
    let cancelled = || ctx.opts.cancel.load(Ordering::Relaxed);
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            log.line(line);
        }
        match child.try_wait() {
            Ok(Some(st)) => break Some(Ok(st)),
            Ok(None) if Instant::now() >= deadline || cancelled() => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break if cancelled() { Some(Err(())) } else { None };
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Fail::error(format!("waiting for the script: {e}"))),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    while let Ok(line) = rx.try_recv() {
        log.line(line);
    }
    match status {
        None => Err(Fail::new(
            Outcome::TimedOut,
            format!("`{command}` was still running at the step timeout and was killed"),
        )),
        Some(Err(())) => Err(Fail::new(
            Outcome::Cancelled,
            format!("cancelled: `{command}` was killed"),
        )),
        Some(Ok(st)) => match st.code() {
            Some(c) if c == expect_exit => Ok(format!("`{command}` exited {c}")),
            Some(c) => Err(Fail::failed(format!(
                "`{command}` exited {c}, expected {expect_exit}"
            ))),
            None => Err(Fail::failed(format!(
                "`{command}` was killed by a signal ({st})"
            ))),
        },
    }
}
