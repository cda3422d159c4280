//! NVM command set I/O on the simulated controller: Read, Write, Compare, Write Zeroes and Flush on namespace 1,
//! backed by the sparse file `ns1.img`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::faults::FaultKind;
use super::{fail, Ctx, SimError, NAMESPACE_FILE};
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
        file.sync_data().map_err(io_err)?;
        ctx.st.dirty = false;
        return Ok(Completion::ok(0));
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
            if bad.is_some() {
                c.media_errors += 1;
                return Ok(fail(code::UNRECOVERED_READ_ERROR));
            }
            file.read_exact_at(buf, offset).map_err(io_err)?;
            c.bytes_read += len as u128;
            c.host_read_commands += 1;
            Completion::ok(0)
        }
        (io::WRITE, Data::ToDevice(buf)) if buf.len() as u64 == len => {
            file.write_all_at(buf, offset).map_err(io_err)?;
            c.bytes_written += len as u128;
            c.host_write_commands += 1;
            ctx.st.dirty = true;
            Completion::ok(0)
        }
        (io::COMPARE, Data::ToDevice(buf)) if buf.len() as u64 == len => {
            let mut have = vec![0u8; len as usize];
            file.read_exact_at(&mut have, offset).map_err(io_err)?;
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
            Completion::ok(0)
        }
        (io::READ | io::WRITE | io::COMPARE | io::WRITE_ZEROES, _) => fail(code::INVALID_FIELD),
        _ => fail(code::INVALID_OPCODE),
    };
    ctx.st.counters.busy_ms += started.elapsed().as_millis();
    ctx.st.add_heat(len, ctx.now);
    Ok(completion)
}
