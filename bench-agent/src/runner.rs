//! Runs a test plan on one rig: prepares the rig (creating a simulated drive on first use, starting console
//! capture), executes the steps in order within their time limits, and reports every step's outcome, duration,
//! log and metrics.
//!
//! Every step is bounded from the inside: NVMe commands get a timeout no longer than what is left of the step,
//! the io engine's runtime is capped, scripts are killed at the deadline. So a hung drive ends a step as
//! `timed_out` without leaving work behind. After an `error` or `timed_out` step, or a `failed` step whose
//! `on_failure` is `stop`, the remaining steps are `skipped`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regex::Regex;
use sha2::{Digest, Sha256};

use flash_tools::controller::NvmeError;
use flash_tools::device::{DeviceAddr, DeviceError, Drive, Locator, Sysfs};
use flash_tools::firmware::{self, Event, FailureKind, Outcome as UpdateOutcome, UpdateOptions};
use flash_tools::sim::SimController;
use nvme_spec::command::{sanitize_action, self_test_code, NSID_ALL};
use nvme_spec::log_page::self_test_result;
use nvme_spec::SmartLog;

use crate::console::Console;
use crate::io::{self, Engine, IoError};
use crate::outcome::{FirmwareInfo, Outcome, RunReport, StepReport};
use crate::plan::{
    substitute, IoStep, IoTarget, OnFailure, Plan, SanitizeKind, SelfTestKind, Step, StepKind,
};
use crate::power::{self, PowerControl};
use crate::rigs::{ConsoleKind, Inventory, Rig};

/// The firmware build under test.
#[derive(Clone, Debug)]
pub struct Firmware {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// The revision the build reports once running, when the caller knows it (e.g. from the build system);
    /// otherwise the flash step learns it from the drive's slot log after the commit.
    pub revision: Option<String>,
}

impl Firmware {
    /// Reads the image at `path`; `revision` is what the caller says it is, if known.
    pub fn load(path: &Path, revision: Option<String>) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read firmware {}: {e}", path.display()))?;
        if bytes.is_empty() {
            return Err(format!("firmware {} is empty", path.display()));
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Firmware {
            path: path.to_path_buf(),
            bytes,
            sha256,
            revision,
        })
    }
}

/// Live progress of a run.
pub trait Observer {
    fn step_started(&mut self, _step: &Step) {}
    fn log(&mut self, _step: &Step, _line: &str) {}
    fn step_finished(&mut self, _step: &Step, _report: &StepReport) {}
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub sysfs: Sysfs,
    /// Set to cancel: the running step finishes its current command, the rest are cancelled.
    pub cancel: Arc<AtomicBool>,
}

type Fail = (Outcome, String);

fn nvme_fail(what: &str, e: &NvmeError) -> Fail {
    let o = match e {
        NvmeError::Status { .. } => Outcome::Failed,
        e if e.is_timeout() => Outcome::TimedOut,
        _ => Outcome::Error,
    };
    (o, format!("{what}: {e}"))
}

fn device_fail(what: &str, e: &DeviceError) -> Fail {
    match e {
        DeviceError::Nvme(n) => nvme_fail(what, n),
        e if e.is_timeout() => (Outcome::TimedOut, format!("{what}: {e}")),
        e => (Outcome::Error, format!("{what}: {e}")),
    }
}

/// A step's log and metrics, forwarded to the observer as they come.
struct StepLog<'a> {
    step: &'a Step,
    lines: Vec<String>,
    metrics: BTreeMap<String, f64>,
    observer: &'a mut dyn Observer,
    started: Instant,
}

impl StepLog<'_> {
    fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        let line = format!("[{:>7.3}s] {text}", self.started.elapsed().as_secs_f64());
        self.observer.log(self.step, &line);
        self.lines.push(line);
    }
    fn metric(&mut self, name: &str, v: f64) {
        self.metrics.insert(name.to_string(), v);
    }
}

struct Ctx<'a> {
    rig: &'a Rig,
    firmware: Option<&'a Firmware>,
    opts: &'a RunOptions,
    locator: Locator,
    power: Option<Box<dyn PowerControl>>,
    console: Option<Console>,
    console_cursor: usize,
    console_flushed: usize,
    vars: BTreeMap<String, String>,
    smart_baseline: Option<SmartLog>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `plan` on `rig` (from `inventory`). Never panics on drive behaviour: everything is in the report.
pub fn run_plan(
    plan: &Plan,
    inventory: &Inventory,
    rig: &Rig,
    firmware: Option<&Firmware>,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> RunReport {
    let started = Instant::now();
    let started_at_ms = now_ms();
    let mut report = RunReport {
        plan: plan.name.clone(),
        rig: rig.name.clone(),
        firmware: firmware.map(|f| FirmwareInfo {
            file: f.path.display().to_string(),
            sha256: f.sha256.clone(),
            bytes: f.bytes.len() as u64,
            revision: f.revision.clone(),
        }),
        outcome: Outcome::Passed,
        started_at_ms,
        duration_ms: 0,
        steps: vec![],
        console: vec![],
    };
    let mut ctx = match prepare(inventory, rig, firmware, opts) {
        Ok(c) => c,
        Err(message) => {
            report.steps.push(StepReport {
                number: 0,
                name: "setup".into(),
                kind: "setup".into(),
                outcome: Outcome::Error,
                duration_ms: started.elapsed().as_millis() as u64,
                message: format!("rig {} is not usable: {message}", rig.name),
                log: vec![],
                metrics: Default::default(),
            });
            for s in &plan.steps {
                report
                    .steps
                    .push(skipped(s, "not run: the rig could not be set up"));
            }
            report.outcome = Outcome::Error;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    let mut stop_reason: Option<(Outcome, String)> = None;
    for step in &plan.steps {
        if let Some((o, why)) = &stop_reason {
            let r = if *o == Outcome::Cancelled {
                cancelled(step)
            } else {
                skipped(step, why)
            };
            observer.step_finished(step, &r);
            report.steps.push(r);
            continue;
        }
        if opts.cancel.load(Ordering::Relaxed) {
            stop_reason = Some((Outcome::Cancelled, "cancelled".into()));
            let r = cancelled(step);
            observer.step_finished(step, &r);
            report.steps.push(r);
            continue;
        }
        observer.step_started(step);
        let t0 = Instant::now();
        let deadline = t0 + step.timeout;
        let mut log = StepLog {
            step,
            lines: vec![],
            metrics: BTreeMap::new(),
            observer: &mut *observer,
            started: t0,
        };
        let result = ctx.exec(step, deadline, &mut log);
        ctx.flush_console(&mut log);
        // Each step classifies its own end: a hung command is `timed_out`, a check that waited its full time for
        // something that never came (a console line) is `failed`.
        let (outcome, message) = match result {
            Ok(msg) => (Outcome::Passed, msg),
            Err((o, msg)) => (o, msg),
        };
        let StepLog { lines, metrics, .. } = log;
        let r = StepReport {
            number: step.number,
            name: step.name.clone(),
            kind: step.kind.name().to_string(),
            outcome,
            duration_ms: t0.elapsed().as_millis() as u64,
            message: message.clone(),
            log: lines,
            metrics,
        };
        observer.step_finished(step, &r);
        report.steps.push(r);
        match outcome {
            Outcome::Error | Outcome::TimedOut => {
                stop_reason = Some((
                    outcome,
                    format!(
                        "not run: step {} ({}) ended {}",
                        step.number, step.name, outcome
                    ),
                ));
            }
            Outcome::Failed if step.on_failure == OnFailure::Stop => {
                stop_reason = Some((
                    outcome,
                    format!("not run: step {} ({}) failed", step.number, step.name),
                ));
            }
            _ => {}
        }
    }
    if let Some(fw) = &mut report.firmware {
        fw.revision = ctx
            .vars
            .get("firmware.revision")
            .cloned()
            .or(fw.revision.take());
    }
    report.outcome = Outcome::overall(report.steps.iter().map(|s| s.outcome));
    report.console = ctx.console.as_ref().map(|c| c.lines()).unwrap_or_default();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

fn skipped(step: &Step, why: &str) -> StepReport {
    StepReport {
        number: step.number,
        name: step.name.clone(),
        kind: step.kind.name().to_string(),
        outcome: Outcome::Skipped,
        duration_ms: 0,
        message: why.to_string(),
        log: vec![],
        metrics: Default::default(),
    }
}

fn cancelled(step: &Step) -> StepReport {
    StepReport {
        outcome: Outcome::Cancelled,
        message: "cancelled before it ran".into(),
        ..skipped(step, "")
    }
}

fn prepare<'a>(
    inventory: &Inventory,
    rig: &'a Rig,
    firmware: Option<&'a Firmware>,
    opts: &'a RunOptions,
) -> Result<Ctx<'a>, String> {
    let locator = rig
        .locator(&inventory.file, &opts.sysfs)
        .map_err(|e| e.to_string())?;
    let power = rig
        .power
        .as_ref()
        .map(|p| power::from_spec(p, &rig.name, rig.sim_dir()));
    let console = match &rig.console {
        None => None,
        Some(ConsoleKind::Serial { path, baud }) => {
            Some(Console::serial(path, *baud).map_err(|e| e.to_string())?)
        }
        Some(ConsoleKind::Sim) => {
            let sim = SimController::open(rig.sim_dir().expect("validated"))
                .map_err(|e| e.to_string())?;
            Some(Console::follow_file(&sim.console_path()))
        }
    };
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
        firmware,
        opts,
        locator,
        power,
        console,
        console_cursor: 0,
        console_flushed: 0,
        vars,
        smart_baseline: None,
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

impl Ctx<'_> {
    fn drive(&self, deadline: Instant) -> Result<Drive, Fail> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        Drive::open(
            self.locator.clone(),
            Some(left.min(Duration::from_secs(60))),
        )
        .map_err(|e| device_fail("cannot open the drive", &e))
    }

    fn flush_console(&mut self, log: &mut StepLog<'_>) {
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

    fn exec(
        &mut self,
        step: &Step,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        match &step.kind {
            StepKind::Flash {
                activate,
                slot,
                wait_timeout,
                rollback,
            } => self.flash(*activate, *slot, *wait_timeout, *rollback, deadline, log),
            StepKind::Identify { expect } => self.identify(expect, deadline, log),
            StepKind::Smart { .. } => self.smart(&step.kind, deadline, log),
            StepKind::SelfTest { test } => self.self_test(*test, deadline, log),
            StepKind::Format { lbaf, ses } => {
                let d = self.drive(deadline)?;
                d.controller()
                    .format_nvm(1, *lbaf, *ses)
                    .map_err(|e| nvme_fail("Format NVM", &e))?;
                Ok(format!(
                    "formatted namespace 1 with LBA format {lbaf}, secure erase setting {ses}"
                ))
            }
            StepKind::Sanitize { action } => self.sanitize(*action, deadline, log),
            StepKind::Io(io) => self.io(io, deadline, log),
            StepKind::PowerCycle { off_time, wait } => {
                let Some(p) = &self.power else {
                    return Err((
                        Outcome::Error,
                        format!(
                            "rig {} has no power control (add power = ... to its rig file)",
                            self.rig.name
                        ),
                    ));
                };
                log.line(format!(
                    "power cycle via {} (off for {})",
                    p.describe(),
                    humantime::format_duration(*off_time)
                ));
                p.cycle(*off_time)
                    .map_err(|e| (Outcome::Error, format!("power cycle failed: {e}")))?;
                if *wait {
                    self.wait_for_drive(deadline, log)?;
                }
                Ok("power-cycled".into())
            }
            StepKind::WaitForDrive => self.wait_for_drive(deadline, log),
            StepKind::ConsoleExpect { pattern } => {
                let Some(console) = &self.console else {
                    return Err((
                        Outcome::Error,
                        format!(
                            "rig {} has no console (add console = ... to its rig file)",
                            self.rig.name
                        ),
                    ));
                };
                let pat = substitute(pattern, &self.vars)
                    .map_err(|e| (Outcome::Error, format!("pattern: {e}")))?;
                let re = Regex::new(&pat)
                    .map_err(|e| (Outcome::Error, format!("pattern /{pat}/: {e}")))?;
                // Wait in slices so a cancellation is noticed.
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match console.expect(
                        &re,
                        left.min(Duration::from_millis(250)),
                        &mut self.console_cursor,
                    ) {
                        Ok(line) => {
                            return Ok(format!(
                                "console matched /{pat}/ at +{:.3}s: {}",
                                line.at_ms as f64 / 1000.0,
                                line.text
                            ))
                        }
                        Err(_) if self.opts.cancel.load(Ordering::Relaxed) => {
                            return Err((
                                Outcome::Cancelled,
                                format!("cancelled while waiting for /{pat}/ on the console"),
                            ))
                        }
                        Err(_) if Instant::now() < deadline => continue,
                        Err(_) => {
                            let waited = Duration::from_millis(
                                log.started.elapsed().as_millis() as u64 / 10 * 10,
                            );
                            return Err((
                                Outcome::Failed,
                                format!(
                                    "no console line matched /{pat}/ within {} ({} line(s) captured)",
                                    humantime::format_duration(waited),
                                    console.len()
                                ),
                            ));
                        }
                    }
                }
            }
            StepKind::Script {
                command,
                env,
                expect_exit,
            } => self.script(command, env, *expect_exit, deadline, log),
        }
    }

    fn flash(
        &mut self,
        activation: nvme_spec::Activation,
        slot: Option<u8>,
        wait_timeout: Duration,
        rollback: bool,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        let Some(fw) = self.firmware else {
            return Err((
                Outcome::Error,
                "this plan flashes firmware but no firmware image was given".into(),
            ));
        };
        let mut drive = self.drive(deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let opts = UpdateOptions {
            slot,
            activation,
            sha256: Some(fw.sha256.clone()),
            expect_revision: fw.revision.clone(),
            rollback,
            come_back_timeout: wait_timeout.min(left),
            ..UpdateOptions::default()
        };
        struct Fwd<'l, 'o> {
            log: &'l mut StepLog<'o>,
        }
        impl firmware::Progress for Fwd<'_, '_> {
            fn event(&mut self, e: &Event) {
                self.log.line(format!("{}: {}", e.step, e.message));
            }
        }
        let report = firmware::update(&mut drive, &fw.bytes, &opts, &mut Fwd { log });
        log.metric("flash_seconds", report.elapsed_ms as f64 / 1000.0);
        log.metric("download_chunks", report.chunks as f64);
        if report.succeeded() {
            let rev = report
                .running_revision
                .clone()
                .or(report.expected_revision.clone())
                .unwrap_or_default();
            if report.outcome == UpdateOutcome::Updated {
                self.vars.insert("firmware.revision".into(), rev.clone());
            } else if let Some(r) = &report.expected_revision {
                self.vars.insert("firmware.revision".into(), r.clone());
            }
            return Ok(report.to_string());
        }
        let kind = report
            .failure
            .as_ref()
            .map(|f| f.kind)
            .unwrap_or(FailureKind::Verification);
        let outcome = match kind {
            FailureKind::Rejected | FailureKind::Verification => Outcome::Failed,
            FailureKind::Timeout => Outcome::TimedOut,
            FailureKind::BadInput | FailureKind::Unreachable => Outcome::Error,
        };
        Err((outcome, report.to_string()))
    }

    fn identify(
        &mut self,
        expect: &BTreeMap<String, String>,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        let d = self.drive(deadline)?;
        let id = d
            .controller()
            .identify_controller()
            .map_err(|e| nvme_fail("Identify Controller", &e))?;
        let json = serde_json::to_value(&id).expect("serializes");
        let mut bad = vec![];
        for (field, want) in expect {
            let want = substitute(want, &self.vars)
                .map_err(|e| (Outcome::Error, format!("expect.{field}: {e}")))?;
            let have = &json[field.as_str()];
            let ok = match have {
                serde_json::Value::String(s) => s.trim() == want.trim(),
                serde_json::Value::Number(n) => {
                    let parsed = match want.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16).ok(),
                        None => want.parse::<u64>().ok(),
                    };
                    parsed.is_some_and(|w| n.as_u64() == Some(w))
                }
                other => *other == serde_json::Value::String(want.clone()),
            };
            let shown = have
                .as_str()
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| have.to_string());
            log.line(format!(
                "{field} = {shown:?} (expected {want:?}) {}",
                if ok { "ok" } else { "MISMATCH" }
            ));
            if !ok {
                bad.push(format!("{field} is {shown:?}, expected {want:?}"));
            }
        }
        if bad.is_empty() {
            Ok(format!("{} field(s) as expected", expect.len()))
        } else {
            Err((Outcome::Failed, bad.join("; ")))
        }
    }

    fn smart(
        &mut self,
        kind: &StepKind,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        let StepKind::Smart {
            max_temperature_c,
            critical_warning,
            max_media_errors,
            max_percent_used,
            min_avail_spare,
            max_delta,
        } = kind
        else {
            unreachable!("called for smart steps")
        };
        let d = self.drive(deadline)?;
        let s = d
            .controller()
            .smart_log()
            .map_err(|e| nvme_fail("SMART / Health log", &e))?;
        log.metric("temperature_c", s.temperature_celsius() as f64);
        log.metric("percent_used", s.percent_used as f64);
        log.metric("media_errors", s.media_errors as f64);
        log.metric("power_cycles", s.power_cycles as f64);
        log.metric("unsafe_shutdowns", s.unsafe_shutdowns as f64);
        log.metric("data_units_written", s.data_units_written as f64);
        log.metric("data_units_read", s.data_units_read as f64);
        log.line(format!(
            "critical warning {:#04x}, {} °C, {}% used, spare {}%, media errors {}, error log entries {}, power cycles {}, unsafe shutdowns {}",
            s.critical_warning,
            s.temperature_celsius(),
            s.percent_used,
            s.avail_spare,
            s.media_errors,
            s.num_err_log_entries,
            s.power_cycles,
            s.unsafe_shutdowns
        ));
        let mut bad = vec![];
        if let Some(t) = max_temperature_c {
            if s.temperature_celsius() > *t {
                bad.push(format!(
                    "temperature {} °C is above {t} °C",
                    s.temperature_celsius()
                ));
            }
        }
        if let Some(cw) = critical_warning {
            if s.critical_warning != *cw {
                bad.push(format!(
                    "critical warning is {:#04x} ({}), expected {cw:#04x}",
                    s.critical_warning,
                    nvme_spec::log_page::critical_warning::describe(s.critical_warning)
                ));
            }
        }
        if let Some(m) = max_media_errors {
            if s.media_errors > *m as u128 {
                bad.push(format!(
                    "{} media errors, at most {m} allowed",
                    s.media_errors
                ));
            }
        }
        if let Some(p) = max_percent_used {
            if s.percent_used > *p {
                bad.push(format!(
                    "{}% of endurance used, at most {p}% allowed",
                    s.percent_used
                ));
            }
        }
        if let Some(sp) = min_avail_spare {
            if s.avail_spare < *sp {
                bad.push(format!("available spare {}% is below {sp}%", s.avail_spare));
            }
        }
        if !max_delta.is_empty() {
            match &self.smart_baseline {
                None => bad.push(
                    "no SMART baseline from the start of the plan to compare deltas with".into(),
                ),
                Some(base) => {
                    let now = serde_json::to_value(&s).expect("serializes");
                    let then = serde_json::to_value(base).expect("serializes");
                    let num = |v: &serde_json::Value| -> u128 {
                        v.as_str()
                            .and_then(|s| s.parse().ok())
                            .or_else(|| v.as_u64().map(|n| n as u128))
                            .unwrap_or(0)
                    };
                    for (field, max) in max_delta {
                        let delta =
                            num(&now[field.as_str()]).saturating_sub(num(&then[field.as_str()]));
                        log.metric(&format!("delta_{field}"), delta as f64);
                        if delta > *max as u128 {
                            bad.push(format!(
                                "{field} grew by {delta} during the plan, at most {max} allowed"
                            ));
                        }
                    }
                }
            }
        }
        if bad.is_empty() {
            Ok(format!(
                "SMART healthy: {} °C, critical warning {:#04x}",
                s.temperature_celsius(),
                s.critical_warning
            ))
        } else {
            Err((Outcome::Failed, bad.join("; ")))
        }
    }

    fn self_test(
        &mut self,
        test: SelfTestKind,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        let d = self.drive(deadline)?;
        let c = d.controller();
        let before = c
            .self_test_log()
            .map_err(|e| nvme_fail("Device Self-test log", &e))?;
        let code = if test == SelfTestKind::Short {
            self_test_code::SHORT
        } else {
            self_test_code::EXTENDED
        };
        c.device_self_test(NSID_ALL, code)
            .map_err(|e| nvme_fail("Device Self-test", &e))?;
        log.line(format!("{test:?} self-test started"));
        let mut last_pct = 255;
        loop {
            if Instant::now() >= deadline || self.opts.cancel.load(Ordering::Relaxed) {
                let _ = c.device_self_test(NSID_ALL, self_test_code::ABORT);
                let (outcome, why) = if self.opts.cancel.load(Ordering::Relaxed) {
                    (Outcome::Cancelled, "cancelled; aborted")
                } else {
                    (Outcome::TimedOut, "did not finish in time; aborted")
                };
                return Err((
                    outcome,
                    format!("{test:?} self-test {why} (last at {last_pct}%)"),
                ));
            }
            let now = c
                .self_test_log()
                .map_err(|e| nvme_fail("Device Self-test log", &e))?;
            // Finished when nothing runs and a new result heads the log (the log holds at most 20, newest first).
            let new_result = now.results.len() > before.results.len()
                || now.results.first() != before.results.first();
            if now.current_operation == 0 && new_result {
                let r = now.results.first().expect("a new result");
                log.metric("self_test_result", r.result as f64);
                if r.result == self_test_result::COMPLETED {
                    return Ok(format!("{test:?} self-test completed without error"));
                }
                let detail = if r.segment != 0 {
                    format!(" (segment {}, failing LBA {})", r.segment, r.failing_lba)
                } else {
                    String::new()
                };
                return Err((
                    Outcome::Failed,
                    format!("{test:?} self-test {}{detail}", r.result_text),
                ));
            }
            if now.completion != last_pct {
                last_pct = now.completion;
                log.line(format!("self-test {}% done", now.completion));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn sanitize(
        &mut self,
        action: SanitizeKind,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        let d = self.drive(deadline)?;
        let a = match action {
            SanitizeKind::BlockErase => sanitize_action::BLOCK_ERASE,
            SanitizeKind::CryptoErase => sanitize_action::CRYPTO_ERASE,
            SanitizeKind::Overwrite => sanitize_action::OVERWRITE,
        };
        d.controller()
            .sanitize(a, 0)
            .map_err(|e| nvme_fail("Sanitize", &e))?;
        loop {
            let st = d
                .controller()
                .sanitize_status()
                .map_err(|e| nvme_fail("Sanitize Status log", &e))?;
            match st.sstat & 0x7 {
                1 | 4 => return Ok(format!("sanitize ({action:?}) completed")),
                3 => {
                    return Err((
                        Outcome::Failed,
                        format!("sanitize ({action:?}) failed (SSTAT {:#x})", st.sstat),
                    ))
                }
                _ if Instant::now() >= deadline => {
                    return Err((
                        Outcome::TimedOut,
                        "sanitize did not complete in time".into(),
                    ))
                }
                _ => {
                    log.line(format!(
                        "sanitize in progress ({}%)",
                        st.sprog as u64 * 100 / 65536
                    ));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn wait_for_drive(&mut self, deadline: Instant, log: &mut StepLog<'_>) -> Result<String, Fail> {
        let mut d = self
            .drive(deadline)
            .map_err(|(_, why)| (Outcome::Error, why))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let t0 = Instant::now();
        d.wait_ready(left)
            .map_err(|e| (Outcome::Error, format!("the drive did not come back: {e}")))?;
        let msg = format!(
            "drive up as {} after {:.1}s",
            d.controller().device_name(),
            t0.elapsed().as_secs_f64()
        );
        log.line(&msg);
        Ok(msg)
    }

    fn io(
        &mut self,
        io: &IoStep,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        // Preflight through the controller: present, and willing to do I/O (a drive whose firmware failed to come
        // up properly answers admin commands but not reads).
        let d = self.drive(deadline)?;
        let c = d.controller();
        let ns = c
            .identify_namespace(1)
            .map_err(|e| nvme_fail("Identify Namespace 1", &e))?;
        let bs = ns.block_size() as u32;
        let mut probe = vec![0u8; bs as usize];
        c.read(1, 0, &mut probe, bs)
            .map_err(|e| nvme_fail("the drive rejects I/O: Read of LBA 0", &e))?;
        let sim_dir = self.rig.sim_dir().map(Path::to_path_buf);
        let dev = c.device_name();
        let (target, engine) = match (&io.target, &sim_dir) {
            (IoTarget::Namespace, Some(dir)) => {
                (dir.join(flash_tools::sim::NAMESPACE_FILE), Engine::Uring)
            }
            (IoTarget::Namespace, None) => (PathBuf::from(format!("/dev/{dev}n1")), Engine::Uring),
            (IoTarget::Generic, None) => (
                PathBuf::from(format!("/dev/{}n1", dev.replacen("nvme", "ng", 1))),
                Engine::UringCmd,
            ),
            (IoTarget::Generic, Some(_)) => {
                return Err((
                    Outcome::Error,
                    "a simulated drive has no generic char device; use target = \"namespace\""
                        .into(),
                ))
            }
            (IoTarget::Path(p), _) => {
                use std::os::unix::fs::FileTypeExt;
                let chr = std::fs::metadata(p)
                    .map(|m| m.file_type().is_char_device())
                    .unwrap_or(false);
                (
                    p.clone(),
                    if chr { Engine::UringCmd } else { Engine::Uring },
                )
            }
        };
        let mut spec = io.to_spec(target.clone(), engine);

        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_secs(5));
        spec.runtime = io.runtime.map(|r| {
            if r > left {
                log.line(format!(
                    "runtime capped to {} by the step timeout",
                    humantime::format_duration(left)
                ));
            }
            r.min(left).max(Duration::from_millis(100))
        });
        log.line(format!(
            "{} {} bs={} iodepth={} numjobs={}{}{} on {}",
            engine_name(engine),
            io.rw,
            io.bs,
            io.iodepth,
            io.numjobs,
            if io.direct { " direct" } else { "" },
            if io.verify { " verify" } else { "" },
            target.display()
        ));
        let t0 = Instant::now();
        let r = io::run(&spec).map_err(|e| match &e {
            IoError::Io { .. } if !e.is_device_gone() => {
                (Outcome::Failed, format!("I/O failed: {e}"))
            }
            _ => (Outcome::Error, format!("io engine: {e}")),
        })?;
        if let Some(dir) = &sim_dir {
            if let Ok(sim) = SimController::open(dir) {
                let _ = sim.record_host_io(
                    r.read.bytes,
                    r.write.bytes,
                    r.read.ios,
                    r.write.ios,
                    t0.elapsed(),
                );
            }
        }
        for line in r.to_string().lines() {
            log.line(line.trim_start());
        }
        for (name, d) in [("read", &r.read), ("write", &r.write)] {
            if d.ios > 0 {
                log.metric(&format!("{name}_iops"), d.iops);
                log.metric(
                    &format!("{name}_bw_mib_s"),
                    d.bw_bytes_per_sec / (1024.0 * 1024.0),
                );
                log.metric(
                    &format!("{name}_lat_mean_us"),
                    d.lat.mean_ns as f64 / 1000.0,
                );
                log.metric(&format!("{name}_lat_p50_us"), d.lat.p50_ns as f64 / 1000.0);
                log.metric(&format!("{name}_lat_p99_us"), d.lat.p99_ns as f64 / 1000.0);
                log.metric(
                    &format!("{name}_lat_p99_9_us"),
                    d.lat.p99_9_ns as f64 / 1000.0,
                );
            }
        }
        let mut bad = vec![];
        if let Some(v) = &r.verify {
            log.metric("verify_mismatches", v.mismatches as f64);
            if let Some(m) = &v.first {
                bad.push(format!(
                    "verify: {} of {} blocks bad; first at offset {:#x}: {}",
                    v.mismatches, v.blocks_checked, m.offset, m.reason
                ));
            }
        }
        let total_iops = r.read.iops + r.write.iops;
        let total_bw = r.read.bw_bytes_per_sec + r.write.bw_bytes_per_sec;
        log.metric("iops", total_iops);
        if let Some(min) = io.min_iops {
            if total_iops < min {
                bad.push(format!(
                    "{total_iops:.0} IOPS is below the minimum {min:.0}"
                ));
            }
        }
        if let Some(min) = io.min_bandwidth {
            if total_bw < min as f64 {
                bad.push(format!(
                    "{:.1} MiB/s is below the minimum {:.1} MiB/s",
                    total_bw / 1048576.0,
                    min as f64 / 1048576.0
                ));
            }
        }
        let worst =
            |f: fn(&crate::io::histogram::Summary) -> u64| f(&r.read.lat).max(f(&r.write.lat));
        if let Some(max) = io.max_p99_latency {
            let p99 = worst(|s| s.p99_ns);
            if p99 as u128 > max.as_nanos() {
                bad.push(format!(
                    "p99 latency {:.1}us is above {:.1}us",
                    p99 as f64 / 1000.0,
                    max.as_nanos() as f64 / 1000.0
                ));
            }
        }
        if let Some(max) = io.max_mean_latency {
            let mean = worst(|s| s.mean_ns);
            if mean as u128 > max.as_nanos() {
                bad.push(format!(
                    "mean latency {:.1}us is above {:.1}us",
                    mean as f64 / 1000.0,
                    max.as_nanos() as f64 / 1000.0
                ));
            }
        }
        if !bad.is_empty() {
            return Err((Outcome::Failed, bad.join("; ")));
        }
        Ok(format!(
            "{:.0} IOPS, {:.1} MiB/s{}",
            total_iops,
            total_bw / 1048576.0,
            r.verify
                .as_ref()
                .map(|v| format!(", {} blocks verified", v.blocks_checked))
                .unwrap_or_default()
        ))
    }

    fn script(
        &mut self,
        command: &str,
        env: &BTreeMap<String, String>,
        expect_exit: i32,
        deadline: Instant,
        log: &mut StepLog<'_>,
    ) -> Result<String, Fail> {
        use std::os::unix::process::CommandExt;
        let command = substitute(command, &self.vars)
            .map_err(|e| (Outcome::Error, format!("command: {e}")))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd.env("NVFARM_RIG", &self.rig.name);
        for (k, v) in &self.rig.labels {
            cmd.env(format!("NVFARM_RIG_LABEL_{}", k.to_uppercase()), v);
        }
        match &self.locator.addr {
            DeviceAddr::Sim(dir) => {
                cmd.env("NVFARM_DEVICE", format!("sim:{}", dir.display()));
                cmd.env("NVFARM_SIM_DIR", dir);
                cmd.env(
                    "NVFARM_NAMESPACE",
                    dir.join(flash_tools::sim::NAMESPACE_FILE),
                );
            }
            other => {
                if let Ok(d) = self.drive(deadline) {
                    let name = d.controller().device_name();
                    cmd.env("NVFARM_DEVICE", format!("/dev/{name}"));
                    cmd.env("NVFARM_NAMESPACE", format!("/dev/{name}n1"));
                    cmd.env(
                        "NVFARM_GENERIC",
                        format!("/dev/{}n1", name.replacen("nvme", "ng", 1)),
                    );
                } else {
                    cmd.env("NVFARM_DEVICE", other.to_string());
                }
            }
        }
        for (k, v) in [
            ("firmware.revision", "NVFARM_FIRMWARE_REV"),
            ("firmware.file", "NVFARM_FIRMWARE_FILE"),
            ("firmware.sha256", "NVFARM_FIRMWARE_SHA256"),
        ] {
            if let Some(val) = self.vars.get(k) {
                cmd.env(v, val);
            }
        }
        for (k, v) in env {
            cmd.env(
                k,
                substitute(v, &self.vars).map_err(|e| (Outcome::Error, format!("env.{k}: {e}")))?,
            );
        }
        log.line(format!("$ {command}"));
        let mut child = cmd.spawn().map_err(|e| {
            (
                Outcome::Error,
                format!("cannot start `sh -c {command}`: {e}"),
            )
        })?;
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
        let status = loop {
            while let Ok(line) = rx.try_recv() {
                log.line(line);
            }
            match child.try_wait() {
                Ok(Some(st)) => break Some(Ok(st)),
                Ok(None)
                    if Instant::now() >= deadline || self.opts.cancel.load(Ordering::Relaxed) =>
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(child.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = child.wait();
                    break if self.opts.cancel.load(Ordering::Relaxed) {
                        Some(Err(()))
                    } else {
                        None
                    };
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err((Outcome::Error, format!("waiting for the script: {e}"))),
            }
        };
        for r in readers {
            let _ = r.join();
        }
        while let Ok(line) = rx.try_recv() {
            log.line(line);
        }
        match status {
            None => Err((
                Outcome::TimedOut,
                format!("`{command}` was still running at the step timeout and was killed"),
            )),
            Some(Err(())) => Err((
                Outcome::Cancelled,
                format!("cancelled: `{command}` was killed"),
            )),
            Some(Ok(st)) => match st.code() {
                Some(c) if c == expect_exit => Ok(format!("`{command}` exited {c}")),
                Some(c) => Err((
                    Outcome::Failed,
                    format!("`{command}` exited {c}, expected {expect_exit}"),
                )),
                None => Err((
                    Outcome::Failed,
                    format!("`{command}` was killed by a signal ({st})"),
                )),
            },
        }
    }
}

fn engine_name(e: Engine) -> &'static str {
    match e {
        Engine::Uring => "io_uring",
        Engine::UringCmd => "io_uring passthrough",
    }
}
