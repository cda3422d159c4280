//! The io workload vocabulary, in fio's terms (`rw`, `bs`, `iodepth`, `runtime`, `size`, `direct`, `verify`,
//! `numjobs`, `rwmixread`), and its validation. The plan parser, `bench-agent io` and the io engine all check
//! options here, so a value is accepted or refused the same way everywhere and before any I/O starts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bytes at the start of every block a verifying workload writes (magic, CRC, offset, seed, generation).
pub const VERIFY_HEADER_BYTES: u64 = 32;

/// fio's `rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random mixed reads and writes (`rwmixread` percent reads).
    Randrw,
}

impl Rw {
    /// Random offsets rather than sequential ones.
    pub fn is_random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    /// The workload writes.
    pub fn writes(self) -> bool {
        matches!(self, Rw::Write | Rw::Randwrite | Rw::Randrw)
    }
    /// fio's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Randrw => "randrw",
        }
    }
}

impl FromStr for Rw {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "read" => Rw::Read,
            "write" => Rw::Write,
            "randread" => Rw::Randread,
            "randwrite" => Rw::Randwrite,
            "randrw" => Rw::Randrw,
            _ => {
                return Err(format!(
                    "invalid rw '{s}': expected read, write, randread, randwrite or randrw"
                ))
            }
        })
    }
}

impl fmt::Display for Rw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An option that cannot work, named as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid io option '{option}': {reason}")]
pub struct IoOptionError {
    /// The option's name (`bs`, `iodepth`, ...).
    pub option: &'static str,
    /// What is wrong and what would be valid.
    pub reason: String,
}

/// One workload's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoOptions {
    /// Access pattern.
    pub rw: Rw,
    /// Percentage of reads in `randrw`.
    pub rwmixread: u8,
    /// Block size in bytes.
    pub bs: u64,
    /// Commands in flight per job.
    pub iodepth: u32,
    /// Run for this long (time-based: each job loops over its region).
    pub runtime: Option<Duration>,
    /// Size of each job's region; without `runtime`, also the bytes each job transfers.
    pub size: Option<u64>,
    /// O_DIRECT (bypass the page cache).
    pub direct: bool,
    /// Write self-checking blocks and check every block read back.
    pub verify: bool,
    /// Parallel jobs, each over its own slice of the target.
    pub numjobs: u32,
}

impl IoOptions {
    /// `rw` with blocks of `bs` bytes, `iodepth` in flight, and fio's defaults for the rest.
    pub fn new(rw: Rw, bs: u64, iodepth: u32) -> Self {
        IoOptions {
            rw,
            rwmixread: 50,
            bs,
            iodepth,
            runtime: None,
            size: None,
            direct: false,
            verify: false,
            numjobs: 1,
        }
    }

    /// Checks every option; the error names the option and what is valid.
    pub fn validate(&self) -> Result<(), IoOptionError> {
        let bad = |option: &'static str, reason: String| Err(IoOptionError { option, reason });
        if self.bs == 0 || self.bs % 512 != 0 || self.bs > 16 << 20 {
            return bad(
                "bs",
                format!(
                    "{} is not a multiple of 512 bytes between 512 and 16 MiB",
                    self.bs
                ),
            );
        }
        if self.iodepth == 0 || self.iodepth > 4096 {
            return bad(
                "iodepth",
                format!("{} is not between 1 and 4096", self.iodepth),
            );
        }
        if self.numjobs == 0 || self.numjobs > 256 {
            return bad(
                "numjobs",
                format!("{} is not between 1 and 256", self.numjobs),
            );
        }
        if self.rwmixread > 100 {
            return bad(
                "rwmixread",
                format!("{} is not a percentage (0-100)", self.rwmixread),
            );
        }
        if self.runtime.is_none() && self.size.is_none() {
            return bad("runtime", "give --runtime or --size (or both)".into());
        }
        if self.runtime == Some(Duration::ZERO) {
            return bad("runtime", "must be more than zero".into());
        }
        if let Some(s) = self.size {
            if s < self.bs {
                return bad(
                    "size",
                    format!("{s} bytes is smaller than one block ({} bytes)", self.bs),
                );
            }
        }
        if self.verify && self.bs < VERIFY_HEADER_BYTES {
            return bad(
                "verify",
                format!("needs blocks of at least {VERIFY_HEADER_BYTES} bytes"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_checked_by_name() {
        let ok = IoOptions {
            runtime: Some(Duration::from_secs(1)),
            ..IoOptions::new(Rw::Randread, 4096, 32)
        };
        assert!(ok.validate().is_ok());
        let cases: [(IoOptions, &str); 6] = [
            (
                IoOptions {
                    bs: 1000,
                    ..ok.clone()
                },
                "bs",
            ),
            (
                IoOptions {
                    iodepth: 0,
                    ..ok.clone()
                },
                "iodepth",
            ),
            (
                IoOptions {
                    numjobs: 300,
                    ..ok.clone()
                },
                "numjobs",
            ),
            (
                IoOptions {
                    rwmixread: 101,
                    ..ok.clone()
                },
                "rwmixread",
            ),
            (
                IoOptions {
                    runtime: None,
                    ..ok.clone()
                },
                "runtime",
            ),
            (
                IoOptions {
                    size: Some(512),
                    ..ok.clone()
                },
                "size",
            ),
        ];
        for (o, option) in cases {
            assert_eq!(o.validate().unwrap_err().option, option);
        }
        assert_eq!("randrw".parse::<Rw>(), Ok(Rw::Randrw));
        assert!("sideways".parse::<Rw>().unwrap_err().contains("randrw"));
    }
}
