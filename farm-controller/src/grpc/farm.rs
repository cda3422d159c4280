//! The Farm gRPC service: what farmctl calls. Each method checks the caller's role, converts the request to
//! domain types, calls the core, and converts the answer back.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use nvfarm_model::farm::{Artifact, JobState, Priority};
use nvfarm_model::time::now_ms;
use nvfarm_proto::convert::{self, sweep_pb};
use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::farm_server::Farm as FarmApi;

use super::status::wire;
use super::{caller, spawn_stream, ResponseStream};
use crate::auth::{require, CLIENTS, READERS};
use crate::core::{
    Farm, FarmEvent, JobFilter, JobRequest, RequestStatus, Reservation, ReserveRequest, RigAction,
    SweepRequest,
};

/// Largest artifact accepted (firmware images are tens of MiB).
pub const MAX_ARTIFACT: u64 = 4 << 30;

/// The Farm service.
#[derive(Debug, Clone)]
pub struct FarmService {
    /// The farm it serves.
    pub farm: Arc<Farm>,
}

fn duration_ms(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

fn priority(v: i32, field: &'static str, default: Priority) -> Result<Priority, Status> {
    Ok(convert::priority(v, field)
        .map_err(wire)?
        .unwrap_or(default))
}

#[tonic::async_trait]
impl FarmApi for FarmService {
    async fn list_rigs(
        &self,
        req: Request<pb::ListRigsRequest>,
    ) -> Result<Response<pb::ListRigsResponse>, Status> {
        require(&caller(&req)?, READERS, "listing rigs")?;
        let labels = req.into_inner().labels.into_iter().collect();
        let rigs = self
            .farm
            .rigs(&labels)
            .await
            .iter()
            .map(pb::Rig::from)
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
        let res = self
            .farm
            .reserve(
                &c,
                ReserveRequest {
                    selector: convert::selector(r.selector),
                    priority: priority(
                        r.priority,
                        "ReserveRequest.priority",
                        Priority::Interactive,
                    )?,
                    duration: duration_ms(r.duration_ms, Duration::from_secs(3600)),
                    wait: r.wait,
                    detach: r.detach,
                },
            )
            .await?;
        Ok(Response::new(match res {
            Reservation::Granted(l) => pb::ReserveResponse {
                lease: Some(pb::Lease::from(&l)),
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

    type WatchRequestStream = ResponseStream<pb::RequestUpdate>;

    async fn watch_request(
        &self,
        req: Request<pb::WatchRequestRequest>,
    ) -> Result<Response<Self::WatchRequestStream>, Status> {
        require(&caller(&req)?, CLIENTS, "watching a request")?;
        let id = req.into_inner().request_id;
        let farm = self.farm.clone();
        let out = spawn_stream(&self.farm, move |tx| async move {
            // While this stream lives, somebody waits for the request; when the client goes, the watch ends.
            let mut watch = farm.watching(&id).await;
            let mut last: Option<RequestStatus> = None;
            loop {
                let status = watch.status.borrow_and_update().clone();
                if last.as_ref() != Some(&status) {
                    last = Some(status.clone());
                    let update = match status {
                        RequestStatus::Waiting {
                            position,
                            waiting_because,
                        } => pb::RequestUpdate {
                            request_id: id.clone(),
                            position,
                            waiting_because,
                            ..Default::default()
                        },
                        RequestStatus::Granted(lease) => {
                            let u = pb::RequestUpdate {
                                request_id: id.clone(),
                                lease: Some(pb::Lease::from(&lease)),
                                ..Default::default()
                            };
                            if tx.send(Ok(u)).await.is_ok() {
                                if let Err(e) = farm.claim(&lease.id).await {
                                    tracing::warn!(
                                        lease = lease.id,
                                        "recording the claim failed: {e}"
                                    );
                                }
                            }
                            return;
                        }
                        RequestStatus::Ended(why) => {
                            let u = pb::RequestUpdate {
                                request_id: id.clone(),
                                ended: why,
                                ..Default::default()
                            };
                            let _ = tx.send(Ok(u)).await;
                            return;
                        }
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
                // Wake when this request's own status changes, every few seconds to let time move it (aging),
                // or when the client goes away.
                tokio::select! {
                    changed = watch.status.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(5)) => farm.refresh_watch(&id).await,
                    _ = tx.closed() => return,
                }
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
            lease: Some(pb::Lease::from(&l)),
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
        Ok(Response::new(pb::Lease::from(&l)))
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
        if self.farm.artifact(&sha).await.is_some() {
            return Ok(Response::new(pb::ArtifactInfo {
                sha256: sha,
                size: first.size,
                name,
                existed: true,
            }));
        }
        let tmp = self
            .farm
            .artifacts_dir()
            .join(format!(".upload-{}-{}", sha, now_ms()));
        let io = |e: std::io::Error| Status::internal(format!("writing the artifact: {e}"));
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let size = first.size;
        let mut chunk = Some(first);
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
            tokio::fs::rename(&tmp, self.farm.artifact_path(&sha))
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
            .put_artifact(Artifact {
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
                JobRequest {
                    selector: convert::selector(r.selector),
                    plan_toml: r.plan_toml,
                    artifact_sha256: r.artifact_sha256.to_ascii_lowercase(),
                    firmware_name: r.firmware_name,
                    timeout: duration_ms(r.timeout_ms, Duration::from_secs(3600)),
                    priority: priority(r.priority, "SubmitJobRequest.priority", Priority::Ci)?,
                    sweep_id: (!r.sweep_id.is_empty()).then_some(r.sweep_id),
                    wait: r.wait,
                },
            )
            .await?;
        Ok(Response::new(summary(pb::Job::from(&job))))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        require(&caller(&req)?, READERS, "reading a job")?;
        let job = self.farm.job(&req.get_ref().id).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        require(&caller(&req)?, READERS, "listing jobs")?;
        let r = req.into_inner();
        let jobs = self
            .farm
            .jobs(&JobFilter {
                rig: (!r.rig.is_empty()).then_some(r.rig),
                sweep_id: (!r.sweep_id.is_empty()).then_some(r.sweep_id),
                build: (!r.build.is_empty()).then_some(r.build),
                drive_model: (!r.drive_model.is_empty()).then_some(r.drive_model),
                plan: (!r.plan.is_empty()).then_some(r.plan),
                since_ms: (r.since_ms > 0).then_some(r.since_ms),
                until_ms: (r.until_ms > 0).then_some(r.until_ms),
                offset: r.offset as usize,
                limit: if r.limit == 0 { 50 } else { r.limit as usize },
            })
            .await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(|j| summary(pb::Job::from(j))).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        require(&c, CLIENTS, "cancelling a job")?;
        let j = self.farm.cancel_job(&c, &req.get_ref().id).await?;
        Ok(Response::new(summary(pb::Job::from(&j))))
    }

    type WatchJobStream = ResponseStream<pb::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        require(&caller(&req)?, READERS, "watching a job")?;
        let r = req.into_inner();
        let farm = self.farm.clone();
        farm.job(&r.id).await?;
        let mut rx = farm.subscribe();
        let out = spawn_stream(&self.farm, move |tx| async move {
            let mut next_line = r.from_line;
            let mut last_state = None;
            loop {
                // Log lines first, then the job's state: a watcher sees every line before the end.
                match farm.logs(&r.id, next_line) {
                    Ok(lines) => {
                        for (n, line) in lines {
                            next_line = n + 1;
                            let ev = pb::JobEvent {
                                line_no: n,
                                line: line.text,
                                step: line.step,
                                ..Default::default()
                            };
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                let Ok(job) = farm.job(&r.id).await else {
                    return;
                };
                let waiting = if job.state == JobState::Queued {
                    farm.job_waiting(&job.id).await
                } else {
                    None
                };
                let snapshot = (
                    job.state,
                    job.steps.len(),
                    job.rig.clone(),
                    job.settled,
                    waiting,
                );
                if last_state.as_ref() != Some(&snapshot) {
                    let (position, waiting_because) = snapshot.4.clone().unwrap_or_default();
                    last_state = Some(snapshot);
                    let ev = pb::JobEvent {
                        job: Some(summary(pb::Job::from(&job))),
                        position,
                        waiting_because,
                        ..Default::default()
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                // A stopped job's stream goes on until its agent confirmed (or the controller gave up on it):
                // the steps it ran arrive with the confirmation.
                if !r.follow || (job.state.is_terminal() && job.settled) {
                    return;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                        Ok(Ok(FarmEvent::Job(id) | FarmEvent::Log(id))) if id == r.id => break,
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
        require(&caller(&req)?, READERS, "reading the queue")?;
        let entries = self
            .farm
            .queue()
            .await
            .iter()
            .map(pb::QueueEntry::from)
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
                SweepRequest {
                    name: r.name,
                    labels: r.labels.into_iter().collect(),
                    plan_toml: r.plan_toml,
                    artifact_sha256: r.artifact_sha256.to_ascii_lowercase(),
                    firmware_name: r.firmware_name,
                    timeout: duration_ms(r.timeout_ms, Duration::from_secs(3600)),
                    priority: priority(
                        r.priority,
                        "SubmitSweepRequest.priority",
                        Priority::Nightly,
                    )?,
                    retries: r.retries,
                },
            )
            .await?;
        Ok(Response::new(sweep_pb(&s, false)))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        require(&caller(&req)?, READERS, "reading a sweep")?;
        let r = req.into_inner();
        let t = r.regression_threshold_pct;
        let threshold = if t == 0.0 {
            25.0
        } else if t.is_finite() && t > 0.0 && t <= 10_000.0 {
            t
        } else {
            return Err(Status::invalid_argument(format!(
                "regression_threshold_pct {t}: must be a percentage above 0 (0 means the default, 25)"
            )));
        };
        let report = self.farm.sweep_report(&r.id, threshold).await?;
        Ok(Response::new(pb::SweepReport::from(&report)))
    }

    async fn list_sweeps(
        &self,
        req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        require(&caller(&req)?, READERS, "listing sweeps")?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 50,
            n if n as usize <= crate::core::MAX_JOBS_PAGE => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is more than one page holds (at most {}; page with offset)",
                    crate::core::MAX_JOBS_PAGE
                )))
            }
        };
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let sweeps = self.farm.sweeps_named(name).await;
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: sweeps
                .iter()
                .skip(r.offset as usize)
                .take(limit)
                .map(|(s, done)| nvfarm_proto::convert::sweep_pb(s, *done))
                .collect(),
        }))
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let c = caller(&req)?;
        require(&c, READERS, "listing leases")?;
        let mine = req.get_ref().mine;
        let leases = self.farm.leases(mine.then_some(c.name.as_str())).await;
        Ok(Response::new(pb::ListLeasesResponse {
            leases: leases.iter().map(pb::Lease::from).collect(),
        }))
    }

    async fn set_rig_state(
        &self,
        req: Request<pb::SetRigStateRequest>,
    ) -> Result<Response<pb::Rig>, Status> {
        let c = caller(&req)?;
        require(
            &c,
            &self.farm.config().rig_operators,
            "changing a rig's state (quarantine, maintenance, restore)",
        )?;
        let r = req.into_inner();
        let action: RigAction = r.action.parse().map_err(Status::invalid_argument)?;
        let rec = self
            .farm
            .set_rig_state(&c, &r.rig, action, &r.reason)
            .await?;
        let status = self.farm.rig(&rec.name).await?;
        Ok(Response::new(pb::Rig::from(&status)))
    }

    async fn move_rig(
        &self,
        req: Request<pb::MoveRigRequest>,
    ) -> Result<Response<pb::Rig>, Status> {
        let c = caller(&req)?;
        require(&c, &[], "moving a rig to another agent")?;
        let r = req.into_inner();
        let rec = self.farm.move_rig(&c, &r.rig, &r.agent).await?;
        let status = self.farm.rig(&rec.name).await?;
        Ok(Response::new(pb::Rig::from(&status)))
    }
}

/// A job without its plan text (lists and events stay small; `GetJob` carries the plan).
fn summary(mut j: pb::Job) -> pb::Job {
    j.plan_toml.clear();
    j
}
