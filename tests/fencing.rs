//! The agent side of fencing, against a fake controller that hands out tokens out of order (as a controller
//! restored from an old backup, or a partitioned one, might): the agent must refuse any assignment whose token is
//! not newer than the newest it accepted for that rig, and remember that across restarts.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use nvfarm_tests::bin;

struct Fake {
    /// Every message agents send, in order.
    inbound: mpsc::UnboundedSender<pb::AgentMessage>,
    /// The controller side of the newest session.
    sessions: mpsc::UnboundedSender<mpsc::UnboundedSender<pb::ControllerMessage>>,
}

type Out = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ControllerMessage, Status>> + Send>,
>;

#[tonic::async_trait]
impl AgentLink for Fake {
    type SessionStream = Out;
    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut s = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Registered(pb::Registered {
                heartbeat_ms: 500,
                abandon_job_ids: vec![],
            })),
        })
        .unwrap();
        self.sessions.send(tx).unwrap();
        let inbound = self.inbound.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = s.next().await {
                let _ = inbound.send(m);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }
    type FetchArtifactStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>,
    >;
    async fn fetch_artifact(
        &self,
        _: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        Err(Status::not_found(
            "this fake controller stores no artifacts",
        ))
    }
}

fn assign(job: &str, token: u64) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Assign(pb::Assign {
            job_id: job.into(),
            rig: "f-r1".into(),
            fencing_token: token,
            plan_toml: "name = \"h\"\n[[step]]\nkind = \"smart\"\n".into(),
            timeout_ms: 60_000,
            ..Default::default()
        })),
    }
}

async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<pb::AgentMessage>,
    what: &str,
    f: impl Fn(&pb::AgentMessage) -> bool,
) -> pb::AgentMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} from the agent"))
            .expect("open");
        if f(&m) {
            return m;
        }
    }
}

fn agent(port: u16, dir: &std::path::Path) -> Child {
    Command::new(bin("bench-agent"))
        .args([
            "--controller",
            &format!("http://127.0.0.1:{port}"),
            "--rigs",
            dir.join("f.toml").to_str().unwrap(),
        ])
        .args(["--work-dir", dir.join("work").to_str().unwrap()])
        .env_remove("FARM_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_stale_fencing_tokens_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "[agent]\nname = \"f\"\n[[rig]]\nname = \"f-r1\"\ndrive = { sim = \"sim/r1\", size = \"16M\", boot_time = \"20ms\" }\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    let (sess_tx, mut sess_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentLinkServer::new(Fake {
                inbound: in_tx,
                sessions: sess_tx,
            }))
            .serve(format!("127.0.0.1:{port}").parse().unwrap()),
    );
    let mut a = agent(port, dir.path());
    let ctl = tokio::time::timeout(Duration::from_secs(30), sess_rx.recv())
        .await
        .expect("the agent connected")
        .unwrap();
    next_matching(&mut in_rx, "Register", |m| {
        matches!(m.msg, Some(pb::agent_message::Msg::Register(_)))
    })
    .await;

    ctl.send(assign("job-new", 10)).unwrap();
    let r = next_matching(
        &mut in_rx,
        "job-new's result",
        |m| matches!(&m.msg, Some(pb::agent_message::Msg::Result(r)) if r.job_id == "job-new"),
    )
    .await;
    let Some(pb::agent_message::Msg::Result(r)) = r.msg else {
        unreachable!()
    };
    assert_eq!(r.outcome, pb::Outcome::Passed as i32, "{r:?}");
    assert_eq!(r.fencing_token, 10);

    ctl.send(assign("job-old", 7)).unwrap();
    let m = next_matching(&mut in_rx, "a refusal", |m| {
        matches!(
            m.msg,
            Some(pb::agent_message::Msg::Refused(_)) | Some(pb::agent_message::Msg::Result(_))
        )
    })
    .await;
    let Some(pb::agent_message::Msg::Refused(refused)) = m.msg else {
        panic!("the stale assignment ran: {m:?}")
    };
    assert_eq!(refused.job_id, "job-old");
    assert!(
        refused.reason.contains("stale fencing token 7")
            && refused.reason.contains("already accepted token 10"),
        "{}",
        refused.reason
    );
    // Reusing the accepted token is refused too.
    ctl.send(assign("job-same", 10)).unwrap();
    let m = next_matching(&mut in_rx, "a refusal", |m| {
        matches!(
            m.msg,
            Some(pb::agent_message::Msg::Refused(_)) | Some(pb::agent_message::Msg::Result(_))
        )
    })
    .await;
    assert!(
        matches!(m.msg, Some(pb::agent_message::Msg::Refused(_))),
        "{m:?}"
    );

    // Restart the agent: the newest token survives, and it says so when it registers.
    let _ = a.kill();
    let _ = a.wait();
    let mut a = agent(port, dir.path());
    let ctl = tokio::time::timeout(Duration::from_secs(30), sess_rx.recv())
        .await
        .expect("the agent reconnected")
        .unwrap();
    let reg = next_matching(&mut in_rx, "Register", |m| {
        matches!(m.msg, Some(pb::agent_message::Msg::Register(_)))
    })
    .await;
    let Some(pb::agent_message::Msg::Register(reg)) = reg.msg else {
        unreachable!()
    };
    assert_eq!(reg.rigs[0].newest_token, 10);
    ctl.send(assign("job-older", 9)).unwrap();
    let m = next_matching(&mut in_rx, "a refusal", |m| {
        matches!(
            m.msg,
            Some(pb::agent_message::Msg::Refused(_)) | Some(pb::agent_message::Msg::Result(_))
        )
    })
    .await;
    assert!(
        matches!(m.msg, Some(pb::agent_message::Msg::Refused(_))),
        "{m:?}"
    );
    ctl.send(assign("job-newer", 11)).unwrap();
    let m = next_matching(
        &mut in_rx,
        "job-newer's result",
        |m| matches!(&m.msg, Some(pb::agent_message::Msg::Result(r)) if r.job_id == "job-newer"),
    )
    .await;
    let Some(pb::agent_message::Msg::Result(r)) = m.msg else {
        unreachable!()
    };
    assert_eq!(r.outcome, pb::Outcome::Passed as i32);
    let _ = a.kill();
    let _ = a.wait();
    server.abort();
}
