//! The target driven by a minimal host written against the spec: handshake, Connect, properties, a malformed
//! PDU answered with a termination request naming the field, and the target still serving afterwards.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Target, TargetOptions};
use crate::sim::{SimConfig, SimController};
use nvme_spec::fabrics::{self, fctype, property, ConnectData};
use nvme_spec::tcp::{fes, Cqe, Digests, Header, Pdu, Sgl, SGL_IN_CAPSULE};

struct Host(TcpStream, Digests);

impl Host {
    fn connect(addr: std::net::SocketAddr) -> Host {
        Host(TcpStream::connect(addr).unwrap(), Digests::default())
    }
    fn send(&mut self, p: &Pdu) {
        self.0.write_all(&p.encode(self.1, 4)).unwrap();
    }
    fn recv(&mut self) -> Pdu {
        let mut h = [0u8; 8];
        self.0.read_exact(&mut h).unwrap();
        let hdr = Header::parse(&h);
        let mut rest = vec![0u8; hdr.plen as usize - 8];
        self.0.read_exact(&mut rest).unwrap();
        hdr.check(self.1, 1 << 20).unwrap();
        let d = Pdu::decode(&hdr, &rest, self.1).unwrap();
        assert!(d.data_digest_ok);
        d.pdu
    }
    fn handshake(&mut self) {
        self.handshake_with(Digests::default());
    }
    fn handshake_with(&mut self, digests: Digests) {
        self.send(&Pdu::IcReq {
            pfv: 0,
            hpda: 0,
            digests,
            maxr2t: 0,
        });
        let resp = self.recv();
        assert!(
            matches!(resp, Pdu::IcResp { pfv: 0, maxh2cdata, digests: d, .. } if maxh2cdata >= 4096 && d == digests),
            "{resp:?}"
        );
        self.1 = digests;
    }
    fn command(&mut self, sqe: [u8; 64], data: Vec<u8>) -> Cqe {
        self.send(&Pdu::CapsuleCmd { sqe, data });
        match self.recv() {
            Pdu::CapsuleResp { cqe } => Cqe::parse(&cqe),
            other => panic!("expected a response capsule, got {other:?}"),
        }
    }
}

fn connect_sqe(cid: u16, qid: u16) -> [u8; 64] {
    let mut sqe = [0u8; 64];
    sqe[0] = fabrics::OPCODE;
    sqe[2..4].copy_from_slice(&cid.to_le_bytes());
    sqe[4] = fctype::CONNECT;
    sqe[42..44].copy_from_slice(&qid.to_le_bytes());
    sqe[44..46].copy_from_slice(&31u16.to_le_bytes());
    Sgl {
        address: 0,
        length: 1024,
        kind: SGL_IN_CAPSULE,
    }
    .put(&mut sqe);
    sqe
}

fn property_get_sqe(cid: u16, offset: u32, wide: bool) -> [u8; 64] {
    let mut sqe = [0u8; 64];
    sqe[0] = fabrics::OPCODE;
    sqe[2..4].copy_from_slice(&cid.to_le_bytes());
    sqe[4] = fctype::PROPERTY_GET;
    sqe[40] = wide as u8;
    sqe[44..48].copy_from_slice(&offset.to_le_bytes());
    sqe
}

#[test]
fn a_host_connects_reads_properties_and_a_malformed_pdu_ends_only_its_own_connection() {
    let served = Served::new("NVFTCPT001");
    let (target, addr, nqn) = (served.target.clone(), served.addr, served.nqn.clone());

    let mut host = Host::connect(addr);
    host.handshake();
    // An unknown subsystem: Connect Invalid Parameters, pointing at SUBNQN in the data.
    let mut data = ConnectData {
        hostid: [1; 16],
        cntlid: 0xffff,
        subnqn: "nqn.2024-01.dev.nvfarm:sim:NOSUCH".into(),
        hostnqn: "nqn.test-host".into(),
    };
    let c = host.command(connect_sqe(1, 0), data.to_bytes());
    assert_eq!(
        c.status & 0x7ff,
        fabrics::status::CONNECT_INVALID_PARAMETERS
    );
    assert_eq!(c.result, fabrics::invalid_parameter(true, 256));
    data.subnqn = nqn.clone();
    let c = host.command(connect_sqe(2, 0), data.to_bytes());
    assert_eq!(c.status, 0, "Connect");
    let cntlid = c.result as u16;
    assert_ne!(cntlid, 0);
    assert_eq!(target.subsystems()[0].controllers(), 1);
    let cap = host.command(property_get_sqe(3, property::CAP, true), vec![]);
    assert_eq!(cap.status, 0);
    let cap = cap.result as u64 | (cap.result_hi as u64) << 32;
    assert_eq!(cap & 0xffff, 127, "MQES");
    assert_ne!(cap & 1 << 37, 0, "NVM command set");
    let vs = host.command(property_get_sqe(4, property::VS, false), vec![]);
    assert_eq!(vs.result, 0x0001_0400);
    // Identify before CC.EN is set: Command Sequence Error.
    let mut id = nvme_spec::Command::identify(1, 0).to_sqe(5);
    Sgl {
        address: 0,
        length: 4096,
        kind: nvme_spec::tcp::SGL_TRANSPORT,
    }
    .put(&mut id);
    let c = host.command(id, vec![]);
    assert_eq!(
        c.status & 0x7ff,
        nvme_spec::status::code::COMMAND_SEQUENCE_ERROR
    );

    // A connection with header and data digests: Connect (its data digested) and a property read.
    let mut dg = Host::connect(addr);
    dg.handshake_with(Digests::from_byte(3));
    let c = dg.command(connect_sqe(1, 0), data.to_bytes());
    assert_eq!(c.status, 0, "Connect with digests");
    let vs = dg.command(property_get_sqe(2, property::VS, false), vec![]);
    assert_eq!((vs.status, vs.result), (0, 0x0001_0400));
    drop(dg);

    // A second connection sends a capsule with a wrong header length: a C2HTermReq names byte 2.
    let mut bad = Host::connect(addr);
    bad.handshake();
    let mut pdu = Pdu::CapsuleCmd {
        sqe: [0; 64],
        data: vec![],
    }
    .encode(Digests::default(), 4);
    pdu[2] = 24;
    bad.0.write_all(&pdu).unwrap();
    match bad.recv() {
        Pdu::TermReq {
            from_host: false,
            fes: f,
            fei,
            ..
        } => assert_eq!((f, fei), (fes::INVALID_HEADER_FIELD, 2)),
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(
        bad.0.read_to_end(&mut rest).unwrap(),
        0,
        "the bad connection is closed"
    );
    // The first connection still works.
    let vs = host.command(property_get_sqe(6, property::VS, false), vec![]);
    assert_eq!(vs.status, 0);
    // A PDU type a host may not send (a response capsule) is a sequence error.
    host.send(&Pdu::CapsuleResp { cqe: [0; 16] });
    assert!(matches!(host.recv(), Pdu::TermReq { fes: f, .. } if f == fes::PDU_SEQUENCE_ERROR));
    // The admin queue is gone, and its association with it.
    let mut rest = Vec::new();
    let _ = host.0.read_to_end(&mut rest);
    for _ in 0..200 {
        if target.subsystems()[0].controllers() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(target.subsystems()[0].controllers(), 0);
    served.stop();
}

fn property_set_sqe(cid: u16, offset: u32, value: u64) -> [u8; 64] {
    let mut sqe = [0u8; 64];
    sqe[0] = fabrics::OPCODE;
    sqe[2..4].copy_from_slice(&cid.to_le_bytes());
    sqe[4] = fctype::PROPERTY_SET;
    sqe[44..48].copy_from_slice(&offset.to_le_bytes());
    sqe[48..56].copy_from_slice(&value.to_le_bytes());
    sqe
}

/// A target serving one simulated drive on loopback; stops when dropped.
struct Served {
    target: Arc<Target>,
    addr: std::net::SocketAddr,
    nqn: String,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn new(serial: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SimConfig {
            serial: serial.into(),
            size_bytes: 16 << 20,
            ..SimConfig::default()
        };
        let sim = SimController::create(dir.path(), &cfg).unwrap();
        let nqn = format!("nqn.2024-01.dev.nvfarm:sim:{serial}");
        let target =
            Arc::new(Target::new(vec![(nqn.clone(), sim)], TargetOptions::default()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (t, s) = (target.clone(), stop.clone());
            std::thread::spawn(move || t.serve(listener, &s).unwrap())
        };
        Served {
            target,
            addr,
            nqn,
            stop,
            server: Some(server),
            _dir: dir,
        }
    }

    fn connect_data(&self, cntlid: u16) -> ConnectData {
        ConnectData {
            hostid: [2; 16],
            cntlid,
            subnqn: self.nqn.clone(),
            hostnqn: "nqn.test-host".into(),
        }
    }

    /// An admin queue with CC.EN set and CSTS.RDY seen; its controller ID.
    fn enabled_admin(&self) -> (Host, u16) {
        let mut host = Host::connect(self.addr);
        host.handshake();
        let c = host.command(connect_sqe(1, 0), self.connect_data(0xffff).to_bytes());
        assert_eq!(c.status, 0, "Connect");
        let cntlid = c.result as u16;
        let cc = fabrics::cc::EN as u64 | 6 << 16 | 4 << 20;
        assert_eq!(
            host.command(property_set_sqe(2, property::CC, cc), vec![])
                .status,
            0
        );
        for cid in 3..300u16 {
            let c = host.command(property_get_sqe(cid, property::CSTS, false), vec![]);
            if c.result & fabrics::csts::RDY != 0 {
                return (host, cntlid);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("CSTS.RDY never set");
    }
}

impl Served {
    /// Stops serving; the server thread must have ended without a panic.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.take().expect("serving").join().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

/// nvme-cli's `fw-download` sends 4 KiB chunks, which the Linux host puts in the admin command capsule (up to
/// 8 KiB in-capsule data on the admin queue); `fw-commit` of what they staged must find a whole, valid image.
#[test]
fn firmware_downloaded_in_capsule_on_the_admin_queue_commits() {
    let served = Served::new("NVFTCPT002");
    let (mut host, _) = served.enabled_admin();
    let img = crate::sim::image::build(&crate::sim::image::ImageSpec::new("3.0.0")).unwrap();
    let mut cid = 400u16;
    for (i, chunk) in img.chunks(4096).enumerate() {
        let mut sqe =
            nvme_spec::Command::firmware_download(i as u64 * 4096, chunk.len() as u32).to_sqe(cid);
        Sgl {
            address: 0,
            length: chunk.len() as u32,
            kind: SGL_IN_CAPSULE,
        }
        .put(&mut sqe);
        let c = host.command(sqe, chunk.to_vec());
        assert_eq!(c.status, 0, "download chunk {i}");
        cid += 1;
    }
    let commit = nvme_spec::Command::firmware_commit(
        3,
        nvme_spec::command::CommitAction::ReplaceActivateOnReset,
    )
    .to_sqe(cid);
    let c = host.command(commit, vec![]);
    assert_eq!(
        c.status, 0,
        "commit of what was downloaded in 4 KiB capsules: {:#x}",
        c.status
    );
}

/// A host that drops its connection with a write's data half sent: nothing of the write reaches the drive, and
/// the target keeps serving the drive's other queues.
#[test]
fn a_host_that_disconnects_mid_h2c_data_leaves_the_drive_untouched() {
    use crate::transport::{Data, Passthru};
    use nvme_spec::tcp::SGL_TRANSPORT;
    let served = Served::new("NVFTCPT003");
    let (mut admin, cntlid) = served.enabled_admin();
    let noq =
        nvme_spec::Command::set_features(nvme_spec::features::fid::NUMBER_OF_QUEUES, 0, false, 0)
            .to_sqe(8);
    assert_eq!(
        admin.command(noq, vec![]).status,
        0,
        "Set Features Number of Queues"
    );
    let mut io = Host::connect(served.addr);
    io.handshake();
    let c = io.command(connect_sqe(1, 1), served.connect_data(cntlid).to_bytes());
    assert_eq!(c.status, 0, "I/O queue Connect");
    let mut write = nvme_spec::Command::write(1, 0, 1).to_sqe(7);
    Sgl {
        address: 0,
        length: 4096,
        kind: SGL_TRANSPORT,
    }
    .put(&mut write);
    io.send(&Pdu::CapsuleCmd {
        sqe: write,
        data: vec![],
    });
    let ttag = match io.recv() {
        Pdu::R2T {
            cccid: 7,
            ttag,
            r2to: 0,
            r2tl: 4096,
        } => ttag,
        other => panic!("expected R2T for the whole write, got {other:?}"),
    };
    io.send(&Pdu::H2CData {
        cccid: 7,
        ttag,
        datao: 0,
        last: false,
        data: vec![0xa5; 1024],
    });
    assert_eq!(served.target.connections(), 2);
    drop(io);
    // Once the target has finished with the dropped connection, the admin queue still answers and block 0
    // still reads as zeros.
    for _ in 0..500 {
        if served.target.connections() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        served.target.connections(),
        1,
        "the dropped connection is finished"
    );
    let vs = admin.command(property_get_sqe(9, property::VS, false), vec![]);
    assert_eq!(vs.status, 0);
    let mut block = vec![0xffu8; 4096];
    let c = served.target.subsystems()[0]
        .drive()
        .submit(
            nvme_spec::Queue::Io,
            &nvme_spec::Command::read(1, 0, 1),
            Data::FromDevice(&mut block),
            None,
        )
        .unwrap();
    assert!(c.status.is_success());
    assert!(
        block.iter().all(|&b| b == 0),
        "half a write reached the drive"
    );
}
