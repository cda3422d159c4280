//! io_uring reads and writes on a file or block device.
//!
//! One ring per job thread, `iodepth` slots each owning a page-aligned buffer. Buffers and the file are
//! registered with the ring (so the kernel pins them once, not per I/O) and I/O uses READ_FIXED / WRITE_FIXED
//! on fixed file 0. Ring setup follows [`RingMode`]; what was used is reported.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::buffers::AlignedBuf;
use super::inflight::{self, Inflight, DRAIN_LIMIT};
use super::job::{Op, SlotRing};
use super::{IoError, IoFailure, IoSpec, RingMode};

/// Builds a ring for `mode`, falling back to simpler setups the kernel accepts; returns it with a description.
pub(crate) fn build_ring<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
    entries: u32,
    mode: RingMode,
) -> Result<(IoUring<S, C>, &'static str), IoError> {
    type Configure<S, C> = fn(&mut io_uring::Builder<S, C>);
    let defer: (&'static str, Configure<S, C>) = ("single-issuer+defer-taskrun", |b| {
        b.setup_single_issuer().setup_defer_taskrun();
    });
    let coop: (&'static str, Configure<S, C>) = ("single-issuer+coop-taskrun", |b| {
        b.setup_single_issuer().setup_coop_taskrun();
    });
    let coop_only: (&'static str, Configure<S, C>) = ("coop-taskrun", |b| {
        b.setup_coop_taskrun();
    });
    let plain: (&'static str, Configure<S, C>) = ("plain", |_| {});
    let attempts = match mode {
        RingMode::Auto | RingMode::Coop => vec![coop, coop_only, plain],
        RingMode::Defer => vec![defer, coop, coop_only, plain],
        RingMode::Plain => vec![plain],
    };
    let mut last = None;
    for (name, configure) in attempts {
        let mut b = IoUring::<S, C>::builder();
        configure(&mut b);
        match b.build(entries) {
            Ok(r) => return Ok((r, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(IoError::Ring(last.expect("at least one attempt")))
}

/// A job's ring for reads and writes on a file or block device, with registered buffers and file.
pub struct FileRing {
    // Dropped first: the kernel lets go of the registered buffers before they are freed.
    ring: IoUring,
    file: File,
    bufs: Vec<AlignedBuf>,
    bs: u32,
    fixed_buffers: bool,
    fixed_file: bool,
    setup: &'static str,
    inflight: Inflight,
}

impl std::fmt::Debug for FileRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRing")
            .field("file", &self.file)
            .field("setup", &self.setup)
            .finish()
    }
}

impl FileRing {
    /// Opens the target and sets up the ring and its buffers.
    pub fn open(spec: &IoSpec) -> Result<Self, IoError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(spec.options.rw.writes());
        if spec.options.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let file = opts.open(&spec.target).map_err(|source| IoError::Open {
            path: spec.target.clone(),
            source,
        })?;
        let depth = spec.options.iodepth as usize;
        let (ring, setup) = build_ring::<squeue::Entry, cqueue::Entry>(
            spec.options.iodepth.next_power_of_two(),
            spec.ring,
        )?;

        let mut bufs: Vec<AlignedBuf> = (0..depth)
            .map(|_| AlignedBuf::new(spec.options.bs as usize))
            .collect();
        let fixed_file = ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec points into a buffer owned by the returned FileRing, which is never resized or
        // moved (the Vec's heap storage stays put). The buffers are freed only after every operation that uses
        // them has completed: `Drop` drains the ring first, and leaks the buffers if the kernel does not give
        // every operation back; `ring` is declared first, so the registration is released before `bufs` go.
        let fixed_buffers = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        Ok(FileRing {
            ring,
            file,
            bufs,
            bs: spec.options.bs as u32,
            fixed_buffers,
            fixed_file,
            setup,
            inflight: Inflight::new(depth),
        })
    }

    /// The ring setup actually used, for the report.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} buffers, {} file",
            self.setup,
            if self.fixed_buffers {
                "registered"
            } else {
                "unregistered"
            },
            if self.fixed_file {
                "registered"
            } else {
                "unregistered"
            }
        )
    }

    fn entry(&mut self, slot: usize, op: Op, offset: u64) -> squeue::Entry {
        let (ptr, len, idx) = (self.bufs[slot].as_mut_ptr(), self.bs, slot as u16);
        let fd = self.file.as_raw_fd();
        let e = match (op, self.fixed_buffers, self.fixed_file) {
            (Op::Read, true, true) => opcode::ReadFixed::new(types::Fixed(0), ptr, len, idx)
                .offset(offset)
                .build(),
            (Op::Read, true, false) => opcode::ReadFixed::new(types::Fd(fd), ptr, len, idx)
                .offset(offset)
                .build(),
            (Op::Read, false, true) => opcode::Read::new(types::Fixed(0), ptr, len)
                .offset(offset)
                .build(),
            (Op::Read, false, false) => opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build(),
            (Op::Write, true, true) => opcode::WriteFixed::new(types::Fixed(0), ptr, len, idx)
                .offset(offset)
                .build(),
            (Op::Write, true, false) => opcode::WriteFixed::new(types::Fd(fd), ptr, len, idx)
                .offset(offset)
                .build(),
            (Op::Write, false, true) => opcode::Write::new(types::Fixed(0), ptr, len)
                .offset(offset)
                .build(),
            (Op::Write, false, false) => opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build(),
        };
        e.user_data(slot as u64)
    }
}

impl SlotRing for FileRing {
    fn depth(&self) -> usize {
        self.bufs.len()
    }

    fn buffer(&mut self, slot: usize) -> &mut [u8] {
        self.bufs[slot].as_mut_slice()
    }

    fn queue(&mut self, slot: usize, op: Op, offset: u64) -> Result<(), IoError> {
        let entry = self.entry(slot, op, offset);
        loop {
            // SAFETY: the entry points at slot `slot`'s buffer, owned by this ring and not touched by the job
            // loop until this slot's completion is reaped; the buffer is freed only after every operation using
            // it has completed (`Drop` drains the ring, and leaks the buffers if the kernel keeps any); the
            // fd/fixed file stays open for the ring's life.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                self.inflight.start(slot);
                return Ok(());
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            self.ring.submit().map_err(IoError::Ring)?;
        }
    }

    fn submit_and_wait(&mut self, want: usize) -> Result<(), IoError> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(IoError::Ring(e)),
            }
        }
    }

    fn reap(&mut self, out: &mut Vec<(usize, Result<(), IoFailure>)>) {
        let bs = self.bs as i32;
        for cqe in self.ring.completion() {
            let r = match cqe.result() {
                n if n < 0 => Err(IoFailure::Errno(-n)),
                n if n != bs => Err(IoFailure::Short { done: n as u64 }),
                _ => Ok(()),
            };
            let slot = cqe.user_data() as usize;
            self.inflight.done(slot);
            out.push((slot, r));
        }
    }

    fn in_flight(&self) -> usize {
        self.inflight.count()
    }

    fn drain(&mut self, within: std::time::Duration) -> usize {
        inflight::drain(
            &mut self.ring,
            &mut self.inflight,
            cqueue::Entry::user_data,
            within,
        )
    }
}

impl Drop for FileRing {
    fn drop(&mut self) {
        if self.drain(DRAIN_LIMIT) > 0 {
            tracing::error!(
                in_flight = self.inflight.count(),
                "I/Os did not come back from the kernel; keeping their buffers rather than freeing them"
            );
            std::mem::forget(std::mem::take(&mut self.bufs));
        }
    }
}
