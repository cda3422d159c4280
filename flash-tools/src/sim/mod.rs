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
pub mod faults;
pub mod image;
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
use nvme_spec::log_page::self_test_result;
use nvme_spec::{Command, Queue, Status};
use state::*;

pub const NAMESPACE_FILE: &str = "ns1.img";
/// The drive's serial console output (boot messages), appended to as events happen.
pub const CONSOLE_FILE: &str = "console.log";
pub const STAGING_FILE: &str = "staging.bin";
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
    NoDrive { dir: PathBuf },
    #[error("{dir} already holds a simulated drive (serial {serial}); remove the directory or pick another")]
    Exists { dir: PathBuf, serial: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}; restore it or recreate the drive")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    FaultFile { path: PathBuf, reason: String },
    #[error("invalid simulated drive setting '{field}': {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// How to build a new simulated drive.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub serial: String,
    pub model: String,
    pub firmware_revision: String,
    pub slots: u8,
    pub slot1_readonly: bool,
    pub activation_without_reset: bool,
    pub size_bytes: u64,
    /// 512 or 4096.
    pub block_size: u32,
    pub fwug: u8,
    pub mdts: u8,
    pub pci_address: Option<String>,
    pub bus: Option<PathBuf>,
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
                activation_reset: ResetRequirement::Controller,
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

    /// Cuts and restores power, as a relay would: counts a power cycle (and an unsafe shutdown if writes were
    /// not flushed), loses any partial firmware download, applies a pending activation and brings back a drive
    /// that had dropped off the bus.
    pub fn power_cycle(&self) -> Result<(), SimError> {
        self.with_state(|ctx| {
            ctx.power_off();
            ctx.power_on()
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

    fn reset(&self, _kind: ResetKind) -> Result<(), TransportError> {
        self.with_state(|ctx| {
            if let Some(err) = ctx.presence(self) {
                if matches!(err, TransportError::Gone { .. }) {
                    return Ok(Err(err));
                }
            }
            ctx.controller_reset()?;
            Ok(Ok(()))
        })
        .map_err(|e| self.transport_err(e))?
    }

    fn rescan(&self) -> Result<(), TransportError> {
        self.with_state(|ctx| Ok(ctx.presence(self).map_or(Ok(()), Err)))
            .map_err(|e| self.transport_err(e))?
    }

    fn name(&self) -> String {
        format!("sim:{}", self.dir.display())
    }

    fn device_name(&self) -> String {
        SimState::load(&self.dir)
            .map(|s| format!("nvme{}", s.instance))
            .unwrap_or_else(|_| self.name())
    }
}

impl Ctx<'_> {
    /// Appends a line to the drive's serial console.
    fn console(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CONSOLE_FILE))
        {
            let _ = writeln!(
                f,
                "[{:>10}.{:03}] nvfsim: {line}",
                self.now / 1000,
                self.now % 1000
            );
        }
    }

    /// `Some(error)` when the drive cannot take commands now.
    fn presence(&self, sim: &SimController) -> Option<TransportError> {
        match self.st.power {
            Power::On { .. } => None,
            Power::Booting { until_ms, .. } => Some(TransportError::NotReady {
                device: sim.name(),
                detail: format!(
                    "firmware booting, ready in {} ms",
                    until_ms.saturating_sub(self.now)
                ),
            }),
            Power::Gone {
                until_ms: Some(t), ..
            } => Some(sim.gone(&format!(
                "off the bus, re-enumerating in {} ms",
                t.saturating_sub(self.now)
            ))),
            Power::Gone { powered: false, .. } => Some(sim.gone("powered off")),
            Power::Gone { .. } => {
                Some(sim.gone("dropped off the bus; it returns only when power-cycled"))
            }
        }
    }

    /// Applies elapsed time.
    fn tick(&mut self) -> Result<(), SimError> {
        let now = self.now;
        match self.st.power.clone() {
            Power::Booting { since_ms, until_ms } if now >= until_ms => {
                self.st.power = Power::On { since_ms };
                let fw = &self.st.firmware;
                let line = if fw.running_failed {
                    format!(
                        "firmware {} self-check FAILED: media path disabled",
                        fw.running_revision
                    )
                } else {
                    format!(
                        "firmware {} ready (slot {})",
                        fw.running_revision, fw.active_slot
                    )
                };
                self.console(&line);
            }
            Power::Gone {
                since_ms,
                until_ms: Some(t),
                powered,
                ..
            } if now >= t => {
                let since_ms = if powered { since_ms } else { now };
                self.reenumerate()?;
                self.console(&format!("PCIe link up (nvme{})", self.st.instance));
                self.st.power = Power::Booting {
                    since_ms,
                    until_ms: now + self.st.timing.boot_ms,
                };
            }
            _ => {}
        }
        if let Some(run) = &self.st.self_test.running {
            if now >= run.started_ms + run.duration_ms {
                let run = self.st.self_test.running.take().expect("checked");
                self.finish_self_test(&run);
            }
        }
        Ok(())
    }

    fn finish_self_test(&mut self, run: &RunningSelfTest) {
        let poh = self.st.power_on_hours(self.now);
        let mut rec = SelfTestRecord {
            code: run.code,
            result: self_test_result::COMPLETED,
            segment: 0,
            power_on_hours: poh,
            nsid: run.nsid,
            failing_lba: None,
            status_code_type: 0,
            status_code: 0,
        };
        if self.st.firmware.running_failed {
            rec.result = self_test_result::FATAL_OR_UNKNOWN;
        } else if let Some(i) = self.faults.find(
            FaultKind::SelfTestFailure,
            Queue::Admin,
            admin_op::DEVICE_SELF_TEST,
        ) {
            self.faults_changed |= self.faults.consume(i);
            rec.result = self_test_result::SEGMENTS_FAILED;
            rec.segment = 2;
            rec.failing_lba = Some(self.st.namespace.blocks() / 3);
            rec.status_code_type = 2;
            rec.status_code = 0x81;
        }
        self.push_self_test(rec);
    }

    fn push_self_test(&mut self, rec: SelfTestRecord) {
        self.st.self_test.results.insert(0, rec);
        self.st.self_test.results.truncate(20);
    }

    /// Ends a running self-test with `result` (an abort).
    fn abort_self_test(&mut self, result: u8) {
        if let Some(run) = self.st.self_test.running.take() {
            let poh = self.st.power_on_hours(self.now);
            self.push_self_test(SelfTestRecord {
                code: run.code,
                result,
                segment: 0,
                power_on_hours: poh,
                nsid: run.nsid,
                failing_lba: None,
                status_code_type: 0,
                status_code: 0,
            });
        }
    }

    fn record_failure(&mut self, queue: Queue, cmd: &Command, status: Status) {
        let sqid = if queue == Queue::Admin { 0 } else { 1 };
        let lba = if queue == Queue::Io { cmd.slba() } else { 0 };
        self.st.take_cmdid();
        self.st.record_error(sqid, status.raw(), cmd.nsid, lba);
    }

    /// Takes a new instance number and, on a bus, publishes the drive under it.
    fn reenumerate(&mut self) -> Result<(), SimError> {
        match self.st.bus.clone() {
            Some(bus) => {
                bus::unpublish(&bus, self.st.instance)?;
                self.st.instance = bus::allocate_instance(&bus)?;
                bus::publish(&bus, self.st, self.dir)?;
            }
            None => self.st.instance += 1,
        }
        Ok(())
    }

    /// The drive leaves the bus until `until_ms` (None = until power-cycled), still powered.
    fn drop_off_bus(&mut self, until_ms: Option<u64>) -> Result<(), SimError> {
        let since_ms = self.st.power.since_ms();
        if let Some(bus) = &self.st.bus {
            bus::unpublish(bus, self.st.instance)?;
        }
        self.st.power = Power::Gone {
            since_ms,
            until_ms,
            powered: true,
            reenumerate: true,
        };
        self.console("PCIe link down");
        Ok(())
    }

    fn clear_staging(&mut self) {
        self.st.firmware.staged.clear();
        let _ = fs::remove_file(self.dir.join(STAGING_FILE));
    }

    fn power_off(&mut self) {
        let since = match self.st.power {
            Power::On { since_ms } | Power::Booting { since_ms, .. } => Some(since_ms),
            Power::Gone {
                since_ms,
                powered: true,
                ..
            } => Some(since_ms),
            Power::Gone { powered: false, .. } => None,
        };
        let Some(since) = since else { return };
        self.st.counters.power_on_ms += self.now.saturating_sub(since) as u128;
        if self.st.dirty {
            self.st.counters.unsafe_shutdowns += 1;
            self.st.dirty = false;
        }
        self.clear_staging();
        self.abort_self_test(self_test_result::ABORTED_UNKNOWN);
        self.st.features_current = self.st.features_saved.clone();
        // A drive that was still on the bus is removed cleanly and keeps its name; one that had already dropped
        // off re-enumerates under a new one.
        let reenumerate = matches!(self.st.power, Power::Gone { .. });
        if let (false, Some(bus)) = (reenumerate, &self.st.bus) {
            let _ = bus::unpublish(bus, self.st.instance);
        }
        self.st.power = Power::Gone {
            since_ms: self.now,
            until_ms: None,
            powered: false,
            reenumerate,
        };
        self.console("power off");
    }

    fn power_on(&mut self) -> Result<(), SimError> {
        let Power::Gone {
            powered: false,
            reenumerate,
            ..
        } = self.st.power
        else {
            return Ok(());
        };
        self.st.counters.power_cycles += 1;
        self.console(&format!(
            "power on; booting firmware {} from slot {}",
            self.st.firmware.running_revision, self.st.firmware.active_slot
        ));
        if reenumerate {
            self.reenumerate()?;
        } else if let Some(bus) = self.st.bus.clone() {
            bus::publish(&bus, self.st, self.dir)?;
        }
        self.st.power = Power::Booting {
            since_ms: self.now,
            until_ms: self.now + self.st.timing.boot_ms,
        };
        if let Some(slot) = self.st.firmware.next_slot {
            self.activate(slot)?;
        }
        Ok(())
    }

    /// Power lost without warning (injected during a firmware download): the drive restarts by itself.
    fn power_loss(&mut self) {
        self.st.dirty = true; // a transfer was in flight: the shutdown is unsafe
        self.power_off();
        let _ = self.power_on();
    }

    /// A controller level reset: aborts a self-test, drops partial downloads, restores saved features and
    /// activates the pending firmware slot, if any.
    fn controller_reset(&mut self) -> Result<(), SimError> {
        self.console("controller reset");
        self.abort_self_test(self_test_result::ABORTED_BY_RESET);
        self.clear_staging();
        self.st.features_current = self.st.features_saved.clone();
        let since_ms = self.st.power.since_ms();
        self.st.power = Power::Booting {
            since_ms,
            until_ms: self.now + self.st.timing.boot_ms,
        };
        if let Some(slot) = self.st.firmware.next_slot {
            self.activate(slot)?;
        }
        Ok(())
    }

    /// Boots the image in `slot`, with that image's behaviour.
    pub(crate) fn activate(&mut self, slot: u8) -> Result<(), SimError> {
        self.st.firmware.next_slot = None;
        let Some(img) = self.st.firmware.image(slot).cloned() else {
            return Ok(());
        };
        let previous = self.st.firmware.active_slot;
        let since_ms = self.st.power.since_ms();
        self.console(&format!(
            "activating firmware {} from slot {slot}",
            img.revision
        ));
        let boot = |ms: u64| Power::Booting {
            since_ms,
            until_ms: self.now + ms,
        };
        let run = |st: &mut SimState, failed: bool| {
            st.firmware.active_slot = slot;
            st.firmware.running_revision = img.revision.clone();
            st.firmware.running_failed = failed;
        };
        match img.behaviour {
            Behaviour::Ok => {
                run(self.st, false);
                self.st.power = boot(self.st.timing.boot_ms);
            }
            Behaviour::BootFail => {
                run(self.st, true);
                self.st.power = boot(self.st.timing.boot_ms);
            }
            Behaviour::SlowBoot => {
                run(self.st, false);
                self.st.power = boot(img.behaviour_ms as u64);
            }
            Behaviour::Vanish => {
                run(self.st, false);
                let until = (img.behaviour_ms != image::FOREVER_MS)
                    .then(|| self.now + img.behaviour_ms as u64);
                self.drop_off_bus(until)?;
            }
            Behaviour::Fallback => {
                // The boot ROM gives up on the new image and boots the previous slot (or any other good one).
                let fallback = if previous != slot && self.st.firmware.image(previous).is_some() {
                    Some(previous)
                } else {
                    (1..=self.st.firmware.slots).find(|&s| {
                        s != slot
                            && self
                                .st
                                .firmware
                                .image(s)
                                .is_some_and(|i| i.behaviour == Behaviour::Ok)
                    })
                };
                match fallback.and_then(|s| self.st.firmware.image(s).cloned().map(|i| (s, i))) {
                    Some((s, i)) => {
                        self.console(&format!(
                            "firmware {} in slot {slot} failed to boot; boot ROM falls back to slot {s} ({})",
                            img.revision, i.revision
                        ));
                        self.console(&format!(
                            "firmware {} in slot {slot} failed to boot; boot ROM falls back to slot {s} ({})",
                            img.revision, i.revision
                        ));
                        self.st.firmware.active_slot = s;
                        self.st.firmware.running_revision = i.revision;
                        self.st.firmware.running_failed = false;
                    }
                    None => run(self.st, true),
                }
                self.st.power = boot(self.st.timing.boot_ms * 2);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
