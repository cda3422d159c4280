//! Naming and opening drives.
//!
//! A [`Locator`] turns a [`DeviceAddr`] into an open [`Passthru`], looking a serial number or PCI address up in
//! sysfs each time, so a drive that comes back from a reset under another `/dev/nvmeN` is found again. A
//! [`Drive`] holds a locator and the currently open controller and knows how to wait for the drive to come back.

pub mod address;
pub mod sysfs;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use address::DeviceAddr;
pub use sysfs::{Enumerated, Sysfs};

use crate::controller::{Controller, NvmeError};
use crate::linux::LinuxIoctl;
use crate::transport::{Passthru, TransportError};

/// Why a drive cannot be found or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No controller answers to the address.
    #[error("no NVMe controller matches {addr} under {root}/class/nvme ({seen}); check the address, or the drive is off the bus")]
    NotFound {
        /// The address.
        addr: String,
        /// The sysfs root.
        root: PathBuf,
        /// What is present instead.
        seen: String,
    },
    /// The address matches more than one controller.
    #[error("{addr} matches more than one controller ({names}); use a more specific address")]
    Ambiguous {
        /// The address.
        addr: String,
        /// The controllers it matches.
        names: String,
    },
    /// The sysfs tree cannot be read.
    #[error("cannot read {root}/class/nvme: {source}")]
    Sysfs {
        /// The sysfs root.
        root: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the device failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A command failed while finding the drive.
    #[error(transparent)]
    Nvme(#[from] NvmeError),
    /// The caller stopped the wait.
    #[error("stopped waiting for {addr}")]
    Stopped {
        /// The address.
        addr: String,
    },
    /// The drive did not come back in time.
    #[error("{addr} did not come back within {}: {last}", humantime::format_duration(*waited))]
    NotBack {
        /// The address.
        addr: String,
        /// How long it waited.
        waited: Duration,
        /// The last error seen.
        last: String,
    },
}

impl DeviceError {
    /// The drive is absent right now (not found, gone, not ready): waiting may help.
    pub fn is_absent(&self) -> bool {
        match self {
            DeviceError::NotFound { .. } | DeviceError::NotBack { .. } => true,
            DeviceError::Transport(t) => t.is_absent(),
            DeviceError::Nvme(n) => n.is_absent(),
            _ => false,
        }
    }
    /// A command got no answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, DeviceError::Transport(t) if t.is_timeout())
            || matches!(self, DeviceError::Nvme(n) if n.is_timeout())
    }
}

/// Where an address currently leads: a kernel device node, or a drive behind the simulated controller (its
/// state directory).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Node(PathBuf),
    Simulated(PathBuf),
}

/// How often a wait for an absent drive asks the kernel to rescan the PCI bus.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Resolves an address to a device, each time anew.
#[derive(Clone, Debug)]
pub struct Locator {
    /// The address.
    pub addr: DeviceAddr,
    /// Where serials and PCI addresses are looked up.
    pub sysfs: Sysfs,
}

impl Locator {
    /// A locator for `addr`, looked up under `sysfs`.
    pub fn new(addr: DeviceAddr, sysfs: Sysfs) -> Self {
        Locator { addr, sysfs }
    }

    fn resolve(&self) -> Result<Target, DeviceError> {
        let lookup = |pred: &dyn Fn(&Enumerated) -> bool| -> Result<Target, DeviceError> {
            let all = self
                .sysfs
                .controllers()
                .map_err(|source| DeviceError::Sysfs {
                    root: self.sysfs.root.clone(),
                    source,
                })?;
            let hits: Vec<&Enumerated> = all.iter().filter(|c| pred(c)).collect();
            match hits.as_slice() {
                [one] => Ok(match &one.sim_state {
                    Some(dir) => Target::Simulated(dir.clone()),
                    None => Target::Node(self.sysfs.node(&one.name)),
                }),
                [] => Err(DeviceError::NotFound {
                    addr: self.addr.to_string(),
                    root: self.sysfs.root.clone(),
                    seen: if all.is_empty() {
                        "no controllers present".into()
                    } else {
                        let seen: Vec<String> = all
                            .iter()
                            .map(|c| format!("{} serial={} pci={}", c.name, c.serial, c.address))
                            .collect();
                        format!("present: {}", seen.join(", "))
                    },
                }),
                many => Err(DeviceError::Ambiguous {
                    addr: self.addr.to_string(),
                    names: many
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        };
        match &self.addr {
            DeviceAddr::Path(p) => Ok(Target::Node(p.clone())),
            DeviceAddr::Sim(d) => Ok(Target::Simulated(d.clone())),
            DeviceAddr::Serial(s) => lookup(&|c| c.serial == *s),
            DeviceAddr::Pci(p) => {
                lookup(&|c| address::normalize_pci(&c.address).as_deref() == Some(p.as_str()))
            }
        }
    }

    /// Asks the kernel to look for PCI devices again (`bus/pci/rescan`), so a drive removed from the bus (for a
    /// shutdown notification before a power cut) comes back. Nothing for a simulated drive or a tree without the
    /// attribute; errors are ignored (the wait that calls this reports what it finds, or not).
    pub fn rescan_bus(&self) {
        if matches!(self.addr, DeviceAddr::Sim(_)) {
            return;
        }
        let rescan = self.sysfs.root.join("bus/pci/rescan");
        if rescan.is_file() {
            if let Err(e) = std::fs::write(&rescan, "1") {
                tracing::debug!(path = %rescan.display(), "PCI rescan failed: {e}");
            }
        }
    }

    /// Where the address leads now (`/dev/nvme3`, or `sim:DIR`), without opening the device: an error if no
    /// device answers to it.
    pub fn current(&self) -> Result<String, DeviceError> {
        Ok(match self.resolve()? {
            Target::Node(p) => p.display().to_string(),
            Target::Simulated(d) => DeviceAddr::Sim(d).to_string(),
        })
    }

    /// Opens the device the address leads to now.
    pub fn open(&self) -> Result<Arc<dyn Passthru>, DeviceError> {
        Ok(match self.resolve()? {
            Target::Node(p) => Arc::new(LinuxIoctl::open(&p)?.with_sysfs(self.sysfs.root.clone())),
            Target::Simulated(d) => crate::sim::open_passthru(&d)?,
        })
    }
}

/// A drive: its address and the controller currently open for it.
#[derive(Debug)]
pub struct Drive {
    /// How to find the drive again.
    pub locator: Locator,
    ctrl: Controller,
    timeout: Option<Duration>,
}

impl Drive {
    /// Opens the drive at `addr` with a per-command `timeout`.
    pub fn open(locator: Locator, timeout: Option<Duration>) -> Result<Self, DeviceError> {
        let ctrl = Controller::new(locator.open()?).with_timeout(timeout);
        Ok(Drive {
            locator,
            ctrl,
            timeout,
        })
    }

    /// The controller currently open.
    pub fn controller(&self) -> &Controller {
        &self.ctrl
    }

    /// Looks the drive up again and reopens it.
    pub fn reopen(&mut self) -> Result<(), DeviceError> {
        self.ctrl = Controller::new(self.locator.open()?).with_timeout(self.timeout);
        Ok(())
    }

    /// Waits until the drive is found and answers Identify Controller, reopening it as needed (it may have
    /// re-enumerated under another name). Errors other than absence end the wait at once.
    pub fn wait_ready(&mut self, within: Duration) -> Result<(), DeviceError> {
        self.wait_ready_until(within, &|| false)
    }

    /// [`Drive::wait_ready`], ending early with [`DeviceError::Stopped`] once `stop` says so.
    pub fn wait_ready_until(
        &mut self,
        within: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), DeviceError> {
        *self = Drive::wait_found(self.locator.clone(), self.timeout, within, stop)?;
        Ok(())
    }

    /// Waits until a drive at `locator` is found and answers Identify Controller, and opens it with a
    /// per-command `timeout`: the drive may be absent when the wait starts (off the bus for a shutdown
    /// notification, or re-enumerating after a reset). While it is absent the PCI bus is rescanned, at most every
    /// second. Errors other than absence or a timeout end the wait at once; `stop` ends it with
    /// [`DeviceError::Stopped`].
    pub fn wait_found(
        locator: Locator,
        timeout: Option<Duration>,
        within: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Drive, DeviceError> {
        let start = Instant::now();
        let mut last: String;
        let mut last_rescan: Option<Instant> = None;
        loop {
            if stop() {
                return Err(DeviceError::Stopped {
                    addr: locator.addr.to_string(),
                });
            }
            let attempt = Drive::open(locator.clone(), timeout).and_then(|d| {
                d.ctrl
                    .identify_controller()
                    .map(|_| ())
                    .map_err(DeviceError::from)?;
                Ok(d)
            });
            match attempt {
                Ok(d) => return Ok(d),
                Err(e) if e.is_absent() || e.is_timeout() => {
                    // A drive off the host's bus (removed for a shutdown notification, or lost while powered
                    // off) is only seen again after a rescan.
                    if e.is_absent() && last_rescan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
                        locator.rescan_bus();
                        last_rescan = Some(Instant::now());
                    }
                    last = e.to_string()
                }
                Err(e) => return Err(e),
            }
            if start.elapsed() >= within {
                return Err(DeviceError::NotBack {
                    addr: locator.addr.to_string(),
                    waited: within,
                    last,
                });
            }
            thread::sleep(Duration::from_millis(100).min(within.saturating_sub(start.elapsed())));
        }
    }
}

#[cfg(test)]
mod tests;
