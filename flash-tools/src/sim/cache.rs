//! The simulated drive's volatile write cache (`sim create --write-cache SIZE`; none by default): a Write
//! without FUA lands in `wcache.bin` and its range is remembered; reads see it; Flush, a write with FUA, a
//! completed shutdown notification, a command that rewrites media wholesale, or a full cache write it to
//! `ns1.img`. Losing power without a shutdown notification loses it, as a drive without power-loss protection
//! would, so a plan's read-verify after an unsafe power cut finds the writes that never reached the media.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use super::{Ctx, SimError, NAMESPACE_FILE};

/// The cache's data file in the drive's directory.
pub const CACHE_FILE: &str = "wcache.bin";

fn io(path: std::path::PathBuf) -> impl FnOnce(std::io::Error) -> SimError {
    move |source| SimError::Io { path, source }
}

/// Keeps `data` (blocks from `slba`) in the cache, writing the cache back first if it would overflow.
pub(super) fn put(ctx: &mut Ctx<'_>, slba: u64, data: &[u8]) -> Result<(), SimError> {
    let bs = ctx.st.namespace.block_size();
    let limit = ctx.st.namespace.write_cache_bytes;
    if ctx.st.namespace.cached_bytes() + data.len() as u64 > limit {
        write_back(ctx)?;
    }
    let path = ctx.dir.join(CACHE_FILE);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(path.clone()))?;
    let pos = f.metadata().map_err(io(path.clone()))?.len();
    f.write_all_at(data, pos).map_err(io(path))?;
    ctx.st
        .namespace
        .cached
        .push((slba, data.len() as u64 / bs, pos));
    Ok(())
}

/// Lays the cached writes over `buf` (blocks from `slba`), oldest first, so the newest wins.
pub(super) fn overlay(ctx: &Ctx<'_>, slba: u64, buf: &mut [u8]) -> Result<(), SimError> {
    if ctx.st.namespace.cached.is_empty() {
        return Ok(());
    }
    let bs = ctx.st.namespace.block_size();
    let nlb = buf.len() as u64 / bs;
    let path = ctx.dir.join(CACHE_FILE);
    let f = fs::File::open(&path).map_err(io(path.clone()))?;
    for &(s, n, pos) in &ctx.st.namespace.cached {
        let (from, to) = (s.max(slba), (s + n).min(slba + nlb));
        if from >= to {
            continue;
        }
        let dst = ((from - slba) * bs) as usize..((to - slba) * bs) as usize;
        f.read_exact_at(&mut buf[dst], pos + (from - s) * bs)
            .map_err(io(path.clone()))?;
    }
    Ok(())
}

/// Writes every cached write to the media, oldest first, and empties the cache.
pub(super) fn write_back(ctx: &mut Ctx<'_>) -> Result<(), SimError> {
    if ctx.st.namespace.cached.is_empty() {
        return Ok(());
    }
    let bs = ctx.st.namespace.block_size();
    let cpath = ctx.dir.join(CACHE_FILE);
    let npath = ctx.dir.join(NAMESPACE_FILE);
    let cache = fs::File::open(&cpath).map_err(io(cpath.clone()))?;
    let media = OpenOptions::new()
        .write(true)
        .open(&npath)
        .map_err(io(npath.clone()))?;
    let mut buf = vec![];
    for &(s, n, pos) in &ctx.st.namespace.cached {
        buf.resize((n * bs) as usize, 0);
        cache
            .read_exact_at(&mut buf, pos)
            .map_err(io(cpath.clone()))?;
        media
            .write_all_at(&buf, s * bs)
            .map_err(io(npath.clone()))?;
    }
    media.sync_data().map_err(io(npath))?;
    drop_all(ctx);
    Ok(())
}

/// Forgets the cached writes (power lost without a shutdown notification): they never reach the media.
pub(super) fn drop_all(ctx: &mut Ctx<'_>) {
    ctx.st.namespace.cached.clear();
    let _ = fs::remove_file(ctx.dir.join(CACHE_FILE));
}
