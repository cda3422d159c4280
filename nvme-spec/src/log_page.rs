//! The log page structures nvfarm reads, one responsibility at ~900 lines because each spec field is declared,
//! documented, parsed and encoded at its offset.
//!
//! Get Log Page data structures: Error Information (01h), SMART / Health (02h), Firmware Slot (03h), Commands
//! Supported and Effects (05h), Device Self-test (06h) and Sanitize Status (81h).
//!
//! Parsers read the spec's byte offsets; encoders write the same layout for the simulated controller. JSON names
//! follow nvme-cli (`smart-log`, `error-log`) where nvme-cli prints the structure.

use serde::{Deserialize, Serialize};

use crate::bytes::{
    ascii_at, bytes_at, put_ascii, put_u128, put_u16, put_u32, put_u64, put_u8, u128_at,
    u128_string, u16_at, u32_at, u64_at, u8_at,
};

/// Log page identifiers.
pub mod lid {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Commands Supported and Effects.
    pub const COMMANDS_EFFECTS: u8 = 0x05;
    /// Device Self-test.
    pub const SELF_TEST: u8 = 0x06;
    /// Sanitize Status.
    pub const SANITIZE_STATUS: u8 = 0x81;
}

/// Size of the SMART / Health log.
pub const SMART_LEN: usize = 512;
/// Size of the Firmware Slot log.
pub const FW_SLOT_LEN: usize = 512;
/// Size of one Error Information entry.
pub const ERROR_ENTRY_LEN: usize = 64;
/// Size of the Commands Supported and Effects log.
pub const EFFECTS_LEN: usize = 4096;
/// Size of the Device Self-test log.
pub const SELF_TEST_LEN: usize = 564;
/// Size of the Sanitize Status log.
pub const SANITIZE_STATUS_LEN: usize = 512;

/// Critical Warning bits of the SMART / Health log.
pub mod critical_warning {
    /// Available spare is below its threshold.
    pub const SPARE_BELOW_THRESHOLD: u8 = 1 << 0;
    /// A temperature is past a threshold.
    pub const TEMPERATURE: u8 = 1 << 1;
    /// NVM subsystem reliability is degraded.
    pub const RELIABILITY_DEGRADED: u8 = 1 << 2;
    /// Media is read-only.
    pub const READ_ONLY: u8 = 1 << 3;
    /// The volatile memory backup device failed.
    pub const VOLATILE_BACKUP_FAILED: u8 = 1 << 4;
    /// The persistent memory region became read-only.
    pub const PMR_READ_ONLY: u8 = 1 << 5;

    /// Names of the bits set in `v`, e.g. "reliability degraded, read-only".
    pub fn describe(v: u8) -> String {
        let names = [
            (SPARE_BELOW_THRESHOLD, "available spare below threshold"),
            (TEMPERATURE, "temperature out of range"),
            (RELIABILITY_DEGRADED, "reliability degraded"),
            (READ_ONLY, "media read-only"),
            (VOLATILE_BACKUP_FAILED, "volatile memory backup failed"),
            (PMR_READ_ONLY, "persistent memory region read-only"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(b, _)| v & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            "none".into()
        } else {
            set.join(", ")
        }
    }
}

/// SMART / Health Information (log 02h). Temperatures are in Kelvin; the `data_units_*` counters are in
/// thousands of 512-byte units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartLog {
    /// Critical Warning bits (see [`critical_warning`]).
    pub critical_warning: u8,
    /// Composite Temperature, kelvin.
    pub temperature: u16,
    /// Available Spare, percent.
    pub avail_spare: u8,
    /// Available Spare Threshold, percent.
    pub spare_thresh: u8,
    /// Percentage Used (of rated endurance; may exceed 100).
    pub percent_used: u8,
    /// Endurance Group Critical Warning Summary.
    pub endurance_grp_critical_warning_summary: u8,
    /// Data Units Read, in thousands of 512-byte units.
    #[serde(with = "u128_string")]
    pub data_units_read: u128,
    /// Data Units Written, in thousands of 512-byte units.
    #[serde(with = "u128_string")]
    pub data_units_written: u128,
    /// Host Read Commands completed.
    #[serde(with = "u128_string")]
    pub host_read_commands: u128,
    /// Host Write Commands completed.
    #[serde(with = "u128_string")]
    pub host_write_commands: u128,
    /// Controller Busy Time, minutes.
    #[serde(with = "u128_string")]
    pub controller_busy_time: u128,
    /// Power Cycles.
    #[serde(with = "u128_string")]
    pub power_cycles: u128,
    /// Power On Hours.
    #[serde(with = "u128_string")]
    pub power_on_hours: u128,
    /// Unsafe Shutdowns (power lost without a shutdown notification).
    #[serde(with = "u128_string")]
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors.
    #[serde(with = "u128_string")]
    pub media_errors: u128,
    /// Number of Error Information Log Entries over the controller's life.
    #[serde(with = "u128_string")]
    pub num_err_log_entries: u128,
    /// Warning Composite Temperature Time, minutes.
    pub warning_temp_time: u32,
    /// Critical Composite Temperature Time, minutes.
    pub critical_comp_time: u32,
    // nvme-cli prints a temperature sensor only when it reports a value.
    /// Temperature Sensor 1, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_1: Option<u16>,
    /// Temperature Sensor 2, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_2: Option<u16>,
    /// Temperature Sensor 3, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_3: Option<u16>,
    /// Temperature Sensor 4, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_4: Option<u16>,
    /// Temperature Sensor 5, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_5: Option<u16>,
    /// Temperature Sensor 6, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_6: Option<u16>,
    /// Temperature Sensor 7, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_7: Option<u16>,
    /// Temperature Sensor 8, kelvin (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temperature_sensor_8: Option<u16>,
    /// Thermal Management Temperature 1 Transition Count.
    pub thm_temp1_trans_count: u32,
    /// Thermal Management Temperature 2 Transition Count.
    pub thm_temp2_trans_count: u32,
    /// Total Time For Thermal Management Temperature 1, seconds.
    pub thm_temp1_total_time: u32,
    /// Total Time For Thermal Management Temperature 2, seconds.
    pub thm_temp2_total_time: u32,
}

impl SmartLog {
    fn sensors(&self) -> [Option<u16>; 8] {
        [
            self.temperature_sensor_1,
            self.temperature_sensor_2,
            self.temperature_sensor_3,
            self.temperature_sensor_4,
            self.temperature_sensor_5,
            self.temperature_sensor_6,
            self.temperature_sensor_7,
            self.temperature_sensor_8,
        ]
    }

    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        let sensor = |i: usize| Some(u16_at(b, 200 + 2 * i)).filter(|&t| t != 0);
        SmartLog {
            critical_warning: u8_at(b, 0),
            temperature: u16_at(b, 1),
            avail_spare: u8_at(b, 3),
            spare_thresh: u8_at(b, 4),
            percent_used: u8_at(b, 5),
            endurance_grp_critical_warning_summary: u8_at(b, 6),
            data_units_read: u128_at(b, 32),
            data_units_written: u128_at(b, 48),
            host_read_commands: u128_at(b, 64),
            host_write_commands: u128_at(b, 80),
            controller_busy_time: u128_at(b, 96),
            power_cycles: u128_at(b, 112),
            power_on_hours: u128_at(b, 128),
            unsafe_shutdowns: u128_at(b, 144),
            media_errors: u128_at(b, 160),
            num_err_log_entries: u128_at(b, 176),
            warning_temp_time: u32_at(b, 192),
            critical_comp_time: u32_at(b, 196),
            temperature_sensor_1: sensor(0),
            temperature_sensor_2: sensor(1),
            temperature_sensor_3: sensor(2),
            temperature_sensor_4: sensor(3),
            temperature_sensor_5: sensor(4),
            temperature_sensor_6: sensor(5),
            temperature_sensor_7: sensor(6),
            temperature_sensor_8: sensor(7),
            thm_temp1_trans_count: u32_at(b, 216),
            thm_temp2_trans_count: u32_at(b, 220),
            thm_temp1_total_time: u32_at(b, 224),
            thm_temp2_total_time: u32_at(b, 228),
        }
    }

    /// Encodes the log in the spec's layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; SMART_LEN];
        put_u8(&mut b, 0, self.critical_warning);
        put_u16(&mut b, 1, self.temperature);
        put_u8(&mut b, 3, self.avail_spare);
        put_u8(&mut b, 4, self.spare_thresh);
        put_u8(&mut b, 5, self.percent_used);
        put_u8(&mut b, 6, self.endurance_grp_critical_warning_summary);
        put_u128(&mut b, 32, self.data_units_read);
        put_u128(&mut b, 48, self.data_units_written);
        put_u128(&mut b, 64, self.host_read_commands);
        put_u128(&mut b, 80, self.host_write_commands);
        put_u128(&mut b, 96, self.controller_busy_time);
        put_u128(&mut b, 112, self.power_cycles);
        put_u128(&mut b, 128, self.power_on_hours);
        put_u128(&mut b, 144, self.unsafe_shutdowns);
        put_u128(&mut b, 160, self.media_errors);
        put_u128(&mut b, 176, self.num_err_log_entries);
        put_u32(&mut b, 192, self.warning_temp_time);
        put_u32(&mut b, 196, self.critical_comp_time);
        for (i, t) in self.sensors().iter().enumerate() {
            put_u16(&mut b, 200 + 2 * i, t.unwrap_or(0));
        }
        put_u32(&mut b, 216, self.thm_temp1_trans_count);
        put_u32(&mut b, 220, self.thm_temp2_trans_count);
        put_u32(&mut b, 224, self.thm_temp1_total_time);
        put_u32(&mut b, 228, self.thm_temp2_total_time);
        b
    }

    /// Composite temperature in degrees Celsius.
    pub fn temperature_celsius(&self) -> i32 {
        self.temperature as i32 - 273
    }
}

/// Firmware Slot Information (log 03h).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: bits 2:0 the running slot, bits 6:4 the slot activated at the next reset (0 = none).
    pub afi: u8,
    /// Revision in slots 1..=7 (`frs[0]` is slot 1); `None` when the slot is empty (all zero bytes).
    pub frs: [Option<String>; 7],
}

impl FirmwareSlotLog {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        let mut frs: [Option<String>; 7] = Default::default();
        for (i, slot) in frs.iter_mut().enumerate() {
            let raw = bytes_at(b, 8 + 8 * i, 8);
            if raw.iter().any(|&x| x != 0) {
                *slot = Some(ascii_at(b, 8 + 8 * i, 8).trim_end().to_string());
            }
        }
        FirmwareSlotLog {
            afi: u8_at(b, 0),
            frs,
        }
    }

    /// Encodes the log in the spec's layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; FW_SLOT_LEN];
        b[0] = self.afi;
        for (i, rev) in self.frs.iter().enumerate() {
            if let Some(rev) = rev {
                put_ascii(&mut b, 8 + 8 * i, 8, rev);
            }
        }
        b
    }

    /// The slot the running firmware was loaded from.
    pub fn active_slot(&self) -> u8 {
        self.afi & 0x7
    }
    /// The slot that will be activated at the next reset, if one is pending.
    pub fn next_active_slot(&self) -> Option<u8> {
        Some((self.afi >> 4) & 0x7).filter(|&s| s != 0)
    }
    /// Revision stored in `slot` (1..=7).
    pub fn revision(&self, slot: u8) -> Option<&str> {
        (1..=7)
            .contains(&slot)
            .then(|| self.frs[slot as usize - 1].as_deref())
            .flatten()
    }
}

/// The firmware slot log as `nvme-flash log fw --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FirmwareSlotReport {
    /// Active Firmware Info (AFI): bits 2:0 the running slot, bits 6:4 the slot activated at the next reset.
    pub afi: u8,
    /// The slot the running firmware came from.
    pub active_slot: u8,
    /// The slot activated at the next reset, if one is pending.
    pub next_active_slot: Option<u8>,
    /// Every slot the log describes.
    pub slots: Vec<SlotEntry>,
}

/// One firmware slot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotEntry {
    /// Slot number (1-7).
    pub slot: u8,
    /// The revision stored in the slot (`None` when empty).
    pub revision: Option<String>,
    /// Whether the slot is read-only.
    pub read_only: bool,
}

impl FirmwareSlotLog {
    /// A report over the controller's `slots` slots, marking slot 1 read-only if `slot1_ro`.
    pub fn report(&self, slots: u8, slot1_ro: bool) -> FirmwareSlotReport {
        FirmwareSlotReport {
            afi: self.afi,
            active_slot: self.active_slot(),
            next_active_slot: self.next_active_slot(),
            slots: (1..=slots.clamp(1, 7))
                .map(|s| SlotEntry {
                    slot: s,
                    revision: self.revision(s).map(str::to_string),
                    read_only: s == 1 && slot1_ro,
                })
                .collect(),
        }
    }
}

/// One Error Information log entry (64 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLogEntry {
    /// Error Count (unique per error, increasing).
    pub error_count: u64,
    /// Submission Queue ID of the failed command (0 = admin).
    pub sqid: u16,
    /// Command ID of the failed command.
    pub cmdid: u16,
    /// The status field without the phase tag (same encoding as [`crate::Status`]).
    pub status_field: u16,
    /// Phase tag of the completion.
    pub phase_tag: u8,
    /// Parameter Error Location: byte (7:0) and bit (10:8) of the command field in error.
    pub parm_error_location: u16,
    /// The first LBA that had the error.
    pub lba: u64,
    /// The namespace the error concerns.
    pub nsid: u32,
    /// Vendor Specific Information Available.
    pub vs: u8,
    /// Transport Type.
    pub trtype: u8,
    /// Command Specific Information.
    pub cs: u64,
    /// Transport Type Specific Information.
    pub trtype_spec_info: u16,
}

impl ErrorLogEntry {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        let sf = u16_at(b, 12);
        ErrorLogEntry {
            error_count: u64_at(b, 0),
            sqid: u16_at(b, 8),
            cmdid: u16_at(b, 10),
            status_field: sf >> 1,
            phase_tag: (sf & 1) as u8,
            parm_error_location: u16_at(b, 14),
            lba: u64_at(b, 16),
            nsid: u32_at(b, 24),
            vs: u8_at(b, 28),
            trtype: u8_at(b, 29),
            cs: u64_at(b, 32),
            trtype_spec_info: u16_at(b, 40),
        }
    }
    /// Encodes the entry into its 64 bytes.
    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.error_count);
        put_u16(b, 8, self.sqid);
        put_u16(b, 10, self.cmdid);
        put_u16(
            b,
            12,
            (self.status_field << 1) | (self.phase_tag as u16 & 1),
        );
        put_u16(b, 14, self.parm_error_location);
        put_u64(b, 16, self.lba);
        put_u32(b, 24, self.nsid);
        put_u8(b, 28, self.vs);
        put_u8(b, 29, self.trtype);
        put_u64(b, 32, self.cs);
        put_u16(b, 40, self.trtype_spec_info);
    }
    /// The status field as a [`Status`](crate::Status).
    pub fn status(&self) -> crate::Status {
        crate::Status::from_raw(self.status_field)
    }
}

/// The error log as nvme-cli prints it: `{"errors": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLog {
    /// Entries in use, newest first.
    pub errors: Vec<ErrorLogEntry>,
}

impl ErrorLog {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        ErrorLog {
            errors: b
                .chunks(ERROR_ENTRY_LEN)
                .map(ErrorLogEntry::parse)
                .collect(),
        }
    }
    /// Entries that hold an error (error_count != 0).
    pub fn valid(&self) -> impl Iterator<Item = &ErrorLogEntry> {
        self.errors.iter().filter(|e| e.error_count != 0)
    }
}

/// Commands Supported and Effects flags.
pub mod effects {
    /// Command Supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace Capability Change.
    pub const NCC: u32 = 1 << 2;
    /// Namespace Inventory Change.
    pub const NIC: u32 = 1 << 3;
    /// Controller Capability Change.
    pub const CCC: u32 = 1 << 4;
}

/// Commands Supported and Effects (log 05h): one dword per admin and per I/O opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectsLog {
    /// Effects of each admin opcode (bit 0: supported).
    pub admin: [u32; 256],
    /// Effects of each I/O opcode (bit 0: supported).
    pub io: [u32; 256],
}

impl Default for EffectsLog {
    fn default() -> Self {
        EffectsLog {
            admin: [0; 256],
            io: [0; 256],
        }
    }
}

/// One supported command and its effects, as nvme-cli lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EffectsEntry {
    /// `admin` or `io`.
    pub queue: String,
    /// The opcode.
    pub opcode: u8,
    /// The command's name.
    pub name: String,
    /// The raw effects dword.
    pub effects: u32,
    /// Logical Block Content Change.
    pub lbcc: bool,
    /// Namespace Capability Change.
    pub ncc: bool,
    /// Namespace Inventory Change.
    pub nic: bool,
    /// Controller Capability Change.
    pub ccc: bool,
}

impl EffectsLog {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        let mut log = EffectsLog::default();
        for i in 0..256 {
            log.admin[i] = u32_at(b, 4 * i);
            log.io[i] = u32_at(b, 1024 + 4 * i);
        }
        log
    }
    /// Encodes the log in the spec's layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; EFFECTS_LEN];
        for i in 0..256 {
            put_u32(&mut b, 4 * i, self.admin[i]);
            put_u32(&mut b, 1024 + 4 * i, self.io[i]);
        }
        b
    }
    /// Supported commands with their effects, admin first.
    pub fn entries(&self) -> Vec<EffectsEntry> {
        use crate::command::{opcode_name, Queue};
        let mk = |queue: Queue, op: usize, e: u32| EffectsEntry {
            queue: if queue == Queue::Admin {
                "admin".into()
            } else {
                "io".into()
            },
            opcode: op as u8,
            name: opcode_name(queue, op as u8).to_string(),
            effects: e,
            lbcc: e & effects::LBCC != 0,
            ncc: e & effects::NCC != 0,
            nic: e & effects::NIC != 0,
            ccc: e & effects::CCC != 0,
        };
        let admin = self
            .admin
            .iter()
            .enumerate()
            .filter(|(_, e)| **e & effects::CSUPP != 0);
        let io = self
            .io
            .iter()
            .enumerate()
            .filter(|(_, e)| **e & effects::CSUPP != 0);
        admin
            .map(|(op, e)| mk(Queue::Admin, op, *e))
            .chain(io.map(|(op, e)| mk(Queue::Io, op, *e)))
            .collect()
    }
}

/// Self-test result values (Device Self-test Status bits 3:0).
pub mod self_test_result {
    /// Completed without error.
    pub const COMPLETED: u8 = 0x0;
    /// Aborted by a Device Self-test command.
    pub const ABORTED_BY_COMMAND: u8 = 0x1;
    /// Aborted by a controller level reset.
    pub const ABORTED_BY_RESET: u8 = 0x2;
    /// Aborted by a namespace removal.
    pub const ABORTED_BY_NAMESPACE_REMOVAL: u8 = 0x3;
    /// Aborted by a Format NVM command.
    pub const ABORTED_BY_FORMAT: u8 = 0x4;
    /// A fatal or unknown test error.
    pub const FATAL_OR_UNKNOWN: u8 = 0x5;
    /// Completed with a failed segment that is not known.
    pub const UNKNOWN_SEGMENT_FAILED: u8 = 0x6;
    /// Completed with one or more failed segments (the first is in `segment`).
    pub const SEGMENTS_FAILED: u8 = 0x7;
    /// Aborted for an unknown reason.
    pub const ABORTED_UNKNOWN: u8 = 0x8;
    /// Aborted by a sanitize operation.
    pub const ABORTED_BY_SANITIZE: u8 = 0x9;
    /// The entry is not in use.
    pub const UNUSED: u8 = 0xF;

    /// The spec's words for self-test result code `v`.
    pub fn name(v: u8) -> &'static str {
        match v {
            COMPLETED => "completed without error",
            ABORTED_BY_COMMAND => "aborted by a Device Self-test command",
            ABORTED_BY_RESET => "aborted by a controller level reset",
            ABORTED_BY_NAMESPACE_REMOVAL => "aborted by namespace removal",
            ABORTED_BY_FORMAT => "aborted by a Format NVM command",
            FATAL_OR_UNKNOWN => "fatal or unknown test error",
            UNKNOWN_SEGMENT_FAILED => "completed with a failed segment that is not known",
            SEGMENTS_FAILED => "completed with one or more failed segments",
            ABORTED_UNKNOWN => "aborted for an unknown reason",
            ABORTED_BY_SANITIZE => "aborted by a sanitize operation",
            UNUSED => "entry not used",
            _ => "reserved",
        }
    }
}

/// One Self-test Result Data Structure (28 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestResult {
    /// Result (bits 3:0 of the status byte); see [`self_test_result`].
    pub result: u8,
    /// The result in words.
    pub result_text: String,
    /// The self-test code that ran (1 short, 2 extended).
    pub code: u8,
    /// Segment Number of the first failed segment.
    pub segment: u8,
    /// Valid Diagnostic Information bits (NSID, FLBA, SCT, SC valid).
    pub valid_diagnostic_info: u8,
    /// Power On Hours when the self-test ended.
    pub power_on_hours: u64,
    /// The namespace a failure concerns (valid when `valid_diagnostic_info` says so).
    pub nsid: u32,
    /// Failing LBA.
    pub failing_lba: u64,
    /// Status Code Type of the failure.
    pub status_code_type: u8,
    /// Status Code of the failure.
    pub status_code: u8,
}

impl SelfTestResult {
    fn parse(b: &[u8]) -> Self {
        let st = u8_at(b, 0);
        SelfTestResult {
            result: st & 0xf,
            result_text: self_test_result::name(st & 0xf).to_string(),
            code: st >> 4,
            segment: u8_at(b, 1),
            valid_diagnostic_info: u8_at(b, 2),
            power_on_hours: u64_at(b, 4),
            nsid: u32_at(b, 12),
            failing_lba: u64_at(b, 16),
            status_code_type: u8_at(b, 24),
            status_code: u8_at(b, 25),
        }
    }
    fn encode(&self, b: &mut [u8]) {
        put_u8(b, 0, (self.result & 0xf) | (self.code << 4));
        put_u8(b, 1, self.segment);
        put_u8(b, 2, self.valid_diagnostic_info);
        put_u64(b, 4, self.power_on_hours);
        put_u32(b, 12, self.nsid);
        put_u64(b, 16, self.failing_lba);
        put_u8(b, 24, self.status_code_type);
        put_u8(b, 25, self.status_code);
    }
}

/// Device Self-test log (06h).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestLog {
    /// Self-test in progress: 0 none, 1 short, 2 extended.
    pub current_operation: u8,
    /// Percent complete of the running self-test.
    pub completion: u8,
    /// Newest first; only entries in use (result != 0xF).
    pub results: Vec<SelfTestResult>,
}

impl SelfTestLog {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        SelfTestLog {
            current_operation: u8_at(b, 0) & 0xf,
            completion: u8_at(b, 1) & 0x7f,
            results: (0..20)
                .map(|i| SelfTestResult::parse(&bytes_at(b, 4 + 28 * i, 28)))
                .filter(|r| r.result != self_test_result::UNUSED)
                .collect(),
        }
    }
    /// Encodes the log in the spec's layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; SELF_TEST_LEN];
        b[0] = self.current_operation;
        b[1] = self.completion;
        for i in 0..20 {
            let slot = &mut b[4 + 28 * i..4 + 28 * (i + 1)];
            match self.results.get(i) {
                Some(r) => r.encode(slot),
                None => slot[0] = self_test_result::UNUSED,
            }
        }
        b
    }
}

/// Sanitize Status log (81h), the fields nvfarm uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanitizeStatus {
    /// Progress in 1/65536 units (0xFFFF when not in progress).
    pub sprog: u16,
    /// Bits 2:0: 0 never sanitized, 1 completed, 2 in progress, 3 failed, 4 completed with no-deallocate.
    pub sstat: u16,
    /// Command Dword 10 of the sanitize that last ran.
    pub scdw10: u32,
}

impl SanitizeStatus {
    /// Parses the log as a controller returned it (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        SanitizeStatus {
            sprog: u16_at(b, 0),
            sstat: u16_at(b, 2),
            scdw10: u32_at(b, 4),
        }
    }
    /// Encodes the log in the spec's layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; SANITIZE_STATUS_LEN];
        put_u16(&mut b, 0, self.sprog);
        put_u16(&mut b, 2, self.sstat);
        put_u32(&mut b, 4, self.scdw10);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smart_from_spec_offsets() {
        let mut b = vec![0u8; 512];
        b[0] = critical_warning::RELIABILITY_DEGRADED;
        b[1..3].copy_from_slice(&310u16.to_le_bytes());
        b[3] = 100;
        b[4] = 10;
        b[5] = 3;
        b[6] = 1;
        let put = |b: &mut Vec<u8>, off: usize, v: u128| {
            b[off..off + 16].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut b, 32, 11);
        put(&mut b, 48, 12);
        put(&mut b, 64, 13);
        put(&mut b, 80, 14);
        put(&mut b, 96, 15);
        put(&mut b, 112, 16);
        put(&mut b, 128, 17);
        put(&mut b, 144, 18);
        put(&mut b, 160, 19);
        put(&mut b, 176, u64::MAX as u128 + 1);
        b[192..196].copy_from_slice(&21u32.to_le_bytes());
        b[196..200].copy_from_slice(&22u32.to_le_bytes());
        b[202..204].copy_from_slice(&305u16.to_le_bytes());
        b[216..220].copy_from_slice(&23u32.to_le_bytes());
        b[228..232].copy_from_slice(&24u32.to_le_bytes());
        let s = SmartLog::parse(&b);
        assert_eq!(s.critical_warning, critical_warning::RELIABILITY_DEGRADED);
        assert_eq!(
            critical_warning::describe(s.critical_warning),
            "reliability degraded"
        );
        assert_eq!(critical_warning::describe(0), "none");
        assert_eq!(
            critical_warning::describe(0x0a),
            "temperature out of range, media read-only"
        );
        assert_eq!(s.temperature, 310);
        assert_eq!(s.temperature_celsius(), 37);
        assert_eq!(
            (s.avail_spare, s.spare_thresh, s.percent_used),
            (100, 10, 3)
        );
        assert_eq!(s.endurance_grp_critical_warning_summary, 1);
        assert_eq!(
            [
                s.data_units_read,
                s.data_units_written,
                s.host_read_commands,
                s.host_write_commands,
                s.controller_busy_time,
                s.power_cycles,
                s.power_on_hours,
                s.unsafe_shutdowns,
                s.media_errors
            ],
            [11, 12, 13, 14, 15, 16, 17, 18, 19]
        );
        assert_eq!(s.num_err_log_entries, u64::MAX as u128 + 1);
        assert_eq!((s.warning_temp_time, s.critical_comp_time), (21, 22));
        assert_eq!(s.temperature_sensor_1, None);
        assert_eq!(s.temperature_sensor_2, Some(305));
        assert_eq!((s.thm_temp1_trans_count, s.thm_temp2_total_time), (23, 24));
        assert_eq!(SmartLog::parse(&s.to_bytes()), s);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["num_err_log_entries"], "18446744073709551616");
        assert!(json.get("temperature_sensor_1").is_none());
        assert_eq!(json["temperature_sensor_2"], 305);
    }

    #[test]
    fn parses_firmware_slot_log() {
        let mut b = vec![0u8; 512];
        b[0] = 0x21; // running slot 1, slot 2 next
        b[8..16].copy_from_slice(b"1.0.0   ");
        b[16..24].copy_from_slice(b"2.0.0-rc");
        let log = FirmwareSlotLog::parse(&b);
        assert_eq!(log.active_slot(), 1);
        assert_eq!(log.next_active_slot(), Some(2));
        assert_eq!(log.revision(1), Some("1.0.0"));
        assert_eq!(log.revision(2), Some("2.0.0-rc"));
        assert_eq!(log.revision(3), None);
        assert_eq!(log.revision(0), None);
        assert_eq!(FirmwareSlotLog::parse(&log.to_bytes()), log);
        let r = log.report(3, true);
        assert_eq!(r.slots.len(), 3);
        assert!(r.slots[0].read_only && !r.slots[1].read_only);
        b[0] = 0x02;
        assert_eq!(FirmwareSlotLog::parse(&b).next_active_slot(), None);
    }

    #[test]
    fn parses_error_entries() {
        let mut b = vec![0u8; 128];
        b[0..8].copy_from_slice(&7u64.to_le_bytes());
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[10..12].copy_from_slice(&0x33u16.to_le_bytes());
        b[12..14].copy_from_slice(&(((0x4281u16) << 1) | 1).to_le_bytes());
        b[14..16].copy_from_slice(&0x28u16.to_le_bytes());
        b[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        b[24..28].copy_from_slice(&1u32.to_le_bytes());
        b[28] = 9;
        b[29] = 3;
        b[32..40].copy_from_slice(&0xfeedu64.to_le_bytes());
        b[40..42].copy_from_slice(&5u16.to_le_bytes());
        let log = ErrorLog::parse(&b);
        assert_eq!(log.errors.len(), 2);
        let e = &log.errors[0];
        assert_eq!((e.error_count, e.sqid, e.cmdid), (7, 1, 0x33));
        assert_eq!(e.status_field, 0x4281);
        assert_eq!(e.phase_tag, 1);
        assert_eq!(e.status().name(), "Unrecovered Read Error");
        assert!(e.status().dnr());
        assert_eq!(
            (e.parm_error_location, e.lba, e.nsid, e.vs, e.trtype),
            (0x28, 0x1000, 1, 9, 3)
        );
        assert_eq!((e.cs, e.trtype_spec_info), (0xfeed, 5));
        assert_eq!(log.valid().count(), 1);
        let mut again = vec![0u8; 64];
        e.encode(&mut again);
        assert_eq!(&again[..], &b[..64]);
    }

    #[test]
    fn parses_effects_log() {
        let mut b = vec![0u8; 4096];
        b[0x11 * 4..0x11 * 4 + 4].copy_from_slice(&(effects::CSUPP).to_le_bytes());
        b[0x10 * 4..0x10 * 4 + 4].copy_from_slice(&(effects::CSUPP | effects::CCC).to_le_bytes());
        let w = 1024 + 4;
        b[w..w + 4].copy_from_slice(&(effects::CSUPP | effects::LBCC).to_le_bytes());
        let log = EffectsLog::parse(&b);
        assert_eq!(log.admin[0x10], effects::CSUPP | effects::CCC);
        assert_eq!(log.io[1], effects::CSUPP | effects::LBCC);
        let entries = log.entries();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].name, "Firmware Commit");
        assert!(entries[0].ccc);
        assert_eq!(entries[2].queue, "io");
        assert!(entries[2].lbcc);
        assert_eq!(EffectsLog::parse(&log.to_bytes()), log);
    }

    #[test]
    fn parses_self_test_log() {
        let mut b = vec![0u8; 564];
        b[0] = 2;
        b[1] = 40;
        for i in 0..20 {
            b[4 + 28 * i] = 0xf;
        }
        let r = 4;
        b[r] = (1 << 4) | self_test_result::SEGMENTS_FAILED;
        b[r + 1] = 3;
        b[r + 2] = 0x3;
        b[r + 4..r + 12].copy_from_slice(&1234u64.to_le_bytes());
        b[r + 12..r + 16].copy_from_slice(&1u32.to_le_bytes());
        b[r + 16..r + 24].copy_from_slice(&0x99u64.to_le_bytes());
        b[r + 24] = 2;
        b[r + 25] = 0x81;
        let log = SelfTestLog::parse(&b);
        assert_eq!((log.current_operation, log.completion), (2, 40));
        assert_eq!(log.results.len(), 1);
        let t = &log.results[0];
        assert_eq!(
            (t.result, t.code, t.segment, t.valid_diagnostic_info),
            (7, 1, 3, 3)
        );
        assert_eq!(t.result_text, "completed with one or more failed segments");
        assert_eq!((t.power_on_hours, t.nsid, t.failing_lba), (1234, 1, 0x99));
        assert_eq!((t.status_code_type, t.status_code), (2, 0x81));
        assert_eq!(SelfTestLog::parse(&log.to_bytes()), log);
    }

    #[test]
    fn parses_sanitize_status() {
        let mut b = vec![0u8; 512];
        b[0..2].copy_from_slice(&0xffffu16.to_le_bytes());
        b[2..4].copy_from_slice(&1u16.to_le_bytes());
        b[4..8].copy_from_slice(&0x12u32.to_le_bytes());
        let s = SanitizeStatus::parse(&b);
        assert_eq!((s.sprog, s.sstat, s.scdw10), (0xffff, 1, 0x12));
        assert_eq!(SanitizeStatus::parse(&s.to_bytes()), s);
    }
}
