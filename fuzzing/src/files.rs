//! Files people write or build: test plans, rig files, simulated firmware images. Any input either parses into
//! something within bounds or is refused with an error naming the file.

use std::path::Path;
use std::time::Duration;

use bench_agent::rigs::Inventory;
use flash_tools::sim::image::{self, ImageSpec};
use nvfarm_model::plan::Plan;

/// The longest any plan step may be given.
const MAX_STEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// A plan: parsed (bounded, named steps) or refused naming the file.
pub fn plan_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("plans/fuzz.toml");
    match Plan::parse(&text, file) {
        Ok(p) => {
            assert!(!p.name.trim().is_empty(), "a plan has a name");
            assert!(!p.steps.is_empty(), "a plan has steps");
            for (i, s) in p.steps.iter().enumerate() {
                assert_eq!(s.number as usize, i + 1, "steps are numbered in order");
                assert!(!s.name.is_empty(), "step {} has a name", s.number);
                assert!(
                    s.timeout > Duration::ZERO && s.timeout <= MAX_STEP,
                    "step {} timeout {:?} out of bounds",
                    s.number,
                    s.timeout
                );
            }
            serde_json::to_string(&p).expect("a parsed plan serializes");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("plans/fuzz.toml"),
                "error names the file: {msg}"
            );
        }
    }
}

/// A rig file: parsed or refused naming the file.
pub fn rig_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("rigs/fuzz.toml");
    match Inventory::parse(&text, file, Path::new("/nonexistent/work")) {
        Ok(inv) => {
            let mut names: Vec<_> = inv.rigs.iter().map(|r| r.name.clone()).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "rig names are unique");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("rigs/fuzz.toml"),
                "error names the file: {msg}"
            );
        }
    }
}

/// A simulated firmware image: a header that parses rebuilds into an image with the same header; one that does
/// not is refused with a reason.
pub fn sim_image(data: &[u8]) {
    match image::parse(data) {
        Ok(h) => {
            image::check_format(data).expect("an image that parses passes the format check");
            let rebuilt = image::build(&ImageSpec {
                revision: h.revision.clone(),
                model: h.model.clone(),
                behaviour: h.behaviour,
                behaviour_ms: h.behaviour_ms,
                payload_len: usize::try_from(h.payload_len).expect("payload fits in memory"),
            })
            .expect("a header that parses describes a buildable image");
            let again = image::parse(&rebuilt).expect("a built image parses");
            assert_eq!(
                (
                    &again.revision,
                    &again.model,
                    again.behaviour,
                    again.behaviour_ms,
                    again.payload_len
                ),
                (
                    &h.revision,
                    &h.model,
                    h.behaviour,
                    h.behaviour_ms,
                    h.payload_len
                )
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
