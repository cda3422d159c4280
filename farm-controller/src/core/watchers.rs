//! Telling waiting clients where their request stands, only when that changes. Each watched request has one
//! channel holding its latest status; after every commit the farm works out which watched requests the change
//! could have moved (the request itself, a rig it could take, or a competing request ranked before it) and
//! recomputes only those, and a channel wakes its watchers only when the status differs from what it holds.
//! So a change to rigs nobody is waiting for wakes nobody, and an unrelated reserve costs no watcher anything.

use std::cmp::Reverse;
use std::time::Duration;

use nvfarm_model::farm::{Request, Rig, Selector};
use tokio::sync::watch;

use super::queries::{request_status, RequestStatus};
use super::scheduler::effective_rank;
use super::state::State;
use crate::store::Tx;

/// The channel of one watched request.
pub(crate) type StatusSender = watch::Sender<RequestStatus>;

/// Where a request ranks in service order (smaller first).
type Rank = (Reverse<u32>, u64, String);

/// What a change touched, taken before it is committed (a request it removed is looked up as it was).
#[derive(Debug, Default)]
pub(crate) struct Touched {
    rigs: Vec<String>,
    /// Requests written or removed: id, selector, and where it ranked in service order.
    requests: Vec<(String, Selector, Rank)>,
}

fn key(r: &Request, now: u64, aging: Duration) -> Rank {
    (
        Reverse(effective_rank(r, now, aging)),
        r.created_ms,
        r.id.clone(),
    )
}

/// Whether two selectors could share a rig: one names a rig the other matches, or their labels do not
/// contradict each other (an overestimate for two label selectors; a needless recompute changes nothing).
fn overlap(rigs: &super::scheduler::Records<Rig>, a: &Selector, b: &Selector) -> bool {
    let named = |x: &Selector, y: &Selector| {
        x.rig
            .as_ref()
            .map(|n| rigs.get(n).is_some_and(|r| x.matches(r) && y.matches(r)))
    };
    if let Some(v) = named(a, b) {
        return v;
    }
    if let Some(v) = named(b, a) {
        return v;
    }
    a.labels
        .iter()
        .all(|(k, v)| b.labels.get(k).is_none_or(|w| w == v))
}

impl Touched {
    /// What `tx` touches in `st` (call before committing: removed requests are still in the mark).
    pub fn of(st: &State, tx: &Tx, now: u64, aging: Duration) -> Touched {
        if st.watchers.is_empty() {
            return Touched::default();
        }
        let mut t = Touched {
            rigs: tx.rigs_written().to_vec(),
            requests: vec![],
        };
        t.rigs.sort();
        t.rigs.dedup();
        let mut ids = tx.requests_touched().to_vec();
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Some(r) = st.request_now_or_before(&id) {
                t.requests
                    .push((id, r.selector.clone(), key(r, now, aging)));
            }
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.rigs.is_empty() && self.requests.is_empty()
    }
}

/// The new status of every watched request `touched` could have moved, to send once the change is durable
/// (a channel wakes its watchers only if the status differs from what it holds). Channels nobody listens to
/// any more are dropped.
pub(crate) fn notify(
    st: &mut State,
    touched: &Touched,
    now: u64,
    aging: Duration,
) -> Vec<(StatusSender, RequestStatus)> {
    st.watchers.retain(|_, tx| tx.receiver_count() > 0);
    if touched.is_empty() || st.watchers.is_empty() {
        return vec![];
    }
    let rigs: Vec<&Rig> = touched.rigs.iter().filter_map(|n| st.rigs.get(n)).collect();
    let mut moved = vec![];
    for id in st.watchers.keys() {
        let affected = match st.requests.get(id) {
            // Granted or ended: only its own change tells.
            None => touched.requests.iter().any(|(t, _, _)| t == id),
            Some(me) => {
                let mine = key(me, now, aging);
                touched.requests.iter().any(|(t, _, _)| t == id)
                    || rigs.iter().any(|r| me.selector.matches(r))
                    || touched
                        .requests
                        .iter()
                        .any(|(_, sel, k)| *k < mine && overlap(&st.rigs, sel, &me.selector))
            }
        };
        if affected {
            moved.push(id.clone());
        }
    }
    moved
        .iter()
        .filter_map(|id| status(st, id, now, aging))
        .collect()
}

/// A receiver of request `id`'s status, creating its channel with the status now.
pub(crate) fn subscribe(
    st: &mut State,
    id: &str,
    now: u64,
    aging: Duration,
) -> watch::Receiver<RequestStatus> {
    if let Some(tx) = st.watchers.get(id) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(request_status(st, id, now, aging));
    st.watchers.insert(id.to_string(), tx);
    rx
}

/// Request `id`'s status now, with the channel to send it on (time alone can move it: a CI request ages past
/// others); `None` if nobody watches it.
pub(crate) fn status(
    st: &State,
    id: &str,
    now: u64,
    aging: Duration,
) -> Option<(StatusSender, RequestStatus)> {
    let tx = st.watchers.get(id)?;
    Some((tx.clone(), request_status(st, id, now, aging)))
}

/// Sends a status, waking the channel's watchers only when it differs from what they were last told.
pub(crate) fn send(tx: &StatusSender, status: RequestStatus) {
    tx.send_if_modified(|held| {
        let changed = *held != status;
        if changed {
            *held = status;
        }
        changed
    });
}
