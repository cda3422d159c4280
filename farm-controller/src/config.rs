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
//! restart_grace = "15s"            # after a controller restart, an agent that had jobs must be back within this
//!                                  # (default and minimum: agent_timeout + 5s, an agent's longest reconnect wait)
//! quarantine_after = 3             # consecutive infrastructure errors before a rig is quarantined
//! stop_grace = "60s"               # a cancelled or timed-out job's agent must confirm it stopped within this; the
//!                                  # rig stays held meanwhile, and gets a health check if it never does
//! health_check_plan = "plans/health.toml"   # run after an infrastructure error (default: wait for drive + SMART)
//!
//! [queue]
//! aging = "5m"                     # a CI request waiting this long is served like an interactive one
//! watch_grace = "30s"              # a reservation request whose client went away is withdrawn after this
//! claim_timeout = "60s"            # a reservation granted to a client that never receives it is released
//! detached_wait = "24h"            # how long a `reserve --detach` request waits at most
//!
//! [limits]
//! job_log = "64M"                  # a job's stored log stops here, with a "truncated" line saying so
//!
//! [scripts]
//! roles = ["admin"]                # who may submit plans with `script` steps (they run shell commands on the
//!                                  # bench as the agent's user): the default is admin only
//!
//! [rigs]
//! operators = ["admin"]            # who may quarantine, restore and put rigs into maintenance (default admin)
//! owners = { "rig-07a" = "bench-07" }   # which agent a rig belongs to (default: the first to register it)
//!
//! [tls]                            # optional: serve gRPC over TLS (rustls)
//! cert = "/etc/nvfarm/tls.crt"
//! key = "/etc/nvfarm/tls.key"
//!
//! [[token]]                        # with tokens configured, every call needs one
//! name = "ci-pipeline"
//! token = "..."
//! role = "ci"                      # admin | user | ci | viewer | agent
//!
//! [dashboard]
//! public = false                   # with tokens, the dashboard, /api and /metrics need one (any role but agent;
//!                                  # browsers: HTTP Basic auth, any user name, the token as password). true
//!                                  # serves them to anyone.
//! url = "http://farm.lab:7701"     # how people reach the dashboard: the base of links in notifications
//!                                  # (default http://<http address>)
//!
//! [[webhook]]                      # POST a JSON notice here when one of `events` happens (any number of these)
//! url = "https://hooks.example/nvfarm"
//! events = ["sweep_finished", "new_failure", "regression", "rig_quarantined", "agent_lost"]   # default: all
//! format = "json"                  # "json" (nvfarm's notice) or "slack" ({"text": ...}, Slack/Teams/Mattermost)
//! timeout = "10s"                  # per attempt
//! retries = 5                      # after a failed attempt, with backoff 1s, 2s, 4s ... (at most 60s)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvfarm_model::link::AGENT_RECONNECT_MAX;
use serde::Deserialize;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {file}: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is invalid.
    #[error("{file}: {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

/// What a token's holder may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including other people's leases and jobs, rig states and moves.
    Admin,
    /// Reserve, run and sweep (and what `scripts.roles` / `rigs.operators` grant).
    User,
    /// Reserve, run and sweep, for pipelines.
    Ci,
    /// Read only: rigs, jobs and their logs, the queue, sweeps, the dashboard and /metrics.
    Viewer,
    /// The agent link only (as the agent of the token's name).
    Agent,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Ci => "ci",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
        }
    }
}

/// A bearer token and who holds it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The holder's name (an agent token's name is the agent's).
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub role: Role,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    heartbeat_interval: Option<String>,
    agent_timeout: Option<String>,
    restart_grace: Option<String>,
    quarantine_after: Option<u32>,
    stop_grace: Option<String>,
    health_check_plan: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    aging: Option<String>,
    watch_grace: Option<String>,
    claim_timeout: Option<String>,
    detached_wait: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    job_log: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScripts {
    roles: Option<Vec<Role>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    public: Option<bool>,
    url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    events: Option<Vec<String>>,
    format: Option<String>,
    timeout: Option<String>,
    retries: Option<u32>,
}

/// What a webhook is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// Every job of a sweep has ended (the notice carries its outcome and the matrix's changes).
    SweepFinished,
    /// A finished sweep has a step that passed last time and fails now.
    NewFailure,
    /// A finished sweep has an io metric worse than the previous sweep's by more than the threshold.
    Regression,
    /// A rig was quarantined (by the controller after infrastructure errors, or by an operator).
    RigQuarantined,
    /// An agent's rigs went offline: it stopped heartbeating or went away.
    AgentLost,
}

impl WebhookEvent {
    /// Every event.
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::SweepFinished,
        WebhookEvent::NewFailure,
        WebhookEvent::Regression,
        WebhookEvent::RigQuarantined,
        WebhookEvent::AgentLost,
    ];
    /// The name in the config and in notices.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::SweepFinished => "sweep_finished",
            WebhookEvent::NewFailure => "new_failure",
            WebhookEvent::Regression => "regression",
            WebhookEvent::RigQuarantined => "rig_quarantined",
            WebhookEvent::AgentLost => "agent_lost",
        }
    }
}

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// nvfarm's notice: the event, its subject, the matrix's changes, links.
    Json,
    /// `{"text": "..."}`, which Slack, Teams and Mattermost incoming webhooks take.
    Slack,
}

/// Where notices go.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// An http:// or https:// URL.
    pub url: String,
    /// The events it is told about.
    pub events: Vec<WebhookEvent>,
    /// The body's shape.
    pub format: WebhookFormat,
    /// Each attempt's limit.
    pub timeout: Duration,
    /// Attempts after a failed one.
    pub retries: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRigs {
    operators: Option<Vec<Role>>,
    #[serde(default)]
    owners: std::collections::BTreeMap<String, String>,
}

/// TLS for the gRPC side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
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
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    scripts: RawScripts,
    #[serde(default)]
    rigs: RawRigs,
    #[serde(default)]
    dashboard: RawDashboard,
    tls: Option<TlsConfig>,
    #[serde(default)]
    token: Vec<TokenEntry>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
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

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the store and artifacts live.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Dashboard, JSON API and /metrics address.
    pub http: SocketAddr,
    /// The heartbeat interval agents are told.
    pub heartbeat_interval: Duration,
    /// No heartbeat for this long: the agent's rigs go offline, its jobs end as error.
    pub agent_timeout: Duration,
    /// After a controller restart, how long an agent that had jobs has to come back before they end (error)
    /// and its rigs go offline.
    pub restart_grace: Duration,
    /// Consecutive infrastructure errors before a rig is quarantined.
    pub quarantine_after: u32,
    /// How long a cancelled or timed-out job's agent has to confirm it stopped before its rig is freed anyway
    /// (with a health check).
    pub stop_grace: Duration,
    /// The health-check plan (TOML) run after an infrastructure error.
    pub health_check_plan: String,
    /// A CI request waiting this long is served like an interactive one.
    pub aging: Duration,
    /// A reservation request nobody watches for this long is withdrawn (its client went away).
    pub watch_grace: Duration,
    /// A reservation granted to a waiting client that does not receive it within this is released.
    pub claim_timeout: Duration,
    /// How long a detached reservation request waits at most.
    pub detached_wait: Duration,
    /// The most log a job stores, in bytes; past it, one line says the log was truncated.
    pub job_log_cap: u64,
    /// The roles that may submit plans with `script` steps.
    pub script_roles: Vec<Role>,
    /// The roles that may quarantine, restore and put rigs into maintenance.
    pub rig_operators: Vec<Role>,
    /// Which agent each named rig belongs to (others: the first agent to register them).
    pub rig_owners: std::collections::BTreeMap<String, String>,
    /// Serve the dashboard, /api and /metrics without a token even when tokens are configured.
    pub http_public: bool,
    /// Serve gRPC over TLS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens; empty: no authentication, loopback only.
    pub tokens: Vec<TokenEntry>,
    /// How people reach the dashboard (links in notifications); `None`: `http://<http address>`.
    pub dashboard_url: Option<String>,
    /// Where notices go.
    pub webhooks: Vec<Webhook>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("farm-data"),
            listen: "127.0.0.1:7700".parse().expect("literal"),
            http: "127.0.0.1:7701".parse().expect("literal"),
            heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(10),
            restart_grace: Duration::from_secs(10).saturating_add(AGENT_RECONNECT_MAX),
            quarantine_after: 3,
            stop_grace: Duration::from_secs(60),
            health_check_plan: DEFAULT_HEALTH_CHECK.to_string(),
            aging: Duration::from_secs(300),
            watch_grace: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(60),
            detached_wait: Duration::from_secs(24 * 3600),
            job_log_cap: 64 << 20,
            script_roles: vec![Role::Admin],
            rig_operators: vec![Role::Admin],
            rig_owners: Default::default(),
            http_public: false,
            tls: None,
            tokens: vec![],
            dashboard_url: None,
            webhooks: vec![],
        }
    }
}

impl Config {
    /// Reads and validates the config file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Validates config `text`; `file` names it in errors.
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
            const MAX: Duration = Duration::from_secs(30 * 24 * 3600);
            match v {
                None => Ok(d),
                Some(s) => match nvme_spec::units::parse_duration(s) {
                    Ok(x) if x.is_zero() || x > MAX => Err(invalid(format!(
                        "key '{key}': {s} must be more than zero and at most 30 days"
                    ))),
                    Ok(x) => Ok(x),
                    Err(e) => Err(invalid(format!("key '{key}': {e}"))),
                },
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
        c.restart_grace = dur(
            "health.restart_grace",
            &raw.health.restart_grace,
            c.agent_timeout.saturating_add(AGENT_RECONNECT_MAX),
        )?;
        if c.restart_grace < c.agent_timeout.saturating_add(AGENT_RECONNECT_MAX) {
            return Err(invalid(format!(
                "key 'health.restart_grace' must be at least health.agent_timeout plus {} (the longest an agent \
                 waits between reconnect attempts), here {}",
                humantime::format_duration(AGENT_RECONNECT_MAX),
                humantime::format_duration(c.agent_timeout.saturating_add(AGENT_RECONNECT_MAX))
            )));
        }
        c.stop_grace = dur("health.stop_grace", &raw.health.stop_grace, c.stop_grace)?;
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
        c.watch_grace = dur("queue.watch_grace", &raw.queue.watch_grace, c.watch_grace)?;
        c.claim_timeout = dur(
            "queue.claim_timeout",
            &raw.queue.claim_timeout,
            c.claim_timeout,
        )?;
        c.detached_wait = dur(
            "queue.detached_wait",
            &raw.queue.detached_wait,
            c.detached_wait,
        )?;
        if let Some(v) = &raw.limits.job_log {
            c.job_log_cap = nvme_spec::units::parse_size(v)
                .ok()
                .filter(|n| *n >= 4096)
                .ok_or_else(|| {
                    invalid(format!(
                        "key 'limits.job_log': '{v}' is not a size of at least 4K (e.g. \"64M\")"
                    ))
                })?;
        }
        if let Some(roles) = raw.scripts.roles {
            if roles.contains(&Role::Agent) {
                return Err(invalid(
                    "key 'scripts.roles': agent tokens do not submit plans; use admin, user or ci"
                        .into(),
                ));
            }
            c.script_roles = roles;
        }
        if let Some(ops) = raw.rigs.operators {
            if ops.contains(&Role::Agent) {
                return Err(invalid(
                    "key 'rigs.operators': agents do not operate rigs; use admin, user or ci"
                        .into(),
                ));
            }
            c.rig_operators = ops;
        }
        c.rig_owners = raw.rigs.owners;
        c.http_public = raw.dashboard.public.unwrap_or(false);
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
        let http_url = |key: &str, u: &str| -> Result<(), ConfigError> {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .ok_or_else(|| {
                    invalid(format!("{key}: '{u}' is not an http:// or https:// URL"))
                })?;
            if rest.is_empty() || rest.starts_with('/') || u.chars().any(char::is_whitespace) {
                return Err(invalid(format!(
                    "{key}: '{u}' has no host (e.g. https://hooks.example/nvfarm)"
                )));
            }
            Ok(())
        };
        if let Some(u) = raw.dashboard.url {
            http_url("key 'dashboard.url'", &u)?;
            c.dashboard_url = Some(u.trim_end_matches('/').to_string());
        }
        for (i, w) in raw.webhook.into_iter().enumerate() {
            let key = |k: &str| format!("webhook #{} key '{k}'", i + 1);
            http_url(&key("url"), &w.url)?;
            let events = match w.events {
                None => WebhookEvent::ALL.to_vec(),
                Some(names) if names.is_empty() => {
                    return Err(invalid(format!(
                        "{}: empty; leave it out for every event",
                        key("events")
                    )))
                }
                Some(names) => names
                    .iter()
                    .map(|n| {
                        WebhookEvent::ALL
                            .into_iter()
                            .find(|e| e.as_str() == n)
                            .ok_or_else(|| {
                                invalid(format!(
                                    "{}: unknown event '{n}'; expected {}",
                                    key("events"),
                                    WebhookEvent::ALL.map(WebhookEvent::as_str).join(", ")
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let format = match w.format.as_deref() {
                None | Some("json") => WebhookFormat::Json,
                Some("slack") => WebhookFormat::Slack,
                Some(f) => {
                    return Err(invalid(format!(
                        "{}: '{f}' is not json or slack",
                        key("format")
                    )))
                }
            };
            let timeout = dur(&key("timeout"), &w.timeout, Duration::from_secs(10))?;
            let retries = w.retries.unwrap_or(5);
            if retries > 20 {
                return Err(invalid(format!(
                    "{}: {retries} is too many (at most 20; the backoff reaches 60s between attempts)",
                    key("retries")
                )));
            }
            c.webhooks.push(Webhook {
                url: w.url,
                events,
                format,
                timeout,
                retries,
            });
        }
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
    fn webhooks_parse_with_defaults_and_mistakes_name_the_webhook_and_key() {
        let c = Config::parse(
            "[dashboard]\nurl = \"https://farm.lab/\"\n[[webhook]]\nurl = \"https://hooks.example/a\"\n\
             [[webhook]]\nurl = \"http://10.0.0.1:9000/b\"\nevents = [\"new_failure\"]\nformat = \"slack\"\nretries = 0\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.dashboard_url.as_deref(), Some("https://farm.lab"));
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].events, WebhookEvent::ALL.to_vec());
        assert_eq!(c.webhooks[0].format, WebhookFormat::Json);
        assert_eq!(
            (c.webhooks[0].retries, c.webhooks[0].timeout),
            (5, Duration::from_secs(10))
        );
        assert_eq!(c.webhooks[1].events, vec![WebhookEvent::NewFailure]);
        assert_eq!(
            (c.webhooks[1].format, c.webhooks[1].retries),
            (WebhookFormat::Slack, 0)
        );
        for (toml, want) in [
            (
                "[[webhook]]\nurl = \"ftp://x/y\"\n",
                "webhook #1 key 'url': 'ftp://x/y' is not an http",
            ),
            ("[[webhook]]\nurl = \"http:///y\"\n", "has no host"),
            (
                "[[webhook]]\nurl = \"http://x\"\nevents = [\"sweep_done\"]\n",
                "unknown event 'sweep_done'; expected sweep_finished",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nevents = []\n",
                "key 'events': empty",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nformat = \"xml\"\n",
                "'xml' is not json or slack",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nretries = 1000\n",
                "1000 is too many",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\ntimeout = \"0s\"\n",
                "webhook #1 key 'timeout'",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nsecret = 1\n",
                "unknown field `secret`",
            ),
            ("[dashboard]\nurl = \"farm.lab\"\n", "key 'dashboard.url'"),
        ] {
            let e = Config::parse(toml, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{toml}: {e}");
        }
    }

    #[test]
    fn parses_and_validates() {
        let c = Config::parse(
            "listen = \"0.0.0.0:9000\"\n[health]\nagent_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n[[token]]\nname = \"ci\"\ntoken = \"0123456789abcdef\"\nrole = \"ci\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.agent_timeout, Duration::from_secs(6));
        assert_eq!(
            c.restart_grace,
            Duration::from_secs(11),
            "agent_timeout plus the agents' longest reconnect wait"
        );
        assert_eq!(c.tokens[0].role, Role::Ci);
        assert_eq!(
            c.script_roles,
            vec![Role::Admin],
            "scripts: admin only by default"
        );
        assert!(c.check_exposure().is_ok());
        let c = Config::parse(
            "[scripts]\nroles = [\"admin\", \"ci\"]\n[limits]\njob_log = \"1M\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.script_roles, vec![Role::Admin, Role::Ci]);
        assert_eq!(c.job_log_cap, 1 << 20);
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
            (
                "[health]\nrestart_grace = \"12s\"\n",
                "'health.restart_grace' must be at least health.agent_timeout plus 5s",
            ),
            ("[health]\nstop_grace = \"1000000y\"\n", "at most 30 days"),
            (
                "[scripts]\nroles = [\"agent\"]\n",
                "agent tokens do not submit plans",
            ),
            ("[limits]\njob_log = \"12\"\n", "at least 4K"),
        ] {
            let e = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("c.toml: ") && e.contains(want), "{e}");
        }
    }
}
