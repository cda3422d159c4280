//! Feature identifiers for Get / Set Features and their names.

/// Feature identifiers (FID).
pub mod fid {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Timestamp.
    pub const TIMESTAMP: u8 = 0x0E;
}

/// Get Features select values (CDW10 bits 10:8).
pub mod select {
    /// The current value.
    pub const CURRENT: u8 = 0;
    /// The default value.
    pub const DEFAULT: u8 = 1;
    /// The saved value.
    pub const SAVED: u8 = 2;
    /// The feature's capabilities (saveable, namespace specific, changeable).
    pub const SUPPORTED_CAPABILITIES: u8 = 3;
}

/// Supported-capabilities bits returned for SEL = 3.
pub mod capability {
    /// The feature's value can be saved.
    pub const SAVEABLE: u32 = 1 << 0;
    /// The feature is namespace specific.
    pub const NAMESPACE_SPECIFIC: u32 = 1 << 1;
    /// The feature's value can be changed.
    pub const CHANGEABLE: u32 = 1 << 2;
}

/// The spec's name for a feature identifier.
pub fn feature_name(id: u8) -> &'static str {
    match id {
        fid::ARBITRATION => "Arbitration",
        fid::POWER_MANAGEMENT => "Power Management",
        0x03 => "LBA Range Type",
        fid::TEMPERATURE_THRESHOLD => "Temperature Threshold",
        fid::ERROR_RECOVERY => "Error Recovery",
        fid::VOLATILE_WRITE_CACHE => "Volatile Write Cache",
        fid::NUMBER_OF_QUEUES => "Number of Queues",
        fid::INTERRUPT_COALESCING => "Interrupt Coalescing",
        0x09 => "Interrupt Vector Configuration",
        fid::WRITE_ATOMICITY => "Write Atomicity Normal",
        fid::ASYNC_EVENT_CONFIG => "Asynchronous Event Configuration",
        0x0C => "Autonomous Power State Transition",
        0x0D => "Host Memory Buffer",
        fid::TIMESTAMP => "Timestamp",
        0x0F => "Keep Alive Timer",
        0x10 => "Host Controlled Thermal Management",
        0x11 => "Non-Operational Power State Config",
        0x80 => "Software Progress Marker",
        0xC0..=0xFF => "Vendor Specific",
        _ => "Unknown Feature",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_features() {
        assert_eq!(
            feature_name(fid::TEMPERATURE_THRESHOLD),
            "Temperature Threshold"
        );
        assert_eq!(
            feature_name(fid::VOLATILE_WRITE_CACHE),
            "Volatile Write Cache"
        );
        assert_eq!(feature_name(0xC5), "Vendor Specific");
    }
}
