//! What the update flow takes and reports: its options, its steps, how it ended, why it failed, what it did.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use nvme_spec::Activation;

/// How to update.
#[derive(Clone, Debug)]
pub struct UpdateOptions {
    /// Target slot; `None` picks a writable slot other than the running one, so rollback stays possible.
    pub slot: Option<u8>,
    /// How the image was activated.
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
    /// Set to stop the update at its next safe point: between download chunks or before the commit. Once the
    /// commit is sent the update runs to the end (activation and verification), so the drive's state is known.
    pub cancel: Option<Arc<AtomicBool>>,
    /// A conventional reset (a power cycle through the rig's power control), for a drive whose image only a
    /// power cycle activates (0x10B) or that needs an NVM subsystem reset it cannot take from the host.
    /// Without one such an update stops and says which reset the drive needs.
    pub power_cycle: Option<PowerCycle>,
}

/// Power-cycles the drive (off, wait, on); `Err` says why it could not.
#[derive(Clone)]
pub struct PowerCycle {
    /// What does it, for the report ("USB relay 16c0:05df channel 1").
    pub describe: String,
    /// Does it.
    pub run: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl fmt::Debug for PowerCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerCycle")
            .field("describe", &self.describe)
            .finish()
    }
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
            cancel: None,
            power_cycle: None,
        }
    }
}

/// The steps of the update flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStep {
    /// Checking the image (size, alignment, sha256).
    CheckImage,
    /// Reading Identify and the slot log.
    Inspect,
    /// Firmware Image Download.
    Download,
    /// Firmware Commit.
    Commit,
    /// Resetting to activate.
    Activate,
    /// Waiting for the drive to come back.
    WaitForDrive,
    /// Checking the new revision runs and the drive is healthy.
    Verify,
    /// Activating the previous image again.
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
    /// The caller stopped the update before the commit.
    Cancelled,
    /// The drive needs a reset this host or rig cannot give it (a power cycle without power control, an NVM
    /// subsystem reset the drive does not support): the image is committed and waits for that reset.
    ResetUnavailable,
}

/// Why an update failed, where, and what state it left the drive in.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateFailure {
    /// The step it belongs to.
    pub step: UpdateStep,
    /// The kind, for exit codes and outcomes.
    pub kind: FailureKind,
    /// What happened.
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

/// One thing the update flow did.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateEvent {
    /// Milliseconds since the update started.
    pub elapsed_ms: u64,
    /// The step it belongs to.
    pub step: UpdateStep,
    /// What happened.
    pub message: String,
}

/// What the rollback to the previous image did.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackReport {
    /// The slot rolled back to.
    pub slot: u8,
    /// The revision in that slot.
    pub revision: String,
    /// Whether the drive was verified running it afterwards.
    pub verified: bool,
    /// What happened.
    pub message: String,
}

/// Everything that happened, for humans (`Display`) and machines (JSON).
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    /// The drive's address.
    pub device: String,
    /// The OS device name before the update.
    pub device_name_before: String,
    /// The OS device name after activation (it may re-enumerate).
    pub device_name_after: Option<String>,
    /// The drive's serial number.
    pub serial: String,
    /// The drive's model.
    pub model: String,
    /// The revision running before.
    pub previous_revision: String,
    /// The slot it ran from.
    pub previous_slot: u8,
    /// The slot the new image went to.
    pub target_slot: u8,
    /// Image size.
    pub image_bytes: u64,
    /// Image sha256, hex.
    pub image_sha256: String,
    /// The revision the new image should report.
    pub expected_revision: Option<String>,
    /// Download chunk size.
    pub chunk_bytes: u64,
    /// Download chunks.
    pub chunks: u64,
    /// Chunks retried after a status without DNR.
    pub chunk_retries: u32,
    /// How the image was activated.
    pub activation: Activation,
    /// The revision running afterwards, as read from the drive.
    pub running_revision: Option<String>,
    /// The slot running afterwards.
    pub running_slot: Option<u8>,
    /// How it ended.
    pub outcome: UpdateResult,
    /// Why it failed, if it did.
    pub failure: Option<UpdateFailure>,
    /// The rollback, if one ran.
    pub rollback: Option<RollbackReport>,
    /// Milliseconds since the update started.
    pub elapsed_ms: u64,
    /// Everything that happened, in order.
    pub events: Vec<UpdateEvent>,
}

impl UpdateReport {
    /// Updated or staged.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, UpdateResult::Updated | UpdateResult::Staged)
    }
}

/// Progress callbacks (the CLI draws a bar; the agent streams log lines).
pub trait Progress {
    /// The flow did something.
    fn event(&mut self, _event: &UpdateEvent) {}
    /// `done` of `total` image bytes are downloaded.
    fn download(&mut self, _done: u64, _total: u64) {}
}

/// Ignores progress.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

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
