//! NVMe over Fabrics commands (opcode 7Fh): Connect, Property Get and Set, Disconnect; the controller properties
//! that replace a PCIe controller's registers (CAP, VS, CC, CSTS, NSSR) and their bits; the Connect command's
//! status codes. Layouts are those of the NVMe over Fabrics specification; nothing here performs I/O.

use crate::bytes::{ascii_at, u16_at, u32_at, u64_at, u8_at};

/// The Fabrics command opcode.
pub const OPCODE: u8 = 0x7F;

/// Fabrics command types (byte 4 of the submission queue entry).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECEIVE: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Property offsets.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version.
    pub const VS: u32 = 0x08;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset.
    pub const NSSR: u32 = 0x20;
    /// The value written to NSSR to reset the NVM subsystem ("NVMe").
    pub const NSSR_MAGIC: u32 = 0x4E56_4D65;
}

/// Controller Configuration bits.
pub mod cc {
    /// Enable.
    pub const EN: u32 = 1;
    /// Shutdown Notification (bits 15:14): 01b normal, 10b abrupt.
    pub const SHN_MASK: u32 = 0b11 << 14;
}

/// Controller Status bits.
pub mod csts {
    /// Ready.
    pub const RDY: u32 = 1;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
    /// Shutdown Status: shutdown processing complete (bits 3:2 = 10b).
    pub const SHST_COMPLETE: u32 = 0b10 << 2;
}

/// Status codes of Fabrics commands (status code type 1, command specific).
pub mod status {
    /// Connect: incompatible format (RECFMT).
    pub const CONNECT_INCOMPATIBLE_FORMAT: u16 = 0x180;
    /// Connect: the controller is busy (no more queues or controllers).
    pub const CONNECT_CONTROLLER_BUSY: u16 = 0x181;
    /// Connect: invalid parameters (the result's IATTR/IPO name which).
    pub const CONNECT_INVALID_PARAMETERS: u16 = 0x182;
    /// Connect: the host is not allowed.
    pub const CONNECT_INVALID_HOST: u16 = 0x184;
}

/// A Connect command's fields in the submission queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Record format (0).
    pub recfmt: u16,
    /// Queue ID: 0 for the admin queue.
    pub qid: u16,
    /// Submission queue size, zero-based.
    pub sqsize: u16,
    /// Connect attributes (bit 2: SQ flow control disabled).
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only; 0 = none).
    pub kato_ms: u32,
}

impl Connect {
    /// From the submission queue entry.
    pub fn of_sqe(sqe: &[u8; 64]) -> Self {
        Connect {
            recfmt: u16_at(sqe, 40),
            qid: u16_at(sqe, 42),
            sqsize: u16_at(sqe, 44),
            cattr: u8_at(sqe, 46),
            kato_ms: u32_at(sqe, 48),
        }
    }
}

/// The bytes of a Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;

/// The data a Connect command carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Controller ID: FFFFh asks for any (dynamic model) on the admin queue; an I/O queue names its controller.
    pub cntlid: u16,
    /// The NVM subsystem the host connects to.
    pub subnqn: String,
    /// The host's NQN.
    pub hostnqn: String,
}

impl ConnectData {
    /// From the 1024 data bytes.
    pub fn parse(b: &[u8]) -> Self {
        let mut hostid = [0u8; 16];
        let n = b.len().min(16);
        hostid[..n].copy_from_slice(&b[..n]);
        ConnectData {
            hostid,
            cntlid: u16_at(b, 16),
            subnqn: ascii_at(b, 256, 256),
            hostnqn: ascii_at(b, 512, 256),
        }
    }
    /// The 1024 data bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_LEN];
        b[..16].copy_from_slice(&self.hostid);
        b[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        let s = self.subnqn.as_bytes();
        b[256..256 + s.len().min(255)].copy_from_slice(&s[..s.len().min(255)]);
        let h = self.hostnqn.as_bytes();
        b[512..512 + h.len().min(255)].copy_from_slice(&h[..h.len().min(255)]);
        b
    }
}

/// The Invalid Parameters result of a failed Connect (Dword 0): the byte offset of the parameter (IPO, bits
/// 15:00) and where it is (IATTR, bit 16: 0 in the command, 1 in its data), as the Linux host decodes it and
/// the kernel's own target (nvmet) sends it.
pub fn invalid_parameter(in_data: bool, offset: u16) -> u32 {
    (in_data as u32) << 16 | offset as u32
}

/// A Property Get or Set command's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyAccess {
    /// 8-byte property (`true`) or 4-byte.
    pub wide: bool,
    /// Property offset ([`property`]).
    pub offset: u32,
    /// The value to set (Property Set only).
    pub value: u64,
}

impl PropertyAccess {
    /// From the submission queue entry.
    pub fn of_sqe(sqe: &[u8; 64]) -> Self {
        PropertyAccess {
            wide: u8_at(sqe, 40) & 0b111 == 1,
            offset: u32_at(sqe, 44),
            value: u64_at(sqe, 48),
        }
    }
}

/// The Fabrics command type of a submission queue entry.
pub fn fctype_of(sqe: &[u8; 64]) -> u8 {
    sqe[4]
}

/// The spec's name for a Fabrics command type.
pub fn fctype_name(t: u8) -> &'static str {
    match t {
        fctype::PROPERTY_SET => "Property Set",
        fctype::CONNECT => "Connect",
        fctype::PROPERTY_GET => "Property Get",
        fctype::AUTH_SEND => "Authentication Send",
        fctype::AUTH_RECEIVE => "Authentication Receive",
        fctype::DISCONNECT => "Disconnect",
        _ => "unknown Fabrics command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_fields_sit_where_the_spec_puts_them() {
        let mut sqe = [0u8; 64];
        sqe[0] = OPCODE;
        sqe[4] = fctype::CONNECT;
        sqe[42..44].copy_from_slice(&3u16.to_le_bytes());
        sqe[44..46].copy_from_slice(&127u16.to_le_bytes());
        sqe[48..52].copy_from_slice(&15000u32.to_le_bytes());
        let c = Connect::of_sqe(&sqe);
        assert_eq!((c.qid, c.sqsize, c.kato_ms), (3, 127, 15000));
        assert_eq!(fctype_of(&sqe), fctype::CONNECT);
        let d = ConnectData {
            hostid: [1; 16],
            cntlid: 0xffff,
            subnqn: "nqn.2024-01.dev.nvfarm:sim:X".into(),
            hostnqn: "nqn.host".into(),
        };
        assert_eq!(ConnectData::parse(&d.to_bytes()), d);
        // SUBNQN (byte 256 of the data), as nvmet answers an unknown subsystem and Linux logs it by name.
        assert_eq!(invalid_parameter(true, 256), 0x0001_0100);
        assert_eq!(invalid_parameter(false, 42), 42);
    }

    #[test]
    fn property_access_reads_size_offset_and_value() {
        let mut sqe = [0u8; 64];
        sqe[40] = 1;
        sqe[44..48].copy_from_slice(&property::CAP.to_le_bytes());
        let p = PropertyAccess::of_sqe(&sqe);
        assert!(p.wide);
        assert_eq!(p.offset, property::CAP);
        sqe[40] = 0;
        sqe[44..48].copy_from_slice(&property::CC.to_le_bytes());
        sqe[48..56].copy_from_slice(&0x460001u64.to_le_bytes());
        let p = PropertyAccess::of_sqe(&sqe);
        assert!(!p.wide);
        assert_eq!((p.offset, p.value), (property::CC, 0x460001));
    }
}
