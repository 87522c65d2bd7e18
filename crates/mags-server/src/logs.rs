//! Turning raw output chunks into the line entries of `GET .../logs`, and
//! the streamed body of that route.
//!
//! Lines are split per stream on `\n` (a `\r` before it is dropped); a
//! trailing partial line is an entry of its own. Each entry carries the
//! timestamp of the chunk in which its line started. Lines of different
//! streams are ordered by where they started.
//!
//! Memory is bounded whatever the job's output: [`LogBody`] reads
//! [`LOG_READ_BATCH`] chunks at a time, [`Lines`] holds only the lines not
//! yet sent, and the JSON goes out in frames of about [`FRAME_BYTES`]. Two
//! bounds keep [`Lines`] small: a line longer than [`MAX_LINE_BYTES`] is
//! split into entries of that size, and when the finished lines held back
//! behind a still open line of another stream pass [`MAX_HELD_BYTES`], that
//! open line is cut there (its rest becomes the next entry of its stream).

use bytes::Bytes;
use mags_api::{LogEntry, OutputStream};
use mags_store::clock::rfc3339;
use mags_store::{OutputChunk, Store};
use std::collections::VecDeque;

/// The longest entry: a longer line is split into entries of this size.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most bytes of finished lines held back behind an open line.
pub const MAX_HELD_BYTES: usize = 1024 * 1024;
/// Output chunks (each at most [`mags_control::sink::CHUNK_BYTES`]) read per query.
pub const LOG_READ_BATCH: i64 = 16;
/// A frame of the streamed body is sent once it holds this many bytes.
pub const FRAME_BYTES: usize = 64 * 1024;
/// What one held line costs besides its bytes (for [`MAX_HELD_BYTES`]).
const ENTRY_OVERHEAD: usize = 64;

/// An entry being assembled or waiting to be sent.
struct Slot {
    stream: OutputStream,
    ts: i64,
    /// `None` while the line is still open.
    line: Option<Vec<u8>>,
}

/// Splits chunks into entries as they come, in order; see the module docs.
#[derive(Default)]
pub struct Lines {
    /// Entries in output order; the front ones are sent once finished.
    queue: VecDeque<Slot>,
    /// Absolute number of `queue[0]`.
    first: u64,
    /// Per stream: the absolute number of its open entry and its bytes.
    open: [Option<(u64, Vec<u8>)>; 3],
    /// Bytes of finished entries in `queue` (plus [`ENTRY_OVERHEAD`] each).
    held: usize,
}

impl Lines {
    /// Feeds the next chunk (in `seq` order).
    pub fn push(&mut self, chunk: &OutputChunk) {
        let i = index(chunk.stream);
        for piece in chunk.data.split_inclusive(|b| *b == b'\n') {
            let mut piece = piece;
            while !piece.is_empty() {
                if self.open[i].is_none() {
                    let n = self.first + self.queue.len() as u64;
                    self.queue.push_back(Slot {
                        stream: chunk.stream,
                        ts: chunk.ts,
                        line: None,
                    });
                    self.open[i] = Some((n, Vec::new()));
                }
                let Some((_, bytes)) = self.open[i].as_mut() else {
                    break;
                };
                let mut take = piece.len().min(MAX_LINE_BYTES - bytes.len());
                // A line of exactly the limit keeps its newline (no empty
                // entry after it).
                if piece.get(take) == Some(&b'\n') {
                    take += 1;
                }
                bytes.extend_from_slice(&piece[..take]);
                piece = &piece[take..];
                if bytes.ends_with(b"\n") || bytes.len() >= MAX_LINE_BYTES {
                    self.close(i);
                }
            }
        }
        self.bound_held();
    }

    /// Ends every open line (the output is complete).
    pub fn finish(&mut self) {
        for i in 0..self.open.len() {
            self.close(i);
        }
    }

    /// The next entry to send, if it is finished.
    pub fn pop(&mut self) -> Option<LogEntry> {
        // The front entry goes only once its line is finished.
        self.queue.front()?.line.as_ref()?;
        let slot = self.queue.pop_front()?;
        self.first += 1;
        let line = slot.line.unwrap_or_default();
        self.held = self.held.saturating_sub(line.len() + ENTRY_OVERHEAD);
        Some(entry(slot.stream, slot.ts, &line))
    }

    /// Finishes stream `i`'s open entry, if any.
    fn close(&mut self, i: usize) {
        let Some((n, mut line)) = self.open[i].take() else {
            return;
        };
        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        self.held += line.len() + ENTRY_OVERHEAD;
        let at = usize::try_from(n - self.first).unwrap_or(usize::MAX);
        if let Some(slot) = self.queue.get_mut(at) {
            slot.line = Some(line);
        }
    }

    /// Cuts the open line at the front when too much waits behind it; the
    /// next piece of its stream starts a new entry.
    fn bound_held(&mut self) {
        if self.held <= MAX_HELD_BYTES {
            return;
        }
        let front = self.first;
        let blocking = self
            .open
            .iter()
            .position(|o| matches!(o, Some((n, _)) if *n == front));
        if let Some(i) = blocking {
            self.close(i);
        }
    }
}

/// Splits chunks (in `seq` order) into log entries, all at once (tests and
/// small outputs; the route streams with [`LogBody`]).
pub fn chunks_to_entries(chunks: &[OutputChunk]) -> Vec<LogEntry> {
    let mut lines = Lines::default();
    let mut out = Vec::new();
    for c in chunks {
        lines.push(c);
        out.extend(std::iter::from_fn(|| lines.pop()));
    }
    lines.finish();
    out.extend(std::iter::from_fn(|| lines.pop()));
    out
}

fn entry(stream: OutputStream, ts: i64, line: &[u8]) -> LogEntry {
    LogEntry {
        timestamp: rfc3339(ts),
        level: match stream {
            OutputStream::Stderr => "error",
            OutputStream::Stdout | OutputStream::System => "info",
        }
        .to_string(),
        message: String::from_utf8_lossy(line).into_owned(),
        source: stream,
    }
}

fn index(s: OutputStream) -> usize {
    match s {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
        OutputStream::System => 2,
    }
}

/// The body of `GET .../logs`: `{"logs":[...]}` built frame by frame from
/// the store, entries `offset..offset + limit` (all by default).
pub struct LogBody {
    store: Store,
    job_id: String,
    /// Last `seq` read.
    after: i64,
    batch: VecDeque<OutputChunk>,
    lines: Lines,
    /// Every stored chunk has been read.
    read_all: bool,
    finished: bool,
    skip: u64,
    left: Option<u64>,
    state: BodyState,
}

#[derive(PartialEq, Eq)]
enum BodyState {
    Start,
    Entries { sent: bool },
    Done,
}

impl LogBody {
    /// The body for job `job_id`'s entries `offset..offset + limit`.
    pub fn new(store: Store, job_id: String, offset: u64, limit: Option<u64>) -> LogBody {
        LogBody {
            store,
            job_id,
            after: -1,
            batch: VecDeque::new(),
            lines: Lines::default(),
            read_all: false,
            finished: false,
            skip: offset,
            left: limit,
            state: BodyState::Start,
        }
    }

    /// The body as a stream of frames. A store error ends it early, so the
    /// client sees a broken body, never a shorter valid one.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::unfold(self, |mut b| async move {
            match b.next_frame().await {
                Ok(Some(frame)) => Some((Ok(frame), b)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(job = %b.job_id, error = %e, "logs ended early");
                    b.state = BodyState::Done;
                    Some((Err(std::io::Error::other(e)), b))
                }
            }
        })
    }

    /// The next frame; `None` after the last.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, mags_store::StoreError> {
        let mut out = Vec::with_capacity(FRAME_BYTES + 1024);
        let mut sent = match self.state {
            BodyState::Done => return Ok(None),
            BodyState::Start => {
                out.extend_from_slice(b"{\"logs\":[");
                false
            }
            BodyState::Entries { sent } => sent,
        };
        loop {
            if out.len() >= FRAME_BYTES {
                self.state = BodyState::Entries { sent };
                return Ok(Some(Bytes::from(out)));
            }
            if self.left != Some(0) {
                if let Some(e) = self.lines.pop() {
                    if self.skip > 0 {
                        self.skip -= 1;
                        continue;
                    }
                    if sent {
                        out.push(b',');
                    }
                    // Plain strings: serializing cannot fail.
                    if serde_json::to_writer(&mut out, &e).is_ok() {
                        sent = true;
                    }
                    self.left = self.left.map(|n| n - 1);
                    continue;
                }
                if let Some(chunk) = self.batch.pop_front() {
                    self.lines.push(&chunk);
                    continue;
                }
                if !self.read_all {
                    let batch = self
                        .store
                        .output_after(&self.job_id, self.after, LOG_READ_BATCH)
                        .await?;
                    self.read_all = (batch.len() as i64) < LOG_READ_BATCH;
                    if let Some(last) = batch.last() {
                        self.after = last.seq;
                    }
                    self.batch = batch.into();
                    continue;
                }
                if !self.finished {
                    self.lines.finish();
                    self.finished = true;
                    continue;
                }
            }
            out.extend_from_slice(b"]}");
            self.state = BodyState::Done;
            return Ok(Some(Bytes::from(out)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: i64, stream: OutputStream, data: &[u8], ts: i64) -> OutputChunk {
        OutputChunk {
            seq,
            stream,
            data: data.to_vec(),
            ts,
        }
    }

    fn messages(e: &[LogEntry]) -> Vec<(&str, OutputStream)> {
        e.iter().map(|e| (e.message.as_str(), e.source)).collect()
    }

    #[test]
    fn lines_split_across_chunks_keep_their_start_time() {
        let e = chunks_to_entries(&[
            chunk(0, OutputStream::Stdout, b"hel", 1000),
            chunk(1, OutputStream::Stdout, b"lo\nwor", 2000),
            chunk(2, OutputStream::Stdout, b"ld\r\n", 3000),
        ]);
        assert_eq!(
            messages(&e),
            vec![
                ("hello", OutputStream::Stdout),
                ("world", OutputStream::Stdout)
            ]
        );
        assert_eq!(e[0].timestamp, rfc3339(1000));
        assert_eq!(e[1].timestamp, rfc3339(2000));
        assert_eq!(e[0].level, "info");
    }

    #[test]
    fn streams_are_split_separately_and_partials_kept() {
        let e = chunks_to_entries(&[
            chunk(0, OutputStream::Stdout, b"out1 ", 1),
            chunk(1, OutputStream::Stderr, b"err1\nerr", 2),
            chunk(2, OutputStream::Stdout, b"still\n", 3),
            chunk(3, OutputStream::System, b"bye\n", 4),
        ]);
        assert_eq!(
            messages(&e),
            vec![
                ("out1 still", OutputStream::Stdout),
                ("err1", OutputStream::Stderr),
                ("err", OutputStream::Stderr),
                ("bye", OutputStream::System),
            ]
        );
        assert_eq!(e[1].level, "error");
    }

    #[test]
    fn empty_lines_and_invalid_utf8() {
        let e = chunks_to_entries(&[chunk(0, OutputStream::Stdout, b"\n\xff\n", 1)]);
        assert_eq!(
            messages(&e),
            vec![
                ("", OutputStream::Stdout),
                ("\u{fffd}", OutputStream::Stdout)
            ]
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_is_split() {
        let mut long = vec![b'a'; MAX_LINE_BYTES + 10];
        long.push(b'\n');
        let e = chunks_to_entries(&[chunk(0, OutputStream::Stdout, &long, 1)]);
        let sizes: Vec<usize> = e.iter().map(|e| e.message.len()).collect();
        assert_eq!(sizes, vec![MAX_LINE_BYTES, 10]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_one_entry() {
        let mut line = vec![b'a'; MAX_LINE_BYTES];
        line.extend_from_slice(b"\nnext\n");
        let e = chunks_to_entries(&[chunk(0, OutputStream::Stdout, &line, 1)]);
        let sizes: Vec<usize> = e.iter().map(|e| e.message.len()).collect();
        assert_eq!(sizes, vec![MAX_LINE_BYTES, 4]);
    }

    #[test]
    fn an_open_line_holding_back_too_much_is_cut() {
        let mut chunks = vec![chunk(0, OutputStream::Stdout, b"open", 1)];
        let err_line = vec![b'e'; 1023];
        let mut data = Vec::new();
        for _ in 0..64 {
            data.extend_from_slice(&err_line);
            data.push(b'\n');
        }
        // 2 MiB of stderr lines behind an open stdout line.
        for seq in 1..=32 {
            chunks.push(chunk(seq, OutputStream::Stderr, &data, 2));
        }
        chunks.push(chunk(33, OutputStream::Stdout, b" rest\n", 3));
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut most_held = 0;
        for c in &chunks {
            lines.push(c);
            most_held = most_held.max(lines.held);
            out.extend(std::iter::from_fn(|| lines.pop()));
        }
        lines.finish();
        out.extend(std::iter::from_fn(|| lines.pop()));
        assert!(most_held <= MAX_HELD_BYTES + 2 * 64 * 1024, "{most_held}");
        assert_eq!(out[0].message, "open", "cut, sent first");
        assert_eq!(out.len(), 32 * 64 + 2);
        assert_eq!(out.last().map(|e| e.message.as_str()), Some(" rest"));
        assert!(out[1..out.len() - 1]
            .iter()
            .all(|e| e.message.len() == 1023));
    }
}
