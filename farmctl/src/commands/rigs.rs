//! `farmctl rigs` and `farmctl rig quarantine|restore|maintenance|move`.

use nvfarm_model::farm::RigStatus;
use nvfarm_model::ExitCode;
use nvfarm_proto::v1 as pb;

use super::selector;
use crate::cli::RigAction;
use crate::client::{Client, Result};
use crate::render;

/// Lists rigs.
pub(super) async fn list(c: &mut Client, json: bool, labels: Option<String>) -> Result<ExitCode> {
    let sel = selector(&None, &labels, false)?;
    let rigs = c
        .list_rigs(pb::ListRigsRequest {
            labels: sel.labels.into_iter().collect(),
        })
        .await?
        .into_inner()
        .rigs
        .into_iter()
        .map(RigStatus::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if json {
        render::json(&rigs);
    } else {
        render::rigs(&rigs);
    }
    Ok(ExitCode::Passed)
}

/// Quarantines, restores or puts a rig into maintenance, or moves it to another agent.
pub(super) async fn set_state(c: &mut Client, json: bool, action: RigAction) -> Result<ExitCode> {
    let (rig, action, reason) = match action {
        RigAction::Quarantine { name, reason } => (name, "quarantine", reason),
        RigAction::Restore { name } => (name, "restore", String::new()),
        RigAction::Maintenance { name, reason } => (name, "maintenance", reason),
        RigAction::Move { name, to } => (name, "move", to),
    };
    let r = if action == "move" {
        c.move_rig(pb::MoveRigRequest { rig, agent: reason })
            .await?
            .into_inner()
    } else {
        c.set_rig_state(pb::SetRigStateRequest {
            rig,
            action: action.into(),
            reason,
        })
        .await?
        .into_inner()
    };
    let r = RigStatus::try_from(r)?;
    if json {
        render::json(&r);
    } else {
        render::out(format!("{}: {} {}", r.rig.name, r.rig.state, r.rig.reason));
    }
    Ok(ExitCode::Passed)
}
