//! The simulated controller's firmware image format.
//!
//! Real firmware images are opaque to nvfarm; the simulated controller has its own so that it can do what a real
//! drive does with one: reject a corrupt or foreign image (0x107 Invalid Firmware Image) and carry a revision.
//! An image can also be built to misbehave after activation, to exercise the update flow's verification and
//! rollback.
//!
//! Layout (little endian), 128-byte header then payload:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0-7    | magic `NVFSIMFW` |
//! | 8-9    | format version (1) |
//! | 10-11  | behaviour after activation (0 ok, 1 boot-fail, 2 fallback, 3 vanish, 4 slow-boot) |
//! | 12-15  | header length (128) |
//! | 16-23  | firmware revision, ASCII, space padded |
//! | 24-63  | compatible model, ASCII, space padded (all spaces = any model) |
//! | 64-71  | payload length (a multiple of 4) |
//! | 72-75  | behaviour duration in ms (vanish / slow-boot; 0 = default, 0xFFFFFFFF = until power-cycled) |
//! | 76-79  | CRC-32 of the whole image with this field zeroed |
//! | 80-127 | reserved, zero |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use nvme_spec::bytes::{put_ascii, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

/// The first eight bytes of every simulated-drive image.
pub const MAGIC: &[u8; 8] = b"NVFSIMFW";
/// Header size.
pub const HEADER_LEN: usize = 128;
/// The header format this simulator writes.
pub const FORMAT_VERSION: u16 = 1;
/// Behaviour duration meaning "until power-cycled" (vanish).
pub const FOREVER_MS: u32 = u32::MAX;
/// Default payload size: big enough that a download takes several chunks.
pub const DEFAULT_PAYLOAD_LEN: usize = 256 * 1024;

/// What an image does when the controller activates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Boots and runs normally.
    #[default]
    Ok,
    /// Boots into a failed state: admin commands answer, I/O fails with Internal Error and the SMART critical
    /// warning reports degraded reliability.
    BootFail,
    /// Fails to boot; the boot ROM falls back to the previously active slot.
    Fallback,
    /// The drive drops off the bus on activation and re-enumerates (under a new device name) after the
    /// behaviour's duration; with [`FOREVER_MS`] it stays gone until power-cycled.
    Vanish,
    /// Boots, but takes the behaviour's duration to come back.
    SlowBoot,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 5] = [
        Behaviour::Ok,
        Behaviour::BootFail,
        Behaviour::Fallback,
        Behaviour::Vanish,
        Behaviour::SlowBoot,
    ];

    fn code(self) -> u16 {
        match self {
            Behaviour::Ok => 0,
            Behaviour::BootFail => 1,
            Behaviour::Fallback => 2,
            Behaviour::Vanish => 3,
            Behaviour::SlowBoot => 4,
        }
    }
    fn from_code(c: u16) -> Option<Self> {
        Behaviour::ALL.into_iter().find(|b| b.code() == c)
    }
    /// The behaviour's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Ok => "ok",
            Behaviour::BootFail => "boot-fail",
            Behaviour::Fallback => "fallback",
            Behaviour::Vanish => "vanish",
            Behaviour::SlowBoot => "slow-boot",
        }
    }
    /// Default duration for behaviours that take one.
    pub fn default_ms(self) -> u32 {
        match self {
            Behaviour::Vanish => 1500,
            Behaviour::SlowBoot => 3000,
            _ => 0,
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Behaviour::ALL.into_iter().find(|b| b.as_str() == s).ok_or_else(|| {
            format!("unknown behaviour '{s}': expected one of ok, boot-fail, fallback, vanish, slow-boot")
        })
    }
}

/// Parameters of an image to build.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The firmware revision the image reports once running.
    pub revision: String,
    /// Model the image is for; `None` = any model.
    pub model: Option<String>,
    /// What the image does after activation.
    pub behaviour: Behaviour,
    /// Timing for the behaviour (slow boot, vanish), milliseconds.
    pub behaviour_ms: u32,
    /// Payload bytes after the header.
    pub payload_len: usize,
}

impl ImageSpec {
    /// An image spec for `revision` that boots normally.
    pub fn new(revision: &str) -> Self {
        ImageSpec {
            revision: revision.to_string(),
            model: None,
            behaviour: Behaviour::Ok,
            behaviour_ms: 0,
            payload_len: DEFAULT_PAYLOAD_LEN,
        }
    }
}

/// Why an image is not a valid simulated-drive image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Shorter than the header.
    #[error("image is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Its length.
        len: usize,
    },
    #[error(
        "bad magic: not an nvfarm simulated-drive firmware image (expected 'NVFSIMFW' at offset 0)"
    )]
    /// Not a simulated-drive image.
    BadMagic,
    /// A header version this simulator does not know.
    #[error("unsupported image format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u16),
    /// An unknown behaviour code.
    #[error("unknown behaviour code {0} at offset 10")]
    Behaviour(u16),
    /// The length in the header does not match.
    #[error("header says {expected} bytes in all but the image has {actual}")]
    Length {
        /// What the header says.
        expected: u64,
        /// What the image holds.
        actual: usize,
    },
    /// The CRC-32 does not match.
    #[error("checksum mismatch: header says {expected:#010x}, image hashes to {actual:#010x} (the image is corrupt)")]
    Checksum {
        /// What the header says.
        expected: u32,
        /// What the image holds.
        actual: u32,
    },
    /// The revision is not 1-8 printable ASCII characters.
    #[error("revision must be 1 to 8 printable ASCII characters without spaces, got '{0}'")]
    Revision(String),
    /// The model is too long or not printable.
    #[error("model must be at most 40 printable ASCII characters, got '{0}'")]
    Model(String),
    /// The payload is not a whole number of dwords.
    #[error("payload length {0} must be a multiple of 4 bytes")]
    PayloadAlignment(usize),
}

/// A parsed image header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageHeader {
    /// The firmware revision the image reports once running.
    pub revision: String,
    /// Compatible model, `None` = any.
    pub model: Option<String>,
    /// What the image does after activation.
    pub behaviour: Behaviour,
    /// Timing for the behaviour (slow boot, vanish), milliseconds.
    pub behaviour_ms: u32,
    /// Payload bytes after the header.
    pub payload_len: u64,
    /// CRC-32 of the payload.
    pub crc32: u32,
}

fn valid_revision(rev: &str) -> bool {
    !rev.is_empty() && rev.len() <= 8 && rev.bytes().all(|b| b.is_ascii_graphic())
}

/// Builds an image. The payload is deterministic filler derived from the revision.
pub fn build(spec: &ImageSpec) -> Result<Vec<u8>, ImageError> {
    if !valid_revision(&spec.revision) {
        return Err(ImageError::Revision(spec.revision.clone()));
    }
    if let Some(m) = &spec.model {
        if m.len() > 40 || !m.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(ImageError::Model(m.clone()));
        }
    }
    if spec.payload_len % 4 != 0 {
        return Err(ImageError::PayloadAlignment(spec.payload_len));
    }
    let mut img = vec![0u8; HEADER_LEN + spec.payload_len];
    img[0..8].copy_from_slice(MAGIC);
    put_u16(&mut img, 8, FORMAT_VERSION);
    put_u16(&mut img, 10, spec.behaviour.code());
    put_u32(&mut img, 12, HEADER_LEN as u32);
    put_ascii(&mut img, 16, 8, &spec.revision);
    put_ascii(&mut img, 24, 40, spec.model.as_deref().unwrap_or(""));
    put_u64(&mut img, 64, spec.payload_len as u64);
    put_u32(&mut img, 72, spec.behaviour_ms);
    // xorshift filler seeded by the revision, so two builds of one revision are identical.
    let mut x: u64 = spec
        .revision
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15u64, |a: u64, b| {
            a.rotate_left(5) ^ b as u64
        })
        | 1;
    for chunk in img[HEADER_LEN..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&x.to_le_bytes()[..n]);
    }
    let crc = crc32fast::hash(&img);
    put_u32(&mut img, 76, crc);
    Ok(img)
}

/// Whether `img` is in this format at all (magic and header version), leaving length, checksum and model to the
/// drive, which rejects a corrupt or foreign image at commit as a real drive does.
pub fn check_format(img: &[u8]) -> Result<(), ImageError> {
    if img.len() < HEADER_LEN {
        return Err(ImageError::TooShort { len: img.len() });
    }
    if &img[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = u16_at(img, 8);
    if version != FORMAT_VERSION {
        return Err(ImageError::Version(version));
    }
    Ok(())
}

/// Drops zero padding after the image's declared end (header length + payload length), as a drive keeps only
/// the image itself: a host may download whole transfer units (nvme-cli pads the last chunk to its transfer
/// size). Anything but zeros past the end is left for [`parse`] to refuse.
pub fn strip_padding(img: &mut Vec<u8>) {
    if img.len() < HEADER_LEN || &img[..8] != MAGIC {
        return;
    }
    let declared = (u32_at(img, 12) as u64).saturating_add(u64_at(img, 64));
    if declared < img.len() as u64 && img[declared as usize..].iter().all(|&b| b == 0) {
        img.truncate(declared as usize);
    }
}

/// Validates an image completely (magic, version, lengths, checksum) and returns its header.
pub fn parse(img: &[u8]) -> Result<ImageHeader, ImageError> {
    if img.len() < HEADER_LEN {
        return Err(ImageError::TooShort { len: img.len() });
    }
    if &img[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = u16_at(img, 8);
    if version != FORMAT_VERSION {
        return Err(ImageError::Version(version));
    }
    let code = u16_at(img, 10);
    let behaviour = Behaviour::from_code(code).ok_or(ImageError::Behaviour(code))?;
    let header_len = u32_at(img, 12) as u64;
    let payload_len = u64_at(img, 64);
    let expected = header_len.saturating_add(payload_len);
    if expected != img.len() as u64 || header_len != HEADER_LEN as u64 {
        return Err(ImageError::Length {
            expected,
            actual: img.len(),
        });
    }
    let stored = u32_at(img, 76);
    let mut h = crc32fast::Hasher::new();
    h.update(&img[..76]);
    h.update(&[0u8; 4]);
    h.update(&img[80..]);
    let actual = h.finalize();
    if stored != actual {
        return Err(ImageError::Checksum {
            expected: stored,
            actual,
        });
    }
    // The text fields as build() writes them: printable ASCII, padded with spaces (or NULs).
    let field = |off: usize, len: usize| {
        let raw = &img[off..off + len];
        let end = raw
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(0, |i| i + 1);
        (
            String::from_utf8_lossy(&raw[..end]).into_owned(),
            &raw[..end],
        )
    };
    let (revision, raw) = field(16, 8);
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_graphic) {
        return Err(ImageError::Revision(revision));
    }
    let (model, raw) = field(24, 40);
    if !raw.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        return Err(ImageError::Model(model));
    }
    if payload_len % 4 != 0 {
        return Err(ImageError::PayloadAlignment(payload_len as usize));
    }
    Ok(ImageHeader {
        revision,
        model: (!model.is_empty()).then_some(model),
        behaviour,
        behaviour_ms: u32_at(img, 72),
        payload_len,
        crc32: stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let mut spec = ImageSpec::new("2.0.1");
        spec.model = Some("NVFARM SIM X1".into());
        spec.behaviour = Behaviour::SlowBoot;
        spec.behaviour_ms = 1234;
        spec.payload_len = 4096;
        let img = build(&spec).unwrap();
        assert_eq!(img.len(), 128 + 4096);
        assert!(check_format(&img).is_ok());
        assert!(check_format(&[0u8; 4096]).is_err());
        let h = parse(&img).unwrap();
        assert_eq!(h.revision, "2.0.1");
        assert_eq!(h.model.as_deref(), Some("NVFARM SIM X1"));
        assert_eq!(h.behaviour, Behaviour::SlowBoot);
        assert_eq!(h.behaviour_ms, 1234);
        assert_eq!(build(&spec).unwrap(), img, "deterministic");
    }

    #[test]
    fn rejects_corruption_truncation_and_foreign_files() {
        let img = build(&ImageSpec::new("1.0")).unwrap();
        let mut bad = img.clone();
        bad[HEADER_LEN + 100] ^= 0xff;
        assert!(matches!(parse(&bad), Err(ImageError::Checksum { .. })));
        assert!(matches!(
            parse(&img[..img.len() - 4]),
            Err(ImageError::Length { .. })
        ));
        assert_eq!(parse(b"short"), Err(ImageError::TooShort { len: 5 }));
        assert_eq!(parse(&[0u8; 200]), Err(ImageError::BadMagic));
        let mut v = img.clone();
        v[8] = 9;
        assert_eq!(parse(&v), Err(ImageError::Version(9)));
    }

    /// Found by fuzzing (sim_image): a header whose revision held spaces and a non-ASCII byte parsed (as
    /// "2.0.0  ?"), so a drive would have reported a revision no image can be built with.
    #[test]
    fn a_header_says_only_what_an_image_could_be_built_with() {
        let img = build(&ImageSpec::new("2.0.0")).unwrap();
        let with = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut v = img.clone();
            patch(&mut v);
            put_u32(&mut v, 76, 0);
            let crc = crc32fast::hash(&v);
            put_u32(&mut v, 76, crc);
            parse(&v)
        };
        assert_eq!(parse(&img).unwrap().revision, "2.0.0");
        assert!(matches!(
            with(&|v| v[21..24].copy_from_slice(b" \xff1")),
            Err(ImageError::Revision(r)) if r.starts_with("2.0.0 ")
        ));
        assert!(matches!(
            with(&|v| v[16..24].copy_from_slice(b"        ")),
            Err(ImageError::Revision(_))
        ));
        assert!(matches!(with(&|v| v[24] = 0x07), Err(ImageError::Model(_))));
        // NUL padding reads like space padding.
        assert_eq!(with(&|v| v[21..24].fill(0)).unwrap().revision, "2.0.0");
    }

    #[test]
    fn validates_spec() {
        assert!(matches!(
            build(&ImageSpec::new("way-too-long")),
            Err(ImageError::Revision(_))
        ));
        assert!(matches!(
            build(&ImageSpec::new("a b")),
            Err(ImageError::Revision(_))
        ));
        let mut s = ImageSpec::new("1");
        s.payload_len = 3;
        assert_eq!(build(&s), Err(ImageError::PayloadAlignment(3)));
        assert_eq!("boot-fail".parse::<Behaviour>(), Ok(Behaviour::BootFail));
        assert!("explode"
            .parse::<Behaviour>()
            .unwrap_err()
            .contains("slow-boot"));
    }
}
