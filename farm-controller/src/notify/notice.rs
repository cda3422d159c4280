//! One notice and its two bodies: nvfarm's JSON (the event, its subject, the matrix's changes, links) and a
//! one-line `{"text": ...}` for chat webhooks.

use serde_json::{json, Value};

use nvfarm_model::farm::{SweepCell, SweepReport};
use nvfarm_model::time::{now_ms, rfc3339};

use crate::config::WebhookEvent;

/// Something a webhook is told.
#[derive(Clone, Debug)]
pub enum Notice {
    /// Every job of a sweep ended; `changes` are its cells that changed against the previous sweep.
    SweepFinished {
        /// The sweep's report.
        report: Box<SweepReport>,
        /// Cells with a change.
        changes: Vec<SweepCell>,
    },
    /// A finished sweep has new failures (`cells`).
    NewFailure {
        /// The sweep's report.
        report: Box<SweepReport>,
        /// The cells that newly fail.
        cells: Vec<SweepCell>,
    },
    /// A finished sweep has io regressions (`cells`).
    Regression {
        /// The sweep's report.
        report: Box<SweepReport>,
        /// The cells that regressed.
        cells: Vec<SweepCell>,
    },
    /// A finished sweep's build did worse than the build before it on a drive model.
    BuildRegression {
        /// The sweep's report.
        report: Box<SweepReport>,
        /// The build (sha256).
        build: String,
        /// What regressed, per model and metric.
        regressions: Vec<crate::core::trends::BuildRegression>,
    },
    /// A rig was quarantined.
    RigQuarantined {
        /// The rig.
        rig: String,
        /// Its agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// An agent's rigs went offline (`rigs`: each with its reason).
    AgentLost {
        /// The agent.
        agent: String,
        /// Its rigs that went offline, with why.
        rigs: Vec<(String, String)>,
    },
}

fn cell(c: &SweepCell) -> Value {
    json!({
        "rig": c.rig,
        "step": c.step,
        "change": c.change.map(|c| c.as_str()),
        "outcome": c.outcome.map(|o| o.as_str()),
        "previous_outcome": c.previous_outcome.map(|o| o.as_str()),
        "detail": c.detail,
    })
}

fn sweep(r: &SweepReport, base: &str) -> (Value, Value) {
    let s = &r.sweep;
    let jobs: Vec<Value> = r
        .jobs
        .iter()
        .map(|j| json!({ "id": j.id, "rig": j.rig, "state": j.state.as_str(), "link": format!("{base}/jobs/{}", j.id) }))
        .collect();
    (
        json!({
            "id": s.id,
            "name": s.name,
            "plan": s.plan_name,
            "outcome": r.outcome.as_str(),
            "previous": s.previous,
            "rigs": r.rigs,
            "jobs": jobs,
        }),
        json!({
            "page": format!("{base}/sweeps/{}", s.id),
            "sweep": format!("{base}/api/sweeps/{}", s.id),
            "previous": s.previous.as_ref().map(|p| format!("{base}/api/sweeps/{p}")),
            "dashboard": format!("{base}/"),
        }),
    )
}

impl Notice {
    /// The event it is.
    pub fn event(&self) -> WebhookEvent {
        match self {
            Notice::SweepFinished { .. } => WebhookEvent::SweepFinished,
            Notice::NewFailure { .. } => WebhookEvent::NewFailure,
            Notice::Regression { .. } | Notice::BuildRegression { .. } => WebhookEvent::Regression,
            Notice::RigQuarantined { .. } => WebhookEvent::RigQuarantined,
            Notice::AgentLost { .. } => WebhookEvent::AgentLost,
        }
    }

    /// nvfarm's JSON body; links start at `base` (the dashboard's URL).
    pub fn json(&self, base: &str) -> Value {
        let mut v = match self {
            Notice::SweepFinished { report, changes } => {
                let (s, links) = sweep(report, base);
                json!({ "sweep": s, "changes": changes.iter().map(cell).collect::<Vec<_>>(), "links": links })
            }
            Notice::NewFailure { report, cells } | Notice::Regression { report, cells } => {
                let (s, links) = sweep(report, base);
                json!({ "sweep": s, "changes": cells.iter().map(cell).collect::<Vec<_>>(), "links": links })
            }
            Notice::BuildRegression {
                report,
                build,
                regressions,
            } => {
                let (s, mut links) = sweep(report, base);
                links["build"] = format!("{base}/builds/{build}").into();
                json!({
                    "sweep": s,
                    "build": build,
                    "against": "previous_build",
                    "regressions": regressions,
                    "links": links,
                })
            }
            Notice::RigQuarantined { rig, agent, reason } => json!({
                "rig": { "name": rig, "agent": agent, "reason": reason },
                "links": { "rig": format!("{base}/rigs/{rig}"), "rigs": format!("{base}/api/rigs"), "dashboard": format!("{base}/") },
            }),
            Notice::AgentLost { agent, rigs } => json!({
                "agent": agent,
                "rigs": rigs.iter().map(|(r, why)| json!({ "name": r, "reason": why })).collect::<Vec<_>>(),
                "links": { "rigs": format!("{base}/api/rigs"), "dashboard": format!("{base}/") },
            }),
        };
        v["event"] = self.event().as_str().into();
        v["time"] = rfc3339(now_ms()).into();
        v
    }

    /// One line for a chat webhook.
    pub fn text(&self, base: &str) -> String {
        let cells = |cells: &[SweepCell]| {
            cells
                .iter()
                .map(|c| format!("{} {}", c.rig, c.step))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Notice::SweepFinished { report, changes } => format!(
                "nvfarm: sweep {} ({}) finished: {} on {} rig(s), {} change(s) since the previous sweep <{base}/sweeps/{}>",
                report.sweep.name,
                report.sweep.id,
                report.outcome.as_str(),
                report.rigs.len(),
                changes.len(),
                report.sweep.id
            ),
            Notice::NewFailure { report, cells: c } => format!(
                "nvfarm: sweep {} ({}) has {} new failure(s): {} <{base}/sweeps/{}>",
                report.sweep.name,
                report.sweep.id,
                c.len(),
                cells(c),
                report.sweep.id
            ),
            Notice::Regression { report, cells: c } => format!(
                "nvfarm: sweep {} ({}) regressed: {} <{base}/sweeps/{}>",
                report.sweep.name,
                report.sweep.id,
                cells(c),
                report.sweep.id
            ),
            Notice::BuildRegression { report, build, regressions } => format!(
                "nvfarm: build {} (sweep {}) is worse than the build before it: {} <{base}/builds/{build}>",
                &build[..12.min(build.len())],
                report.sweep.id,
                regressions
                    .iter()
                    .map(|r| format!("{} on {} {:.0} vs {:.0} {}", r.title, r.model, r.mean, r.previous_mean, r.unit))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Notice::RigQuarantined { rig, reason, .. } => {
                format!("nvfarm: rig {rig} quarantined: {reason} <{base}/rigs/{rig}>")
            }
            Notice::AgentLost { agent, rigs } => format!(
                "nvfarm: agent {agent} lost; offline: {} <{base}/>",
                rigs.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}
