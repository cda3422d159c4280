//! The Farm gRPC service: what farmctl calls.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::farm_server::Farm as FarmApi;

use crate::auth::{caller, require, CLIENTS};
use crate::model::*;
use crate::state::{now_ms, Event, Farm, Reservation};
use crate::sweep;

/// Largest artifact accepted (firmware images are tens of MiB).
pub const MAX_ARTIFACT: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct FarmService {
    pub farm: Arc<Farm>,
}

/// A server-streaming response.
pub type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn rig_pb(st: &crate::state::State, r: &RigRecord) -> pb::Rig {
    let lease = r.lease_id.as_ref().and_then(|l| st.leases.get(l));
    pb::Rig {
        name: r.name.clone(),
        agent: r.agent.clone(),
        labels: r.labels.clone().into_iter().collect(),
        state: r.state.to_pb() as i32,
        drive_serial: r.drive_serial.clone(),
        drive_model: r.drive_model.clone(),
        firmware_revision: r.firmware_revision.clone(),
        reason: r.reason.clone(),
        lease_id: r.lease_id.clone().unwrap_or_default(),
        holder: lease.map(|l| l.holder.clone()).unwrap_or_default(),
        lease_expires_ms: lease
            .filter(|l| l.kind == LeaseKind::Reservation)
            .map(|l| l.expires_ms)
            .unwrap_or(0),
        consecutive_infra_errors: r.consecutive_infra_errors,
        health_check_pending: r.health_check_pending,
    }
}

fn duration_ms(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

#[tonic::async_trait]
impl FarmApi for FarmService {
    async fn list_rigs(
        &self,
        req: Request<pb::ListRigsRequest>,
    ) -> Result<Response<pb::ListRigsResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "listing rigs")?;
        let sel = Selector {
            rig: None,
            labels: req.get_ref().labels.clone().into_iter().collect(),
        };
        let st = self.farm.state.lock().await;
        let rigs = st
            .rigs
            .values()
            .filter(|r| sel.matches(r))
            .map(|r| rig_pb(&st, r))
            .collect();
        Ok(Response::new(pb::ListRigsResponse { rigs }))
    }

    async fn reserve(
        &self,
        req: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "reserving a rig")?;
        let r = req.into_inner();
        let selector = Selector::from_pb(r.selector.as_ref());
        let class = if r.priority == 0 {
            Class::Interactive
        } else {
            Class::from_pb(r.priority)
        };
        let res = self
            .farm
            .reserve(
                &c,
                selector,
                class,
                duration_ms(r.duration_ms, Duration::from_secs(3600)),
                r.wait,
            )
            .await?;
        Ok(Response::new(match res {
            Reservation::Granted(l) => pb::ReserveResponse {
                lease: Some(l.to_pb()),
                ..Default::default()
            },
            Reservation::Queued {
                request_id,
                position,
                waiting_because,
            } => pb::ReserveResponse {
                lease: None,
                request_id,
                position,
                waiting_because,
            },
        }))
    }

    type WatchRequestStream = Stream2<pb::RequestUpdate>;

    async fn watch_request(
        &self,
        req: Request<pb::WatchRequestRequest>,
    ) -> Result<Response<Self::WatchRequestStream>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "watching a request")?;
        let id = req.into_inner().request_id;
        let farm = self.farm.clone();
        let mut rx = farm.events.subscribe();
        let out = async_stream(move |tx| async move {
            loop {
                let update = {
                    let st = farm.state.lock().await;
                    let now = now_ms();
                    if let Some(r) = st.requests.get(&id) {
                        Some(pb::RequestUpdate {
                            request_id: id.clone(),
                            position: st.position(&id, now, farm.cfg.aging),
                            waiting_because: st.waiting_because(r, now, farm.cfg.aging),
                            ..Default::default()
                        })
                    } else if let Some(lease) = st.grants.get(&id).and_then(|l| st.leases.get(l)) {
                        let u = pb::RequestUpdate {
                            request_id: id.clone(),
                            lease: Some(lease.to_pb()),
                            ..Default::default()
                        };
                        let _ = tx.send(Ok(u)).await;
                        return;
                    } else {
                        let u = pb::RequestUpdate { request_id: id.clone(), ended: "the request is no longer waiting (cancelled, or its lease already ended)".into(), ..Default::default() };
                        let _ = tx.send(Ok(u)).await;
                        return;
                    }
                };
                if tx.send(Ok(update.expect("set"))).await.is_err() {
                    return;
                }
                // Wake on any change, or every few seconds to refresh the reason.
                let _ = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            }
        });
        Ok(Response::new(out))
    }

    async fn cancel_request(
        &self,
        req: Request<pb::CancelRequestRequest>,
    ) -> Result<Response<pb::CancelRequestResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "cancelling a request")?;
        self.farm
            .cancel_request(&c, &req.get_ref().request_id)
            .await?;
        Ok(Response::new(pb::CancelRequestResponse {}))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "releasing a lease")?;
        let l = self.farm.release(&c, &req.get_ref().lease_id).await?;
        Ok(Response::new(pb::ReleaseResponse {
            lease: Some(l.to_pb()),
        }))
    }

    async fn extend(&self, req: Request<pb::ExtendRequest>) -> Result<Response<pb::Lease>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "extending a lease")?;
        let r = req.into_inner();
        let l = self
            .farm
            .extend(
                &c,
                &r.lease_id,
                duration_ms(r.duration_ms, Duration::from_secs(3600)),
            )
            .await?;
        Ok(Response::new(l.to_pb()))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::ArtifactInfo>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "uploading an artifact")?;
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty upload"))??;
        let sha = first.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(
                "the first chunk must carry the artifact's sha256 (64 hex digits)",
            ));
        }
        if first.size == 0 || first.size > MAX_ARTIFACT {
            return Err(Status::invalid_argument(format!(
                "artifact size {} must be between 1 byte and {MAX_ARTIFACT}",
                first.size
            )));
        }
        let name = first.name.clone();
        let existed = self.farm.state.lock().await.artifacts.contains_key(&sha);
        if existed {
            return Ok(Response::new(pb::ArtifactInfo {
                sha256: sha,
                size: first.size,
                name,
                existed: true,
            }));
        }
        let store = &self.farm.store;
        let tmp = store
            .artifacts_dir()
            .join(format!(".upload-{}-{}", sha, now_ms()));
        let io = |e: std::io::Error| Status::internal(format!("writing the artifact: {e}"));
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut chunk = Some(first);
        let size = chunk.as_ref().map(|c| c.size).unwrap_or(0);
        let result: Result<(), Status> = async {
            while let Some(c) = chunk.take() {
                if c.offset != written {
                    return Err(Status::invalid_argument(format!(
                        "chunk at offset {} but {written} bytes received so far",
                        c.offset
                    )));
                }
                written += c.data.len() as u64;
                if written > size {
                    return Err(Status::invalid_argument(format!(
                        "more data than the announced {size} bytes"
                    )));
                }
                hasher.update(&c.data);
                f.write_all(&c.data).await.map_err(io)?;
                chunk = stream.next().await.transpose()?;
            }
            if written != size {
                return Err(Status::invalid_argument(format!(
                    "upload ended after {written} of {size} bytes"
                )));
            }
            let got = hex::encode(hasher.finalize_reset());
            if got != sha {
                return Err(Status::invalid_argument(format!(
                    "sha256 mismatch: the data hashes to {got}, the upload said {sha}"
                )));
            }
            f.sync_all().await.map_err(io)?;
            tokio::fs::rename(&tmp, store.artifact_path(&sha))
                .await
                .map_err(io)?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.farm
            .put_artifact(ArtifactRecord {
                sha256: sha.clone(),
                size,
                name: name.clone(),
                stored_ms: now_ms(),
            })
            .await?;
        tracing::info!(sha256 = sha, size, name, by = c.name, "artifact stored");
        Ok(Response::new(pb::ArtifactInfo {
            sha256: sha,
            size,
            name,
            existed: false,
        }))
    }

    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "submitting a job")?;
        let r = req.into_inner();
        let job = self
            .farm
            .submit_job(
                &c,
                Selector::from_pb(r.selector.as_ref()),
                r.plan_toml,
                r.artifact_sha256.to_ascii_lowercase(),
                r.firmware_name,
                duration_ms(r.timeout_ms, Duration::from_secs(3600)),
                if r.priority == 0 {
                    Class::Ci
                } else {
                    Class::from_pb(r.priority)
                },
                (!r.sweep_id.is_empty()).then_some(r.sweep_id),
            )
            .await?;
        Ok(Response::new(job.to_pb(false)))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "reading a job")?;
        let st = self.farm.state.lock().await;
        let job = st
            .jobs
            .get(&req.get_ref().id)
            .ok_or_else(|| Status::not_found(format!("no job {}", req.get_ref().id)))?;
        Ok(Response::new(job.to_pb(true)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "listing jobs")?;
        let r = req.into_inner();
        let st = self.farm.state.lock().await;
        let limit = if r.limit == 0 { 50 } else { r.limit as usize };
        let mut jobs: Vec<&JobRecord> = st
            .jobs
            .values()
            .filter(|j| r.rig.is_empty() || j.rig.as_deref() == Some(r.rig.as_str()))
            .filter(|j| r.sweep_id.is_empty() || j.sweep_id.as_deref() == Some(r.sweep_id.as_str()))
            .collect();
        jobs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs
                .into_iter()
                .take(limit)
                .map(|j| j.to_pb(false))
                .collect(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "cancelling a job")?;
        let j = self.farm.cancel_job(&c, &req.get_ref().id).await?;
        Ok(Response::new(j.to_pb(false)))
    }

    type WatchJobStream = Stream2<pb::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "watching a job")?;
        let r = req.into_inner();
        let farm = self.farm.clone();
        if !farm.state.lock().await.jobs.contains_key(&r.id) {
            return Err(Status::not_found(format!("no job {}", r.id)));
        }
        let mut rx = farm.events.subscribe();
        let out = async_stream(move |tx| async move {
            let mut next_line = r.from_line;
            let mut last_state = None;
            loop {
                // Log lines first, then the job's state: a watcher sees every line before the end.
                match farm.store.logs(&r.id, next_line) {
                    Ok(lines) => {
                        for (n, line) in lines {
                            next_line = n + 1;
                            if tx
                                .send(Ok(pb::JobEvent {
                                    line_no: n,
                                    line,
                                    job: None,
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                let job = farm.state.lock().await.jobs.get(&r.id).cloned();
                let Some(job) = job else { return };
                let snapshot = (job.state, job.steps.len(), job.rig.clone());
                if last_state.as_ref() != Some(&snapshot) {
                    last_state = Some(snapshot);
                    if tx
                        .send(Ok(pb::JobEvent {
                            line_no: 0,
                            line: String::new(),
                            job: Some(job.to_pb(false)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !r.follow || job.state.is_terminal() {
                    return;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                        Ok(Ok(Event::Job(id) | Event::Log(id))) if id == r.id => break,
                        Ok(Ok(_)) => continue,
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
            }
        });
        Ok(Response::new(out))
    }

    async fn queue(
        &self,
        req: Request<pb::QueueRequest>,
    ) -> Result<Response<pb::QueueResponse>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "reading the queue")?;
        let st = self.farm.state.lock().await;
        let now = now_ms();
        let entries = st
            .ordered_requests(now, self.farm.cfg.aging)
            .iter()
            .enumerate()
            .map(|(i, r)| pb::QueueEntry {
                request_id: r.id.clone(),
                position: i as u32 + 1,
                priority: r.class.to_pb() as i32,
                selector: Some(r.selector.to_pb()),
                holder: r.holder.clone(),
                created_ms: r.created_ms,
                job_id: r.job_id.clone().unwrap_or_default(),
                waiting_because: st.waiting_because(r, now, self.farm.cfg.aging),
            })
            .collect();
        Ok(Response::new(pb::QueueResponse { entries }))
    }

    async fn submit_sweep(
        &self,
        req: Request<pb::SubmitSweepRequest>,
    ) -> Result<Response<pb::Sweep>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "submitting a sweep")?;
        let r = req.into_inner();
        let s = self
            .farm
            .submit_sweep(
                &c,
                r.name,
                r.labels.into_iter().collect::<BTreeMap<_, _>>(),
                r.plan_toml,
                r.artifact_sha256.to_ascii_lowercase(),
                r.firmware_name,
                duration_ms(r.timeout_ms, Duration::from_secs(3600)),
                if r.priority == 0 {
                    Class::Nightly
                } else {
                    Class::from_pb(r.priority)
                },
                r.retries,
            )
            .await?;
        let st = self.farm.state.lock().await;
        Ok(Response::new(sweep::sweep_pb(&st, &s)))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "reading a sweep")?;
        let r = req.into_inner();
        let st = self.farm.state.lock().await;
        let s = st
            .sweeps
            .get(&r.id)
            .ok_or_else(|| Status::not_found(format!("no sweep {}", r.id)))?;
        let threshold = if r.regression_threshold_pct <= 0.0 {
            25.0
        } else {
            r.regression_threshold_pct
        };
        Ok(Response::new(sweep::report(&st, s, threshold)))
    }

    async fn set_rig_state(
        &self,
        req: Request<pb::SetRigStateRequest>,
    ) -> Result<Response<pb::Rig>, Status> {
        let c = caller(&req)?;
        require(&c, &[crate::config::Role::User], "changing a rig's state")?;
        let r = req.into_inner();
        let rec = self
            .farm
            .set_rig_state(&c, &r.rig, &r.action, &r.reason)
            .await?;
        let st = self.farm.state.lock().await;
        Ok(Response::new(rig_pb(&st, &rec)))
    }
}

/// A response stream fed by a task through a bounded channel.
pub fn async_stream<T, F, Fut>(f: F) -> Stream2<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
