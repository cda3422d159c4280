//! The AgentLink gRPC service: one bidirectional stream per bench-agent, and artifact downloads.
//!
//! The first message on a stream must be `Register`. With tokens configured, an agent token named "bench-07" can
//! only register as agent "bench-07". Every message is decoded into the model's link types before the core sees
//! it; one that does not decode is logged and dropped.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use nvfarm_model::link::{FromAgent, ToAgent};
use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::agent_link_server::AgentLink;

use super::status::wire;
use super::{caller, spawn_stream, ResponseStream};
use crate::auth::require;
use crate::config::Role;
use crate::core::{Farm, FarmError};

/// The AgentLink service.
#[derive(Debug, Clone)]
pub struct AgentService {
    /// The farm it serves.
    pub farm: Arc<Farm>,
}

#[tonic::async_trait]
impl AgentLink for AgentService {
    type SessionStream = ResponseStream<pb::ControllerMessage>;

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
        let FromAgent::Register(reg) = FromAgent::try_from(first).map_err(wire)? else {
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
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ToAgent>();
        let conn = self.farm.agent_connected(&agent, tx).await;
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
                let msg = match FromAgent::try_from(msg) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(agent, "dropping a message that does not decode: {e}");
                        continue;
                    }
                };
                let r = match msg {
                    FromAgent::Heartbeat(hb) => {
                        farm.agent_heartbeat(&agent, conn, &hb).await;
                        Ok(())
                    }
                    FromAgent::Progress(p) => farm.agent_progress(&agent, p).await,
                    FromAgent::Result(r) => farm.agent_result(&agent, r).await,
                    FromAgent::Refused(r) => farm.agent_refused(&agent, r).await,
                    FromAgent::Identity(i) => farm.agent_identity(&agent, conn, i).await,
                    FromAgent::Register(_) => Err(FarmError::InvalidArgument(
                        "Register twice on one stream".into(),
                    )),
                };
                if let Err(e) = r {
                    tracing::error!(agent, "handling an agent message failed: {e}");
                }
            }
            farm.agent_disconnected(&agent, conn).await;
        });
        let out = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(|m| Ok(pb::ControllerMessage::from(&m)));
        Ok(Response::new(Box::pin(out)))
    }

    type FetchArtifactStream = ResponseStream<pb::ArtifactChunk>;

    async fn fetch_artifact(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        require(&caller(&req)?, &[Role::Agent], "downloading artifacts")?;
        let sha = req.into_inner().sha256;
        let rec = self
            .farm
            .artifact(&sha)
            .await
            .ok_or_else(|| Status::not_found(format!("no artifact {sha}")))?;
        let path = self.farm.artifact_path(&sha);
        let mut f = tokio::fs::File::open(&path).await.map_err(|e| {
            Status::data_loss(format!(
                "artifact {sha} is indexed but its file is unreadable: {e}"
            ))
        })?;
        Ok(Response::new(spawn_stream(
            &self.farm,
            move |tx| async move {
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
                    let first = offset == 0;
                    let chunk = pb::ArtifactChunk {
                        name: if first {
                            rec.name.clone()
                        } else {
                            String::new()
                        },
                        size: rec.size,
                        sha256: if first { sha.clone() } else { String::new() },
                        data: buf[..n].to_vec(),
                        offset,
                    };
                    offset += n as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            },
        )))
    }
}
