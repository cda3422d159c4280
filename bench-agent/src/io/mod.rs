//! The io engine behind `bench-agent io` and the `io` plan step.
//!
//! fio's vocabulary (`rw`, `bs`, `iodepth`, `runtime`, `size`, `direct`, `verify`, `numjobs`, `rwmixread`) over
//! two io_uring backends, one ring per job thread:
//! - [`uring`]: reads and writes on a file or block device, with registered buffers and files, optional O_DIRECT,
//!   and single-issuer / deferred-task-run rings where the kernel has them;
//! - [`uring_cmd`]: NVMe Read/Write commands through `IORING_OP_URING_CMD` on a generic char device
//!   (`/dev/ngXnY`), with 128-byte SQEs and 32-byte CQEs.
//!
//! Each job keeps `iodepth` commands in flight: it fills every free slot, submits them with one syscall, and reaps
//! every completion available. Latencies go into a log-linear [`histogram::Histogram`]. With `verify`, writes
//! carry the self-checking [`pattern`], reads of blocks written in this run are checked as they complete, and
//! after the timed phase every written block is read back and checked; the first mismatch is reported.

pub mod buffers;
pub mod histogram;
pub mod pattern;
pub mod uring;
pub mod uring_cmd;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use histogram::{Histogram, Summary};

/// fio's `rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Read,
    Write,
    Randread,
    Randwrite,
    Randrw,
}

impl Rw {
    pub fn is_random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    pub fn writes(self) -> bool {
        matches!(self, Rw::Write | Rw::Randwrite | Rw::Randrw)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Randrw => "randrw",
        }
    }
}

impl FromStr for Rw {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "read" => Rw::Read,
            "write" => Rw::Write,
            "randread" => Rw::Randread,
            "randwrite" => Rw::Randwrite,
            "randrw" => Rw::Randrw,
            _ => {
                return Err(format!(
                    "invalid rw '{s}': expected read, write, randread, randwrite or randrw"
                ))
            }
        })
    }
}

impl fmt::Display for Rw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// io_uring read/write on a file or block device.
    Uring,
    /// io_uring NVMe passthrough on a generic char device.
    UringCmd,
}

/// How a job's ring is set up.
///
/// Measured with `bench-agent io` on this project's machines (4k, QD32): cooperative task running is as fast as
/// deferred task running on tmpfs (both ≈1.2M IOPS randread; a plain ring ≈0.45M) and about 10 % faster on a
/// loop device, whose completions arrive from another context. So `auto` is single-issuer + cooperative;
/// `defer` asks for single-issuer + deferred task running (Linux 6.1+), which suits completions reaped on the
/// submitting thread. Each mode falls back to what the kernel supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingMode {
    #[default]
    Auto,
    Defer,
    Coop,
    Plain,
}

impl FromStr for RingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => RingMode::Auto,
            "defer" => RingMode::Defer,
            "coop" => RingMode::Coop,
            "plain" => RingMode::Plain,
            _ => {
                return Err(format!(
                    "invalid ring mode '{s}': expected auto, defer, coop or plain"
                ))
            }
        })
    }
}

/// One io run, in fio's terms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IoSpec {
    pub target: PathBuf,
    pub rw: Rw,
    /// Percentage of reads in randrw.
    pub rwmixread: u8,
    pub bs: u64,
    pub iodepth: u32,
    /// Run for this long (time-based: the job loops over its region).
    pub runtime: Option<Duration>,
    /// Size of each job's region; without `runtime`, also the bytes each job transfers. A regular file smaller
    /// than `size * numjobs` is extended (sparse).
    pub size: Option<u64>,
    pub direct: bool,
    pub verify: bool,
    pub numjobs: u32,
    pub engine: Engine,
    /// Seed for offsets and the verify pattern.
    pub seed: u64,
    /// Ring setup.
    #[serde(default)]
    pub ring: RingMode,
}

impl IoSpec {
    pub fn new(target: impl Into<PathBuf>, rw: Rw, bs: u64, iodepth: u32) -> Self {
        IoSpec {
            target: target.into(),
            rw,
            rwmixread: 50,
            bs,
            iodepth,
            runtime: None,
            size: None,
            direct: false,
            verify: false,
            numjobs: 1,
            engine: Engine::Uring,
            seed: 0x6e76_6661_726d,
            ring: RingMode::Auto,
        }
    }

    /// Checks the parameters; errors name the option and what is valid.
    pub fn validate(&self) -> Result<(), IoError> {
        let bad = |option: &'static str, reason: String| Err(IoError::Spec { option, reason });
        if self.bs == 0 || self.bs % 512 != 0 || self.bs > 16 << 20 {
            return bad(
                "bs",
                format!(
                    "{} is not a multiple of 512 bytes between 512 and 16 MiB",
                    self.bs
                ),
            );
        }
        if self.iodepth == 0 || self.iodepth > 4096 {
            return bad(
                "iodepth",
                format!("{} is not between 1 and 4096", self.iodepth),
            );
        }
        if self.numjobs == 0 || self.numjobs > 256 {
            return bad(
                "numjobs",
                format!("{} is not between 1 and 256", self.numjobs),
            );
        }
        if self.rwmixread > 100 {
            return bad(
                "rwmixread",
                format!("{} is not a percentage (0-100)", self.rwmixread),
            );
        }
        if self.runtime.is_none() && self.size.is_none() {
            return bad("runtime", "give --runtime or --size (or both)".into());
        }
        if self.runtime == Some(Duration::ZERO) {
            return bad("runtime", "must be more than zero".into());
        }
        if let Some(s) = self.size {
            if s < self.bs {
                return bad(
                    "size",
                    format!("{s} bytes is smaller than one block ({} bytes)", self.bs),
                );
            }
        }
        if self.verify && self.bs < pattern::HEADER as u64 {
            return bad(
                "verify",
                format!("needs blocks of at least {} bytes", pattern::HEADER),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("invalid io option '{option}': {reason}")]
    Spec {
        option: &'static str,
        reason: String,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Target { path: PathBuf, reason: String },
    #[error("cannot set up io_uring: {0}; the kernel may be too old (5.19+ for passthrough) or io_uring disabled (sysctl kernel.io_uring_disabled)")]
    Ring(std::io::Error),
    #[error("job {job}: {op} of {len} bytes at offset {offset:#x} failed: {error}")]
    Io {
        job: u32,
        op: &'static str,
        offset: u64,
        len: u64,
        error: IoFailure,
    },
}

/// How one I/O failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IoFailure {
    /// The kernel returned an errno.
    Errno(i32),
    /// The drive completed the command with an NVMe status (passthrough only).
    Nvme(u16),
    /// Fewer bytes than asked.
    Short { done: u64 },
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoFailure::Errno(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            IoFailure::Nvme(s) => {
                write!(f, "NVMe status {}", nvme_spec::Status::from_raw(*s))
            }
            IoFailure::Short { done } => write!(f, "short transfer ({done} bytes)"),
        }
    }
}

impl IoError {
    /// The target disappeared (ENODEV/ENXIO) rather than failing the I/O itself.
    pub fn is_device_gone(&self) -> bool {
        matches!(self, IoError::Io { error: IoFailure::Errno(e), .. } if *e == libc::ENODEV || *e == libc::ENXIO)
    }
}

/// Per-direction results.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DirStats {
    pub ios: u64,
    pub bytes: u64,
    pub iops: f64,
    pub bw_bytes_per_sec: f64,
    pub lat: Summary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobReport {
    pub job: u32,
    pub elapsed_ms: u64,
    pub read: DirStats,
    pub write: DirStats,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FirstMismatch {
    pub job: u32,
    pub offset: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub mismatches: u64,
    pub first: Option<FirstMismatch>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IoReport {
    pub target: PathBuf,
    pub engine: Engine,
    /// Ring setup used (e.g. "single-issuer+defer-taskrun, registered buffers").
    pub ring: String,
    pub rw: Rw,
    pub bs: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    pub elapsed_ms: u64,
    pub read: DirStats,
    pub write: DirStats,
    pub jobs: Vec<JobReport>,
    pub verify: Option<VerifyReport>,
}

impl IoReport {
    pub fn verified_ok(&self) -> bool {
        self.verify.as_ref().is_none_or(|v| v.mismatches == 0)
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

impl fmt::Display for IoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} bs={} iodepth={} numjobs={} engine={:?} ({}) {:.2}s",
            self.target.display(),
            self.rw,
            self.bs,
            self.iodepth,
            self.numjobs,
            self.engine,
            self.ring,
            self.elapsed_ms as f64 / 1000.0
        )?;
        for (name, d) in [("read", &self.read), ("write", &self.write)] {
            if d.ios == 0 {
                continue;
            }
            writeln!(
                f,
                "  {name:<5}: IOPS={:.0} BW={:.1}MiB/s ios={} lat min={} mean={} p50={} p90={} p99={} p99.9={} max={}",
                d.iops,
                d.bw_bytes_per_sec / (1024.0 * 1024.0),
                d.ios,
                fmt_ns(d.lat.min_ns),
                fmt_ns(d.lat.mean_ns),
                fmt_ns(d.lat.p50_ns),
                fmt_ns(d.lat.p90_ns),
                fmt_ns(d.lat.p99_ns),
                fmt_ns(d.lat.p99_9_ns),
                fmt_ns(d.lat.max_ns)
            )?;
        }
        if let Some(v) = &self.verify {
            match &v.first {
                None => writeln!(f, "  verify: {} blocks checked, all good", v.blocks_checked)?,
                Some(m) => writeln!(
                    f,
                    "  verify: {} of {} blocks bad; first at offset {:#x} (job {}): {}",
                    v.mismatches, v.blocks_checked, m.offset, m.job, m.reason
                )?,
            }
        }
        Ok(())
    }
}

// ----- the shared job loop ----------------------------------------------------------------------------------

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

struct JobState {
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

impl JobState {
    fn done_issuing(&self) -> bool {
        match self.deadline {
            Some(d) => Instant::now() >= d,
            None => self.spec.size.is_some_and(|s| self.issued_bytes >= s),
        }
    }

    /// Picks the next operation and block, avoiding blocks with I/O in flight (so verify never races itself).
    fn next(&mut self) -> Option<(Op, u64)> {
        let op = match self.spec.rw {
            Rw::Read | Rw::Randread => Op::Read,
            Rw::Write | Rw::Randwrite => Op::Write,
            Rw::Randrw => {
                if self.rng.next() % 100 < self.spec.rwmixread as u64 {
                    Op::Read
                } else {
                    Op::Write
                }
            }
        };
        for _ in 0..64 {
            let block = if self.spec.rw.is_random() {
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
        self.region.start + block * self.spec.bs
    }

    fn check_read(&mut self, buf: &[u8], block: u64) {
        let written = self.generations.get(block as usize).copied().unwrap_or(0);
        let expected = match self.spec.rw {
            // A read-only verify run checks data an earlier run wrote.
            Rw::Read | Rw::Randread => None,
            _ if written == 0 => return,
            _ => Some(written),
        };
        self.verify.blocks_checked += 1;
        let offset = self.offset(block);
        if let Err(m) = pattern::check(buf, offset, expected) {
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
pub(crate) struct JobOutcome {
    pub report: JobReport,
    pub read: Histogram,
    pub write: Histogram,
    pub verify: VerifyReport,
}

/// Runs one job on `ring` over `region`.
pub(crate) fn run_job(
    ring: &mut dyn SlotRing,
    spec: &IoSpec,
    job: u32,
    region: Region,
) -> Result<JobOutcome, IoError> {
    let blocks = region.len / spec.bs;
    if blocks == 0 {
        return Err(IoError::Target {
            path: spec.target.clone(),
            reason: format!(
                "job {job}'s region of {} bytes holds no {}-byte block",
                region.len, spec.bs
            ),
        });
    }
    let mut st = JobState {
        job,
        spec: spec.clone(),
        region,
        blocks,
        rng: Rng(spec.seed ^ (job as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        seq_next: 0,
        issued_bytes: 0,
        deadline: spec.runtime.map(|r| Instant::now() + r),
        generations: if spec.verify {
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
    loop {
        // Fill every free slot.
        if !st.done_issuing() {
            for (slot, entry) in slots.iter_mut().enumerate() {
                if entry.is_some() || st.done_issuing() {
                    continue;
                }
                let Some((op, block)) = st.next() else { break };
                let offset = st.offset(block);
                if op == Op::Write && spec.verify {
                    generation = generation.wrapping_add(1).max(1);
                    st.generations[block as usize] = generation;
                    pattern::fill(ring.buffer(slot), offset, spec.seed, generation);
                }
                ring.queue(slot, op, offset)?;
                st.inflight_blocks.insert(block);
                st.issued_bytes += spec.bs;
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
            let (op, block, t0) = slots[slot].take().expect("completion for a slot in flight");
            inflight -= 1;
            st.inflight_blocks.remove(&block);
            if let Err(error) = result {
                return Err(IoError::Io {
                    job,
                    op: op.name(),
                    offset: st.offset(block),
                    len: spec.bs,
                    error: error.clone(),
                });
            }
            let ns = now.duration_since(t0).as_nanos() as u64;
            match op {
                Op::Read => {
                    st.read_h.record(ns);
                    st.read_bytes += spec.bs;
                    if spec.verify {
                        st.check_read(ring.buffer(slot), block);
                    }
                }
                Op::Write => {
                    st.write_h.record(ns);
                    st.write_bytes += spec.bs;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if spec.verify && spec.rw.writes() {
        verify_pass(ring, &mut st)?;
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
    Ok(JobOutcome {
        report,
        read: st.read_h,
        write: st.write_h,
        verify: st.verify,
    })
}

/// Reads back every block written in this run and checks it.
fn verify_pass(ring: &mut dyn SlotRing, st: &mut JobState) -> Result<(), IoError> {
    let written: Vec<u64> = (0..st.blocks)
        .filter(|&b| st.generations[b as usize] != 0)
        .collect();
    let depth = ring.depth();
    let mut next = 0usize;
    let mut slots: Vec<Option<u64>> = vec![None; depth];
    let mut inflight = 0;
    let mut done = Vec::with_capacity(depth);
    loop {
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
            let block = slots[slot].take().expect("in flight");
            inflight -= 1;
            if let Err(error) = result {
                return Err(IoError::Io {
                    job: st.job,
                    op: "verify read",
                    offset: st.offset(block),
                    len: st.spec.bs,
                    error: error.clone(),
                });
            }
            st.check_read(ring.buffer(slot), block);
        }
    }
}

/// Size of the target in bytes: a regular file's length (extended to `size` if asked), a block device's
/// capacity, or a generic char device's namespace size.
fn target_size(spec: &IoSpec) -> Result<u64, IoError> {
    use std::os::unix::fs::FileTypeExt;
    let path = &spec.target;
    let meta = std::fs::metadata(path);
    match meta {
        Ok(m) if m.file_type().is_char_device() => uring_cmd::namespace_size(path),
        Ok(m) if m.file_type().is_block_device() => {
            use std::io::Seek;
            let mut f = std::fs::File::open(path).map_err(|source| IoError::Open {
                path: path.clone(),
                source,
            })?;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })
        }
        Ok(m) if m.is_file() => {
            let want = spec.size.map(|s| s * spec.numjobs as u64).unwrap_or(0);
            if m.len() < want {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| IoError::Open {
                        path: path.clone(),
                        source,
                    })?;
                f.set_len(want).map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })?;
                return Ok(want);
            }
            Ok(m.len())
        }
        Ok(_) => Err(IoError::Target {
            path: path.clone(),
            reason: "not a file, block device or NVMe generic char device".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match spec.size {
            Some(size) if spec.engine == Engine::Uring => {
                let f = std::fs::File::create(path).map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })?;
                f.set_len(size * spec.numjobs as u64)
                    .map_err(|source| IoError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(size * spec.numjobs as u64)
            }
            _ => Err(IoError::Open {
                path: path.clone(),
                source: e,
            }),
        },
        Err(source) => Err(IoError::Open {
            path: path.clone(),
            source,
        }),
    }
}

/// Runs the spec: `numjobs` threads, each with its own ring over its own slice of the target.
pub fn run(spec: &IoSpec) -> Result<IoReport, IoError> {
    spec.validate()?;
    let total = target_size(spec)?;
    let mut per_job = total / spec.numjobs as u64;
    if let Some(size) = spec.size {
        per_job = per_job.min(size);
    }
    let per_job = per_job / spec.bs * spec.bs;
    if per_job == 0 {
        return Err(IoError::Target {
            path: spec.target.clone(),
            reason: format!(
                "{total} bytes cannot hold {} job(s) of {}-byte blocks",
                spec.numjobs, spec.bs
            ),
        });
    }
    let results: Vec<Result<(JobOutcome, String), IoError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.numjobs)
            .map(|job| {
                s.spawn(move || {
                    let region = Region {
                        start: job as u64 * per_job,
                        len: per_job,
                    };
                    match spec.engine {
                        Engine::Uring => {
                            let mut ring = uring::FileRing::open(spec)?;
                            Ok((run_job(&mut ring, spec, job, region)?, ring.describe()))
                        }
                        Engine::UringCmd => {
                            let mut ring = uring_cmd::CmdRing::open(spec)?;
                            Ok((run_job(&mut ring, spec, job, region)?, ring.describe()))
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("io job thread panicked"))
            .collect()
    });
    let mut jobs = vec![];
    let (mut rh, mut wh) = (Histogram::default(), Histogram::default());
    let mut verify = VerifyReport::default();
    let mut ring = String::new();
    for r in results {
        let (
            JobOutcome {
                report: job,
                read: r_h,
                write: w_h,
                verify: v,
            },
            desc,
        ) = r?;
        rh.merge(&r_h);
        wh.merge(&w_h);
        verify.blocks_checked += v.blocks_checked;
        verify.mismatches += v.mismatches;
        if let Some(f) = v.first {
            if verify
                .first
                .as_ref()
                .is_none_or(|cur| (f.job, f.offset) < (cur.job, cur.offset))
            {
                verify.first = Some(f);
            }
        }
        ring = desc;
        jobs.push(job);
    }
    let elapsed_ms = jobs.iter().map(|j| j.elapsed_ms).max().unwrap_or(0);
    let secs = (elapsed_ms as f64 / 1000.0).max(1e-9);
    let sum = |f: fn(&JobReport) -> u64| jobs.iter().map(f).sum::<u64>();
    let (rb, wb) = (sum(|j| j.read.bytes), sum(|j| j.write.bytes));
    Ok(IoReport {
        target: spec.target.clone(),
        engine: spec.engine,
        ring,
        rw: spec.rw,
        bs: spec.bs,
        iodepth: spec.iodepth,
        numjobs: spec.numjobs,
        elapsed_ms,
        read: DirStats {
            ios: rh.count(),
            bytes: rb,
            iops: rh.count() as f64 / secs,
            bw_bytes_per_sec: rb as f64 / secs,
            lat: rh.summary(),
        },
        write: DirStats {
            ios: wh.count(),
            bytes: wb,
            iops: wh.count() as f64 / secs,
            bw_bytes_per_sec: wb as f64 / secs,
            lat: wh.summary(),
        },
        jobs,
        verify: spec.verify.then_some(verify),
    })
}
