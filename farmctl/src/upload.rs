//! Sending a firmware image to the controller: in chunks (never one message), stored once by sha256.

use std::path::Path;

use sha2::{Digest, Sha256};

use nvfarm_proto::v1 as pb;

use crate::client::{CliError, Client, Result};
use crate::render::note;

/// An uploaded image: its sha256 and the file name it goes by.
pub struct Uploaded {
    /// sha256 of the bytes, hex.
    pub sha256: String,
    /// The file's name.
    pub name: String,
}

/// The build a plan runs with: uploads `path` if given (nothing is sent when the controller already has it); a
/// plan that flashes needs one.
pub async fn build(c: &mut Client, path: Option<&Path>, plan_flashes: bool) -> Result<Uploaded> {
    match path {
        Some(p) => firmware(c, p).await,
        None if plan_flashes => Err(CliError::usage(
            "the plan flashes firmware: give --firmware FILE",
        )),
        None => Ok(Uploaded {
            sha256: String::new(),
            name: String::new(),
        }),
    }
}

/// Uploads the image at `path` (nothing is sent when the controller already has it).
pub async fn firmware(c: &mut Client, path: &Path) -> Result<Uploaded> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::usage(format!("cannot read firmware {}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(CliError::usage(format!(
            "firmware {} is empty",
            path.display()
        )));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let size = bytes.len() as u64;
    let chunks: Vec<pb::ArtifactChunk> = bytes
        .chunks(nvfarm_proto::ARTIFACT_CHUNK)
        .enumerate()
        .map(|(i, d)| pb::ArtifactChunk {
            name: if i == 0 { name.clone() } else { String::new() },
            size,
            sha256: if i == 0 { sha.clone() } else { String::new() },
            data: d.to_vec(),
            offset: (i * nvfarm_proto::ARTIFACT_CHUNK) as u64,
        })
        .collect();
    let info = c
        .upload_artifact(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    note(format!(
        "firmware {name} ({size} bytes, sha256 {}) {}",
        &sha[..12],
        if info.existed {
            "already stored"
        } else {
            "uploaded"
        }
    ));
    Ok(Uploaded { sha256: sha, name })
}
