//! What a run holds while its steps execute, and what each step executor gets and gives back.
//!
//! [`Ctx`] is the rig's side of a run: the drive's locator, power control, the console capture, the
//! placeholder values, the SMART baseline. [`StepLog`] collects a step's log lines and metrics and forwards
//! lines to the observer as they come. A step ends with `Ok(message)` or a [`Fail`] saying which outcome and why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flash_tools::controller::NvmeError;
use flash_tools::device::{DeviceError, Drive, Locator};
use nvfarm_model::plan::Step;
use nvfarm_model::{ConsoleLine, Outcome};
use nvme_spec::SmartLog;

use super::{Firmware, Observer, RunOptions};
use crate::console::Console;
use crate::power::{self, PowerControl};
use crate::rigs::{Inventory, Rig};

/// A step that did not pass: its outcome and one line saying why.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fail {
    pub outcome: Outcome,
    pub message: String,
}

impl Fail {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Fail {
            outcome,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Fail::new(Outcome::Failed, message)
    }
    pub fn error(message: impl Into<String>) -> Self {
        Fail::new(Outcome::Error, message)
    }
    /// A command's error: a status is the drive's answer (failed), no answer in time is a timeout, anything else
    /// (gone, OS error) is the infrastructure.
    pub fn nvme(what: &str, e: &NvmeError) -> Self {
        let o = match e {
            NvmeError::Status { .. } => Outcome::Failed,
            e if e.is_timeout() => Outcome::TimedOut,
            _ => Outcome::Error,
        };
        Fail::new(o, format!("{what}: {e}"))
    }
    /// Opening or finding the drive failed.
    pub fn device(what: &str, e: &DeviceError) -> Self {
        match e {
            DeviceError::Nvme(n) => Fail::nvme(what, n),
            e if e.is_timeout() => Fail::new(Outcome::TimedOut, format!("{what}: {e}")),
            e => Fail::error(format!("{what}: {e}")),
        }
    }
}

/// What a step executor returns.
pub(crate) type StepResult = Result<String, Fail>;

/// A step's log and metrics, forwarded to the observer as they come.
pub(crate) struct StepLog<'a> {
    step: &'a Step,
    lines: Vec<String>,
    metrics: BTreeMap<String, f64>,
    observer: &'a mut dyn Observer,
    pub started: Instant,
}

impl<'a> StepLog<'a> {
    pub fn new(step: &'a Step, observer: &'a mut dyn Observer, started: Instant) -> Self {
        StepLog {
            step,
            lines: vec![],
            metrics: BTreeMap::new(),
            observer,
            started,
        }
    }
    /// Logs a line, stamped with the time since the step started.
    pub fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        let line = format!("[{:>7.3}s] {text}", self.started.elapsed().as_secs_f64());
        self.observer.log(self.step, &line);
        self.lines.push(line);
    }
    /// Records a metric.
    pub fn metric(&mut self, name: &str, v: f64) {
        self.metrics.insert(name.to_string(), v);
    }
    /// The lines and metrics collected.
    pub fn finish(self) -> (Vec<String>, BTreeMap<String, f64>) {
        (self.lines, self.metrics)
    }
}

/// The rig's side of a run.
pub(crate) struct Ctx<'a> {
    pub rig: &'a Rig,
    /// The rig file, with the bench's script policy.
    pub inventory: &'a Inventory,
    pub firmware: Option<&'a Firmware>,
    pub opts: &'a RunOptions,
    pub locator: Locator,
    pub power: Option<std::sync::Arc<dyn PowerControl>>,
    pub console: Option<Console>,
    /// Where `console_expect` continues searching.
    pub console_cursor: usize,
    console_flushed: usize,
    /// Placeholder values.
    pub vars: BTreeMap<String, String>,
    /// SMART at the start of the run, for `max_delta`.
    pub smart_baseline: Option<SmartLog>,
    /// The metrics of the previous run of this plan on this rig, by step name (`baseline = "previous"`).
    pub previous: super::history::Metrics,
}

impl<'a> Ctx<'a> {
    /// Sets the rig up for a run: its drive (created on first use if simulated), power, console, placeholders.
    pub fn prepare(
        inventory: &'a Inventory,
        rig: &'a Rig,
        firmware: Option<&'a Firmware>,
        opts: &'a RunOptions,
    ) -> Result<Self, String> {
        let locator = rig
            .locator(&inventory.file, &opts.sysfs)
            .map_err(|e| e.to_string())?;
        let power = rig
            .power
            .as_ref()
            .map(|p| std::sync::Arc::from(power::from_spec(p, &rig.name, rig.sim_dir())));
        let console = rig.open_console()?;
        let mut vars = BTreeMap::new();
        vars.insert("rig.name".to_string(), rig.name.clone());
        for (k, v) in &rig.labels {
            vars.insert(format!("rig.label.{k}"), v.clone());
        }
        if let Some(fw) = firmware {
            vars.insert("firmware.file".into(), fw.path.display().to_string());
            vars.insert("firmware.sha256".into(), fw.sha256.clone());
            if let Some(r) = &fw.revision {
                vars.insert("firmware.revision".into(), r.clone());
            }
        }
        let mut ctx = Ctx {
            rig,
            inventory,
            firmware,
            opts,
            locator,
            power,
            console,
            console_cursor: 0,
            console_flushed: 0,
            vars,
            smart_baseline: None,
            previous: Default::default(),
        };
        // Best effort: identity and a SMART baseline for deltas. A drive that is absent now is a step's problem.
        if let Ok(d) = Drive::open(ctx.locator.clone(), Some(Duration::from_secs(10))) {
            if let Ok(id) = d.controller().identify_controller() {
                ctx.vars
                    .insert("drive.serial".into(), id.serial().to_string());
                ctx.vars
                    .insert("drive.model".into(), id.model().to_string());
            }
            ctx.smart_baseline = d.controller().smart_log().ok();
        }
        Ok(ctx)
    }

    /// A context for one member of a `parallel` group: the same rig, drive, power and values; no console (the
    /// group's runner keeps reading it).
    pub fn member(&self) -> Ctx<'a> {
        Ctx {
            rig: self.rig,
            inventory: self.inventory,
            firmware: self.firmware,
            opts: self.opts,
            locator: self.locator.clone(),
            power: self.power.clone(),
            console: None,
            console_cursor: self.console_cursor,
            console_flushed: self.console_flushed,
            vars: self.vars.clone(),
            smart_baseline: self.smart_baseline.clone(),
            previous: self.previous.clone(),
        }
    }

    /// Opens the drive with a command timeout no longer than what is left of the step.
    pub fn drive(&self, deadline: Instant) -> Result<Drive, Fail> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        Drive::open(
            self.locator.clone(),
            Some(left.min(Duration::from_secs(60))),
        )
        .map_err(|e| Fail::device("cannot open the drive", &e))
    }

    /// A placeholder's value.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// Copies console lines captured since the last flush into the step's log.
    pub fn flush_console(&mut self, log: &mut StepLog<'_>) {
        if let Some(c) = &self.console {
            let lines = c.lines();
            for l in lines.iter().skip(self.console_flushed) {
                log.line(format!(
                    "console +{:.3}s: {}",
                    l.at_ms as f64 / 1000.0,
                    l.text
                ));
            }
            self.console_flushed = lines.len();
        }
    }

    /// Everything the console captured.
    pub fn console_lines(&self) -> Vec<ConsoleLine> {
        self.console.as_ref().map(|c| c.lines()).unwrap_or_default()
    }
}
