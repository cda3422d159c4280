//! The firmware cache: artifacts fetched from the controller in chunks, checked against their sha256, and kept
//! under the work directory by hash.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

use nvfarm_proto::v1 as pb;

use super::{AgentError, Client, Shared};

/// Downloads (or finds in the cache) an artifact, verifying its sha256. Jobs on several rigs may fetch the same
/// artifact at once: each writes its own temporary file and the renames are idempotent.
pub(super) async fn fetch(
    shared: &Arc<Shared>,
    mut client: Client,
    sha: &str,
    job_id: &str,
) -> Result<PathBuf, AgentError> {
    let path = shared.spool.artifacts_dir().join(sha);
    if path.exists() {
        return Ok(path);
    }
    let mut s = client
        .fetch_artifact(pb::FetchArtifactRequest {
            sha256: sha.to_string(),
        })
        .await?
        .into_inner();
    let tmp = shared
        .spool
        .artifacts_dir()
        .join(format!(".{sha}.{job_id}.part"));
    let mut bytes = vec![];
    while let Some(chunk) = s.next().await {
        let c = chunk?;
        if c.offset != bytes.len() as u64 {
            return Err(AgentError::Artifact(format!(
                "chunk at offset {} after {} bytes",
                c.offset,
                bytes.len()
            )));
        }
        bytes.extend_from_slice(&c.data);
    }
    let got = hex::encode(Sha256::digest(&bytes));
    if got != sha {
        return Err(AgentError::Artifact(format!(
            "downloaded artifact hashes to {got}, expected {sha}"
        )));
    }
    let cache =
        |e: std::io::Error| AgentError::Artifact(format!("caching {}: {e}", path.display()));
    tokio::fs::write(&tmp, &bytes).await.map_err(cache)?;
    tokio::fs::rename(&tmp, &path).await.map_err(cache)?;
    Ok(path)
}
