//! A running job's progress on its way to the controller, batched: the runner reports every phase change, log
//! line and finished step as it happens, and one task merges them into a [`JobProgress`] message at most every
//! [`FLUSH_EVERY`] (sooner once a batch reaches [`MAX_BATCH_BYTES`]). So a 10,000-step plan costs the controller
//! a few messages a second, not one per step, heartbeats never queue behind a flood, and no message comes near
//! the transport's size limit.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use nvfarm_model::farm::JobState;
use nvfarm_model::link::{FromAgent, JobProgress};
use nvfarm_model::{LogLine, StepReport};

/// How often a batch goes out while there is something to send.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// A batch goes out early once it holds this much (log lines are at most [`crate::lines::MAX_LINE`] each).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// What the runner reports.
#[derive(Debug)]
pub enum Event {
    /// The job is flashing or testing.
    Phase(JobState),
    /// A log line.
    Line(LogLine),
    /// A step ended.
    Step(StepReport),
}

/// Where a job's events go; dropping every sender flushes what is left and ends the batcher.
pub type Events = mpsc::UnboundedSender<Event>;

/// Starts batching job `job_id`'s events into `outbox`. Await the handle after dropping the sender: then every
/// event has been sent, ahead of anything sent to `outbox` afterwards (the job's result).
pub fn batch(
    outbox: mpsc::UnboundedSender<FromAgent>,
    job_id: String,
    fencing_token: u64,
) -> (Events, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut b = Batch::new(job_id, fencing_token);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        if b.add(ev) {
                            b.flush(&outbox);
                        }
                    }
                    None => {
                        b.flush(&outbox);
                        return;
                    }
                },
                _ = tick.tick() => b.flush(&outbox),
            }
        }
    });
    (tx, task)
}

/// The batch being filled.
#[derive(Debug)]
struct Batch {
    pending: JobProgress,
    bytes: usize,
    /// The phase last sent.
    sent_phase: Option<JobState>,
}

impl Batch {
    fn new(job_id: String, fencing_token: u64) -> Self {
        Batch {
            pending: JobProgress {
                job_id,
                fencing_token,
                ..JobProgress::default()
            },
            bytes: 0,
            sent_phase: None,
        }
    }

    /// Adds an event; `true` when the batch is full and should go now.
    fn add(&mut self, ev: Event) -> bool {
        match ev {
            Event::Phase(p) => self.pending.phase = Some(p),
            Event::Line(l) => {
                self.bytes += l.text.len() + 16;
                self.pending.lines.push(l);
            }
            Event::Step(s) => {
                self.bytes += s.name.len()
                    + s.kind.len()
                    + s.message.len()
                    + 64
                    + s.metrics.keys().map(|k| k.len() + 16).sum::<usize>();
                self.pending.steps.push(s);
            }
        }
        self.bytes >= MAX_BATCH_BYTES
    }

    /// Sends what is pending, if anything changed.
    fn flush(&mut self, outbox: &mpsc::UnboundedSender<FromAgent>) {
        let phase_changed = self.pending.phase.is_some() && self.pending.phase != self.sent_phase;
        if self.pending.lines.is_empty() && self.pending.steps.is_empty() && !phase_changed {
            return;
        }
        let msg = JobProgress {
            job_id: self.pending.job_id.clone(),
            fencing_token: self.pending.fencing_token,
            phase: self.pending.phase,
            lines: std::mem::take(&mut self.pending.lines),
            steps: std::mem::take(&mut self.pending.steps),
        };
        self.sent_phase = self.pending.phase;
        self.bytes = 0;
        let _ = outbox.send(FromAgent::Progress(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::Outcome;

    fn step(n: u32) -> StepReport {
        StepReport {
            number: n,
            name: format!("{n}-smart"),
            kind: "smart".into(),
            outcome: Outcome::Passed,
            ..StepReport::default()
        }
    }

    #[tokio::test]
    async fn ten_thousand_steps_go_out_in_a_few_batches_in_order_before_the_end() {
        let (outbox, mut rx) = mpsc::unbounded_channel();
        let (events, task) = batch(outbox, "job-1".into(), 7);
        events.send(Event::Phase(JobState::Testing)).unwrap();
        for n in 1..=10_000 {
            events
                .send(Event::Line(LogLine {
                    step: n,
                    text: format!("== step {n}"),
                }))
                .unwrap();
            events.send(Event::Step(step(n))).unwrap();
        }
        drop(events);
        task.await.unwrap();
        let mut msgs = vec![];
        while let Ok(FromAgent::Progress(p)) = rx.try_recv() {
            msgs.push(p);
        }
        assert!(
            !msgs.is_empty() && msgs.len() < 100,
            "{} messages",
            msgs.len()
        );
        let steps: Vec<u32> = msgs
            .iter()
            .flat_map(|m| m.steps.iter().map(|s| s.number))
            .collect();
        assert_eq!(steps, (1..=10_000).collect::<Vec<_>>());
        assert_eq!(msgs.iter().map(|m| m.lines.len()).sum::<usize>(), 10_000);
        assert_eq!(msgs[0].phase, Some(JobState::Testing));
        assert!(msgs.iter().all(|m| m.fencing_token == 7));
    }

    #[tokio::test]
    async fn a_full_batch_goes_out_at_once_and_stays_under_the_limit() {
        let (outbox, mut rx) = mpsc::unbounded_channel();
        let (events, task) = batch(outbox, "job-1".into(), 1);
        let line = "x".repeat(crate::lines::MAX_LINE);
        for _ in 0..200 {
            events
                .send(Event::Line(LogLine {
                    step: 1,
                    text: line.clone(),
                }))
                .unwrap();
        }
        drop(events);
        task.await.unwrap();
        let mut sizes = vec![];
        while let Ok(FromAgent::Progress(p)) = rx.try_recv() {
            sizes.push(p.lines.iter().map(|l| l.text.len()).sum::<usize>());
        }
        // 1.6 MB of lines: split into batches under the limit, not one message.
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert!(
            sizes
                .iter()
                .all(|b| *b <= MAX_BATCH_BYTES + crate::lines::MAX_LINE),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 200 * crate::lines::MAX_LINE);
    }
}
