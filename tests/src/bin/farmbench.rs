//! `farmbench`: the farm benchmark (scripts/bench-farm.sh builds it, runs labgrid's side, then this). Starts
//! nvfarm's controller and agents with simulated rigs on loopback, measures, and prints the table beside
//! labgrid's numbers from `--labgrid FILE`.

use std::path::PathBuf;

use clap::Parser;
use nvfarm_tests::bench::{self, Options};

/// Measures the controller at lab scale (see tests/src/bench/mod.rs for what each row is) and prints a table,
/// with labgrid's numbers for the same operations beside nvfarm's.
#[derive(Parser, Debug)]
#[command(name = "farmbench")]
struct Args {
    /// labgrid's numbers (the JSON scripts/bench_labgrid.py prints); without it that column says "n/a".
    #[arg(long)]
    labgrid: Option<PathBuf>,
    /// Fewer repetitions and smaller queues (200 and 1000): a smoke run, not the numbers to report.
    #[arg(long)]
    quick: bool,
    /// Also write nvfarm's numbers as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let labgrid = match &a.labgrid {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--labgrid {}: {e}", p.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "--labgrid {}: not the JSON bench_labgrid.py prints: {e}",
                        p.display()
                    )
                })?,
            )
        }
        None => None,
    };
    let farm = bench::run(Options { quick: a.quick }).map_err(anyhow::Error::msg)?;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&farm)?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", p.display()))?;
    }
    print!("{}", bench::table(&farm, labgrid.as_ref()));
    Ok(())
}
