//! Bytes to log lines, bounded: what a console or a script prints becomes lines of text whatever it is. Bytes
//! that are not UTF-8 are replaced (U+FFFD), never an error; a line longer than [`MAX_LINE`] keeps its first
//! [`MAX_LINE`] bytes and says how much of it was dropped, so one endless line cannot eat the agent's memory
//! or the controller's log.

/// The longest line kept, in bytes (what is past it is counted and dropped).
pub const MAX_LINE: usize = 8 * 1024;

/// Splits a byte stream into bounded lines.
#[derive(Debug)]
pub struct Lines {
    partial: Vec<u8>,
    dropped: usize,
    max: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new(MAX_LINE)
    }
}

impl Lines {
    /// A splitter keeping at most `max` bytes of each line.
    pub fn new(max: usize) -> Self {
        Lines {
            partial: Vec::new(),
            dropped: 0,
            max: max.max(1),
        }
    }

    /// Feeds bytes; returns the lines they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = vec![];
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match chunk.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (chunk, false),
            };
            let room = self.max - self.partial.len();
            let keep = body.len().min(room);
            self.partial.extend_from_slice(&body[..keep]);
            self.dropped += body.len() - keep;
            if ends {
                out.push(self.take());
            }
        }
        out
    }

    /// The last line if the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut text = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        if self.dropped > 0 {
            text.push_str(&format!(
                " … [line truncated: {} more bytes dropped]",
                self.dropped
            ));
        }
        self.partial.clear();
        self.dropped = 0;
        text
    }
}

/// Reads `r` to its end as bounded lines, handing each to `f` (a read error ends it like end of file).
pub fn read_lines(mut r: impl std::io::Read, mut f: impl FnMut(String)) {
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n]).into_iter().for_each(&mut f),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Some(last) = lines.finish() {
        f(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_fatal() {
        let mut l = Lines::default();
        assert_eq!(
            l.feed(b"ok \xff\xfe bytes\r\nnext"),
            vec!["ok \u{fffd}\u{fffd} bytes"]
        );
        assert_eq!(l.finish().as_deref(), Some("next"));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn an_endless_line_keeps_its_head_and_counts_the_rest() {
        let mut l = Lines::new(10);
        let mut got = vec![];
        for _ in 0..1000 {
            got.extend(l.feed(&[b'x'; 1000]));
        }
        assert!(got.is_empty(), "no newline yet");
        got.extend(l.feed(b"\nshort\n"));
        assert_eq!(
            got,
            vec![
                "xxxxxxxxxx … [line truncated: 999990 more bytes dropped]".to_string(),
                "short".to_string()
            ]
        );
    }

    #[test]
    fn lines_split_across_reads_join() {
        let mut got = vec![];
        read_lines(&b"a\nbc"[..], |s| got.push(s));
        assert_eq!(got, vec!["a", "bc"]);
        let mut l = Lines::default();
        assert!(l.feed(b"he").is_empty());
        assert_eq!(l.feed(b"llo\n"), vec!["hello"]);
    }
}
