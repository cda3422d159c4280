//! Notifications: the config's webhooks told when a sweep finishes (and whether it has new failures or io
//! regressions, against the previous sweep of its name and against the build that ran before it on each drive
//! model), when a rig is quarantined and when an agent is lost.
//!
//! The notifier follows the farm's committed changes ([`Farm::subscribe`]): what it reports is already durable.
//! It never takes part in a change: it looks at the farm after one (coalescing bursts), compares with what it
//! saw before, and hands each notice to every webhook that wants it. Each webhook has its own bounded queue and
//! delivery task ([`deliver`]), so a slow or dead receiver delays only its own notices and never the scheduler;
//! a queue that is full drops the notice with a warning. Notices are not stored: those still queued when the
//! controller stops are lost (the farm's records say what happened either way).

mod deliver;
mod notice;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use nvfarm_model::farm::{Change, RigState};
use nvfarm_model::time::now_ms;

use crate::config::{Webhook, WebhookEvent};
use crate::core::{Farm, FarmEvent};

pub use notice::Notice;

/// How long the notifier waits for a burst of changes to end before it looks.
const COALESCE: Duration = Duration::from_millis(200);
/// Notices one webhook's queue holds.
const QUEUE: usize = 256;
/// The regression threshold sweep notices use (the sweep report's default).
const THRESHOLD_PCT: f64 = 25.0;

/// What the notifier saw last: each rig's state, agent and reason; which sweeps were done.
#[derive(Debug, Default)]
struct Seen {
    rigs: BTreeMap<String, (RigState, String, String)>,
    sweeps_done: BTreeSet<String>,
    sweeps: BTreeSet<String>,
}

impl Seen {
    async fn take(farm: &Farm) -> Seen {
        let rigs = farm
            .rigs(&BTreeMap::new())
            .await
            .into_iter()
            .map(|r| {
                (
                    r.rig.name.clone(),
                    (r.rig.state, r.rig.agent.clone(), r.rig.reason.clone()),
                )
            })
            .collect();
        let sweeps = farm.sweeps_named(None).await;
        Seen {
            rigs,
            sweeps_done: sweeps
                .iter()
                .filter(|(_, d)| *d)
                .map(|(s, _)| s.id.clone())
                .collect(),
            sweeps: sweeps.iter().map(|(s, _)| s.id.clone()).collect(),
        }
    }
}

/// Runs until the farm stops: follows its changes and sends notices to `hooks`.
pub async fn run(farm: Arc<Farm>, hooks: Vec<Webhook>) {
    if hooks.is_empty() {
        return;
    }
    let base = farm
        .config()
        .dashboard_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", farm.config().http));
    let queues: Vec<(Webhook, tokio::sync::mpsc::Sender<Notice>)> = hooks
        .into_iter()
        .map(|h| {
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            tokio::spawn(deliver::run(h.clone(), base.clone(), rx));
            (h, tx)
        })
        .collect();
    let mut rx = farm.subscribe();
    let stopping = farm.stopping();
    tokio::pin!(stopping);
    let started = now_ms();
    let mut seen = Seen::take(&farm).await;
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                // Only rigs and jobs change what notices are about; log lines and requests (a running job's
                // log streams many) are not worth a look.
                Ok(FarmEvent::Rig(_) | FarmEvent::Job(_)) | Err(RecvError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(RecvError::Closed) => return,
            },
            _ = &mut stopping => return,
        }
        // Let the burst end, then look once.
        tokio::time::sleep(COALESCE).await;
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            rx.try_recv()
        {}
        let now = Seen::take(&farm).await;
        let mut notices = rig_notices(&seen, &now);
        for id in now.sweeps_done.difference(&seen.sweeps_done) {
            // A sweep that started and finished between two looks is new too, if it started after us.
            if !seen.sweeps.contains(id) && !started_after(&farm, id, started).await {
                continue;
            }
            match farm.sweep_report(id, THRESHOLD_PCT).await {
                Ok(r) => {
                    notices.extend(sweep_notices(&r));
                    // Against the previous build too, not only the previous sweep of the same name.
                    let build = r
                        .jobs
                        .iter()
                        .map(|j| j.artifact_sha256.clone())
                        .find(|s| !s.is_empty());
                    if let Some(build) = build {
                        match farm.build_regressions(&build).await {
                            Ok(regressions) if !regressions.is_empty() => {
                                notices.push(Notice::BuildRegression {
                                    report: Box::new(r.clone()),
                                    build,
                                    regressions,
                                })
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(sweep = %id, "cannot compare the sweep's build with the one before it: {e}")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(sweep = %id, "cannot report the finished sweep to webhooks: {e}")
                }
            }
        }
        seen = now;
        for n in notices {
            for (hook, tx) in &queues {
                if !hook.events.contains(&n.event()) {
                    continue;
                }
                if let Err(e) = tx.try_send(n.clone()) {
                    tracing::warn!(url = %hook.url, event = n.event().as_str(), "webhook notice dropped: {e} (its receiver is too slow)");
                }
            }
        }
    }
}

async fn started_after(farm: &Farm, sweep: &str, t: u64) -> bool {
    farm.sweep(sweep)
        .await
        .is_ok_and(|(s, _)| s.created_ms >= t)
}

/// Rigs newly quarantined, and agents whose rigs went offline.
fn rig_notices(before: &Seen, now: &Seen) -> Vec<Notice> {
    let mut out = vec![];
    let mut lost: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (name, (state, agent, reason)) in &now.rigs {
        let was = before.rigs.get(name).map(|(s, _, _)| *s);
        if was.is_none() || was == Some(*state) {
            continue;
        }
        match state {
            RigState::Quarantined => out.push(Notice::RigQuarantined {
                rig: name.clone(),
                agent: agent.clone(),
                reason: reason.clone(),
            }),
            RigState::Offline => lost
                .entry(agent.clone())
                .or_default()
                .push((name.clone(), reason.clone())),
            _ => {}
        }
    }
    for (agent, rigs) in lost {
        out.push(Notice::AgentLost { agent, rigs });
    }
    out
}

/// A finished sweep's notices: finished, and new failures and regressions if it has them.
fn sweep_notices(r: &nvfarm_model::farm::SweepReport) -> Vec<Notice> {
    let changes: Vec<_> = r
        .cells
        .iter()
        .filter(|c| c.change.is_some())
        .cloned()
        .collect();
    let mut out = vec![Notice::SweepFinished {
        report: Box::new(r.clone()),
        changes: changes.clone(),
    }];
    for (event, change) in [
        (WebhookEvent::NewFailure, Change::NewFailure),
        (WebhookEvent::Regression, Change::Regressed),
    ] {
        let cells: Vec<_> = changes
            .iter()
            .filter(|c| c.change == Some(change))
            .cloned()
            .collect();
        if cells.is_empty() {
            continue;
        }
        out.push(match event {
            WebhookEvent::NewFailure => Notice::NewFailure {
                report: Box::new(r.clone()),
                cells,
            },
            _ => Notice::Regression {
                report: Box::new(r.clone()),
                cells,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(rigs: &[(&str, RigState)]) -> Seen {
        Seen {
            rigs: rigs
                .iter()
                .map(|(n, s)| (n.to_string(), (*s, "bench".into(), format!("{n} reason"))))
                .collect(),
            ..Seen::default()
        }
    }

    #[test]
    fn a_rig_newly_quarantined_or_offline_is_one_notice_and_a_rig_first_seen_is_none() {
        let before = seen(&[
            ("a", RigState::Idle),
            ("b", RigState::Leased),
            ("c", RigState::Quarantined),
        ]);
        let now = seen(&[
            ("a", RigState::Quarantined),
            ("b", RigState::Offline),
            ("c", RigState::Quarantined),
            ("d", RigState::Offline),
        ]);
        let n = rig_notices(&before, &now);
        let events: Vec<_> = n.iter().map(|n| n.event()).collect();
        assert_eq!(
            events,
            vec![WebhookEvent::RigQuarantined, WebhookEvent::AgentLost]
        );
        match &n[1] {
            Notice::AgentLost { agent, rigs } => {
                assert_eq!(agent, "bench");
                assert_eq!(rigs, &vec![("b".to_string(), "b reason".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(rig_notices(&now, &now).is_empty());
    }
}
