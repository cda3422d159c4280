//! Linux NVMe passthrough through the kernel driver's ioctls (`<linux/nvme_ioctl.h>`).
//!
//! Admin commands go to the controller character device (`/dev/nvmeN`) with `NVME_IOCTL_ADMIN_CMD`; I/O commands
//! go to the namespace's generic character device (`/dev/ngNnM`, or the block device `/dev/nvmeNnM`) with
//! `NVME_IOCTL_IO_CMD`. The ioctl's return value is the NVMe status when positive and an errno when negative;
//! `nix` turns the latter into `Err`. This module and the io_uring engine are the only places with `unsafe`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;

use crate::transport::{Completion, Data, Passthru, ResetKind, TransportError};
use nvme_spec::{command::opcode_name, Command, Queue, Status};

/// `struct nvme_passthru_cmd` from `<linux/nvme_ioctl.h>` (also `struct nvme_admin_cmd`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmePassthruCmd {
    /// Opcode.
    pub opcode: u8,
    /// Fused operation / PSDT flags.
    pub flags: u8,
    /// Reserved (command ID, set by the kernel).
    pub rsvd1: u16,
    /// Namespace ID.
    pub nsid: u32,
    /// Command Dword 2.
    pub cdw2: u32,
    /// Command Dword 3.
    pub cdw3: u32,
    /// Metadata buffer address.
    pub metadata: u64,
    /// Data buffer address.
    pub addr: u64,
    /// Metadata buffer length.
    pub metadata_len: u32,
    /// Data buffer length.
    pub data_len: u32,
    /// Command Dword 10.
    pub cdw10: u32,
    /// Command Dword 11.
    pub cdw11: u32,
    /// Command Dword 12.
    pub cdw12: u32,
    /// Command Dword 13.
    pub cdw13: u32,
    /// Command Dword 14.
    pub cdw14: u32,
    /// Command Dword 15.
    pub cdw15: u32,
    /// Timeout in milliseconds (0: the driver's default).
    pub timeout_ms: u32,
    /// Completion dword 0, written by the kernel.
    pub result: u32,
}

// The kernel ABI: 72 bytes, fields at these offsets. A mismatch would corrupt kernel memory reads.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<NvmePassthruCmd>() == 72);
    assert!(offset_of!(NvmePassthruCmd, opcode) == 0);
    assert!(offset_of!(NvmePassthruCmd, flags) == 1);
    assert!(offset_of!(NvmePassthruCmd, nsid) == 4);
    assert!(offset_of!(NvmePassthruCmd, cdw2) == 8);
    assert!(offset_of!(NvmePassthruCmd, cdw3) == 12);
    assert!(offset_of!(NvmePassthruCmd, metadata) == 16);
    assert!(offset_of!(NvmePassthruCmd, addr) == 24);
    assert!(offset_of!(NvmePassthruCmd, metadata_len) == 32);
    assert!(offset_of!(NvmePassthruCmd, data_len) == 36);
    assert!(offset_of!(NvmePassthruCmd, cdw10) == 40);
    assert!(offset_of!(NvmePassthruCmd, cdw15) == 60);
    assert!(offset_of!(NvmePassthruCmd, timeout_ms) == 64);
    assert!(offset_of!(NvmePassthruCmd, result) == 68);
};

mod ioctls {
    use super::NvmePassthruCmd;
    // _IO('N', 0x40) .. _IO('N', 0x46) as in <linux/nvme_ioctl.h>.
    nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);
    nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, NvmePassthruCmd);
    nix::ioctl_readwrite!(nvme_ioctl_io_cmd, b'N', 0x43, NvmePassthruCmd);
    nix::ioctl_none!(nvme_ioctl_reset, b'N', 0x44);
    nix::ioctl_none!(nvme_ioctl_subsys_reset, b'N', 0x45);
    nix::ioctl_none!(nvme_ioctl_rescan, b'N', 0x46);
}

/// Request codes, exported for tests and diagnostics.
pub mod request {
    /// `_IO('N', 0x40)`: the namespace ID of a namespace node.
    pub const NVME_IOCTL_ID: u64 = nix::request_code_none!(b'N', 0x40);
    /// `_IOWR('N', 0x41, struct nvme_admin_cmd)`: an admin command.
    pub const NVME_IOCTL_ADMIN_CMD: u64 =
        nix::request_code_readwrite!(b'N', 0x41, std::mem::size_of::<super::NvmePassthruCmd>())
            as u64;
    /// `_IOWR('N', 0x43, struct nvme_passthru_cmd)`: an I/O command.
    pub const NVME_IOCTL_IO_CMD: u64 =
        nix::request_code_readwrite!(b'N', 0x43, std::mem::size_of::<super::NvmePassthruCmd>())
            as u64;
    /// `_IO('N', 0x44)`: controller reset.
    pub const NVME_IOCTL_RESET: u64 = nix::request_code_none!(b'N', 0x44);
    /// `_IO('N', 0x45)`: NVM subsystem reset.
    pub const NVME_IOCTL_SUBSYS_RESET: u64 = nix::request_code_none!(b'N', 0x45);
    /// `_IO('N', 0x46)`: rescan namespaces.
    pub const NVME_IOCTL_RESCAN: u64 = nix::request_code_none!(b'N', 0x46);
}

/// Default per-command timeout when the caller gives none (the kernel's own default is 60 s for admin).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An NVMe controller reached through the Linux kernel driver.
#[derive(Debug)]
pub struct LinuxIoctl {
    /// `/dev/nvme0` (or a namespace device if that is what was opened).
    path: PathBuf,
    /// `nvme0`.
    ctrl_name: String,
    dev_root: PathBuf,
    /// Where the controller's sysfs entry is (`/sys`; a test tree in tests).
    sysfs_root: PathBuf,
    ctrl: File,
    /// Namespace devices opened for I/O, by NSID.
    namespaces: Mutex<HashMap<u32, File>>,
}

/// Splits `nvme3`, `nvme3n1`, `ng3n1` into (controller instance, namespace id).
fn parse_dev_name(name: &str) -> Option<(u32, Option<u32>)> {
    let rest = name
        .strip_prefix("nvme")
        .or_else(|| name.strip_prefix("ng"))?;
    let (ctrl, ns) = match rest.split_once('n') {
        Some((c, n)) => (c, Some(n.parse().ok()?)),
        None => (rest, None),
    };
    if name.starts_with("ng") && ns.is_none() {
        return None;
    }
    Some((ctrl.parse().ok()?, ns))
}

impl LinuxIoctl {
    /// Opens a controller (`/dev/nvme0`) or namespace (`/dev/nvme0n1`, `/dev/ng0n1`) device.
    pub fn open(path: &Path) -> Result<Self, TransportError> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ctrl_name = match parse_dev_name(file_name) {
            Some((n, _)) => format!("nvme{n}"),
            None => file_name.to_string(),
        };
        let ctrl =
            OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(|source| TransportError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
        let dev_root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/dev"));
        let me = LinuxIoctl {
            path: path.to_path_buf(),
            ctrl_name,
            dev_root,
            sysfs_root: PathBuf::from("/sys"),
            ctrl,
            namespaces: Mutex::new(HashMap::new()),
        };
        if let Some((_, Some(nsid))) = parse_dev_name(file_name) {
            let f = me.ctrl.try_clone().map_err(|source| TransportError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            me.namespaces
                .lock()
                .expect("namespace map lock")
                .insert(nsid, f);
        }
        Ok(me)
    }

    /// Looks the controller's sysfs entry up under `root` instead of `/sys`.
    pub fn with_sysfs(mut self, root: impl Into<PathBuf>) -> Self {
        self.sysfs_root = root.into();
        self
    }

    /// The namespace ID of an opened namespace device (`NVME_IOCTL_ID`).
    pub fn namespace_id(&self) -> Result<u32, TransportError> {
        // SAFETY: NVME_IOCTL_ID takes no argument; the fd is open for the lifetime of `self.ctrl`.
        let r = unsafe { ioctls::nvme_ioctl_id(self.ctrl.as_raw_fd()) };
        r.map(|v| v as u32)
            .map_err(|e| self.os_error("NVME_IOCTL_ID", e))
    }

    fn os_error(&self, op: &str, errno: Errno) -> TransportError {
        let device = self.path.display().to_string();
        match errno {
            Errno::ENODEV | Errno::ENXIO => TransportError::Gone {
                device,
                detail: format!("{op}: {errno}"),
            },
            Errno::EBUSY | Errno::EAGAIN => TransportError::NotReady {
                device,
                detail: format!("{op}: {errno}"),
            },
            _ => TransportError::Os {
                device,
                op: op.to_string(),
                errno,
            },
        }
    }

    /// Runs `f` with an fd for I/O commands to `nsid`: the namespace's generic char device if present, else its
    /// block device.
    fn with_namespace<T>(
        &self,
        nsid: u32,
        f: impl FnOnce(&File) -> T,
    ) -> Result<T, TransportError> {
        let mut map = self.namespaces.lock().expect("namespace map lock");
        if !map.contains_key(&nsid) {
            let n = parse_dev_name(&self.ctrl_name).map(|(n, _)| n).unwrap_or(0);
            let candidates = [
                self.dev_root.join(format!("ng{n}n{nsid}")),
                self.dev_root.join(format!("nvme{n}n{nsid}")),
            ];
            let mut last = None;
            for c in &candidates {
                match OpenOptions::new().read(true).write(true).open(c) {
                    Ok(file) => {
                        map.insert(nsid, file);
                        last = None;
                        break;
                    }
                    Err(e) => last = Some((c.clone(), e)),
                }
            }
            if let Some((path, source)) = last {
                return Err(TransportError::Open { path, source });
            }
        }
        Ok(f(map.get(&nsid).expect("inserted above")))
    }
}

impl Passthru for LinuxIoctl {
    fn submit(
        &self,
        queue: Queue,
        cmd: &Command,
        mut data: Data<'_>,
        timeout: Option<Duration>,
    ) -> Result<Completion, TransportError> {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        // The kernel writes into the buffer exactly when the opcode says data comes from the controller: refuse a
        // shared buffer there before any ioctl, so it can never write into memory lent read-only.
        data.check(queue, cmd.opcode)?;
        let (addr, len) = match &mut data {
            Data::None => (0u64, 0u32),
            Data::ToDevice(b) => (b.as_ptr() as u64, b.len() as u32),
            Data::FromDevice(b) => (b.as_mut_ptr() as u64, b.len() as u32),
        };
        let mut pt = NvmePassthruCmd {
            opcode: cmd.opcode,
            flags: cmd.flags,
            nsid: cmd.nsid,
            cdw2: cmd.cdw2,
            cdw3: cmd.cdw3,
            addr,
            data_len: len,
            cdw10: cmd.cdw10,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            cdw14: cmd.cdw14,
            cdw15: cmd.cdw15,
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            ..Default::default()
        };
        let (op, ret) = match queue {
            Queue::Admin => {
                // SAFETY: `pt` is a valid `nvme_passthru_cmd` (layout asserted above) that lives across the call;
                // `addr`/`data_len` describe `data` exactly (`check` bounded its length), which is borrowed for this
                // whole function; `check` made sure the kernel writes only when the opcode returns data, and then
                // the buffer is `FromDevice`, lent mutably, so it reads/writes only memory we own and may write.
                let r = unsafe { ioctls::nvme_ioctl_admin_cmd(self.ctrl.as_raw_fd(), &mut pt) };
                ("NVME_IOCTL_ADMIN_CMD", r)
            }
            Queue::Io => {
                let r = self.with_namespace(cmd.nsid, |f| {
                    // SAFETY: as for the admin ioctl; the namespace fd is open while the map lock is held.
                    unsafe { ioctls::nvme_ioctl_io_cmd(f.as_raw_fd(), &mut pt) }
                })?;
                ("NVME_IOCTL_IO_CMD", r)
            }
        };
        match ret {
            Ok(status) => {
                let status = Status::from_raw(status as u16);
                if status.code() == 0x371 && !status.is_success() {
                    // The kernel aborted the command when its timeout expired.
                    return Err(TransportError::Timeout {
                        device: self.path.display().to_string(),
                        command: opcode_name(queue, cmd.opcode).to_string(),
                        timeout,
                    });
                }
                Ok(Completion {
                    status,
                    result: pt.result,
                })
            }
            Err(Errno::EINTR) | Err(Errno::ETIMEDOUT) => Err(TransportError::Timeout {
                device: self.path.display().to_string(),
                command: opcode_name(queue, cmd.opcode).to_string(),
                timeout,
            }),
            Err(e) => Err(self.os_error(op, e)),
        }
    }

    fn reset(&self, kind: ResetKind) -> Result<(), TransportError> {
        let fd = self.ctrl.as_raw_fd();
        let (op, r) = match kind {
            // SAFETY: argument-less ioctls on an open controller fd.
            ResetKind::Controller => ("NVME_IOCTL_RESET", unsafe { ioctls::nvme_ioctl_reset(fd) }),
            // SAFETY: as above.
            ResetKind::Subsystem => ("NVME_IOCTL_SUBSYS_RESET", unsafe {
                ioctls::nvme_ioctl_subsys_reset(fd)
            }),
        };
        r.map(drop).map_err(|e| match (kind, e) {
            // The driver answers ENOTTY when the controller does not set CAP.NSSRS.
            (ResetKind::Subsystem, Errno::ENOTTY) => self.os_error(
                "NVME_IOCTL_SUBSYS_RESET (the controller does not support NVM Subsystem Reset: CAP.NSSRS is clear)",
                e,
            ),
            _ => self.os_error(op, e),
        })
    }

    fn rescan(&self) -> Result<(), TransportError> {
        // SAFETY: argument-less ioctl on an open controller fd.
        let r = unsafe { ioctls::nvme_ioctl_rescan(self.ctrl.as_raw_fd()) };
        r.map(drop)
            .map_err(|e| self.os_error("NVME_IOCTL_RESCAN", e))
    }

    /// Linux has no ioctl for CC.SHN, but the PCIe driver sends one when its device is removed: writing the
    /// PCI device's `remove` attribute runs `nvme_remove`, which shuts the controller down (CC.SHN = normal,
    /// waiting for CSTS.SHST complete) before the write returns. The drive is then off the host's bus until a PCI
    /// rescan ([`crate::device::Drive::wait_found`] does one while it waits). Fabrics controllers (no PCI
    /// device) are left alone: `None`.
    fn shutdown(&self) -> Option<Result<bool, TransportError>> {
        let entry = self.sysfs_root.join("class/nvme").join(&self.ctrl_name);
        let transport = std::fs::read_to_string(entry.join("transport")).ok()?;
        if transport.trim() != "pcie" {
            return None;
        }
        let remove = entry.join("device/remove");
        let address = std::fs::read_to_string(entry.join("address")).unwrap_or_default();
        Some(match std::fs::write(&remove, "1") {
            Ok(()) => {
                tracing::info!(
                    controller = %self.ctrl_name,
                    pci = address.trim(),
                    "removed from the PCI bus: the driver gave the drive a shutdown notification; a PCI rescan brings it back"
                );
                Ok(true)
            }
            Err(e) => Err(TransportError::Os {
                device: self.path.display().to_string(),
                op: format!(
                    "removing the PCI device for a shutdown notification ({})",
                    remove.display()
                ),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)),
            }),
        })
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn device_name(&self) -> String {
        self.ctrl_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_buffer_for_a_command_that_returns_data_never_reaches_the_kernel() {
        // /dev/null takes no NVMe ioctl: had the ioctl been issued, this would be an OS error (ENOTTY).
        let dev = LinuxIoctl::open(Path::new("/dev/null")).unwrap();
        let buf = [0u8; 4096];
        let e = dev
            .submit(
                Queue::Admin,
                &Command::identify(nvme_spec::command::cns::CONTROLLER, 0),
                Data::ToDevice(&buf),
                None,
            )
            .unwrap_err();
        assert!(matches!(e, TransportError::Misuse { .. }), "{e}");
        let mut out = [0u8; 4096];
        let e = dev
            .submit(
                Queue::Admin,
                &Command::identify(nvme_spec::command::cns::CONTROLLER, 0),
                Data::FromDevice(&mut out),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(e, TransportError::Os { .. }),
            "the right buffer goes to the ioctl: {e}"
        );
    }

    #[test]
    fn request_codes_match_the_kernel_header() {
        // Values from <linux/nvme_ioctl.h> on x86_64: _IO('N',0x40) = 0x4e40, _IOWR('N',0x41,72 bytes) = 0xc0484e41.
        assert_eq!(request::NVME_IOCTL_ID, 0x4e40);
        assert_eq!(request::NVME_IOCTL_ADMIN_CMD, 0xc048_4e41);
        assert_eq!(request::NVME_IOCTL_IO_CMD, 0xc048_4e43);
        assert_eq!(request::NVME_IOCTL_RESET, 0x4e44);
        assert_eq!(request::NVME_IOCTL_SUBSYS_RESET, 0x4e45);
        assert_eq!(request::NVME_IOCTL_RESCAN, 0x4e46);
    }

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_dev_name("nvme0"), Some((0, None)));
        assert_eq!(parse_dev_name("nvme12n3"), Some((12, Some(3))));
        assert_eq!(parse_dev_name("ng1n1"), Some((1, Some(1))));
        assert_eq!(parse_dev_name("ng1"), None);
        assert_eq!(parse_dev_name("sda"), None);
    }

    #[test]
    fn a_shutdown_notification_removes_a_pcie_controller_and_leaves_fabrics_alone() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("nvme0"), b"").unwrap();
        let entry = t.path().join("sys/class/nvme/nvme0");
        std::fs::create_dir_all(entry.join("device")).unwrap();
        std::fs::write(entry.join("transport"), "pcie\n").unwrap();
        std::fs::write(entry.join("address"), "0000:00:04.0\n").unwrap();
        std::fs::write(entry.join("device/remove"), "").unwrap();
        let open = || {
            LinuxIoctl::open(&dev.join("nvme0"))
                .unwrap()
                .with_sysfs(t.path().join("sys"))
        };
        assert!(matches!(open().shutdown(), Some(Ok(true))));
        assert_eq!(
            std::fs::read_to_string(entry.join("device/remove")).unwrap(),
            "1"
        );
        // A controller over TCP has no PCI device to remove: the transport cannot tell it.
        std::fs::write(entry.join("transport"), "tcp\n").unwrap();
        std::fs::write(entry.join("device/remove"), "").unwrap();
        assert!(open().shutdown().is_none());
        assert_eq!(
            std::fs::read_to_string(entry.join("device/remove")).unwrap(),
            ""
        );
        // A write the kernel refuses is an error naming what was tried.
        std::fs::write(entry.join("transport"), "pcie\n").unwrap();
        std::fs::remove_file(entry.join("device/remove")).unwrap();
        std::fs::create_dir(entry.join("device/remove")).unwrap();
        let e = open().shutdown().unwrap().unwrap_err().to_string();
        assert!(e.contains("device/remove"), "{e}");
    }

    #[test]
    fn opening_a_missing_device_names_it() {
        let err = LinuxIoctl::open(Path::new("/dev/nvme-does-not-exist")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/dev/nvme-does-not-exist"), "{msg}");
        assert!(err.is_absent());
    }

    #[test]
    fn an_ioctl_on_a_non_nvme_file_is_an_os_error() {
        // /dev/null accepts open but not NVMe ioctls: the error must be an errno, not a status.
        let dev = LinuxIoctl::open(Path::new("/dev/null")).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = dev
            .submit(
                Queue::Admin,
                &Command::identify(1, 0),
                Data::FromDevice(&mut buf),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Os {
                    errno: Errno::ENOTTY,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
