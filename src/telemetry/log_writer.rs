//! The log writer: one thread that writes stderr, fed through a bounded queue, so that no request ever
//! waits for the log.
//!
//! Two kinds of entries share the one queue, so lines come out in the order they were made: lines that
//! tracing formatted (every log line but the audit's), and audit records ([`AuditRecord`]), which a
//! request hands over unformatted and the writer thread formats into the line ([`super::audit_line`]).
//! The queue is one byte vector that keeps its capacity: an entry is copied in (a kind, a length, the
//! line's bytes or the record's [`audit_line::encode`]), so a request's share of its audit line is one
//! uncontended lock and a copy of a few hundred bytes, with no allocation, and every string is freed by
//! the thread that allocated it (frees from another thread cost glibc's allocator more than the copy).
//!
//! The writer thread takes the whole queue at once (the vectors are swapped under the lock), formats it
//! into one reusable buffer and writes it with one `write` call. After a write it lingers [`LINGER`]
//! before looking again, so that under load it wakes by its own timer, a thousand times a second, rather
//! than once a line; only when it finds the queue empty does it park, and then the next entry wakes it
//! at once (a lone line is not delayed). Requests never wake it while it is awake or lingering.
//!
//! At most [`QUEUE_LINES`] entries and about [`QUEUE_BYTES`] bytes wait; when the queue is full (stderr is read slower than lines come)
//! the newest are dropped and counted (`tollgate_log_lines_dropped_total`). [`WriterGuard`] closes the
//! queue and waits for every queued entry to be written: a graceful shutdown loses nothing.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::audit_line::{self, AuditRecord};

/// Most entries queued for stderr. At the audit line's usual size (under 1 KiB) that is at most 8 MiB, and
/// at 30,000 requests a second it is a quarter of a second of lines that a slow reader may lag behind.
pub const QUEUE_LINES: usize = 8192;

/// Most bytes queued: a client chooses how long its audit line is (64 scopes of 512 bytes, more with a
/// higher `server.max_scopes`), so the count alone would let long lines hold hundreds of megabytes while
/// the reader lags. An entry is queued while fewer bytes than this wait, so at most one entry more.
pub const QUEUE_BYTES: usize = 16 << 20;

/// How long the writer waits after a write before it looks at the queue again: under load, the lines of
/// that time go out together, and the writer wakes by its own timer instead of by each request.
pub const LINGER: Duration = Duration::from_millis(1);

/// How long a shutdown waits for the queued lines to be written (a reader that stopped reading would
/// otherwise hold the process forever).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

pub use super::audit_line::Format;

/// The kinds of queued entries: a line tracing formatted (newline included), or an encoded audit record.
const LINE: u8 = 0;
const AUDIT: u8 = 1;

struct Queue {
    /// Entries, each a kind, a little-endian `u32` length and that many bytes.
    bytes: Vec<u8>,
    /// Entries in `bytes`.
    count: usize,
    /// The writer is parked (or about to park) and must be woken by the next entry.
    parked: bool,
    /// No more entries: the writer writes what is queued and stops.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    writer: OnceLock<Thread>,
    dropped: AtomicU64,
    format: Format,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing under the lock can panic (copies into a vector, an abort if memory runs out).
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queue one entry of `kind`, whose bytes `fill` appends.
    fn push(&self, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut q = self.lock();
        if q.closed || q.count >= QUEUE_LINES || q.bytes.len() >= QUEUE_BYTES {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = q.bytes.len();
        q.bytes.push(kind);
        q.bytes.extend_from_slice(&[0; 4]);
        fill(&mut q.bytes);
        let len = u32::try_from(q.bytes.len() - start - 5).unwrap_or(u32::MAX);
        q.bytes[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
        q.count += 1;
        let wake = std::mem::replace(&mut q.parked, false);
        drop(q);
        if wake {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }
}

/// The queue to the writer thread; clones share it.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// Closes the queue when dropped and waits (at most [`SHUTDOWN_WAIT`]) until every queued line is written.
#[must_use = "dropping the guard stops the log writer"]
pub struct WriterGuard {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

impl LogWriter {
    /// Start the writer thread, writing `out` (stderr in production) in `format`.
    pub fn start(out: Box<dyn Write + Send>, format: Format) -> std::io::Result<(LogWriter, WriterGuard)> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { bytes: Vec::new(), count: 0, parked: false, closed: false }),
            writer: OnceLock::new(),
            dropped: AtomicU64::new(0),
            format,
        });
        let (done_tx, done) = std::sync::mpsc::channel();
        let s = shared.clone();
        let handle = std::thread::Builder::new().name("tollgate-log".into()).spawn(move || {
            run(&s, out);
            let _ = done_tx.send(());
        })?;
        let _ = shared.writer.set(handle.thread().clone());
        Ok((LogWriter(shared.clone()), WriterGuard { shared, done }))
    }

    /// Queue an audit record (dropped and counted if the queue is full).
    pub fn audit(&self, record: &AuditRecord<'_>) {
        self.0.push(AUDIT, |out| audit_line::encode(record, out));
    }

    /// Queue a formatted line, newline included (dropped and counted if the queue is full).
    pub fn line(&self, line: &[u8]) {
        self.0.push(LINE, |out| out.extend_from_slice(line));
    }

    /// Lines dropped so far because the queue was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    pub fn format(&self) -> Format {
        self.0.format
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let wake = {
            let mut q = self.shared.lock();
            q.closed = true;
            std::mem::replace(&mut q.parked, false)
        };
        if wake {
            if let Some(t) = self.shared.writer.get() {
                t.unpark();
            }
        }
        let _ = self.done.recv_timeout(SHUTDOWN_WAIT);
    }
}

/// The writer thread: take everything queued, format it into one buffer, write it at once; linger after
/// a write, park when there was nothing; stop once the queue is closed and empty.
fn run(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch: Vec<u8> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let closed = {
            let mut q = shared.lock();
            if q.count == 0 {
                if q.closed {
                    break;
                }
                q.parked = true;
                drop(q);
                // Woken by the next entry or the guard; a spurious wake-up just looks again.
                std::thread::park();
                continue;
            }
            std::mem::swap(&mut q.bytes, &mut batch);
            q.count = 0;
            q.closed
        };
        let mut rest = &batch[..];
        while let Some((kind, entry, next)) = split_entry(rest) {
            let start = buf.len();
            match kind {
                AUDIT => {
                    if let Some(record) = audit_line::decode(entry) {
                        audit_line::write(&record, shared.format, &mut buf);
                    }
                }
                _ => buf.extend_from_slice(entry),
            }
            if shared.format == Format::Text {
                one_line(&mut buf, start);
            }
            rest = next;
        }
        batch.clear();
        // A reader that went away (EPIPE) or a full disk: nothing to tell, the lines are gone.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
        buf.clear();
        for v in [&mut buf, &mut batch] {
            if v.capacity() > 4 << 20 {
                v.shrink_to(64 * 1024);
            }
        }
        if !closed {
            std::thread::sleep(LINGER);
        }
    }
}

/// Keep the text line that starts at `start` of `buf` one line: the text format writes some values as they
/// are (tracing's `%` fields: a refused `service`, a `client_id`), and a client that puts a newline in one
/// must not start a line of its own making (a forged audit line). A control character before the line's
/// final newline is written as an escape (`\n`, `\r`, `\t`, `\x1b`); lines without one, every ordinary
/// line, are left as they are. The JSON format escapes them itself.
fn one_line(buf: &mut Vec<u8>, start: usize) {
    let end = buf.len() - usize::from(buf.last() == Some(&b'\n') && buf.len() > start);
    let is_control = |b: &u8| *b < 0x20 || *b == 0x7f;
    let Some(first) = buf[start..end].iter().position(is_control) else { return };
    let tail: Vec<u8> = buf.split_off(start + first);
    let (body, newline) = tail.split_at(end - start - first);
    for &b in body {
        match b {
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b if is_control(&b) => {
                let _ = write!(buf, "\\x{b:02x}");
            }
            b => buf.push(b),
        }
    }
    buf.extend_from_slice(newline);
}

/// The first entry of `bytes`: its kind, its bytes and what follows it.
fn split_entry(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&kind, rest) = bytes.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let entry = rest.get(4..4 + len)?;
    Some((kind, entry, &rest[4 + len..]))
}

static GLOBAL: OnceLock<LogWriter> = OnceLock::new();
/// [`AuditRoute`] as a number: 0 tracing, 1 off, 2 queue.
static AUDIT_ROUTE: AtomicU8 = AtomicU8::new(0);

/// Where a request's audit line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditRoute {
    /// Through a tracing event, formatted where it happens: when no writer is installed (unit tests,
    /// commands other than `serve`), or the format is one `audit_line` does not write (text in colours).
    Tracing = 0,
    /// Nowhere: the log filter turns the audit target's info events off. Nothing is built.
    Off = 1,
    /// As an [`AuditRecord`] to the installed writer.
    Queue = 2,
}

/// Make `writer` the process's log writer, audit records going by `audit` (once; false if one was
/// installed before, and then nothing changes).
pub fn install(writer: LogWriter, audit: AuditRoute) -> bool {
    let installed = GLOBAL.set(writer).is_ok();
    if installed {
        AUDIT_ROUTE.store(audit as u8, Ordering::Relaxed);
    }
    installed
}

/// Where an audit line goes now: one atomic load (the filter was asked once, at [`install`]).
pub fn audit_route() -> (AuditRoute, Option<&'static LogWriter>) {
    match AUDIT_ROUTE.load(Ordering::Relaxed) {
        1 => (AuditRoute::Off, None),
        2 => match GLOBAL.get() {
            Some(w) => (AuditRoute::Queue, Some(w)),
            None => (AuditRoute::Tracing, None),
        },
        _ => (AuditRoute::Tracing, None),
    }
}

/// Lines dropped by the process's log writer.
pub fn dropped() -> u64 {
    GLOBAL.get().map_or(0, LogWriter::dropped)
}

/// tracing's writer: each event's line becomes one queue entry (tracing writes an event's whole line in
/// one `write_all`).
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(self)
    }
}

/// See [`LogWriter`]'s `MakeWriter`.
pub struct LineWriter<'a>(&'a LogWriter);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;

    /// An output that records what was written and, while closed, holds every write (a reader that
    /// stopped reading), telling when a write is waiting.
    /// What was written, whether writes are held, how many writes began.
    type GateState = (Vec<u8>, bool, usize);

    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<GateState>, Condvar)>);

    impl Gate {
        fn closed() -> Gate {
            let g = Gate::default();
            g.0 .0.lock().unwrap().1 = true;
            g
        }
        fn open(&self) {
            self.0 .0.lock().unwrap().1 = false;
            self.0 .1.notify_all();
        }
        fn wait_for_a_blocked_write(&self) {
            let (m, c) = &*self.0;
            let _g = c.wait_while(m.lock().unwrap(), |s| s.2 == 0).unwrap();
        }
        fn text(&self) -> String {
            String::from_utf8(self.0 .0.lock().unwrap().0.clone()).unwrap()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.0;
            let mut s = m.lock().unwrap();
            s.2 += 1;
            c.notify_all();
            let mut s = c.wait_while(s, |s| s.1).unwrap();
            s.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_text_line_stays_one_line_whatever_its_values_hold() {
        let mut buf = b"earlier line\n".to_vec();
        let start = buf.len();
        buf.extend_from_slice(b"decision service=a\n2026 INFO forged=1\r\x1b[31m\ttab\n");
        one_line(&mut buf, start);
        assert_eq!(buf, b"earlier line\ndecision service=a\\n2026 INFO forged=1\\r\\x1b[31m\\ttab\n".to_vec());
        // An ordinary line, and one without its newline, are left as they are.
        let mut plain = b"decision service=registry.local client_id=\"x\"\n".to_vec();
        one_line(&mut plain, 0);
        assert_eq!(plain, b"decision service=registry.local client_id=\"x\"\n".to_vec());
        let mut cut = b"a\nb".to_vec();
        one_line(&mut cut, 0);
        assert_eq!(cut, b"a\\nb".to_vec());
    }

    #[test]
    fn a_full_queue_drops_the_newest_lines_counts_them_and_never_blocks_the_caller() {
        let gate = Gate::closed();
        let (w, guard) = LogWriter::start(Box::new(gate.clone()), Format::Json).unwrap();
        w.line(b"first\n");
        gate.wait_for_a_blocked_write(); // the writer took "first" and is stuck writing it
        for i in 0..QUEUE_LINES + 10 {
            w.line(format!("{i}\n").as_bytes()); // returns at once although nothing is written
        }
        assert_eq!(w.dropped(), 10, "the 10 lines beyond the queue are dropped and counted");
        gate.open();
        drop(guard);
        let expected: String =
            std::iter::once("first\n".to_string()).chain((0..QUEUE_LINES).map(|i| format!("{i}\n"))).collect();
        assert!(gate.text() == expected, "every queued line, in order, and none of the dropped ones");
    }

    #[test]
    fn long_lines_fill_the_queue_by_their_bytes_not_their_count() {
        let gate = Gate::closed();
        let (w, guard) = LogWriter::start(Box::new(gate.clone()), Format::Json).unwrap();
        w.line(b"first\n");
        gate.wait_for_a_blocked_write();
        let long = vec![b'x'; 64 << 10];
        for _ in 0..1000 {
            w.line(&long);
        }
        let queued = QUEUE_BYTES.div_ceil(long.len() + 5);
        assert_eq!(w.dropped(), 1000 - queued as u64, "{} of 1000 lines of 64 KiB fit", queued);
        gate.open();
        drop(guard);
        assert_eq!(gate.text().len(), "first\n".len() + queued * long.len());
    }

    #[test]
    fn closing_writes_every_queued_line_in_the_order_each_thread_queued_them() {
        let out = Gate::default();
        let (w, guard) = LogWriter::start(Box::new(out.clone()), Format::Json).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..1500 {
                        w.line(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard); // at once: most lines are still queued
        assert_eq!(w.dropped(), 0);
        let text = out.text();
        for t in 0..4 {
            let seen: Vec<usize> = text
                .lines()
                .filter_map(|l| l.split_once(' ').filter(|(a, _)| *a == t.to_string()))
                .map(|(_, i)| i.parse().unwrap())
                .collect();
            assert_eq!(seen, (0..1500).collect::<Vec<_>>(), "thread {t}'s lines, all and in order");
        }
        w.line(b"after\n");
        assert_eq!(w.dropped(), 1, "a line after the close is counted as dropped");
    }

    #[test]
    fn a_lone_line_is_written_at_once_and_a_parked_writer_wakes_for_the_next() {
        let out = Gate::default();
        let (w, _guard) = LogWriter::start(Box::new(out.clone()), Format::Text).unwrap();
        for n in 1..=3 {
            w.line(format!("line {n}\n").as_bytes());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while out.text().lines().count() < n {
                assert!(std::time::Instant::now() < deadline, "line {n} was not written");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(LINGER * 5); // long enough for the writer to park again
        }
    }
}
