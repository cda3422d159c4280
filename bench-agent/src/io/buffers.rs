//! Page-aligned I/O buffers (O_DIRECT and NVMe passthrough need them), without unsafe code: a Vec is
//! over-allocated and the aligned window inside it is used.

/// Alignment of io buffers (O_DIRECT and passthrough need page alignment).
pub const ALIGN: usize = 4096;

/// A page-aligned heap buffer that stays where it is (registered with io_uring).
#[derive(Debug)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes aligned to [`ALIGN`].
    pub fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a u8 buffer can always be aligned");
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
    /// The start of the buffer, for registering it with the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_slice().as_mut_ptr()
    }
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Zero length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned() {
        for len in [512, 4096, 65536, 131072] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_mut_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }
}
