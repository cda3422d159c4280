//! `chaos`: the chaos suite from the command line (scripts/chaos.sh builds and runs it). Prints one line per
//! experiment and the table; exits 1 if the farm's steady-state hypothesis was violated, 2 on bad usage.

use std::time::Duration;

use clap::Parser;
use nvfarm_tests::chaos::{self, faults::Fault, Options};

/// Runs nvfarm's real binaries on loopback under a mixed load and injects faults; every experiment is checked
/// against the farm's steady-state hypothesis (nothing acknowledged lost, no rig held twice, queue order kept,
/// every rig back in service or quarantined with a reason, outcomes truthful).
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Args {
    /// Keep running experiments (the faults in a new random order each round) for this long, e.g. 30m.
    #[arg(long, value_parser = nvme_spec::units::parse_duration, conflicts_with = "rounds")]
    duration: Option<Duration>,
    /// Run every fault this many times (default: once, the quick variant).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Only these faults (comma-separated names; default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Seed for every random choice (default: from the clock; printed, so a run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the table as JSON instead.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let a = Args::parse();
    let faults = if a.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        let parsed: Result<Vec<_>, _> = a.faults.iter().map(|f| Fault::parse(f)).collect();
        match parsed {
            Ok(f) => f,
            Err(e) => {
                eprintln!("chaos: --faults: {e}");
                return Ok(std::process::ExitCode::from(2));
            }
        }
    };
    let seed = a.seed.unwrap_or_else(nvfarm_model::time::now_ms);
    eprintln!("chaos: seed {seed}");
    let report = chaos::run(&Options {
        seed,
        faults,
        rounds: a.rounds,
        duration: a.duration,
        verbose: true,
    })
    .map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    for v in &report.violations {
        eprintln!("violation: {v}");
    }
    Ok(if report.clean() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
