//! How a committed firmware image is brought into service.

use serde::Serialize;

/// When the new image should start running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Commit with action 1, then reset the controller.
    Reset,
    /// Commit with action 3 (immediate); if the drive says it needs a reset, perform it.
    Now,
    /// Commit with action 1 and leave activation to the next reset.
    NextReset,
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reset" => Ok(Activation::Reset),
            "now" => Ok(Activation::Now),
            "next-reset" => Ok(Activation::NextReset),
            _ => Err(format!(
                "invalid activation '{s}': expected reset, now or next-reset"
            )),
        }
    }
}
