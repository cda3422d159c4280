//! Parsing how a user names a drive.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A drive named by something that survives resets and re-enumeration (serial, PCI address, simulator
/// directory) or by its current device node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAddr {
    /// `/dev/nvme0`, `/dev/nvme0n1`, `/dev/ng0n1`, or `nvme0` (looked up under the device root).
    Path(PathBuf),
    /// `serial=S6ABC123`: the controller whose serial number is this.
    Serial(String),
    /// `pci=0000:3b:00.0`: the controller at this PCI address.
    Pci(String),
    /// `sim:/var/lib/nvfarm/sim/rig-07a`: a simulated drive's state directory.
    Sim(PathBuf),
}

/// The address forms, for error messages.
pub const FORMS: &str =
    "/dev/nvmeN (or nvmeN, /dev/nvmeNnM, /dev/ngNnM), serial=SERIAL, pci=DDDD:BB:DD.F or sim:DIR";

impl FromStr for DeviceAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("invalid device '{s}': {why}; expected {FORMS}");
        if let Some(dir) = s.strip_prefix("sim:") {
            if dir.is_empty() {
                return Err(bad("sim: needs the drive's state directory"));
            }
            return Ok(DeviceAddr::Sim(PathBuf::from(dir)));
        }
        if let Some(serial) = s.strip_prefix("serial=") {
            if serial.is_empty() || serial.len() > 20 {
                return Err(bad("a serial number is 1 to 20 characters"));
            }
            return Ok(DeviceAddr::Serial(serial.to_string()));
        }
        if let Some(pci) = s.strip_prefix("pci=") {
            return normalize_pci(pci)
                .map(DeviceAddr::Pci)
                .ok_or_else(|| bad("PCI address must look like 0000:3b:00.0"));
        }
        if s.starts_with('/') {
            return Ok(DeviceAddr::Path(PathBuf::from(s)));
        }
        if s.starts_with("nvme") || s.starts_with("ng") {
            return Ok(DeviceAddr::Path(PathBuf::from("/dev").join(s)));
        }
        Err(bad("not a recognised form"))
    }
}

/// `3b:00.0` or `0000:3B:00.0` → `0000:3b:00.0`.
pub fn normalize_pci(s: &str) -> Option<String> {
    let s = s.to_ascii_lowercase();
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0000", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, n: usize| {
        x.len() <= n && !x.is_empty() && x.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !(hex(domain, 4)
        && hex(bus, 2)
        && hex(dev, 2)
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c)))
    {
        return None;
    }
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{}",
        u32::from_str_radix(domain, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(dev, 16).ok()?,
        func
    ))
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceAddr::Path(p) => write!(f, "{}", p.display()),
            DeviceAddr::Serial(s) => write!(f, "serial={s}"),
            DeviceAddr::Pci(p) => write!(f, "pci={p}"),
            DeviceAddr::Sim(d) => write!(f, "sim:{}", d.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "/dev/nvme0".parse(),
            Ok(DeviceAddr::Path("/dev/nvme0".into()))
        );
        assert_eq!("nvme3".parse(), Ok(DeviceAddr::Path("/dev/nvme3".into())));
        assert_eq!(
            "serial=S6ABC123".parse(),
            Ok(DeviceAddr::Serial("S6ABC123".into()))
        );
        assert_eq!(
            "pci=3B:00.0".parse(),
            Ok(DeviceAddr::Pci("0000:3b:00.0".into()))
        );
        assert_eq!("sim:/tmp/x".parse(), Ok(DeviceAddr::Sim("/tmp/x".into())));
        assert_eq!(DeviceAddr::Serial("A".into()).to_string(), "serial=A");
    }

    #[test]
    fn rejects_with_the_valid_forms() {
        for bad in ["sda", "pci=zz:00.0", "pci=00:00.9", "serial=", "sim:"] {
            let e = bad.parse::<DeviceAddr>().unwrap_err();
            assert!(e.contains(bad) && e.contains("serial=SERIAL"), "{e}");
        }
    }
}
