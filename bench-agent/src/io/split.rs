//! Cutting one I/O into NVMe commands no larger than the controller's largest transfer (MDTS), as the kernel's
//! block layer splits a large request: the passthrough and simulated-controller backends send each part as its
//! own command and complete the I/O when every part has.

use nvfarm_model::io::IoOptionError;

/// How an I/O of `bs` bytes is cut into NVMe commands no larger than the controller's MDTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Bytes per command (the last one may carry less).
    pub chunk: u32,
    /// Commands per I/O.
    pub per_io: usize,
}

impl Split {
    /// `mdts` is the controller's largest transfer (`None`: no limit).
    pub fn new(bs: u64, block_size: u64, mdts: Option<u64>) -> Result<Split, IoOptionError> {
        let chunk = match mdts {
            Some(m) if bs > m => m - m % block_size,
            _ => bs,
        };
        if chunk == 0 {
            return Err(IoOptionError {
                option: "bs",
                reason: format!(
                    "the drive's largest transfer (MDTS {} bytes) is smaller than one {block_size}-byte block",
                    mdts.unwrap_or(0)
                ),
            });
        }
        Ok(Split {
            chunk: chunk as u32,
            per_io: bs.div_ceil(chunk) as usize,
        })
    }

    /// Part `part`'s byte offset within the I/O and its length.
    pub fn part(&self, bs: u32, part: usize) -> (u32, u32) {
        let at = part as u32 * self.chunk;
        (at, self.chunk.min(bs - at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_larger_than_mdts_is_cut_into_commands_that_cover_it_exactly() {
        // Within MDTS (or no limit): one command.
        assert_eq!(
            Split::new(4096, 512, Some(131072)).unwrap(),
            Split {
                chunk: 4096,
                per_io: 1
            }
        );
        assert_eq!(Split::new(1 << 20, 512, None).unwrap().per_io, 1);
        // 1 MiB over a 128 KiB MDTS: eight full commands.
        let s = Split::new(1 << 20, 4096, Some(131072)).unwrap();
        assert_eq!((s.chunk, s.per_io), (131072, 8));
        assert_eq!(s.part(1 << 20, 7), (7 * 131072, 131072));
        // 20 KiB over 8 KiB: the last command carries the rest, and the parts tile the I/O.
        let s = Split::new(20480, 4096, Some(8192)).unwrap();
        assert_eq!(s.per_io, 3);
        let parts: Vec<_> = (0..s.per_io).map(|p| s.part(20480, p)).collect();
        assert_eq!(parts, vec![(0, 8192), (8192, 8192), (16384, 4096)]);
        // An MDTS not a multiple of the block size is rounded down to whole blocks.
        assert_eq!(Split::new(65536, 4096, Some(10000)).unwrap().chunk, 8192);
        let err = Split::new(8192, 4096, Some(2048)).unwrap_err();
        assert!(err.reason.contains("MDTS 2048"), "{}", err.reason);
    }
}
