//! Where a running job's output goes: [`OutputSink`] (the executor's end)
//! feeds a writer task that batches chunks into the store and wakes the
//! followers of the job's output stream ([`Followers`]).
//!
//! Batching: the writer takes what arrived within [`BATCH_WINDOW`] (up to
//! [`BATCH_BYTES`]), merges neighbouring pieces of the same stream into
//! chunks of at most [`CHUNK_BYTES`], and stores them in one transaction, so
//! a 1 MB output is a handful of transactions, not thousands.

use mags_api::limits::MAX_OUTPUT_BYTES;
use mags_api::OutputStream;
use mags_store::{clock, NewChunk, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

/// How long the writer waits for more output before storing a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// A batch is stored as soon as it holds this many bytes.
pub const BATCH_BYTES: usize = 256 * 1024;
/// The largest stored chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Per-job wake-ups for output followers. Entries live while someone holds
/// them; dead ones are pruned as new ones are made.
#[derive(Debug, Default, Clone)]
pub struct Followers {
    map: Arc<Mutex<HashMap<String, Weak<Notify>>>>,
}

impl Followers {
    /// The job's [`Notify`], made if needed.
    pub fn get(&self, job_id: &str) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(job_id).and_then(Weak::upgrade) {
            return n;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let n = Arc::new(Notify::new());
        map.insert(job_id.to_string(), Arc::downgrade(&n));
        n
    }

    /// Wakes everyone following `job_id` (no-op if nobody is).
    pub fn notify(&self, job_id: &str) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(job_id).and_then(Weak::upgrade) {
            n.notify_waiters();
        }
    }
}

struct Piece {
    stream: OutputStream,
    data: Vec<u8>,
    ts: i64,
}

/// What the writer task receives.
enum Msg {
    Piece(Piece),
    /// Store everything before this now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The executor's handle for one job: output, and the moment the VM is up.
/// Cheap to clone; the writer finishes when every clone is dropped.
#[derive(Clone)]
pub struct OutputSink {
    job_id: Arc<str>,
    tx: mpsc::Sender<Msg>,
    store: Store,
    followers: Followers,
}

impl OutputSink {
    /// Starts the writer task for `job_id`, continuing after any output
    /// already stored. Await the handle after dropping every sink clone to
    /// know that all output is stored.
    pub fn start(store: Store, followers: Followers, job_id: &str) -> (OutputSink, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(256);
        let sink = OutputSink {
            job_id: Arc::from(job_id),
            tx,
            store: store.clone(),
            followers: followers.clone(),
        };
        let writer = Writer {
            store,
            notify: followers.get(job_id),
            job_id: job_id.to_string(),
            next_seq: None,
            total: 0,
            truncated: false,
        };
        (sink, tokio::spawn(writer.run(rx)))
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Appends bytes the script wrote to stdout.
    pub async fn stdout(&self, data: impl Into<Vec<u8>>) {
        self.push(OutputStream::Stdout, data.into()).await;
    }

    /// Appends bytes the script wrote to stderr.
    pub async fn stderr(&self, data: impl Into<Vec<u8>>) {
        self.push(OutputStream::Stderr, data.into()).await;
    }

    /// Appends a line from Mags itself (a newline is added).
    pub async fn system(&self, message: &str) {
        self.push(OutputStream::System, format!("{message}\n").into_bytes())
            .await;
    }

    async fn push(&self, stream: OutputStream, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let piece = Piece {
            stream,
            data,
            ts: clock::now_ms(),
        };
        if self.tx.send(Msg::Piece(piece)).await.is_err() {
            tracing::warn!(job = %self.job_id, "output writer is gone; output dropped");
        }
    }

    /// Waits until everything sent so far (through any clone) is stored, so
    /// a state change made next is seen after that output.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Records that the job now runs in VM `vm_id` and tells followers.
    pub async fn running(&self, vm_id: &str) -> Result<(), StoreError> {
        self.store.mark_running(&self.job_id, vm_id).await?;
        self.followers.notify(&self.job_id);
        Ok(())
    }
}

struct Writer {
    store: Store,
    notify: Arc<Notify>,
    job_id: String,
    next_seq: Option<i64>,
    total: u64,
    truncated: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closed = false;
        while !closed {
            let first = match rx.recv().await {
                Some(Msg::Piece(p)) => p,
                Some(Msg::Flush(done)) => {
                    let _ = done.send(());
                    continue;
                }
                None => break,
            };
            let mut batch_bytes = first.data.len();
            let mut batch = vec![first];
            let mut flushed = None;
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch_bytes < BATCH_BYTES {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(Msg::Piece(p)) => {
                            batch_bytes += p.data.len();
                            batch.push(p);
                        }
                        Some(Msg::Flush(done)) => {
                            flushed = Some(done);
                            break;
                        }
                        None => {
                            closed = true;
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.store_batch(batch).await;
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    async fn store_batch(&mut self, batch: Vec<Piece>) {
        let seq = match self.next_seq {
            Some(s) => s,
            None => match self.store.last_output_seq(&self.job_id).await {
                Ok(last) => last.map_or(0, |s| s + 1),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the job's output position");
                    return;
                }
            },
        };
        let pieces = self.limit(batch);
        let chunks = coalesce(pieces, seq);
        let Some(last) = chunks.last().map(|c| c.seq) else {
            return;
        };
        match self.store.append_output(&self.job_id, &chunks).await {
            Ok(()) => self.next_seq = Some(last + 1),
            Err(e) => {
                // Re-read the position next time rather than trusting ours.
                self.next_seq = None;
                tracing::error!(error = %e, bytes = chunks.iter().map(|c| c.data.len()).sum::<usize>(), "output dropped: cannot store it");
            }
        }
        self.notify.notify_waiters();
    }

    /// Applies [`MAX_OUTPUT_BYTES`], adding one notice when it first bites.
    fn limit(&mut self, batch: Vec<Piece>) -> Vec<Piece> {
        let mut out = Vec::with_capacity(batch.len());
        for mut p in batch {
            if self.truncated && p.stream != OutputStream::System {
                continue;
            }
            let room = MAX_OUTPUT_BYTES.saturating_sub(self.total);
            let len = p.data.len() as u64;
            if p.stream != OutputStream::System && len > room {
                p.data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                let ts = p.ts;
                out.push(p);
                out.push(Piece {
                    stream: OutputStream::System,
                    data: format!(
                        "\noutput truncated: more than {} MiB\n",
                        MAX_OUTPUT_BYTES / (1024 * 1024)
                    )
                    .into_bytes(),
                    ts,
                });
                self.truncated = true;
                self.total = MAX_OUTPUT_BYTES;
                continue;
            }
            self.total += len;
            out.push(p);
        }
        out
    }
}

/// Merges neighbouring pieces of one stream into chunks of at most
/// [`CHUNK_BYTES`], numbered from `first_seq`. A chunk keeps the timestamp
/// of its first piece.
fn coalesce(pieces: Vec<Piece>, first_seq: i64) -> Vec<NewChunk> {
    let mut chunks: Vec<NewChunk> = Vec::new();
    for p in pieces {
        let mut data = p.data.as_slice();
        while !data.is_empty() {
            let last = chunks
                .last_mut()
                .filter(|c| c.stream == p.stream && c.data.len() < CHUNK_BYTES);
            match last {
                Some(c) => {
                    let take = (CHUNK_BYTES - c.data.len()).min(data.len());
                    c.data.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
                None => {
                    let take = CHUNK_BYTES.min(data.len());
                    chunks.push(NewChunk {
                        seq: first_seq + chunks.len() as i64,
                        stream: p.stream,
                        data: data[..take].to_vec(),
                        ts: p.ts,
                    });
                    data = &data[take..];
                }
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(stream: OutputStream, data: &[u8], ts: i64) -> Piece {
        Piece {
            stream,
            data: data.to_vec(),
            ts,
        }
    }

    #[test]
    fn coalesce_merges_same_stream_neighbours() {
        let chunks = coalesce(
            vec![
                piece(OutputStream::Stdout, b"a", 1),
                piece(OutputStream::Stdout, b"b", 2),
                piece(OutputStream::Stderr, b"c", 3),
                piece(OutputStream::Stdout, b"d", 4),
            ],
            7,
        );
        let got: Vec<_> = chunks
            .iter()
            .map(|c| (c.seq, c.stream, c.data.clone(), c.ts))
            .collect();
        assert_eq!(
            got,
            vec![
                (7, OutputStream::Stdout, b"ab".to_vec(), 1),
                (8, OutputStream::Stderr, b"c".to_vec(), 3),
                (9, OutputStream::Stdout, b"d".to_vec(), 4),
            ]
        );
    }

    #[test]
    fn coalesce_splits_big_pieces() {
        let big = vec![b'x'; CHUNK_BYTES * 2 + 10];
        let chunks = coalesce(vec![piece(OutputStream::Stdout, &big, 1)], 0);
        assert_eq!(
            chunks.iter().map(|c| c.data.len()).collect::<Vec<_>>(),
            vec![CHUNK_BYTES, CHUNK_BYTES, 10]
        );
        let joined: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(joined, big);
    }

    #[test]
    fn followers_share_one_notify_per_job() {
        let f = Followers::default();
        let a = f.get("j");
        let b = f.get("j");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let c = f.get("k");
        assert_eq!(
            f.map.lock().map(|m| m.len()).unwrap_or(0),
            1,
            "dead entry pruned"
        );
        drop(c);
    }
}
