//! The daemon's log writer: stderr behind a bounded queue, so a log reader that stalls (a full
//! pipe nobody drains) never stalls the gateway that logs every request.
//!
//! Lines go through a queue of [`QUEUE_LINES`] to one writer thread. When the queue is full a
//! line is dropped and counted, and the writer says how many were dropped once it catches up.
//! Short-lived verbs keep writing stderr directly: they must not lose their last words.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Log lines waiting for stderr at most.
pub const QUEUE_LINES: usize = 8192;

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// A `tracing_subscriber` writer that queues whole lines for stderr.
#[derive(Clone)]
pub struct QueuedStderr {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl QueuedStderr {
    /// Starts the writer thread, to stderr.
    pub fn start() -> Self {
        Self::start_to(std::io::stderr(), QUEUE_LINES)
    }

    /// Starts the writer thread, to `out`, with room for `capacity` waiting lines.
    fn start_to(out: impl Write + Send + 'static, capacity: usize) -> Self {
        let (queue, lines) = sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("skiff-log".into())
            .spawn(move || write_lines(out, &lines, &counted))
            .expect("starting the log writer thread");
        Self { queue, dropped }
    }

    /// Waits up to `timeout` for queued lines to reach stderr (at exit).
    pub fn flush(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let (done, flushed) = sync_channel(1);
        let mut message = Message::Flush(done);
        // A full queue is waited on, briefly: a blocking send could wait for ever on a
        // stalled stderr.
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = flushed.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

fn write_lines(mut out: impl Write, lines: &Receiver<Message>, dropped: &AtomicU64) {
    for message in lines {
        match message {
            Message::Line(line) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        out,
                        "skiff: {lost} log lines dropped: stderr was read too slowly"
                    );
                }
                let _ = out.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            text: Vec::with_capacity(256),
            to: self.clone(),
        }
    }
}

/// One log event being formatted; queued whole when dropped.
pub struct Line {
    text: Vec<u8>,
    to: QueuedStderr,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.text);
        if let Err(TrySendError::Full(_)) = self.to.queue.try_send(Message::Line(text)) {
            self.to.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::channel;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink that waits for a go-ahead before its first write, then keeps what it gets.
    struct Stalled {
        go: Option<Receiver<()>>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(go) = self.go.take() {
                let _ = go.recv();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(queued: &QueuedStderr, text: &str) {
        let mut line = queued.make_writer();
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_stalled_reader_costs_lines_never_a_wait() {
        let (go, wait) = channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let queued = QueuedStderr::start_to(
            Stalled {
                go: Some(wait),
                got: got.clone(),
            },
            4,
        );
        // The writer takes one line and stalls on it; four more fill the queue; the rest
        // are dropped at once instead of blocking this thread.
        for n in 0..20 {
            log(&queued, &format!("line {n}\n"));
        }
        go.send(()).unwrap();
        queued.flush(Duration::from_secs(60));
        log(&queued, "after\n");
        queued.flush(Duration::from_secs(60));
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() < 20, "some lines were dropped:\n{text}");
        let notice = lines
            .iter()
            .find(|l| l.contains("log lines dropped"))
            .unwrap_or_else(|| panic!("no drop notice:\n{text}"));
        let dropped: usize = notice
            .trim_start_matches("skiff: ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let kept = lines.iter().filter(|l| l.starts_with("line ")).count();
        assert_eq!(
            kept + dropped,
            20,
            "every line is written or counted:\n{text}"
        );
        assert_eq!(lines.last(), Some(&"after"));
    }
}
