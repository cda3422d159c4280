//! `smart`: SMART / Health log checks, including how much counters grew since the plan started.

use std::time::Instant;

use nvfarm_model::plan::StepKind;
use nvme_spec::log_page::critical_warning;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    kind: &StepKind,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let StepKind::Smart {
        max_temperature_c,
        critical_warning,
        max_media_errors,
        max_percent_used,
        min_avail_spare,
        max_delta,
    } = kind
    else {
        return Err(Fail::error(
            "internal: the smart executor got another step kind",
        ));
    };
    let d = ctx.drive(deadline)?;
    let s = d
        .controller()
        .smart_log()
        .map_err(|e| Fail::nvme("SMART / Health log", &e))?;
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
                critical_warning::describe(s.critical_warning)
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
        match &ctx.smart_baseline {
            None => bad
                .push("no SMART baseline from the start of the plan to compare deltas with".into()),
            Some(base) => {
                let now = serde_json::to_value(&s).unwrap_or_default();
                let then = serde_json::to_value(base).unwrap_or_default();
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
        Err(Fail::failed(bad.join("; ")))
    }
}
