//! One NVMe/TCP connection, which carries one queue: the ICReq/ICResp exchange, command capsules and their data
//! (in the capsule, or asked for with R2T and sent in H2CData PDUs; returned in C2HData PDUs), response capsules,
//! and the commands a fabrics controller answers itself (Connect, Property Get/Set, Disconnect, Keep Alive,
//! Asynchronous Event Request, the queue count). Every other command goes to the simulated drive.
//!
//! A PDU that breaks the protocol (see [`nvme_spec::tcp::Header::check`]) ends the connection with a C2HTermReq
//! naming the field at fault; a command that cannot be carried out gets the spec's status. Nothing the host
//! sends can make the target allocate more than its limits, take it down or leave a command half-applied: a
//! write reaches the drive only once all its data has arrived intact.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::association::{patch_identify, Association, PropertyOutcome, AER_LIMIT, QUEUE_ENTRIES};
use super::{Subsystem, Target};
use crate::transport::{Data, Direction, Passthru, TransportError};
use nvme_spec::command::{admin, cns};
use nvme_spec::fabrics::{self, fctype, Connect, ConnectData, PropertyAccess};
use nvme_spec::features::fid;
use nvme_spec::status::code;
use nvme_spec::tcp::{
    fes, Cqe, Decoded, Digests, Header, Pdu, PduError, Sgl, COMMON_HEADER_LEN, MIN_MAXH2CDATA,
    PFV_1_0, SGL_IN_CAPSULE, SGL_TRANSPORT,
};
use nvme_spec::{Command, Queue, Status};

/// The admin queue's in-capsule data (what Linux assumes for it: 8 KiB).
const ADMIN_INLINE_DATA: u32 = 8192;
/// C2HData PDUs carry at most this much each.
const C2H_CHUNK: usize = 128 * 1024;
/// Controllers one subsystem holds at once.
const MAX_CONTROLLERS: usize = 16;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The host closed it, disconnected the queue or sent a termination request.
    Closed(String),
    /// The host broke the protocol; a C2HTermReq went out.
    Fatal(PduError),
    /// The target ended it: the drive vanished, the association ended, the keep-alive timer expired.
    Dropped(String),
}

/// The queue a connection carries, once connected.
#[derive(Debug)]
struct Bound {
    sub: Arc<Subsystem>,
    cntlid: u16,
    qid: u16,
    entries: u16,
}

/// A write whose data is coming in H2CData PDUs.
#[derive(Debug)]
struct PendingWrite {
    sqe: [u8; 64],
    buf: Vec<u8>,
    received: usize,
    ttag: u16,
    digest_ok: bool,
}

/// A command's answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    result: u64,
    data: Vec<u8>,
    then: Then,
}

#[derive(Debug)]
enum Then {
    Continue,
    Close(String),
    DropSubsystem(String),
}

fn status(code: u16) -> Reply {
    Reply {
        status: code,
        result: 0,
        data: Vec::new(),
        then: Then::Continue,
    }
}

fn fail(code: u16) -> Reply {
    status(Status::from_code(code).with_dnr().raw())
}

fn ok(result: u64) -> Reply {
    Reply {
        status: 0,
        result,
        data: Vec::new(),
        then: Then::Continue,
    }
}

/// Serves one connection to its end.
pub(super) fn run(target: &Target, stream: TcpStream, peer: SocketAddr) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut c = Conn {
        target,
        peer,
        reader: BufReader::with_capacity(64 * 1024, stream),
        writer,
        digests: Digests::default(),
        align: 4,
        bound: None,
        sqhd: 0,
        pending: HashMap::new(),
        next_ttag: 0,
        aers: Vec::new(),
    };
    let end = c.serve();
    let queue = c
        .bound
        .as_ref()
        .map(|b| format!("{} queue {} of controller {}", b.sub.nqn, b.qid, b.cntlid))
        .unwrap_or_else(|| "unconnected".into());
    match &end {
        Err(End::Closed(why)) => tracing::info!(%peer, "{queue}: {why}"),
        Err(End::Fatal(e)) => tracing::warn!(%peer, "{queue}: protocol error, terminated: {e}"),
        Err(End::Dropped(why)) => tracing::info!(%peer, "{queue}: dropped: {why}"),
        Ok(()) => {}
    }
    c.finish();
}

struct Conn<'t> {
    target: &'t Target,
    peer: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    digests: Digests,
    align: usize,
    bound: Option<Bound>,
    sqhd: u16,
    pending: HashMap<u16, PendingWrite>,
    next_ttag: u16,
    aers: Vec<u16>,
}

impl Conn<'_> {
    fn serve(&mut self) -> Result<(), End> {
        let first = self.read_pdu(Digests::default(), 0)?;
        let Pdu::IcReq {
            pfv, hpda, digests, ..
        } = first.pdu
        else {
            return Err(self.fatal(
                fes::PDU_SEQUENCE_ERROR,
                0,
                "the first PDU must be an ICReq",
                &first.pdu.encode(Digests::default(), 4),
            ));
        };
        if pfv != PFV_1_0 {
            return Err(self.fatal(
                fes::UNSUPPORTED_PARAMETER,
                8,
                &format!("protocol format version {pfv} (only 0 is defined)"),
                &[],
            ));
        }
        if hpda > 31 {
            return Err(self.fatal(
                fes::UNSUPPORTED_PARAMETER,
                10,
                &format!("host PDU data alignment {hpda} (at most 31)"),
                &[],
            ));
        }
        self.align = (hpda as usize + 1) * 4;
        self.send(&Pdu::IcResp {
            pfv: PFV_1_0,
            cpda: 0,
            digests,
            maxh2cdata: self.target.opts.max_h2c_data.max(MIN_MAXH2CDATA),
        })?;
        self.digests = digests;
        let max_data = self
            .target
            .opts
            .max_h2c_data
            .max(self.target.opts.inline_data)
            .max(ADMIN_INLINE_DATA);
        loop {
            let d = self.read_pdu(self.digests, max_data)?;
            match d.pdu {
                Pdu::CapsuleCmd { sqe, data } => self.capsule(sqe, data, d.data_digest_ok)?,
                Pdu::H2CData {
                    cccid,
                    ttag,
                    datao,
                    last,
                    data,
                } => self.h2c_data(cccid, ttag, datao, last, data, d.data_digest_ok)?,
                Pdu::TermReq {
                    from_host: true,
                    fes,
                    fei,
                    ..
                } => {
                    return Err(End::Closed(format!(
                        "the host terminated the connection (fatal error status {fes:#04x}, field {fei})"
                    )))
                }
                other => {
                    let bytes = other.encode(self.digests, 4);
                    return Err(self.fatal(
                        fes::PDU_SEQUENCE_ERROR,
                        0,
                        &format!("a host may not send PDU type {:#04x}", other.pdu_type()),
                        &bytes,
                    ));
                }
            }
        }
    }

    /// Reads one PDU, checking its header before reading the rest.
    fn read_pdu(&mut self, digests: Digests, max_data: u32) -> Result<Decoded, End> {
        let mut hdr = [0u8; COMMON_HEADER_LEN];
        if let Err(e) = self.reader.read_exact(&mut hdr) {
            return Err(self.read_error(e, "between PDUs"));
        }
        let h = Header::parse(&hdr);
        if let Err(e) = h.check(digests, max_data) {
            return Err(self.fatal(e.fes, e.fei, &e.reason, &hdr));
        }
        let mut rest = vec![0u8; h.plen as usize - COMMON_HEADER_LEN];
        if let Err(e) = self.reader.read_exact(&mut rest) {
            return Err(self.read_error(e, "in the middle of a PDU"));
        }
        Pdu::decode(&h, &rest, digests).map_err(|e| {
            let mut bytes = hdr.to_vec();
            bytes.extend_from_slice(&rest[..rest.len().min(120)]);
            self.fatal(e.fes, e.fei, &e.reason, &bytes)
        })
    }

    fn read_error(&self, e: std::io::Error, when: &str) -> End {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                End::Closed(format!("the host closed the connection {when}"))
            }
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => End::Dropped(
                "keep-alive timeout: nothing from the host within KATO; the association ends"
                    .into(),
            ),
            _ => End::Closed(format!("the connection failed {when}: {e}")),
        }
    }

    /// Sends a C2HTermReq and gives up on the connection.
    fn fatal(&mut self, fes: u16, fei: u32, reason: &str, header: &[u8]) -> End {
        let term = Pdu::TermReq {
            from_host: false,
            fes,
            fei,
            header: header.to_vec(),
        };
        let _ = self.writer.write_all(&term.encode(self.digests, 4));
        End::Fatal(PduError {
            fes,
            fei,
            reason: reason.to_string(),
        })
    }

    fn send(&mut self, pdu: &Pdu) -> Result<(), End> {
        self.writer
            .write_all(&pdu.encode(self.digests, self.align))
            .map_err(|e| End::Closed(format!("cannot write to the host: {e}")))
    }

    /// A command capsule: the command runs now, or once its data has come in.
    fn capsule(&mut self, sqe: [u8; 64], data: Vec<u8>, digest_ok: bool) -> Result<(), End> {
        let (cmd, cid) = Command::from_sqe(&sqe);
        if let Some(b) = &self.bound {
            self.sqhd = (self.sqhd + 1) % b.entries;
        }
        if !digest_ok {
            return self.respond(cid, status(code::TRANSIENT_TRANSPORT_ERROR));
        }
        if self.pending.contains_key(&cid) {
            return Err(self.fatal(
                fes::PDU_SEQUENCE_ERROR,
                10,
                &format!("command identifier {cid:#06x} is still waiting for its data"),
                &sqe,
            ));
        }
        let sgl = Sgl::of_sqe(&sqe);
        let dir = direction(&sqe);
        let inline_max = match &self.bound {
            Some(b) if b.qid != 0 => self.target.opts.inline_data,
            _ => ADMIN_INLINE_DATA,
        };
        if sgl.length > self.target.opts.max_transfer {
            return self.respond(cid, fail(code::DATA_SGL_LENGTH_INVALID));
        }
        match dir {
            Direction::ToDevice if sgl.length == 0 => {
                if !data.is_empty() {
                    return self.respond(cid, fail(code::DATA_SGL_LENGTH_INVALID));
                }
                self.execute(sqe, data)
            }
            Direction::ToDevice if sgl.kind == SGL_IN_CAPSULE => {
                if sgl.address != 0 || data.len() != sgl.length as usize {
                    return self.respond(cid, fail(code::DATA_SGL_LENGTH_INVALID));
                }
                if data.len() as u32 > inline_max {
                    return self.respond(cid, fail(code::DATA_SGL_LENGTH_INVALID));
                }
                self.execute(sqe, data)
            }
            Direction::ToDevice if sgl.kind == SGL_TRANSPORT => {
                if !data.is_empty() {
                    return self.respond(cid, fail(code::DATA_SGL_LENGTH_INVALID));
                }
                let ttag = self.next_ttag;
                self.next_ttag = self.next_ttag.wrapping_add(1);
                self.pending.insert(
                    cid,
                    PendingWrite {
                        sqe,
                        buf: vec![0u8; sgl.length as usize],
                        received: 0,
                        ttag,
                        digest_ok: true,
                    },
                );
                self.send(&Pdu::R2T {
                    cccid: cid,
                    ttag,
                    r2to: 0,
                    r2tl: sgl.length,
                })
            }
            Direction::ToDevice => self.respond(cid, fail(code::SGL_DESCRIPTOR_TYPE_INVALID)),
            Direction::FromDevice => {
                if !data.is_empty() {
                    return self.respond(cid, fail(code::INVALID_FIELD));
                }
                if sgl.length > 0 && sgl.kind != SGL_TRANSPORT {
                    return self.respond(cid, fail(code::SGL_DESCRIPTOR_TYPE_INVALID));
                }
                self.execute(sqe, vec![0u8; sgl.length as usize])
            }
            Direction::None => {
                if !data.is_empty() {
                    return self.respond(cid, fail(code::INVALID_FIELD));
                }
                self.execute(sqe, Vec::new())
            }
            Direction::Bidirectional => {
                tracing::debug!(peer = %self.peer, opcode = cmd.opcode, "bidirectional command refused");
                self.respond(cid, fail(code::INVALID_OPCODE))
            }
        }
    }

    /// Data for a write that asked for it with R2T; the write runs once the last byte is in.
    fn h2c_data(
        &mut self,
        cccid: u16,
        ttag: u16,
        datao: u32,
        last: bool,
        data: Vec<u8>,
        digest_ok: bool,
    ) -> Result<(), End> {
        let header = || {
            Pdu::H2CData {
                cccid,
                ttag,
                datao,
                last,
                data: Vec::new(),
            }
            .encode(Digests::default(), 4)
        };
        let Some((want_ttag, got, want)) = self
            .pending
            .get(&cccid)
            .map(|p| (p.ttag, p.received, p.buf.len()))
        else {
            let h = header();
            return Err(self.fatal(
                fes::PDU_SEQUENCE_ERROR,
                8,
                &format!("H2CData for command {cccid:#06x}, which asked for no data"),
                &h,
            ));
        };
        if want_ttag != ttag {
            let h = header();
            return Err(self.fatal(
                fes::INVALID_HEADER_FIELD,
                10,
                &format!("H2CData with transfer tag {ttag}, the R2T gave {want_ttag}"),
                &h,
            ));
        }
        if datao as usize != got || got + data.len() > want {
            let h = header();
            return Err(self.fatal(
                fes::DATA_OUT_OF_RANGE,
                12,
                &format!(
                    "H2CData for bytes {datao}..{} of command {cccid:#06x}: {got} of {want} have arrived",
                    datao as usize + data.len()
                ),
                &h,
            ));
        }
        let p = self.pending.get_mut(&cccid).expect("pending write present");
        p.buf[p.received..p.received + data.len()].copy_from_slice(&data);
        p.received += data.len();
        p.digest_ok &= digest_ok;
        let complete = p.received == p.buf.len();
        if complete != last {
            let h = header();
            return Err(self.fatal(
                fes::INVALID_HEADER_FIELD,
                1,
                "the LAST_PDU flag does not match the end of the requested data",
                &h,
            ));
        }
        if !complete {
            return Ok(());
        }
        let p = self.pending.remove(&cccid).expect("pending write present");
        if !p.digest_ok {
            // Nothing of it reaches the drive.
            return self.respond(cccid, status(code::TRANSIENT_TRANSPORT_ERROR));
        }
        self.execute(p.sqe, p.buf)
    }

    fn execute(&mut self, sqe: [u8; 64], data: Vec<u8>) -> Result<(), End> {
        let (_, cid) = Command::from_sqe(&sqe);
        match self.dispatch(&sqe, data)? {
            Some(reply) => self.respond(cid, reply),
            None => Ok(()),
        }
    }

    /// Sends a command's data and its response capsule, then does what the reply says.
    fn respond(&mut self, cid: u16, reply: Reply) -> Result<(), End> {
        if Status::from_raw(reply.status).is_success() && !reply.data.is_empty() {
            let n = reply.data.len();
            let mut off = 0;
            while off < n {
                let end = (off + C2H_CHUNK).min(n);
                self.send(&Pdu::C2HData {
                    cccid: cid,
                    datao: off as u32,
                    last: end == n,
                    success: false,
                    data: reply.data[off..end].to_vec(),
                })?;
                off = end;
            }
        }
        let cqe = Cqe {
            result: reply.result as u32,
            result_hi: (reply.result >> 32) as u32,
            sqhd: self.sqhd,
            sqid: self.bound.as_ref().map_or(0, |b| b.qid),
            cid,
            status: reply.status,
        };
        self.send(&Pdu::CapsuleResp {
            cqe: cqe.to_bytes(),
        })?;
        match reply.then {
            Then::Continue => Ok(()),
            Then::Close(why) => Err(End::Closed(why)),
            Then::DropSubsystem(why) => {
                if let Some(b) = &self.bound {
                    b.sub.drop_all(&why);
                }
                Err(End::Dropped(why))
            }
        }
    }

    /// Runs a command: fabrics commands and the few a fabrics controller answers itself here, the rest on the
    /// drive. `None` holds the command (an Asynchronous Event Request).
    fn dispatch(&mut self, sqe: &[u8; 64], data: Vec<u8>) -> Result<Option<Reply>, End> {
        let (cmd, cid) = Command::from_sqe(sqe);
        if cmd.opcode == fabrics::OPCODE {
            return self.fabrics(sqe, data).map(Some);
        }
        let Some(b) = &self.bound else {
            return Ok(Some(fail(code::COMMAND_SEQUENCE_ERROR)));
        };
        let sub = Arc::clone(&b.sub);
        let (cntlid, qid) = (b.cntlid, b.qid);
        let queue = if qid == 0 { Queue::Admin } else { Queue::Io };
        if queue == Queue::Admin {
            let enabled = sub
                .lock()
                .controllers
                .get(&cntlid)
                .is_some_and(|a| a.cc & fabrics::cc::EN != 0);
            if !enabled {
                return Ok(Some(fail(code::COMMAND_SEQUENCE_ERROR)));
            }
            match cmd.opcode {
                admin::ASYNC_EVENT_REQUEST if self.aers.len() < AER_LIMIT => {
                    self.aers.push(cid);
                    return Ok(None);
                }
                admin::ASYNC_EVENT_REQUEST => return Ok(Some(fail(code::AER_LIMIT_EXCEEDED))),
                admin::KEEP_ALIVE => return Ok(Some(ok(0))),
                admin::SET_FEATURES if cmd.feature_id() == fid::NUMBER_OF_QUEUES => {
                    let asked = (cmd.cdw11 & 0xffff).max(cmd.cdw11 >> 16) + 1;
                    let granted = asked.min(self.target.opts.max_io_queues as u32) as u16;
                    if let Some(a) = sub.lock().controllers.get_mut(&cntlid) {
                        a.io_queues = granted;
                    }
                    let v = (granted as u64 - 1) << 16 | (granted as u64 - 1);
                    return Ok(Some(ok(v)));
                }
                admin::GET_FEATURES if cmd.feature_id() == fid::NUMBER_OF_QUEUES => {
                    let granted = sub
                        .lock()
                        .controllers
                        .get(&cntlid)
                        .map_or(0, |a| a.io_queues)
                        .max(1) as u64;
                    return Ok(Some(ok((granted - 1) << 16 | (granted - 1))));
                }
                _ => {}
            }
        }
        let mut data = data;
        let timeout = Some(self.target.opts.command_timeout);
        let done = match direction(sqe) {
            Direction::FromDevice => {
                sub.drive
                    .submit(queue, &cmd, Data::FromDevice(&mut data), timeout)
            }
            Direction::ToDevice => {
                let r = sub
                    .drive
                    .submit(queue, &cmd, Data::ToDevice(&data), timeout);
                data = Vec::new();
                r
            }
            _ => sub.drive.submit(queue, &cmd, Data::None, timeout),
        };
        let c = match done {
            Ok(c) => c,
            Err(e @ TransportError::Gone { .. }) => {
                sub.drop_all(&format!("the drive is gone ({e})"));
                return Err(End::Dropped(format!("the drive is gone: {e}")));
            }
            Err(TransportError::NotReady { .. }) => {
                return Ok(Some(status(code::NAMESPACE_NOT_READY)));
            }
            Err(e @ TransportError::Timeout { .. }) => {
                return Err(End::Dropped(format!("a command never completed: {e}")));
            }
            Err(e) => {
                tracing::warn!(nqn = %sub.nqn, "{}: {e}", crate::controller::describe(queue, &cmd));
                return Ok(Some(fail(code::INTERNAL_ERROR)));
            }
        };
        tracing::trace!(
            nqn = %sub.nqn, qid, cid,
            cdw10 = format_args!("{:#x}", cmd.cdw10), cdw11 = format_args!("{:#x}", cmd.cdw11),
            "{}: {}", crate::controller::describe(queue, &cmd), c.status
        );
        if !c.status.is_success() {
            data = Vec::new();
        } else if queue == Queue::Admin
            && cmd.opcode == admin::IDENTIFY
            && cmd.cns() == cns::CONTROLLER
        {
            patch_identify(&mut data, cntlid, &sub.nqn, &self.target.opts);
        }
        Ok(Some(Reply {
            status: c.status.raw(),
            result: c.result as u64,
            data,
            then: Then::Continue,
        }))
    }

    fn fabrics(&mut self, sqe: &[u8; 64], data: Vec<u8>) -> Result<Reply, End> {
        let t = fabrics::fctype_of(sqe);
        if t == fctype::CONNECT {
            return self.connect(sqe, &data);
        }
        let Some(b) = &self.bound else {
            return Ok(fail(code::COMMAND_SEQUENCE_ERROR));
        };
        let sub = Arc::clone(&b.sub);
        let (cntlid, qid) = (b.cntlid, b.qid);
        let outcome = match t {
            fctype::DISCONNECT => {
                let mut r = ok(0);
                r.then = Then::Close("the host disconnected the queue".into());
                return Ok(r);
            }
            fctype::PROPERTY_GET | fctype::PROPERTY_SET if qid != 0 => {
                return Ok(fail(code::INVALID_FIELD))
            }
            fctype::PROPERTY_GET => {
                let p = PropertyAccess::of_sqe(sqe);
                sub.property_get(cntlid, p.offset, p.wide)
            }
            fctype::PROPERTY_SET => {
                let p = PropertyAccess::of_sqe(sqe);
                sub.property_set(cntlid, p.offset, p.wide, p.value)
            }
            _ => return Ok(fail(code::INVALID_OPCODE)),
        };
        Ok(match outcome {
            PropertyOutcome::Value(v) => ok(v),
            PropertyOutcome::Fail(c) => fail(c),
            PropertyOutcome::ResetSubsystem => {
                let mut r = ok(0);
                r.then = Then::DropSubsystem("NVM subsystem reset".into());
                r
            }
            PropertyOutcome::Gone(why) => {
                sub.drop_all(&format!("the drive is gone ({why})"));
                return Err(End::Dropped(format!("the drive is gone: {why}")));
            }
        })
    }

    fn connect(&mut self, sqe: &[u8; 64], data: &[u8]) -> Result<Reply, End> {
        if self.bound.is_some() {
            return Ok(fail(code::COMMAND_SEQUENCE_ERROR));
        }
        let invalid = |in_data, off| Reply {
            result: fabrics::invalid_parameter(in_data, off) as u64,
            ..fail(fabrics::status::CONNECT_INVALID_PARAMETERS)
        };
        if data.len() < fabrics::CONNECT_DATA_LEN {
            return Ok(fail(code::DATA_SGL_LENGTH_INVALID));
        }
        let c = Connect::of_sqe(sqe);
        let d = ConnectData::parse(data);
        if c.recfmt != 0 {
            return Ok(fail(fabrics::status::CONNECT_INCOMPATIBLE_FORMAT));
        }
        let Some(sub) = self.target.subsystem(&d.subnqn).cloned() else {
            tracing::info!(peer = %self.peer, "Connect to unknown subsystem '{}'", d.subnqn);
            return Ok(invalid(true, 256));
        };
        if c.sqsize == 0 || c.sqsize >= QUEUE_ENTRIES {
            return Ok(invalid(false, 44));
        }
        if let Err(e @ TransportError::Gone { .. }) = sub.drive.rescan() {
            // Controller Busy without Do Not Retry: a host keeps reconnecting until the drive is back (closing the
            // socket instead would leave a Linux host waiting out its 60 s Connect timeout on every attempt).
            tracing::info!(peer = %self.peer, "refused a connection to {}: {e}", sub.nqn);
            return Ok(status(fabrics::status::CONNECT_CONTROLLER_BUSY));
        }
        let socket = self
            .writer
            .try_clone()
            .map_err(|e| End::Closed(format!("cannot keep the connection: {e}")))?;
        let cntlid = if c.qid == 0 {
            if d.cntlid != 0xFFFF {
                return Ok(invalid(true, 16));
            }
            let kato = (c.kato_ms > 0).then(|| Duration::from_millis(c.kato_ms as u64));
            let mut st = sub.lock();
            if st.controllers.len() >= MAX_CONTROLLERS {
                return Ok(fail(fabrics::status::CONNECT_CONTROLLER_BUSY));
            }
            let mut id = st.next_cntlid;
            while id == 0 || id >= 0xFFF0 || st.controllers.contains_key(&id) {
                id = if id >= 0xFFEF { 1 } else { id + 1 };
            }
            st.next_cntlid = id + 1;
            st.controllers
                .insert(id, Association::new(d.hostnqn.clone(), Some(socket)));
            drop(st);
            if let Some(k) = kato {
                // The host sends a Keep Alive every KATO/2; the association ends after KATO and a half of
                // silence on its admin queue.
                let _ = self.writer.set_read_timeout(Some(k + k / 2));
            }
            tracing::info!(peer = %self.peer, nqn = %sub.nqn, cntlid = id, host = %d.hostnqn, "controller created (admin queue connected)");
            id
        } else {
            let mut st = sub.lock();
            let Some(a) = st.controllers.get_mut(&d.cntlid) else {
                return Ok(invalid(true, 16));
            };
            if a.hostnqn != d.hostnqn {
                return Ok(invalid(true, 512));
            }
            if c.qid > a.io_queues {
                return Ok(invalid(false, 42));
            }
            if a.cc & fabrics::cc::EN == 0 {
                return Ok(fail(code::COMMAND_SEQUENCE_ERROR));
            }
            a.sockets.push(socket);
            tracing::debug!(peer = %self.peer, nqn = %sub.nqn, cntlid = d.cntlid, qid = c.qid, "I/O queue connected");
            d.cntlid
        };
        let entries = c.sqsize + 1;
        self.bound = Some(Bound {
            sub,
            cntlid,
            qid: c.qid,
            entries,
        });
        self.sqhd = 1 % entries;
        Ok(ok(cntlid as u64))
    }

    /// Cleans up: the admin queue's end ends its association and every I/O queue of it.
    fn finish(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        let Some(b) = self.bound.take() else {
            return;
        };
        if b.qid == 0 {
            let gone = b.sub.lock().controllers.remove(&b.cntlid);
            if let Some(a) = gone {
                tracing::info!(nqn = %b.sub.nqn, cntlid = b.cntlid, "association ended (admin queue closed)");
                a.shutdown_sockets();
            }
        }
    }
}

/// Which way a command's data moves: fabrics commands say it in their command type, the rest in their opcode.
fn direction(sqe: &[u8; 64]) -> Direction {
    if sqe[0] == fabrics::OPCODE {
        Direction::of(fabrics::fctype_of(sqe))
    } else {
        Direction::of(sqe[0])
    }
}
