//! NVMe submission queue entries: the 64-byte command and typed builders for the commands nvfarm sends.
//!
//! A [`Command`] carries the fields a host fills in (opcode, flags, namespace, CDW2/3 and CDW10-15); the data
//! pointer and length come from the buffer given to the transport, as in Linux's `nvme_passthru_cmd`. Builders
//! place each parameter at the bit position the NVMe Base Specification gives, and the accessor methods read them
//! back (the simulated controller decodes commands with them).

use serde::Serialize;

/// Admin command opcodes.
pub mod admin {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort the device self-test in progress.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Firmware Image Download.
    pub const FIRMWARE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Format NVM.
    pub const FORMAT_NVM: u8 = 0x80;
    /// Sanitize.
    pub const SANITIZE: u8 = 0x84;
}

/// NVM command set I/O opcodes.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Which queue a command goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// The admin queue.
    Admin,
    /// An I/O queue.
    Io,
}

/// The spec's name for an opcode on a queue.
pub fn opcode_name(queue: Queue, opcode: u8) -> &'static str {
    match queue {
        Queue::Admin => match opcode {
            0x00 => "Delete I/O Submission Queue",
            0x01 => "Create I/O Submission Queue",
            admin::GET_LOG_PAGE => "Get Log Page",
            0x04 => "Delete I/O Completion Queue",
            0x05 => "Create I/O Completion Queue",
            admin::IDENTIFY => "Identify",
            admin::ABORT => "Abort",
            admin::SET_FEATURES => "Set Features",
            admin::GET_FEATURES => "Get Features",
            admin::ASYNC_EVENT_REQUEST => "Asynchronous Event Request",
            0x0D => "Namespace Management",
            admin::FIRMWARE_COMMIT => "Firmware Commit",
            admin::FIRMWARE_DOWNLOAD => "Firmware Image Download",
            admin::DEVICE_SELF_TEST => "Device Self-test",
            0x15 => "Namespace Attachment",
            0x18 => "Keep Alive",
            0x7C => "Doorbell Buffer Config",
            admin::FORMAT_NVM => "Format NVM",
            0x81 => "Security Send",
            0x82 => "Security Receive",
            admin::SANITIZE => "Sanitize",
            0xC0..=0xFF => "Vendor Specific Admin Command",
            _ => "Unknown Admin Command",
        },
        Queue::Io => match opcode {
            io::FLUSH => "Flush",
            io::WRITE => "Write",
            io::READ => "Read",
            io::WRITE_UNCORRECTABLE => "Write Uncorrectable",
            io::COMPARE => "Compare",
            io::WRITE_ZEROES => "Write Zeroes",
            io::DATASET_MANAGEMENT => "Dataset Management",
            0x80..=0xFF => "Vendor Specific I/O Command",
            _ => "Unknown I/O Command",
        },
    }
}

/// Identify CNS values.
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NS_DESCRIPTORS: u8 = 0x03;
}

/// Firmware Commit actions (CDW10 bits 5:3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum CommitAction {
    /// 000b: downloaded image replaces the image in the slot; not activated.
    Replace = 0,
    /// 001b: downloaded image replaces the image in the slot and is activated at the next reset.
    ReplaceActivateOnReset = 1,
    /// 010b: the image already in the slot is activated at the next reset.
    ActivateOnReset = 2,
    /// 011b: downloaded (or, if none, existing) image in the slot is activated immediately, without reset.
    ActivateNow = 3,
}

impl CommitAction {
    /// The action with this CA value.
    pub fn from_value(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Replace,
            1 => Self::ReplaceActivateOnReset,
            2 => Self::ActivateOnReset,
            3 => Self::ActivateNow,
            _ => return None,
        })
    }
    /// What the action does, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Replace => "replace image in slot, no activation",
            Self::ReplaceActivateOnReset => "replace image in slot, activate at next reset",
            Self::ActivateOnReset => "activate existing image in slot at next reset",
            Self::ActivateNow => "replace image in slot and activate immediately",
        }
    }
}

/// Device Self-test codes (CDW10 bits 3:0).
pub mod self_test_code {
    /// Start a short device self-test.
    pub const SHORT: u8 = 0x1;
    /// Start an extended device self-test.
    pub const EXTENDED: u8 = 0x2;
    /// Abort the device self-test in progress.
    pub const ABORT: u8 = 0xF;
}

/// Sanitize actions (CDW10 bits 2:0).
pub mod sanitize_action {
    /// Exit Failure Mode.
    pub const EXIT_FAILURE_MODE: u8 = 1;
    /// Block Erase.
    pub const BLOCK_ERASE: u8 = 2;
    /// Overwrite.
    pub const OVERWRITE: u8 = 3;
    /// Crypto Erase.
    pub const CRYPTO_ERASE: u8 = 4;
}

/// The host-filled part of a 64-byte NVMe submission queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// Opcode (CDW0 bits 7:0).
    pub opcode: u8,
    /// Fused operation and PSDT (CDW0 bits 15:8).
    pub flags: u8,
    /// Namespace Identifier.
    pub nsid: u32,
    /// Command Dword 2.
    pub cdw2: u32,
    /// Command Dword 3.
    pub cdw3: u32,
    /// Command Dword 10.
    pub cdw10: u32,
    /// Command Dword 11.
    pub cdw11: u32,
    /// Command Dword 12.
    pub cdw12: u32,
    /// Command Dword 13.
    pub cdw13: u32,
    /// Command Dword 14.
    pub cdw14: u32,
    /// Command Dword 15.
    pub cdw15: u32,
}

/// Namespace ID meaning "all namespaces" / "not namespace specific".
pub const NSID_ALL: u32 = 0xFFFF_FFFF;

impl Command {
    /// A command with `opcode` and every other field zero.
    pub fn new(opcode: u8) -> Self {
        Command {
            opcode,
            ..Default::default()
        }
    }

    // ----- admin builders -------------------------------------------------------------------------------

    /// Identify (CNS in CDW10 bits 7:0).
    pub fn identify(cns_value: u8, nsid: u32) -> Self {
        Command {
            opcode: admin::IDENTIFY,
            nsid,
            cdw10: cns_value as u32,
            ..Default::default()
        }
    }

    /// Get Log Page for `len` bytes (a multiple of 4) at byte `offset`. NUMD is zero-based and split into
    /// NUMDL (CDW10 31:16) and NUMDU (CDW11 15:0); LSP is CDW10 14:8, RAE bit 15; LPO is CDW12/13.
    pub fn get_log_page(lid: u8, nsid: u32, len: u32, offset: u64, lsp: u8, rae: bool) -> Self {
        let numd = (len / 4).saturating_sub(1);
        Command {
            opcode: admin::GET_LOG_PAGE,
            nsid,
            cdw10: lid as u32
                | ((lsp as u32 & 0x7f) << 8)
                | ((rae as u32) << 15)
                | ((numd & 0xffff) << 16),
            cdw11: numd >> 16,
            cdw12: offset as u32,
            cdw13: (offset >> 32) as u32,
            ..Default::default()
        }
    }

    /// Get Features: FID in CDW10 7:0, SEL in 10:8.
    pub fn get_features(fid: u8, sel: u8, nsid: u32, cdw11: u32) -> Self {
        Command {
            opcode: admin::GET_FEATURES,
            nsid,
            cdw10: fid as u32 | ((sel as u32 & 0x7) << 8),
            cdw11,
            ..Default::default()
        }
    }

    /// Set Features: FID in CDW10 7:0, Save bit 31, value in CDW11.
    pub fn set_features(fid: u8, value: u32, save: bool, nsid: u32) -> Self {
        Command {
            opcode: admin::SET_FEATURES,
            nsid,
            cdw10: fid as u32 | ((save as u32) << 31),
            cdw11: value,
            ..Default::default()
        }
    }

    /// Firmware Image Download of `len` bytes at byte `offset` (both multiples of 4): NUMD (zero-based dword
    /// count) in CDW10, OFST (dword offset) in CDW11.
    pub fn firmware_download(offset: u64, len: u32) -> Self {
        Command {
            opcode: admin::FIRMWARE_DOWNLOAD,
            cdw10: (len / 4).saturating_sub(1),
            cdw11: (offset / 4) as u32,
            ..Default::default()
        }
    }

    /// Firmware Commit: slot in CDW10 2:0 (0 = controller chooses), action in 5:3.
    pub fn firmware_commit(slot: u8, action: CommitAction) -> Self {
        Command {
            opcode: admin::FIRMWARE_COMMIT,
            cdw10: (slot as u32 & 0x7) | ((action as u32) << 3),
            ..Default::default()
        }
    }

    /// Device Self-test: code in CDW10 3:0.
    pub fn device_self_test(nsid: u32, code: u8) -> Self {
        Command {
            opcode: admin::DEVICE_SELF_TEST,
            nsid,
            cdw10: code as u32 & 0xf,
            ..Default::default()
        }
    }

    /// Format NVM: LBAF 3:0, MSET 4, PI 7:5, PIL 8, SES 11:9.
    pub fn format_nvm(nsid: u32, lbaf: u8, ses: u8) -> Self {
        Command {
            opcode: admin::FORMAT_NVM,
            nsid,
            cdw10: (lbaf as u32 & 0xf) | ((ses as u32 & 0x7) << 9),
            ..Default::default()
        }
    }

    /// Sanitize: SANACT 2:0, AUSE 3, OWPASS 7:4, OIPBP 8, NDAS 9; overwrite pattern in CDW11.
    pub fn sanitize(action: u8, allow_unrestricted_exit: bool, overwrite_pattern: u32) -> Self {
        Command {
            opcode: admin::SANITIZE,
            cdw10: (action as u32 & 0x7) | ((allow_unrestricted_exit as u32) << 3) | (1 << 4),
            cdw11: overwrite_pattern,
            ..Default::default()
        }
    }

    // ----- I/O builders ---------------------------------------------------------------------------------

    /// Read/Write/Compare style: SLBA in CDW10/11, zero-based NLB in CDW12 15:0.
    fn lba_command(opcode: u8, nsid: u32, slba: u64, blocks: u32) -> Self {
        Command {
            opcode,
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: blocks.saturating_sub(1) & 0xffff,
            ..Default::default()
        }
    }
    /// Read `blocks` logical blocks from `slba` of namespace `nsid`.
    pub fn read(nsid: u32, slba: u64, blocks: u32) -> Self {
        Self::lba_command(io::READ, nsid, slba, blocks)
    }
    /// Write `blocks` logical blocks at `slba` of namespace `nsid`.
    pub fn write(nsid: u32, slba: u64, blocks: u32) -> Self {
        Self::lba_command(io::WRITE, nsid, slba, blocks)
    }
    /// Compare `blocks` logical blocks at `slba` of namespace `nsid` with the data sent.
    pub fn compare(nsid: u32, slba: u64, blocks: u32) -> Self {
        Self::lba_command(io::COMPARE, nsid, slba, blocks)
    }
    /// Write Zeroes; `deallocate` sets DEAC (CDW12 bit 25).
    pub fn write_zeroes(nsid: u32, slba: u64, blocks: u32, deallocate: bool) -> Self {
        let mut c = Self::lba_command(io::WRITE_ZEROES, nsid, slba, blocks);
        c.cdw12 |= (deallocate as u32) << 25;
        c
    }
    /// Write Uncorrectable: `blocks` blocks at `slba` read back as Unrecovered Read Error until written again.
    pub fn write_uncorrectable(nsid: u32, slba: u64, blocks: u32) -> Self {
        Self::lba_command(io::WRITE_UNCORRECTABLE, nsid, slba, blocks)
    }
    /// Dataset Management over `ranges` ranges (1-256, sent as data: [`DsmRange::encode`]); `deallocate` sets
    /// AD (CDW11 bit 2).
    pub fn dataset_management(nsid: u32, ranges: u32, deallocate: bool) -> Self {
        Command {
            opcode: io::DATASET_MANAGEMENT,
            nsid,
            cdw10: ranges.saturating_sub(1) & 0xff,
            cdw11: (deallocate as u32) << 2,
            ..Default::default()
        }
    }
    /// Flush namespace `nsid`'s volatile write cache.
    pub fn flush(nsid: u32) -> Self {
        Command {
            opcode: io::FLUSH,
            nsid,
            ..Default::default()
        }
    }
    /// Force Unit Access (CDW12 bit 30) on a Read/Write.
    pub fn with_fua(mut self) -> Self {
        self.cdw12 |= 1 << 30;
        self
    }

    // ----- accessors (decoding) -------------------------------------------------------------------------

    /// Identify's Controller or Namespace Structure (CDW10 bits 7:0).
    pub fn cns(&self) -> u8 {
        self.cdw10 as u8
    }
    /// Get Log Page's Log Page Identifier (CDW10 bits 7:0).
    pub fn log_id(&self) -> u8 {
        self.cdw10 as u8
    }
    /// Get Log Page's Log Specific Field (CDW10 bits 11:8).
    pub fn log_specific(&self) -> u8 {
        ((self.cdw10 >> 8) & 0x7f) as u8
    }
    /// Get Log Page transfer length in bytes.
    pub fn log_len(&self) -> u64 {
        ((((self.cdw11 & 0xffff) as u64) << 16 | (self.cdw10 >> 16) as u64) + 1) * 4
    }
    /// Get Log Page's byte offset (CDW12/CDW13).
    pub fn log_offset(&self) -> u64 {
        (self.cdw13 as u64) << 32 | self.cdw12 as u64
    }
    /// Get/Set Features' Feature Identifier (CDW10 bits 7:0).
    pub fn feature_id(&self) -> u8 {
        self.cdw10 as u8
    }
    /// Get Features' Select (CDW10 bits 10:8).
    pub fn feature_select(&self) -> u8 {
        ((self.cdw10 >> 8) & 0x7) as u8
    }
    /// Set Features' Save bit (CDW10 bit 31).
    pub fn feature_save(&self) -> bool {
        self.cdw10 >> 31 != 0
    }
    /// Firmware Image Download (offset, length) in bytes.
    pub fn fw_download_range(&self) -> (u64, u64) {
        (self.cdw11 as u64 * 4, (self.cdw10 as u64 + 1) * 4)
    }
    /// Firmware Commit's Firmware Slot (CDW10 bits 2:0).
    pub fn fw_slot(&self) -> u8 {
        (self.cdw10 & 0x7) as u8
    }
    /// Raw commit action value (CDW10 5:3).
    pub fn fw_commit_action(&self) -> u8 {
        ((self.cdw10 >> 3) & 0x7) as u8
    }
    /// Device Self-test's Self-test Code (CDW10 bits 3:0).
    pub fn self_test_code(&self) -> u8 {
        (self.cdw10 & 0xf) as u8
    }
    /// Format NVM's LBA Format (CDW10 bits 3:0).
    pub fn format_lbaf(&self) -> u8 {
        (self.cdw10 & 0xf) as u8
    }
    /// Format NVM's Secure Erase Settings (CDW10 bits 11:9).
    pub fn format_ses(&self) -> u8 {
        ((self.cdw10 >> 9) & 0x7) as u8
    }
    /// Sanitize's Sanitize Action (CDW10 bits 2:0).
    pub fn sanitize_action(&self) -> u8 {
        (self.cdw10 & 0x7) as u8
    }
    /// An I/O command's Starting LBA (CDW10/CDW11).
    pub fn slba(&self) -> u64 {
        (self.cdw11 as u64) << 32 | self.cdw10 as u64
    }
    /// Number of logical blocks (one-based).
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xffff) + 1
    }
    /// Write Zeroes' Deallocate bit (CDW12 bit 25).
    pub fn deallocate(&self) -> bool {
        self.cdw12 & (1 << 25) != 0
    }

    /// The command a submission queue entry carries and its command identifier (the data pointer is the
    /// transport's; PSDT is cleared).
    pub fn from_sqe(b: &[u8; 64]) -> (Self, u16) {
        let dw =
            |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        (
            Command {
                opcode: b[0],
                flags: b[1] & 0x3f,
                nsid: dw(1),
                cdw2: dw(2),
                cdw3: dw(3),
                cdw10: dw(10),
                cdw11: dw(11),
                cdw12: dw(12),
                cdw13: dw(13),
                cdw14: dw(14),
                cdw15: dw(15),
            },
            u16::from_le_bytes([b[2], b[3]]),
        )
    }

    /// The 64-byte submission queue entry, with command identifier `cid` and no data pointer (the transport
    /// supplies PRPs). Used by io_uring passthrough and for logging.
    pub fn to_sqe(&self, cid: u16) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&cid.to_le_bytes());
        let dwords = [
            (1, self.nsid),
            (2, self.cdw2),
            (3, self.cdw3),
            (10, self.cdw10),
            (11, self.cdw11),
            (12, self.cdw12),
            (13, self.cdw13),
            (14, self.cdw14),
            (15, self.cdw15),
        ];
        for (i, v) in dwords {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_survives_its_submission_queue_entry() {
        let c = Command::get_log_page(2, NSID_ALL, 512, 4096, 1, true);
        let sqe = c.to_sqe(0x1234);
        assert_eq!(Command::from_sqe(&sqe), (c, 0x1234));
    }

    #[test]
    fn get_log_page_splits_numd_and_offset() {
        // 512-byte SMART log: NUMD = 127 (zero-based dwords) in NUMDL.
        let c = Command::get_log_page(0x02, NSID_ALL, 512, 0, 0, false);
        assert_eq!(c.cdw10, 0x02 | (127 << 16));
        assert_eq!(c.cdw11, 0);
        assert_eq!(c.log_len(), 512);
        // 1 MiB at a 6 GiB offset with RAE: NUMD = 0x3ffff → NUMDL 0xffff, NUMDU 0x3.
        let c = Command::get_log_page(0x01, 0, 1 << 20, 6 << 30, 0, true);
        assert_eq!(c.cdw10 >> 16, 0xffff);
        assert_eq!(c.cdw10 & (1 << 15), 1 << 15);
        assert_eq!(c.cdw11, 0x3);
        assert_eq!(c.log_len(), 1 << 20);
        assert_eq!(c.cdw12, 0x8000_0000);
        assert_eq!(c.cdw13, 1);
        assert_eq!(c.log_offset(), 6 << 30);
    }

    #[test]
    fn firmware_commands_place_fields_per_spec() {
        let d = Command::firmware_download(0x10000, 4096);
        assert_eq!(d.opcode, 0x11);
        assert_eq!(d.cdw10, 1023, "NUMD is zero-based dwords");
        assert_eq!(d.cdw11, 0x4000, "OFST is in dwords");
        assert_eq!(d.fw_download_range(), (0x10000, 4096));
        let c = Command::firmware_commit(2, CommitAction::ActivateNow);
        assert_eq!(c.opcode, 0x10);
        assert_eq!(c.cdw10, 0b011_010);
        assert_eq!(c.fw_slot(), 2);
        assert_eq!(c.fw_commit_action(), 3);
        for v in 0..4 {
            assert_eq!(CommitAction::from_value(v).unwrap() as u8, v);
        }
        assert!(CommitAction::from_value(6).is_none());
    }

    #[test]
    fn io_commands_use_zero_based_nlb() {
        let r = Command::read(1, 0x1_0000_0002, 8).with_fua();
        assert_eq!(r.opcode, io::READ);
        assert_eq!((r.cdw10, r.cdw11), (2, 1));
        assert_eq!(r.cdw12 & 0xffff, 7);
        assert_eq!(r.nlb(), 8);
        assert_eq!(r.slba(), 0x1_0000_0002);
        assert!(r.cdw12 & (1 << 30) != 0);
        let z = Command::write_zeroes(1, 0, 1, true);
        assert!(z.deallocate());
    }

    #[test]
    fn admin_builders_encode_their_fields() {
        assert_eq!(Command::identify(cns::CONTROLLER, 0).cdw10, 1);
        let f = Command::get_features(0x04, 3, 0, 0);
        assert_eq!((f.feature_id(), f.feature_select()), (4, 3));
        let s = Command::set_features(0x06, 1, true, 0);
        assert!(s.feature_save());
        assert_eq!(s.cdw11, 1);
        let fmt = Command::format_nvm(1, 1, 1);
        assert_eq!(fmt.cdw10, 1 | (1 << 9));
        assert_eq!((fmt.format_lbaf(), fmt.format_ses()), (1, 1));
        let st = Command::device_self_test(NSID_ALL, self_test_code::EXTENDED);
        assert_eq!(st.self_test_code(), 2);
        let san = Command::sanitize(sanitize_action::CRYPTO_ERASE, false, 0);
        assert_eq!(san.sanitize_action(), 4);
    }

    #[test]
    fn sqe_layout_matches_spec_offsets() {
        let c = Command {
            opcode: 0x02,
            nsid: 1,
            cdw10: 0xAABBCCDD,
            cdw15: 0x11223344,
            ..Default::default()
        };
        let sqe = c.to_sqe(0x1234);
        assert_eq!(sqe[0], 0x02);
        assert_eq!(&sqe[2..4], &[0x34, 0x12]);
        assert_eq!(&sqe[4..8], &1u32.to_le_bytes());
        assert_eq!(&sqe[40..44], &0xAABBCCDDu32.to_le_bytes());
        assert_eq!(&sqe[60..64], &0x11223344u32.to_le_bytes());
    }

    #[test]
    fn names_opcodes() {
        assert_eq!(opcode_name(Queue::Admin, 0x11), "Firmware Image Download");
        assert_eq!(opcode_name(Queue::Io, 0x02), "Read");
        assert_eq!(
            opcode_name(Queue::Admin, 0xC1),
            "Vendor Specific Admin Command"
        );
    }
}

/// One range of a Dataset Management command (16 bytes: context attributes, length in blocks, starting LBA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmRange {
    /// Context attributes (access hints).
    pub attributes: u32,
    /// Length in logical blocks (not zeroes-based).
    pub blocks: u32,
    /// Starting LBA.
    pub slba: u64,
}

impl DsmRange {
    /// Bytes per range on the wire.
    pub const SIZE: usize = 16;

    /// The ranges as the command's data.
    pub fn encode(ranges: &[DsmRange]) -> Vec<u8> {
        let mut b = Vec::with_capacity(ranges.len() * Self::SIZE);
        for r in ranges {
            b.extend_from_slice(&r.attributes.to_le_bytes());
            b.extend_from_slice(&r.blocks.to_le_bytes());
            b.extend_from_slice(&r.slba.to_le_bytes());
        }
        b
    }

    /// The first `count` ranges of a command's data (`None` if the data is shorter).
    pub fn decode(b: &[u8], count: usize) -> Option<Vec<DsmRange>> {
        if b.len() < count * Self::SIZE {
            return None;
        }
        Some(
            b.chunks_exact(Self::SIZE)
                .take(count)
                .map(|c| DsmRange {
                    attributes: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    blocks: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    slba: u64::from_le_bytes([
                        c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15],
                    ]),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod dsm_tests {
    use super::*;

    #[test]
    fn dsm_ranges_round_trip_in_the_specs_layout() {
        let r = [
            DsmRange {
                attributes: 0x0102_0304,
                blocks: 8,
                slba: 0x1122_3344_5566_7788,
            },
            DsmRange {
                attributes: 0,
                blocks: 1,
                slba: 0,
            },
        ];
        let b = DsmRange::encode(&r);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..4], &[4, 3, 2, 1], "context attributes, little endian");
        assert_eq!(&b[4..8], &[8, 0, 0, 0]);
        assert_eq!(b[8], 0x88);
        assert_eq!(DsmRange::decode(&b, 2).unwrap(), r);
        assert_eq!(DsmRange::decode(&b[..31], 2), None);
        let c = Command::dataset_management(1, 2, true);
        assert_eq!((c.cdw10, c.cdw11), (1, 4));
    }
}
