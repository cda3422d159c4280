//! Serial console capture: always on while a rig is in use, every line timestamped (and bounded, see
//! [`crate::lines`]), searchable by `console_expect`.
//!
//! A real rig's console is a serial port (opened with `serialport`; a pseudo-terminal works the same way, which is
//! how the tests drive it); a simulated drive's console is its `console.log`, followed as it grows.

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use nvfarm_model::ConsoleLine;
use regex::Regex;

#[derive(Debug, Default)]
struct Shared {
    lines: Vec<ConsoleLine>,
    /// Last read error, if the port went away.
    error: Option<String>,
}

/// A running capture.
#[derive(Debug)]
pub struct Console {
    source: String,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why a console cannot be captured or did not show what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The serial port cannot be opened.
    #[error("cannot open serial console {path}: {reason}; check the rig file's console.serial and permissions")]
    Open {
        /// The port.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No line matched in time.
    #[error("no console line matched /{pattern}/ within {} ({lines} line(s) captured{})", humantime::format_duration(*waited), error.as_ref().map(|e| format!("; console error: {e}")).unwrap_or_default())]
    Timeout {
        /// The regular expression.
        pattern: String,
        /// How long it waited.
        waited: Duration,
        /// Lines captured meanwhile.
        lines: usize,
        /// The port's last read error, if any.
        error: Option<String>,
    },
}

struct LineSplitter {
    lines: crate::lines::Lines,
    started: Instant,
}

impl LineSplitter {
    fn feed(&mut self, bytes: &[u8], shared: &(Mutex<Shared>, Condvar)) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        let new: Vec<ConsoleLine> = self
            .lines
            .feed(bytes)
            .into_iter()
            .map(|text| ConsoleLine { at_ms, text })
            .collect();
        if !new.is_empty() {
            let (lock, cv) = shared;
            lock.lock().expect("console lock").lines.extend(new);
            cv.notify_all();
        }
    }
}

impl Console {
    /// Captures a serial port (or pty) at `baud`.
    pub fn serial(path: &Path, baud: u32) -> Result<Self, ConsoleError> {
        let mut port = serialport::new(path.to_string_lossy(), baud)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(|e| ConsoleError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Self::spawn(
            format!("serial {} @ {baud}", path.display()),
            move |stop, shared, mut split| {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    match port.read(&mut buf) {
                        Ok(0) => std::thread::sleep(Duration::from_millis(20)),
                        Ok(n) => split.feed(&buf[..n], shared),
                        Err(e)
                            if e.kind() == ErrorKind::TimedOut
                                || e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            shared.0.lock().expect("console lock").error = Some(e.to_string());
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            },
        ))
    }

    /// Follows a file that grows (a simulated drive's console log) from its current end.
    pub fn follow_file(path: &Path) -> Self {
        let path = path.to_path_buf();
        Self::spawn(
            format!("file {}", path.display()),
            move |stop, shared, mut split| {
                let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut f) = std::fs::File::open(&path) {
                        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                        if len < pos {
                            pos = 0; // truncated / recreated
                        }
                        if len > pos && f.seek(SeekFrom::Start(pos)).is_ok() {
                            while let Ok(n) = f.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                pos += n as u64;
                                split.feed(&buf[..n], shared);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            },
        )
    }

    fn spawn(
        source: String,
        body: impl FnOnce(&AtomicBool, &(Mutex<Shared>, Condvar), LineSplitter) + Send + 'static,
    ) -> Self {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (s2, st2) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                body(
                    &st2,
                    &s2,
                    LineSplitter {
                        lines: crate::lines::Lines::default(),
                        started,
                    },
                )
            })
            .expect("spawn console thread");
        Console {
            source,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Where the console comes from (the serial port or the log file), for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Lines captured so far.
    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.shared.0.lock().expect("console lock").lines.clone()
    }

    /// Number of lines captured so far (a cursor for [`Console::expect`]).
    pub fn len(&self) -> usize {
        self.shared.0.lock().expect("console lock").lines.len()
    }

    /// Nothing captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a line at index `*cursor` or later matches `pattern`; on success the cursor moves past it,
    /// so consecutive expectations match in order.
    pub fn expect(
        &self,
        pattern: &Regex,
        within: Duration,
        cursor: &mut usize,
    ) -> Result<ConsoleLine, ConsoleError> {
        let deadline = Instant::now() + within;
        let (lock, cv) = &*self.shared;
        let mut guard = lock.lock().expect("console lock");
        loop {
            if let Some((i, line)) = guard
                .lines
                .iter()
                .enumerate()
                .skip(*cursor)
                .find(|(_, l)| pattern.is_match(&l.text))
            {
                *cursor = i + 1;
                return Ok(line.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConsoleError::Timeout {
                    pattern: pattern.as_str().to_string(),
                    waited: Duration::from_millis(within.as_millis().div_ceil(10) as u64 * 10),
                    lines: guard.lines.len(),
                    error: guard.error.clone(),
                });
            }
            guard = cv
                .wait_timeout(guard, deadline - now)
                .expect("console lock")
                .0;
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_pty_stands_in_for_a_serial_port() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = nix::unistd::ttyname(&pty.slave).unwrap();
        let console = Console::serial(&slave, 115_200).unwrap();
        let mut master = std::fs::File::from(pty.master);
        master
            .write_all(b"U-Boot 2024.01\r\nnvme: controller ready\r\npartial")
            .unwrap();
        let mut cursor = 0;
        let line = console
            .expect(
                &Regex::new("controller ready").unwrap(),
                Duration::from_secs(5),
                &mut cursor,
            )
            .unwrap();
        assert_eq!(line.text, "nvme: controller ready");
        assert_eq!(cursor, 2);
        // The matched line is consumed: the same pattern now needs a new line.
        let e = console
            .expect(
                &Regex::new("controller ready").unwrap(),
                Duration::from_millis(200),
                &mut cursor,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("no console line matched /controller ready/ within 200ms"),
            "{e}"
        );
        master.write_all(b" line\n").unwrap();
        let line = console
            .expect(
                &Regex::new("^partial line$").unwrap(),
                Duration::from_secs(5),
                &mut cursor,
            )
            .unwrap();
        assert_eq!(line.text, "partial line");
        assert_eq!(console.lines()[0].text, "U-Boot 2024.01");
    }

    #[test]
    fn a_missing_port_is_named() {
        let e = Console::serial(Path::new("/dev/ttyNOPE9"), 9600)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/ttyNOPE9"), "{e}");
    }

    #[test]
    fn follows_a_growing_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("console.log");
        std::fs::write(&p, "old line\n").unwrap();
        let console = Console::follow_file(&p);
        std::thread::sleep(Duration::from_millis(100));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "firmware 2.0 ready").unwrap();
        let mut cursor = 0;
        console
            .expect(
                &Regex::new("ready").unwrap(),
                Duration::from_secs(5),
                &mut cursor,
            )
            .unwrap();
        assert!(
            console.lines().iter().all(|l| l.text != "old line"),
            "starts at the end of the file"
        );
    }
}
