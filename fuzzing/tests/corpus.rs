//! Replays every committed fuzz input through its target: the corpora libFuzzer grew (`fuzz/corpus/<target>/`)
//! and the inputs that once found a bug (`fuzz/regressions/<target>/`, each named for what it found). A target
//! without a corpus is a failure: its fuzzing never ran or its inputs were not committed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use nvfarm_fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut failures = vec![];
    for (name, target) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name} is empty: run scripts/fuzz.sh and commit the corpus"
        );
        for file in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(file).unwrap();
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {}: {why}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
