//! The simulated drive's persistent state: what a real drive keeps in flash and NOR (identity, firmware slots,
//! SMART counters, logs, saved features) plus what the simulation needs to model time (boot and self-test
//! deadlines, power).
//!
//! Stored as `sim.json` in the drive's directory, replaced atomically (write to a temporary file, then rename)
//! under the directory's lock, so a killed process never leaves a half-written state.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::image::Behaviour;
use super::SimError;

/// The drive's state file.
pub const STATE_FILE: &str = "sim.json";
/// The state format this simulator writes.
pub const STATE_VERSION: u32 = 1;

fn default_mtfa_ms() -> u32 {
    5000
}

fn yes() -> bool {
    true
}

/// The simulated drive's clock: now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    nvme_spec::units::unix_ms(SystemTime::now())
}

/// Which reset a drive asks for when Firmware Commit action 3 cannot activate without one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetRequirement {
    /// 0x111 Firmware Activation Requires Controller Level Reset.
    #[default]
    Controller,
    /// 0x10B Firmware Activation Requires Conventional Reset.
    Conventional,
    /// 0x110 Firmware Activation Requires NVM Subsystem Reset.
    Subsystem,
}

/// An image stored in a firmware slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotImage {
    /// Revision of the image in the slot.
    pub revision: String,
    /// What the image does after activation.
    pub behaviour: Behaviour,
    /// Timing for the behaviour.
    pub behaviour_ms: u32,
    /// Bytes.
    pub len: u64,
    /// CRC-32 of the payload.
    pub crc32: u32,
}

/// A downloaded range of the staging image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedRange {
    /// Offset.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// Firmware slots and what runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareState {
    /// Number of slots, 1..=7.
    pub slots: u8,
    /// Slot 1 is read-only.
    pub slot1_readonly: bool,
    /// Commit action 3 activates without a reset (FRMW bit 4).
    pub activation_without_reset: bool,
    /// The reset that activates a committed image: answered by commit actions 1 and 2 (0x10B or 0x110; a
    /// drive that a controller reset activates answers success) and by action 3 when it cannot activate
    /// without a reset. A controller reset does not activate an image that needs a subsystem or conventional
    /// one; an NVM subsystem reset does not activate one that needs a conventional reset.
    pub activation_reset: ResetRequirement,
    /// Maximum Time for Firmware Activation (Identify MTFA, reported in 100 ms units; 0: not reported): commit
    /// action 3 of an image whose activation would take longer answers 0x112 and activates nothing.
    #[serde(default = "default_mtfa_ms")]
    pub mtfa_ms: u32,
    /// CAP.NSSRS: the drive supports NVM Subsystem Reset.
    #[serde(default = "yes")]
    pub subsystem_reset: bool,
    /// FWUG, in 4 KiB units.
    pub fwug: u8,
    /// MDTS, as a power of two of 4 KiB.
    pub mdts: u8,
    /// Images in slots 1..=7 (index 0 = slot 1).
    pub images: Vec<Option<SlotImage>>,
    /// The slot the running firmware came from.
    pub active_slot: u8,
    /// Slot to activate at the next reset.
    pub next_slot: Option<u8>,
    /// Revision reported in Identify FR.
    pub running_revision: String,
    /// The running image booted into its failed state (boot-fail behaviour).
    pub running_failed: bool,
    /// Portions of an image downloaded but not yet committed (bytes in `staging.bin`).
    pub staged: Vec<StagedRange>,
}

impl FirmwareState {
    /// The image in `slot`.
    pub fn image(&self, slot: u8) -> Option<&SlotImage> {
        self.images.get(slot as usize - 1).and_then(|s| s.as_ref())
    }
}

/// Namespace 1's geometry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceState {
    /// Namespace capacity in bytes (a multiple of the largest LBA size).
    pub size_bytes: u64,
    /// LBA format in use: 0 = 512-byte blocks, 1 = 4096-byte blocks.
    pub lba_format: u8,
    /// Blocks marked by Write Uncorrectable (start, count), sorted and disjoint: reads fail until rewritten.
    #[serde(default)]
    pub uncorrectable: Vec<(u64, u64)>,
    /// Size of the volatile write cache (0: writes go straight to the media; see [`super::cache`]).
    #[serde(default)]
    pub write_cache_bytes: u64,
    /// Writes in the cache, oldest first: (start block, blocks, byte position in `wcache.bin`).
    #[serde(default)]
    pub cached: Vec<(u64, u64, u64)>,
}

impl NamespaceState {
    /// Bytes held in the write cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cached.iter().map(|&(_, n, _)| n).sum::<u64>() * self.block_size()
    }

    /// Whether any of `count` blocks from `slba` is marked uncorrectable.
    pub fn uncorrectable_in(&self, slba: u64, count: u64) -> bool {
        self.uncorrectable
            .iter()
            .any(|&(s, n)| s < slba.saturating_add(count) && slba < s.saturating_add(n))
    }

    /// Marks `count` blocks from `slba` uncorrectable (`true`) or good again (`false`: they were written).
    pub fn mark_uncorrectable(&mut self, slba: u64, count: u64, bad: bool) {
        let end = slba.saturating_add(count);
        let mut out = Vec::with_capacity(self.uncorrectable.len() + 1);
        for &(s, n) in &self.uncorrectable {
            let e = s.saturating_add(n);
            if e <= slba || s >= end {
                out.push((s, n));
                continue;
            }
            // Keep what lies outside the written range.
            if s < slba {
                out.push((s, slba - s));
            }
            if e > end {
                out.push((end, e - end));
            }
        }
        if bad {
            out.push((slba, count));
        }
        out.sort_unstable();
        // Merge neighbours so the list stays small however the ranges were marked.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (s, n) in out {
            match merged.last_mut() {
                Some((ps, pn)) if *ps + *pn >= s => *pn = (s + n).max(*ps + *pn) - *ps,
                _ => merged.push((s, n)),
            }
        }
        self.uncorrectable = merged;
    }

    /// Bytes per logical block.
    pub fn block_size(&self) -> u64 {
        if self.lba_format == 1 {
            4096
        } else {
            512
        }
    }
    /// Logical blocks in the namespace.
    pub fn blocks(&self) -> u64 {
        self.size_bytes / self.block_size()
    }
}

/// What SMART reports, as the simulator counts it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Bytes read by the host.
    pub bytes_read: u128,
    /// Bytes written by the host.
    pub bytes_written: u128,
    /// Read commands.
    pub host_read_commands: u128,
    /// Write commands.
    pub host_write_commands: u128,
    /// Time spent on I/O.
    pub busy_ms: u128,
    /// Power cycles.
    pub power_cycles: u128,
    /// Power losses without a shutdown notification.
    pub unsafe_shutdowns: u128,
    /// Media errors reported.
    pub media_errors: u128,
    /// Accumulated powered-on time, not counting the current power-on period.
    pub power_on_ms: u128,
    /// Extra heat from recent I/O, in Kelvin, decaying over time.
    pub heat: f64,
    /// When `heat` was last updated.
    pub heat_updated_ms: u64,
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Endurance used, percent.
    pub percent_used: u8,
}

/// One Error Information log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRecord {
    /// Its error count.
    pub error_count: u64,
    /// Submission queue of the failed command.
    pub sqid: u16,
    /// Command ID of the failed command.
    pub cmdid: u16,
    /// Status it completed with.
    pub status: u16,
    /// LBA concerned.
    pub lba: u64,
    /// Namespace concerned (FFFFFFFFh: not specific to a namespace).
    pub nsid: u32,
    /// Parameter Error Location: bits 7:0 the byte of the submission queue entry, bits 10:8 the bit, of the
    /// field in error; FFFFh when the error is not about a field.
    #[serde(default = "no_location")]
    pub parm_error_location: u16,
}

fn no_location() -> u16 {
    0xffff
}

/// A self-test in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningSelfTest {
    /// Short (1) or extended (2).
    pub code: u8,
    /// Namespace concerned.
    pub nsid: u32,
    /// When it started.
    pub started_ms: u64,
    /// How long it takes.
    pub duration_ms: u64,
}

/// One finished self-test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestRecord {
    /// Short (1) or extended (2).
    pub code: u8,
    /// Result code.
    pub result: u8,
    /// First failed segment.
    pub segment: u8,
    /// Power-on hours when it ended.
    pub power_on_hours: u64,
    /// Namespace concerned.
    pub nsid: u32,
    /// Failing LBA, if known.
    pub failing_lba: Option<u64>,
    /// Status code type of the failure.
    pub status_code_type: u8,
    /// Status code of the failure.
    pub status_code: u8,
}

/// Self-tests, running and finished.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestState {
    /// The one in progress.
    pub running: Option<RunningSelfTest>,
    /// Newest first, at most 20.
    pub results: Vec<SelfTestRecord>,
}

/// Power and bus presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Power {
    /// Powered and answering.
    On {
        /// Since when (Unix ms).
        since_ms: u64,
    },
    /// Powered, firmware booting until `until_ms`.
    Booting {
        /// Since when (Unix ms).
        since_ms: u64,
        /// Until when (Unix ms).
        until_ms: u64,
    },
    /// Not on the bus. Comes back at `until_ms`, or only when power-cycled if `until_ms` is None. `powered` is
    /// false when the power was switched off. `reenumerate`: it dropped off the bus unexpectedly, so the host
    /// still holds its old node and it comes back under a new device name.
    Gone {
        /// Since when.
        since_ms: u64,
        /// Until when (forever when absent).
        until_ms: Option<u64>,
        /// Whether it has power.
        powered: bool,
        /// It comes back under a new instance number.
        reenumerate: bool,
    },
}

impl Power {
    /// When the current powered period (or the off period) began.
    pub fn since_ms(&self) -> u64 {
        match self {
            Power::On { since_ms }
            | Power::Booting { since_ms, .. }
            | Power::Gone { since_ms, .. } => *since_ms,
        }
    }
}

/// How long things take on the simulated drive.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Time to boot after a reset or power-on.
    pub boot_ms: u64,
    /// A short self-test.
    pub self_test_short_ms: u64,
    /// An extended self-test.
    pub self_test_extended_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            boot_ms: 200,
            self_test_short_ms: 2000,
            self_test_extended_ms: 8000,
        }
    }
}

/// Everything a simulated drive is, as stored in `sim.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    /// State format version.
    pub version: u32,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// PCI address.
    pub pci_address: String,
    /// Firmware slots and what runs.
    pub firmware: FirmwareState,
    /// Namespace 1.
    pub namespace: NamespaceState,
    /// SMART counters.
    pub counters: Counters,
    /// Error log, newest first, at most 64 entries.
    pub errors: Vec<ErrorRecord>,
    /// Its error count.
    pub error_count: u64,
    /// Next command ID for error log entries.
    pub next_cmdid: u16,
    /// Self-tests.
    pub self_test: SelfTestState,
    /// Sanitize Status log fields.
    pub sanitize_sstat: u16,
    /// CDW10 of the last sanitize.
    pub sanitize_cdw10: u32,
    /// Current and saved feature values (FID → value); absent = default.
    pub features_current: BTreeMap<u8, u32>,
    /// Saved feature values.
    pub features_saved: BTreeMap<u8, u32>,
    /// Power and boot state.
    pub power: Power,
    /// Writes since the last Flush: a power loss now loses data.
    pub dirty: bool,
    /// The host gave a shutdown notification (CC.SHN) and the drive completed it: power can go without an
    /// unsafe shutdown. Cleared when the controller runs again (reset, power on).
    #[serde(default)]
    pub shut_down: bool,
    /// Device instance (the N of nvmeN) it enumerated as.
    pub instance: u32,
    /// Fake sysfs tree the drive publishes itself into (see [`super::bus`]).
    pub bus: Option<PathBuf>,
    /// Timing settings.
    pub timing: Timing,
    /// When the drive was created.
    pub created_ms: u64,
}

impl SimState {
    /// Reads the drive's state from `dir`.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SimError::NoDrive {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(SimError::Io { path, source: e }),
        };
        let st: SimState = serde_json::from_str(&text).map_err(|e| SimError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if st.version != STATE_VERSION {
            return Err(SimError::Corrupt {
                path,
                reason: format!(
                    "state version {} (this build reads {STATE_VERSION})",
                    st.version
                ),
            });
        }
        Ok(st)
    }

    /// Atomically replaces the state file.
    pub fn save(&self, dir: &Path) -> Result<(), SimError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |source| SimError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).expect("state serializes");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_data().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// Total powered-on time in ms.
    pub fn power_on_ms(&self, now: u64) -> u128 {
        let current = match self.power {
            Power::On { since_ms } | Power::Booting { since_ms, .. } => {
                now.saturating_sub(since_ms) as u128
            }
            Power::Gone {
                since_ms,
                powered: true,
                ..
            } => now.saturating_sub(since_ms) as u128,
            Power::Gone { .. } => 0,
        };
        self.counters.power_on_ms + current
    }

    /// Power-on hours at `now`.
    pub fn power_on_hours(&self, now: u64) -> u64 {
        (self.power_on_ms(now) / 3_600_000) as u64
    }

    /// Composite temperature in Kelvin: 35 °C idle plus heat from recent I/O, at most 65 °C (below the 70 °C
    /// warning threshold) however hard the drive is driven.
    pub fn temperature_k(&self, now: u64) -> u16 {
        let decayed = self.decayed_heat(now);
        (308.0 + decayed.min(30.0)).round() as u16
    }

    fn decayed_heat(&self, now: u64) -> f64 {
        let dt = now.saturating_sub(self.counters.heat_updated_ms) as f64 / 1000.0;
        self.counters.heat * 0.5f64.powf(dt / 20.0)
    }

    /// Adds heat for `bytes` of I/O (1 K per 4 GiB moved, halving every 20 s).
    pub fn add_heat(&mut self, bytes: u64, now: u64) {
        self.counters.heat =
            self.decayed_heat(now) + bytes as f64 / (4.0 * 1024.0 * 1024.0 * 1024.0);
        self.counters.heat_updated_ms = now;
    }

    /// Appends an error log entry (newest first, 64 kept).
    pub fn record_error(&mut self, sqid: u16, status: u16, nsid: u32, lba: u64, location: u16) {
        self.error_count += 1;
        let cmdid = self.next_cmdid;
        self.errors.insert(
            0,
            ErrorRecord {
                error_count: self.error_count,
                sqid,
                cmdid,
                status,
                lba,
                nsid,
                parm_error_location: location,
            },
        );
        self.errors.truncate(64);
    }

    /// Takes a command identifier for the next command.
    pub fn take_cmdid(&mut self) -> u16 {
        self.next_cmdid = self.next_cmdid.wrapping_add(1);
        self.next_cmdid
    }
}
