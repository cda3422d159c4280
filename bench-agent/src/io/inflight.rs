//! Knowing what the kernel still owns, and getting it back.
//!
//! Every operation queued on a ring points into one of the ring's buffers; until its completion is reaped the
//! kernel may still write into that buffer. [`Inflight`] tracks which slots are out, and [`drain`] cancels them
//! and reaps their completions. The rings call it on every exit path of a job and again in their `Drop`, so no
//! buffer is freed while an operation that uses it is in flight; a ring that cannot get every operation back in
//! time keeps (leaks) its buffers rather than freeing memory the kernel may write.

use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// `user_data` of the cancel requests themselves (never a slot number).
pub(crate) const CANCEL_TAG: u64 = u64::MAX;

/// How long a ring waits for its operations to come back when it is dropped.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Which slots have an operation in the kernel.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    slots: Vec<bool>,
    count: usize,
}

impl Inflight {
    pub fn new(depth: usize) -> Self {
        Inflight {
            slots: vec![false; depth],
            count: 0,
        }
    }
    /// Slot `slot`'s operation was queued.
    pub fn start(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if !*s {
                *s = true;
                self.count += 1;
            }
        }
    }
    /// Slot `slot`'s operation completed.
    pub fn done(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if *s {
                *s = false;
                self.count -= 1;
            }
        }
    }
    pub fn count(&self) -> usize {
        self.count
    }
    fn out(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|&i| self.slots[i]).collect()
    }
}

/// Cancels every operation in flight on `ring` and reaps completions until none is left or `within` passes.
/// `user_data` reads a completion's tag. Returns how many are still in flight (0: every buffer is free again).
pub(crate) fn drain<S, C>(
    ring: &mut IoUring<S, C>,
    inflight: &mut Inflight,
    user_data: fn(&C) -> u64,
    within: Duration,
) -> usize
where
    S: squeue::EntryMarker + From<squeue::Entry>,
    C: cqueue::EntryMarker,
{
    if inflight.count() == 0 {
        return 0;
    }
    let deadline = Instant::now() + within;
    for slot in inflight.out() {
        let cancel: S = opcode::AsyncCancel::new(slot as u64)
            .build()
            .user_data(CANCEL_TAG)
            .into();
        loop {
            // SAFETY: a cancel request carries no buffer or file reference: only the slot number to match.
            if unsafe { ring.submission().push(&cancel) }.is_ok() {
                break;
            }
            if ring.submit().is_err() {
                break;
            }
        }
    }
    while inflight.count() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ts = types::Timespec::from(left.min(Duration::from_millis(100)));
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // A kernel without timed waits: wait for one completion at a time.
                let _ = ring.submit_and_wait(1);
            }
            Err(_) => break,
        }
        for cqe in ring.completion() {
            let ud = user_data(&cqe);
            if ud != CANCEL_TAG {
                inflight.done(ud as usize);
            }
        }
    }
    inflight.count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_slot_once() {
        let mut f = Inflight::new(4);
        f.start(1);
        f.start(1);
        f.start(3);
        assert_eq!(f.count(), 2);
        assert_eq!(f.out(), vec![1, 3]);
        f.done(1);
        f.done(1);
        f.done(9);
        assert_eq!(f.count(), 1);
    }
}
