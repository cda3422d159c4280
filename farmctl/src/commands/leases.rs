//! `farmctl reserve`, `release`, `extend` and `queue`.

use std::time::Duration;

use tokio_stream::StreamExt;

use nvfarm_model::farm::{Lease, QueueEntry, Selector};
use nvfarm_model::time::rfc3339;
use nvfarm_model::ExitCode;
use nvfarm_proto::v1 as pb;

use super::selector_pb;
use crate::client::{CliError, Client, Result};
use crate::render::{self, note};

/// Reserves a rig, waiting in the queue with `wait`.
pub(super) async fn reserve(
    c: &mut Client,
    json: bool,
    sel: Selector,
    duration: Duration,
    wait: bool,
    priority: i32,
) -> Result<ExitCode> {
    let r = c
        .reserve(pb::ReserveRequest {
            selector: Some(selector_pb(&sel)),
            duration_ms: nvme_spec::units::millis(duration),
            priority,
            wait,
            holder: String::new(),
        })
        .await?
        .into_inner();
    let lease = match r.lease {
        Some(l) => l,
        None => wait_for_grant(c, &r.request_id, r.position, &r.waiting_because).await?,
    };
    let lease = Lease::try_from(lease)?;
    if json {
        render::json(&lease);
    } else {
        render::reserved(&lease);
    }
    Ok(ExitCode::Passed)
}

/// Waits in the queue until the request is granted; Ctrl-C withdraws it.
async fn wait_for_grant(
    c: &mut Client,
    request_id: &str,
    position: u32,
    why: &str,
) -> Result<pb::Lease> {
    note(format!(
        "queued as {request_id} (position {position}): {why}"
    ));
    let mut s = c
        .watch_request(pb::WatchRequestRequest {
            request_id: request_id.to_string(),
        })
        .await?
        .into_inner();
    let mut last = String::new();
    loop {
        let ev = tokio::select! {
            ev = s.next() => ev,
            _ = tokio::signal::ctrl_c() => {
                let _ = c.cancel_request(pb::CancelRequestRequest { request_id: request_id.to_string() }).await;
                return Err(CliError { code: ExitCode::TimedOut, message: "interrupted: the request was withdrawn".into() });
            }
        };
        let Some(ev) = ev else {
            return Err(CliError::infra(
                "the controller ended the wait without an answer",
            ));
        };
        let ev = ev?;
        if let Some(l) = ev.lease {
            return Ok(l);
        }
        if !ev.ended.is_empty() {
            return Err(CliError::infra(ev.ended));
        }
        let line = format!("position {}: {}", ev.position, ev.waiting_because);
        if line != last {
            note(&line);
            last = line;
        }
    }
}

/// Ends a reservation.
pub(super) async fn release(c: &mut Client, json: bool, lease_id: String) -> Result<ExitCode> {
    let l = c
        .release(pb::ReleaseRequest { lease_id })
        .await?
        .into_inner()
        .lease
        .ok_or_else(|| CliError::infra("the controller released without saying which lease"))?;
    let l = Lease::try_from(l)?;
    if json {
        render::json(&l);
    } else {
        render::out(format!("released {} ({})", l.id, l.rig));
    }
    Ok(ExitCode::Passed)
}

/// Extends a reservation.
pub(super) async fn extend(
    c: &mut Client,
    json: bool,
    lease_id: String,
    duration: Duration,
) -> Result<ExitCode> {
    let l = c
        .extend(pb::ExtendRequest {
            lease_id,
            duration_ms: nvme_spec::units::millis(duration),
        })
        .await?
        .into_inner();
    let l = Lease::try_from(l)?;
    if json {
        render::json(&l);
    } else {
        render::out(format!(
            "{} on {} now ends {}",
            l.id,
            l.rig,
            rfc3339(l.expires_ms)
        ));
    }
    Ok(ExitCode::Passed)
}

/// Shows the queue.
pub(super) async fn queue(c: &mut Client, json: bool) -> Result<ExitCode> {
    let q = c
        .queue(pb::QueueRequest {})
        .await?
        .into_inner()
        .entries
        .into_iter()
        .map(QueueEntry::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if json {
        render::json(&q);
    } else {
        render::queue(&q);
    }
    Ok(ExitCode::Passed)
}
