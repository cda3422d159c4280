//! NVMe passthrough I/O through io_uring (`IORING_OP_URING_CMD`) on a generic char device (`/dev/ngXnY`).
//!
//! The ring uses 128-byte SQEs, whose 80-byte command area carries a `struct nvme_uring_cmd`, and 32-byte CQEs:
//! `res` is 0 on success, the NVMe status when positive, `-errno` when negative. The command is laid out byte by
//! byte at the kernel's offsets (asserted in the tests), so no unsafe cast is needed to build it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use flash_tools::linux::LinuxIoctl;
use flash_tools::Controller;
use nvme_spec::command::io as nvme_io;

use super::buffers::AlignedBuf;
use super::inflight::{self, Inflight, DRAIN_LIMIT};
use super::job::{Op, SlotRing};
use super::split::Split;
use super::uring::build_ring;
use super::{IoError, IoFailure, IoSpec};
use nvfarm_model::io::IoOptionError;

/// Size of `struct nvme_uring_cmd`.
pub const NVME_URING_CMD_LEN: usize = 72;
/// `NVME_URING_CMD_IO`: `_IOWR('N', 0x80, struct nvme_uring_cmd)`.
pub const NVME_URING_CMD_IO: u32 =
    nix::request_code_readwrite!(b'N', 0x80, NVME_URING_CMD_LEN) as u32;

/// Byte offsets of `struct nvme_uring_cmd` (include/uapi/linux/nvme_ioctl.h).
mod off {
    pub const OPCODE: usize = 0;
    pub const NSID: usize = 4;
    pub const ADDR: usize = 24;
    pub const DATA_LEN: usize = 36;
    pub const CDW10: usize = 40;
    pub const CDW11: usize = 44;
    pub const CDW12: usize = 48;
    pub const TIMEOUT_MS: usize = 64;
}

/// Encodes an NVMe Read/Write as `struct nvme_uring_cmd` in a uring_cmd's 80-byte command area.
pub fn encode_rw(
    opcode: u8,
    nsid: u32,
    addr: u64,
    data_len: u32,
    slba: u64,
    blocks: u32,
) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[off::OPCODE] = opcode;
    c[off::NSID..off::NSID + 4].copy_from_slice(&nsid.to_le_bytes());
    c[off::ADDR..off::ADDR + 8].copy_from_slice(&addr.to_le_bytes());
    c[off::DATA_LEN..off::DATA_LEN + 4].copy_from_slice(&data_len.to_le_bytes());
    c[off::CDW10..off::CDW10 + 4].copy_from_slice(&(slba as u32).to_le_bytes());
    c[off::CDW11..off::CDW11 + 4].copy_from_slice(&((slba >> 32) as u32).to_le_bytes());
    c[off::CDW12..off::CDW12 + 4].copy_from_slice(&(blocks - 1).to_le_bytes());
    c[off::TIMEOUT_MS..off::TIMEOUT_MS + 4].copy_from_slice(&0u32.to_le_bytes());
    c
}

/// Namespace ID, block size, capacity and the controller's largest transfer (MDTS; `None`: no limit) of a
/// generic char device, asked over admin passthrough.
fn namespace_geometry(path: &Path) -> Result<(u32, u64, u64, Option<u64>), IoError> {
    let target = |reason: String| IoError::Target {
        path: path.to_path_buf(),
        reason,
    };
    let dev = LinuxIoctl::open(path).map_err(|e| target(e.to_string()))?;
    let nsid = dev
        .namespace_id()
        .map_err(|e| target(format!("not an NVMe namespace device: {e}")))?;
    let ctrl = Controller::new(Arc::new(dev));
    let ns = ctrl
        .identify_namespace(nsid)
        .map_err(|e| target(e.to_string()))?;
    let mdts = ctrl
        .identify_controller()
        .map_err(|e| target(e.to_string()))?
        .max_transfer_bytes();
    Ok((nsid, ns.block_size(), ns.size_bytes(), mdts))
}

/// Capacity of the namespace behind a generic char device.
pub fn namespace_size(path: &Path) -> Result<u64, IoError> {
    namespace_geometry(path).map(|(_, _, size, _)| size)
}

/// A job's ring for NVMe Read/Write passthrough (`IORING_OP_URING_CMD`) on `/dev/ngXnY`.
pub struct CmdRing {
    // Dropped before the buffers it points into.
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    file: File,
    bufs: Vec<AlignedBuf>,
    nsid: u32,
    block_size: u64,
    bs: u32,
    split: Split,
    /// Per slot: its commands not yet completed, and the first failure among them.
    pending: Vec<(usize, Option<IoFailure>)>,
    fixed_file: bool,
    setup: &'static str,
    /// By command (`slot * per_io + part`), so every command of a split I/O is accounted for.
    inflight: Inflight,
}

/// The most submission entries a ring gets: a deeper batch waits for room in the queue.
const MAX_RING: u32 = 4096;

impl std::fmt::Debug for CmdRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmdRing")
            .field("file", &self.file)
            .field("nsid", &self.nsid)
            .finish()
    }
}

impl CmdRing {
    /// Opens the generic char device and sets up a 128-byte-SQE ring and its buffers.
    pub fn open(spec: &IoSpec) -> Result<Self, IoError> {
        let (nsid, block_size, _, mdts) = namespace_geometry(&spec.target)?;
        if spec.options.bs % block_size != 0 {
            return Err(IoError::Spec(IoOptionError {
                option: "bs",
                reason: format!(
                    "{} is not a multiple of the namespace's {block_size}-byte blocks",
                    spec.options.bs
                ),
            }));
        }
        // A command carries at most MDTS: a larger I/O goes out as several commands, as the kernel's block
        // layer splits a large request.
        let split = Split::new(spec.options.bs, block_size, mdts).map_err(IoError::Spec)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&spec.target)
            .map_err(|source| IoError::Open {
                path: spec.target.clone(),
                source,
            })?;
        let commands = spec.options.iodepth as usize * split.per_io;
        let (ring, setup) = build_ring::<squeue::Entry128, cqueue::Entry32>(
            (commands as u32).next_power_of_two().min(MAX_RING),
            spec.ring,
        )?;

        let fixed_file = ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();
        let bufs = (0..spec.options.iodepth)
            .map(|_| AlignedBuf::new(spec.options.bs as usize))
            .collect();
        Ok(CmdRing {
            ring,
            file,
            bufs,
            nsid,
            block_size,
            bs: spec.options.bs as u32,
            split,
            pending: vec![(0, None); spec.options.iodepth as usize],
            fixed_file,
            setup,
            inflight: Inflight::new(commands),
        })
    }

    /// The ring setup actually used, for the report.
    pub fn describe(&self) -> String {
        format!(
            "{}, SQE128/CQE32 NVMe passthrough, nsid {}, {}-byte blocks, {} file{}",
            self.setup,
            self.nsid,
            self.block_size,
            if self.fixed_file {
                "registered"
            } else {
                "unregistered"
            },
            if self.split.per_io > 1 {
                format!(
                    ", each I/O split into {} commands of at most {} bytes (MDTS)",
                    self.split.per_io, self.split.chunk
                )
            } else {
                String::new()
            }
        )
    }
}

impl SlotRing for CmdRing {
    fn depth(&self) -> usize {
        self.bufs.len()
    }

    fn buffer(&mut self, slot: usize) -> &mut [u8] {
        self.bufs[slot].as_mut_slice()
    }

    fn queue(&mut self, slot: usize, op: Op, offset: u64) -> Result<(), IoError> {
        let opcode_value = match op {
            Op::Read => nvme_io::READ,
            Op::Write => nvme_io::WRITE,
        };
        let base = self.bufs[slot].as_mut_ptr() as u64;
        self.pending[slot] = (self.split.per_io, None);
        for part in 0..self.split.per_io {
            let (at, len) = self.split.part(self.bs, part);
            let cmd = encode_rw(
                opcode_value,
                self.nsid,
                base + at as u64,
                len,
                (offset + at as u64) / self.block_size,
                (len as u64 / self.block_size) as u32,
            );
            let entry = if self.fixed_file {
                opcode::UringCmd80::new(types::Fixed(0), NVME_URING_CMD_IO)
                    .cmd(cmd)
                    .build()
            } else {
                opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), NVME_URING_CMD_IO)
                    .cmd(cmd)
                    .build()
            };
            let tag = slot * self.split.per_io + part;
            let entry = entry.user_data(tag as u64);
            loop {
                // SAFETY: the command's data address is a range inside slot `slot`'s buffer (`Split::part` keeps
                // it within `bs`), owned by this ring and untouched by the job loop until the slot's last
                // completion is reaped; the buffer is freed only after every command using it has completed
                // (`Drop` drains the ring, and leaks the buffers if the kernel keeps any command); the file stays
                // open for the ring's life.
                if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                    self.inflight.start(tag);
                    break;
                }
                if let Err(e) = self.ring.submit() {
                    // The parts already queued stay accounted for in `inflight`; the job's exit drains them.
                    return Err(IoError::Ring(e));
                }
            }
        }
        Ok(())
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
        for cqe in self.ring.completion() {
            let r = match cqe.result() {
                0 => Ok(()),
                n if n < 0 => Err(IoFailure::Errno(-n)),
                status => Err(IoFailure::Nvme(status as u16)),
            };
            let tag = cqe.user_data() as usize;
            self.inflight.done(tag);
            let slot = tag / self.split.per_io;
            let Some((left, failed)) = self.pending.get_mut(slot) else {
                continue;
            };
            if let Err(f) = r {
                failed.get_or_insert(f);
            }
            *left = left.saturating_sub(1);
            if *left == 0 {
                out.push((slot, failed.take().map_or(Ok(()), Err)));
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.inflight.count()
    }

    fn drain(&mut self, within: std::time::Duration) -> usize {
        inflight::drain(
            &mut self.ring,
            &mut self.inflight,
            cqueue::Entry32::user_data,
            within,
        )
    }
}

impl Drop for CmdRing {
    fn drop(&mut self) {
        if self.drain(DRAIN_LIMIT) > 0 {
            tracing::error!(
                in_flight = self.inflight.count(),
                "NVMe commands did not come back from the kernel; keeping their buffers rather than freeing them"
            );
            std::mem::forget(std::mem::take(&mut self.bufs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_cmd_layout_matches_the_kernel() {
        // _IOWR('N', 0x80, 72 bytes) on x86_64.
        assert_eq!(NVME_URING_CMD_IO, 0xc048_4e80);
        let c = encode_rw(0x02, 1, 0x1122_3344_5566_7788, 8192, 0x1_0000_0010, 16);
        assert_eq!(c[0], 0x02);
        assert_eq!(&c[4..8], &1u32.to_le_bytes());
        assert_eq!(&c[24..32], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&c[36..40], &8192u32.to_le_bytes());
        assert_eq!(&c[40..44], &0x10u32.to_le_bytes());
        assert_eq!(&c[44..48], &1u32.to_le_bytes());
        assert_eq!(&c[48..52], &15u32.to_le_bytes(), "NLB is zero-based");
        assert!(c[72..].iter().all(|&b| b == 0));
    }
}
