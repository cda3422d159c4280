//! The simulated controller: its files, its lock, and its `Passthru` (one responsibility; ~650 lines of which
//! a third is the documented setting and error types).
//!
//! A simulated NVMe controller behind the same passthrough seam as a real drive.
//!
//! All state lives in one directory, like a drive's flash: `sim.json` (identity, firmware slots, counters, logs,
//! features, power), `ns1.img` (namespace 1, a sparse file), `slots/slotN.img` (committed firmware images),
//! `staging.bin` (downloaded, not yet committed image portions) and `faults.toml` (faults injected at run time,
//! see [`faults`]). Every command takes an exclusive lock on the directory, so several processes (an agent, a test
//! injecting faults, a power relay) can share one drive. Time-based behaviour (booting, self-test progress, a
//! drive coming back on the bus) is evaluated from wall-clock deadlines whenever the drive is touched.
//!
//! Addressed as `sim:DIR`; see [`SimController::create`] and `nvme-flash sim create`.

mod admin;
pub mod bus;
pub mod cache;
pub mod faults;
pub mod image;
mod lifecycle;
mod nvm;
pub mod state;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::transport::{Completion, Data, Passthru, ResetKind, TransportError};
use faults::{Fault, FaultFile, FaultKind};
use image::{Behaviour, ImageSpec};
use nvme_spec::command::admin as admin_op;
use nvme_spec::{Command, Queue, Status};
use state::{
    now_ms, Counters, FirmwareState, NamespaceState, Power, ResetRequirement, SelfTestState,
    SimState, SlotImage, Timing, STATE_FILE, STATE_VERSION,
};

/// Namespace 1's backing file.
pub const NAMESPACE_FILE: &str = "ns1.img";
/// The drive's serial console output (boot messages), appended to as events happen.
pub const CONSOLE_FILE: &str = "console.log";
/// Downloaded firmware not yet committed.
pub const STAGING_FILE: &str = "staging.bin";
/// Where slot images live.
pub const SLOTS_DIR: &str = "slots";
const LOCK_FILE: &str = ".lock";
/// How long a command waits when the caller sets no timeout (the Linux driver's admin default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors managing a simulated drive (creating it, reading its state, editing faults).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "no simulated drive in {dir} (no sim.json): create one with `nvme-flash sim create {dir}`"
    )]
    /// No drive in the directory.
    NoDrive {
        /// The directory.
        dir: PathBuf,
    },
    /// A drive already exists there.
    #[error("{dir} already holds a simulated drive (serial {serial}); remove the directory or pick another")]
    Exists {
        /// The directory.
        dir: PathBuf,
        /// The serial number of the drive there.
        serial: String,
    },
    /// A file of the drive cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The drive's state does not parse.
    #[error("{path} is corrupt: {reason}; restore it or recreate the drive")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The fault file is invalid.
    #[error("{path}: {reason}")]
    FaultFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting for a new drive is invalid.
    #[error("invalid simulated drive setting '{field}': {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A firmware image is invalid.
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// How to build a new simulated drive.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// The factory firmware revision (in slot 1).
    pub firmware_revision: String,
    /// Firmware slots (1-7).
    pub slots: u8,
    /// Slot 1 is read-only.
    pub slot1_readonly: bool,
    /// Commit action 3 activates without a reset.
    pub activation_without_reset: bool,
    /// The reset that activates a committed image (what commit actions 1 and 2 answer, and action 3 when it
    /// cannot activate at once).
    pub activation: ResetRequirement,
    /// Maximum Time for Firmware Activation in ms (Identify MTFA; 0: not reported).
    pub mtfa_ms: u32,
    /// CAP.NSSRS: NVM Subsystem Reset is supported.
    pub subsystem_reset: bool,
    /// Volatile write cache size (0: none, writes go straight to the media).
    pub write_cache_bytes: u64,
    /// Namespace 1's size.
    pub size_bytes: u64,
    /// 512 or 4096.
    pub block_size: u32,
    /// Firmware Update Granularity (4 KiB units).
    pub fwug: u8,
    /// Maximum Data Transfer Size (power of two of 4 KiB pages).
    pub mdts: u8,
    /// The PCI address it claims (default: derived from the serial).
    pub pci_address: Option<String>,
    /// Publish the drive on this simulated bus.
    pub bus: Option<PathBuf>,
    /// How long boots and self-tests take.
    pub timing: Timing,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            serial: "NVFSIM0001".into(),
            model: "NVFARM SIM X1".into(),
            firmware_revision: "1.0.0".into(),
            slots: 3,
            slot1_readonly: false,
            activation_without_reset: true,
            activation: ResetRequirement::Controller,
            mtfa_ms: 5000,
            subsystem_reset: true,
            write_cache_bytes: 0,
            size_bytes: 1 << 30,
            block_size: 4096,
            fwug: 1,
            mdts: 5,
            pci_address: None,
            bus: None,
            timing: Timing::default(),
        }
    }
}

impl SimConfig {
    /// Checks every setting; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        let bad = |field, reason: &str| {
            Err(SimError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.serial.is_empty() || self.serial.len() > 20 || !printable(&self.serial) {
            return bad("serial", "must be 1 to 20 printable ASCII characters");
        }
        if self.model.is_empty() || self.model.len() > 40 || !printable(&self.model) {
            return bad("model", "must be 1 to 40 printable ASCII characters");
        }
        if !(1..=7).contains(&self.slots) {
            return bad("slots", "must be 1 to 7");
        }
        if self.slots == 1 && self.slot1_readonly {
            return bad(
                "slot1_readonly",
                "a drive with one slot cannot have it read-only (nothing could be flashed)",
            );
        }
        if self.block_size != 512 && self.block_size != 4096 {
            return bad("block_size", "must be 512 or 4096");
        }
        if self.size_bytes < (1 << 20) || self.size_bytes % 4096 != 0 {
            return bad(
                "size",
                "must be at least 1 MiB and a multiple of 4096 bytes",
            );
        }
        if self.fwug == 0 || self.mdts == 0 || self.mdts > 10 {
            return bad(
                "fwug/mdts",
                "fwug must be 1..=255 (4 KiB units, 255 = any) and mdts 1..=10",
            );
        }
        if self.fwug != 0xff && (self.fwug as u64 * 4096) > (4096u64 << self.mdts) {
            return bad(
                "fwug",
                "the update granularity cannot exceed the maximum transfer size (MDTS)",
            );
        }
        Ok(())
    }
}

/// A simulated NVMe controller, addressed by its state directory.
#[derive(Debug, Clone)]
pub struct SimController {
    dir: PathBuf,
}

/// Everything a command handler works on: the state, the drive's files, the faults and the current time.
pub(crate) struct Ctx<'a> {
    pub dir: &'a Path,
    pub st: &'a mut SimState,
    pub faults: &'a mut FaultFile,
    pub faults_changed: bool,
    pub now: u64,
}

impl SimController {
    /// Creates a drive in `dir` (which may exist but must not hold a drive): slot 1 holds an image of
    /// `cfg.firmware_revision`, which is running.
    pub fn create(dir: &Path, cfg: &SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        if let Ok(existing) = SimState::load(dir) {
            return Err(SimError::Exists {
                dir: dir.to_path_buf(),
                serial: existing.serial,
            });
        }
        fs::create_dir_all(dir.join(SLOTS_DIR)).map_err(|source| SimError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let dir = fs::canonicalize(dir).map_err(|source| SimError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let factory = image::build(&ImageSpec {
            model: Some(cfg.model.clone()),
            ..ImageSpec::new(&cfg.firmware_revision)
        })?;
        let header = image::parse(&factory)?;
        let slot_path = dir.join(SLOTS_DIR).join("slot1.img");
        fs::write(&slot_path, &factory).map_err(|source| SimError::Io {
            path: slot_path,
            source,
        })?;
        let ns_path = dir.join(NAMESPACE_FILE);
        let ns = File::create(&ns_path).map_err(|source| SimError::Io {
            path: ns_path.clone(),
            source,
        })?;
        ns.set_len(cfg.size_bytes).map_err(|source| SimError::Io {
            path: ns_path,
            source,
        })?;
        let now = now_ms();
        let mut images = vec![None; 7];
        images[0] = Some(SlotImage {
            revision: header.revision.clone(),
            behaviour: Behaviour::Ok,
            behaviour_ms: 0,
            len: factory.len() as u64,
            crc32: header.crc32,
        });
        let instance = match &cfg.bus {
            Some(bus) => bus::allocate_instance(bus)?,
            None => 0,
        };
        let pci = cfg.pci_address.clone().unwrap_or_else(|| {
            let h = crc32fast::hash(cfg.serial.as_bytes());
            format!("0000:{:02x}:{:02x}.0", 0x10 + (h & 0x3f), (h >> 8) & 0x1f)
        });
        let st = SimState {
            version: STATE_VERSION,
            serial: cfg.serial.clone(),
            model: cfg.model.clone(),
            pci_address: pci,
            firmware: FirmwareState {
                slots: cfg.slots,
                slot1_readonly: cfg.slot1_readonly,
                activation_without_reset: cfg.activation_without_reset,
                activation_reset: cfg.activation,
                mtfa_ms: cfg.mtfa_ms,
                subsystem_reset: cfg.subsystem_reset,
                fwug: cfg.fwug,
                mdts: cfg.mdts,
                images,
                active_slot: 1,
                next_slot: None,
                running_revision: header.revision,
                running_failed: false,
                staged: vec![],
            },
            namespace: NamespaceState {
                size_bytes: cfg.size_bytes,
                lba_format: (cfg.block_size == 4096) as u8,
                uncorrectable: vec![],
                write_cache_bytes: cfg.write_cache_bytes,
                cached: vec![],
            },
            counters: Counters {
                heat_updated_ms: now,
                ..Default::default()
            },
            errors: vec![],
            error_count: 0,
            next_cmdid: 0,
            self_test: SelfTestState::default(),
            sanitize_sstat: 0,
            sanitize_cdw10: 0,
            features_current: Default::default(),
            features_saved: Default::default(),
            power: Power::On { since_ms: now },
            dirty: false,
            shut_down: false,
            instance,
            bus: cfg.bus.clone(),
            timing: cfg.timing.clone(),
            created_ms: now,
        };
        st.save(&dir)?;
        if let Some(bus) = &cfg.bus {
            bus::publish(bus, &st, &dir)?;
        }
        Ok(SimController { dir })
    }

    /// Opens an existing drive.
    pub fn open(dir: &Path) -> Result<Self, SimError> {
        if !dir.join(STATE_FILE).is_file() {
            return Err(SimError::NoDrive {
                dir: dir.to_path_buf(),
            });
        }
        Ok(SimController {
            dir: dir.to_path_buf(),
        })
    }

    /// The drive's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Flock<File>, SimError> {
        let path = self.dir.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| SimError::Io {
                path: path.clone(),
                source,
            })?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| SimError::Io {
            path,
            source: e.into(),
        })
    }

    /// Runs `f` on the state under the lock, after applying elapsed time, and saves the result.
    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut Ctx<'_>) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let _guard = self.lock()?;
        let mut st = SimState::load(&self.dir)?;
        let mut faults = FaultFile::load(&self.dir)?;
        let mut ctx = Ctx {
            dir: &self.dir,
            st: &mut st,
            faults: &mut faults,
            faults_changed: false,
            now: now_ms(),
        };
        ctx.tick()?;
        let out = f(&mut ctx)?;
        let changed = ctx.faults_changed;
        st.save(&self.dir)?;
        if changed {
            faults.save(&self.dir)?;
        }
        Ok(out)
    }

    /// The current state (after applying elapsed time).
    pub fn state(&self) -> Result<SimState, SimError> {
        self.with_state(|ctx| Ok(ctx.st.clone()))
    }

    /// Applies elapsed time: finishes boots and self-tests, brings back a drive whose off-bus time ran out.
    pub fn tick(&self) -> Result<(), SimError> {
        self.with_state(|_| Ok(()))
    }

    /// Cuts and restores power, as a relay would: counts a power cycle (and an unsafe shutdown unless a
    /// shutdown notification completed first, see [`SimController::shutdown`]), loses any partial firmware
    /// download, applies a pending activation (a conventional reset activates any) and brings back a drive that
    /// had dropped off the bus.
    pub fn power_cycle(&self) -> Result<(), SimError> {
        self.with_state(|ctx| {
            ctx.power_off();
            ctx.power_on()
        })
    }

    /// A shutdown notification (CC.SHN): the drive flushes and completes its shutdown, so the power cut that
    /// follows is not an unsafe shutdown. A drive that is off the bus or unpowered cannot be told.
    pub fn shutdown(&self) -> Result<bool, SimError> {
        self.with_state(|ctx| {
            if !matches!(ctx.st.power, Power::On { .. }) {
                return Ok(false);
            }
            ctx.shutdown_notify()?;
            Ok(true)
        })
    }

    /// Switches power off or on.
    pub fn set_power(&self, on: bool) -> Result<(), SimError> {
        self.with_state(|ctx| {
            if on {
                ctx.power_on()
            } else {
                ctx.power_off();
                Ok(())
            }
        })
    }

    /// Adds a fault to `faults.toml`.
    pub fn add_fault(&self, fault: Fault) -> Result<(), SimError> {
        fault.validate(1).map_err(|reason| SimError::FaultFile {
            path: self.dir.join(faults::FAULT_FILE),
            reason,
        })?;
        self.with_state(|ctx| {
            ctx.faults.faults.push(fault);
            ctx.faults_changed = true;
            Ok(())
        })
    }

    /// Removes all faults.
    pub fn clear_faults(&self) -> Result<(), SimError> {
        let _guard = self.lock()?;
        FaultFile::default().save(&self.dir)
    }

    /// The faults configured now.
    pub fn faults(&self) -> Result<FaultFile, SimError> {
        FaultFile::load(&self.dir)
    }

    /// Accounts I/O that reached namespace 1's backing file directly (the io engine's path), so SMART counters
    /// move as they would on a drive.
    pub fn record_host_io(
        &self,
        read_bytes: u64,
        write_bytes: u64,
        read_cmds: u64,
        write_cmds: u64,
        busy: Duration,
    ) -> Result<(), SimError> {
        self.with_state(|ctx| {
            let c = &mut ctx.st.counters;
            c.bytes_read += read_bytes as u128;
            c.bytes_written += write_bytes as u128;
            c.host_read_commands += read_cmds as u128;
            c.host_write_commands += write_cmds as u128;
            c.busy_ms += busy.as_millis();
            if write_cmds > 0 {
                ctx.st.dirty = true;
            }
            let now = ctx.now;
            ctx.st.add_heat(read_bytes + write_bytes, now);
            Ok(())
        })
    }

    /// The drive's console log file.
    pub fn console_path(&self) -> PathBuf {
        self.dir.join(CONSOLE_FILE)
    }

    /// Namespace 1's backing file (the io engine targets it directly).
    pub fn namespace_path(&self) -> PathBuf {
        self.dir.join(NAMESPACE_FILE)
    }

    fn transport_err(&self, e: SimError) -> TransportError {
        match e {
            SimError::NoDrive { .. } => TransportError::Gone {
                device: self.name(),
                detail: e.to_string(),
            },
            other => TransportError::Unusable {
                device: self.name(),
                detail: other.to_string(),
            },
        }
    }

    fn gone(&self, detail: &str) -> TransportError {
        TransportError::Gone {
            device: self.name(),
            detail: detail.to_string(),
        }
    }
}

/// A completion with status `code` and Do Not Retry: the simulator's answer to a command that cannot succeed.
fn fail(code: u16) -> Completion {
    Completion::status(Status::from_code(code).with_dnr())
}

/// What one pass over a command decided.
enum Step {
    Done(Completion, u64),
    Hang(Fault),
    Absent(TransportError),
}

/// Opens the simulated drive in `dir` behind the passthrough seam (what a `sim:DIR` address resolves to).
pub fn open_passthru(dir: &Path) -> Result<std::sync::Arc<dyn Passthru>, TransportError> {
    let device = format!("sim:{}", dir.display());
    match SimController::open(dir) {
        Ok(c) => Ok(std::sync::Arc::new(c)),
        Err(e @ SimError::NoDrive { .. }) => Err(TransportError::Gone {
            device,
            detail: e.to_string(),
        }),
        Err(e) => Err(TransportError::Unusable {
            device,
            detail: e.to_string(),
        }),
    }
}

impl Passthru for SimController {
    fn submit(
        &self,
        queue: Queue,
        cmd: &Command,
        data: Data<'_>,
        timeout: Option<Duration>,
    ) -> Result<Completion, TransportError> {
        data.check(queue, cmd.opcode)?;
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let start = Instant::now();
        let mut data = Some(data);
        let mut hanging: Option<Fault> = None;
        loop {
            let step = self
                .with_state(|ctx| {
                    if let Some(err) = ctx.presence(self) {
                        return Ok(Step::Absent(err));
                    }
                    // A command already hanging keeps hanging while its fault is in the file.
                    if let Some(h) = &hanging {
                        if let Some(i) = ctx.faults.faults.iter().position(|f| f == h) {
                            if start.elapsed() >= timeout {
                                ctx.faults_changed |= ctx.faults.consume(i);
                                return Ok(Step::Absent(TransportError::Timeout {
                                    device: self.name(),
                                    command: crate::controller::describe(queue, cmd),
                                    timeout,
                                }));
                            }
                            return Ok(Step::Hang(h.clone()));
                        }
                    } else if let Some(i) = ctx.faults.find(FaultKind::Hang, queue, cmd.opcode) {
                        return Ok(Step::Hang(ctx.faults.faults[i].clone()));
                    }
                    if let Some(i) = ctx.faults.find(FaultKind::Vanish, queue, cmd.opcode) {
                        let f = ctx.faults.faults.remove(i);
                        ctx.faults_changed = true;
                        ctx.drop_off_bus(f.ms.map(|ms| ctx.now + ms))?;
                        return Ok(Step::Absent(self.gone("dropped off the bus (injected fault)")));
                    }
                    if queue == Queue::Admin && cmd.opcode == admin_op::FIRMWARE_DOWNLOAD {
                        if let Some(i) = ctx.faults.find(FaultKind::PowerLossDuringDownload, queue, cmd.opcode) {
                            if ctx.st.firmware.staged.len() as u32 >= ctx.faults.faults[i].after.unwrap_or(0) {
                                ctx.faults.faults.remove(i);
                                ctx.faults_changed = true;
                                ctx.power_loss();
                                return Ok(Step::Absent(
                                    self.gone("power was lost during Firmware Image Download (injected fault)"),
                                ));
                            }
                        }
                    }
                    let latency: u64 = ctx
                        .faults
                        .faults
                        .iter()
                        .filter(|f| f.kind == FaultKind::Latency && f.matches(queue, cmd.opcode))
                        .filter_map(|f| f.ms)
                        .sum();
                    if let Some(i) = ctx.faults.find(FaultKind::Status, queue, cmd.opcode) {
                        let status = Status::from_raw(ctx.faults.faults[i].status.unwrap_or(0));
                        ctx.faults_changed |= ctx.faults.consume(i);
                        ctx.record_failure(queue, cmd, status);
                        return Ok(Step::Done(Completion::status(status), latency));
                    }
                    let data = data.take().expect("data used once");
                    // MDTS bounds every data-carrying command, as on a drive: Invalid Field.
                    let mdts = ctx.st.firmware.mdts;
                    if mdts != 0 && data.len() as u64 > 4096u64 << mdts.min(20) {
                        let status = Status::from_code(nvme_spec::status::code::INVALID_FIELD);
                        ctx.record_failure(queue, cmd, status);
                        return Ok(Step::Done(Completion::status(status), latency));
                    }
                    let c = match queue {
                        Queue::Admin => admin::execute(ctx, cmd, data)?,
                        Queue::Io => nvm::execute(ctx, cmd, data)?,
                    };
                    if !c.status.is_success() && !c.status.is_activation_pending() {
                        ctx.record_failure(queue, cmd, c.status);
                    }
                    Ok(Step::Done(c, latency))
                })
                .map_err(|e| self.transport_err(e))?;
            match step {
                Step::Done(c, latency) => {
                    if latency > 0 {
                        thread::sleep(Duration::from_millis(latency));
                    }
                    return Ok(c);
                }
                Step::Absent(e) => return Err(e),
                Step::Hang(f) => {
                    hanging = Some(f);
                    let left = timeout.saturating_sub(start.elapsed());
                    thread::sleep(left.min(Duration::from_millis(50)));
                }
            }
        }
    }

    fn reset(&self, kind: ResetKind) -> Result<(), TransportError> {
        self.with_state(|ctx| {
            if let Some(err) = ctx.presence(self) {
                if matches!(err, TransportError::Gone { .. }) {
                    return Ok(Err(err));
                }
            }
            match kind {
                ResetKind::Controller => ctx.controller_reset()?,
                // As Linux answers NVME_IOCTL_SUBSYS_RESET for a controller without CAP.NSSRS.
                ResetKind::Subsystem if !ctx.st.firmware.subsystem_reset => {
                    return Ok(Err(TransportError::Os {
                        device: self.name(),
                        op: "NVM subsystem reset (the drive does not set CAP.NSSRS)".into(),
                        errno: nix::errno::Errno::ENOTTY,
                    }))
                }
                ResetKind::Subsystem => ctx.subsystem_reset()?,
            }
            Ok(Ok(()))
        })
        .map_err(|e| self.transport_err(e))?
    }

    fn shutdown(&self) -> Option<Result<bool, TransportError>> {
        Some(SimController::shutdown(self).map_err(|e| self.transport_err(e)))
    }

    fn rescan(&self) -> Result<(), TransportError> {
        self.with_state(|ctx| Ok(ctx.presence(self).map_or(Ok(()), Err)))
            .map_err(|e| self.transport_err(e))?
    }

    fn name(&self) -> String {
        format!("sim:{}", self.dir.display())
    }

    fn check_firmware_format(&self, image: &[u8]) -> Option<Result<(), String>> {
        Some(image::check_format(image).map_err(|e| {
            format!("not a firmware image for this simulated drive ({e}); build one with `nvme-flash sim image`")
        }))
    }

    fn device_name(&self) -> String {
        SimState::load(&self.dir)
            .map(|s| format!("nvme{}", s.instance))
            .unwrap_or_else(|_| self.name())
    }
}

#[cfg(test)]
mod tests;
