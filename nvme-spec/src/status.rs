//! NVMe completion status: decoding the status field into its parts and spec names.
//!
//! Linux hands the status back as the ioctl's positive return value: the completion queue entry's status field
//! without the phase tag. Bits 0-7 are the Status Code (SC), 8-10 the Status Code Type (SCT), 11-12 the Command
//! Retry Delay (CRD), 13 More (M) and 14 Do Not Retry (DNR). So QEMU's answer to Firmware Image Download, 0x4001,
//! is "Invalid Command Opcode, DNR".

use std::fmt;

/// Status Code Type values (NVMe Base Specification, "Status Code Type Values").
pub mod sct {
    /// Generic Command Status.
    pub const GENERIC: u8 = 0;
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and Data Integrity Errors.
    pub const MEDIA: u8 = 2;
    /// Path Related Status.
    pub const PATH: u8 = 3;
    /// Vendor Specific.
    pub const VENDOR: u8 = 7;
}

/// `(SCT << 8) | SC` codes that nvfarm raises or reacts to, named as in the spec.
pub mod code {
    /// Successful Completion.
    pub const SUCCESS: u16 = 0x000;
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: u16 = 0x001;
    /// Invalid Field in Command.
    pub const INVALID_FIELD: u16 = 0x002;
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: u16 = 0x004;
    /// Internal Error.
    pub const INTERNAL_ERROR: u16 = 0x006;
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: u16 = 0x007;
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: u16 = 0x00B;
    /// Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: u16 = 0x00F;
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: u16 = 0x011;
    /// Transient Transport Error.
    pub const TRANSIENT_TRANSPORT_ERROR: u16 = 0x022;
    /// Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT_EXCEEDED: u16 = 0x105;
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: u16 = 0x00C;
    /// Sanitize In Progress.
    pub const SANITIZE_IN_PROGRESS: u16 = 0x01D;
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: u16 = 0x080;
    /// Namespace Not Ready.
    pub const NAMESPACE_NOT_READY: u16 = 0x082;
    /// Format In Progress.
    pub const FORMAT_IN_PROGRESS: u16 = 0x084;
    /// Invalid Firmware Slot.
    pub const INVALID_FIRMWARE_SLOT: u16 = 0x106;
    /// Invalid Firmware Image.
    pub const INVALID_FIRMWARE_IMAGE: u16 = 0x107;
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: u16 = 0x109;
    /// Invalid Format.
    pub const INVALID_FORMAT: u16 = 0x10A;
    /// Firmware Activation Requires Conventional Reset.
    pub const FW_NEEDS_CONVENTIONAL_RESET: u16 = 0x10B;
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: u16 = 0x10D;
    /// Feature Not Changeable.
    pub const FEATURE_NOT_CHANGEABLE: u16 = 0x10E;
    /// Firmware Activation Requires NVM Subsystem Reset.
    pub const FW_NEEDS_SUBSYSTEM_RESET: u16 = 0x110;
    /// Firmware Activation Requires Controller Level Reset.
    pub const FW_NEEDS_CONTROLLER_RESET: u16 = 0x111;
    /// Firmware Activation Requires Maximum Time Violation.
    pub const FW_NEEDS_MAX_TIME_VIOLATION: u16 = 0x112;
    /// Firmware Activation Prohibited.
    pub const FW_ACTIVATION_PROHIBITED: u16 = 0x113;
    /// Overlapping Range.
    pub const OVERLAPPING_RANGE: u16 = 0x114;
    /// Device Self-test In Progress.
    pub const SELF_TEST_IN_PROGRESS: u16 = 0x11D;
    /// Write Fault.
    pub const WRITE_FAULT: u16 = 0x280;
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ_ERROR: u16 = 0x281;
    /// Compare Failure.
    pub const COMPARE_FAILURE: u16 = 0x285;
}

const DNR_BIT: u16 = 1 << 14;
const MORE_BIT: u16 = 1 << 13;

/// A decoded NVMe completion status (the 15-bit status field, phase tag removed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(u16);

impl Status {
    /// Successful Completion.
    pub const SUCCESS: Status = Status(0);

    /// From the value Linux returns from an NVMe passthrough ioctl (or the CQE status field shifted right by one).
    pub const fn from_raw(raw: u16) -> Self {
        Status(raw & 0x7fff)
    }
    /// A status from its `(SCT << 8) | SC` code, without DNR/More.
    pub const fn from_code(code: u16) -> Self {
        Status(code & 0x7ff)
    }
    /// The same status with Do Not Retry set.
    pub const fn with_dnr(self) -> Self {
        Status(self.0 | DNR_BIT)
    }
    /// The same status with the More bit set.
    pub const fn with_more(self) -> Self {
        Status(self.0 | MORE_BIT)
    }
    /// The 15-bit status field (SC, SCT, CRD, More, DNR) as the completion carries it.
    pub const fn raw(self) -> u16 {
        self.0
    }
    /// Status Code.
    pub const fn sc(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// Status Code Type.
    pub const fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    /// Command Retry Delay index (0 = retry immediately).
    pub const fn crd(self) -> u8 {
        ((self.0 >> 11) & 0x3) as u8
    }
    /// More: the Error log has more about it.
    pub const fn more(self) -> bool {
        self.0 & MORE_BIT != 0
    }
    /// Do Not Retry: the same command would fail again.
    pub const fn dnr(self) -> bool {
        self.0 & DNR_BIT != 0
    }
    /// `(SCT << 8) | SC`, the value the constants in [`code`] use.
    pub const fn code(self) -> u16 {
        self.0 & 0x7ff
    }
    /// Successful Completion (SCT 0, SC 0).
    pub const fn is_success(self) -> bool {
        self.code() == 0
    }
    /// Firmware Commit "success, but activation needs a reset" statuses (0x10B, 0x110, 0x111).
    pub const fn is_activation_pending(self) -> bool {
        matches!(
            self.code(),
            code::FW_NEEDS_CONVENTIONAL_RESET
                | code::FW_NEEDS_SUBSYSTEM_RESET
                | code::FW_NEEDS_CONTROLLER_RESET
        )
    }
    /// The spec's name for this status code.
    pub fn name(self) -> &'static str {
        status_name(self.sct(), self.sc())
    }

    /// The status code (`(SCT << 8) | SC`) the spec names `name`: case, spaces, `_` and `-` do not matter
    /// ("Invalid Field in Command", "invalid_field_in_command"); "success" is Successful Completion.
    pub fn code_by_name(name: &str) -> Option<u16> {
        let norm = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let want = norm(name);
        if want == "success" {
            return Some(0);
        }
        (0u16..=0x7ff).find(|&c| {
            let n = Status::from_code(c).name();
            !n.starts_with("Unknown") && norm(n) == want
        })
    }
}

fn status_name(sct_value: u8, sc: u8) -> &'static str {
    match (sct_value, sc) {
        (sct::GENERIC, sc) => match sc {
            0x00 => "Successful Completion",
            0x01 => "Invalid Command Opcode",
            0x02 => "Invalid Field in Command",
            0x03 => "Command ID Conflict",
            0x04 => "Data Transfer Error",
            0x05 => "Commands Aborted due to Power Loss Notification",
            0x06 => "Internal Error",
            0x07 => "Command Abort Requested",
            0x08 => "Command Aborted due to SQ Deletion",
            0x09 => "Command Aborted due to Failed Fused Command",
            0x0A => "Command Aborted due to Missing Fused Command",
            0x0B => "Invalid Namespace or Format",
            0x0C => "Command Sequence Error",
            0x0D => "Invalid SGL Segment Descriptor",
            0x0E => "Invalid Number of SGL Descriptors",
            0x0F => "Data SGL Length Invalid",
            0x10 => "Metadata SGL Length Invalid",
            0x11 => "SGL Descriptor Type Invalid",
            0x12 => "Invalid Use of Controller Memory Buffer",
            0x13 => "PRP Offset Invalid",
            0x14 => "Atomic Write Unit Exceeded",
            0x15 => "Operation Denied",
            0x16 => "SGL Offset Invalid",
            0x18 => "Host Identifier Inconsistent Format",
            0x19 => "Keep Alive Timer Expired",
            0x1A => "Keep Alive Timeout Invalid",
            0x1B => "Command Aborted due to Preempt and Abort",
            0x1C => "Sanitize Failed",
            0x1D => "Sanitize In Progress",
            0x1E => "SGL Data Block Granularity Invalid",
            0x1F => "Command Not Supported for Queue in CMB",
            0x20 => "Namespace is Write Protected",
            0x21 => "Command Interrupted",
            0x22 => "Transient Transport Error",
            0x80 => "LBA Out of Range",
            0x81 => "Capacity Exceeded",
            0x82 => "Namespace Not Ready",
            0x83 => "Reservation Conflict",
            0x84 => "Format In Progress",
            _ => "Unknown Generic Status",
        },
        (sct::COMMAND_SPECIFIC, sc) => match sc {
            0x00 => "Completion Queue Invalid",
            0x01 => "Invalid Queue Identifier",
            0x02 => "Invalid Queue Size",
            0x03 => "Abort Command Limit Exceeded",
            0x05 => "Asynchronous Event Request Limit Exceeded",
            0x06 => "Invalid Firmware Slot",
            0x07 => "Invalid Firmware Image",
            0x08 => "Invalid Interrupt Vector",
            0x09 => "Invalid Log Page",
            0x0A => "Invalid Format",
            0x0B => "Firmware Activation Requires Conventional Reset",
            0x0C => "Invalid Queue Deletion",
            0x0D => "Feature Identifier Not Saveable",
            0x0E => "Feature Not Changeable",
            0x0F => "Feature Not Namespace Specific",
            0x10 => "Firmware Activation Requires NVM Subsystem Reset",
            0x11 => "Firmware Activation Requires Controller Level Reset",
            0x12 => "Firmware Activation Requires Maximum Time Violation",
            0x13 => "Firmware Activation Prohibited",
            0x14 => "Overlapping Range",
            0x15 => "Namespace Insufficient Capacity",
            0x16 => "Namespace Identifier Unavailable",
            0x18 => "Namespace Already Attached",
            0x19 => "Namespace Is Private",
            0x1A => "Namespace Not Attached",
            0x1B => "Thin Provisioning Not Supported",
            0x1C => "Controller List Invalid",
            0x1D => "Device Self-test In Progress",
            0x1E => "Boot Partition Write Prohibited",
            0x1F => "Invalid Controller Identifier",
            0x20 => "Invalid Secondary Controller State",
            0x21 => "Invalid Number of Controller Resources",
            0x22 => "Invalid Resource Identifier",
            0x23 => "Sanitize Prohibited While Persistent Memory Region is Enabled",
            0x24 => "ANA Group Identifier Invalid",
            0x25 => "ANA Attach Failed",
            0x80 => "Conflicting Attributes",
            0x81 => "Invalid Protection Information",
            0x82 => "Attempted Write to Read Only Range",
            _ => "Unknown Command Specific Status",
        },
        (sct::MEDIA, sc) => match sc {
            0x80 => "Write Fault",
            0x81 => "Unrecovered Read Error",
            0x82 => "End-to-end Guard Check Error",
            0x83 => "End-to-end Application Tag Check Error",
            0x84 => "End-to-end Reference Tag Check Error",
            0x85 => "Compare Failure",
            0x86 => "Access Denied",
            0x87 => "Deallocated or Unwritten Logical Block",
            _ => "Unknown Media and Data Integrity Error",
        },
        (sct::PATH, sc) => match sc {
            0x00 => "Internal Path Error",
            0x01 => "Asymmetric Access Persistent Loss",
            0x02 => "Asymmetric Access Inaccessible",
            0x03 => "Asymmetric Access Transition",
            0x60 => "Controller Pathing Error",
            0x70 => "Host Pathing Error",
            0x71 => "Command Aborted By Host",
            _ => "Unknown Path Related Status",
        },
        (sct::VENDOR, _) => "Vendor Specific Status",
        _ => "Reserved Status Code Type",
    }
}

impl fmt::Display for Status {
    /// `Invalid Command Opcode (0x4001, DNR)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:04x}", self.name(), self.0)?;
        if self.dnr() {
            f.write_str(", DNR")?;
        }
        if self.more() {
            f.write_str(", More")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_qemu_firmware_download_answer() {
        let s = Status::from_raw(0x4001);
        assert_eq!(s.sct(), 0);
        assert_eq!(s.sc(), 1);
        assert!(s.dnr());
        assert!(!s.more());
        assert_eq!(s.code(), code::INVALID_OPCODE);
        assert_eq!(s.name(), "Invalid Command Opcode");
        assert_eq!(s.to_string(), "Invalid Command Opcode (0x4001, DNR)");
    }

    #[test]
    fn decodes_firmware_statuses_by_name() {
        let cases = [
            (0x106, "Invalid Firmware Slot"),
            (0x107, "Invalid Firmware Image"),
            (0x10B, "Firmware Activation Requires Conventional Reset"),
            (0x110, "Firmware Activation Requires NVM Subsystem Reset"),
            (0x111, "Firmware Activation Requires Controller Level Reset"),
            (0x112, "Firmware Activation Requires Maximum Time Violation"),
            (0x113, "Firmware Activation Prohibited"),
            (0x114, "Overlapping Range"),
            (0x281, "Unrecovered Read Error"),
            (0x371, "Command Aborted By Host"),
            (0x7AA, "Vendor Specific Status"),
        ];
        for (raw, name) in cases {
            let s = Status::from_raw(raw);
            assert_eq!(s.name(), name, "status 0x{raw:x}");
            assert!(!s.dnr());
        }
        assert!(Status::from_code(0x10B).is_activation_pending());
        assert!(Status::from_code(0x111).is_activation_pending());
        assert!(!Status::from_code(0x107).is_activation_pending());
    }

    #[test]
    fn splits_crd_more_and_dnr() {
        let s = Status::from_raw((1 << 14) | (1 << 13) | (2 << 11) | (1 << 8) | 0x07);
        assert!(s.dnr() && s.more());
        assert_eq!(s.crd(), 2);
        assert_eq!(s.code(), code::INVALID_FIRMWARE_IMAGE);
        assert_eq!(s.to_string(), "Invalid Firmware Image (0x7107, DNR, More)");
        assert!(Status::SUCCESS.is_success());
        assert!(
            Status::from_raw(0x4000).is_success(),
            "DNR alone does not make a failure"
        );
    }
}
