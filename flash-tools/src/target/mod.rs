//! The NVMe/TCP target: simulated drives served to real NVMe over Fabrics hosts (the Linux kernel's `nvme-tcp`
//! driver, nvme-cli, the agent on another machine).
//!
//! Each drive is one NVM subsystem, named by its NQN, whose every command is executed by the simulated
//! controller ([`crate::sim::SimController`]) with its state directory, faults and firmware slots. This module owns
//! the listener, the set of subsystems and the limits; [`connection`] runs one TCP connection (the PDU exchange,
//! data transfers, the queue it carries); [`association`] owns the fabric side of a controller (Connect, the
//! properties that stand in for a PCIe controller's registers, keep-alive, the queue count) and maps controller
//! enable, disable, shutdown and NVM subsystem reset onto the simulator's reset kinds. A drive that vanishes drops
//! every connection to it and refuses new ones until it is back.

mod association;
mod connection;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::sim::SimController;
use association::Association;

/// Limits and parameters of a target.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// In-capsule data a host may put in a command capsule on I/O queues (the admin queue always takes 8 KiB).
    pub inline_data: u32,
    /// The most data a host may send in one H2CData PDU (MAXH2CDATA).
    pub max_h2c_data: u32,
    /// The largest data transfer of one command the target buffers; larger ones fail with Data SGL Length
    /// Invalid before anything is allocated.
    pub max_transfer: u32,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// How long one command may take in the simulator (a hang fault) before the connection is dropped.
    pub command_timeout: Duration,
    /// I/O queues a controller grants at most.
    pub max_io_queues: u16,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            inline_data: 8192,
            max_h2c_data: 256 * 1024,
            max_transfer: 16 << 20,
            max_connections: 64,
            command_timeout: Duration::from_secs(600),
            max_io_queues: 8,
        }
    }
}

/// Setting up a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// An NQN is not valid.
    #[error("'{nqn}' is not a valid NQN: {reason} (e.g. nqn.2024-01.dev.nvfarm:sim:NVFSIM0001)")]
    BadNqn {
        /// The NQN.
        nqn: String,
        /// Why.
        reason: &'static str,
    },
    /// Two drives were given the same NQN.
    #[error("two drives are served as {nqn}: give each drive its own NQN")]
    DuplicateNqn {
        /// The NQN.
        nqn: String,
    },
    /// Nothing to serve.
    #[error("no drive to serve: name at least one simulated drive directory")]
    NoDrives,
}

/// Checks an NQN the way hosts will: `nqn.` followed by a name, at most 223 bytes.
pub fn check_nqn(nqn: &str) -> Result<(), TargetError> {
    let bad = |reason| {
        Err(TargetError::BadNqn {
            nqn: nqn.to_string(),
            reason,
        })
    };
    if !nqn.starts_with("nqn.") || nqn.len() <= 4 {
        return bad("it must start with 'nqn.'");
    }
    if nqn.len() > 223 {
        return bad("it is longer than 223 bytes");
    }
    if !nqn.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("it holds spaces or characters that are not printable ASCII");
    }
    Ok(())
}

/// One simulated drive served as an NVM subsystem.
#[derive(Debug)]
pub struct Subsystem {
    nqn: String,
    drive: SimController,
    state: Mutex<SubsystemState>,
}

#[derive(Debug, Default)]
struct SubsystemState {
    next_cntlid: u16,
    controllers: HashMap<u16, Association>,
}

impl Subsystem {
    /// The subsystem's NQN.
    pub fn nqn(&self) -> &str {
        &self.nqn
    }
    /// The drive behind it.
    pub fn drive(&self) -> &SimController {
        &self.drive
    }
    /// Controllers (associations) alive now.
    pub fn controllers(&self) -> usize {
        self.lock().controllers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubsystemState> {
        // A connection thread that panicked cannot leave the map half-changed: every update is one insert or
        // remove.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every association (the drive vanished, or an NVM subsystem reset): every connection to the
    /// subsystem is shut down, so its threads end and the hosts see the fabric controller lost.
    fn drop_all(&self, why: &str) {
        let mut st = self.lock();
        for (cntlid, a) in st.controllers.drain() {
            tracing::info!(nqn = %self.nqn, cntlid, "association ended: {why}");
            a.shutdown_sockets();
        }
    }
}

/// The NVMe/TCP target: the subsystems it serves and its limits.
#[derive(Debug)]
pub struct Target {
    subsystems: Vec<Arc<Subsystem>>,
    opts: TargetOptions,
    connections: AtomicUsize,
    /// Every open connection's socket, so stopping can shut down those no association owns yet.
    live: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicUsize,
}

impl Target {
    /// A target serving `drives`, each under its NQN.
    pub fn new(
        drives: Vec<(String, SimController)>,
        opts: TargetOptions,
    ) -> Result<Target, TargetError> {
        if drives.is_empty() {
            return Err(TargetError::NoDrives);
        }
        let mut subsystems: Vec<Arc<Subsystem>> = Vec::new();
        for (nqn, drive) in drives {
            check_nqn(&nqn)?;
            if subsystems.iter().any(|s| s.nqn == nqn) {
                return Err(TargetError::DuplicateNqn { nqn });
            }
            subsystems.push(Arc::new(Subsystem {
                nqn,
                drive,
                state: Mutex::new(SubsystemState {
                    next_cntlid: 1,
                    ..Default::default()
                }),
            }));
        }
        Ok(Target {
            subsystems,
            opts,
            connections: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
        })
    }

    /// The subsystems served.
    pub fn subsystems(&self) -> &[Arc<Subsystem>] {
        &self.subsystems
    }

    /// Connections open now (a connection is forgotten once its thread has finished with it).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn subsystem(&self, nqn: &str) -> Option<&Arc<Subsystem>> {
        self.subsystems.iter().find(|s| s.nqn == nqn)
    }

    /// Accepts connections on `listener` until `stop` is set, one thread per connection; on stop every
    /// association ends and every connection is shut down, and the connection threads are joined (one stuck
    /// in a hanging command for at most 3 s).
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    threads.retain(|t| !t.is_finished());
                    if let Some(t) = self.accept(stream, peer) {
                        threads.push(t);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections already open.
                    tracing::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        for s in &self.subsystems {
            s.drop_all("the target is stopping");
        }
        for (_, s) in self.live.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // A connection thread blocked in a hanging command (an injected hang fault) cannot be interrupted; give
        // the others a moment to finish and leave that one to end with the process.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for t in threads.into_iter().filter(|t| t.is_finished()) {
            let _ = t.join();
        }
        Ok(())
    }

    fn forget(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    fn accept(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<thread::JoinHandle<()>> {
        if stream.set_nonblocking(false).is_err() {
            return None;
        }
        let open = self.connections.fetch_add(1, Ordering::SeqCst);
        if open >= self.opts.max_connections {
            self.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%peer, "refused: {open} connections already open (the limit)");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return None;
        }
        let _ = stream.set_nodelay(true);
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst) as u64;
        if let Ok(clone) = stream.try_clone() {
            self.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, clone);
        }
        let target = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("nvmet-tcp {peer}"))
            .spawn(move || {
                connection::run(&target, stream, peer);
                target.forget(id);
            });
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                self.forget(id);
                tracing::warn!(%peer, "cannot start a thread for the connection: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
