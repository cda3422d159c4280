//! The state machine without processes: scheduling through the farm, health bookkeeping, holder checks,
//! stale results, restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use nvfarm_model::farm::{DriveFirmware, Job, JobState, Priority, RigState, Selector};
use nvfarm_model::link::{AgentRig, Heartbeat, HeldJob, JobResult, Registration, ToAgent};
use nvfarm_model::time::now_ms;
use nvfarm_model::{Outcome, StepReport};

use super::*;
use crate::auth::Caller;
use crate::config::{Config, Role};

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
) -> (Arc<Farm>, mpsc::UnboundedReceiver<ToAgent>) {
    let f = Farm::open(cfg(dir, aging)).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    let reg = Registration {
        agent: "a".into(),
        rigs: (1..=rigs)
            .map(|i| AgentRig {
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

fn reservation(
    selector: Selector,
    priority: Priority,
    duration: Duration,
    wait: bool,
) -> ReserveRequest {
    ReserveRequest {
        selector,
        priority,
        duration,
        wait,
        detach: false,
    }
}

async fn holder_of(f: &Farm, rig: &str) -> Option<String> {
    f.rig(rig).await.unwrap().lease.map(|l| l.holder)
}

async fn release_rig(f: &Farm, rig: &str) {
    let lease = f.rig(rig).await.unwrap().lease.expect("leased");
    let admin = Caller {
        name: "admin".into(),
        role: Role::Admin,
    };
    f.release(&admin, &lease.id).await.unwrap();
}

#[tokio::test]
async fn interactive_then_ci_then_nightly_and_fifo_within_a_class() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(3600), 1).await;
    let hour = Duration::from_secs(3600);
    assert!(matches!(
        f.reserve(
            &who("first"),
            reservation(Selector::rig("r1"), Priority::Ci, hour, true)
        )
        .await
        .unwrap(),
        Reservation::Granted(_)
    ));
    for (name, priority) in [
        ("night", Priority::Nightly),
        ("ci-1", Priority::Ci),
        ("ci-2", Priority::Ci),
        ("human", Priority::Interactive),
    ] {
        let r = f
            .reserve(
                &who(name),
                reservation(Selector::rig("r1"), priority, hour, true),
            )
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
    let order: Vec<String> = f
        .queue()
        .await
        .into_iter()
        .map(|e| e.request.holder)
        .collect();
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
    for (name, p) in [
        ("first", Priority::Ci),
        ("night", Priority::Nightly),
        ("old-ci", Priority::Ci),
    ] {
        f.reserve(&who(name), reservation(Selector::rig("r1"), p, hour, true))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.reserve(
        &who("human"),
        reservation(Selector::rig("r1"), Priority::Interactive, hour, true),
    )
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
    let minute = Duration::from_secs(60);
    let Reservation::Granted(l) = f
        .reserve(
            &who("alice"),
            reservation(Selector::rig("r1"), Priority::Interactive, minute, false),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let e = f.release(&who("bob"), &l.id).await.unwrap_err();
    assert!(matches!(e, FarmError::PermissionDenied(_)), "{e:?}");
    assert!(e.to_string().contains("held by alice"), "{e}");
    f.release(&who("alice"), &l.id).await.unwrap();
    let e = f
        .reserve(
            &who("alice"),
            reservation(
                Selector::labels([("model".into(), "Y".into())].into()),
                Priority::Ci,
                minute,
                true,
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FarmError::InvalidArgument(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("no rig has model=Y; values of model: X"),
        "{e}"
    );
}

#[tokio::test]
async fn a_quarantined_rig_is_refused_at_once_with_its_reason_unless_the_caller_waits() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let admin = Caller {
        name: "admin".into(),
        role: Role::Admin,
    };
    f.set_rig_state(
        &admin,
        "r1",
        RigAction::Quarantine,
        "smoke from the drive bay",
    )
    .await
    .unwrap();
    let alice = who("alice");
    let e = f.submit_job(&alice, job_request()).await.unwrap_err();
    assert!(matches!(e, FarmError::FailedPrecondition(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("r1 quarantined: smoke from the drive bay"),
        "{e}"
    );
    let minute = Duration::from_secs(60);
    let e = f
        .reserve(
            &alice,
            reservation(Selector::rig("r1"), Priority::Interactive, minute, false),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FarmError::FailedPrecondition(_)), "{e:?}");
    assert!(e.to_string().contains("quarantined"), "{e}");
    // Asked to wait, it queues and says why.
    let j = f.submit_job(&alice, waiting_job_request()).await.unwrap();
    assert_eq!(j.state, JobState::Queued);
    let why = &f.queue().await[0].waiting_because;
    assert!(why.contains("r1 quarantined"), "{why}");
    // Nothing to cancel on a finished job.
    f.cancel_job(&alice, &j.id).await.unwrap();
    let e = f.cancel_job(&alice, &j.id).await.unwrap_err();
    assert!(matches!(e, FarmError::InvalidArgument(_)), "{e:?}");
    assert!(
        e.to_string().contains("had already finished (cancelled"),
        "{e}"
    );
}

fn result(job: &Job, outcome: Outcome) -> JobResult {
    JobResult::early(&job.id, job.fencing_token, outcome, format!("it {outcome}"))
}

/// [`job_request`] from a client that waits for a rig.
fn waiting_job_request() -> JobRequest {
    JobRequest {
        wait: true,
        ..job_request()
    }
}

/// A farm whose agents are lost after 50 ms of silence.
async fn quick_to_lose(dir: &std::path::Path) -> Arc<Farm> {
    Farm::open(Config {
        agent_timeout: Duration::from_millis(50),
        ..cfg(dir, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

fn job_request() -> JobRequest {
    JobRequest {
        selector: Selector::rig("r1"),
        plan_toml: PLAN.into(),
        artifact_sha256: String::new(),
        firmware_name: String::new(),
        timeout: Duration::from_secs(600),
        priority: Priority::Ci,
        sweep_id: None,
        wait: false,
    }
}

#[tokio::test]
async fn infrastructure_errors_trigger_health_checks_then_quarantine() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let j1 = f.submit_job(&alice, job_request()).await.unwrap();
    assert_eq!(j1.state, JobState::Assigned);
    f.agent_result("a", result(&j1, Outcome::Error))
        .await
        .unwrap();
    assert_eq!(f.job(&j1.id).await.unwrap().state, JobState::Error);
    // A health check takes the rig before anything else.
    let j2 = f.submit_job(&alice, job_request()).await.unwrap();
    assert_eq!(j2.state, JobState::Queued);
    let hc = f
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.health_check)
        .unwrap();
    assert_eq!(hc.state, JobState::Assigned);
    let why = &f.queue().await[0].waiting_because;
    assert!(why.contains("running job") && why.contains(&hc.id), "{why}");
    f.agent_result("a", result(&hc, Outcome::Passed))
        .await
        .unwrap();
    let j2 = f.job(&j2.id).await.unwrap();
    assert_eq!(
        j2.state,
        JobState::Assigned,
        "the queued job runs after the health check"
    );
    f.agent_result("a", result(&j2, Outcome::Error))
        .await
        .unwrap();
    let r = f.rig("r1").await.unwrap().rig;
    assert_eq!(r.state, RigState::Quarantined, "{r:?}");
    assert!(
        r.reason.contains("2 consecutive infrastructure errors"),
        "{}",
        r.reason
    );
    let restored = f
        .set_rig_state(&alice, "r1", RigAction::Restore, "")
        .await
        .unwrap();
    assert_eq!(restored.state, RigState::Idle);
    assert_eq!(restored.consecutive_infra_errors, 0);
}

#[tokio::test]
async fn stale_results_do_not_change_a_decided_job() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let j = f.submit_job(&alice, job_request()).await.unwrap();
    f.cancel_job(&alice, &j.id).await.unwrap();
    f.agent_result("a", result(&j, Outcome::Passed))
        .await
        .unwrap();
    assert_eq!(f.job(&j.id).await.unwrap().state, JobState::Cancelled);
    let mut old = result(&j, Outcome::Failed);
    old.fencing_token -= 1;
    f.agent_result("a", old).await.unwrap();
    assert_eq!(f.job(&j.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(
        f.rig("r1").await.unwrap().rig.state,
        RigState::Idle,
        "the agent's confirmation freed the rig"
    );
}

fn finished_step(number: u32, outcome: Outcome) -> StepReport {
    StepReport {
        number,
        name: format!("{number}-smart"),
        kind: "smart".into(),
        outcome,
        duration_ms: 5,
        message: String::new(),
        log: vec![],
        metrics: Default::default(),
    }
}

/// Drains what the agent was sent so far.
fn sent(rx: &mut mpsc::UnboundedReceiver<ToAgent>) -> Vec<ToAgent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn a_cancelled_job_holds_its_rig_until_its_agent_confirms_and_keeps_what_ran() {
    let t = tempfile::tempdir().unwrap();
    let (f, mut rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let j1 = f.submit_job(&alice, job_request()).await.unwrap();
    let j2 = f.submit_job(&alice, job_request()).await.unwrap();
    sent(&mut rx);
    let c = f.cancel_job(&alice, &j1.id).await.unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert!(!c.settled, "the agent has not confirmed yet");
    assert!(
        sent(&mut rx)
            .iter()
            .any(|m| matches!(m, ToAgent::Cancel { job_id, .. } if *job_id == j1.id)),
        "the agent is told to stop"
    );
    assert_eq!(f.job(&j2.id).await.unwrap().state, JobState::Queued);
    let why = &f.queue().await[0].waiting_because;
    assert!(
        why.contains(&format!("r1 finishing cancelled job {}", j1.id)),
        "{why}"
    );
    // The agent stops after step 1 passed and step 2 was cut short; the drive runs 2.0.0 from slot 2.
    let mut r = result(&j1, Outcome::Cancelled);
    r.steps = vec![
        finished_step(1, Outcome::Passed),
        finished_step(2, Outcome::Cancelled),
    ];
    r.drive = Some(DriveFirmware {
        revision: "2.0.0".into(),
        active_slot: 2,
        slots: vec![Some("1.0.0".into()), Some("2.0.0".into())],
    });
    f.agent_result("a", r).await.unwrap();
    let j1 = f.job(&j1.id).await.unwrap();
    assert_eq!(j1.state, JobState::Cancelled, "the decided outcome stands");
    assert!(j1.settled);
    assert_eq!(j1.steps.len(), 2, "the steps that ran are kept");
    let rig = f.rig("r1").await.unwrap().rig;
    assert_eq!(rig.firmware_revision, "2.0.0");
    assert_eq!(rig.active_slot, 2);
    assert_eq!(
        f.job(&j2.id).await.unwrap().state,
        JobState::Assigned,
        "the next job runs only once the rig is confirmed free"
    );
}

#[tokio::test]
async fn a_stop_its_agent_never_confirms_frees_the_rig_only_through_a_health_check() {
    let t = tempfile::tempdir().unwrap();
    let f = Farm::open(Config {
        stop_grace: Duration::ZERO,
        ..cfg(t.path(), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    f.agent_register(
        "a",
        conn,
        Registration {
            agent: "a".into(),
            rigs: vec![AgentRig {
                name: "r1".into(),
                ..Default::default()
            }],
            jobs: vec![],
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    let alice = who("alice");
    let j1 = f.submit_job(&alice, job_request()).await.unwrap();
    f.cancel_job(&alice, &j1.id).await.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Leased);
    f.tick().await.unwrap();
    let hc = f
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.health_check)
        .expect("a health check before anything else runs on the rig");
    assert_eq!(hc.state, JobState::Assigned);
    assert!(f.job(&j1.id).await.unwrap().settled);
}

#[tokio::test]
async fn a_timed_out_job_is_stopped_and_settles_when_its_agent_reconnects_with_the_result() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let j = f
        .submit_job(
            &alice,
            JobRequest {
                timeout: Duration::from_millis(1),
                ..job_request()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.tick().await.unwrap();
    let stopped = f.job(&j.id).await.unwrap();
    assert_eq!(stopped.state, JobState::TimedOut);
    assert!(!stopped.settled);
    // The agent restarts and reports the job it finished stopping while disconnected.
    let (tx, _rx2) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    let mut r = result(&j, Outcome::Cancelled);
    r.steps = vec![finished_step(1, Outcome::Cancelled)];
    f.agent_register(
        "a",
        conn,
        Registration {
            agent: "a".into(),
            rigs: vec![AgentRig {
                name: "r1".into(),
                labels: [("model".to_string(), "X".to_string())].into(),
                ..Default::default()
            }],
            jobs: vec![HeldJob {
                job_id: j.id.clone(),
                rig: "r1".into(),
                fencing_token: j.fencing_token,
                result: Some(r),
            }],
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    let settled = f.job(&j.id).await.unwrap();
    assert_eq!(settled.state, JobState::TimedOut);
    assert!(settled.settled);
    assert_eq!(settled.steps.len(), 1);
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Idle);
}

#[tokio::test]
async fn a_granted_job_is_assigned_to_its_agent_after_registered() {
    let t = tempfile::tempdir().unwrap();
    let (f, mut rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    assert!(matches!(rx.recv().await, Some(ToAgent::Registered { .. })));
    let j = f.submit_job(&who("alice"), job_request()).await.unwrap();
    match rx.recv().await {
        Some(ToAgent::Assign(a)) => {
            assert_eq!(a.job_id, j.id);
            assert_eq!(a.rig, "r1");
            assert_eq!(a.fencing_token, j.fencing_token);
            assert!(a.timeout_ms > 0 && a.timeout_ms <= 600_000);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_restart_restores_leases_queue_jobs_and_the_fencing_counter() {
    let t = tempfile::tempdir().unwrap();
    let (lease, queued, fencing) = {
        let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
        let Reservation::Granted(l) = f
            .reserve(
                &who("alice"),
                reservation(
                    Selector::rig("r1"),
                    Priority::Interactive,
                    Duration::from_secs(600),
                    false,
                ),
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let Reservation::Queued { request_id, .. } = f
            .reserve(
                &who("bob"),
                reservation(
                    Selector::rig("r1"),
                    Priority::Ci,
                    Duration::from_secs(60),
                    true,
                ),
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let fencing = f.metrics().await.fencing_token;
        (l, request_id, fencing)
        // Dropped without any shutdown: like kill -9 after the last acknowledged change.
    };
    let f = Farm::open(cfg(t.path(), Duration::from_secs(60)))
        .await
        .unwrap();
    let r1 = f.rig("r1").await.unwrap();
    assert_eq!(r1.lease.as_ref().map(|l| l.holder.as_str()), Some("alice"));
    assert_eq!(r1.rig.lease_id.as_deref(), Some(lease.id.as_str()));
    assert_eq!(r1.rig.state, RigState::Leased);
    assert!(f.queue().await.iter().any(|e| e.request.id == queued));
    assert_eq!(f.metrics().await.fencing_token, fencing);
    let _ = now_ms();
}

#[tokio::test]
async fn only_the_configured_roles_may_submit_plans_with_scripts() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let script = JobRequest {
        plan_toml:
            "name = \"s\"\n[[step]]\nname = \"wipe\"\nkind = \"script\"\ncommand = \"true\"\n"
                .into(),
        ..job_request()
    };
    let e = f
        .submit_job(&who("alice"), script.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, FarmError::PermissionDenied(_)), "{e:?}");
    assert!(
        e.to_string().contains("step 1 (wipe) is a script")
            && e.to_string().contains("need role admin")
            && e.to_string().contains("'alice' has role user"),
        "{e}"
    );
    // A script hidden in a parallel group is a script all the same.
    let grouped = JobRequest {
        plan_toml: "name = \"s\"\n[[step]]\nkind = \"parallel\"\nsteps = [{ kind = \"smart\" }, { kind = \"script\", name = \"wipe\", command = \"true\" }]\n"
            .into(),
        ..job_request()
    };
    let e = f.submit_job(&who("alice"), grouped).await.unwrap_err();
    assert!(matches!(e, FarmError::PermissionDenied(_)), "{e:?}");
    assert!(e.to_string().contains("(wipe) is a script"), "{e}");
    let admin = Caller {
        name: "root".into(),
        role: Role::Admin,
    };
    f.submit_job(&admin, script.clone()).await.unwrap();
    // A controller that lets users run scripts.
    let t2 = tempfile::tempdir().unwrap();
    let f2 = Farm::open(Config {
        script_roles: vec![Role::Admin, Role::User],
        ..cfg(t2.path(), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let (tx, _rx2) = mpsc::unbounded_channel();
    let conn = f2.agent_connected("a", tx).await;
    f2.agent_register(
        "a",
        conn,
        Registration {
            agent: "a".into(),
            rigs: vec![AgentRig {
                name: "r1".into(),
                ..Default::default()
            }],
            jobs: vec![],
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    f2.submit_job(&who("alice"), script).await.unwrap();
}

#[tokio::test]
async fn absurd_numbers_are_refused_and_nothing_panics_later() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
    let alice = who("alice");
    let Reservation::Granted(l) = f
        .reserve(
            &alice,
            reservation(
                Selector::rig("r1"),
                Priority::Interactive,
                Duration::from_secs(3600),
                false,
            ),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    for by in [
        Duration::from_secs(600_000_000 * 86_400),
        Duration::MAX,
        Duration::from_secs(8 * 86_400),
        Duration::ZERO,
    ] {
        let e = f.extend(&alice, &l.id, by).await.unwrap_err();
        assert!(matches!(e, FarmError::InvalidArgument(_)), "{by:?}: {e:?}");
        assert!(e.to_string().contains("at most 7days"), "{e}");
    }
    let longer = f
        .extend(&alice, &l.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(longer.expires_ms > l.expires_ms);
    // Everything that renders the lease still works.
    f.queue().await;
    f.rigs(&Default::default()).await;
    let e = f
        .submit_job(
            &alice,
            JobRequest {
                timeout: Duration::from_secs(u64::MAX),
                ..job_request()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most 30days"), "{e}");
}

#[tokio::test]
async fn after_a_restart_a_job_whose_agent_never_returns_ends_within_the_grace_period() {
    let t = tempfile::tempdir().unwrap();
    let short = |dir: &std::path::Path| Config {
        restart_grace: Duration::from_millis(100),
        ..cfg(dir, Duration::from_secs(60))
    };
    let job = {
        let (f, _rx) = farm(t.path(), Duration::from_secs(60), 1).await;
        f.submit_job(&who("alice"), job_request()).await.unwrap()
        // Dropped: the controller dies with the job assigned.
    };
    let f = Farm::open(short(t.path())).await.unwrap();
    f.tick().await.unwrap();
    assert_eq!(
        f.job(&job.id).await.unwrap().state,
        JobState::Assigned,
        "within the grace period the job waits for its agent"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.tick().await.unwrap();
    let j = f.job(&job.id).await.unwrap();
    assert_eq!(j.state, JobState::Error, "{j:?}");
    assert!(
        j.message
            .contains("did not come back within 100ms after the controller restarted"),
        "{}",
        j.message
    );
    let r = f.rig("r1").await.unwrap();
    assert_eq!(r.rig.state, RigState::Offline);
    assert!(r.lease.is_none(), "the rig is not held");
}

/// Connects agent `name` with rigs `rigs` (no labels); returns its connection and message receiver.
async fn connect(
    f: &Farm,
    name: &str,
    rigs: &[&str],
) -> (u64, mpsc::UnboundedReceiver<ToAgent>, Result<(), FarmError>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected(name, tx).await;
    let r = f
        .agent_register(
            name,
            conn,
            Registration {
                agent: name.into(),
                rigs: rigs
                    .iter()
                    .map(|r| AgentRig {
                        name: r.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                jobs: vec![],
                version: "test".into(),
            },
        )
        .await;
    (conn, rx, r)
}

#[tokio::test]
async fn a_rig_belongs_to_its_first_agent_until_an_admin_moves_it_and_only_its_agent_speaks_for_its_jobs(
) {
    let t = tempfile::tempdir().unwrap();
    let f = quick_to_lose(t.path()).await;
    let (_, _rx_a, r) = connect(&f, "a", &["r1"]).await;
    r.unwrap();
    let (_, _rx_b, r) = connect(&f, "b", &["r2"]).await;
    r.unwrap();
    let j = f.submit_job(&who("alice"), job_request()).await.unwrap();
    // Agent b forges a result for a's job, and a progress report: neither counts.
    f.agent_result("b", result(&j, Outcome::Passed))
        .await
        .unwrap();
    assert_eq!(f.job(&j.id).await.unwrap().state, JobState::Assigned);
    // a goes silent; b tries to take r1 over by registering it.
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.tick().await.unwrap();
    let (_, _rx_b2, r) = connect(&f, "b", &["r2", "r1"]).await;
    let e = r.unwrap_err();
    assert!(matches!(e, FarmError::Conflict(_)), "{e:?}");
    assert!(
        e.to_string().contains("rig r1 belongs to agent a")
            && e.to_string().contains("farmctl rig move r1 --to b"),
        "{e}"
    );
    // Only an admin moves it.
    let e = f.move_rig(&who("bob"), "r1", "b").await.unwrap_err();
    assert!(matches!(e, FarmError::PermissionDenied(_)), "{e:?}");
    let admin = Caller {
        name: "root".into(),
        role: Role::Admin,
    };
    let moved = f.move_rig(&admin, "r1", "b").await.unwrap();
    assert_eq!(moved.agent, "b");
    assert_eq!(moved.state, RigState::Offline);
    let (_, _rx_b3, r) = connect(&f, "b", &["r2", "r1"]).await;
    r.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.agent, "b");
    let (_, _rx_a2, r) = connect(&f, "a", &["r1"]).await;
    assert!(matches!(r.unwrap_err(), FarmError::Conflict(_)));
}

#[tokio::test]
async fn a_lost_agent_that_answers_again_is_made_to_register_and_gets_its_rigs_back() {
    let t = tempfile::tempdir().unwrap();
    let f = quick_to_lose(t.path()).await;
    let (conn, mut rx, r) = connect(&f, "a", &["r1"]).await;
    r.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.tick().await.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Offline);
    // Its heartbeat arrives on the old connection: the controller closes that session.
    f.agent_heartbeat(
        "a",
        conn,
        &Heartbeat {
            seq: 9,
            running_job_ids: vec![],
        },
    )
    .await;
    while rx.try_recv().is_ok() {}
    assert!(
        matches!(
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await,
            Ok(None)
        ),
        "the old session's stream ended"
    );
    // The agent reconnects and registers: its rig is back.
    let (_, _rx2, r) = connect(&f, "a", &["r1"]).await;
    r.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Idle);
}

/// Registers agent "a" again on a new connection with rig r1 (label model=X) and the jobs it reports.
async fn reconnect(f: &Farm, jobs: Vec<HeldJob>) -> mpsc::UnboundedReceiver<ToAgent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    f.agent_register(
        "a",
        conn,
        Registration {
            agent: "a".into(),
            rigs: vec![AgentRig {
                name: "r1".into(),
                labels: [("model".to_string(), "X".to_string())].into(),
                ..Default::default()
            }],
            jobs,
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    rx
}

fn still_running(j: &Job) -> HeldJob {
    HeldJob {
        job_id: j.id.clone(),
        rig: "r1".into(),
        fencing_token: j.fencing_token,
        result: None,
    }
}

fn assigned(msgs: &[ToAgent]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            ToAgent::Assign(a) => Some(a.job_id.clone()),
            _ => None,
        })
        .collect()
}

/// Found by the chaos suite (agent-pause-long, link-stall): the controller gave a rig to a new job the moment a
/// lost agent came back still running the old one, so the agent held two leases on one rig.
#[tokio::test]
async fn a_lost_agent_still_running_its_job_gets_nothing_new_on_that_rig_until_it_confirms_the_stop(
) {
    let t = tempfile::tempdir().unwrap();
    let f = quick_to_lose(t.path()).await;
    let _rx = reconnect(&f, vec![]).await;
    let alice = who("alice");
    let j1 = f.submit_job(&alice, job_request()).await.unwrap();
    assert_eq!(j1.state, JobState::Assigned);
    // The agent goes silent: its job ends as an error at once (its client gets the answer now)...
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.tick().await.unwrap();
    let lost = f.job(&j1.id).await.unwrap();
    assert_eq!(lost.state, JobState::Error);
    assert!(
        lost.settled,
        "followers are not kept waiting for a silent agent"
    );
    let j2 = f.submit_job(&alice, waiting_job_request()).await.unwrap();
    // ... it comes back still running it: the rig stays held, nothing new is assigned.
    let mut rx = reconnect(&f, vec![still_running(&j1)]).await;
    let msgs = sent(&mut rx);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ToAgent::Cancel { job_id, .. } if *job_id == j1.id)),
        "the agent is told to stop it: {msgs:?}"
    );
    assert_eq!(assigned(&msgs), Vec::<String>::new(), "{msgs:?}");
    let rig = f.rig("r1").await.unwrap();
    assert_eq!(rig.rig.state, RigState::Leased);
    assert!(rig.lease.unwrap().stopping.is_some());
    let why = &f.queue().await[0].waiting_because;
    assert!(
        why.contains(&format!("finishing agent-lost job {}", j1.id)),
        "{why}"
    );
    // It confirms: the rig is free, the health check (after the error) and then j2 get it.
    f.agent_result("a", result(&j1, Outcome::Cancelled))
        .await
        .unwrap();
    assert_eq!(
        f.job(&j1.id).await.unwrap().state,
        JobState::Error,
        "the decided outcome stands"
    );
    let next = assigned(&sent(&mut rx));
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(f.job(&next[0]).await.unwrap().health_check);
    assert_eq!(f.job(&j2.id).await.unwrap().state, JobState::Queued);
}

#[tokio::test]
async fn a_lost_agent_that_comes_back_without_its_job_frees_the_rig_through_a_health_check() {
    let t = tempfile::tempdir().unwrap();
    let f = quick_to_lose(t.path()).await;
    let _rx = reconnect(&f, vec![]).await;
    let j1 = f.submit_job(&who("alice"), job_request()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.tick().await.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Offline);
    // It restarted meanwhile and reports nothing: the hold goes, a health check runs first.
    let mut rx = reconnect(&f, vec![]).await;
    let next = assigned(&sent(&mut rx));
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(f.job(&next[0]).await.unwrap().health_check);
    assert!(f.job(&j1.id).await.unwrap().settled);
}

#[tokio::test]
async fn a_job_let_go_of_while_its_agent_was_away_holds_the_rig_if_the_agent_still_runs_it() {
    let t = tempfile::tempdir().unwrap();
    let f = Farm::open(Config {
        stop_grace: Duration::ZERO,
        ..cfg(t.path(), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let _rx = reconnect(&f, vec![]).await;
    let alice = who("alice");
    let j1 = f.submit_job(&alice, job_request()).await.unwrap();
    // Cancelled; the agent never confirms within the (zero) grace: the rig is freed through a health check.
    f.cancel_job(&alice, &j1.id).await.unwrap();
    f.tick().await.unwrap();
    // The health check ends; the rig is idle and j1 is long settled.
    let hc = f
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.health_check)
        .unwrap();
    f.agent_result("a", result(&hc, Outcome::Passed))
        .await
        .unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Idle);
    // The agent reconnects still running j1: the rig is held until it confirms.
    let j2 = f.submit_job(&alice, waiting_job_request()).await;
    let j2 = j2.unwrap();
    f.agent_result("a", result(&j2, Outcome::Passed))
        .await
        .unwrap();
    assert!(
        !resident(&f, &j1.id).await,
        "j1 has left memory: the registration reads it back"
    );
    let mut rx = reconnect(&f, vec![still_running(&j1)]).await;
    let msgs = sent(&mut rx);
    assert!(
        msgs.iter().any(|m| matches!(m, ToAgent::Registered { abandon_job_ids, .. } if abandon_job_ids.contains(&j1.id))),
        "{msgs:?}"
    );
    let j3 = f.submit_job(&alice, waiting_job_request()).await.unwrap();
    assert_eq!(
        j3.state,
        JobState::Queued,
        "the rig is held for the abandoned job"
    );
    f.agent_result("a", result(&j1, Outcome::Cancelled))
        .await
        .unwrap();
    // Confirmed: the drive ran a job the farm had let go of, so a health check runs before j3 gets it.
    let rig = f.rig("r1").await.unwrap();
    let hc2 = rig.lease.unwrap().job_id.unwrap();
    assert!(f.job(&hc2).await.unwrap().health_check, "{hc2}");
    assert_eq!(f.job(&j3.id).await.unwrap().state, JobState::Queued);
    f.agent_result("a", result(&f.job(&hc2).await.unwrap(), Outcome::Passed))
        .await
        .unwrap();
    assert_eq!(f.job(&j3.id).await.unwrap().state, JobState::Assigned);
}

#[tokio::test]
async fn restoring_an_offline_rig_that_is_still_reserved_keeps_it_held() {
    let t = tempfile::tempdir().unwrap();
    let f = quick_to_lose(t.path()).await;
    let _rx = reconnect(&f, vec![]).await;
    let hour = Duration::from_secs(3600);
    let r = f
        .reserve(
            &who("alice"),
            reservation(Selector::rig("r1"), Priority::Interactive, hour, false),
        )
        .await
        .unwrap();
    assert!(matches!(r, Reservation::Granted(_)));
    // Its agent's session is lost and the rig goes offline, still reserved; an operator quarantines it then.
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.tick().await.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Offline);
    let admin = Caller {
        name: "root".into(),
        role: Role::Admin,
    };
    f.set_rig_state(&admin, "r1", RigAction::Quarantine, "flaky cable")
        .await
        .unwrap();
    // The agent comes back (the rig stays quarantined) and the operator restores it: still the reservation's.
    let _rx = reconnect(&f, vec![]).await;
    let restored = f
        .set_rig_state(&admin, "r1", RigAction::Restore, "")
        .await
        .unwrap();
    assert_eq!(restored.state, RigState::Leased);
    let queued = f
        .reserve(
            &who("bob"),
            reservation(Selector::rig("r1"), Priority::Interactive, hour, true),
        )
        .await
        .unwrap();
    assert!(
        matches!(queued, Reservation::Queued { .. }),
        "never granted twice"
    );
}

#[tokio::test]
async fn a_rig_being_probed_takes_no_work_until_its_identity_arrives() {
    let t = tempfile::tempdir().unwrap();
    let f = Farm::open(cfg(t.path(), Duration::from_secs(3600)))
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let conn = f.agent_connected("a", tx).await;
    let reg = Registration {
        agent: "a".into(),
        rigs: ["r1", "r2"]
            .iter()
            .map(|n| AgentRig {
                name: n.to_string(),
                probing: true,
                ..Default::default()
            })
            .collect(),
        jobs: vec![],
        version: "test".into(),
    };
    f.agent_register("a", conn, reg).await.unwrap();
    assert_eq!(f.rig("r1").await.unwrap().rig.state, RigState::Probing);
    let hour = Duration::from_secs(3600);
    let e = f
        .reserve(
            &who("u"),
            reservation(Selector::rig("r1"), Priority::Ci, hour, false),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("r1 registered, its drive being probed"),
        "{e}"
    );
    let Reservation::Queued { request_id, .. } = f
        .reserve(
            &who("u"),
            reservation(Selector::rig("r1"), Priority::Ci, hour, true),
        )
        .await
        .unwrap()
    else {
        panic!("waits for the probe")
    };
    let answered = nvfarm_model::link::RigIdentity {
        rig: "r1".into(),
        drive_serial: "S1".into(),
        drive_model: "SIM".into(),
        firmware_revision: "1.0.0".into(),
        answered: true,
    };
    f.agent_identity("a", conn, answered).await.unwrap();
    let r1 = f.rig("r1").await.unwrap();
    assert_eq!(r1.rig.drive_serial, "S1");
    assert_eq!(
        r1.lease.map(|l| l.request_id),
        Some(Some(request_id)),
        "the waiting request got r1 as soon as it was probed"
    );
    let silent = nvfarm_model::link::RigIdentity {
        rig: "r2".into(),
        ..Default::default()
    };
    f.agent_identity("a", conn, silent).await.unwrap();
    let r2 = f.rig("r2").await.unwrap().rig;
    assert_eq!(r2.state, RigState::Idle);
    assert!(r2.reason.contains("did not answer"), "{}", r2.reason);
    f.audit().await.unwrap();
}

#[tokio::test]
async fn the_tick_looks_at_deadlines_only_when_one_is_due_or_a_change_touched_one() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(3600), 2).await;
    assert!(f.tick().await.unwrap(), "the first tick looks");
    assert!(
        !f.tick().await.unwrap(),
        "nothing changed and nothing is due: the tick does not scan"
    );
    f.reserve(
        &who("u"),
        reservation(
            Selector::rig("r1"),
            Priority::Ci,
            Duration::from_secs(1),
            false,
        ),
    )
    .await
    .unwrap();
    assert!(f.tick().await.unwrap(), "a new lease: the tick looks again");
    assert!(!f.tick().await.unwrap(), "and then waits for its end");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(f.tick().await.unwrap(), "its end is due");
    assert!(f.rig("r1").await.unwrap().lease.is_none(), "and it expired");
    f.audit().await.unwrap();
}

/// Whether job `id` is in the controller's memory (rather than only in its store).
async fn resident(f: &Farm, id: &str) -> bool {
    f.state.lock().await.jobs.contains_key(id)
}

#[tokio::test]
async fn a_finished_job_leaves_memory_and_every_query_and_agent_message_still_finds_it_in_the_store(
) {
    let t = tempfile::tempdir().unwrap();
    let alice = who("alice");
    let (done, running) = {
        let (f, mut rx) = farm(t.path(), Duration::from_secs(60), 2).await;
        let j1 = f.submit_job(&alice, job_request()).await.unwrap();
        f.agent_progress(
            "a",
            nvfarm_model::link::JobProgress {
                job_id: j1.id.clone(),
                fencing_token: j1.fencing_token,
                phase: Some(JobState::Testing),
                lines: (0..3)
                    .map(|i| nvfarm_model::LogLine {
                        step: 1,
                        text: format!("line {i}"),
                    })
                    .collect(),
                steps: vec![],
            },
        )
        .await
        .unwrap();
        assert!(resident(&f, &j1.id).await, "a running job is in memory");
        let mut r = result(&j1, Outcome::Passed);
        r.steps = vec![finished_step(1, Outcome::Passed)];
        f.agent_result("a", r.clone()).await.unwrap();
        assert!(
            !resident(&f, &j1.id).await,
            "a finished, settled job leaves memory"
        );
        let stored = f.job(&j1.id).await.unwrap();
        assert_eq!(stored.state, JobState::Passed);
        assert_eq!(stored.steps, vec![finished_step(1, Outcome::Passed)]);
        assert_eq!(stored.log_lines, 3);
        assert_eq!(f.logs(&j1.id, 0).unwrap().len(), 3);
        // Listings and counts include it.
        let listed = f
            .jobs(&JobFilter {
                rig: Some("r1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, vec![stored.clone()]);
        assert_eq!(f.metrics().await.jobs[&JobState::Passed], 1);
        // A cancel of it says it had finished, and leaves it out of memory.
        let e = f.cancel_job(&alice, &j1.id).await.unwrap_err().to_string();
        assert!(e.contains("had already finished (passed"), "{e}");
        assert!(!resident(&f, &j1.id).await);
        // The agent sending its result again is told it is stored; nothing changes.
        sent(&mut rx);
        f.agent_result("a", r).await.unwrap();
        assert!(sent(&mut rx)
            .iter()
            .any(|m| matches!(m, ToAgent::Stored { job_id } if *job_id == j1.id)));
        assert_eq!(f.job(&j1.id).await.unwrap(), stored);
        assert!(!resident(&f, &j1.id).await);
        let j2 = f
            .submit_job(
                &alice,
                JobRequest {
                    selector: Selector::rig("r2"),
                    ..job_request()
                },
            )
            .await
            .unwrap();
        f.audit().await.unwrap();
        (stored, j2)
    };
    // A restart loads only what is still going on; the finished job is counted and read from the store.
    let f = Farm::open(cfg(t.path(), Duration::from_secs(60)))
        .await
        .unwrap();
    let ids: Vec<String> = f.state.lock().await.jobs.keys().cloned().collect();
    assert_eq!(ids, vec![running.id.clone()]);
    assert_eq!(f.metrics().await.jobs[&JobState::Passed], 1);
    assert_eq!(f.job(&done.id).await.unwrap(), done);
    let all: Vec<String> = f
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(all, vec![running.id.clone(), done.id.clone()]);
    let newest = f
        .jobs(&JobFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].id, running.id);
    f.audit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_flushes_and_each_is_on_disk_when_acknowledged() {
    let t = tempfile::tempdir().unwrap();
    let (f, _rx) = farm(t.path(), Duration::from_secs(60), 32).await;
    let before = f.metrics().await;
    let hour = Duration::from_secs(3600);
    let mut tasks = vec![];
    for i in 1..=32 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let who = who(&format!("c{i}"));
            let sel = Selector::rig(&format!("r{i}"));
            let mut leases = vec![];
            for _ in 0..10 {
                let Reservation::Granted(l) = f
                    .reserve(&who, reservation(sel.clone(), Priority::Ci, hour, false))
                    .await
                    .unwrap()
                else {
                    panic!("r{i} is this client's alone")
                };
                f.release(&who, &l.id).await.unwrap();
                leases.push(l.id);
            }
            leases
        }));
    }
    let mut acked = vec![];
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let after = f.metrics().await;
    let commits = after.commits - before.commits;
    let flushes = after.store_flushes - before.store_flushes;
    assert_eq!(commits, 640, "one commit per reserve and per release");
    assert!(
        flushes < commits,
        "{flushes} flushes for {commits} concurrent commits: changes waiting together share a flush"
    );
    f.audit().await.unwrap();
    // Every acknowledged change is on disk: a restart (as after kill -9) finds every lease released, and the
    // id counter past every lease handed out.
    drop(f);
    let f = Farm::open(cfg(t.path(), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(f.metrics().await.leases, 0);
    let seq = f.state.lock().await.seq;
    for id in acked {
        let n: u64 = id.trim_start_matches("lease-").parse().unwrap();
        assert!(
            n <= seq,
            "{id} was handed out before the stored counter {seq}"
        );
    }
}
