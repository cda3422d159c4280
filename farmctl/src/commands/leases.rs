//! `farmctl reserve`, `release`, `extend` and `queue`.

use std::time::Duration;

use tokio_stream::StreamExt;

use nvfarm_model::farm::{Lease, QueueEntry, Selector};
use nvfarm_model::time::rfc3339;
use nvfarm_model::ExitCode;
use nvfarm_proto::v1 as pb;

use super::selector_pb;
use crate::client::{connect, CliError, Client, Result};
use crate::render::{self, note};

/// What `reserve` was asked for.
pub(super) struct Reserve {
    pub selector: Selector,
    pub duration: Duration,
    pub wait: bool,
    pub detach: bool,
    pub priority: i32,
}

/// Reserves a rig, waiting in the queue with `wait` (reconnecting across a controller restart), or leaving a
/// request in the queue with `detach`.
pub(super) async fn reserve(
    c: &mut Client,
    url: &str,
    token: Option<&str>,
    json: bool,
    how: Reserve,
) -> Result<ExitCode> {
    let r = c
        .reserve(pb::ReserveRequest {
            selector: Some(selector_pb(&how.selector)),
            duration_ms: nvme_spec::units::millis(how.duration),
            priority: how.priority,
            wait: how.wait,
            holder: String::new(),
            detach: how.detach,
        })
        .await?
        .into_inner();
    let lease = match r.lease {
        Some(l) => l,
        None if how.detach => {
            if json {
                render::json(&serde_json::json!({
                    "request_id": r.request_id,
                    "position": r.position,
                    "waiting_because": r.waiting_because,
                }));
            } else {
                render::out(format!(
                    "queued as {} (position {}): {}; `farmctl queue` shows it, `farmctl withdraw {}` withdraws it",
                    r.request_id, r.position, r.waiting_because, r.request_id
                ));
            }
            return Ok(ExitCode::Passed);
        }
        None => {
            wait_for_grant(c, url, token, &r.request_id, r.position, &r.waiting_because).await?
        }
    };
    let lease = Lease::try_from(lease)?;
    if json {
        render::json(&lease);
    } else {
        render::reserved(&lease);
    }
    Ok(ExitCode::Passed)
}

/// How long `reserve --wait` keeps trying to reach a controller that went away (its request keeps its place for
/// the controller's `queue.watch_grace` after it comes back).
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// Waits in the queue until the request is granted; Ctrl-C withdraws it. A lost controller is reconnected to.
async fn wait_for_grant(
    c: &mut Client,
    url: &str,
    token: Option<&str>,
    request_id: &str,
    position: u32,
    why: &str,
) -> Result<pb::Lease> {
    note(format!(
        "queued as {request_id} (position {position}): {why}"
    ));
    let mut last = String::new();
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        match c
            .watch_request(pb::WatchRequestRequest {
                request_id: request_id.to_string(),
            })
            .await
        {
            Ok(s) => {
                let mut s = s.into_inner();
                lost_since = None;
                loop {
                    let ev = tokio::select! {
                        ev = s.next() => ev,
                        _ = tokio::signal::ctrl_c() => {
                            let _ = c.cancel_request(pb::CancelRequestRequest { request_id: request_id.to_string() }).await;
                            return Err(CliError { code: ExitCode::TimedOut, message: "interrupted: the request was withdrawn".into() });
                        }
                    };
                    let ev = match ev {
                        Some(Ok(ev)) => ev,
                        // The stream ended or broke: the controller went away; reconnect.
                        None | Some(Err(_)) => break,
                    };
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
            Err(e) if e.code() != tonic::Code::Unavailable => return Err(e.into()),
            Err(_) => {}
        }
        let since = *lost_since.get_or_insert_with(|| {
            note("lost the controller; reconnecting (the request keeps its place)");
            std::time::Instant::now()
        });
        if since.elapsed() > RECONNECT_FOR {
            return Err(CliError::infra(format!(
                "the controller has not come back for {}s; request {request_id} is withdrawn once it notices nobody waits",
                RECONNECT_FOR.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(nc) = connect(url, token).await {
            *c = nc;
        }
    }
}

/// Withdraws a waiting request.
pub(super) async fn withdraw(c: &mut Client, json: bool, request_id: String) -> Result<ExitCode> {
    c.cancel_request(pb::CancelRequestRequest {
        request_id: request_id.clone(),
    })
    .await?;
    if json {
        render::json(&serde_json::json!({ "withdrawn": request_id }));
    } else {
        render::out(format!("withdrew {request_id}"));
    }
    Ok(ExitCode::Passed)
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

/// `farmctl leases [--mine]`: active leases, soonest to end first.
pub(super) async fn list(c: &mut Client, json: bool, mine: bool) -> Result<ExitCode> {
    let leases = c
        .list_leases(pb::ListLeasesRequest { mine })
        .await?
        .into_inner()
        .leases
        .into_iter()
        .map(Lease::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if json {
        render::json(&leases);
        return Ok(ExitCode::Passed);
    }
    if leases.is_empty() {
        render::out(if mine {
            "you hold no leases"
        } else {
            "no leases"
        });
        return Ok(ExitCode::Passed);
    }
    let rows = leases
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.rig.clone(),
                l.holder.clone(),
                match l.kind {
                    nvfarm_model::farm::LeaseKind::Reservation => "reservation".to_string(),
                    nvfarm_model::farm::LeaseKind::Job => "job".to_string(),
                },
                l.job_id.clone().unwrap_or_else(|| "-".into()),
                rfc3339(l.granted_ms),
                if l.expires_ms == 0 {
                    "while its job runs".into()
                } else {
                    rfc3339(l.expires_ms)
                },
            ]
        })
        .collect();
    render::table(
        &["LEASE", "RIG", "HOLDER", "KIND", "JOB", "GRANTED", "ENDS"],
        rows,
    );
    Ok(ExitCode::Passed)
}
