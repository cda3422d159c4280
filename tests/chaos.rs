//! The chaos suite's quick variant: every fault once, under load, on the real binaries (see
//! `nvfarm_tests::chaos`). The long variant is `scripts/chaos.sh --duration 30m`.

use nvfarm_tests::chaos::{self, faults::Fault, Options};

#[test]
fn every_fault_once_under_load_keeps_the_steady_state() {
    let seed = std::env::var("NVFARM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(nvfarm_model::time::now_ms);
    eprintln!("chaos: seed {seed} (NVFARM_CHAOS_SEED={seed} replays it)");
    let report = chaos::run(&Options {
        seed,
        faults: Fault::ALL.to_vec(),
        rounds: 1,
        duration: None,
        verbose: true,
    })
    .expect("the chaos farm starts");
    eprintln!("{}", report.table());
    assert!(
        report.clean(),
        "the steady-state hypothesis was violated (seed {seed}):\n{}\n{}",
        report.violations.join("\n"),
        report.table()
    );
    let total = report.total();
    assert_eq!(total.experiments as usize, Fault::ALL.len());
    assert!(
        total.points >= Fault::ALL.len() as u32,
        "every fault was injected"
    );
    assert!(total.acked_jobs > 0, "the load ran jobs");
}
