//! NVM command set I/O on the simulated controller: Read, Write, Compare, Write Zeroes, Write Uncorrectable,
//! Dataset Management (deallocate) and Flush on namespace 1, backed by the sparse file `ns1.img`. Identify's
//! ONCS and the Commands Supported and Effects log list exactly these.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::faults::FaultKind;
use super::{cache, fail, Ctx, SimError, NAMESPACE_FILE};
use crate::transport::{Completion, Data};
use nvme_spec::command::io;
use nvme_spec::status::code;
use nvme_spec::{Command, Queue};

pub(super) fn execute(
    ctx: &mut Ctx<'_>,
    cmd: &Command,
    data: Data<'_>,
) -> Result<Completion, SimError> {
    if cmd.nsid != 1 {
        return Ok(fail(code::INVALID_NAMESPACE));
    }
    if ctx.st.firmware.running_failed {
        // The firmware booted into its failed state: the media path is down.
        return Ok(fail(code::INTERNAL_ERROR));
    }
    let path = ctx.dir.join(NAMESPACE_FILE);
    let io_err = |source| SimError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let bs = ctx.st.namespace.block_size();
    if cmd.opcode == io::FLUSH {
        cache::write_back(ctx)?;
        file.sync_data().map_err(io_err)?;
        ctx.st.dirty = false;
        return Ok(Completion::ok(0));
    }
    // Commands that change blocks other than by writing them see the cached writes land first.
    if matches!(
        cmd.opcode,
        io::DATASET_MANAGEMENT | io::WRITE_ZEROES | io::WRITE_UNCORRECTABLE
    ) {
        cache::write_back(ctx)?;
    }
    if cmd.opcode == io::DATASET_MANAGEMENT {
        return dataset_management(ctx, cmd, data, &file).map_err(io_err);
    }
    let (slba, nlb) = (cmd.slba(), cmd.nlb() as u64);
    if slba
        .checked_add(nlb)
        .is_none_or(|end| end > ctx.st.namespace.blocks())
    {
        return Ok(fail(code::LBA_OUT_OF_RANGE));
    }
    let (offset, len) = (slba * bs, nlb * bs);
    let started = std::time::Instant::now();
    let c = &mut ctx.st.counters;
    let completion = match (cmd.opcode, data) {
        (io::READ, Data::FromDevice(buf)) if buf.len() as u64 == len => {
            let bad = ctx.faults.faults.iter().find(|f| {
                f.kind == FaultKind::MediaError
                    && f.matches(Queue::Io, io::READ)
                    && f.lba
                        .is_some_and(|l| l < slba + nlb && slba < l + f.blocks.unwrap_or(1))
            });
            if bad.is_some() || ctx.st.namespace.uncorrectable_in(slba, nlb) {
                c.media_errors += 1;
                return Ok(fail(code::UNRECOVERED_READ_ERROR));
            }
            file.read_exact_at(buf, offset).map_err(io_err)?;
            cache::overlay(ctx, slba, buf)?;
            let c = &mut ctx.st.counters;
            c.bytes_read += len as u128;
            c.host_read_commands += 1;
            Completion::ok(0)
        }
        (io::WRITE, Data::ToDevice(buf)) if buf.len() as u64 == len => {
            ctx.st.sanitize_sstat &= !super::admin::SSTAT_GLOBAL_DATA_ERASED;
            let fua = cmd.cdw12 & (1 << 30) != 0;
            if ctx.st.namespace.write_cache_bytes > 0 && !fua {
                cache::put(ctx, slba, buf)?;
            } else {
                file.write_all_at(buf, offset).map_err(io_err)?;
                if fua {
                    file.sync_data().map_err(io_err)?;
                }
            }
            let c = &mut ctx.st.counters;
            c.bytes_written += len as u128;
            c.host_write_commands += 1;
            ctx.st.dirty = true;
            ctx.st.namespace.mark_uncorrectable(slba, nlb, false);
            Completion::ok(0)
        }
        (io::WRITE_UNCORRECTABLE, Data::None) => {
            ctx.st.namespace.mark_uncorrectable(slba, nlb, true);
            ctx.st.dirty = true;
            Completion::ok(0)
        }
        (io::COMPARE, Data::ToDevice(_)) if ctx.st.namespace.uncorrectable_in(slba, nlb) => {
            c.media_errors += 1;
            fail(code::UNRECOVERED_READ_ERROR)
        }
        (io::COMPARE, Data::ToDevice(buf)) if buf.len() as u64 == len => {
            let mut have = vec![0u8; len as usize];
            file.read_exact_at(&mut have, offset).map_err(io_err)?;
            cache::overlay(ctx, slba, &mut have)?;
            let c = &mut ctx.st.counters;
            c.bytes_read += len as u128;
            c.host_read_commands += 1;
            if have != buf {
                return Ok(fail(code::COMPARE_FAILURE));
            }
            Completion::ok(0)
        }
        (io::WRITE_ZEROES, Data::None) => {
            let zeros = vec![0u8; (len as usize).min(1 << 20)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], offset + done)
                    .map_err(io_err)?;
                done += n as u64;
            }
            c.host_write_commands += 1;
            ctx.st.dirty = true;
            ctx.st.namespace.mark_uncorrectable(slba, nlb, false);
            Completion::ok(0)
        }
        (io::READ | io::WRITE | io::COMPARE | io::WRITE_ZEROES | io::WRITE_UNCORRECTABLE, _) => {
            fail(code::INVALID_FIELD)
        }
        _ => fail(code::INVALID_OPCODE),
    };
    ctx.st.counters.busy_ms += started.elapsed().as_millis();
    ctx.st.add_heat(len, ctx.now);
    Ok(completion)
}

/// Dataset Management: the ranges in the data (CDW10 NR + 1 of them) must lie in the namespace; with AD
/// (CDW11 bit 2) they are deallocated: they read back as zeros (Identify Namespace DLFEAT = 1), the file's
/// space is given back, and blocks marked uncorrectable are good again. Without AD the attributes are hints.
fn dataset_management(
    ctx: &mut Ctx<'_>,
    cmd: &Command,
    data: Data<'_>,
    file: &std::fs::File,
) -> Result<Completion, std::io::Error> {
    let count = (cmd.cdw10 & 0xff) as usize + 1;
    let Data::ToDevice(buf) = data else {
        return Ok(fail(code::INVALID_FIELD));
    };
    let Some(ranges) = nvme_spec::DsmRange::decode(buf, count) else {
        return Ok(fail(code::INVALID_FIELD));
    };
    let blocks = ctx.st.namespace.blocks();
    if ranges.iter().any(|r| {
        r.slba
            .checked_add(r.blocks as u64)
            .is_none_or(|end| end > blocks)
    }) {
        return Ok(fail(code::LBA_OUT_OF_RANGE));
    }
    if cmd.cdw11 & (1 << 2) == 0 {
        return Ok(Completion::ok(0));
    }
    let bs = ctx.st.namespace.block_size();
    for r in ranges.iter().filter(|r| r.blocks > 0) {
        deallocate(file, r.slba * bs, r.blocks as u64 * bs)?;
        ctx.st
            .namespace
            .mark_uncorrectable(r.slba, r.blocks as u64, false);
    }
    ctx.st.dirty = true;
    Ok(Completion::ok(0))
}

/// Gives `len` bytes at `offset` back to the file system (reads of them return zeros).
fn deallocate(file: &std::fs::File, offset: u64, len: u64) -> Result<(), std::io::Error> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(file, flags, offset as i64, len as i64) {
        Ok(()) => Ok(()),
        // A file system that cannot punch holes: write zeros instead.
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let zeros = vec![0u8; (len as usize).min(1 << 20)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
