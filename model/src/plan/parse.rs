//! Plan parsing (~600 lines, a third of it tests): one function per step kind.
//!
//! TOML to a validated [`Plan`]: the document, then each step alone, with one function per step kind. Every
//! error names the file, the step and the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nvme_spec::units::{parse_duration, parse_size};
use nvme_spec::Activation;
use regex::Regex;
use serde::Deserialize;

use super::placeholders::{env_name, known_in, placeholders, substitute};
use super::{
    CommandQueue, IoStep, IoTarget, IoThresholds, NvmeCommandStep, OnFailure, Plan, PlanError,
    PlanOverride, SanitizeKind, SelfTestKind, Step, StepKind, KINDS, NVME_STEP_MAX_DATA,
};
use crate::io::{IoOptions, Rw};

/// A step kind's parsed settings, its default timeout and its default `on_failure`.
type Parsed = (StepKind, Duration, OnFailure);

pub(super) fn parse(
    text: &str,
    file: &Path,
    overrides: &[PlanOverride],
) -> Result<Plan, PlanError> {
    let invalid = |context: &str, reason: String| PlanError::Invalid {
        file: file.to_path_buf(),
        context: context.to_string(),
        reason,
    };
    let doc: toml::Table = toml::from_str(text).map_err(|e| invalid("TOML", e.to_string()))?;
    for k in doc.keys() {
        if !["name", "description", "step"].contains(&k.as_str()) {
            return Err(invalid(
                &format!("key '{k}'"),
                "unknown top-level key; expected name, description and [[step]]".into(),
            ));
        }
    }
    let name = match doc.get("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(invalid("key 'name'", "must be a non-empty string".into())),
        None => {
            return Err(invalid(
                "key 'name'",
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
        Some(toml::Value::Array(a)) if !a.is_empty() => {
            let mut a = a.clone();
            for o in overrides {
                apply(&mut a, o).map_err(|reason| invalid(&format!("--set '{o}'"), reason))?;
            }
            a
        }
        _ => {
            return Err(invalid(
                "[[step]]",
                "no steps; add at least one [[step]]".into(),
            ))
        }
    };
    let steps = raw_steps
        .into_iter()
        .enumerate()
        .map(|(i, v)| step(file, i as u32 + 1, v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            PlanError::Invalid {
                file,
                context,
                reason,
            } if !overrides.is_empty() => {
                let set: Vec<String> = overrides.iter().map(|o| format!("--set '{o}'")).collect();
                PlanError::Invalid {
                    file,
                    context,
                    reason: format!("{reason} (the plan as changed by {})", set.join(", ")),
                }
            }
            e => e,
        })?;
    Ok(Plan {
        name,
        description,
        file: file.to_path_buf(),
        steps,
    })
}

/// Sets `o.key` in the step named `o.step` (a top-level step or a member of a `parallel` group).
fn apply(steps: &mut [toml::Value], o: &PlanOverride) -> Result<(), String> {
    let mut names = Vec::new();
    for s in steps.iter_mut() {
        let Some(t) = s.as_table_mut() else { continue };
        let name = t.get("name").and_then(|v| v.as_str()).unwrap_or_default();
        if name == o.step {
            t.insert(o.key.clone(), o.value.clone());
            return Ok(());
        }
        names.push(name.to_string());
        if let Some(toml::Value::Array(members)) = t.get_mut("steps") {
            if apply(members, o).is_ok() {
                return Ok(());
            }
        }
    }
    Err(format!(
        "the plan has no step named '{}' (steps: {})",
        o.step,
        names.join(", ")
    ))
}

/// Where in the plan a step's errors are.
struct Cx<'a> {
    file: &'a Path,
    number: u32,
    kind: String,
}

impl Cx<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            file: self.file.to_path_buf(),
            context: format!("step {} ({}) key '{key}'", self.number, self.kind),
            reason: reason.into(),
        }
    }
    /// A serde error for the step as a whole (unknown field, wrong type).
    fn de(&self, e: toml::de::Error) -> PlanError {
        PlanError::Invalid {
            file: self.file.to_path_buf(),
            context: format!("step {} ({})", self.number, self.kind),
            reason: e.message().to_string(),
        }
    }
    fn duration(&self, key: &str, v: Option<String>, default: &str) -> Result<Duration, PlanError> {
        bounded(v.as_deref().unwrap_or(default)).map_err(|e| self.invalid(key, e))
    }
    fn opt_duration(&self, key: &str, v: Option<String>) -> Result<Option<Duration>, PlanError> {
        v.map(|s| bounded(&s).map_err(|e| self.invalid(key, e)))
            .transpose()
    }
    fn opt_size(&self, key: &str, v: Option<String>) -> Result<Option<u64>, PlanError> {
        v.map(|s| parse_size(s.trim_end_matches("/s")).map_err(|e| self.invalid(key, e)))
            .transpose()
    }
    fn placeholders(&self, key: &str, s: &str) -> Result<(), PlanError> {
        placeholders(s).map(drop).map_err(|e| self.invalid(key, e))
    }
}

/// The longest duration a plan may give anything (a step, a run, a wait): a plan is one job's work.
pub const MAX_PLAN_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration from the plan, at most [`MAX_PLAN_DURATION`].
fn bounded(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_PLAN_DURATION {
        return Err(format!("'{s}' is too long: at most 30days"));
    }
    Ok(d)
}

/// A built-in default duration.
fn d(s: &str) -> Duration {
    parse_duration(s).expect("built-in defaults parse")
}

fn step(file: &Path, number: u32, v: toml::Value) -> Result<Step, PlanError> {
    let whole = |context: String, reason: String| PlanError::Invalid {
        file: file.to_path_buf(),
        context,
        reason,
    };
    let toml::Value::Table(mut t) = v else {
        return Err(whole(format!("step {number}"), "must be a table".into()));
    };
    let kind = match t.remove("kind") {
        Some(toml::Value::String(k)) => k,
        _ => {
            return Err(whole(
                format!("step {number} key 'kind'"),
                format!("missing; one of {KINDS}"),
            ))
        }
    };
    let cx = Cx {
        file,
        number,
        kind: kind.clone(),
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(cx.invalid("name", "must be a string")),
        None => format!("{number}-{kind}"),
    };
    let timeout = match t.remove("timeout") {
        Some(toml::Value::String(s)) => {
            let d = bounded(&s).map_err(|e| cx.invalid("timeout", e))?;
            if d.is_zero() {
                return Err(cx.invalid("timeout", "must be longer than 0s"));
            }
            Some(d)
        }
        Some(_) => return Err(cx.invalid("timeout", "must be a duration string such as \"30s\"")),
        None => None,
    };
    let on_failure = match t.remove("on_failure") {
        Some(toml::Value::String(s)) if s == "stop" => Some(OnFailure::Stop),
        Some(toml::Value::String(s)) if s == "continue" => Some(OnFailure::Continue),
        Some(_) => return Err(cx.invalid("on_failure", "must be \"stop\" or \"continue\"")),
        None => None,
    };
    let rest = toml::Value::Table(t);
    let (kind_value, default_timeout, default_on_failure) = match kind.as_str() {
        "flash" => flash(&cx, rest)?,
        "identify" => identify(&cx, rest)?,
        "smart" => smart(&cx, rest)?,
        "selftest" => self_test(&cx, rest)?,
        "format" => format(&cx, rest)?,
        "sanitize" => sanitize(&cx, rest)?,
        "io" => io(&cx, rest)?,
        "power_cycle" => power_cycle(&cx, rest)?,
        "wait_for_drive" => {
            let _: RawEmpty = rest.try_into().map_err(|e| cx.de(e))?;
            (StepKind::WaitForDrive, d("2m"), OnFailure::Stop)
        }
        "console_expect" => console_expect(&cx, rest)?,
        "nvme" => nvme(&cx, rest)?,
        "parallel" => parallel(&cx, rest)?,
        "script" => script(&cx, rest)?,
        other => {
            return Err(whole(
                format!("step {number} key 'kind'"),
                format!("unknown kind '{other}'; expected one of {KINDS}"),
            ))
        }
    };
    let timeout = timeout.unwrap_or(default_timeout);
    if timeout.is_zero() {
        return Err(cx.invalid("timeout", "must be more than zero"));
    }
    Ok(Step {
        number,
        name,
        kind: kind_value,
        timeout,
        on_failure: on_failure.unwrap_or(default_on_failure),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmpty {}

fn flash(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        activate: Option<String>,
        slot: Option<u8>,
        wait_timeout: Option<String>,
        rollback: Option<bool>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let activate = match r.activate.as_deref() {
        None => Activation::Reset,
        Some(a) => a
            .parse::<Activation>()
            .map_err(|e| cx.invalid("activate", e))?,
    };
    if let Some(s) = r.slot {
        if !(1..=7).contains(&s) {
            return Err(cx.invalid("slot", format!("{s} is not a firmware slot (1-7)")));
        }
    }
    Ok((
        StepKind::Flash {
            activate,
            slot: r.slot,
            wait_timeout: cx.duration("wait_timeout", r.wait_timeout, "2m")?,
            rollback: r.rollback.unwrap_or(true),
        },
        d("10m"),
        OnFailure::Stop,
    ))
}

/// The JSON keys of a serializable spec structure.
fn fields<T: serde::Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => vec![],
    }
}

fn identify(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        expect: BTreeMap<String, toml::Value>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    if r.expect.is_empty() {
        return Err(cx.invalid(
            "expect",
            "list at least one field, e.g. expect = { fr = \"{firmware.revision}\" }",
        ));
    }
    let known = fields::<nvme_spec::IdentifyController>();
    let mut expect = BTreeMap::new();
    for (k, v) in r.expect {
        let key = format!("expect.{k}");
        if !known.contains(&k) {
            return Err(cx.invalid(
                &key,
                format!(
                    "no such Identify Controller field; fields are {}",
                    known.join(", ")
                ),
            ));
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            _ => return Err(cx.invalid(&key, "must be a string or an integer")),
        };
        cx.placeholders(&key, &s)?;
        expect.insert(k, s);
    }
    Ok((StepKind::Identify { expect }, d("30s"), OnFailure::Continue))
}

fn smart(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        max_temperature_c: Option<i32>,
        critical_warning: Option<u8>,
        max_media_errors: Option<u64>,
        max_percent_used: Option<u8>,
        min_avail_spare: Option<u8>,
        #[serde(default)]
        max_delta: BTreeMap<String, u64>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let known: Vec<String> = fields::<nvme_spec::SmartLog>()
        .into_iter()
        .filter(|k| !k.starts_with("temperature_sensor"))
        .collect();
    for k in r.max_delta.keys() {
        if !known.contains(k) {
            return Err(cx.invalid(
                &format!("max_delta.{k}"),
                format!(
                    "no such SMART / Health field; fields are {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok((
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
    ))
}

fn self_test(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        test: Option<SelfTestKind>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let test = r.test.unwrap_or(SelfTestKind::Short);
    let timeout = match test {
        SelfTestKind::Short => d("5m"),
        SelfTestKind::Extended => d("2h"),
    };
    Ok((StepKind::SelfTest { test }, timeout, OnFailure::Continue))
}

fn format(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        lbaf: Option<u8>,
        ses: Option<u8>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let (lbaf, ses) = (r.lbaf.unwrap_or(0), r.ses.unwrap_or(0));
    if lbaf > 15 {
        return Err(cx.invalid("lbaf", format!("{lbaf} is not an LBA format index (0-15)")));
    }
    if ses > 2 {
        return Err(cx.invalid(
            "ses",
            format!("{ses} is not a secure erase setting (0 none, 1 user data, 2 crypto)"),
        ));
    }
    Ok((StepKind::Format { lbaf, ses }, d("10m"), OnFailure::Stop))
}

fn sanitize(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        action: SanitizeKind,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    Ok((
        StepKind::Sanitize { action: r.action },
        d("1h"),
        OnFailure::Stop,
    ))
}

fn io(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
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
        baseline: Option<String>,
        max_regression: Option<String>,
        seed: Option<i64>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let max_regression_pct = match (r.baseline.as_deref(), &r.max_regression) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(cx.invalid(
                "max_regression",
                "compares with a baseline: add baseline = \"previous\"",
            ))
        }
        (Some("previous"), m) => Some(match m {
            None => 10.0,
            Some(s) => {
                let v: f64 = s.trim().trim_end_matches('%').trim().parse().map_err(|_| {
                    cx.invalid(
                        "max_regression",
                        format!("'{s}': a percentage such as \"10%\""),
                    )
                })?;
                if !(0.0..=1000.0).contains(&v) {
                    return Err(
                        cx.invalid("max_regression", format!("'{s}': between 0% and 1000%"))
                    );
                }
                v
            }
        }),
        (Some(b), _) => {
            return Err(cx.invalid(
                "baseline",
                format!(
                "'{b}': the only baseline is \"previous\" (the last run of this step on this rig)"
            ),
            ))
        }
    };
    let options = IoOptions {
        rw: r.rw,
        rwmixread: r.rwmixread.unwrap_or(50),
        bs: cx.opt_size("bs", r.bs)?.unwrap_or(4096),
        iodepth: r.iodepth.unwrap_or(16),
        runtime: cx.opt_duration("runtime", r.runtime)?,
        size: cx.opt_size("size", r.size)?,
        direct: r.direct.unwrap_or(false),
        verify: r.verify.unwrap_or(false),
        numjobs: r.numjobs.unwrap_or(1),
    };
    options
        .validate()
        .map_err(|e| cx.invalid(e.option, e.reason))?;
    let target = match r.target.as_deref() {
        None | Some("namespace") => IoTarget::Namespace,
        Some("generic") => IoTarget::Generic,
        Some("media") => IoTarget::Media,
        Some(p) if p.starts_with('/') => IoTarget::Path(p.into()),
        Some(p) => {
            return Err(cx.invalid(
                "target",
                format!("'{p}': expected namespace, generic, media or an absolute path"),
            ))
        }
    };
    let thresholds = IoThresholds {
        min_iops: r.min_iops,
        min_bandwidth: cx.opt_size("min_bandwidth", r.min_bandwidth)?,
        max_p99_latency: cx.opt_duration("max_p99_latency", r.max_p99_latency)?,
        max_mean_latency: cx.opt_duration("max_mean_latency", r.max_mean_latency)?,
        max_regression_pct,
    };
    let budget = options.runtime.unwrap_or(Duration::from_secs(600)) + Duration::from_secs(120);
    Ok((
        StepKind::Io(IoStep {
            options,
            target,
            thresholds,
            seed: match r.seed {
                None => None,
                Some(n) if n >= 0 => Some(n as u64),
                Some(n) => return Err(cx.invalid("seed", format!("{n}: a seed is 0 or more"))),
            },
        }),
        budget,
        OnFailure::Continue,
    ))
}

fn power_cycle(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        off_time: Option<String>,
        wait: Option<bool>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    Ok((
        StepKind::PowerCycle {
            off_time: cx.duration("off_time", r.off_time, "1s")?,
            wait: r.wait.unwrap_or(true),
        },
        d("5m"),
        OnFailure::Stop,
    ))
}

fn console_expect(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        pattern: String,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    cx.placeholders("pattern", &r.pattern)?;
    // Check the regex with every placeholder filled by a literal.
    let vars: BTreeMap<String, String> = placeholders(&r.pattern)
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n, "x".to_string()))
        .collect();
    let probe = substitute(&r.pattern, &vars).unwrap_or_else(|_| r.pattern.clone());
    Regex::new(&probe)
        .map_err(|e| cx.invalid("pattern", format!("not a valid regular expression: {e}")))?;
    Ok((
        StepKind::ConsoleExpect { pattern: r.pattern },
        d("60s"),
        OnFailure::Continue,
    ))
}

/// The most steps one `parallel` group runs at once.
pub const MAX_PARALLEL: usize = 8;

fn parallel(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        steps: Vec<toml::Value>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    if !(2..=MAX_PARALLEL).contains(&r.steps.len()) {
        return Err(cx.invalid(
            "steps",
            format!(
                "{} step(s): a parallel group runs 2 to {MAX_PARALLEL} steps at once",
                r.steps.len()
            ),
        ));
    }
    let mut steps = Vec::with_capacity(r.steps.len());
    for (i, v) in r.steps.into_iter().enumerate() {
        let key = format!("steps[{i}]");
        let mut member = step(cx.file, cx.number, v).map_err(|e| match e {
            PlanError::Invalid {
                reason, context, ..
            } => cx.invalid(&key, format!("{context}: {reason}")),
            other => other,
        })?;
        match member.kind {
            StepKind::Parallel { .. } => {
                return Err(cx.invalid(&key, "a parallel group cannot hold another group"))
            }
            StepKind::ConsoleExpect { .. } => {
                return Err(cx.invalid(
                    &key,
                    "console_expect reads the rig's one console in order: put it before or after the group",
                ))
            }
            _ => {}
        }
        let default = format!("{}-{}", cx.number, member.kind.name());
        if member.name == default {
            member.name = format!("{}.{}-{}", cx.number, i + 1, member.kind.name());
        }
        steps.push(member);
    }
    if steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Flash { .. }))
        .count()
        > 1
    {
        return Err(cx.invalid(
            "steps",
            "at most one flash step: a drive takes one update at a time",
        ));
    }
    // The group waits for its slowest member.
    let timeout = steps.iter().map(|s| s.timeout).max().unwrap_or_default();
    Ok((StepKind::Parallel { steps }, timeout, OnFailure::Stop))
}

fn nvme(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        queue: Option<String>,
        opcode: i64,
        nsid: Option<i64>,
        cdw10: Option<i64>,
        cdw11: Option<i64>,
        cdw12: Option<i64>,
        cdw13: Option<i64>,
        cdw14: Option<i64>,
        cdw15: Option<i64>,
        data_in: Option<i64>,
        data_out: Option<String>,
        expect: Option<toml::Value>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    let queue = match r.queue.as_deref() {
        None | Some("admin") => CommandQueue::Admin,
        Some("io") => CommandQueue::Io,
        Some(q) => return Err(cx.invalid("queue", format!("'{q}': expected admin or io"))),
    };
    let opcode = u8::try_from(r.opcode).map_err(|_| {
        cx.invalid(
            "opcode",
            format!("{}: an opcode is 0 to 255 (0xff)", r.opcode),
        )
    })?;
    let dword = |key: &str, v: Option<i64>| -> Result<u32, PlanError> {
        v.map_or(Ok(0), |v| {
            u32::try_from(v).map_err(|_| {
                cx.invalid(key, format!("{v}: a dword is 0 to 4294967295 (0xffffffff)"))
            })
        })
    };
    let nsid = match r.nsid {
        None if queue == CommandQueue::Io => 1,
        v => dword("nsid", v)?,
    };
    let cdw = [
        dword("cdw10", r.cdw10)?,
        dword("cdw11", r.cdw11)?,
        dword("cdw12", r.cdw12)?,
        dword("cdw13", r.cdw13)?,
        dword("cdw14", r.cdw14)?,
        dword("cdw15", r.cdw15)?,
    ];
    let data_in = match r.data_in {
        None => 0,
        Some(n) if (0..=NVME_STEP_MAX_DATA as i64).contains(&n) => n as u32,
        Some(n) => {
            return Err(cx.invalid(
                "data_in",
                format!("{n}: bytes to read back, 0 to {NVME_STEP_MAX_DATA}"),
            ))
        }
    };
    let data_out = match &r.data_out {
        None => vec![],
        Some(h) => {
            let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            if h.len() % 2 != 0 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(cx.invalid("data_out", "hex digits, two per byte (e.g. \"00ff10\")"));
            }
            let b: Vec<u8> = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or(0))
                .collect();
            if b.len() > NVME_STEP_MAX_DATA as usize {
                return Err(cx.invalid(
                    "data_out",
                    format!("{} bytes: at most {NVME_STEP_MAX_DATA}", b.len()),
                ));
            }
            b
        }
    };
    // The opcode's bits 1:0 say which way its data goes.
    match (opcode & 3, data_in, data_out.is_empty()) {
        (3, _, _) => {
            return Err(cx.invalid(
                "opcode",
                format!("{opcode:#04x} moves data both ways, which this step cannot send"),
            ))
        }
        (d, n, _) if n > 0 && d != 2 => {
            return Err(cx.invalid(
                "data_in",
                format!(
                    "opcode {opcode:#04x} sends no data to the host (its bits 1:0 are not 10b)"
                ),
            ))
        }
        (d, _, false) if d != 1 => {
            return Err(cx.invalid(
                "data_out",
                format!(
                    "opcode {opcode:#04x} takes no data from the host (its bits 1:0 are not 01b)"
                ),
            ))
        }
        _ => {}
    }
    let expect = match r.expect {
        None => 0,
        Some(toml::Value::Integer(n)) => u16::try_from(n)
            .ok()
            .filter(|&c| c <= 0x7ff)
            .ok_or_else(|| cx.invalid("expect", format!("{n}: a status code is (SCT << 8) | SC, 0 to 0x7ff")))?,
        Some(toml::Value::String(s)) => nvme_spec::Status::code_by_name(&s).ok_or_else(|| {
            cx.invalid(
                "expect",
                format!("'{s}' is not a status the spec names (e.g. \"success\", \"Invalid Field in Command\", \"LBA Out of Range\", or a number like 0x0002)"),
            )
        })?,
        Some(_) => return Err(cx.invalid("expect", "a status name or number")),
    };
    Ok((
        StepKind::Nvme(NvmeCommandStep {
            queue,
            opcode,
            nsid,
            cdw,
            data_in,
            data_out,
            expect,
        }),
        d("1m"),
        OnFailure::Continue,
    ))
}

fn script(cx: &Cx<'_>, rest: toml::Value) -> Result<Parsed, PlanError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        command: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
        expect_exit: Option<i32>,
    }
    let r: Raw = rest.try_into().map_err(|e| cx.de(e))?;
    if r.command.trim().is_empty() {
        return Err(cx.invalid("command", "must not be empty"));
    }
    // Values from the drive and the build are data, never shell text: a script reads them from its environment.
    if let Some(name) = known_in(&r.command).first() {
        return Err(cx.invalid(
            "command",
            format!(
                "{{{name}}} is not spliced into shell text (a value from the drive could run as a command); read ${} instead, or set env.NAME = \"{{{name}}}\"",
                env_name(name)
            ),
        ));
    }
    for (k, v) in &r.env {
        cx.placeholders(&format!("env.{k}"), v)?;
    }
    Ok((
        StepKind::Script {
            command: r.command,
            env: r.env,
            expect_exit: r.expect_exit.unwrap_or(0),
        },
        d("10m"),
        OnFailure::Continue,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, String> {
        Plan::parse(text, Path::new("plans/t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_override_replaces_a_steps_setting_and_is_checked_like_the_plans_own() {
        let text = r#"
name = "o"
[[step]]
name = "io"
kind = "io"
rw = "randread"
runtime = "1s"
min_iops = 1000
[[step]]
name = "pair"
kind = "parallel"
[[step.steps]]
name = "a"
kind = "identify"
expect = { nn = 1 }
[[step.steps]]
name = "b"
kind = "smart"
"#;
        let file = Path::new("plans/o.toml");
        let set = |s: &str| s.parse::<PlanOverride>().unwrap();
        let p = super::parse(
            text,
            file,
            &[set("io.min_iops=100"), set("b.critical_warning=0")],
        )
        .unwrap();
        let StepKind::Io(io) = &p.steps[0].kind else {
            panic!("{:?}", p.steps[0].kind)
        };
        assert_eq!(io.thresholds.min_iops, Some(100.0));
        // A value of the wrong type, an unknown key and an unknown step are refused, naming the override.
        let e = super::parse(text, file, &[set("io.min_iops=fast")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"fast\"") && e.contains("--set 'io.min_iops=\"fast\"'"),
            "{e}"
        );
        let e = super::parse(text, file, &[set("io.min_ipos=1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_ipos"), "{e}");
        let e = super::parse(text, file, &[set("nosuch.min_iops=1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set 'nosuch.min_iops=1'") && e.contains("steps: io, pair"),
            "{e}"
        );
        assert!("io.name=x".parse::<PlanOverride>().is_err());
        assert!("io=1".parse::<PlanOverride>().is_err());
        assert_eq!(set("io.bs=4k").value, toml::Value::String("4k".into()));
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
kind = "nvme"
queue = "io"
opcode = 0x02
cdw10 = 7
data_in = 4096
expect = "LBA Out of Range"
[[step]]
kind = "parallel"
steps = [{ kind = "io", rw = "randread", runtime = "5s" }, { kind = "power_cycle", timeout = "9m" }]
[[step]]
kind = "script"
command = "nvme-flash $NVFARM_DEVICE info"
on_failure = "stop"
"#,
        )
        .unwrap();
        assert_eq!(p.steps.len(), 13);
        match &p.steps[11].kind {
            StepKind::Parallel { steps } => {
                let names: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, ["12.1-io", "12.2-power_cycle"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.steps[11].timeout,
            Duration::from_secs(540),
            "the slowest member's"
        );
        assert_eq!(p.steps[11].on_failure, OnFailure::Stop);
        assert_eq!(p.all_steps().count(), 15);
        let kinds: Vec<_> = p.steps.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, KINDS.split(", ").collect::<Vec<_>>());
        assert_eq!(p.steps[0].on_failure, OnFailure::Stop);
        assert_eq!(p.steps[0].timeout, Duration::from_secs(600));
        assert_eq!(p.steps[1].on_failure, OnFailure::Continue);
        assert_eq!(p.steps[8].timeout, Duration::from_secs(20));
        assert_eq!(p.steps[12].on_failure, OnFailure::Stop);
        match &p.steps[10].kind {
            StepKind::Nvme(n) => {
                assert_eq!(
                    (n.queue, n.opcode, n.nsid, n.cdw[0]),
                    (CommandQueue::Io, 2, 1, 7)
                );
                assert_eq!((n.data_in, n.expect), (4096, 0x80));
            }
            other => panic!("{other:?}"),
        }
        match &p.steps[6].kind {
            StepKind::Io(io) => {
                assert_eq!(io.options.bs, 4096);
                assert_eq!(io.thresholds.min_bandwidth, Some(10 << 20));
                assert_eq!(
                    io.thresholds.max_p99_latency,
                    Some(Duration::from_millis(5))
                );
                assert_eq!(io.target, IoTarget::Namespace);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.steps[6].timeout, Duration::from_secs(122));
        assert!(p.flash_step().is_some());
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
            ("name = \"x\"\n[[step]]\nkind = \"flash\"\ntimeout = \"600000000d\"", "step 1 (flash) key 'timeout'", "at most 30days"),
            ("name = \"x\"\n[[step]]\nkind = \"flash\"\ntimeout = \"0s\"", "step 1 (flash) key 'timeout'", "longer than 0s"),
            ("name = \"x\"\n[[step]]\nkind = \"io\"\nrw = \"read\"\nruntime = \"99999999999999s\"", "step 1 (io) key 'runtime'", "at most 30days"),
            ("name = \"x\"\n[[step]]\nkind = \"console_expect\"\npattern = \"boot (ok\"", "step 1 (console_expect) key 'pattern'", "regular expression"),
            ("name = \"x\"\n[[step]]\nkind = \"script\"\ncommand = \"echo {drive.model}\"", "step 1 (script) key 'command'", "read $NVFARM_DRIVE_MODEL instead"),
            ("name = \"x\"\n[[step]]\nkind = \"script\"\ncommand = \"true\"\nenv = { V = \"{firmware.version}\" }", "step 1 (script) key 'env.V'", "unknown placeholder {firmware.version}"),
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
}
