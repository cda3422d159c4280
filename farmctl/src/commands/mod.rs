//! The subcommands, one module per group, and what they share: selectors, priorities, local plan checks.

mod jobs;
mod leases;
mod rigs;
mod run;
mod sweep;

use std::path::{Path, PathBuf};

use nvfarm_model::farm::{parse_labels, Priority, Selector};
use nvfarm_model::plan::Plan;
use nvfarm_model::{junit, ExitCode};
use nvfarm_proto::v1 as pb;

use crate::cli::{Cli, Command, SweepShow};
use crate::client::{connect, CliError, Result};
use crate::render::note;

/// A rig-or-labels selector from the flags; `required` refuses an empty one.
fn selector(rig: &Option<String>, labels: &Option<String>, required: bool) -> Result<Selector> {
    let labels = match labels {
        Some(l) => parse_labels(l).map_err(CliError::usage)?,
        None => Default::default(),
    };
    if required && rig.is_none() && labels.is_empty() {
        return Err(CliError::usage("give --rig NAME or --labels k=v,..."));
    }
    Ok(Selector {
        rig: rig.clone(),
        labels,
    })
}

/// `--priority` as the wire value.
fn priority(s: &str) -> Result<i32> {
    let p: Priority = s
        .parse()
        .map_err(|e| CliError::usage(format!("--priority: {e}")))?;
    Ok(nvfarm_proto::convert::priority_pb(p) as i32)
}

/// Reads and validates a plan locally (bad input never needs the controller).
fn load_plan(path: &Path) -> Result<(String, Plan)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read plan {}: {e}", path.display())))?;
    let plan = Plan::parse(&text, path).map_err(CliError::usage)?;
    Ok((text, plan))
}

/// Runs the command. `run` and `sweep` with `--junit` always leave a JUnit file: when they end without a job
/// report (bad input, no controller, no rig), one test case whose `<error>` says why.
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let junit = junit_target(&cli);
    let r = command(cli).await;
    if let (Err(e), Some((path, suite))) = (&r, junit) {
        let kind = match e.code {
            ExitCode::Usage => "invalid",
            ExitCode::TimedOut => "timeout",
            _ => "infrastructure",
        };
        let x = junit::single_error(&suite, "farmctl", kind, &e.message);
        if let Err(w) = std::fs::write(&path, x) {
            note(format!("cannot write JUnit report {}: {w}", path.display()));
        }
    }
    r
}

/// Where `run` or `sweep` writes JUnit, and the suite name an error report uses (`plan@rig`).
fn junit_target(cli: &Cli) -> Option<(PathBuf, String)> {
    let (junit, plan, target) = match &cli.command {
        Command::Run {
            junit,
            plan,
            rig,
            labels,
            ..
        } => (junit, plan, rig.clone().or(labels.clone())),
        Command::Sweep {
            junit,
            plan: Some(plan),
            labels,
            show: None,
            ..
        } => (junit, plan, labels.clone()),
        _ => return None,
    };
    let name = std::fs::read_to_string(plan)
        .ok()
        .and_then(|t| Plan::parse(&t, plan).ok())
        .map(|p| p.name)
        .unwrap_or_else(|| plan.display().to_string());
    let target = target.unwrap_or_else(|| "all rigs".into());
    Some((junit.clone()?, format!("{name}@{target}")))
}

async fn command(cli: Cli) -> Result<ExitCode> {
    // Local validation first: bad input never needs the controller.
    if let Command::Run { plan, firmware, .. }
    | Command::Sweep {
        plan: Some(plan),
        firmware,
        show: None,
        ..
    } = &cli.command
    {
        let (_, p) = load_plan(plan)?;
        if p.flash_step().is_some() && firmware.is_none() {
            return Err(CliError::usage(format!(
                "plan {} flashes firmware: give --firmware FILE",
                plan.display()
            )));
        }
    }
    let mut c = connect(&cli.controller, cli.token.as_deref()).await?;
    let j = cli.json;
    match cli.command {
        Command::Rigs { labels } => rigs::list(&mut c, j, labels).await,
        Command::Rig { action } => rigs::set_state(&mut c, j, action).await,
        Command::Reserve {
            rig,
            labels,
            duration,
            wait,
            detach,
            priority: p,
        } => {
            let sel = selector(&rig, &labels, true)?;
            let how = leases::Reserve {
                selector: sel,
                duration,
                wait,
                detach,
                priority: priority(&p)?,
            };
            leases::reserve(&mut c, &cli.controller, cli.token.as_deref(), j, how).await
        }
        Command::Withdraw { request_id } => leases::withdraw(&mut c, j, request_id).await,
        Command::Release { lease_id } => leases::release(&mut c, j, lease_id).await,
        Command::Extend { lease_id, duration } => {
            leases::extend(&mut c, j, lease_id, duration).await
        }
        Command::Queue => leases::queue(&mut c, j).await,
        Command::Run {
            firmware,
            plan,
            rig,
            labels,
            junit,
            timeout,
            priority: p,
            wait,
        } => {
            let args = run::RunArgs {
                firmware,
                plan,
                selector: selector(&rig, &labels, true)?,
                junit,
                timeout,
                priority: priority(&p)?,
                wait,
            };
            run::run(&mut c, &cli.controller, cli.token.as_deref(), j, args).await
        }
        Command::Sweep {
            show: Some(SweepShow::Show { id, threshold }),
            ..
        } => sweep::show(&mut c, j, id, threshold).await,
        Command::Sweep {
            show: None,
            firmware,
            plan: Some(plan),
            labels,
            name,
            junit,
            timeout,
            retries,
            threshold,
            priority: p,
        } => {
            let args = sweep::SweepArgs {
                firmware,
                plan,
                labels: selector(&None, &labels, false)?.labels,
                name,
                junit,
                timeout,
                retries,
                threshold,
                priority: priority(&p)?,
            };
            sweep::sweep(&mut c, j, args).await
        }
        Command::Sweep { plan: None, .. } => Err(CliError::usage(
            "give --plan FILE to start a sweep, or `sweep show ID` to show one",
        )),
        Command::Sweeps {
            name,
            limit,
            offset,
        } => sweep::list(&mut c, j, name, limit, offset).await,
        Command::History {
            rig,
            build,
            model,
            plan,
            since,
            until,
            limit,
            offset,
        } => {
            let q = pb::ListJobsRequest {
                limit,
                rig: rig.unwrap_or_default(),
                sweep_id: String::new(),
                build: build.unwrap_or_default(),
                drive_model: model.unwrap_or_default(),
                plan: plan.unwrap_or_default(),
                since_ms: since.unwrap_or(0),
                until_ms: until.unwrap_or(0),
                offset,
            };
            jobs::history(&mut c, j, q).await
        }
        Command::Leases { mine } => leases::list(&mut c, j, mine).await,
        Command::Jobs { limit, rig } => jobs::list(&mut c, j, limit, rig).await,
        Command::Job { id } => jobs::show(&mut c, j, id).await,
        Command::Logs { id, follow } => {
            jobs::logs(&mut c, &cli.controller, cli.token.as_deref(), id, follow).await
        }
        Command::Cancel { id } => jobs::cancel(&mut c, j, id).await,
    }
}

/// A selector on the wire.
fn selector_pb(s: &Selector) -> pb::Selector {
    pb::Selector::from(s)
}
