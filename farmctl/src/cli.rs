//! The command line: every subcommand and option, documented for `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nvme_spec::units::parse_duration;

/// farmctl: flash and test firmware on real drives, reserve rigs, run sweeps.
///
/// Exit codes of `run` and `sweep` (and of every command on error): 0 passed, 1 a test failed, 2 bad input or
/// usage (including a rig or label no rig has), 3 infrastructure error (every matching rig quarantined, in
/// maintenance or offline; agent lost; controller unreachable), 4 timed out or cancelled.
#[derive(Parser, Debug)]
#[command(name = "farmctl", version)]
pub struct Cli {
    /// The farm-controller's gRPC address: HOST:PORT, http://HOST:PORT or https://HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "FARM_CONTROLLER",
        default_value = "http://127.0.0.1:7700"
    )]
    pub controller: String,
    /// Bearer token (needed when the controller has tokens configured).
    #[arg(long, global = true, env = "FARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Machine-readable JSON on stdout (the same record shapes as the controller's /api).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List rigs, their state and who holds them.
    Rigs {
        /// Only rigs with these labels (k=v,k2=v2).
        #[arg(long)]
        labels: Option<String>,
    },
    /// Reserve a rig for yourself.
    Reserve {
        /// The rig to reserve.
        #[arg(long, conflicts_with = "labels")]
        rig: Option<String>,
        /// Any rig with these labels (k=v,k2=v2).
        #[arg(long)]
        labels: Option<String>,
        /// How long (e.g. 2h; at most 7 days).
        #[arg(long = "for", value_parser = parse_duration, default_value = "1h")]
        duration: Duration,
        /// Queue and wait until a rig is free (also when every matching rig is quarantined, in maintenance or
        /// offline; without it, that is exit 3 at once with each rig's reason). If this client goes away, the
        /// request is withdrawn; a reservation granted to it that it never receives is released.
        #[arg(long, conflicts_with = "detach")]
        wait: bool,
        /// Queue and return at once with the request id: the request keeps its place with nobody waiting, until
        /// it is granted (see `farmctl rigs` / `queue`), its wait ends (the controller's queue.detached_wait) or
        /// `farmctl withdraw ID`.
        #[arg(long)]
        detach: bool,
        /// interactive, ci or nightly.
        #[arg(long, default_value = "interactive")]
        priority: String,
    },
    /// Withdraw a waiting request (from `reserve --detach`, or a queued job's request).
    Withdraw {
        /// The request (`req-...`).
        request_id: String,
    },
    /// Release a reservation.
    Release {
        /// The lease (from `reserve`).
        lease_id: String,
    },
    /// Extend a reservation.
    Extend {
        /// The lease (from `reserve`).
        lease_id: String,
        /// By how long (e.g. 1h).
        #[arg(long = "for", value_parser = parse_duration, default_value = "1h")]
        duration: Duration,
    },
    /// Flash a firmware build and run a test plan on a rig (the CI stage). Blocks, streams the log.
    Run {
        /// The firmware image (needed when the plan flashes; a plan without a flash step may leave it out).
        #[arg(long)]
        firmware: Option<PathBuf>,
        /// The test plan (TOML).
        #[arg(long)]
        plan: PathBuf,
        /// Run on this rig.
        #[arg(long, conflicts_with = "labels")]
        rig: Option<String>,
        /// Run on any rig with these labels (k=v,k2=v2).
        #[arg(long)]
        labels: Option<String>,
        /// Write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Overall limit, queueing included.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        timeout: Duration,
        /// interactive, ci or nightly.
        #[arg(long, default_value = "ci")]
        priority: String,
        /// Queue even when every matching rig is quarantined, in maintenance or offline (without it, that is
        /// exit 3 at once, with each rig's reason).
        #[arg(long)]
        wait: bool,
    },
    /// Run one plan on every matching rig and compare with the previous sweep of the same name
    /// (`farmctl sweep show ID` shows a past or running one).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sweep {
        /// Show a sweep instead of starting one.
        #[command(subcommand)]
        show: Option<SweepShow>,
        /// The firmware image (needed when the plan flashes; a plan without a flash step may leave it out).
        #[arg(long)]
        firmware: Option<PathBuf>,
        /// The test plan (TOML).
        #[arg(long, required = true)]
        plan: Option<PathBuf>,
        /// Every rig with these labels (k=v,k2=v2; default: every rig).
        #[arg(long)]
        labels: Option<String>,
        /// The name sweeps are compared by (default: the plan's name).
        #[arg(long)]
        name: Option<String>,
        /// Write a JUnit XML report here (one suite per rig).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Each job's overall limit, queueing included.
        #[arg(long, value_parser = parse_duration, default_value = "2h")]
        timeout: Duration,
        /// Re-run a failed rig this many times (a pass on retry is reported as flaky).
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// An io metric (IOPS, bandwidth, p99 latency) worse than last time by more than this percentage is a
        /// regression.
        #[arg(long, default_value_t = 25.0)]
        threshold: f64,
        /// interactive, ci or nightly.
        #[arg(long, default_value = "nightly")]
        priority: String,
    },
    /// Past sweeps (and running ones), newest first: when, name, plan, rigs, whether done.
    Sweeps {
        /// Only sweeps of this name.
        #[arg(long)]
        name: Option<String>,
        /// At most this many (at most 10000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Skip this many (for paging).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Past jobs of a rig, a firmware build, a drive model or a plan (any combination), newest first, with
    /// each step's pass rate over them.
    History {
        /// Only jobs on this rig.
        #[arg(long)]
        rig: Option<String>,
        /// Only jobs of this firmware build: its sha256 (or a prefix of 6 or more hex digits) or its revision.
        #[arg(long)]
        build: Option<String>,
        /// Only jobs whose rig's drive was this model (as `farmctl rigs` shows it).
        #[arg(long)]
        model: Option<String>,
        /// Only jobs of this plan (by name).
        #[arg(long)]
        plan: Option<String>,
        /// Only jobs submitted since: a duration ago (7d, 12h) or a time (2026-12-01, 2026-12-01T08:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Only jobs submitted before: a duration ago or a time, as --since.
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// At most this many (at most 10000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Skip this many (for paging).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Active leases (reservations and jobs'), with who holds each and when it ends.
    Leases {
        /// Only mine (the token's name, or $USER without tokens).
        #[arg(long)]
        mine: bool,
    },
    /// Recent jobs.
    Jobs {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only jobs on this rig.
        #[arg(long)]
        rig: Option<String>,
    },
    /// One job with its steps (with --json, each step carries its log).
    Job {
        /// The job.
        id: String,
    },
    /// A job's log.
    Logs {
        /// The job.
        id: String,
        /// Keep streaming until the job ends (then exit with its exit code).
        #[arg(long, short)]
        follow: bool,
    },
    /// Waiting requests, their position and why they wait.
    Queue,
    /// Cancel a job (its lease is freed).
    Cancel {
        /// The job.
        id: String,
    },
    /// Quarantine, restore or put a rig in maintenance.
    Rig {
        /// The action.
        #[command(subcommand)]
        action: RigAction,
    },
}

/// `farmctl sweep show`.
#[derive(Subcommand, Debug)]
pub enum SweepShow {
    /// One sweep's rig × step matrix against the previous sweep of its name (new failures, fixed, flaky,
    /// regressed), and its jobs.
    Show {
        /// The sweep (`sweep-...`).
        id: String,
        /// An io metric worse than the previous sweep's by more than this percentage is a regression.
        #[arg(long, default_value_t = 25.0)]
        threshold: f64,
    },
}

/// A point in time from the command line, as Unix ms: a duration ago (`7d`, `12h`), a date (`2026-12-01`, UTC
/// midnight) or an RFC 3339 time (`2026-12-01T08:00:00Z`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let now = nvfarm_model::time::now_ms();
    if let Ok(d) = parse_duration(s) {
        return Ok(now.saturating_sub(d.as_millis() as u64));
    }
    let t = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(&t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            format!("'{s}' is neither a duration ago (7d, 12h) nor a date or time (2026-12-01, 2026-12-01T08:00:00Z)")
        })
}

/// An operator action on a rig.
#[derive(Subcommand, Debug)]
pub enum RigAction {
    /// Take a rig out of service with a reason.
    Quarantine {
        /// The rig.
        name: String,
        /// Why (shown in `farmctl rigs`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Return a quarantined, maintenance or offline rig to service.
    Restore {
        /// The rig.
        name: String,
    },
    /// Put a rig into maintenance.
    Maintenance {
        /// The rig.
        name: String,
        /// Why (shown in `farmctl rigs`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Give a rig to another agent (admin only; the rig must not be leased). It stays offline until that agent
    /// registers it; its old agent can no longer register it.
    Move {
        /// The rig.
        name: String,
        /// The agent that owns it from now on.
        #[arg(long)]
        to: String,
    },
}
