//! Wall-clock time as Unix milliseconds: what every stored timestamp is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    nvme_spec::units::unix_ms(SystemTime::now())
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_MS: u64 = 253_402_300_800_000 - 1;

/// `ms` as an RFC 3339 timestamp with seconds (`-` for 0, "never set"). Never panics: a time past year 9999 is
/// written as such.
pub fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    if ms > LAST_MS {
        return "after 9999-12-31T23:59:59Z".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timestamp_formats_without_panicking() {
        assert_eq!(rfc3339(0), "-");
        assert_eq!(rfc3339(3_600_000), "1970-01-01T01:00:00Z");
        assert_eq!(rfc3339(LAST_MS), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "after 9999-12-31T23:59:59Z");
    }
}
