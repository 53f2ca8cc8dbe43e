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
    /// Starts the writer thread.
    pub fn start() -> Self {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("skiff-log".into())
            .spawn(move || write_lines(&lines, &counted))
            .expect("starting the log writer thread");
        Self { queue, dropped }
    }

    /// Waits up to `timeout` for queued lines to reach stderr (at exit).
    pub fn flush(&self, timeout: Duration) {
        let (done, flushed) = sync_channel(1);
        if self.queue.try_send(Message::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(timeout);
        }
    }
}

fn write_lines(lines: &Receiver<Message>, dropped: &AtomicU64) {
    let stderr = std::io::stderr();
    for message in lines {
        let mut out = stderr.lock();
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
