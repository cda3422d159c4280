//! Test plans: ordered steps in TOML, validated completely before anything touches a drive.
//!
//! ```toml
//! name = "smoke"
//! description = "flash, check identity and health, move some data, self-test"
//!
//! [[step]]
//! kind = "flash"                      # activate = "reset" | "now" | "next-reset"
//!
//! [[step]]
//! kind = "identify"
//! expect = { fr = "{firmware.revision}", mn = "NVFARM SIM X1" }
//!
//! [[step]]
//! kind = "io"
//! rw = "randrw"
//! bs = "4k"
//! iodepth = 16
//! runtime = "3s"
//! verify = true
//! min_iops = 1000
//! ```
//!
//! Every step takes `name`, `timeout` and `on_failure` ("stop" or "continue") besides its own keys. Strings in
//! `identify.expect`, `console_expect.pattern` (where values are filled in regex-escaped) and `script.env` may
//! use the placeholders listed in [`placeholders`]. A `script.command` never has values spliced into its shell
//! text: it reads them from its environment (`$NVFARM_FIRMWARE_REV`, `$NVFARM_DRIVE_MODEL`, ...; see
//! [`placeholders::env_name`]). An error names the plan file, the step number and the key.
//!
//! A run may change a named step's setting ([`PlanOverride`], `bench-agent run --set STEP.KEY=VALUE`) before
//! validation; the change is checked like the plan's own key and the run report lists it in `plan_changes`.
//!
//! - this module: the plan model;
//! - [`parse`]: TOML to a validated [`Plan`], one function per step kind;
//! - [`placeholders`]: `{firmware.revision}`-style values filled in at run time.

mod parse;
pub mod placeholders;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvme_spec::Activation;
use serde::{Deserialize, Serialize};

use crate::io::IoOptions;

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan {file}: {source}")]
    Read {
        /// The plan file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The plan is not valid; `context` names the step and key.
    #[error("{file}: {context}: {reason}")]
    Invalid {
        /// The plan file (or `<job-N>` for a plan that came over the wire).
        file: PathBuf,
        /// Where: `step 3 (io) key 'bs'`.
        context: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

/// What to do with the rest of the plan when a step fails (errors and timeouts always stop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Skip the remaining steps.
    Stop,
    /// Run the remaining steps anyway.
    Continue,
}

/// Which device self-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTestKind {
    /// Short device self-test (minutes).
    Short,
    /// Extended device self-test (hours on real drives).
    Extended,
}

/// Which sanitize operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SanitizeKind {
    /// Block erase.
    BlockErase,
    /// Crypto erase.
    CryptoErase,
    /// Overwrite.
    Overwrite,
}

/// Where an `io` step's data goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoTarget {
    /// The drive's namespace 1: through the block layer on a real drive, NVMe Read/Write commands to the
    /// controller on a simulated one (its faults, MDTS and resets apply).
    Namespace,
    /// A simulated drive's media file directly, bypassing its controller (faster; no faults apply).
    Media,
    /// NVMe passthrough (uring_cmd) on the namespace's generic char device `/dev/ngXn1`.
    Generic,
    /// An explicit path.
    Path(PathBuf),
}

/// Limits an `io` step's results must meet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IoThresholds {
    /// Lowest acceptable IOPS (reads and writes together).
    pub min_iops: Option<f64>,
    /// Lowest acceptable bandwidth, bytes per second.
    pub min_bandwidth: Option<u64>,
    /// Highest acceptable p99 latency (of either direction).
    pub max_p99_latency: Option<Duration>,
    /// Highest acceptable mean latency (of either direction).
    pub max_mean_latency: Option<Duration>,
    /// Compare IOPS, bandwidth and p99 latency with the previous run of this step of this plan on this rig
    /// (`baseline = "previous"`): worse by more than this many percent fails the step.
    pub max_regression_pct: Option<f64>,
}

/// An `io` step: the workload, where it runs, and what it must reach.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IoStep {
    /// The workload.
    pub options: IoOptions,
    /// Where it runs.
    pub target: IoTarget,
    /// What it must reach.
    pub thresholds: IoThresholds,
    /// The verify pattern's seed; a read-only verify step given one checks every block was written with it (a
    /// write step and a later read step with the same seed catch writes lost in between).
    pub seed: Option<u64>,
}

/// What a step does, with its own settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Update the firmware to the build under test.
    Flash {
        /// How the new image is activated.
        activate: Activation,
        /// Target slot (default: a writable slot other than the running one).
        slot: Option<u8>,
        /// How long to wait for the drive after activation.
        wait_timeout: Duration,
        /// Roll back to the previous slot when the new image does not verify.
        rollback: bool,
    },
    /// Identify Controller fields must have these values.
    Identify {
        /// Field name (nvme-cli's) to expected value (placeholders allowed).
        expect: BTreeMap<String, String>,
    },
    /// SMART / Health log checks.
    Smart {
        /// Highest acceptable composite temperature.
        max_temperature_c: Option<i32>,
        /// Required critical warning bits (usually 0).
        critical_warning: Option<u8>,
        /// Most media errors allowed.
        max_media_errors: Option<u64>,
        /// Most endurance used allowed, percent.
        max_percent_used: Option<u8>,
        /// Least available spare allowed, percent.
        min_avail_spare: Option<u8>,
        /// Largest allowed increase of a counter since the plan started.
        max_delta: BTreeMap<String, u64>,
    },
    /// Run a device self-test and wait for its result.
    #[serde(rename = "selftest")]
    SelfTest {
        /// Short or extended.
        test: SelfTestKind,
    },
    /// Format NVM on namespace 1.
    Format {
        /// LBA format index.
        lbaf: u8,
        /// Secure erase setting (0 none, 1 user data, 2 crypto).
        ses: u8,
    },
    /// Sanitize the drive and wait for completion.
    Sanitize {
        /// Which operation.
        action: SanitizeKind,
    },
    /// An io workload.
    Io(IoStep),
    /// Power the rig off and on.
    PowerCycle {
        /// How long power stays off.
        off_time: Duration,
        /// Wait for the drive to answer afterwards.
        wait: bool,
    },
    /// Wait until the drive answers Identify.
    WaitForDrive,
    /// Wait for a console line matching a regular expression.
    ConsoleExpect {
        /// The regular expression (placeholders allowed).
        pattern: String,
    },
    /// Send one NVMe command with chosen fields and check the status it completes with.
    Nvme(NvmeCommandStep),
    /// Run these steps at the same time (an io workload while the firmware is flashed, the drive reset or
    /// power-cycled); the group ends as the worst of them.
    Parallel {
        /// The members, 2 to 8, none of them a group or a console wait.
        steps: Vec<Step>,
    },
    /// Run a shell command on the bench.
    Script {
        /// The command (`sh -c`), as written: values come from its environment.
        command: String,
        /// Extra environment variables (placeholders allowed in values).
        env: BTreeMap<String, String>,
        /// The exit status that passes.
        expect_exit: i32,
    },
}

/// Every step kind, as plans spell them.
pub const KINDS: &str = "flash, identify, smart, selftest, format, sanitize, io, power_cycle, wait_for_drive, console_expect, nvme, parallel, script";

impl StepKind {
    /// The kind's name as plans spell it.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Flash { .. } => "flash",
            StepKind::Identify { .. } => "identify",
            StepKind::Smart { .. } => "smart",
            StepKind::SelfTest { .. } => "selftest",
            StepKind::Format { .. } => "format",
            StepKind::Sanitize { .. } => "sanitize",
            StepKind::Io(_) => "io",
            StepKind::PowerCycle { .. } => "power_cycle",
            StepKind::WaitForDrive => "wait_for_drive",
            StepKind::ConsoleExpect { .. } => "console_expect",
            StepKind::Script { .. } => "script",
            StepKind::Nvme(_) => "nvme",
            StepKind::Parallel { .. } => "parallel",
        }
    }
}

/// Which queue an `nvme` step's command goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandQueue {
    /// The admin queue.
    Admin,
    /// An I/O queue (NVM command set).
    Io,
}

/// An `nvme` step: one command, as a validation engineer writes it, and the status it must end with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NvmeCommandStep {
    /// Admin or I/O.
    pub queue: CommandQueue,
    /// The opcode.
    pub opcode: u8,
    /// The namespace (default 0 for admin commands, 1 for I/O).
    pub nsid: u32,
    /// Command dwords 10 to 15.
    pub cdw: [u32; 6],
    /// Bytes the controller returns (opcodes whose bits 1:0 are 10b).
    pub data_in: u32,
    /// Bytes sent to the controller (opcodes whose bits 1:0 are 01b).
    pub data_out: Vec<u8>,
    /// The status code it must complete with (`(SCT << 8) | SC`; 0 = success).
    pub expect: u16,
}

/// The most data an `nvme` step moves either way.
pub const NVME_STEP_MAX_DATA: u32 = 1 << 20;

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// 1-based position in the plan.
    pub number: u32,
    /// The step's name (default `N-kind`).
    pub name: String,
    /// What it does.
    pub kind: StepKind,
    /// Its time limit.
    pub timeout: Duration,
    /// What a failure does to the rest of the plan.
    pub on_failure: OnFailure,
}

impl Step {
    /// `name (kind)`, as step lists show it.
    pub fn title(&self) -> String {
        format!("{} ({})", self.name, self.kind.name())
    }
}

/// One `STEP.KEY=VALUE` given on the command line (`bench-agent run --set`): the step's setting replaced, or
/// added, before the plan is validated, e.g. `randrw-verify.min_iops=100` for a rig slower than the plan's
/// thresholds assume. VALUE is a TOML value (`100`, `true`, `"4k"`); anything that is not one is a string.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOverride {
    /// The step's name.
    pub step: String,
    /// The step's key.
    pub key: String,
    /// The value.
    pub value: toml::Value,
}

impl std::str::FromStr for PlanOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("'{s}' is not STEP.KEY=VALUE (e.g. randrw-verify.min_iops=100)");
        let (target, value) = s.split_once('=').ok_or_else(usage)?;
        let (step, key) = target.rsplit_once('.').ok_or_else(usage)?;
        let (step, key) = (step.trim(), key.trim());
        if step.is_empty() || key.is_empty() {
            return Err(usage());
        }
        if key == "name" || key == "kind" {
            return Err(format!(
                "'{s}': a step's {key} cannot be overridden; write another plan"
            ));
        }
        let value = value.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        Ok(PlanOverride {
            step: step.to_string(),
            key: key.to_string(),
            value,
        })
    }
}

impl std::fmt::Display for PlanOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}={}", self.step, self.key, self.value)
    }
}

/// A validated test plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The plan's name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Where it came from (for messages).
    pub file: PathBuf,
    /// The steps in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Reads and validates the plan in `file`.
    pub fn load(file: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(file).map_err(|source| PlanError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Validates plan `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, PlanError> {
        parse::parse(text, file, &[])
    }

    /// Reads the plan in `file`, applies `overrides` to its steps and validates the result (an override is
    /// checked exactly like the plan's own setting).
    pub fn load_with(file: &Path, overrides: &[PlanOverride]) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(file).map_err(|source| PlanError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        parse::parse(&text, file, overrides)
    }

    /// The first step that flashes firmware, if any (such a plan needs a firmware image).
    pub fn flash_step(&self) -> Option<&Step> {
        self.all_steps()
            .find(|s| matches!(s.kind, StepKind::Flash { .. }))
    }

    /// Every step, the members of a `parallel` group right after the group: what checks of a plan's content
    /// (scripts, io paths, flashing) must look at.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().flat_map(|s| {
            let members: &[Step] = match &s.kind {
                StepKind::Parallel { steps } => steps,
                _ => &[],
            };
            std::iter::once(s).chain(members.iter())
        })
    }
}
