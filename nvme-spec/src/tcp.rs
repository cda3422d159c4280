//! NVMe/TCP transport PDUs (NVMe over Fabrics TCP Transport Specification 1.0): their layout on the wire, the
//! checks a receiver makes before trusting a header, and the digests (CRC32C) that may protect headers and data.
//!
//! Every PDU starts with an 8-byte common header (type, flags, header length, data offset, total length). A
//! receiver reads those 8 bytes, checks them with [`Header::check`] (so a hostile length cannot make it allocate
//! or wait for more than it allows), reads the rest of the PDU and decodes it with [`Pdu::decode`]. A header that
//! fails a check is a fatal transport error: the receiver answers with a termination request naming the fatal
//! error status ([`fes`]) and the byte offset of the field at fault ([`PduError::fei`]), and closes the
//! connection. Nothing here performs I/O.

use crate::bytes::{put_u16, put_u32, u16_at, u32_at};

/// PDU types.
pub mod pdu_type {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: u8 = 0x00;
    /// Initialize Connection Response.
    pub const IC_RESP: u8 = 0x01;
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM_REQ: u8 = 0x02;
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM_REQ: u8 = 0x03;
    /// Command capsule.
    pub const CAPSULE_CMD: u8 = 0x04;
    /// Response capsule.
    pub const CAPSULE_RESP: u8 = 0x05;
    /// Host to Controller Data.
    pub const H2C_DATA: u8 = 0x06;
    /// Controller to Host Data.
    pub const C2H_DATA: u8 = 0x07;
    /// Ready to Transfer.
    pub const R2T: u8 = 0x09;
}

/// Common header flags.
pub mod flags {
    /// A header digest follows the PDU header.
    pub const HDGST: u8 = 0x01;
    /// A data digest follows the PDU data.
    pub const DDGST: u8 = 0x02;
    /// The last data PDU of a command's transfer.
    pub const DATA_LAST: u8 = 0x04;
    /// C2HData only: the command succeeded and no response capsule follows.
    pub const DATA_SUCCESS: u8 = 0x08;
}

/// Fatal error statuses of a termination request.
pub mod fes {
    /// A PDU header field is invalid.
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    /// A PDU arrived that the protocol does not allow now.
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    /// The header digest does not match the header.
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    /// A data PDU names bytes outside the command's transfer.
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    /// More data than the receiver accepts in one PDU.
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    /// A parameter the receiver does not support.
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// Protocol format version 1.0, the only one defined.
pub const PFV_1_0: u16 = 0;
/// Bytes of the common header every PDU starts with.
pub const COMMON_HEADER_LEN: usize = 8;
/// Bytes of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// The smallest MAXH2CDATA a controller may offer.
pub const MIN_MAXH2CDATA: u32 = 4096;
/// The well-known NVMe/TCP port (I/O controllers).
pub const DEFAULT_PORT: u16 = 4420;
/// The most header data a termination request carries back (the PDU is at most 152 bytes).
const TERM_REQ_MAX_DATA: usize = 128;

/// Which digests a connection uses (agreed in ICReq/ICResp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// Header digest (HDGST).
    pub header: bool,
    /// Data digest (DDGST).
    pub data: bool,
}

impl Digests {
    /// From the ICReq/ICResp DGST byte.
    pub fn from_byte(b: u8) -> Self {
        Digests {
            header: b & 1 != 0,
            data: b & 2 != 0,
        }
    }
    /// The ICReq/ICResp DGST byte.
    pub fn to_byte(self) -> u8 {
        self.header as u8 | (self.data as u8) << 1
    }
}

/// The CRC32C digest NVMe/TCP uses.
pub fn digest(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The 8-byte common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// PDU type ([`pdu_type`]).
    pub pdu_type: u8,
    /// Flags ([`flags`]).
    pub flags: u8,
    /// Header length (common header plus the type-specific header).
    pub hlen: u8,
    /// PDU data offset: where data starts, 0 for none.
    pub pdo: u8,
    /// Total PDU length, header, digests and padding included.
    pub plen: u32,
}

/// A PDU the receiver cannot accept: the connection ends with a termination request carrying `fes` and `fei`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (fatal error status {fes:#04x}, field at byte {fei})")]
pub struct PduError {
    /// Fatal error status ([`fes`]).
    pub fes: u16,
    /// Fatal error information: the byte offset of the bad field in the PDU header.
    pub fei: u32,
    /// What was wrong, for logs.
    pub reason: String,
}

fn bad(fes: u16, fei: u32, reason: impl Into<String>) -> PduError {
    PduError {
        fes,
        fei,
        reason: reason.into(),
    }
}

/// The header length each PDU type has.
fn expected_hlen(pdu_type: u8) -> Option<u8> {
    Some(match pdu_type {
        pdu_type::IC_REQ | pdu_type::IC_RESP => 128,
        pdu_type::CAPSULE_CMD => 72,
        pdu_type::H2C_TERM_REQ
        | pdu_type::C2H_TERM_REQ
        | pdu_type::CAPSULE_RESP
        | pdu_type::H2C_DATA
        | pdu_type::C2H_DATA
        | pdu_type::R2T => 24,
        _ => return None,
    })
}

/// Whether a PDU of this type may carry data.
fn carries_data(pdu_type: u8) -> bool {
    matches!(
        pdu_type,
        pdu_type::CAPSULE_CMD | pdu_type::H2C_DATA | pdu_type::C2H_DATA
    )
}

impl Header {
    /// Reads the common header.
    pub fn parse(b: &[u8; COMMON_HEADER_LEN]) -> Self {
        Header {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32_at(b, 4),
        }
    }

    /// Checks the header before the rest of the PDU is read: a known type with its header length, digest flags
    /// as agreed on the connection, a total length that holds the header and at most `max_data` bytes of data,
    /// and a data offset inside the PDU. Initialize Connection PDUs never carry digests.
    pub fn check(&self, digests: Digests, max_data: u32) -> Result<(), PduError> {
        let Some(hlen) = expected_hlen(self.pdu_type) else {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                0,
                format!("unknown PDU type {:#04x}", self.pdu_type),
            ));
        };
        if self.hlen != hlen {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                2,
                format!(
                    "PDU type {:#04x} has a {}-byte header, not {}",
                    self.pdu_type, hlen, self.hlen
                ),
            ));
        }
        let ic = matches!(self.pdu_type, pdu_type::IC_REQ | pdu_type::IC_RESP);
        let hdgst = !ic && digests.header;
        if !ic && (self.flags & flags::HDGST != 0) != digests.header {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                1,
                "the header digest flag does not match what the connection agreed",
            ));
        }
        let ddgst = self.flags & flags::DDGST != 0;
        if ddgst && (ic || !digests.data || !carries_data(self.pdu_type)) {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                1,
                "a data digest flag on a PDU or connection without data digests",
            ));
        }
        let header_end = hlen as u32 + if hdgst { DIGEST_LEN as u32 } else { 0 };
        if self.plen < header_end {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                4,
                format!(
                    "PDU length {} is shorter than its header ({header_end} bytes)",
                    self.plen
                ),
            ));
        }
        if !carries_data(self.pdu_type) {
            let max = if matches!(
                self.pdu_type,
                pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ
            ) {
                header_end + TERM_REQ_MAX_DATA as u32
            } else {
                header_end
            };
            if self.plen > max || (self.pdo != 0 && !is_term(self.pdu_type)) {
                return Err(bad(
                    fes::INVALID_HEADER_FIELD,
                    4,
                    format!(
                        "PDU type {:#04x} carries no data, but its length is {}",
                        self.pdu_type, self.plen
                    ),
                ));
            }
            return Ok(());
        }
        if self.plen == header_end {
            if self.pdo != 0 && self.pdo as u32 != header_end {
                return Err(bad(
                    fes::INVALID_HEADER_FIELD,
                    3,
                    "a data offset on a PDU without data",
                ));
            }
            return if self.pdu_type == pdu_type::CAPSULE_CMD {
                Ok(())
            } else {
                Err(bad(fes::INVALID_HEADER_FIELD, 4, "a data PDU without data"))
            };
        }
        let pdo = self.pdo as u32;
        let tail = if ddgst { DIGEST_LEN as u32 } else { 0 };
        if pdo < header_end || pdo + tail > self.plen {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                3,
                format!(
                    "data offset {pdo} is outside the PDU (header ends at {header_end}, length {})",
                    self.plen
                ),
            ));
        }
        let data = self.plen - pdo - tail;
        if data == 0 && self.pdu_type != pdu_type::CAPSULE_CMD {
            // Found by fuzzing: a data offset with nothing after it (or only a digest) is a data PDU without data.
            return Err(bad(fes::INVALID_HEADER_FIELD, 4, "a data PDU without data"));
        }
        if data > max_data {
            return Err(bad(
                fes::DATA_LIMIT_EXCEEDED,
                4,
                format!("{data} bytes of data in one PDU; at most {max_data} are accepted"),
            ));
        }
        Ok(())
    }
}

/// A data PDU's DATAL (bytes 16-19) must be the data it carries.
fn check_datal(b: &[u8], data: &[u8]) -> Result<(), PduError> {
    let datal = u32_at(b, 16);
    if datal as usize != data.len() {
        return Err(bad(
            fes::INVALID_HEADER_FIELD,
            16,
            format!("DATAL says {datal} bytes but the PDU holds {}", data.len()),
        ));
    }
    Ok(())
}

fn is_term(t: u8) -> bool {
    matches!(t, pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ)
}

/// A decoded PDU and whether its data matched its data digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The PDU.
    pub pdu: Pdu,
    /// False when the PDU carried a data digest its data does not match.
    pub data_digest_ok: bool,
}

/// One PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// Initialize Connection Request.
    IcReq {
        /// Protocol format version.
        pfv: u16,
        /// Host PDU data alignment: data in controller PDUs starts at a multiple of (hpda + 1) * 4 bytes.
        hpda: u8,
        /// The digests the host asks for.
        digests: Digests,
        /// Maximum outstanding R2Ts per command, zero-based.
        maxr2t: u32,
    },
    /// Initialize Connection Response.
    IcResp {
        /// Protocol format version.
        pfv: u16,
        /// Controller PDU data alignment.
        cpda: u8,
        /// The digests the connection uses.
        digests: Digests,
        /// The most data the host may put in one H2CData PDU.
        maxh2cdata: u32,
    },
    /// A terminate request, either way.
    TermReq {
        /// Host to controller (`true`) or controller to host.
        from_host: bool,
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
        /// The start of the PDU header at fault.
        header: Vec<u8>,
    },
    /// A command capsule: the 64-byte submission queue entry and any in-capsule data.
    CapsuleCmd {
        /// The submission queue entry.
        sqe: [u8; 64],
        /// In-capsule data.
        data: Vec<u8>,
    },
    /// A response capsule: the 16-byte completion queue entry.
    CapsuleResp {
        /// The completion queue entry.
        cqe: [u8; 16],
    },
    /// Data for a command, host to controller, answering an R2T.
    H2CData {
        /// The command's identifier.
        cccid: u16,
        /// The R2T's transfer tag.
        ttag: u16,
        /// Offset of this data in the command's buffer.
        datao: u32,
        /// The last PDU of the R2T's transfer.
        last: bool,
        /// The data.
        data: Vec<u8>,
    },
    /// Data for a command, controller to host.
    C2HData {
        /// The command's identifier.
        cccid: u16,
        /// Offset of this data in the command's buffer.
        datao: u32,
        /// The last PDU of the command's data.
        last: bool,
        /// The command succeeded; no response capsule follows.
        success: bool,
        /// The data.
        data: Vec<u8>,
    },
    /// Ready to Transfer: the controller asks for a command's data.
    R2T {
        /// The command's identifier.
        cccid: u16,
        /// Transfer tag the host echoes in its H2CData.
        ttag: u16,
        /// Offset of the requested data.
        r2to: u32,
        /// Length of the requested data.
        r2tl: u32,
    },
}

impl Pdu {
    /// Decodes a PDU from its checked header and the `plen - 8` bytes after the common header. A data digest
    /// that does not match is not fatal to the connection (the command fails with a transient transport error):
    /// the PDU decodes and [`Decoded::data_digest_ok`] says so.
    pub fn decode(h: &Header, rest: &[u8], digests: Digests) -> Result<Decoded, PduError> {
        let mut full = Vec::with_capacity(COMMON_HEADER_LEN + rest.len());
        full.extend_from_slice(&[h.pdu_type, h.flags, h.hlen, h.pdo]);
        full.extend_from_slice(&h.plen.to_le_bytes());
        full.extend_from_slice(rest);
        if full.len() as u64 != h.plen as u64 {
            return Err(bad(
                fes::INVALID_HEADER_FIELD,
                4,
                format!("PDU length {} but {} bytes given", h.plen, full.len()),
            ));
        }
        let b = &full[..];
        let hlen = h.hlen as usize;
        let ic = matches!(h.pdu_type, pdu_type::IC_REQ | pdu_type::IC_RESP);
        if !ic && digests.header {
            let want = u32_at(b, hlen);
            if digest(&b[..hlen]) != want {
                return Err(bad(
                    fes::HEADER_DIGEST_ERROR,
                    0,
                    "the header digest does not match the header",
                ));
            }
        }
        let mut data_digest_ok = true;
        let data = if h.pdo == 0 || !carries_data(h.pdu_type) {
            Vec::new()
        } else {
            let ddgst = h.flags & flags::DDGST != 0;
            let end = b.len() - if ddgst { DIGEST_LEN } else { 0 };
            let data = b[h.pdo as usize..end].to_vec();
            data_digest_ok = !ddgst || digest(&data) == u32_at(b, end);
            data
        };
        let pdu = match h.pdu_type {
            pdu_type::IC_REQ => Pdu::IcReq {
                pfv: u16_at(b, 8),
                hpda: b[10],
                digests: Digests::from_byte(b[11]),
                maxr2t: u32_at(b, 12),
            },
            pdu_type::IC_RESP => Pdu::IcResp {
                pfv: u16_at(b, 8),
                cpda: b[10],
                digests: Digests::from_byte(b[11]),
                maxh2cdata: u32_at(b, 12),
            },
            pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => Pdu::TermReq {
                from_host: h.pdu_type == pdu_type::H2C_TERM_REQ,
                fes: u16_at(b, 8),
                fei: u32_at(b, 10),
                header: b[(hlen + if digests.header { DIGEST_LEN } else { 0 }).min(b.len())..]
                    .to_vec(),
            },
            pdu_type::CAPSULE_CMD => {
                let mut sqe = [0u8; 64];
                sqe.copy_from_slice(&b[8..72]);
                Pdu::CapsuleCmd { sqe, data }
            }
            pdu_type::CAPSULE_RESP => {
                let mut cqe = [0u8; 16];
                cqe.copy_from_slice(&b[8..24]);
                Pdu::CapsuleResp { cqe }
            }
            pdu_type::H2C_DATA => {
                check_datal(b, &data)?;
                Pdu::H2CData {
                    cccid: u16_at(b, 8),
                    ttag: u16_at(b, 10),
                    datao: u32_at(b, 12),
                    last: h.flags & flags::DATA_LAST != 0,
                    data,
                }
            }
            pdu_type::C2H_DATA => {
                check_datal(b, &data)?;
                Pdu::C2HData {
                    cccid: u16_at(b, 8),
                    datao: u32_at(b, 12),
                    last: h.flags & flags::DATA_LAST != 0,
                    success: h.flags & flags::DATA_SUCCESS != 0,
                    data,
                }
            }
            pdu_type::R2T => Pdu::R2T {
                cccid: u16_at(b, 8),
                ttag: u16_at(b, 10),
                r2to: u32_at(b, 12),
                r2tl: u32_at(b, 16),
            },
            other => {
                return Err(bad(
                    fes::INVALID_HEADER_FIELD,
                    0,
                    format!("unknown PDU type {other:#04x}"),
                ))
            }
        };
        Ok(Decoded {
            pdu,
            data_digest_ok,
        })
    }

    /// The PDU's type.
    pub fn pdu_type(&self) -> u8 {
        match self {
            Pdu::IcReq { .. } => pdu_type::IC_REQ,
            Pdu::IcResp { .. } => pdu_type::IC_RESP,
            Pdu::TermReq {
                from_host: true, ..
            } => pdu_type::H2C_TERM_REQ,
            Pdu::TermReq { .. } => pdu_type::C2H_TERM_REQ,
            Pdu::CapsuleCmd { .. } => pdu_type::CAPSULE_CMD,
            Pdu::CapsuleResp { .. } => pdu_type::CAPSULE_RESP,
            Pdu::H2CData { .. } => pdu_type::H2C_DATA,
            Pdu::C2HData { .. } => pdu_type::C2H_DATA,
            Pdu::R2T { .. } => pdu_type::R2T,
        }
    }

    /// Encodes the PDU with the connection's `digests`, placing data at a multiple of `align` bytes (the peer's
    /// PDA: (PDA + 1) * 4).
    pub fn encode(&self, digests: Digests, align: usize) -> Vec<u8> {
        let t = self.pdu_type();
        let hlen = expected_hlen(t).expect("every PDU type has a header length") as usize;
        let mut b = vec![0u8; hlen];
        let mut fl = 0u8;
        let data: &[u8] = match self {
            Pdu::IcReq {
                pfv,
                hpda,
                digests,
                maxr2t,
            } => {
                put_u16(&mut b, 8, *pfv);
                b[10] = *hpda;
                b[11] = digests.to_byte();
                put_u32(&mut b, 12, *maxr2t);
                &[]
            }
            Pdu::IcResp {
                pfv,
                cpda,
                digests,
                maxh2cdata,
            } => {
                put_u16(&mut b, 8, *pfv);
                b[10] = *cpda;
                b[11] = digests.to_byte();
                put_u32(&mut b, 12, *maxh2cdata);
                &[]
            }
            Pdu::TermReq {
                fes, fei, header, ..
            } => {
                put_u16(&mut b, 8, *fes);
                put_u32(&mut b, 10, *fei);
                &header[..header.len().min(TERM_REQ_MAX_DATA)]
            }
            Pdu::CapsuleCmd { sqe, data } => {
                b[8..72].copy_from_slice(sqe);
                data
            }
            Pdu::CapsuleResp { cqe } => {
                b[8..24].copy_from_slice(cqe);
                &[]
            }
            Pdu::H2CData {
                cccid,
                ttag,
                datao,
                last,
                data,
            } => {
                put_u16(&mut b, 8, *cccid);
                put_u16(&mut b, 10, *ttag);
                put_u32(&mut b, 12, *datao);
                put_u32(&mut b, 16, data.len() as u32);
                if *last {
                    fl |= flags::DATA_LAST;
                }
                data
            }
            Pdu::C2HData {
                cccid,
                datao,
                last,
                success,
                data,
            } => {
                put_u16(&mut b, 8, *cccid);
                put_u32(&mut b, 12, *datao);
                put_u32(&mut b, 16, data.len() as u32);
                if *last {
                    fl |= flags::DATA_LAST;
                }
                if *success {
                    fl |= flags::DATA_SUCCESS;
                }
                data
            }
            Pdu::R2T {
                cccid,
                ttag,
                r2to,
                r2tl,
            } => {
                put_u16(&mut b, 8, *cccid);
                put_u16(&mut b, 10, *ttag);
                put_u32(&mut b, 12, *r2to);
                put_u32(&mut b, 16, *r2tl);
                &[]
            }
        };
        let ic = matches!(t, pdu_type::IC_REQ | pdu_type::IC_RESP);
        let hdgst = !ic && digests.header;
        let ddgst = !ic && digests.data && carries_data(t) && !data.is_empty();
        if hdgst {
            fl |= flags::HDGST;
        }
        if ddgst {
            fl |= flags::DDGST;
        }
        b[0] = t;
        b[1] = fl;
        b[2] = hlen as u8;
        let header_end = hlen + if hdgst { DIGEST_LEN } else { 0 };
        let pdo = if data.is_empty() {
            0
        } else if is_term(t) {
            // A termination request's data (the header at fault) follows its header directly.
            header_end
        } else {
            header_end.div_ceil(align.max(1)) * align.max(1)
        };
        b[3] = pdo as u8;
        let plen = if data.is_empty() {
            header_end
        } else {
            pdo + data.len() + if ddgst { DIGEST_LEN } else { 0 }
        };
        put_u32(&mut b, 4, plen as u32);
        if hdgst {
            let d = digest(&b[..hlen]);
            b.extend_from_slice(&d.to_le_bytes());
        }
        if !data.is_empty() {
            b.resize(pdo, 0);
            b.extend_from_slice(data);
            if ddgst {
                b.extend_from_slice(&digest(data).to_le_bytes());
            }
        }
        debug_assert_eq!(b.len(), plen);
        b
    }
}

/// The data pointer of a fabrics command: one SGL descriptor (bytes 24-39 of the submission queue entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgl {
    /// Address (for in-capsule data: the offset into the capsule's data).
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Descriptor type (bits 7:4) and subtype (bits 3:0).
    pub kind: u8,
}

/// SGL descriptor type and subtype: Data Block, offset (data in the command capsule).
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL descriptor type and subtype: Transport SGL Data Block, transport specific (data moves in data PDUs).
pub const SGL_TRANSPORT: u8 = 0x5A;

impl Sgl {
    /// The descriptor in a submission queue entry.
    pub fn of_sqe(sqe: &[u8; 64]) -> Self {
        Sgl {
            address: crate::bytes::u64_at(sqe, 24),
            length: u32_at(sqe, 32),
            kind: sqe[39],
        }
    }
    /// Writes the descriptor into a submission queue entry and sets PSDT to "SGL".
    pub fn put(&self, sqe: &mut [u8; 64]) {
        sqe[1] = (sqe[1] & !0xC0) | 0x40;
        sqe[24..32].copy_from_slice(&self.address.to_le_bytes());
        put_u32(sqe, 32, self.length);
        sqe[36..39].fill(0);
        sqe[39] = self.kind;
    }
}

/// A completion queue entry as a response capsule carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    /// Dword 0 (command specific).
    pub result: u32,
    /// Dword 1 (command specific).
    pub result_hi: u32,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// The command's identifier.
    pub cid: u16,
    /// Status (the 15-bit status field; the phase bit is always 0 on fabrics).
    pub status: u16,
}

impl Cqe {
    /// The 16 bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put_u32(&mut b, 0, self.result);
        put_u32(&mut b, 4, self.result_hi);
        put_u16(&mut b, 8, self.sqhd);
        put_u16(&mut b, 10, self.sqid);
        put_u16(&mut b, 12, self.cid);
        put_u16(&mut b, 14, self.status << 1);
        b
    }
    /// From 16 bytes.
    pub fn parse(b: &[u8; 16]) -> Self {
        Cqe {
            result: u32_at(b, 0),
            result_hi: u32_at(b, 4),
            sqhd: u16_at(b, 8),
            sqid: u16_at(b, 10),
            cid: u16_at(b, 12),
            status: u16_at(b, 14) >> 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: &Pdu, d: Digests) -> Pdu {
        let bytes = p.encode(d, 4);
        let h = Header::parse(bytes[..8].try_into().unwrap());
        h.check(d, 1 << 20).unwrap();
        let out = Pdu::decode(&h, &bytes[8..], d).unwrap();
        assert!(out.data_digest_ok);
        out.pdu
    }

    #[test]
    fn every_pdu_survives_encoding_with_and_without_digests() {
        let pdus = [
            Pdu::IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests::from_byte(3),
                maxr2t: 0,
            },
            Pdu::IcResp {
                pfv: 0,
                cpda: 0,
                digests: Digests::default(),
                maxh2cdata: 0x40000,
            },
            Pdu::CapsuleCmd {
                sqe: [7; 64],
                data: vec![1, 2, 3, 4, 5],
            },
            Pdu::CapsuleCmd {
                sqe: [9; 64],
                data: vec![],
            },
            Pdu::CapsuleResp { cqe: [3; 16] },
            Pdu::H2CData {
                cccid: 5,
                ttag: 6,
                datao: 4096,
                last: true,
                data: vec![0xAB; 100],
            },
            Pdu::C2HData {
                cccid: 5,
                datao: 0,
                last: true,
                success: false,
                data: vec![0xCD; 4096],
            },
            Pdu::R2T {
                cccid: 1,
                ttag: 2,
                r2to: 0,
                r2tl: 8192,
            },
            Pdu::TermReq {
                from_host: false,
                fes: fes::INVALID_HEADER_FIELD,
                fei: 2,
                header: vec![4, 0, 99, 0, 72, 0, 0, 0],
            },
        ];
        for d in [Digests::default(), Digests::from_byte(3)] {
            for p in &pdus {
                assert_eq!(&roundtrip(p, d), p, "digests {d:?}");
            }
        }
    }

    #[test]
    fn a_header_is_refused_naming_the_field_at_fault() {
        let none = Digests::default();
        let h = |t, hlen, pdo, plen| Header {
            pdu_type: t,
            flags: 0,
            hlen,
            pdo,
            plen,
        };
        let e = h(0x42, 24, 0, 24).check(none, 4096).unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER_FIELD, 0));
        let e = h(pdu_type::CAPSULE_CMD, 24, 0, 72)
            .check(none, 4096)
            .unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER_FIELD, 2));
        let e = h(pdu_type::CAPSULE_CMD, 72, 0, 40)
            .check(none, 4096)
            .unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER_FIELD, 4));
        // Data offset inside the header.
        let e = h(pdu_type::CAPSULE_CMD, 72, 8, 200)
            .check(none, 4096)
            .unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER_FIELD, 3));
        // A huge length is refused before anything is read or allocated.
        let e = h(pdu_type::H2C_DATA, 24, 24, u32::MAX)
            .check(none, 4096)
            .unwrap_err();
        assert_eq!(e.fes, fes::DATA_LIMIT_EXCEEDED);
        // A response capsule with trailing bytes.
        let e = h(pdu_type::CAPSULE_RESP, 24, 0, 30)
            .check(none, 4096)
            .unwrap_err();
        assert_eq!(e.fei, 4);
        // Digest flags must match what the connection agreed.
        let mut x = h(pdu_type::CAPSULE_RESP, 24, 0, 28);
        x.flags = flags::HDGST;
        assert!(x.check(none, 4096).is_err());
        assert!(x.check(Digests::from_byte(1), 4096).is_ok());
    }

    #[test]
    fn a_corrupted_header_fails_its_digest_and_corrupted_data_fails_its_own() {
        let d = Digests::from_byte(3);
        let mut bytes = Pdu::H2CData {
            cccid: 1,
            ttag: 1,
            datao: 0,
            last: true,
            data: vec![5; 64],
        }
        .encode(d, 4);
        let h = Header::parse(bytes[..8].try_into().unwrap());
        bytes[9] ^= 1;
        let e = Pdu::decode(&h, &bytes[8..], d).unwrap_err();
        assert_eq!(e.fes, fes::HEADER_DIGEST_ERROR);
        bytes[9] ^= 1;
        let n = bytes.len();
        bytes[n - 10] ^= 0xff;
        let out = Pdu::decode(&h, &bytes[8..], d).unwrap();
        assert!(
            !out.data_digest_ok,
            "a data digest error fails the command, not the connection"
        );
    }

    #[test]
    fn data_is_aligned_to_the_peer_pda_and_cqe_status_skips_the_phase_bit() {
        let p = Pdu::C2HData {
            cccid: 1,
            datao: 0,
            last: true,
            success: false,
            data: vec![1; 10],
        };
        let b = p.encode(Digests::from_byte(1), 32);
        assert_eq!(b[3], 32, "pdo");
        assert_eq!(u32_at(&b, 4) as usize, b.len());
        let c = Cqe {
            result: 1,
            result_hi: 2,
            sqhd: 3,
            sqid: 4,
            cid: 5,
            status: 0x4002,
        };
        let bytes = c.to_bytes();
        assert_eq!(u16_at(&bytes, 14), 0x8004);
        assert_eq!(Cqe::parse(&bytes), c);
    }
}
