//! Little-endian field access on NVMe data structures.
//!
//! Every NVMe structure is a byte buffer with fields at fixed offsets (the spec's "Bytes" column). These helpers
//! read and write such fields; parsers and the simulated controller's encoders share them so both sides agree on
//! the layout. Out-of-range reads return zero (a short buffer is treated as zero-filled, as a controller that
//! returns fewer bytes than asked would leave the rest of the host buffer).

/// Reads `N` bytes at `off`, zero-filled past the end of `buf`.
fn read_array<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if off < buf.len() {
        let end = (off + N).min(buf.len());
        out[..end - off].copy_from_slice(&buf[off..end]);
    }
    out
}

/// The byte at `off`.
pub fn u8_at(buf: &[u8], off: usize) -> u8 {
    read_array::<1>(buf, off)[0]
}
/// The little-endian u16 at `off`.
pub fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(read_array(buf, off))
}
/// The little-endian 24-bit value at `off`.
pub fn u24_at(buf: &[u8], off: usize) -> u32 {
    let b: [u8; 3] = read_array(buf, off);
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}
/// The little-endian u32 at `off`.
pub fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(read_array(buf, off))
}
/// The little-endian u64 at `off`.
pub fn u64_at(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(read_array(buf, off))
}
/// The little-endian u128 at `off`.
pub fn u128_at(buf: &[u8], off: usize) -> u128 {
    u128::from_le_bytes(read_array(buf, off))
}
/// An ASCII field exactly as stored (NVMe pads strings with spaces; nvme-cli prints them untrimmed).
pub fn ascii_at(buf: &[u8], off: usize, len: usize) -> String {
    let mut out = vec![0u8; len];
    if off < buf.len() {
        let end = (off + len).min(buf.len());
        out[..end - off].copy_from_slice(&buf[off..end]);
    }
    // Stop at the first NUL (some controllers NUL-terminate), keep spaces.
    let cut = out.iter().position(|&b| b == 0).unwrap_or(len);
    out[..cut]
        .iter()
        .map(|&b| if b.is_ascii() { b as char } else { '?' })
        .collect()
}
/// `len` bytes at `off`, zero-filled past the end.
pub fn bytes_at(buf: &[u8], off: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if off < buf.len() {
        let end = (off + len).min(buf.len());
        out[..end - off].copy_from_slice(&buf[off..end]);
    }
    out
}

/// Writes a byte at `off` (ignored past the end of `buf`).
pub fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    buf[off] = v;
}
/// Writes a little-endian u16 at `off`.
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian 24-bit value at `off`.
pub fn put_u24(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 3].copy_from_slice(&v.to_le_bytes()[..3]);
}
/// Writes a little-endian u32 at `off`.
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u64 at `off`.
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u128 at `off`.
pub fn put_u128(buf: &mut [u8], off: usize, v: u128) {
    buf[off..off + 16].copy_from_slice(&v.to_le_bytes());
}
/// Writes `s` space-padded (or truncated) to `len` bytes, as NVMe ASCII fields are stored.
pub fn put_ascii(buf: &mut [u8], off: usize, len: usize, s: &str) {
    let field = &mut buf[off..off + len];
    field.fill(b' ');
    let n = s.len().min(len);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}
/// Copies `v` to `off` (truncated at the end of `buf`).
pub fn put_bytes(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

/// serde helpers for 128-bit counters, which nvme-cli prints as decimal strings.
pub(crate) mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_zero_fills_past_end() {
        let buf = [0x01, 0x02, 0x03, 0x04, 0x05];
        assert_eq!(u16_at(&buf, 0), 0x0201);
        assert_eq!(u24_at(&buf, 0), 0x030201);
        assert_eq!(u32_at(&buf, 1), 0x05040302);
        assert_eq!(u32_at(&buf, 3), 0x0504);
        assert_eq!(u64_at(&buf, 10), 0);
    }

    #[test]
    fn ascii_keeps_padding_and_stops_at_nul() {
        let mut buf = [0u8; 8];
        put_ascii(&mut buf, 0, 8, "1.0");
        assert_eq!(ascii_at(&buf, 0, 8), "1.0     ");
        buf[3] = 0;
        assert_eq!(ascii_at(&buf, 0, 8), "1.0");
    }

    #[test]
    fn round_trips_wide_fields() {
        let mut buf = [0u8; 32];
        put_u128(&mut buf, 16, u128::MAX - 7);
        assert_eq!(u128_at(&buf, 16), u128::MAX - 7);
        put_u24(&mut buf, 0, 0x525400);
        assert_eq!(u24_at(&buf, 0), 0x525400);
    }
}
