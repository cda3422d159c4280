//! Fault injection for the simulated controller, read at run time from `faults.toml` in the drive's directory.
//!
//! Because the file is read on every command, a test (or `nvme-flash sim fault`) can break a drive that a running
//! agent is using. Example:
//!
//! ```toml
//! [[fault]]
//! kind = "latency"        # every matching command takes 50 ms longer
//! ms = 50
//! opcode = "read"         # optional: admin:0xNN, io:0xNN or a name such as identify, fw-download, read
//!
//! [[fault]]
//! kind = "status"         # matching commands complete with this status
//! opcode = "fw-commit"
//! status = 0x4006         # Internal Error + DNR
//! count = 1               # optional: fire this many times, then the fault removes itself
//!
//! [[fault]]
//! kind = "hang"           # matching commands never complete (the host's timeout fires)
//! opcode = "identify"
//!
//! [[fault]]
//! kind = "power-loss-during-download"
//! after = 2               # power is lost when the third Firmware Image Download arrives
//!
//! [[fault]]
//! kind = "vanish"         # the drive drops off the bus: until power-cycled, or for `ms`
//!
//! [[fault]]
//! kind = "self-test-failure"   # the next self-test completes with a failed segment
//!
//! [[fault]]
//! kind = "media-error"    # reads touching these blocks fail with Unrecovered Read Error
//! lba = 1000
//! blocks = 8
//! ```

use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SimError;
use nvme_spec::command::{admin, io};
use nvme_spec::Queue;

/// The file a drive's faults live in.
pub const FAULT_FILE: &str = "faults.toml";

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Commands take `ms` longer.
    Latency,
    /// Commands get no answer (the host times out).
    Hang,
    /// Commands complete with `status`.
    Status,
    /// Power is lost after `after` download chunks.
    PowerLossDuringDownload,
    /// The drive drops off the bus.
    Vanish,
    /// The next self-test fails.
    SelfTestFailure,
    /// Reads of `lba`..`lba+blocks` fail with Unrecovered Read Error.
    MediaError,
}

/// A command filter: one queue and opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpcodeFilter {
    /// Admin or I/O.
    pub queue: Queue,
    /// Which commands it hits (`admin:0x11`, `io:read`, ...; all when absent).
    pub opcode: u8,
}

const ALIASES: &[(&str, Queue, u8)] = &[
    ("get-log-page", Queue::Admin, admin::GET_LOG_PAGE),
    ("identify", Queue::Admin, admin::IDENTIFY),
    ("set-features", Queue::Admin, admin::SET_FEATURES),
    ("get-features", Queue::Admin, admin::GET_FEATURES),
    ("fw-commit", Queue::Admin, admin::FIRMWARE_COMMIT),
    ("fw-download", Queue::Admin, admin::FIRMWARE_DOWNLOAD),
    ("self-test", Queue::Admin, admin::DEVICE_SELF_TEST),
    ("format", Queue::Admin, admin::FORMAT_NVM),
    ("sanitize", Queue::Admin, admin::SANITIZE),
    ("flush", Queue::Io, io::FLUSH),
    ("write", Queue::Io, io::WRITE),
    ("read", Queue::Io, io::READ),
    ("compare", Queue::Io, io::COMPARE),
    ("write-zeroes", Queue::Io, io::WRITE_ZEROES),
];

impl FromStr for OpcodeFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, queue, opcode)) = ALIASES.iter().find(|(n, _, _)| *n == s) {
            return Ok(OpcodeFilter {
                queue: *queue,
                opcode: *opcode,
            });
        }
        let bad = || {
            let names: Vec<&str> = ALIASES.iter().map(|a| a.0).collect();
            format!(
                "invalid opcode '{s}': expected admin:0xNN, io:0xNN or one of {}",
                names.join(", ")
            )
        };
        let (q, op) = s.split_once(':').ok_or_else(bad)?;
        let queue = match q {
            "admin" => Queue::Admin,
            "io" => Queue::Io,
            _ => return Err(bad()),
        };
        let op = op.trim_start_matches("0x");
        let opcode = u8::from_str_radix(op, 16).map_err(|_| bad())?;
        Ok(OpcodeFilter { queue, opcode })
    }
}

impl fmt::Display for OpcodeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ALIASES
            .iter()
            .find(|(_, q, o)| *q == self.queue && *o == self.opcode)
        {
            Some((name, _, _)) => f.write_str(name),
            None => write!(
                f,
                "{}:0x{:02x}",
                if self.queue == Queue::Admin {
                    "admin"
                } else {
                    "io"
                },
                self.opcode
            ),
        }
    }
}

/// One injected fault as written in `faults.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Which commands it hits (`admin:0x11`, `io:read`, ...; all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opcode: Option<String>,
    /// Latency or hang time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// The status a `status` fault answers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How many commands it hits (then it is spent; forever when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Commands (or download chunks) to let through first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u32>,
    /// First LBA of a media error range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lba: Option<u64>,
    /// Length of a media error range, blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
}

impl Fault {
    /// A fault of `kind` with no filter or limits.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            opcode: None,
            ms: None,
            status: None,
            count: None,
            after: None,
            lba: None,
            blocks: None,
        }
    }

    /// The opcode filter, parsed.
    pub fn filter(&self) -> Option<OpcodeFilter> {
        self.opcode.as_deref().and_then(|s| s.parse().ok())
    }

    /// Does this fault apply to a command on `queue` with `opcode`?
    pub fn matches(&self, queue: Queue, opcode: u8) -> bool {
        match self.filter() {
            Some(f) => f.queue == queue && f.opcode == opcode,
            None => true,
        }
    }

    /// Checks the fields this kind needs; `index` is the fault's position in the file (1-based) for messages.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let at =
            |key: &str, why: &str| format!("fault #{index} ({:?}): key '{key}': {why}", self.kind);
        if let Some(op) = &self.opcode {
            op.parse::<OpcodeFilter>().map_err(|e| at("opcode", &e))?;
        }
        match self.kind {
            FaultKind::Latency if self.ms.is_none() => {
                Err(at("ms", "latency needs ms = <milliseconds>"))
            }
            FaultKind::Status => match self.status {
                None => Err(at(
                    "status",
                    "status needs status = <NVMe status, e.g. 0x4006>",
                )),
                Some(0) => Err(at("status", "0 is success, not a fault")),
                Some(s) if s > 0x7fff => Err(at("status", "must fit in 15 bits (0x1..=0x7fff)")),
                _ => Ok(()),
            },
            FaultKind::MediaError if self.lba.is_none() => {
                Err(at("lba", "media-error needs lba = <first block>"))
            }
            _ => Ok(()),
        }
    }

    /// A one-line description for `nvme-flash sim fault DIR list`.
    pub fn describe(&self) -> String {
        let target = self.opcode.as_deref().unwrap_or("any command");
        let times = self
            .count
            .map(|c| format!(", {c} more time(s)"))
            .unwrap_or_default();
        match self.kind {
            FaultKind::Latency => {
                format!("latency +{} ms on {target}{times}", self.ms.unwrap_or(0))
            }
            FaultKind::Hang => format!("hang on {target}{times}"),
            FaultKind::Status => format!(
                "status {} on {target}{times}",
                nvme_spec::Status::from_raw(self.status.unwrap_or(0))
            ),
            FaultKind::PowerLossDuringDownload => {
                format!(
                    "power loss at Firmware Image Download #{}",
                    self.after.unwrap_or(0) + 1
                )
            }
            FaultKind::Vanish => match self.ms {
                Some(ms) => format!("drop off the bus for {ms} ms"),
                None => "drop off the bus until power-cycled".to_string(),
            },
            FaultKind::SelfTestFailure => format!("next self-test fails{times}"),
            FaultKind::MediaError => format!(
                "unrecovered read error on LBA {}..{}",
                self.lba.unwrap_or(0),
                self.lba.unwrap_or(0) + self.blocks.unwrap_or(1)
            ),
        }
    }
}

/// A drive's `faults.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    /// The faults, in order.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

impl FaultFile {
    /// Reads and validates `DIR/faults.toml`; a missing file means no faults.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let path = dir.join(FAULT_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FaultFile::default()),
            Err(source) => return Err(SimError::Io { path, source }),
        };
        let file: FaultFile = toml::from_str(&text).map_err(|e| SimError::FaultFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for (i, f) in file.faults.iter().enumerate() {
            f.validate(i + 1).map_err(|reason| SimError::FaultFile {
                path: path.clone(),
                reason,
            })?;
        }
        Ok(file)
    }

    /// Writes the file atomically (removing it when empty).
    pub fn save(&self, dir: &Path) -> Result<(), SimError> {
        let path = dir.join(FAULT_FILE);
        if self.faults.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SimError::Io { path, source }),
            };
        }
        let tmp = dir.join(format!(".{FAULT_FILE}.tmp"));
        let text = toml::to_string(self).expect("faults serialize");
        fs::write(&tmp, text).map_err(|source| SimError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| SimError::Io { path, source })
    }

    /// Index of the first fault of `kind` matching the command.
    pub fn find(&self, kind: FaultKind, queue: Queue, opcode: u8) -> Option<usize> {
        self.faults
            .iter()
            .position(|f| f.kind == kind && f.matches(queue, opcode))
    }

    /// Counts one firing of fault `i`, removing it when its count runs out. Returns true if the file changed.
    pub fn consume(&mut self, i: usize) -> bool {
        match self.faults[i].count {
            Some(c) if c <= 1 => {
                self.faults.remove(i);
                true
            }
            Some(c) => {
                self.faults[i].count = Some(c - 1);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let dir = tempfile::tempdir().unwrap();
        let doc = include_str!("faults.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(dir.path().join(FAULT_FILE), example).unwrap();
        let f = FaultFile::load(dir.path()).unwrap();
        assert_eq!(f.faults.len(), 7);
        assert_eq!(f.faults[1].status, Some(0x4006));
        assert!(f.faults[0].matches(Queue::Io, io::READ));
        assert!(!f.faults[0].matches(Queue::Io, io::WRITE));
        assert!(
            f.faults[4].matches(Queue::Admin, 0x06),
            "no opcode = every command"
        );
    }

    #[test]
    fn errors_name_the_file_fault_and_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FAULT_FILE),
            "[[fault]]\nkind = \"status\"\nopcode = \"fw-commit\"\n",
        )
        .unwrap();
        let e = FaultFile::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("faults.toml") && e.contains("fault #1") && e.contains("'status'"),
            "{e}"
        );
        fs::write(
            dir.path().join(FAULT_FILE),
            "[[fault]]\nkind = \"latency\"\nms = 1\nopcode = \"bogus\"\n",
        )
        .unwrap();
        let e = FaultFile::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("'opcode'") && e.contains("admin:0xNN"), "{e}");
        fs::write(dir.path().join(FAULT_FILE), "[[fault]]\nkind = \"melt\"\n").unwrap();
        let e = FaultFile::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("melt"), "{e}");
    }

    #[test]
    fn counted_faults_remove_themselves() {
        let mut f = FaultFile {
            faults: vec![Fault {
                count: Some(2),
                ..Fault::new(FaultKind::Hang)
            }],
        };
        assert!(f.consume(0));
        assert_eq!(f.faults[0].count, Some(1));
        assert!(f.consume(0));
        assert!(f.faults.is_empty());
        let mut g = FaultFile {
            faults: vec![Fault::new(FaultKind::Hang)],
        };
        assert!(!g.consume(0));
        assert_eq!(g.faults.len(), 1);
    }

    #[test]
    fn opcode_filters_round_trip() {
        for s in ["identify", "fw-download", "read", "admin:0xc0", "io:0x81"] {
            let f: OpcodeFilter = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert_eq!(
            "admin:0x11".parse::<OpcodeFilter>().unwrap().to_string(),
            "fw-download"
        );
    }
}
