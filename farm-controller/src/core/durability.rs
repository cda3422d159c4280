//! Group commit: when a change is durable, and what happens once it is. A change is applied to the store
//! under the state lock and numbered; the lock is then let go and the change waits for a flush that covers
//! it. One waiter at a time flushes (the leader), and its flush covers every change applied before it began, so
//! concurrent clients share flushes instead of queueing behind one each. What a change sends (agent messages,
//! events, watcher updates) goes out in commit order, and only once the change is on disk. A flush that fails
//! fails every change it covered: nothing of theirs is sent, their callers get the error, memory goes back to
//! the records as they were before the first of them, and the next change reloads from the store.
//!
//! Reads wait too ([`Farm::read`]): what a query answers from memory is on disk before the answer leaves.

use std::collections::VecDeque;

use tokio::sync::watch;

use nvfarm_model::link::ToAgent;

use super::agents::AgentSender;
use super::queries::RequestStatus;
use super::state::State;
use super::watchers::StatusSender;
use super::{Farm, FarmError, FarmEvent};
use crate::store::StoreError;

/// What a committed change sends once it is durable.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    /// Its number, in commit order.
    pub seq: u64,
    /// The records as they were before it: what memory goes back to if its flush fails.
    pub before: Option<super::state::Marked>,
    /// Messages, each with the session it was committed for (a session replaced meanwhile drops it, as a
    /// closed one would).
    pub out: Vec<(AgentSender, ToAgent)>,
    pub events: Vec<FarmEvent>,
    /// New statuses of watched requests.
    pub statuses: Vec<(StatusSender, RequestStatus)>,
}

/// How far the store is known to be on disk.
#[derive(Clone, Debug, Default)]
struct Flushed {
    /// Every change numbered up to here is durable (or was reloaded from the store).
    durable: u64,
    /// Recent failed flushes: the changes numbered in `(after, upto]` failed, and why.
    failures: VecDeque<(u64, u64, String)>,
}

/// How many failed flushes a late waiter can still be told about.
const FAILURES_KEPT: usize = 64;

/// The changes waiting for a flush, and who flushes.
#[derive(Debug)]
pub(crate) struct Durability {
    pending: std::sync::Mutex<VecDeque<Deferred>>,
    status: watch::Sender<Flushed>,
    /// Held by the waiter that is flushing.
    leader: tokio::sync::Mutex<()>,
}

impl Durability {
    pub fn new() -> Self {
        Durability {
            pending: std::sync::Mutex::new(VecDeque::new()),
            status: watch::channel(Flushed::default()).0,
            leader: tokio::sync::Mutex::new(()),
        }
    }

    /// Queues what a change applied as number `d.seq` sends; called under the state lock, so in number
    /// order.
    pub fn defer(&self, d: Deferred) {
        self.pending.lock().expect("pending lock").push_back(d);
    }

    /// Memory holds only what the disk does as of change `seq` (reloaded from the store, or put back after a
    /// failed flush): a read of it waits for nothing.
    pub fn settled_at(&self, seq: u64) {
        self.status.send_modify(|s| s.durable = s.durable.max(seq));
    }

    /// Whether change `seq` has been decided: durable, or failed with its flush.
    pub fn settled(&self, seq: u64) -> bool {
        let s = self.status.borrow();
        s.durable >= seq
            || s.failures
                .iter()
                .any(|(after, upto, _)| seq > *after && seq <= *upto)
    }

    /// The newest change queued.
    fn newest(&self) -> u64 {
        self.pending
            .lock()
            .expect("pending lock")
            .back()
            .map_or(0, |d| d.seq)
    }

    /// Takes the queued changes numbered up to `upto`, in order.
    fn take(&self, upto: u64) -> Vec<Deferred> {
        let mut q = self.pending.lock().expect("pending lock");
        let n = q.iter().take_while(|d| d.seq <= upto).count();
        q.drain(..n).collect()
    }
}

impl Farm {
    /// Waits until change `seq` is on disk, flushing if nobody else is. `Err` if the flush that covered it
    /// failed: then nothing it sends goes out and memory is reloaded from the store.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), FarmError> {
        let mut rx = self.durability.status.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some((_, _, why)) = s
                    .failures
                    .iter()
                    .find(|(after, upto, _)| seq > *after && seq <= *upto)
                {
                    return Err(StoreError::Failed(why.clone()).into());
                }
                if s.durable >= seq {
                    return Ok(());
                }
            }
            match self.durability.leader.try_lock() {
                Ok(lead) => {
                    let lead = Leader {
                        lock: Some(lead),
                        status: &self.durability.status,
                    };
                    self.flush_pending(lead).await
                }
                // Someone is flushing; it publishes when done (a flush that began before `seq` was queued
                // is followed by another).
                Err(_) => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    /// One flush as the leader: everything queued so far becomes durable and is sent, in order, before the
    /// next leader can start (so two flushes never interleave their messages); then waiters are told.
    async fn flush_pending(&self, lead: Leader<'_>) {
        let upto = self.durability.newest();
        match self.store.sync().await {
            Ok(()) => {
                for d in self.durability.take(upto) {
                    self.send(d);
                }
                self.durability.status.send_modify(|s| {
                    s.durable = s.durable.max(upto);
                });
                drop(lead);
            }
            Err(e) => {
                // No change may be applied meanwhile: take the state, put its records back as they were
                // before the first change not on disk, close the store (the next use reopens it from disk) and
                // have the next change reload from it.
                let mut st = self.state.lock().await;
                let upto = st.applied;
                let failed = self.durability.take(upto);
                if let Some(before) = failed.into_iter().find_map(|d| d.before) {
                    st.go_back_to(before);
                }
                st.resync = true;
                st.applied += 1;
                let now = st.applied;
                self.store.close_after_failure(&e);
                drop(st);
                tracing::error!(
                    "flushing the store failed ({e}); the changes it covered failed and memory went back to what the disk holds"
                );
                let why = e.to_string();
                self.durability.status.send_modify(|s| {
                    let after = s.durable;
                    s.failures.push_back((after, upto, why));
                    if s.failures.len() > FAILURES_KEPT {
                        s.failures.pop_front();
                    }
                    s.durable = now;
                });
                drop(lead);
            }
        }
    }

    /// Sends what a durable change produced.
    pub(crate) fn send(&self, d: Deferred) {
        for (tx, msg) in d.out {
            let _ = tx.send(msg);
        }
        for (tx, status) in d.statuses {
            super::watchers::send(&tx, status);
        }
        for e in d.events {
            let _ = self.events.send(e);
        }
    }

    /// A read of the state whose answer is on disk before it is returned: if what it saw was not yet
    /// durable and then failed to be, it reads again from the reloaded state (up to three times; then the
    /// last answer stands, as memory then holds only what the store does).
    pub(crate) async fn read<T>(&self, f: impl Fn(&State) -> T) -> T {
        let mut tries = 0;
        loop {
            let (v, seq) = {
                let st = self.state.lock().await;
                (f(&st), st.applied)
            };
            tries += 1;
            if self.durable(seq).await.is_ok() || tries >= 3 {
                return v;
            }
            // Reload before reading again.
            drop(self.lock().await);
        }
    }
}

/// The flushing waiter's turn. Waiters that found it taken sleep until the status changes, so a leader whose
/// flush is cancelled (its client went away) still wakes them on the way out, and one of them takes over.
struct Leader<'a> {
    lock: Option<tokio::sync::MutexGuard<'a, ()>>,
    status: &'a watch::Sender<Flushed>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Let go first, then wake every waiter: one of them can take the turn at once.
        self.lock.take();
        self.status.send_modify(|_| {});
    }
}
