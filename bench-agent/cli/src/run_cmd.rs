//! `bench-agent run`: a plan on one rig, no controller (at the bench, and in tests).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;

use bench_agent::rigs::Inventory;
use bench_agent::runner::{self, Firmware, Observer, RunOptions};
use flash_tools::device::Sysfs;
use nvfarm_model::plan::{Plan, PlanOverride, Step};
use nvfarm_model::{junit, ExitCode, StepReport};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Rig inventory file (rigs/*.toml).
    #[arg(long)]
    rigs: PathBuf,
    /// Rig to run on.
    #[arg(long)]
    rig: String,
    /// Test plan (plans/*.toml).
    #[arg(long)]
    plan: PathBuf,
    /// Change one step's setting before the plan is validated, STEP.KEY=VALUE (VALUE in TOML: 100, true,
    /// "4k"); repeatable. E.g. `--set randrw-verify.min_iops=100` on a rig slower than the plan assumes.
    /// The run's output names every change.
    #[arg(long = "set", value_name = "STEP.KEY=VALUE")]
    set: Vec<PlanOverride>,
    /// Firmware image under test (needed by plans with a flash step).
    #[arg(long)]
    firmware: Option<PathBuf>,
    /// The revision the firmware build reports once running, if known (checked after activation; otherwise
    /// the drive's slot log after the commit says what to expect).
    #[arg(long, requires = "firmware")]
    firmware_revision: Option<String>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Print the run report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Where simulated drives and agent state live (relative sim paths in the rig file resolve here).
    #[arg(long, env = "NVFARM_WORK_DIR", default_value = "farm-data/agent")]
    work_dir: PathBuf,
    /// sysfs root for finding real drives by serial or PCI address.
    #[arg(long, env = "NVFARM_SYSFS_ROOT", default_value = "/sys")]
    sysfs_root: PathBuf,
}

struct Printer {
    verbose: bool,
}

impl Observer for Printer {
    fn step_started(&mut self, step: &Step) {
        eprintln!("[{:>2}] {:<26} running ...", step.number, step.title());
    }
    fn log(&mut self, _step: &Step, line: &str) {
        if self.verbose {
            eprintln!("       {line}");
        }
    }
    fn step_finished(&mut self, _step: &Step, r: &StepReport) {
        eprintln!("{}", r.status_line());
    }
}

pub fn run(a: RunArgs, verbose: bool) -> ExitCode {
    // Everything is validated before any drive is touched.
    let plan = match Plan::load_with(&a.plan, &a.set) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            return ExitCode::Usage;
        }
    };
    let inventory = match Inventory::load(&a.rigs, &a.work_dir) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            return ExitCode::Usage;
        }
    };
    let rig = match inventory.rig(&a.rig) {
        Ok(r) => r.clone(),
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            return ExitCode::Usage;
        }
    };
    let firmware = match &a.firmware {
        Some(p) => match Firmware::load(p, a.firmware_revision.clone()) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("bench-agent: error: {e}");
                return ExitCode::Usage;
            }
        },
        None => None,
    };
    if let (Some(step), None) = (plan.flash_step(), &firmware) {
        eprintln!(
            "bench-agent: error: {}: step {} ({}) flashes firmware: give --firmware FILE",
            plan.file.display(),
            step.number,
            step.name
        );
        return ExitCode::Usage;
    }
    if let Err(e) = std::fs::create_dir_all(&a.work_dir) {
        eprintln!(
            "bench-agent: error: cannot create work dir {}: {e}",
            a.work_dir.display()
        );
        return ExitCode::Infrastructure;
    }
    let opts = RunOptions {
        sysfs: Sysfs::new(&a.sysfs_root),
        history: Some(a.work_dir.join("history")),
        ..Default::default()
    };
    let cancel = opts.cancel.clone();
    // Ctrl-C / SIGTERM: finish the current command, cancel the rest, still write the reports.
    let _ = ctrlc::set_handler(move || {
        eprintln!("bench-agent: cancelling: the current step stops at its next safe point, the rest are not run");
        cancel.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "plan {} ({} steps) on rig {}{}",
        plan.name,
        plan.steps.len(),
        rig.name,
        firmware
            .as_ref()
            .map(|f| format!(
                " with firmware {} (sha256 {})",
                f.path.display(),
                &f.sha256[..12]
            ))
            .unwrap_or_default()
    );
    for o in &a.set {
        eprintln!(
            "plan changed: step {} {} = {} (--set)",
            o.step, o.key, o.value
        );
    }
    let mut printer = Printer { verbose };
    let mut report = runner::run_plan(
        &plan,
        &inventory,
        &rig,
        firmware.as_ref(),
        &opts,
        &mut printer,
    );
    report.plan_changes = a.set.iter().map(ToString::to_string).collect();
    eprintln!("{}", report.summary());
    for s in report.steps.iter().filter(|s| {
        !matches!(
            s.outcome,
            nvfarm_model::Outcome::Passed | nvfarm_model::Outcome::Skipped
        )
    }) {
        eprintln!(
            "  step {} {}: {}: {}",
            s.number, s.name, s.outcome, s.message
        );
    }
    if let Some(path) = &a.junit {
        let doc = junit::document(&[(&report, format!("{}@{}", report.plan, report.rig))]);
        if let Err(e) = std::fs::write(path, doc) {
            eprintln!(
                "bench-agent: error: cannot write JUnit report {}: {e}",
                path.display()
            );
            return ExitCode::Infrastructure;
        }
    }
    if a.json {
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    }
    ExitCode::from_outcome(report.outcome)
}
