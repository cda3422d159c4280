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
//! `identify.expect`, `console_expect.pattern` and `script.command` may use `{firmware.revision}`,
//! `{firmware.sha256}`, `{firmware.file}`, `{rig.name}`, `{rig.label.KEY}`, `{drive.serial}` and `{drive.model}`.
//! An error names the plan file, the step number and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use nvme_spec::units::{parse_duration, parse_size};
use nvme_spec::Activation;

use crate::io::Rw;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {context}: {reason}")]
    Invalid {
        file: PathBuf,
        context: String,
        reason: String,
    },
}

/// What to do with the rest of the plan when a step fails (errors and timeouts always stop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    Stop,
    Continue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTestKind {
    Short,
    Extended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SanitizeKind {
    BlockErase,
    CryptoErase,
    Overwrite,
}

/// Where an `io` step's data goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoTarget {
    /// The drive's namespace 1 through the block layer (a simulated drive's backing file).
    Namespace,
    /// NVMe passthrough (uring_cmd) on the namespace's generic char device `/dev/ngXn1`.
    Generic,
    /// An explicit path.
    Path(PathBuf),
}

#[derive(Clone, Debug, Serialize)]
pub struct IoStep {
    pub rw: Rw,
    pub rwmixread: u8,
    pub bs: u64,
    pub iodepth: u32,
    pub runtime: Option<Duration>,
    pub size: Option<u64>,
    pub direct: bool,
    pub verify: bool,
    pub numjobs: u32,
    pub target: IoTarget,
    pub min_iops: Option<f64>,
    /// Bytes per second.
    pub min_bandwidth: Option<u64>,
    pub max_p99_latency: Option<Duration>,
    pub max_mean_latency: Option<Duration>,
}

impl IoStep {
    /// The engine's spec for this step on `target` (the one place a step's io options become an [`IoSpec`]).
    pub fn to_spec(&self, target: PathBuf, engine: crate::io::Engine) -> crate::io::IoSpec {
        let mut spec = crate::io::IoSpec::new(target, self.rw, self.bs, self.iodepth);
        spec.rwmixread = self.rwmixread;
        spec.runtime = self.runtime;
        spec.size = self.size;
        spec.direct = self.direct;
        spec.verify = self.verify;
        spec.numjobs = self.numjobs;
        spec.engine = engine;
        spec
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    Flash {
        activate: Activation,
        slot: Option<u8>,
        wait_timeout: Duration,
        rollback: bool,
    },
    Identify {
        expect: BTreeMap<String, String>,
    },
    Smart {
        max_temperature_c: Option<i32>,
        critical_warning: Option<u8>,
        max_media_errors: Option<u64>,
        max_percent_used: Option<u8>,
        min_avail_spare: Option<u8>,
        /// Largest allowed increase of a counter since the plan started.
        max_delta: BTreeMap<String, u64>,
    },
    #[serde(rename = "selftest")]
    SelfTest {
        test: SelfTestKind,
    },
    Format {
        lbaf: u8,
        ses: u8,
    },
    Sanitize {
        action: SanitizeKind,
    },
    Io(IoStep),
    PowerCycle {
        off_time: Duration,
        wait: bool,
    },
    WaitForDrive,
    ConsoleExpect {
        pattern: String,
    },
    Script {
        command: String,
        env: BTreeMap<String, String>,
        expect_exit: i32,
    },
}

impl StepKind {
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
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// 1-based position in the plan.
    pub number: usize,
    pub name: String,
    pub kind: StepKind,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether the plan needs a firmware image (it has a flash step or refers to the firmware).
    pub fn needs_firmware(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| matches!(s.kind, StepKind::Flash { .. }))
    }
}

// ----- raw (as written) forms -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlash {
    activate: Option<String>,
    slot: Option<u8>,
    wait_timeout: Option<String>,
    rollback: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentify {
    expect: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmart {
    max_temperature_c: Option<i32>,
    critical_warning: Option<u8>,
    max_media_errors: Option<u64>,
    max_percent_used: Option<u8>,
    min_avail_spare: Option<u8>,
    #[serde(default)]
    max_delta: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfTest {
    test: Option<SelfTestKind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    lbaf: Option<u8>,
    ses: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSanitize {
    action: SanitizeKind,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    rw: Rw,
    rwmixread: Option<u8>,
    bs: Option<String>,
    iodepth: Option<u32>,
    runtime: Option<String>,
    size: Option<String>,
    direct: Option<bool>,
    verify: Option<bool>,
    numjobs: Option<u32>,
    target: Option<String>,
    min_iops: Option<f64>,
    min_bandwidth: Option<String>,
    max_p99_latency: Option<String>,
    max_mean_latency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPowerCycle {
    off_time: Option<String>,
    wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmpty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsoleExpect {
    pattern: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    command: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    expect_exit: Option<i32>,
}

pub const KINDS: &str = "flash, identify, smart, selftest, format, sanitize, io, power_cycle, wait_for_drive, console_expect, script";

/// Placeholder names a plan may use.
fn known_var(name: &str) -> bool {
    matches!(
        name,
        "firmware.revision"
            | "firmware.sha256"
            | "firmware.file"
            | "rig.name"
            | "drive.serial"
            | "drive.model"
    ) || name
        .strip_prefix("rig.label.")
        .is_some_and(|k| !k.is_empty())
}

/// The `{name}` placeholders in `s`, or an error for an unknown or unclosed one.
pub fn placeholders(s: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        // A regex quantifier like {3} or {2,5} is not a placeholder.
        let Some(j) = after.find('}') else {
            return Err(format!("unclosed '{{' in '{s}'"));
        };
        let name = &after[..j];
        if !name.chars().all(|c| c.is_ascii_digit() || c == ',') {
            if !known_var(name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}; known: firmware.revision, firmware.sha256, firmware.file, rig.name, rig.label.KEY, drive.serial, drive.model"
                ));
            }
            out.push(name.to_string());
        }
        rest = &after[j + 1..];
    }
    Ok(out)
}

/// Replaces placeholders with values from `vars`; an unset variable is an error naming it.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = s.to_string();
    for name in placeholders(s)? {
        let v = vars
            .get(&name)
            .ok_or_else(|| format!("{{{name}}} has no value in this run"))?;
        out = out.replace(&format!("{{{name}}}"), v);
    }
    Ok(out)
}

/// A built-in default duration.
fn d(s: &str) -> Duration {
    parse_duration(s).expect("built-in defaults parse")
}

fn identify_fields() -> Vec<String> {
    let v = serde_json::to_value(nvme_spec::IdentifyController::default()).expect("serializes");
    v.as_object().expect("object").keys().cloned().collect()
}

fn smart_fields() -> Vec<String> {
    let v = serde_json::to_value(nvme_spec::SmartLog::default()).expect("serializes");
    v.as_object()
        .expect("object")
        .keys()
        .filter(|k| !k.starts_with("temperature_sensor"))
        .cloned()
        .collect()
}

impl Plan {
    pub fn load(file: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(file).map_err(|source| PlanError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self, PlanError> {
        let invalid = |context: String, reason: String| PlanError::Invalid {
            file: file.to_path_buf(),
            context,
            reason,
        };
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| invalid("TOML".into(), e.to_string()))?;
        for k in doc.keys() {
            if !["name", "description", "step"].contains(&k.as_str()) {
                return Err(invalid(
                    format!("key '{k}'"),
                    "unknown top-level key; expected name, description and [[step]]".into(),
                ));
            }
        }
        let name = match doc.get("name") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                return Err(invalid(
                    "key 'name'".into(),
                    "must be a non-empty string".into(),
                ))
            }
            None => {
                return Err(invalid(
                    "key 'name'".into(),
                    "missing; every plan has a name".into(),
                ))
            }
        };
        let description = doc
            .get("description")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let raw_steps = match doc.get("step") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a.clone(),
            _ => {
                return Err(invalid(
                    "[[step]]".into(),
                    "no steps; add at least one [[step]]".into(),
                ))
            }
        };
        let mut steps = vec![];
        for (i, v) in raw_steps.into_iter().enumerate() {
            let number = i + 1;
            let toml::Value::Table(mut t) = v else {
                return Err(invalid(format!("step {number}"), "must be a table".into()));
            };
            let kind = match t.remove("kind") {
                Some(toml::Value::String(k)) => k,
                _ => {
                    return Err(invalid(
                        format!("step {number} key 'kind'"),
                        format!("missing; one of {KINDS}"),
                    ))
                }
            };
            let ctx = |key: &str| format!("step {number} ({kind}) key '{key}'");
            let step_name = match t.remove("name") {
                Some(toml::Value::String(s)) => s,
                Some(_) => return Err(invalid(ctx("name"), "must be a string".into())),
                None => format!("{number}-{kind}"),
            };
            let timeout = match t.remove("timeout") {
                Some(toml::Value::String(s)) => {
                    Some(parse_duration(&s).map_err(|e| invalid(ctx("timeout"), e))?)
                }
                Some(_) => {
                    return Err(invalid(
                        ctx("timeout"),
                        "must be a duration string such as \"30s\"".into(),
                    ))
                }
                None => None,
            };
            let on_failure = match t.remove("on_failure") {
                Some(toml::Value::String(s)) if s == "stop" => Some(OnFailure::Stop),
                Some(toml::Value::String(s)) if s == "continue" => Some(OnFailure::Continue),
                Some(_) => {
                    return Err(invalid(
                        ctx("on_failure"),
                        "must be \"stop\" or \"continue\"".into(),
                    ))
                }
                None => None,
            };
            let rest = toml::Value::Table(t);
            let de = |e: toml::de::Error| {
                invalid(format!("step {number} ({kind})"), e.message().to_string())
            };
            let dur =
                |key: &str, v: Option<String>, default: &str| -> Result<Duration, PlanError> {
                    parse_duration(v.as_deref().unwrap_or(default))
                        .map_err(|e| invalid(ctx(key), e))
                };
            let (kind_value, default_timeout, default_on_failure) = match kind.as_str() {
                "flash" => {
                    let r: RawFlash = rest.try_into().map_err(de)?;
                    let activate = match r.activate.as_deref() {
                        None => Activation::Reset,
                        Some(a) => a.parse().map_err(|e| invalid(ctx("activate"), e))?,
                    };
                    if let Some(s) = r.slot {
                        if !(1..=7).contains(&s) {
                            return Err(invalid(
                                ctx("slot"),
                                format!("{s} is not a firmware slot (1-7)"),
                            ));
                        }
                    }
                    let wait_timeout = dur("wait_timeout", r.wait_timeout, "2m")?;
                    (
                        StepKind::Flash {
                            activate,
                            slot: r.slot,
                            wait_timeout,
                            rollback: r.rollback.unwrap_or(true),
                        },
                        d("10m"),
                        OnFailure::Stop,
                    )
                }
                "identify" => {
                    let r: RawIdentify = rest.try_into().map_err(de)?;
                    if r.expect.is_empty() {
                        return Err(invalid(ctx("expect"), "list at least one field, e.g. expect = { fr = \"{firmware.revision}\" }".into()));
                    }
                    let fields = identify_fields();
                    let mut expect = BTreeMap::new();
                    for (k, v) in r.expect {
                        if !fields.contains(&k) {
                            return Err(invalid(
                                ctx(&format!("expect.{k}")),
                                format!(
                                    "no such Identify Controller field; fields are {}",
                                    fields.join(", ")
                                ),
                            ));
                        }
                        let s = match v {
                            toml::Value::String(s) => s,
                            toml::Value::Integer(n) => n.to_string(),
                            _ => {
                                return Err(invalid(
                                    ctx(&format!("expect.{k}")),
                                    "must be a string or an integer".into(),
                                ))
                            }
                        };
                        placeholders(&s).map_err(|e| invalid(ctx(&format!("expect.{k}")), e))?;
                        expect.insert(k, s);
                    }
                    (StepKind::Identify { expect }, d("30s"), OnFailure::Continue)
                }
                "smart" => {
                    let r: RawSmart = rest.try_into().map_err(de)?;
                    let fields = smart_fields();
                    for k in r.max_delta.keys() {
                        if !fields.contains(k) {
                            return Err(invalid(
                                ctx(&format!("max_delta.{k}")),
                                format!(
                                    "no such SMART / Health field; fields are {}",
                                    fields.join(", ")
                                ),
                            ));
                        }
                    }
                    (
                        StepKind::Smart {
                            max_temperature_c: r.max_temperature_c,
                            critical_warning: r.critical_warning,
                            max_media_errors: r.max_media_errors,
                            max_percent_used: r.max_percent_used,
                            min_avail_spare: r.min_avail_spare,
                            max_delta: r.max_delta,
                        },
                        d("30s"),
                        OnFailure::Continue,
                    )
                }
                "selftest" => {
                    let r: RawSelfTest = rest.try_into().map_err(de)?;
                    let test = r.test.unwrap_or(SelfTestKind::Short);
                    (
                        StepKind::SelfTest { test },
                        d(if test == SelfTestKind::Short {
                            "5m"
                        } else {
                            "2h"
                        }),
                        OnFailure::Continue,
                    )
                }
                "format" => {
                    let r: RawFormat = rest.try_into().map_err(de)?;
                    let (lbaf, ses) = (r.lbaf.unwrap_or(0), r.ses.unwrap_or(0));
                    if lbaf > 15 {
                        return Err(invalid(
                            ctx("lbaf"),
                            format!("{lbaf} is not an LBA format index (0-15)"),
                        ));
                    }
                    if ses > 2 {
                        return Err(invalid(ctx("ses"), format!("{ses} is not a secure erase setting (0 none, 1 user data, 2 crypto)")));
                    }
                    (StepKind::Format { lbaf, ses }, d("10m"), OnFailure::Stop)
                }
                "sanitize" => {
                    let r: RawSanitize = rest.try_into().map_err(de)?;
                    (
                        StepKind::Sanitize { action: r.action },
                        d("1h"),
                        OnFailure::Stop,
                    )
                }
                "io" => {
                    let r: RawIo = rest.try_into().map_err(de)?;
                    let size = |key: &str, v: Option<String>| -> Result<Option<u64>, PlanError> {
                        v.map(|s| {
                            parse_size(s.trim_end_matches("/s")).map_err(|e| invalid(ctx(key), e))
                        })
                        .transpose()
                    };
                    let odur =
                        |key: &str, v: Option<String>| -> Result<Option<Duration>, PlanError> {
                            v.map(|s| parse_duration(&s).map_err(|e| invalid(ctx(key), e)))
                                .transpose()
                        };
                    let io = IoStep {
                        rw: r.rw,
                        rwmixread: r.rwmixread.unwrap_or(50),
                        bs: size("bs", r.bs)?.unwrap_or(4096),
                        iodepth: r.iodepth.unwrap_or(16),
                        runtime: odur("runtime", r.runtime)?,
                        size: size("size", r.size)?,
                        direct: r.direct.unwrap_or(false),
                        verify: r.verify.unwrap_or(false),
                        numjobs: r.numjobs.unwrap_or(1),
                        target: match r.target.as_deref() {
                            None | Some("namespace") => IoTarget::Namespace,
                            Some("generic") => IoTarget::Generic,
                            Some(p) if p.starts_with('/') => IoTarget::Path(p.into()),
                            Some(p) => {
                                return Err(invalid(
                                    ctx("target"),
                                    format!(
                                        "'{p}': expected namespace, generic or an absolute path"
                                    ),
                                ))
                            }
                        },
                        min_iops: r.min_iops,
                        min_bandwidth: size("min_bandwidth", r.min_bandwidth)?,
                        max_p99_latency: odur("max_p99_latency", r.max_p99_latency)?,
                        max_mean_latency: odur("max_mean_latency", r.max_mean_latency)?,
                    };
                    // The engine's own checks, at load time.
                    let spec = io.to_spec("/".into(), crate::io::Engine::Uring);
                    if let Err(crate::io::IoError::Spec { option, reason }) = spec.validate() {
                        return Err(invalid(ctx(option), reason));
                    }
                    let budget =
                        io.runtime.unwrap_or(Duration::from_secs(600)) + Duration::from_secs(120);
                    (StepKind::Io(io), budget, OnFailure::Continue)
                }
                "power_cycle" => {
                    let r: RawPowerCycle = rest.try_into().map_err(de)?;
                    (
                        StepKind::PowerCycle {
                            off_time: dur("off_time", r.off_time, "1s")?,
                            wait: r.wait.unwrap_or(true),
                        },
                        d("5m"),
                        OnFailure::Stop,
                    )
                }
                "wait_for_drive" => {
                    let _: RawEmpty = rest.try_into().map_err(de)?;
                    (StepKind::WaitForDrive, d("2m"), OnFailure::Stop)
                }
                "console_expect" => {
                    let r: RawConsoleExpect = rest.try_into().map_err(de)?;
                    placeholders(&r.pattern).map_err(|e| invalid(ctx("pattern"), e))?;
                    // Check the regex with placeholders filled by a literal.
                    let probe = r
                        .pattern
                        .split('{')
                        .enumerate()
                        .map(|(i, part)| {
                            if i == 0 {
                                part.to_string()
                            } else {
                                format!("{{{part}")
                            }
                        })
                        .collect::<String>();
                    let mut probe_vars = BTreeMap::new();
                    for n in placeholders(&probe).unwrap_or_default() {
                        probe_vars.insert(n, "x".to_string());
                    }
                    let probe = substitute(&probe, &probe_vars).unwrap_or(probe);
                    Regex::new(&probe).map_err(|e| {
                        invalid(
                            ctx("pattern"),
                            format!("not a valid regular expression: {e}"),
                        )
                    })?;
                    (
                        StepKind::ConsoleExpect { pattern: r.pattern },
                        d("60s"),
                        OnFailure::Continue,
                    )
                }
                "script" => {
                    let r: RawScript = rest.try_into().map_err(de)?;
                    if r.command.trim().is_empty() {
                        return Err(invalid(ctx("command"), "must not be empty".into()));
                    }
                    placeholders(&r.command).map_err(|e| invalid(ctx("command"), e))?;
                    (
                        StepKind::Script {
                            command: r.command,
                            env: r.env,
                            expect_exit: r.expect_exit.unwrap_or(0),
                        },
                        d("10m"),
                        OnFailure::Continue,
                    )
                }
                other => {
                    return Err(invalid(
                        format!("step {number} key 'kind'"),
                        format!("unknown kind '{other}'; expected one of {KINDS}"),
                    ))
                }
            };
            let timeout = timeout.unwrap_or(default_timeout);
            if timeout.is_zero() {
                return Err(invalid(ctx("timeout"), "must be more than zero".into()));
            }
            steps.push(Step {
                number,
                name: step_name,
                kind: kind_value,
                timeout,
                on_failure: on_failure.unwrap_or(default_on_failure),
            });
        }
        Ok(Plan {
            name,
            description,
            file: file.to_path_buf(),
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, String> {
        Plan::parse(text, Path::new("plans/t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_kind_with_defaults() {
        let p = parse(
            r#"
name = "all"
[[step]]
kind = "flash"
[[step]]
kind = "identify"
expect = { fr = "{firmware.revision}", nn = 1 }
[[step]]
kind = "smart"
max_temperature_c = 70
max_delta = { media_errors = 0 }
[[step]]
kind = "selftest"
test = "extended"
[[step]]
kind = "format"
lbaf = 1
[[step]]
kind = "sanitize"
action = "crypto-erase"
[[step]]
kind = "io"
rw = "randread"
runtime = "2s"
max_p99_latency = "5ms"
min_bandwidth = "10M/s"
[[step]]
kind = "power_cycle"
off_time = "500ms"
[[step]]
kind = "wait_for_drive"
timeout = "20s"
[[step]]
kind = "console_expect"
pattern = 'firmware {firmware.revision} ready \(slot \d{1,2}\)'
[[step]]
kind = "script"
command = "nvme-flash $NVFARM_DEVICE info"
on_failure = "stop"
"#,
        )
        .unwrap();
        assert_eq!(p.steps.len(), 11);
        let kinds: Vec<_> = p.steps.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, KINDS.split(", ").collect::<Vec<_>>());
        assert_eq!(p.steps[0].on_failure, OnFailure::Stop);
        assert_eq!(p.steps[0].timeout, Duration::from_secs(600));
        assert_eq!(p.steps[1].on_failure, OnFailure::Continue);
        assert_eq!(p.steps[8].timeout, Duration::from_secs(20));
        assert_eq!(p.steps[10].on_failure, OnFailure::Stop);
        match &p.steps[6].kind {
            StepKind::Io(io) => {
                assert_eq!(io.bs, 4096);
                assert_eq!(io.min_bandwidth, Some(10 << 20));
                assert_eq!(io.max_p99_latency, Some(Duration::from_millis(5)));
                assert_eq!(io.target, IoTarget::Namespace);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.steps[6].timeout, Duration::from_secs(122));
        assert!(p.needs_firmware().is_some());
    }

    #[test]
    fn errors_name_the_file_step_and_key() {
        let cases = [
            ("name = \"x\"\n[[step]]\nkind = \"flsh\"", "step 1 key 'kind'", "unknown kind 'flsh'"),
            ("name = \"x\"\n[[step]]\nkind = \"identify\"\nexpect = { firmware = \"1\" }", "step 1 (identify) key 'expect.firmware'", "no such Identify"),
            ("name = \"x\"\n[[step]]\nkind = \"smart\"\nmax_delta = { crashes = 0 }", "step 1 (smart) key 'max_delta.crashes'", "no such SMART"),
            ("name = \"x\"\n[[step]]\nkind = \"io\"\nrw = \"randread\"\nruntime = \"1s\"\nbs = \"3\"", "step 1 (io) key 'bs'", "multiple of 512"),
            ("name = \"x\"\n[[step]]\nkind = \"io\"\nrw = \"randread\"", "step 1 (io) key 'runtime'", "--runtime or --size"),
            ("name = \"x\"\n[[step]]\nkind = \"io\"\nrw = \"sideways\"\nruntime=\"1s\"", "step 1 (io)", "sideways"),
            ("name = \"x\"\n[[step]]\nkind = \"selftest\"\nwait = true", "step 1 (selftest)", "unknown field `wait`"),
            ("name = \"x\"\n[[step]]\nkind = \"flash\"\ntimeout = \"soon\"", "step 1 (flash) key 'timeout'", "soon"),
            ("name = \"x\"\n[[step]]\nkind = \"console_expect\"\npattern = \"boot (ok\"", "step 1 (console_expect) key 'pattern'", "regular expression"),
            ("name = \"x\"\n[[step]]\nkind = \"script\"\ncommand = \"echo {firmware.version}\"", "step 1 (script) key 'command'", "unknown placeholder {firmware.version}"),
            ("name = \"x\"\n[[step]]\nkind = \"wait_for_drive\"\n[[step]]\nkind = \"format\"\nses = 7", "step 2 (format) key 'ses'", "secure erase"),
            ("[[step]]\nkind = \"flash\"", "key 'name'", "missing"),
            ("name = \"x\"", "[[step]]", "no steps"),
        ];
        for (text, context, detail) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("plans/t.toml: "), "{e}");
            assert!(e.contains(context), "expected '{context}' in: {e}");
            assert!(e.contains(detail), "expected '{detail}' in: {e}");
        }
    }

    #[test]
    fn placeholders_and_substitution() {
        assert_eq!(
            placeholders("a {rig.name} b {rig.label.site} c{2,3}").unwrap(),
            vec!["rig.name", "rig.label.site"]
        );
        let vars: BTreeMap<String, String> = [("rig.name".to_string(), "r1".to_string())].into();
        assert_eq!(substitute("rig={rig.name}", &vars).unwrap(), "rig=r1");
        assert!(substitute("{drive.serial}", &vars)
            .unwrap_err()
            .contains("{drive.serial} has no value"));
        assert!(placeholders("{oops").is_err());
    }
}
