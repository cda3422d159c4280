//! The AgentLink gRPC service: one bidirectional stream per bench-agent, and artifact downloads.
//!
//! The first message on a stream must be `Register`. With tokens configured, an agent token named "bench-07" can
//! only register as agent "bench-07".

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::agent_link_server::AgentLink;

use crate::auth::{caller, require};
use crate::config::Role;
use crate::service_farm::{async_stream, Stream2};
use crate::state::Farm;

#[derive(Debug, Clone)]
pub struct AgentService {
    pub farm: Arc<Farm>,
}

#[tonic::async_trait]
impl AgentLink for AgentService {
    type SessionStream = Stream2<pb::ControllerMessage>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let c = caller(&req)?;
        require(&c, &[Role::Agent], "the agent link")?;
        let mut inbound = req.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("the stream closed before Register"))??;
        let Some(pb::agent_message::Msg::Register(reg)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message on the agent link must be Register",
            ));
        };
        let agent = reg.agent.clone();
        if agent.is_empty() {
            return Err(Status::invalid_argument("Register.agent is empty"));
        }
        if c.role == Role::Agent && c.name != agent {
            return Err(Status::permission_denied(format!(
                "this token belongs to agent '{}', not '{agent}'",
                c.name
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = self.farm.agent_connected(&agent, tx.clone()).await;
        self.farm.agent_register(&agent, conn, reg).await?;

        let farm = self.farm.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::info!(agent, "agent stream error: {e}");
                        break;
                    }
                };
                let r = match msg.msg {
                    Some(pb::agent_message::Msg::Heartbeat(hb)) => {
                        farm.agent_heartbeat(&agent, conn, &hb).await;
                        Ok(())
                    }
                    Some(pb::agent_message::Msg::Progress(p)) => {
                        farm.agent_progress(&agent, p).await
                    }
                    Some(pb::agent_message::Msg::Result(r)) => farm.agent_result(&agent, r).await,
                    Some(pb::agent_message::Msg::Refused(r)) => farm.agent_refused(&agent, r).await,
                    Some(pb::agent_message::Msg::Register(_)) => {
                        Err(Status::invalid_argument("Register twice on one stream"))
                    }
                    None => Ok(()),
                };
                if let Err(e) = r {
                    tracing::error!(agent, "handling an agent message failed: {e}");
                }
            }
            farm.agent_disconnected(&agent, conn).await;
        });
        let out = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }

    type FetchArtifactStream = Stream2<pb::ArtifactChunk>;

    async fn fetch_artifact(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let c = caller(&req)?;
        require(&c, &[Role::Agent], "downloading artifacts")?;
        let sha = req.into_inner().sha256;
        let rec = self
            .farm
            .state
            .lock()
            .await
            .artifacts
            .get(&sha)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no artifact {sha}")))?;
        let path = self.farm.store.artifact_path(&sha);
        let mut f = tokio::fs::File::open(&path).await.map_err(|e| {
            Status::data_loss(format!(
                "artifact {sha} is indexed but its file is unreadable: {e}"
            ))
        })?;
        Ok(Response::new(async_stream(move |tx| async move {
            let mut offset = 0u64;
            let mut buf = vec![0u8; nvfarm_proto::ARTIFACT_CHUNK];
            loop {
                let n = match f.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "reading artifact {sha}: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let chunk = pb::ArtifactChunk {
                    name: if offset == 0 {
                        rec.name.clone()
                    } else {
                        String::new()
                    },
                    size: rec.size,
                    sha256: if offset == 0 {
                        sha.clone()
                    } else {
                        String::new()
                    },
                    data: buf[..n].to_vec(),
                    offset,
                };
                offset += n as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        })))
    }
}
