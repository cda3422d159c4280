//! The state machine without processes: scheduling order, aging, health bookkeeping, holder checks, restarts.

use super::*;
use crate::config::Role;

const PLAN: &str = "name = \"p\"\n[[step]]\nkind = \"smart\"\n";

fn cfg(dir: &std::path::Path, aging: Duration) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        aging,
        quarantine_after: 2,
        ..Config::default()
    }
}

fn who(name: &str) -> Caller {
    Caller {
        name: name.into(),
        role: Role::User,
    }
}

/// A farm with one agent "a" holding `rigs` rigs r1..rN (label model=X).
async fn farm(
    dir: &std::path::Path,
    aging: Duration,
    rigs: usize,
) -> (Arc<Farm>, mpsc::UnboundedReceiver<pb::ControllerMessage>) {
    let f = Farm::open(cfg(dir, aging)).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    let reg = pb::Register {
        agent: "a".into(),
        rigs: (1..=rigs)
            .map(|i| pb::AgentRig {
                name: format!("r{i}"),
                labels: [("model".to_string(), "X".to_string())].into(),
                ..Default::default()
            })
            .collect(),
        jobs: vec![],
        version: "test".into(),
    };
    f.agent_register("a", conn, reg).await.unwrap();
    (f, rx)
}

fn rig_sel(name: &str) -> Selector {
    Selector {
        rig: Some(name.into()),
        labels: Default::default(),
    }
}

async fn holder_of(f: &Farm, rig: &str) -> Option<String> {
    let st = f.state.lock().await;
    st.rigs[rig]
        .lease_id
        .as_ref()
        .map(|l| st.leases[l].holder.clone())
}

async fn release_rig(f: &Farm, rig: &str) {
    let lease = f.state.lock().await.rigs[rig]
        .lease_id
        .clone()
        .expect("leased");
    f.release(
        &Caller {
            name: "admin".into(),
            role: Role::Admin,
        },
        &lease,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn interactive_then_ci_then_nightly_and_fifo_within_a_class() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(3600), 1).await;
    let hour = Duration::from_secs(3600);
    assert!(matches!(
        f.reserve(&who("first"), rig_sel("r1"), Class::Ci, hour, true)
            .await
            .unwrap(),
        Reservation::Granted(_)
    ));
    for (name, class) in [
        ("night", Class::Nightly),
        ("ci-1", Class::Ci),
        ("ci-2", Class::Ci),
        ("human", Class::Interactive),
    ] {
        let r = f
            .reserve(&who(name), rig_sel("r1"), class, hour, true)
            .await
            .unwrap();
        let Reservation::Queued {
            waiting_because, ..
        } = r
        else {
            panic!("{name} should queue")
        };
        assert!(
            waiting_because.contains("r1 reserved by first"),
            "{waiting_because}"
        );
    }
    let order: Vec<String> = {
        let st = f.state.lock().await;
        st.ordered_requests(now_ms(), hour)
            .iter()
            .map(|r| r.holder.clone())
            .collect()
    };
    assert_eq!(order, ["human", "ci-1", "ci-2", "night"]);
    for expect in ["human", "ci-1", "ci-2", "night"] {
        release_rig(&f, "r1").await;
        assert_eq!(holder_of(&f, "r1").await.as_deref(), Some(expect));
    }
}

#[tokio::test]
async fn a_ci_request_ages_into_interactive_but_nightly_never_overtakes() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::ZERO, 1).await;
    let hour = Duration::from_secs(3600);
    f.reserve(&who("first"), rig_sel("r1"), Class::Ci, hour, true)
        .await
        .unwrap();
    f.reserve(&who("night"), rig_sel("r1"), Class::Nightly, hour, true)
        .await
        .unwrap();
    f.reserve(&who("old-ci"), rig_sel("r1"), Class::Ci, hour, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.reserve(&who("human"), rig_sel("r1"), Class::Interactive, hour, true)
        .await
        .unwrap();
    release_rig(&f, "r1").await;
    assert_eq!(
        holder_of(&f, "r1").await.as_deref(),
        Some("old-ci"),
        "aged CI is served like interactive, oldest first"
    );
    release_rig(&f, "r1").await;
    assert_eq!(holder_of(&f, "r1").await.as_deref(), Some("human"));
    release_rig(&f, "r1").await;
    assert_eq!(
        holder_of(&f, "r1").await.as_deref(),
        Some("night"),
        "nightly only gets the rig when nobody else waits"
    );
}

#[tokio::test]
async fn only_the_holder_or_an_admin_releases_and_unknown_selectors_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let Reservation::Granted(l) = f
        .reserve(
            &who("alice"),
            rig_sel("r1"),
            Class::Interactive,
            Duration::from_secs(60),
            false,
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let e = f.release(&who("bob"), &l.id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("held by alice"), "{}", e.message());
    f.release(&who("alice"), &l.id).await.unwrap();
    let e = f
        .reserve(
            &who("alice"),
            Selector {
                rig: None,
                labels: [("model".into(), "Y".into())].into(),
            },
            Class::Ci,
            Duration::from_secs(60),
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("no rig matches model=Y"));
}

fn result(job: &JobRecord, outcome: &str) -> pb::JobResult {
    pb::JobResult {
        job_id: job.id.clone(),
        fencing_token: job.fencing_token,
        outcome: outcome.into(),
        message: format!("it {outcome}"),
        ..Default::default()
    }
}

async fn job(f: &Farm, id: &str) -> JobRecord {
    f.state.lock().await.jobs[id].clone()
}

#[tokio::test]
async fn infrastructure_errors_trigger_health_checks_then_quarantine() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let submit = || {
        f.submit_job(
            &alice,
            rig_sel("r1"),
            PLAN.into(),
            String::new(),
            String::new(),
            Duration::from_secs(600),
            Class::Ci,
            None,
        )
    };
    let j1 = submit().await.unwrap();
    assert_eq!(j1.state, JobState::Assigned);
    f.agent_result("a", result(&j1, "error")).await.unwrap();
    assert_eq!(job(&f, &j1.id).await.state, JobState::Error);
    // A health check takes the rig before anything else.
    let j2 = submit().await.unwrap();
    assert_eq!(j2.state, JobState::Queued);
    let hc = f
        .state
        .lock()
        .await
        .jobs
        .values()
        .find(|j| j.health_check)
        .cloned()
        .unwrap();
    assert_eq!(hc.state, JobState::Assigned);
    {
        let st = f.state.lock().await;
        let why = st.waiting_because(
            st.requests.values().next().unwrap(),
            now_ms(),
            Duration::from_secs(60),
        );
        assert!(why.contains("running job") && why.contains(&hc.id), "{why}");
    }
    f.agent_result("a", result(&hc, "passed")).await.unwrap();
    let j2 = job(&f, &j2.id).await;
    assert_eq!(
        j2.state,
        JobState::Assigned,
        "the queued job runs after the health check"
    );
    f.agent_result("a", result(&j2, "error")).await.unwrap();
    let st = f.state.lock().await;
    let r = &st.rigs["r1"];
    assert_eq!(r.state, RigState::Quarantined, "{r:?}");
    assert!(
        r.reason.contains("2 consecutive infrastructure errors"),
        "{}",
        r.reason
    );
    drop(st);
    let restored = f.set_rig_state(&alice, "r1", "restore", "").await.unwrap();
    assert_eq!(restored.state, RigState::Idle);
    assert_eq!(restored.consecutive_infra_errors, 0);
}

#[tokio::test]
async fn stale_results_do_not_change_a_decided_job() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let j = f
        .submit_job(
            &alice,
            rig_sel("r1"),
            PLAN.into(),
            String::new(),
            String::new(),
            Duration::from_secs(600),
            Class::Ci,
            None,
        )
        .await
        .unwrap();
    f.cancel_job(&alice, &j.id).await.unwrap();
    f.agent_result("a", result(&j, "passed")).await.unwrap();
    assert_eq!(job(&f, &j.id).await.state, JobState::Cancelled);
    let mut old = result(&j, "failed");
    old.fencing_token -= 1;
    f.agent_result("a", old).await.unwrap();
    assert_eq!(job(&f, &j.id).await.state, JobState::Cancelled);
    assert_eq!(
        f.state.lock().await.rigs["r1"].state,
        RigState::Idle,
        "cancelling freed the rig"
    );
}

#[tokio::test]
async fn a_restart_restores_leases_queue_jobs_and_the_fencing_counter() {
    let t = tempfile::tempdir().unwrap();
    let (lease, queued, fencing) = {
        let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
        let Reservation::Granted(l) = f
            .reserve(
                &who("alice"),
                rig_sel("r1"),
                Class::Interactive,
                Duration::from_secs(600),
                false,
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let Reservation::Queued { request_id, .. } = f
            .reserve(
                &who("bob"),
                rig_sel("r1"),
                Class::Ci,
                Duration::from_secs(60),
                true,
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let fencing = f.state.lock().await.fencing;
        (l, request_id, fencing)
        // Dropped without any shutdown: like kill -9 after the last acknowledged change.
    };
    let f = Farm::open(cfg(t.path(), Duration::from_secs(60)))
        .await
        .unwrap();
    let st = f.state.lock().await;
    assert_eq!(st.leases[&lease.id].holder, "alice");
    assert!(st.requests.contains_key(&queued));
    assert_eq!(st.fencing, fencing);
    assert_eq!(st.rigs["r1"].lease_id.as_deref(), Some(lease.id.as_str()));
}
