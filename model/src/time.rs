//! Wall-clock time as Unix milliseconds: what every stored timestamp is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    nvme_spec::units::unix_ms(SystemTime::now())
}

/// `ms` as an RFC 3339 timestamp with seconds (`-` for 0, "never set").
pub fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
