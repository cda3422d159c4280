//! A TCP proxy between agents and the controller that fails on command: it stalls (holds every byte in both
//! directions, connections stay open and new ones are accepted but not served), drops (closes every connection
//! with FIN) and resets (closes every connection with RST). Runs on its own thread and runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Stall,
}

/// A command to cut the connections open now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    None,
    Drop(u64),
    Reset(u64),
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    cut: watch::Sender<Cut>,
    cuts: AtomicU64,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let (cut, cut_rx) = watch::channel(Cut::None);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let accepted = Arc::new(AtomicU64::new(0));
        let acc = accepted.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        acc.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(connection(
                            client,
                            upstream,
                            mode_rx.clone(),
                            cut_rx.clone(),
                        ));
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        Proxy {
            addr,
            mode,
            cut,
            cuts: AtomicU64::new(0),
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The proxy's address as a controller URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds all traffic (`true`) or lets it flow again (`false`).
    pub fn stall(&self, on: bool) {
        let _ = self.mode.send(if on { Mode::Stall } else { Mode::Pass });
    }

    /// Closes every open connection with FIN.
    pub fn drop_all(&self) {
        let n = self.cuts.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.cut.send(Cut::Drop(n));
    }

    /// Closes every open connection with RST.
    pub fn reset_all(&self) {
        let n = self.cuts.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.cut.send(Cut::Reset(n));
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Resets `s` on close instead of the orderly FIN.
fn reset_on_close(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    mut cut: watch::Receiver<Cut>,
) {
    let _ = client.set_nodelay(true);
    // A cut that happened before this connection does not apply to it.
    cut.mark_unchanged();
    // A stalled proxy does not even connect upstream until the stall ends.
    while *mode.borrow() == Mode::Stall {
        tokio::select! {
            r = mode.changed() => if r.is_err() { return },
            r = cut.changed() => {
                if r.is_err() { return }
                if let Cut::Reset(_) = *cut.borrow() { reset_on_close(&client) }
                return;
            }
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset_on_close(&client);
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    let mut up_open = true;
    let mut down_open = true;
    while up_open || down_open {
        if *mode.borrow() == Mode::Stall {
            tokio::select! {
                r = mode.changed() => if r.is_err() { break },
                r = cut.changed() => { if r.is_err() { break } return finish(cr, cw, sr, sw, *cut.borrow()); }
            }
            continue;
        }
        tokio::select! {
            r = mode.changed() => if r.is_err() { break },
            r = cut.changed() => { if r.is_err() { break } return finish(cr, cw, sr, sw, *cut.borrow()); }
            n = cr.read(&mut up), if up_open => match n {
                Ok(0) | Err(_) => { up_open = false; let _ = sw.shutdown().await; }
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { break },
            },
            n = sr.read(&mut down), if down_open => match n {
                Ok(0) | Err(_) => { down_open = false; let _ = cw.shutdown().await; }
                Ok(n) => if cw.write_all(&down[..n]).await.is_err() { break },
            },
        }
    }
}

fn finish(
    cr: tokio::net::tcp::OwnedReadHalf,
    cw: tokio::net::tcp::OwnedWriteHalf,
    sr: tokio::net::tcp::OwnedReadHalf,
    sw: tokio::net::tcp::OwnedWriteHalf,
    how: Cut,
) {
    let client = cr.reunite(cw);
    let server = sr.reunite(sw);
    if let (Cut::Reset(_), Ok(c), Ok(s)) = (how, &client, &server) {
        reset_on_close(c);
        reset_on_close(s);
    }
    drop(client);
    drop(server);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        a
    }

    fn roundtrip(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        Ok(b.to_vec())
    }

    #[test]
    fn it_forwards_stalls_drops_and_resets() {
        let p = Proxy::start(echo_server());
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert_eq!(roundtrip(&mut s).unwrap(), b"ping");
        // Stalled: nothing comes back.
        p.stall(true);
        std::thread::sleep(Duration::from_millis(50));
        assert!(roundtrip(&mut s).is_err(), "a stalled proxy forwarded");
        // Unstalled: the held bytes flow.
        p.stall(false);
        let mut b = [0u8; 8];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut b[..4]).unwrap();
        assert_eq!(&b[..4], b"ping");
        // Dropped: an orderly end of stream.
        p.drop_all();
        assert_eq!(s.read(&mut b).unwrap(), 0);
        // Reset: the next read fails with ECONNRESET.
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(roundtrip(&mut s).unwrap(), b"ping");
        p.reset_all();
        let e = s.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert_eq!(p.accepted(), 2);
    }
}
