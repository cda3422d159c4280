//! The faults the suite injects, each at a random point of a running load: the controller killed (-9, at one
//! or more points) or stopped (SIGTERM); an agent killed, stopped, or paused (SIGSTOP) shortly or past the
//! controller's agent timeout; the agent link stalled, dropped or reset by the proxy; the controller's data
//! directory full for a while; a simulated drive that hangs, vanishes, loses power mid-download or answers with
//! an error status.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nvfarm_model::time::now_ms;

use super::check::DriveFault;
use super::farm::{ChaosFarm, AGENTS};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of the controller at random points, restarted at once.
    ControllerKill,
    /// SIGTERM of the controller mid-job, restarted.
    ControllerTerm,
    /// kill -9 of an agent mid-job, restarted after a while.
    AgentKill,
    /// SIGTERM of an agent mid-job, restarted.
    AgentTerm,
    /// SIGSTOP of an agent for less than the agent timeout.
    AgentPauseShort,
    /// SIGSTOP of an agent for longer than the agent timeout.
    AgentPauseLong,
    /// The agent link holds every byte for a while.
    LinkStall,
    /// The agent link's connections are closed (FIN).
    LinkDrop,
    /// The agent link's connections are reset (RST).
    LinkReset,
    /// The controller's data directory is full for a while.
    DiskFull,
    /// A drive's Get Log Page never completes (the host's command timeout fires).
    DriveHang,
    /// A drive drops off the bus at Firmware Commit and comes back after a while.
    DriveVanish,
    /// A drive loses power during a firmware download.
    DrivePowerLoss,
    /// A drive answers Firmware Commit with an error status.
    DriveStatus,
}

impl Fault {
    /// Every fault, in the order the quick variant runs them.
    pub const ALL: [Fault; 14] = [
        Fault::ControllerKill,
        Fault::ControllerTerm,
        Fault::AgentKill,
        Fault::AgentTerm,
        Fault::AgentPauseShort,
        Fault::AgentPauseLong,
        Fault::LinkStall,
        Fault::LinkDrop,
        Fault::LinkReset,
        Fault::DiskFull,
        Fault::DriveHang,
        Fault::DriveVanish,
        Fault::DrivePowerLoss,
        Fault::DriveStatus,
    ];

    /// Its name in the table and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ControllerKill => "controller-kill9",
            Fault::ControllerTerm => "controller-sigterm",
            Fault::AgentKill => "agent-kill9",
            Fault::AgentTerm => "agent-sigterm",
            Fault::AgentPauseShort => "agent-pause-short",
            Fault::AgentPauseLong => "agent-pause-long",
            Fault::LinkStall => "link-stall",
            Fault::LinkDrop => "link-drop",
            Fault::LinkReset => "link-reset",
            Fault::DiskFull => "disk-full",
            Fault::DriveHang => "drive-hang",
            Fault::DriveVanish => "drive-vanish",
            Fault::DrivePowerLoss => "drive-power-loss",
            Fault::DriveStatus => "drive-status",
        }
    }

    /// The fault named `name`.
    pub fn parse(name: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                format!(
                    "no fault {name:?}; the faults are: {}",
                    Fault::ALL.map(Fault::name).join(", ")
                )
            })
    }
}

/// What injecting a fault did.
#[derive(Debug, Default)]
pub struct Injected {
    /// Fault points injected (a kill, a pause, a cut, ...).
    pub points: u32,
    /// Measurements worth a line (e.g. how long a SIGTERM took).
    pub notes: Vec<String>,
    /// Broken promises seen while injecting (a daemon that did not stop in bounded time, ...).
    pub violations: Vec<String>,
    /// Drives broken on purpose (runs on them may fail for the drive's sake).
    pub drive_faults: Vec<DriveFault>,
    /// How long the controller took to stop after SIGTERM.
    pub sigterm_ms: Option<u64>,
    /// How long the rigs of a resumed or reconnected agent took to come back.
    pub back_ms: Option<u64>,
}

/// How long a daemon may take to stop after SIGTERM before it counts as not stopping at all.
const STOP_BOUND: Duration = Duration::from_secs(10);

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn sleep_ms(rng: &mut fastrand::Rng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.u64(lo..hi)));
}

/// Waits (bounded) until every rig of `agent` is out of `offline`; returns how long that took.
fn rigs_back(farm: &ChaosFarm, agent: &str, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let rigs = AGENTS
        .iter()
        .find(|(a, _)| *a == agent)
        .map(|(_, r)| *r)
        .unwrap_or_default();
    while t.elapsed() < within {
        let now = farm.rigs_by_name();
        if !now.is_empty()
            && rigs
                .iter()
                .all(|r| now.get(*r).is_some_and(|x| x["state"] != "offline"))
        {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn sim_fault(farm: &ChaosFarm, rig: &str, args: &[&str]) -> Result<(), String> {
    let dir = farm.sim_dir(rig);
    let mut all = vec!["sim", "fault", dir.to_str().unwrap_or_default()];
    all.extend_from_slice(args);
    let o = farm.lab.nvme_flash(&all);
    if o.code == 0 {
        Ok(())
    } else {
        Err(format!("nvme-flash {}: {}", all.join(" "), o.all()))
    }
}

/// Injects `fault` into the running farm and heals it; returns what happened.
pub fn inject(farm: &mut ChaosFarm, fault: Fault, rng: &mut fastrand::Rng) -> Injected {
    let mut out = Injected::default();
    let agent = AGENTS[rng.usize(..AGENTS.len())].0;
    match fault {
        Fault::ControllerKill => {
            for _ in 0..rng.u32(1..4) {
                sleep_ms(rng, 100, 1_500);
                farm.restart_controller(Signal::SIGKILL);
                out.points += 1;
            }
        }
        Fault::ControllerTerm => {
            let took = farm.restart_controller(Signal::SIGTERM);
            out.points += 1;
            out.sigterm_ms = Some(ms(took));
            if took > STOP_BOUND {
                out.violations.push(format!(
                    "the controller took {took:?} to stop after SIGTERM"
                ));
            }
        }
        Fault::AgentKill | Fault::AgentTerm => {
            let sig = if fault == Fault::AgentKill {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            let took = farm.stop_agent(agent, sig);
            out.points += 1;
            if took > STOP_BOUND {
                out.violations
                    .push(format!("agent {agent} took {took:?} to stop after {sig:?}"));
            }
            out.notes
                .push(format!("{agent} stopped in {} ms", ms(took)));
            sleep_ms(rng, 200, 2_500);
            farm.start_agent(agent);
            out.back_ms = rigs_back(farm, agent, Duration::from_secs(30)).map(ms);
        }
        Fault::AgentPauseShort | Fault::AgentPauseLong => {
            let (lo, hi) = if fault == Fault::AgentPauseShort {
                (200, 1_000)
            } else {
                (2_500, 5_000)
            };
            farm.lab.signal_agent(agent, Signal::SIGSTOP);
            out.points += 1;
            sleep_ms(rng, lo, hi);
            farm.lab.signal_agent(agent, Signal::SIGCONT);
            out.back_ms = rigs_back(farm, agent, Duration::from_secs(30)).map(ms);
        }
        Fault::LinkStall => {
            farm.proxy(agent).stall(true);
            out.points += 1;
            sleep_ms(rng, 500, 4_000);
            farm.proxy(agent).stall(false);
            out.back_ms = rigs_back(farm, agent, Duration::from_secs(30)).map(ms);
        }
        Fault::LinkDrop | Fault::LinkReset => {
            for _ in 0..rng.u32(1..3) {
                if fault == Fault::LinkDrop {
                    farm.proxy(agent).drop_all();
                } else {
                    farm.proxy(agent).reset_all();
                }
                out.points += 1;
                sleep_ms(rng, 100, 1_500);
            }
            out.back_ms = rigs_back(farm, agent, Duration::from_secs(30)).map(ms);
        }
        Fault::DiskFull => {
            let filler = farm.data_dir().join("chaos-filler");
            match fill(&filler) {
                Ok(bytes) => {
                    out.points += 1;
                    out.notes.push(format!(
                        "filled the data directory with {} KiB",
                        bytes >> 10
                    ));
                }
                Err(e) => out.violations.push(format!("could not fill the disk: {e}")),
            }
            sleep_ms(rng, 1_000, 3_000);
            let _ = std::fs::remove_file(&filler);
        }
        Fault::DriveHang | Fault::DriveVanish | Fault::DrivePowerLoss | Fault::DriveStatus => {
            let x1: Vec<&str> = AGENTS
                .iter()
                .flat_map(|(_, r)| r.iter().copied())
                .filter(|r| *r != super::farm::PROBE_RIG)
                .collect();
            let rig = x1[rng.usize(..x1.len())];
            let args: &[&str] = match fault {
                Fault::DriveHang => &["hang", "--opcode", "get-log-page", "--count", "1"],
                Fault::DriveVanish => &["vanish", "--opcode", "fw-commit", "--for", "2s"],
                Fault::DrivePowerLoss => &["power-loss", "--after", "1"],
                _ => &["status", "0x4006", "--opcode", "fw-commit", "--count", "1"],
            };
            let from_ms = now_ms();
            match sim_fault(farm, rig, args) {
                Ok(()) => out.points += 1,
                Err(e) => out.violations.push(e),
            }
            out.notes.push(format!("{} on {rig}", args.join(" ")));
            sleep_ms(rng, 2_000, 4_000);
            if let Err(e) = sim_fault(farm, rig, &["clear"]) {
                out.violations.push(e);
            }
            out.drive_faults.push(DriveFault {
                rig: rig.to_string(),
                from_ms,
                // Until the experiment ends: the runs the fault broke end after it is cleared.
                to_ms: u64::MAX,
            });
        }
    }
    out
}

/// Writes `file` until the filesystem is full; returns how much it wrote.
fn fill(file: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(file)?;
    let block = vec![0x5au8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    let _ = f.sync_all();
    Ok(n)
}
