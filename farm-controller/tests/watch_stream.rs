//! A waiting client's stream (`WatchRequest`, called on the service in-process) carries an update only when its
//! own request moves: reserve and release cycles on other rigs send it nothing, a competing request ahead of it
//! going away moves it up, and the grant ends it.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Request;

use farm_controller::auth::Caller;
use farm_controller::config::{Config, Role};
use farm_controller::core::Farm;
use farm_controller::grpc::FarmService;
use nvfarm_model::link::{AgentRig, Registration};
use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::farm_server::Farm as FarmApi;

fn as_user<T>(name: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(Caller {
        name: name.into(),
        role: Role::User,
    });
    r
}

async fn farm(dir: &std::path::Path) -> Arc<Farm> {
    let f = Farm::open(Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    let conn = f.agent_connected("a", tx).await;
    let reg = Registration {
        agent: "a".into(),
        rigs: (1..=3)
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
    f
}

fn reserve(rig: &str, wait: bool) -> pb::ReserveRequest {
    pb::ReserveRequest {
        selector: Some(pb::Selector {
            rig: rig.into(),
            ..Default::default()
        }),
        duration_ms: 3_600_000,
        wait,
        ..Default::default()
    }
}

async fn reserve_now(svc: &FarmService, who: &str, rig: &str) -> String {
    let r = svc
        .reserve(as_user(who, reserve(rig, false)))
        .await
        .unwrap()
        .into_inner();
    r.lease.expect("granted at once").id
}

async fn queue(svc: &FarmService, who: &str, rig: &str) -> String {
    let r = svc
        .reserve(as_user(who, reserve(rig, true)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.lease.is_none(), "{who} should wait for {rig}");
    r.request_id
}

/// The stream's next update (bounded, so a missing one fails the test instead of hanging it).
async fn next_update(
    stream: &mut (impl tokio_stream::Stream<Item = Result<pb::RequestUpdate, tonic::Status>> + Unpin),
    what: &str,
) -> pb::RequestUpdate {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap_or_else(|_| panic!("no update within 30 s: expected {what}"))
        .expect("the stream ended")
        .expect("an update, not an error")
}

#[tokio::test]
async fn a_watcher_hears_only_about_its_own_request() {
    let t = tempfile::tempdir().unwrap();
    let f = farm(t.path()).await;
    let svc = FarmService { farm: f.clone() };
    let held = reserve_now(&svc, "alice", "r1").await;
    let bob = queue(&svc, "bob", "r1").await;
    let carol = queue(&svc, "carol", "r1").await;
    // Someone waits for r2 too, so cycles there change other requests' reasons, never carol's.
    let _r2 = reserve_now(&svc, "dan", "r2").await;
    let _erin = queue(&svc, "erin", "r2").await;

    let mut stream = svc
        .watch_request(as_user(
            "carol",
            pb::WatchRequestRequest {
                request_id: carol.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next_update(&mut stream, "the first update").await;
    assert_eq!(first.position, 2, "bob is ahead: {first:?}");
    assert!(
        first.waiting_because.contains("r1 reserved by alice"),
        "{first:?}"
    );

    // Unrelated work: r3 reserved and released, r2's waiter moved around.
    for _ in 0..20 {
        let l = reserve_now(&svc, "frank", "r3").await;
        svc.release(as_user(
            "frank",
            pb::ReleaseRequest {
                lease_id: l.clone(),
            },
        ))
        .await
        .unwrap();
    }
    // Bob gives up: carol is next. The very next update must say so (no repeats of position 2 in between).
    svc.cancel_request(as_user("bob", pb::CancelRequestRequest { request_id: bob }))
        .await
        .unwrap();
    let next = next_update(&mut stream, "an update after bob's cancel").await;
    assert_eq!(
        next.position, 1,
        "the first update after 20 unrelated cycles is carol's own move: {next:?}"
    );

    svc.release(as_user("alice", pb::ReleaseRequest { lease_id: held }))
        .await
        .unwrap();
    let granted = next_update(&mut stream, "the grant").await;
    assert_eq!(
        granted.lease.as_ref().map(|l| l.rig.as_str()),
        Some("r1"),
        "{granted:?}"
    );
}
