//! The self-checking data pattern written with `--verify`.
//!
//! Every block carries a 32-byte header: magic `NVFV`, CRC-32 of bytes 8..end, the block's byte offset on the
//! target, the run's seed and a per-block generation, followed by pseudo-random payload derived from those. A
//! block read back is checked on its own (magic, offset, checksum), so data written by an earlier run can be
//! verified without knowing anything but the offset; within a run, the generation also catches a stale block.

use std::fmt;

/// The first four bytes of every verify block.
pub const MAGIC: &[u8; 4] = b"NVFV";
/// Bytes of the block header (what `nvfarm-model` requires of a verifying block size).
pub const HEADER: usize = nvfarm_model::io::VERIFY_HEADER_BYTES as usize;

/// Fills `buf` (one block) for `offset`, `seed`, `generation`.
pub fn fill(buf: &mut [u8], offset: u64, seed: u64, generation: u32) {
    assert!(
        buf.len() >= HEADER,
        "verify blocks must be at least {HEADER} bytes"
    );
    buf[0..4].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&offset.to_le_bytes());
    buf[16..24].copy_from_slice(&seed.to_le_bytes());
    buf[24..28].copy_from_slice(&generation.to_le_bytes());
    let size = buf.len() as u32;
    buf[28..32].copy_from_slice(&size.to_le_bytes());
    let mut x =
        seed ^ offset.rotate_left(17) ^ (generation as u64).rotate_left(41) ^ 0x9E37_79B9_7F4A_7C15;
    x |= 1;
    for chunk in buf[HEADER..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&x.to_le_bytes()[..n]);
    }
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Why a block failed verification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Mismatch {
    /// No pattern header: never written with --verify, or overwritten.
    NoHeader,
    /// A valid block, but for another offset (misdirected write or read).
    WrongOffset {
        /// What the block says.
        found: u64,
    },
    /// Header present, content does not hash to the stored CRC (corruption).
    BadChecksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum computed.
        computed: u32,
    },
    /// Intact, but an older write of this block (lost write).
    StaleGeneration {
        /// What the block says.
        found: u32,
        /// The generation written last.
        expected: u32,
    },
    /// A block of another size.
    WrongSize {
        /// What the block says.
        found: u32,
    },
    /// Intact, but written by a run with another seed (an older write that a newer one should have replaced).
    WrongSeed {
        /// What the block says.
        found: u64,
        /// The seed the data should have been written with.
        expected: u64,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoHeader => write!(
                f,
                "no verify header (block never written with --verify, overwritten, or written with another block size)"

            ),
            Mismatch::WrongOffset { found } => write!(
                f,
                "block holds data written for offset {found:#x} (misdirected I/O)"
            ),
            Mismatch::BadChecksum { stored, computed } => {
                write!(f, "checksum mismatch: header says {stored:#010x}, content hashes to {computed:#010x} (corrupted data)")
            }
            Mismatch::StaleGeneration { found, expected } => {
                write!(
                    f,
                    "stale block: generation {found}, expected {expected} (lost write)"
                )
            }
            Mismatch::WrongSize { found } => write!(f, "block was written as {found} bytes"),
            Mismatch::WrongSeed { found, expected } => write!(
                f,
                "stale block: written with seed {found}, expected seed {expected} (a lost write left older data)"
            ),
        }
    }
}

/// Checks a block read from `offset`; `expected_generation` when this run wrote it, `expected_seed` when the
/// caller knows which run's data should be there.
pub fn check(
    buf: &[u8],
    offset: u64,
    expected_generation: Option<u32>,
    expected_seed: Option<u64>,
) -> Result<(), Mismatch> {
    if buf.len() < HEADER || &buf[0..4] != MAGIC {
        return Err(Mismatch::NoHeader);
    }
    let found = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let size = u32::from_le_bytes(buf[28..32].try_into().expect("4 bytes"));
    if size as usize != buf.len() {
        return Err(Mismatch::WrongSize { found: size });
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&buf[8..]);
    if stored != computed {
        return Err(Mismatch::BadChecksum { stored, computed });
    }
    if found != offset {
        return Err(Mismatch::WrongOffset { found });
    }
    if let Some(expected) = expected_seed {
        let s = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
        if s != expected {
            return Err(Mismatch::WrongSeed { found: s, expected });
        }
    }
    if let Some(expected) = expected_generation {
        let g = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes"));
        if g != expected {
            return Err(Mismatch::StaleGeneration { found: g, expected });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_block_checks_and_each_corruption_is_named() {
        let mut b = vec![0u8; 4096];
        fill(&mut b, 0x2000, 42, 3);
        assert_eq!(check(&b, 0x2000, Some(3), None), Ok(()));
        assert_eq!(check(&b, 0x2000, None, None), Ok(()));
        assert_eq!(
            check(&b, 0x3000, None, None),
            Err(Mismatch::WrongOffset { found: 0x2000 })
        );
        assert_eq!(
            check(&b, 0x2000, Some(4), None),
            Err(Mismatch::StaleGeneration {
                found: 3,
                expected: 4
            })
        );
        let mut c = b.clone();
        c[1000] ^= 1;
        assert!(matches!(
            check(&c, 0x2000, None, None),
            Err(Mismatch::BadChecksum { .. })
        ));
        assert_eq!(
            check(&vec![0u8; 4096], 0, None, None),
            Err(Mismatch::NoHeader)
        );
        assert_eq!(
            check(&b[..2048], 0x2000, None, None),
            Err(Mismatch::WrongSize { found: 4096 })
        );
        let mut d = vec![0u8; 4096];
        fill(&mut d, 0x2000, 43, 3);
        assert_ne!(b, d, "the seed changes the payload");
        assert_eq!(check(&b, 0x2000, None, Some(42)), Ok(()));
        assert_eq!(
            check(&b, 0x2000, None, Some(43)),
            Err(Mismatch::WrongSeed {
                found: 42,
                expected: 43
            })
        );
    }
}
