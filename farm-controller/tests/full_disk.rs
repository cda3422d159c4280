//! The controller on a data directory that fills up: an operation whose change cannot be stored fails and leaves
//! nothing changed in memory, and once space is free the controller works again without a restart. The data
//! directory is a small tmpfs (the tests run as root, as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use farm_controller::auth::Caller;
use farm_controller::config::{Config, Role};
use farm_controller::core::{Farm, FarmError, JobFilter, JobRequest, Reservation, ReserveRequest};
use nvfarm_model::farm::{Priority, RigState, Selector};
use nvfarm_model::link::{AgentRig, Registration};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "nvfarm-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a {size} tmpfs failed: these tests need root (CI runs as root)"
        );
        SmallDisk { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Fills the filesystem with one file; returns it (remove it to free the space).
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn admin() -> Caller {
    Caller {
        name: "alice".into(),
        role: Role::Admin,
    }
}

async fn farm_on(dir: &Path) -> Arc<Farm> {
    let f = Farm::open(Config {
        data_dir: dir.join("ctl"),
        ..Config::default()
    })
    .await
    .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(_rx);
    let conn = f.agent_connected("a", tx).await;
    f.agent_register(
        "a",
        conn,
        Registration {
            agent: "a".into(),
            rigs: (1..=3)
                .map(|i| AgentRig {
                    name: format!("r{i}"),
                    ..Default::default()
                })
                .collect(),
            jobs: vec![],
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    f
}

fn reserve(rig: &str) -> ReserveRequest {
    ReserveRequest {
        selector: Selector::rig(rig),
        priority: Priority::Interactive,
        duration: Duration::from_secs(600),
        wait: false,
        detach: false,
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_operation_changes_nothing_and_the_controller_recovers_when_space_returns(
) {
    let disk = SmallDisk::new("24m");
    let f = farm_on(disk.path()).await;
    let filler = disk.fill();
    // The store may have room left in space it set aside; changes succeed until they do not.
    let Reservation::Granted(l1) = f
        .reserve(&admin(), reserve("r1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!()
    };
    let mut acked = l1.expires_ms;
    let mut failed = None;
    for i in 0..100_000 {
        match f.extend(&admin(), &l1.id, Duration::from_millis(1)).await {
            Ok(l) => acked = l.expires_ms,
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = failed.expect("a full disk never failed a write");
    eprintln!("first failure after {i} changes: {e}");
    assert!(matches!(e, FarmError::Store(_)), "{e:?}");
    let held = f.rig("r1").await.unwrap().lease.unwrap();
    assert_eq!(
        held.expires_ms, acked,
        "memory is what was acknowledged, not the failed change"
    );
    // Each of these must fail, and leave the farm exactly as it was.
    let e = f.reserve(&admin(), reserve("r2")).await.unwrap_err();
    assert!(matches!(e, FarmError::Store(_)), "{e:?}");
    let r2 = f.rig("r2").await.unwrap();
    assert_eq!(r2.rig.state, RigState::Idle, "{r2:?}");
    assert!(r2.lease.is_none(), "a failed reservation holds nothing");
    let job = JobRequest {
        selector: Selector::rig("r3"),
        plan_toml: "name = \"p\"\n[[step]]\nkind = \"smart\"\n".into(),
        artifact_sha256: String::new(),
        firmware_name: String::new(),
        timeout: Duration::from_secs(600),
        priority: Priority::Ci,
        sweep_id: None,
        wait: false,
    };
    let e = f.submit_job(&admin(), job.clone()).await.unwrap_err();
    assert!(matches!(e, FarmError::Store(_)), "{e:?}");
    assert_eq!(
        f.metrics().await.jobs.values().sum::<usize>(),
        0,
        "a job the client was told failed does not exist"
    );
    // Finished jobs are listed from the store, which cannot even be opened while the disk is full: the
    // listing says so rather than showing only part of the jobs.
    let e = f.jobs(&JobFilter::default()).await.unwrap_err();
    assert!(matches!(e, FarmError::Store(_)), "{e:?}");
    assert!(f.rig("r3").await.unwrap().lease.is_none());
    // Space comes back: the same operations work, no restart.
    std::fs::remove_file(filler).unwrap();
    let Reservation::Granted(l) = f.reserve(&admin(), reserve("r2")).await.unwrap() else {
        panic!("r2 is free")
    };
    assert_eq!(l.rig, "r2");
    let j = f.submit_job(&admin(), job).await.unwrap();
    assert_eq!(f.job(&j.id).await.unwrap().id, j.id);
    // And what was acknowledged is what a restart finds.
    let acked_job = j.id.clone();
    drop(f);
    let f = Farm::open(Config {
        data_dir: disk.path().join("ctl"),
        ..Config::default()
    })
    .await
    .unwrap();
    for rig in ["r1", "r2"] {
        let s = f.rig(rig).await.unwrap();
        assert_eq!(s.lease.map(|l| l.holder).as_deref(), Some("alice"), "{rig}");
    }
    assert_eq!(f.job(&acked_job).await.unwrap().id, acked_job);
    assert_eq!(f.jobs(&JobFilter::default()).await.unwrap().len(), 1);
}
