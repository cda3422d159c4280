//! Helpers for nvfarm's end-to-end tests: finding the workspace's binaries and scripts.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A binary of the workspace (`nvme-flash`, `bench-agent`, ...), built by the same cargo invocation as the tests
/// (`cargo test --workspace` builds every member's binaries first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or cargo build --bins first)",
        p.display()
    );
    p
}
