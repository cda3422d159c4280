//! NVMe Read/Write commands to a simulated controller: the io engine's backend for simulated rigs. Every I/O
//! goes through the simulator's command path, so its faults (latency, status, media errors, hangs, a drive
//! that vanishes), MDTS (an I/O larger than it goes as several commands), its not-ready time during a reset or boot (I/O is held until the controller is ready,
//! as the kernel holds it), its firmware state and its SMART counters all apply, as they would to I/O on a
//! drive. The simulator executes one command at a time, so the commands a
//! slot batch submits run in order and each one's latency includes the ones before it in the batch.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flash_tools::controller::NvmeError;
use flash_tools::sim::SimController;
use flash_tools::{Controller, TransportError};
use nvfarm_model::io::IoOptionError;

use super::job::{Op, SlotRing};
use super::spec::{IoError, IoFailure, IoSpec};
use super::split::Split;

/// How long one command may take before it counts as timed out (a hung drive).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a command held by a controller that is not ready is tried again.
const NOT_READY_POLL: Duration = Duration::from_millis(2);

fn open_controller(dir: &Path) -> Result<Controller, IoError> {
    let sim = SimController::open(dir).map_err(|e| IoError::Target {
        path: dir.to_path_buf(),
        reason: format!("not a simulated drive: {e}"),
    })?;
    Ok(Controller::new(Arc::new(sim)).with_timeout(Some(COMMAND_TIMEOUT)))
}

fn target_err(dir: &Path, e: NvmeError) -> IoError {
    IoError::Target {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Namespace 1's size in bytes on the simulated drive in `dir`.
pub fn namespace_size(dir: &Path) -> Result<u64, IoError> {
    let ctrl = open_controller(dir)?;
    ctrl.identify_namespace(1)
        .map(|ns| ns.size_bytes())
        .map_err(|e| target_err(dir, e))
}

/// A job's slots on the simulated controller.
pub struct SimRing {
    ctrl: Controller,
    bufs: Vec<Vec<u8>>,
    block_size: u64,
    /// An I/O larger than MDTS goes as several commands.
    split: Split,
    queued: Vec<(usize, Op, u64)>,
    done: Vec<(usize, Result<(), IoFailure>)>,
}

impl std::fmt::Debug for SimRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRing")
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl SimRing {
    /// Opens the simulated drive in `spec.target` and checks the block size against its namespace and MDTS.
    pub fn open(spec: &IoSpec) -> Result<Self, IoError> {
        let dir = &spec.target;
        let ctrl = open_controller(dir)?;
        let ns = ctrl.identify_namespace(1).map_err(|e| target_err(dir, e))?;
        let block_size = ns.block_size();
        let mdts = ctrl
            .identify_controller()
            .map_err(|e| target_err(dir, e))?
            .max_transfer_bytes();
        let bs = spec.options.bs;
        if bs % block_size != 0 {
            return Err(IoError::Spec(IoOptionError {
                option: "bs",
                reason: format!(
                    "{bs} is not a multiple of the namespace's {block_size}-byte blocks"
                ),
            }));
        }
        let split = Split::new(bs, block_size, mdts).map_err(IoError::Spec)?;
        Ok(SimRing {
            ctrl,
            bufs: (0..spec.options.iodepth)
                .map(|_| vec![0u8; bs as usize])
                .collect(),
            block_size,
            split,
            queued: vec![],
            done: vec![],
        })
    }

    /// What the backend is, for the report.
    pub fn describe(&self) -> String {
        let split = if self.split.per_io > 1 {
            format!(
                ", each I/O split into {} commands of at most {} bytes (MDTS)",
                self.split.per_io, self.split.chunk
            )
        } else {
            String::new()
        };
        format!(
            "NVMe Read/Write to the simulated controller ({}-byte blocks, one command at a time{split})",
            self.block_size
        )
    }

    /// Sends slot `slot`'s I/O as its commands, in order; the first that fails ends it.
    fn execute(&mut self, slot: usize, op: Op, offset: u64) -> Result<(), IoFailure> {
        let bs = self.bufs[slot].len() as u32;
        for part in 0..self.split.per_io {
            let (at, len) = self.split.part(bs, part);
            let slba = (offset + at as u64) / self.block_size;
            let range = at as usize..(at + len) as usize;
            self.command(slot, op, slba, range)?;
        }
        Ok(())
    }

    /// One Read or Write of `range` of slot `slot`'s buffer at `slba`.
    fn command(
        &mut self,
        slot: usize,
        op: Op,
        slba: u64,
        range: std::ops::Range<usize>,
    ) -> Result<(), IoFailure> {
        let bs = self.block_size as u32;
        let buf = &mut self.bufs[slot][range];
        let started = std::time::Instant::now();
        let r = loop {
            let r = match op {
                Op::Read => self.ctrl.read(1, slba, buf, bs),
                Op::Write => self.ctrl.write(1, slba, buf, bs),
            };
            // A controller resetting or booting (firmware activation) holds I/O, as the kernel's block layer
            // does, until it is ready again or the command's time is up.
            match r {
                Err(NvmeError::Transport(TransportError::NotReady { .. }))
                    if started.elapsed() < COMMAND_TIMEOUT =>
                {
                    std::thread::sleep(NOT_READY_POLL);
                }
                r => break r,
            }
        };
        r.map_err(|e| match e {
            NvmeError::Status { status, .. } => IoFailure::Nvme(status.code()),
            NvmeError::Transport(t) => IoFailure::Errno(match t {
                TransportError::Gone { .. } => libc::ENODEV,
                TransportError::NotReady { .. } => libc::EBUSY,
                TransportError::Timeout { .. } => libc::ETIMEDOUT,
                _ => libc::EIO,
            }),
        })
    }
}

impl SlotRing for SimRing {
    fn depth(&self) -> usize {
        self.bufs.len()
    }
    fn buffer(&mut self, slot: usize) -> &mut [u8] {
        &mut self.bufs[slot]
    }
    fn queue(&mut self, slot: usize, op: Op, offset: u64) -> Result<(), IoError> {
        self.queued.push((slot, op, offset));
        Ok(())
    }
    fn submit_and_wait(&mut self, _want: usize) -> Result<(), IoError> {
        for (slot, op, offset) in std::mem::take(&mut self.queued) {
            let r = self.execute(slot, op, offset);
            self.done.push((slot, r));
        }
        Ok(())
    }
    fn reap(&mut self, out: &mut Vec<(usize, Result<(), IoFailure>)>) {
        out.append(&mut self.done);
    }
    fn in_flight(&self) -> usize {
        self.queued.len() + self.done.len()
    }
    fn drain(&mut self, _within: Duration) -> usize {
        // Nothing is handed to a kernel: queued commands are dropped unsent, finished ones forgotten.
        self.queued.clear();
        self.done.clear();
        0
    }
}
