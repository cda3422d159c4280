//! The job loop both backends share: keep `iodepth` commands in flight over the job's region, time every
//! completion, check reads of blocks written in this run, and read back every written block at the end.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvfarm_model::io::Rw;

use super::histogram::Histogram;
use super::inflight::DRAIN_LIMIT;
use super::pattern;
use super::report::{DirStats, FirstMismatch, JobReport, VerifyReport};
use super::spec::{Drained, IoError, IoFailure, IoSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// A ring with `depth` slots, each owning one buffer of `bs` bytes. Implemented by both backends.
pub(crate) trait SlotRing {
    fn depth(&self) -> usize;
    fn buffer(&mut self, slot: usize) -> &mut [u8];
    /// Queues `op` at byte `offset` using slot `slot`'s buffer (not yet submitted).
    fn queue(&mut self, slot: usize, op: Op, offset: u64) -> Result<(), IoError>;
    /// Submits what is queued and waits for at least `want` completions.
    fn submit_and_wait(&mut self, want: usize) -> Result<(), IoError>;
    /// Appends every available completion as (slot, result).
    fn reap(&mut self, out: &mut Vec<(usize, Result<(), IoFailure>)>);
    /// Operations queued and not yet reaped (the kernel may still use their buffers).
    fn in_flight(&self) -> usize;
    /// Cancels everything in flight and reaps it, waiting at most `within`; returns how many are left.
    fn drain(&mut self, within: Duration) -> usize;
}

/// The part of the target one job works on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region {
    pub start: u64,
    pub len: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

struct JobLoop {
    job: u32,
    spec: IoSpec,
    region: Region,
    blocks: u64,
    rng: Rng,
    seq_next: u64,
    issued_bytes: u64,
    deadline: Option<Instant>,
    /// Generation last written to each block (0 = not written in this run); only with verify.
    generations: Vec<u32>,
    inflight_blocks: HashSet<u64>,
    read_h: Histogram,
    write_h: Histogram,
    read_bytes: u64,
    write_bytes: u64,
    verify: VerifyReport,
}

impl JobLoop {
    fn done_issuing(&self) -> bool {
        match self.deadline {
            Some(d) => Instant::now() >= d,
            None => self
                .spec
                .options
                .size
                .is_some_and(|s| self.issued_bytes >= s),
        }
    }

    /// Picks the next operation and block, avoiding blocks with I/O in flight (so verify never races itself).
    fn next(&mut self) -> Option<(Op, u64)> {
        let op = match self.spec.options.rw {
            Rw::Read | Rw::Randread => Op::Read,
            Rw::Write | Rw::Randwrite => Op::Write,
            Rw::Randrw => {
                if self.rng.next() % 100 < self.spec.options.rwmixread as u64 {
                    Op::Read
                } else {
                    Op::Write
                }
            }
        };
        for _ in 0..64 {
            let block = if self.spec.options.rw.is_random() {
                self.rng.next() % self.blocks
            } else {
                let b = self.seq_next;
                self.seq_next = (self.seq_next + 1) % self.blocks;
                b
            };
            if !self.inflight_blocks.contains(&block) {
                return Some((op, block));
            }
        }
        None
    }

    fn offset(&self, block: u64) -> u64 {
        self.region.start + block * self.spec.options.bs
    }

    fn check_read(&mut self, buf: &[u8], block: u64) {
        let written = self.generations.get(block as usize).copied().unwrap_or(0);
        let expected = match self.spec.options.rw {
            // A read-only verify run checks data an earlier run wrote.
            Rw::Read | Rw::Randread => None,
            _ if written == 0 => return,
            _ => Some(written),
        };
        self.verify.blocks_checked += 1;
        let offset = self.offset(block);
        let seed = (expected.is_none() && self.spec.check_seed).then_some(self.spec.seed);
        if let Err(m) = pattern::check(buf, offset, expected, seed) {
            self.verify.mismatches += 1;
            if self.verify.first.is_none() {
                self.verify.first = Some(FirstMismatch {
                    job: self.job,
                    offset,
                    reason: m.to_string(),
                });
            }
        }
    }
}

/// What one job produced: its report plus the raw histograms and verify results for merging.
#[derive(Debug)]
pub(crate) struct JobRun {
    pub report: JobReport,
    pub read: Histogram,
    pub write: Histogram,
    pub verify: VerifyReport,
}

/// Runs one job on `ring` over `region`. Whatever way it ends, nothing is left in flight when it returns: on an
/// error or a cancel the operations still out are cancelled and reaped (and the error says how many).
pub(crate) fn run_job(
    ring: &mut dyn SlotRing,
    spec: &IoSpec,
    job: u32,
    region: Region,
) -> Result<JobRun, IoError> {
    let result = run_job_inner(ring, spec, job, region);
    let in_flight = ring.in_flight();
    if in_flight == 0 {
        return result;
    }
    let left = ring.drain(DRAIN_LIMIT);
    let drained = Drained { in_flight, left };
    match result {
        Err(IoError::Io {
            job,
            op,
            offset,
            len,
            error,
            ..
        }) => Err(IoError::Io {
            job,
            op,
            offset,
            len,
            error,
            drained,
        }),
        Err(IoError::Cancelled { job, .. }) => Err(IoError::Cancelled { job, drained }),
        other => other,
    }
}

/// Whether the run was asked to stop.
fn cancelled(spec: &IoSpec) -> bool {
    spec.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

/// The failure a completion is turned into by fault injection, if it is the one.
fn injected(spec: &IoSpec, completions: u64) -> Option<IoFailure> {
    (spec.inject_error_at == Some(completions)).then_some(IoFailure::Errno(libc::EIO))
}

fn run_job_inner(
    ring: &mut dyn SlotRing,
    spec: &IoSpec,
    job: u32,
    region: Region,
) -> Result<JobRun, IoError> {
    let blocks = region.len / spec.options.bs;
    if blocks == 0 {
        return Err(IoError::Target {
            path: spec.target.clone(),
            reason: format!(
                "job {job}'s region of {} bytes holds no {}-byte block",
                region.len, spec.options.bs
            ),
        });
    }
    let mut st = JobLoop {
        job,
        spec: spec.clone(),
        region,
        blocks,
        rng: Rng(spec.seed ^ (job as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        seq_next: 0,
        issued_bytes: 0,
        deadline: spec.options.runtime.map(|r| Instant::now() + r),
        generations: if spec.options.verify {
            vec![0; blocks as usize]
        } else {
            vec![]
        },
        inflight_blocks: HashSet::new(),
        read_h: Histogram::default(),
        write_h: Histogram::default(),
        read_bytes: 0,
        write_bytes: 0,
        verify: VerifyReport::default(),
    };
    let depth = ring.depth();
    let mut slots: Vec<Option<(Op, u64, Instant)>> = vec![None; depth];
    let mut done = Vec::with_capacity(depth);
    let started = Instant::now();
    let mut inflight = 0usize;
    let mut generation = 0u32;
    let mut completions = 0u64;
    loop {
        if cancelled(spec) {
            return Err(IoError::Cancelled {
                job,
                drained: Drained::default(),
            });
        }
        // Fill every free slot.
        if !st.done_issuing() {
            for (slot, entry) in slots.iter_mut().enumerate() {
                if entry.is_some() || st.done_issuing() {
                    continue;
                }
                let Some((op, block)) = st.next() else { break };
                let offset = st.offset(block);
                if op == Op::Write && spec.options.verify {
                    generation = generation.wrapping_add(1).max(1);
                    st.generations[block as usize] = generation;
                    pattern::fill(ring.buffer(slot), offset, spec.seed, generation);
                }
                ring.queue(slot, op, offset)?;
                st.inflight_blocks.insert(block);
                st.issued_bytes += spec.options.bs;
                *entry = Some((op, block, Instant::now()));
                inflight += 1;
            }
        }
        if inflight == 0 {
            break;
        }
        ring.submit_and_wait(1)?;
        done.clear();
        ring.reap(&mut done);
        let now = Instant::now();
        for &(slot, ref result) in &done {
            let Some((op, block, t0)) = slots.get_mut(slot).and_then(Option::take) else {
                continue; // not one of ours
            };
            inflight -= 1;
            completions += 1;
            st.inflight_blocks.remove(&block);
            let result = match injected(spec, completions) {
                Some(f) => Err(f),
                None => result.clone(),
            };
            if let Err(error) = result {
                return Err(IoError::Io {
                    job,
                    op: op.name(),
                    offset: st.offset(block),
                    len: spec.options.bs,
                    error,
                    drained: Drained::default(),
                });
            }
            let ns = now.duration_since(t0).as_nanos() as u64;
            match op {
                Op::Read => {
                    st.read_h.record(ns);
                    st.read_bytes += spec.options.bs;
                    if spec.options.verify {
                        st.check_read(ring.buffer(slot), block);
                    }
                }
                Op::Write => {
                    st.write_h.record(ns);
                    st.write_bytes += spec.options.bs;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if spec.options.verify && spec.options.rw.writes() {
        verify_pass(ring, &mut st, &mut completions)?;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let dir = |h: &Histogram, bytes: u64| DirStats {
        ios: h.count(),
        bytes,
        iops: h.count() as f64 / secs,
        bw_bytes_per_sec: bytes as f64 / secs,
        lat: h.summary(),
    };
    let report = JobReport {
        job,
        elapsed_ms: elapsed.as_millis() as u64,
        read: dir(&st.read_h, st.read_bytes),
        write: dir(&st.write_h, st.write_bytes),
    };
    Ok(JobRun {
        report,
        read: st.read_h,
        write: st.write_h,
        verify: st.verify,
    })
}

/// Reads back every block written in this run and checks it.
fn verify_pass(
    ring: &mut dyn SlotRing,
    st: &mut JobLoop,
    completions: &mut u64,
) -> Result<(), IoError> {
    let written: Vec<u64> = (0..st.blocks)
        .filter(|&b| st.generations[b as usize] != 0)
        .collect();
    let depth = ring.depth();
    let mut next = 0usize;
    let mut slots: Vec<Option<u64>> = vec![None; depth];
    let mut inflight = 0;
    let mut done = Vec::with_capacity(depth);
    loop {
        if cancelled(&st.spec) {
            return Err(IoError::Cancelled {
                job: st.job,
                drained: Drained::default(),
            });
        }
        for (slot, s) in slots.iter_mut().enumerate() {
            if s.is_none() && next < written.len() {
                let block = written[next];
                next += 1;
                ring.queue(slot, Op::Read, st.offset(block))?;
                *s = Some(block);
                inflight += 1;
            }
        }
        if inflight == 0 {
            return Ok(());
        }
        ring.submit_and_wait(1)?;
        done.clear();
        ring.reap(&mut done);
        for &(slot, ref result) in &done {
            let Some(block) = slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            inflight -= 1;
            *completions += 1;
            let result = match injected(&st.spec, *completions) {
                Some(f) => Err(f),
                None => result.clone(),
            };
            if let Err(error) = result {
                return Err(IoError::Io {
                    job: st.job,
                    op: "verify read",
                    offset: st.offset(block),
                    len: st.spec.options.bs,
                    error,
                    drained: Drained::default(),
                });
            }
            st.check_read(ring.buffer(slot), block);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use nix::sys::stat::Mode;
    use nvfarm_model::io::{IoOptions, Rw};

    use super::*;
    use crate::io::uring::FileRing;
    use crate::io::{Engine, IoSpec};

    /// Reads on an empty FIFO stay in the kernel until data comes: the I/Os in flight when another one fails.
    fn fifo_spec(dir: &std::path::Path) -> IoSpec {
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
        let options = IoOptions {
            rwmixread: 100, // randrw opens read-write, so opening the FIFO does not wait for a writer
            runtime: Some(Duration::from_secs(60)),
            size: Some(1 << 20),
            ..IoOptions::new(Rw::Randrw, 4096, 32)
        };
        IoSpec::new(&fifo, options, Engine::Uring)
    }

    fn feed(path: std::path::PathBuf, blocks: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            w.write_all(&vec![0u8; blocks * 4096]).unwrap();
        })
    }

    #[test]
    fn a_failed_io_cancels_and_reaps_every_io_in_flight_before_returning() {
        let t = tempfile::tempdir().unwrap();
        let mut spec = fifo_spec(t.path());
        spec.inject_error_at = Some(2);
        let mut ring = FileRing::open(&spec).unwrap();
        let feeder = feed(spec.target.clone(), 3);
        let err = run_job(
            &mut ring,
            &spec,
            0,
            Region {
                start: 0,
                len: 1 << 20,
            },
        )
        .unwrap_err();
        feeder.join().unwrap();
        assert_eq!(
            ring.in_flight(),
            0,
            "nothing may be left in the kernel: {err}"
        );
        match &err {
            IoError::Io { error, drained, .. } => {
                assert_eq!(*error, IoFailure::Errno(libc::EIO));
                assert!(drained.in_flight >= 20, "{err}");
                assert_eq!(drained.left, 0, "{err}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("cancelled and reaped"), "{err}");
    }

    #[test]
    fn a_cancel_stops_the_job_and_reaps_what_is_in_flight() {
        let t = tempfile::tempdir().unwrap();
        let mut spec = fifo_spec(t.path());
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        spec.cancel = Some(cancel.clone());
        let mut ring = FileRing::open(&spec).unwrap();
        // Two blocks arrive; then the job is cancelled while the other reads wait for data that never comes;
        // one more block wakes the job loop, which is waiting for a completion.
        let feeder = feed(spec.target.clone(), 2);
        let path = spec.target.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            w.write_all(&[0u8; 4096]).unwrap();
        });
        let err = run_job(
            &mut ring,
            &spec,
            0,
            Region {
                start: 0,
                len: 1 << 20,
            },
        )
        .unwrap_err();
        feeder.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(ring.in_flight(), 0, "{err}");
        match &err {
            IoError::Cancelled { drained, .. } => {
                assert!(drained.in_flight >= 20, "{err}");
                assert_eq!(drained.left, 0, "{err}");
            }
            other => panic!("{other}"),
        }
    }
}
