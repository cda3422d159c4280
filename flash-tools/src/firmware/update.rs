//! The firmware update flow.
//!
//! 1. **Check the image**: non-empty, a whole number of dwords, the caller's sha256 if given. Images are opaque
//!    here: the revision to expect comes from the caller, or from what the drive lists for the target slot after
//!    the commit.
//! 2. **Inspect** the drive: Identify (FR, FRMW, FWUG, MDTS, OACS) and the Firmware Slot log, to know what runs
//!    now, where to put the new image and which slot to fall back to.
//! 3. **Download** in chunks no larger than MDTS, aligned to FWUG; a chunk the drive rejects without DNR is
//!    retried with backoff.
//! 4. **Commit** (action 1 for activation at reset, 3 for immediate activation).
//! 5. **Activate** (controller reset, or the reset the drive says it needs) and **wait** for the drive to come
//!    back, possibly under another device name.
//! 6. **Verify** over passthrough (sysfs goes stale): Identify FR is the new revision, the slot log says the
//!    target slot is active, and the drive is healthy (no new SMART critical warning, a read of LBA 0 works).
//! 7. On a failed verification, **roll back**: activate the previous slot, reset, wait, verify the old revision.
//!
//! Every failure names its step, the NVMe status by name, and the state the drive was left in.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::controller::{CommitOutcome, NvmeError};
use crate::device::{DeviceError, Drive};
use crate::transport::ResetKind;
use nvme_spec::status::code;
use nvme_spec::{Activation, CommitAction, IdentifyController, Status};

#[derive(Clone, Debug)]
pub struct UpdateOptions {
    /// Target slot; `None` picks a writable slot other than the running one, so rollback stays possible.
    pub slot: Option<u8>,
    pub activation: Activation,
    /// Expected sha256 of the image, hex.
    pub sha256: Option<String>,
    /// Revision the drive must report afterwards; by default the revision the drive lists for the target slot
    /// after the commit.
    pub expect_revision: Option<String>,
    /// Retries per chunk for statuses without DNR.
    pub chunk_retries: u32,
    /// Upper bound on the chunk size (the drive's MDTS also bounds it).
    pub max_chunk: u64,
    /// How long to wait for the drive after activation (or after a loss during download).
    pub come_back_timeout: Duration,
    /// Roll back to the previous slot when verification fails.
    pub rollback: bool,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            slot: None,
            activation: Activation::Reset,
            sha256: None,
            expect_revision: None,
            chunk_retries: 3,
            max_chunk: 128 * 1024,
            come_back_timeout: Duration::from_secs(60),
            rollback: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStep {
    CheckImage,
    Inspect,
    Download,
    Commit,
    Activate,
    WaitForDrive,
    Verify,
    Rollback,
}

impl fmt::Display for UpdateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateStep::CheckImage => "check image",
            UpdateStep::Inspect => "inspect drive",
            UpdateStep::Download => "download",
            UpdateStep::Commit => "commit",
            UpdateStep::Activate => "activate",
            UpdateStep::WaitForDrive => "wait for drive",
            UpdateStep::Verify => "verify",
            UpdateStep::Rollback => "roll back",
        })
    }
}

/// How an update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// The new revision is verified running.
    Updated,
    /// Committed and verified pending; it activates at the next reset (`--activate next-reset`).
    Staged,
    /// The update failed; see `failure`.
    Failed,
    /// The new image came up wrong and the drive was rolled back to the previous revision (verified).
    RolledBack,
}

/// Why an update failed, for callers that map failures to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The image or the options are wrong (nothing was sent).
    BadInput,
    /// The drive rejected a command (status named in the message).
    Rejected,
    /// The drive came back running something other than the new image, or unhealthy.
    Verification,
    /// The drive is absent or not answering.
    Unreachable,
    /// A command got no answer in time.
    Timeout,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpdateFailure {
    pub step: UpdateStep,
    pub kind: FailureKind,
    pub message: String,
    /// NVMe status, when the drive answered with one.
    pub status: Option<String>,
    /// What the drive was left running / holding.
    pub drive_state: String,
}

impl fmt::Display for UpdateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "firmware update failed at step '{}': {}; drive state: {}",
            self.step, self.message, self.drive_state
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct UpdateEvent {
    pub elapsed_ms: u64,
    pub step: UpdateStep,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RollbackReport {
    pub slot: u8,
    pub revision: String,
    pub verified: bool,
    pub message: String,
}

/// Everything that happened, for humans (`Display`) and machines (JSON).
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    pub device: String,
    pub device_name_before: String,
    pub device_name_after: Option<String>,
    pub serial: String,
    pub model: String,
    pub previous_revision: String,
    pub previous_slot: u8,
    pub target_slot: u8,
    pub image_bytes: u64,
    pub image_sha256: String,
    pub expected_revision: Option<String>,
    pub chunk_bytes: u64,
    pub chunks: u64,
    pub chunk_retries: u32,
    pub activation: Activation,
    pub running_revision: Option<String>,
    pub running_slot: Option<u8>,
    pub outcome: UpdateResult,
    pub failure: Option<UpdateFailure>,
    pub rollback: Option<RollbackReport>,
    pub elapsed_ms: u64,
    pub events: Vec<UpdateEvent>,
}

impl UpdateReport {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, UpdateResult::Updated | UpdateResult::Staged)
    }
}

/// Progress callbacks (the CLI draws a bar; the agent streams log lines).
pub trait Progress {
    fn event(&mut self, _event: &UpdateEvent) {}
    fn download(&mut self, _done: u64, _total: u64) {}
}

/// Ignores progress.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

struct Updater<'a> {
    drive: &'a mut Drive,
    opts: &'a UpdateOptions,
    progress: &'a mut dyn Progress,
    report: UpdateReport,
    started: Instant,
    critical_warning_before: u8,
}

/// Runs the whole update. Never panics on drive behaviour: every outcome is in the report.
pub fn update(
    drive: &mut Drive,
    image: &[u8],
    opts: &UpdateOptions,
    progress: &mut dyn Progress,
) -> UpdateReport {
    let report = UpdateReport {
        device: drive.locator.addr.to_string(),
        device_name_before: drive.controller().device_name(),
        device_name_after: None,
        serial: String::new(),
        model: String::new(),
        previous_revision: String::new(),
        previous_slot: 0,
        target_slot: 0,
        image_bytes: image.len() as u64,
        image_sha256: hex::encode(Sha256::digest(image)),
        expected_revision: opts.expect_revision.clone(),
        chunk_bytes: 0,
        chunks: 0,
        chunk_retries: 0,
        activation: opts.activation,
        running_revision: None,
        running_slot: None,
        outcome: UpdateResult::Failed,
        failure: None,
        rollback: None,
        elapsed_ms: 0,
        events: vec![],
    };
    let mut u = Updater {
        drive,
        opts,
        progress,
        report,
        started: Instant::now(),
        critical_warning_before: 0,
    };
    if let Err(f) = u.run(image) {
        u.note(f.step, format!("FAILED: {}", f.message));
        u.report.failure = Some(f);
        if u.report.outcome != UpdateResult::RolledBack {
            u.report.outcome = UpdateResult::Failed;
        }
    }
    u.report.elapsed_ms = u.started.elapsed().as_millis() as u64;
    u.report
}

fn describe_nvme(e: &NvmeError) -> (FailureKind, Option<String>) {
    match e {
        NvmeError::Status { status, .. } => (FailureKind::Rejected, Some(status.to_string())),
        NvmeError::Transport(t) if t.is_timeout() => (FailureKind::Timeout, None),
        NvmeError::Transport(_) => (FailureKind::Unreachable, None),
    }
}

fn describe_device(e: &DeviceError) -> (FailureKind, Option<String>) {
    match e {
        DeviceError::Nvme(n) => describe_nvme(n),
        e if e.is_timeout() => (FailureKind::Timeout, None),
        _ => (FailureKind::Unreachable, None),
    }
}

impl Updater<'_> {
    fn note(&mut self, step: UpdateStep, message: impl Into<String>) {
        let ev = UpdateEvent {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            step,
            message: message.into(),
        };
        tracing::info!(step = %ev.step, "{}", ev.message);
        self.progress.event(&ev);
        self.report.events.push(ev);
    }

    fn fail(
        &self,
        step: UpdateStep,
        kind: FailureKind,
        message: String,
        status: Option<String>,
        state: String,
    ) -> UpdateFailure {
        UpdateFailure {
            step,
            kind,
            message,
            status,
            drive_state: state,
        }
    }

    fn untouched(&self) -> String {
        format!(
            "unchanged: still running {} from slot {}, nothing committed",
            self.report.previous_revision, self.report.previous_slot
        )
    }

    fn run(&mut self, image: &[u8]) -> Result<(), UpdateFailure> {
        // 1. Check the image.
        self.check_image(image)?;

        // 2. Inspect.
        let ctrl = self.drive.controller().clone();
        let id = ctrl.identify_controller().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Inspect,
                kind,
                format!("Identify Controller failed: {e}"),
                status,
                "unknown (not reachable)".into(),
            )
        })?;
        self.report.serial = id.serial().to_string();
        self.report.model = id.model().to_string();
        self.report.previous_revision = id.firmware_revision().to_string();
        let slots = ctrl.firmware_slot_log().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Inspect,
                kind,
                format!("reading the Firmware Slot log failed: {e}"),
                status,
                "unchanged".into(),
            )
        })?;
        self.report.previous_slot = slots.active_slot();
        self.critical_warning_before = ctrl.smart_log().map(|s| s.critical_warning).unwrap_or(0);
        self.note(
            UpdateStep::Inspect,
            format!(
                "{} {} (serial {}) runs {} from slot {} of {}{}; FWUG {}, MDTS {}",
                self.report.device_name_before,
                id.model(),
                id.serial(),
                id.firmware_revision(),
                slots.active_slot(),
                id.firmware_slots(),
                if id.slot1_read_only() {
                    " (slot 1 read-only)"
                } else {
                    ""
                },
                id.firmware_update_granularity()
                    .map_or("not reported".into(), |g| format!("{g} bytes")),
                id.max_transfer_bytes()
                    .map_or("unlimited".into(), |m| format!("{m} bytes")),
            ),
        );
        if !id.supports_firmware_commands() {
            self.note(
                UpdateStep::Inspect,
                "Identify OACS bit 2 is clear: the controller does not advertise Firmware Commit / Image Download; trying anyway",
            );
        }
        let target = self.choose_slot(&id, slots.active_slot())?;
        self.report.target_slot = target;

        // 3. Download.
        self.download(&id, image)?;

        // 4. Commit.
        let action = match self.opts.activation {
            Activation::Now => CommitAction::ActivateNow,
            _ => CommitAction::ReplaceActivateOnReset,
        };
        let outcome = ctrl
            .firmware_commit(target, action)
            .map_err(|e| self.commit_failure(&id, target, action, e))?;
        let mut reset_needed = match (self.opts.activation, outcome) {
            (_, CommitOutcome::NeedsReset(s)) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target}; the drive answered {s}: resetting"),
                );
                Some(if s.code() == code::FW_NEEDS_SUBSYSTEM_RESET {
                    ResetKind::Subsystem
                } else {
                    ResetKind::Controller
                })
            }
            (Activation::Reset, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target} ({})", action.describe()),
                );
                Some(ResetKind::Controller)
            }
            (Activation::NextReset, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target}; activates at the next reset"),
                );
                None
            }
            (Activation::Now, _) => {
                self.note(
                    UpdateStep::Commit,
                    format!("committed to slot {target} and activated without reset"),
                );
                None
            }
        };
        // What the drive says the new image is (the host cannot parse real images).
        let after_commit = self.drive.controller().firmware_slot_log().ok();
        if target == 0 {
            if let Some(log) = &after_commit {
                let chosen = log.next_active_slot().unwrap_or(log.active_slot());
                self.report.target_slot = chosen;
                self.note(
                    UpdateStep::Commit,
                    format!("the controller chose slot {chosen}"),
                );
            }
        }
        let target = self.report.target_slot;
        if self.report.expected_revision.is_none() {
            self.report.expected_revision = after_commit
                .as_ref()
                .and_then(|l| l.revision(target).map(str::to_string));
        }
        if self.opts.activation == Activation::NextReset && reset_needed.is_none() {
            return self.verify_staged(target);
        }

        // 5. Activate and wait.
        if let Some(kind) = reset_needed.take() {
            self.note(
                UpdateStep::Activate,
                format!("{kind:?} reset to activate slot {target}")
                    .replace("Controller", "controller")
                    .replace("Subsystem", "NVM subsystem"),
            );
            if let Err(e) = self.drive.controller().reset(kind) {
                if !e.is_absent() {
                    let (k, status) = describe_nvme(&e);
                    return Err(self.fail(
                        UpdateStep::Activate,
                        k,
                        format!("the reset failed: {e}"),
                        status,
                        format!("new image committed to slot {target}, activates at the next reset; still running {}", self.report.previous_revision),
                    ));
                }
            }
        }
        self.wait_for_drive(UpdateStep::WaitForDrive, target)?;

        // 6. Verify.
        match self.verify(target) {
            Ok(()) => {
                self.report.outcome = UpdateResult::Updated;
                Ok(())
            }
            Err(cause) => self.handle_bad_activation(target, cause),
        }
    }

    fn check_image(&mut self, image: &[u8]) -> Result<(), UpdateFailure> {
        let bad = |msg: String| UpdateFailure {
            step: UpdateStep::CheckImage,
            kind: FailureKind::BadInput,
            message: msg,
            status: None,
            drive_state: "untouched: nothing was sent to the drive".into(),
        };
        if image.is_empty() {
            return Err(bad("the image is empty".into()));
        }
        if image.len() % 4 != 0 {
            return Err(bad(format!(
                "the image is {} bytes, not a whole number of dwords (Firmware Image Download moves 4-byte units)",
                image.len()
            )));
        }
        if let Some(want) = &self.opts.sha256 {
            let want = want.trim().to_ascii_lowercase();
            if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("--sha256 '{want}' is not 64 hex digits")));
            }
            if want != self.report.image_sha256 {
                return Err(bad(format!(
                    "sha256 mismatch: the image hashes to {}, expected {want} (wrong or corrupted file)",
                    self.report.image_sha256
                )));
            }
        }
        self.note(
            UpdateStep::CheckImage,
            format!(
                "image: {} bytes, sha256 {}",
                image.len(),
                self.report.image_sha256
            ),
        );
        Ok(())
    }

    fn choose_slot(&mut self, id: &IdentifyController, active: u8) -> Result<u8, UpdateFailure> {
        let n = id.firmware_slots();
        if let Some(s) = self.opts.slot {
            if !(1..=7).contains(&s) {
                return Err(UpdateFailure {
                    step: UpdateStep::Inspect,
                    kind: FailureKind::BadInput,
                    message: format!(
                        "slot {s} is not a firmware slot: slots are 1 to 7 (this drive has {n})"
                    ),
                    status: None,
                    drive_state: self.untouched(),
                });
            }
            if s == active {
                self.note(
                    UpdateStep::Inspect,
                    format!("slot {s} holds the running image: rollback will not be possible"),
                );
            }
            return Ok(s);
        }
        match (1..=n).find(|&s| s != active && !(s == 1 && id.slot1_read_only())) {
            Some(s) => {
                self.note(
                    UpdateStep::Inspect,
                    format!("using slot {s}; slot {active} keeps the running image for rollback"),
                );
                Ok(s)
            }
            None => {
                self.note(UpdateStep::Inspect, "no spare writable slot: the controller picks one (rollback may not be possible)");
                Ok(0)
            }
        }
    }

    fn download(&mut self, id: &IdentifyController, image: &[u8]) -> Result<(), UpdateFailure> {
        let mdts = id.max_transfer_bytes().unwrap_or(u64::MAX);
        let gran = id.firmware_update_granularity().unwrap_or(4096);
        let cap = self.opts.max_chunk.min(mdts);
        let mut chunk = cap / gran * gran;
        if chunk == 0 {
            if gran > mdts {
                return Err(UpdateFailure {
                    step: UpdateStep::Download,
                    kind: FailureKind::Rejected,
                    message: format!("the drive's update granularity (FWUG, {gran} bytes) exceeds its maximum transfer size (MDTS, {mdts} bytes): it cannot be updated"),
                    status: None,
                    drive_state: self.untouched(),
                });
            }
            chunk = gran;
        }
        let total = image.len() as u64;
        self.report.chunk_bytes = chunk;
        self.report.chunks = total.div_ceil(chunk);
        self.note(
            UpdateStep::Download,
            format!(
                "downloading {total} bytes in {} chunk(s) of up to {chunk} bytes",
                self.report.chunks
            ),
        );
        let ctrl = self.drive.controller().clone();
        let mut offset = 0u64;
        while offset < total {
            let end = (offset + chunk).min(total);
            let piece = &image[offset as usize..end as usize];
            let mut attempt = 0;
            loop {
                match ctrl.firmware_download(offset, piece) {
                    Ok(()) => break,
                    Err(NvmeError::Status { status, .. })
                        if !status.dnr() && attempt < self.opts.chunk_retries =>
                    {
                        attempt += 1;
                        self.report.chunk_retries += 1;
                        self.note(UpdateStep::Download, format!("chunk at offset {offset:#x} answered {status}; retry {attempt} of {}", self.opts.chunk_retries));
                        thread::sleep(Duration::from_millis(50 << attempt.min(6)));
                    }
                    Err(e) => return Err(self.download_failure(id, offset, total, e)),
                }
            }
            offset = end;
            self.progress.download(offset, total);
        }
        Ok(())
    }

    fn download_failure(
        &mut self,
        id: &IdentifyController,
        offset: u64,
        total: u64,
        e: NvmeError,
    ) -> UpdateFailure {
        let (kind, status) = describe_nvme(&e);
        let mut message =
            format!("Firmware Image Download at offset {offset:#x} of {total} bytes failed: {e}");
        if e.status().is_some_and(|s| s.code() == code::INVALID_OPCODE) {
            message = format!(
                "the controller does not support Firmware Image Download: it answered {}{}",
                e.status().unwrap_or_default(),
                if id.supports_firmware_commands() {
                    ""
                } else {
                    " (and Identify OACS bit 2, firmware commands, is clear)"
                }
            );
        } else if e
            .status()
            .is_some_and(|s| s.code() == code::OVERLAPPING_RANGE)
        {
            message.push_str(" (the drive holds an overlapping portion from an earlier download)");
        }
        let drive_state = if kind == FailureKind::Unreachable {
            // Find out whether it came back and what it runs, so the report is exact.
            match self.drive.wait_ready(self.opts.come_back_timeout) {
                Ok(()) => match self.drive.controller().identify_controller() {
                    Ok(now) => format!(
                        "the drive came back as {} running {}; the partial download was lost and nothing was committed: rerun the update",
                        self.drive.controller().device_name(),
                        now.firmware_revision()
                    ),
                    Err(e) => format!("the drive came back but Identify fails ({e}); nothing was committed"),
                },
                Err(e) => format!("the drive did not come back ({e}); nothing was committed; it may need a power cycle"),
            }
        } else {
            self.untouched()
        };
        self.fail(UpdateStep::Download, kind, message, status, drive_state)
    }

    fn commit_failure(
        &self,
        id: &IdentifyController,
        slot: u8,
        action: CommitAction,
        e: NvmeError,
    ) -> UpdateFailure {
        let (kind, status) = describe_nvme(&e);
        let hint = match e.status().map(Status::code) {
            Some(code::INVALID_FIRMWARE_SLOT) if slot == 1 && id.slot1_read_only() => {
                " (Identify FRMW marks slot 1 read-only)".to_string()
            }
            Some(code::INVALID_FIRMWARE_SLOT) => {
                format!(" (the drive has {} slot(s))", id.firmware_slots())
            }
            Some(code::INVALID_FIRMWARE_IMAGE) => {
                " (the drive rejected the image: corrupt, truncated, or built for another model)"
                    .to_string()
            }
            Some(code::FW_ACTIVATION_PROHIBITED) => {
                " (the drive refuses this revision, e.g. a downgrade)".to_string()
            }
            _ => String::new(),
        };
        self.fail(
            UpdateStep::Commit,
            kind,
            format!(
                "Firmware Commit (slot {slot}, action {}: {}) failed: {e}{hint}",
                action as u8,
                action.describe()
            ),
            status,
            format!(
                "unchanged: still running {} from slot {}; the downloaded image was discarded",
                self.report.previous_revision, self.report.previous_slot
            ),
        )
    }

    fn wait_for_drive(&mut self, step: UpdateStep, target: u8) -> Result<(), UpdateFailure> {
        let before = self.drive.controller().device_name();
        self.note(
            step,
            format!(
                "waiting up to {} for the drive to come back",
                humantime::format_duration(self.opts.come_back_timeout)
            ),
        );
        let waited = Instant::now();
        if let Err(e) = self.drive.wait_ready(self.opts.come_back_timeout) {
            let (kind, status) = describe_device(&e);
            return Err(self.fail(
                step,
                kind,
                format!("the drive did not come back after activation: {e}"),
                status,
                format!("unknown: the new image is committed to slot {target}; the drive is off the bus and needs a power cycle"),
            ));
        }
        let after = self.drive.controller().device_name();
        self.report.device_name_after = Some(after.clone());
        let took =
            humantime::format_duration(Duration::from_millis(waited.elapsed().as_millis() as u64));
        if after != before {
            self.note(
                step,
                format!("the drive re-enumerated as {after} (was {before}) after {took}"),
            );
        } else {
            self.note(step, format!("the drive is back as {after} after {took}"));
        }
        Ok(())
    }

    /// Checks the running revision, active slot and health. Err = why the new firmware is not good.
    fn verify(&mut self, target: u8) -> Result<(), String> {
        let ctrl = self.drive.controller().clone();
        let id = ctrl
            .identify_controller()
            .map_err(|e| format!("Identify Controller failed: {e}"))?;
        let log = ctrl
            .firmware_slot_log()
            .map_err(|e| format!("reading the Firmware Slot log failed: {e}"))?;
        let fr = id.firmware_revision().to_string();
        self.report.running_revision = Some(fr.clone());
        self.report.running_slot = Some(log.active_slot());
        let expected = self.report.expected_revision.clone().unwrap_or_default();
        if log.active_slot() != target || (!expected.is_empty() && fr != expected) {
            if fr == self.report.previous_revision && log.active_slot() == self.report.previous_slot
            {
                return Err(format!(
                    "the drive fell back to slot {} ({fr}): the new image in slot {target} did not boot",
                    log.active_slot()
                ));
            }
            return Err(format!(
                "the drive runs {fr} from slot {}, expected {} from slot {target}",
                log.active_slot(),
                if expected.is_empty() {
                    "the new image"
                } else {
                    &expected
                }
            ));
        }
        let smart = ctrl
            .smart_log()
            .map_err(|e| format!("reading SMART / Health failed: {e}"))?;
        let new_bits = smart.critical_warning & !self.critical_warning_before;
        if new_bits != 0 {
            return Err(format!(
                "{fr} is running but SMART reports new critical warning bits {new_bits:#04x} ({})",
                nvme_spec::log_page::critical_warning::describe(new_bits)
            ));
        }
        if let Some(&nsid) = ctrl
            .active_namespaces()
            .map_err(|e| format!("listing namespaces failed: {e}"))?
            .first()
        {
            let ns = ctrl
                .identify_namespace(nsid)
                .map_err(|e| format!("Identify Namespace {nsid} failed: {e}"))?;
            let bs = ns.block_size() as u32;
            let mut buf = vec![0u8; bs as usize];
            ctrl.read(nsid, 0, &mut buf, bs).map_err(|e| {
                format!("{fr} is running but reading LBA 0 of namespace {nsid} failed: {e}")
            })?;
        }
        self.note(
            UpdateStep::Verify,
            format!("verified: {fr} runs from slot {target}, SMART clean, namespace readable"),
        );
        Ok(())
    }

    fn verify_staged(&mut self, target: u8) -> Result<(), UpdateFailure> {
        let log = self.drive.controller().firmware_slot_log().map_err(|e| {
            let (kind, status) = describe_nvme(&e);
            self.fail(
                UpdateStep::Verify,
                kind,
                format!("reading the Firmware Slot log failed: {e}"),
                status,
                "committed, unverified".into(),
            )
        })?;
        let expected = self.report.expected_revision.clone().unwrap_or_default();
        let staged_rev = log.revision(target).unwrap_or("");
        if log.next_active_slot() != Some(target)
            || (!expected.is_empty() && staged_rev != expected)
        {
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                format!(
                    "after commit the slot log shows slot {target} = '{staged_rev}' and next active slot {:?}, expected '{expected}' pending in slot {target}",
                    log.next_active_slot()
                ),
                None,
                format!("running {} from slot {}", self.report.previous_revision, log.active_slot()),
            ));
        }
        self.report.running_revision = Some(self.report.previous_revision.clone());
        self.report.running_slot = Some(log.active_slot());
        self.report.outcome = UpdateResult::Staged;
        self.note(
            UpdateStep::Verify,
            format!("slot {target} holds {staged_rev} and activates at the next reset"),
        );
        Ok(())
    }

    fn handle_bad_activation(&mut self, target: u8, cause: String) -> Result<(), UpdateFailure> {
        self.note(UpdateStep::Verify, cause.clone());
        let prev_slot = self.report.previous_slot;
        let prev_rev = self.report.previous_revision.clone();
        let fell_back = self.report.running_slot == Some(prev_slot)
            && self.report.running_revision.as_deref() == Some(&prev_rev);
        if fell_back {
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!("running the previous firmware {prev_rev} from slot {prev_slot} (the drive fell back by itself); slot {target} holds the image that failed"),
            ));
        }
        if !self.opts.rollback || prev_slot == target || prev_slot == 0 {
            let why = if !self.opts.rollback {
                "rollback disabled"
            } else {
                "the previous image was overwritten"
            };
            return Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!(
                    "running {} from slot {} ({why})",
                    self.report
                        .running_revision
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    self.report.running_slot.unwrap_or(0)
                ),
            ));
        }
        // 7. Roll back.
        self.note(
            UpdateStep::Rollback,
            format!("rolling back to slot {prev_slot} ({prev_rev})"),
        );
        let result = self.roll_back(prev_slot, &prev_rev);
        let verified = result.is_ok();
        let message = match &result {
            Ok(()) => format!("rolled back to {prev_rev} in slot {prev_slot}, verified running"),
            Err(e) => format!("rollback to slot {prev_slot} failed: {e}"),
        };
        self.note(UpdateStep::Rollback, message.clone());
        self.report.rollback = Some(RollbackReport {
            slot: prev_slot,
            revision: prev_rev.clone(),
            verified,
            message: message.clone(),
        });
        if verified {
            self.report.outcome = UpdateResult::RolledBack;
            Err(self.fail(
                UpdateStep::Verify,
                FailureKind::Verification,
                cause,
                None,
                format!("rolled back: running the previous firmware {prev_rev} from slot {prev_slot} (verified); slot {target} holds the image that failed"),
            ))
        } else {
            Err(self.fail(
                UpdateStep::Rollback,
                FailureKind::Verification,
                format!("{cause}; {message}"),
                None,
                "unknown: the rollback did not verify".into(),
            ))
        }
    }

    fn roll_back(&mut self, slot: u8, revision: &str) -> Result<(), String> {
        let ctrl = self.drive.controller().clone();
        ctrl.firmware_commit(slot, CommitAction::ActivateOnReset)
            .map_err(|e| e.to_string())?;
        if let Err(e) = ctrl.reset(ResetKind::Controller) {
            if !e.is_absent() {
                return Err(format!("reset failed: {e}"));
            }
        }
        self.drive
            .wait_ready(self.opts.come_back_timeout)
            .map_err(|e| e.to_string())?;
        self.report.device_name_after = Some(self.drive.controller().device_name());
        let id = self
            .drive
            .controller()
            .identify_controller()
            .map_err(|e| e.to_string())?;
        let log = self
            .drive
            .controller()
            .firmware_slot_log()
            .map_err(|e| e.to_string())?;
        self.report.running_revision = Some(id.firmware_revision().to_string());
        self.report.running_slot = Some(log.active_slot());
        if id.firmware_revision() != revision || log.active_slot() != slot {
            return Err(format!(
                "after rollback the drive runs {} from slot {}",
                id.firmware_revision(),
                log.active_slot()
            ));
        }
        Ok(())
    }
}

impl fmt::Display for UpdateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.outcome, &self.failure) {
            (UpdateResult::Updated, _) => write!(
                f,
                "updated {} ({}): {} → {} in slot {}, verified running",
                self.device,
                self.device_name_after
                    .as_deref()
                    .unwrap_or(&self.device_name_before),
                self.previous_revision,
                self.running_revision.as_deref().unwrap_or("?"),
                self.target_slot
            ),
            (UpdateResult::Staged, _) => write!(
                f,
                "staged on {}: slot {} holds {} and activates at the next reset (running {})",
                self.device,
                self.target_slot,
                self.expected_revision.as_deref().unwrap_or("?"),
                self.previous_revision
            ),
            (_, Some(fail)) => write!(f, "{fail}"),
            (_, None) => write!(f, "firmware update on {} did not complete", self.device),
        }
    }
}
