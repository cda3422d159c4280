//! The fabric side of a controller: what an association (an admin queue and its I/O queues, from Connect until
//! the admin queue goes) holds, the properties that stand in for a PCIe controller's registers, and the Identify
//! Controller fields a fabrics host needs.
//!
//! Property writes map onto the simulator's resets, as a PCIe drive's register writes do:
//! - CC.EN 1 → 0 is a controller reset (`nvme reset`, the kernel's reconnect after it): a committed image that
//!   needs a controller reset becomes the running one, and the drive boots;
//! - CC.SHN is the shutdown notification (`nvme disconnect`): the next power cut is not an unsafe shutdown;
//! - NSSR = "NVMe" is an NVM subsystem reset (only when the drive sets CAP.NSSRS), and every association of the
//!   subsystem is lost, as the spec says for fabrics;
//! - CSTS.RDY follows the drive: 0 while it boots after a reset, and a drive gone from the bus ends the
//!   association instead of answering.

use std::net::TcpStream;

use super::{Subsystem, TargetOptions};
use crate::transport::{Passthru, ResetKind, TransportError};
use nvme_spec::bytes::{put_u16, put_u32, put_u8};
use nvme_spec::fabrics::{cc, csts, property};
use nvme_spec::status::code;

/// Queue entries a queue may hold (CAP.MQES + 1).
pub(super) const QUEUE_ENTRIES: u16 = 128;
/// Asynchronous Event Requests a controller keeps outstanding (AERL + 1).
pub(super) const AER_LIMIT: usize = 4;

/// One controller, from the admin queue's Connect until that queue goes.
#[derive(Debug)]
pub(super) struct Association {
    /// The host that connected.
    pub hostnqn: String,
    /// Controller Configuration as the host last wrote it.
    pub cc: u32,
    /// A shutdown notification completed.
    pub shutdown_done: bool,
    /// I/O queues granted by Set Features Number of Queues.
    pub io_queues: u16,
    /// Every queue's socket, admin queue first.
    pub sockets: Vec<TcpStream>,
}

impl Association {
    pub(super) fn new(hostnqn: String, admin: Option<TcpStream>) -> Self {
        Association {
            hostnqn,
            cc: 0,
            shutdown_done: false,
            io_queues: 0,
            sockets: admin.into_iter().collect(),
        }
    }

    /// Shuts down every queue's connection.
    pub(super) fn shutdown_sockets(&self) {
        for s in &self.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What a property access came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PropertyOutcome {
    /// Done; the value read (0 for a write).
    Value(u64),
    /// The command fails with this status code.
    Fail(u16),
    /// Answer success, then end every association of the subsystem (an NVM subsystem reset).
    ResetSubsystem,
    /// The drive is gone: end every association without answering.
    Gone(String),
}

impl Subsystem {
    /// Controller Capabilities: 128-entry queues, contiguous queues required, NVM command set, 4 KiB pages, a
    /// ready timeout that covers the drive's boot, and NSSRS when the drive can take an NVM subsystem reset.
    fn cap(&self) -> u64 {
        let st = self.drive.state().ok();
        let boot_ms = st.as_ref().map_or(5_000, |s| s.timing.boot_ms);
        let nssrs = st.as_ref().is_some_and(|s| s.firmware.subsystem_reset);
        // CAP.TO in 500 ms units, with room for a boot and the host's polling.
        let to = (boot_ms / 500 + 10).min(255);
        (QUEUE_ENTRIES as u64 - 1) | 1 << 16 | to << 24 | (nssrs as u64) << 36 | 1 << 37
    }

    /// Reads property `offset` for controller `cntlid`.
    pub(super) fn property_get(&self, cntlid: u16, offset: u32, wide: bool) -> PropertyOutcome {
        let (cc_value, shutdown_done) = {
            let st = self.lock();
            match st.controllers.get(&cntlid) {
                Some(a) => (a.cc, a.shutdown_done),
                None => return PropertyOutcome::Fail(code::COMMAND_SEQUENCE_ERROR),
            }
        };
        match (offset, wide) {
            (property::CAP, true) => PropertyOutcome::Value(self.cap()),
            (property::VS, false) => PropertyOutcome::Value(0x0001_0400),
            (property::CC, false) => PropertyOutcome::Value(cc_value as u64),
            (property::CSTS, false) => {
                let mut v = 0u32;
                if shutdown_done {
                    v |= csts::SHST_COMPLETE;
                }
                if cc_value & cc::EN != 0 {
                    match self.drive.rescan() {
                        Ok(()) => v |= csts::RDY,
                        Err(TransportError::NotReady { .. }) => {}
                        Err(e @ TransportError::Gone { .. }) => {
                            return PropertyOutcome::Gone(e.to_string())
                        }
                        Err(e) => {
                            tracing::warn!(nqn = %self.nqn, "the drive cannot be used: {e}");
                            v |= csts::CFS;
                        }
                    }
                }
                PropertyOutcome::Value(v as u64)
            }
            (property::NSSR, false) => PropertyOutcome::Value(0),
            _ => PropertyOutcome::Fail(code::INVALID_FIELD),
        }
    }

    /// Writes property `offset` for controller `cntlid`.
    pub(super) fn property_set(
        &self,
        cntlid: u16,
        offset: u32,
        wide: bool,
        value: u64,
    ) -> PropertyOutcome {
        if wide {
            return PropertyOutcome::Fail(code::INVALID_FIELD);
        }
        let value = value as u32;
        match offset {
            property::CC => {
                let old = {
                    let st = self.lock();
                    match st.controllers.get(&cntlid) {
                        Some(a) => a.cc,
                        None => return PropertyOutcome::Fail(code::COMMAND_SEQUENCE_ERROR),
                    }
                };
                let mut shutdown_done = None;
                if value & cc::SHN_MASK != 0 && old & cc::SHN_MASK == 0 {
                    match Passthru::shutdown(&self.drive) {
                        Some(Ok(done)) => shutdown_done = Some(done),
                        Some(Err(e)) => return self.failed("shutdown notification", e),
                        None => {}
                    }
                    tracing::info!(nqn = %self.nqn, cntlid, "shutdown notification");
                }
                if old & cc::EN != 0 && value & cc::EN == 0 {
                    // The host disables the controller: a controller reset.
                    if let Err(e) = self.drive.reset(ResetKind::Controller) {
                        return self.failed("controller reset", e);
                    }
                    tracing::info!(nqn = %self.nqn, cntlid, "controller reset (CC.EN cleared)");
                }
                let mut st = self.lock();
                let Some(a) = st.controllers.get_mut(&cntlid) else {
                    return PropertyOutcome::Fail(code::COMMAND_SEQUENCE_ERROR);
                };
                a.cc = value;
                if let Some(done) = shutdown_done {
                    a.shutdown_done = done;
                }
                if value & cc::EN != 0 && old & cc::EN == 0 {
                    a.shutdown_done = false;
                }
                PropertyOutcome::Value(0)
            }
            property::NSSR => {
                if value != property::NSSR_MAGIC {
                    return PropertyOutcome::Value(0);
                }
                match self.drive.reset(ResetKind::Subsystem) {
                    Ok(()) => {
                        tracing::info!(nqn = %self.nqn, "NVM subsystem reset");
                        PropertyOutcome::ResetSubsystem
                    }
                    Err(TransportError::Os { .. }) => PropertyOutcome::Fail(code::INVALID_FIELD),
                    Err(e) => self.failed("NVM subsystem reset", e),
                }
            }
            _ => PropertyOutcome::Fail(code::INVALID_FIELD),
        }
    }

    fn failed(&self, what: &str, e: TransportError) -> PropertyOutcome {
        match e {
            TransportError::Gone { .. } => PropertyOutcome::Gone(e.to_string()),
            other => {
                tracing::warn!(nqn = %self.nqn, "{what} failed: {other}");
                PropertyOutcome::Fail(code::INTERNAL_ERROR)
            }
        }
    }
}

/// Rewrites an Identify Controller answer for a fabrics host: the association's controller ID, the served NQN,
/// keep-alive support, SGL data blocks (with in-capsule offsets), the capsule sizes, one SGL descriptor, the
/// dynamic controller model and the queue depth.
pub(super) fn patch_identify(buf: &mut [u8], cntlid: u16, nqn: &str, opts: &TargetOptions) {
    if buf.len() < 4096 {
        return;
    }
    put_u16(buf, 78, cntlid);
    put_u8(buf, 111, 1); // an I/O controller
    put_u16(buf, 320, 1); // KAS: 100 ms granularity
    put_u16(buf, 514, QUEUE_ENTRIES); // MAXCMD
    put_u32(buf, 536, 1 | 1 << 20); // SGLS: data blocks, offsets for in-capsule data
    buf[768..1024].fill(0);
    let n = nqn.as_bytes();
    buf[768..768 + n.len().min(255)].copy_from_slice(&n[..n.len().min(255)]);
    put_u32(buf, 1792, (64 + opts.inline_data) / 16); // IOCCSZ
    put_u32(buf, 1796, 1); // IORCSZ
    put_u16(buf, 1800, 0); // ICDOFF
    put_u8(buf, 1802, 0); // FCATT: dynamic controller model
    put_u8(buf, 1803, 1); // MSDBD
}
