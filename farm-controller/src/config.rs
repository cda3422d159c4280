//! The controller's configuration file (TOML). Every key is optional; command-line flags override it.
//!
//! ```toml
//! data_dir = "/var/lib/nvfarm"
//! listen = "0.0.0.0:7700"          # gRPC
//! http = "0.0.0.0:7701"            # dashboard and /metrics
//!
//! [health]
//! heartbeat_interval = "2s"        # what agents are told
//! agent_timeout = "10s"            # no heartbeat for this long: the agent's rigs go offline, its jobs end as error
//! quarantine_after = 3             # consecutive infrastructure errors before a rig is quarantined
//! health_check_plan = "plans/health.toml"   # run after an infrastructure error (default: wait for drive + SMART)
//!
//! [queue]
//! aging = "5m"                     # a CI request waiting this long is served like an interactive one
//!
//! [tls]                            # optional: serve gRPC over TLS (rustls)
//! cert = "/etc/nvfarm/tls.crt"
//! key = "/etc/nvfarm/tls.key"
//!
//! [[token]]                        # with tokens configured, every call needs one
//! name = "ci-pipeline"
//! token = "..."
//! role = "ci"                      # admin | user | ci | agent
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    User,
    Ci,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Ci => "ci",
            Role::Agent => "agent",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub token: String,
    pub role: Role,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    heartbeat_interval: Option<String>,
    agent_timeout: Option<String>,
    quarantine_after: Option<u32>,
    health_check_plan: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    aging: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    http: Option<String>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    queue: RawQueue,
    tls: Option<TlsConfig>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// The built-in health check: the drive is there and reports no critical warning.
pub const DEFAULT_HEALTH_CHECK: &str = r#"name = "health-check"
description = "built-in: the drive answers and reports no critical warning"

[[step]]
name = "drive-present"
kind = "wait_for_drive"
timeout = "60s"

[[step]]
name = "smart"
kind = "smart"
critical_warning = 0
"#;

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub heartbeat_interval: Duration,
    pub agent_timeout: Duration,
    pub quarantine_after: u32,
    pub health_check_plan: String,
    pub aging: Duration,
    pub tls: Option<TlsConfig>,
    pub tokens: Vec<TokenEntry>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("farm-data"),
            listen: "127.0.0.1:7700".parse().expect("literal"),
            http: "127.0.0.1:7701".parse().expect("literal"),
            heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(10),
            quarantine_after: 3,
            health_check_plan: DEFAULT_HEALTH_CHECK.to_string(),
            aging: Duration::from_secs(300),
            tls: None,
            tokens: vec![],
        }
    }
}

impl Config {
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut c = Config::default();
        if let Some(d) = raw.data_dir {
            c.data_dir = d;
        }
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse().map_err(|_| {
                invalid(format!(
                    "key '{key}': '{v}' is not an address like 127.0.0.1:7700"
                ))
            })
        };
        if let Some(l) = &raw.listen {
            c.listen = addr("listen", l)?;
        }
        if let Some(h) = &raw.http {
            c.http = addr("http", h)?;
        }
        let dur = |key: &str, v: &Option<String>, d: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(d),
                Some(s) => nvme_spec::units::parse_duration(s)
                    .map_err(|e| invalid(format!("key '{key}': {e}"))),
            }
        };
        c.heartbeat_interval = dur(
            "health.heartbeat_interval",
            &raw.health.heartbeat_interval,
            c.heartbeat_interval,
        )?;
        c.agent_timeout = dur(
            "health.agent_timeout",
            &raw.health.agent_timeout,
            c.agent_timeout,
        )?;
        if c.agent_timeout < c.heartbeat_interval * 2 {
            return Err(invalid(
                "key 'health.agent_timeout' must be at least twice health.heartbeat_interval"
                    .into(),
            ));
        }
        if let Some(q) = raw.health.quarantine_after {
            if q == 0 {
                return Err(invalid(
                    "key 'health.quarantine_after' must be at least 1".into(),
                ));
            }
            c.quarantine_after = q;
        }
        if let Some(p) = &raw.health.health_check_plan {
            let base = file.parent().unwrap_or(Path::new("."));
            let p = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            let text = std::fs::read_to_string(&p).map_err(|e| {
                invalid(format!(
                    "key 'health.health_check_plan': {}: {e}",
                    p.display()
                ))
            })?;
            nvfarm_model::plan::Plan::parse(&text, &p)
                .map_err(|e| invalid(format!("key 'health.health_check_plan': {e}")))?;
            c.health_check_plan = text;
        }
        c.aging = dur("queue.aging", &raw.queue.aging, c.aging)?;
        c.tls = raw.tls;
        let mut seen = std::collections::HashSet::new();
        for (i, t) in raw.token.iter().enumerate() {
            if t.token.len() < 16 {
                return Err(invalid(format!(
                    "token #{} ('{}'): key 'token' must be at least 16 characters",
                    i + 1,
                    t.name
                )));
            }
            if !seen.insert(t.token.clone()) {
                return Err(invalid(format!(
                    "token #{} ('{}'): the same token appears twice",
                    i + 1,
                    t.name
                )));
            }
        }
        c.tokens = raw.token;
        Ok(c)
    }

    /// Without tokens the controller trusts every caller, so it refuses to listen beyond loopback.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.tokens.is_empty() {
            for (what, a) in [("gRPC", self.listen), ("HTTP", self.http)] {
                if !a.ip().is_loopback() {
                    return Err(format!(
                        "refusing to serve {what} on {a} without authentication: configure [[token]] entries, or listen on 127.0.0.1"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c = Config::parse(
            "listen = \"0.0.0.0:9000\"\n[health]\nagent_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n[[token]]\nname = \"ci\"\ntoken = \"0123456789abcdef\"\nrole = \"ci\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.agent_timeout, Duration::from_secs(6));
        assert_eq!(c.tokens[0].role, Role::Ci);
        assert!(c.check_exposure().is_ok());
        let open = Config::parse("listen = \"0.0.0.0:9000\"\n", Path::new("c.toml")).unwrap();
        assert!(open
            .check_exposure()
            .unwrap_err()
            .contains("without authentication"));
        for (text, want) in [
            (
                "[[token]]\nname = \"x\"\ntoken = \"short\"\nrole = \"ci\"\n",
                "at least 16",
            ),
            (
                "[[token]]\nname = \"x\"\ntoken = \"0123456789abcdef\"\nrole = \"root\"\n",
                "root",
            ),
            ("listen = \"here\"\n", "'listen'"),
            ("[health]\nagent_timeout = \"1s\"\n", "twice"),
            ("colour = 1\n", "colour"),
        ] {
            let e = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("c.toml: ") && e.contains(want), "{e}");
        }
    }
}
