//! `script`: a shell command on the bench, with the rig, drive and build in its environment (values are never
//! spliced into the shell text); killed at the deadline or on cancel (its whole process group), its output
//! (any bytes, bounded lines) copied into the step's log.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvfarm_model::plan::placeholders::{env_name, substitute};
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};
use crate::lines::read_lines;
use crate::runner::preflight::{script_program, Launch};

/// The environment a script sees: the rig, its drive's device names, the build under test.
fn environment(ctx: &Ctx<'_>, deadline: Instant) -> Vec<(String, String)> {
    let mut env = vec![];
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
    // Every placeholder's value (the build, the drive's serial and model, the rig's labels), as data.
    for (k, v) in &ctx.vars {
        let name = env_name(k);
        if !env.iter().any(|(n, _)| *n == name) {
            env.push((name, v.clone()));
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
    // The command is the plan's text as written: values reach it only through the environment. A bench that
    // confines scripts runs the program directly, without a shell.
    let launch = script_program(&ctx.inventory.scripts, command, &ctx.inventory.file)
        .map_err(|e| Fail::new(Outcome::Invalid, e))?;
    let mut cmd = match &launch {
        Launch::Shell(text) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(text);
            c
        }
        Launch::Direct(program, args) => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.stdin(Stdio::null())
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
            // Read to the end whatever comes (bytes that are not UTF-8, endless lines): a reader that stops
            // early would kill the script with SIGPIPE.
            readers.push(std::thread::spawn(move || {
                read_lines(s, |line| {
                    let _ = tx.send(format!("{tag}{line}"));
                });
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
