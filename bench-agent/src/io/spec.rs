//! What one io run is ([`IoSpec`]: the workload's options from `nvfarm-model`, the target, the backend, the
//! ring setup) and how it can fail ([`IoError`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nvfarm_model::io::{IoOptionError, IoOptions};
use serde::{Deserialize, Serialize};

/// Which backend moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// io_uring read/write on a file or block device.
    Uring,
    /// io_uring NVMe passthrough on a generic char device.
    UringCmd,
    /// NVMe Read/Write to a simulated controller (the target is the simulated drive's directory).
    SimNvme,
}

impl Engine {
    /// For logs: `io_uring` or `io_uring passthrough`.
    pub fn describe(self) -> &'static str {
        match self {
            Engine::Uring => "io_uring",
            Engine::UringCmd => "io_uring passthrough",
            Engine::SimNvme => "NVMe commands to the simulated controller",
        }
    }
}

/// How a job's ring is set up.
///
/// Measured with `bench-agent io` on this project's machines (4k, QD32): cooperative task running is as fast as
/// deferred task running on tmpfs (both ≈1.2M IOPS randread; a plain ring ≈0.45M) and about 10 % faster on a
/// loop device, whose completions arrive from another context. So `auto` is single-issuer + cooperative;
/// `defer` asks for single-issuer + deferred task running (Linux 6.1+), which suits completions reaped on the
/// submitting thread. Each mode falls back to what the kernel supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingMode {
    /// Single-issuer with cooperative task running, falling back to a plain ring.
    #[default]
    Auto,
    /// Single-issuer with deferred task running.
    Defer,
    /// Cooperative task running.
    Coop,
    /// No setup flags.
    Plain,
}

impl FromStr for RingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => RingMode::Auto,
            "defer" => RingMode::Defer,
            "coop" => RingMode::Coop,
            "plain" => RingMode::Plain,
            _ => {
                return Err(format!(
                    "invalid ring mode '{s}': expected auto, defer, coop or plain"
                ))
            }
        })
    }
}

/// One io run: a workload on a target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IoSpec {
    /// File, block device or NVMe generic char device.
    pub target: PathBuf,
    /// The workload, in fio's terms.
    pub options: IoOptions,
    /// Which backend moves the data.
    pub engine: Engine,
    /// Seed for offsets and the verify pattern.
    pub seed: u64,
    /// A read-only verify run checks that every block was written with `seed` (given explicitly, so a block an
    /// older run left behind is found), not only that it is intact.
    #[serde(default)]
    pub check_seed: bool,
    /// Ring setup.
    #[serde(default)]
    pub ring: RingMode,
    /// Set to stop: no new I/O is issued, what is in flight is cancelled and reaped, the run ends cancelled.
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
    /// Fault injection for testing error handling: the Nth completion of each job is reported as failed (EIO)
    /// while the other I/Os are still in flight.
    #[serde(default)]
    pub inject_error_at: Option<u64>,
}

impl IoSpec {
    /// `options` on `target` with `engine`, the default seed and ring.
    pub fn new(target: impl Into<PathBuf>, options: IoOptions, engine: Engine) -> Self {
        IoSpec {
            target: target.into(),
            options,
            engine,
            seed: 0x6e76_6661_726d,
            check_seed: false,
            ring: RingMode::Auto,
            cancel: None,
            inject_error_at: None,
        }
    }

    /// Checks the options; errors name the option and what is valid.
    pub fn validate(&self) -> Result<(), IoError> {
        self.options.validate().map_err(IoError::Spec)
    }
}

/// Why an io run failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An option that cannot work.
    #[error(transparent)]
    Spec(IoOptionError),
    /// The target cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The target cannot hold the workload.
    #[error("{path}: {reason}")]
    Target {
        /// The port.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// io_uring is not available.
    #[error("cannot set up io_uring: {0}; the kernel may be too old (5.19+ for passthrough) or io_uring disabled (sysctl kernel.io_uring_disabled)")]
    Ring(std::io::Error),
    /// An I/O failed.
    #[error("job {job}: {op} of {len} bytes at offset {offset:#x} failed: {error}{drained}")]
    Io {
        /// The job.
        job: u32,
        /// `read`, `write` or `verify read`.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// How it failed.
        error: IoFailure,
        /// What happened to the other I/Os in flight.
        drained: Drained,
    },
    /// The run was cancelled.
    #[error("job {job}: cancelled{drained}")]
    Cancelled {
        /// The job.
        job: u32,
        /// What happened to the I/Os in flight.
        drained: Drained,
    },
}

/// What happened to the I/Os still in flight when a job stopped early: every one is cancelled and reaped before
/// its buffer is released; one the kernel never gives back keeps its buffer (leaked, never reused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drained {
    /// I/Os in flight when the job stopped.
    pub in_flight: usize,
    /// Of those, how many did not come back in time.
    pub left: usize,
}

impl fmt::Display for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.in_flight, self.left) {
            (0, _) => Ok(()),
            (n, 0) => write!(
                f,
                "; {n} other I/O(s) in flight were cancelled and reaped before their buffers were released"
            ),
            (n, left) => write!(
                f,
                "; {left} of {n} I/O(s) in flight did not come back from the kernel: their buffers are kept"
            ),
        }
    }
}

/// How one I/O failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IoFailure {
    /// The kernel returned an errno.
    Errno(i32),
    /// The drive completed the command with an NVMe status (passthrough only).
    Nvme(u16),
    /// Fewer bytes than asked.
    Short {
        /// Bytes moved.
        done: u64,
    },
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoFailure::Errno(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            IoFailure::Nvme(s) => {
                write!(f, "NVMe status {}", nvme_spec::Status::from_raw(*s))
            }
            IoFailure::Short { done } => write!(f, "short transfer ({done} bytes)"),
        }
    }
}

impl IoError {
    /// The target disappeared (ENODEV/ENXIO) rather than failing the I/O itself.
    pub fn is_device_gone(&self) -> bool {
        matches!(self, IoError::Io { error: IoFailure::Errno(e), .. } if *e == libc::ENODEV || *e == libc::ENXIO)
    }
}
