//! How big a target is: a regular file (extended, or created, to the size asked), a block device, or an NVMe
//! generic char device's namespace.

use super::spec::{Engine, IoError, IoSpec};
use super::uring_cmd;

/// Size of the target in bytes: a regular file's length (extended to `size` if asked), a block device's
/// capacity, or a generic char device's namespace size.
pub(crate) fn target_size(spec: &IoSpec) -> Result<u64, IoError> {
    use std::os::unix::fs::FileTypeExt;
    let path = &spec.target;
    if spec.engine == Engine::SimNvme {
        return super::sim_nvme::namespace_size(path);
    }
    let meta = std::fs::metadata(path);
    match meta {
        Ok(m) if m.file_type().is_char_device() => uring_cmd::namespace_size(path),
        Ok(m) if m.file_type().is_block_device() => {
            use std::io::Seek;
            let mut f = std::fs::File::open(path).map_err(|source| IoError::Open {
                path: path.clone(),
                source,
            })?;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })
        }
        Ok(m) if m.is_file() => {
            let want = spec
                .options
                .size
                .map(|s| s * spec.options.numjobs as u64)
                .unwrap_or(0);
            if m.len() < want {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| IoError::Open {
                        path: path.clone(),
                        source,
                    })?;
                f.set_len(want).map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })?;
                return Ok(want);
            }
            Ok(m.len())
        }
        Ok(_) => Err(IoError::Target {
            path: path.clone(),
            reason: "not a file, block device or NVMe generic char device".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match spec.options.size {
            Some(size) if spec.engine == Engine::Uring => {
                let f = std::fs::File::create(path).map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })?;
                f.set_len(size * spec.options.numjobs as u64)
                    .map_err(|source| IoError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(size * spec.options.numjobs as u64)
            }
            _ => Err(IoError::Open {
                path: path.clone(),
                source: e,
            }),
        },
        Err(source) => Err(IoError::Open {
            path: path.clone(),
            source,
        }),
    }
}
