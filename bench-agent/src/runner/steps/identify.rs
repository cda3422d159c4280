//! `identify`: Identify Controller fields must have the expected values (placeholders filled in).

use std::collections::BTreeMap;
use std::time::Instant;

use nvfarm_model::plan::placeholders::substitute;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    expect: &BTreeMap<String, String>,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let d = ctx.drive(deadline)?;
    let id = d
        .controller()
        .identify_controller()
        .map_err(|e| Fail::nvme("Identify Controller", &e))?;
    let json = serde_json::to_value(&id).unwrap_or_default();
    let mut bad = vec![];
    for (field, want) in expect {
        let want =
            substitute(want, &ctx.vars).map_err(|e| Fail::error(format!("expect.{field}: {e}")))?;
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
        Err(Fail::failed(bad.join("; ")))
    }
}
