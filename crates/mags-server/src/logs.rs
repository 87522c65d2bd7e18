//! Turning raw output chunks into the line entries of `GET .../logs`.
//!
//! Lines are split per stream on `\n` (a `\r` before it is dropped); a
//! trailing partial line is an entry of its own. Each entry carries the
//! timestamp of the chunk in which its line started. Lines of different
//! streams are ordered by where they started.

use crate::view::rfc3339;
use mags_api::{LogEntry, OutputStream};
use mags_store::OutputChunk;

/// A line being assembled for one stream.
#[derive(Default)]
struct Partial {
    /// Index in the output where the line's entry goes, and its start time.
    slot: Option<(usize, i64)>,
    bytes: Vec<u8>,
}

/// Splits chunks (in `seq` order) into log entries.
pub fn chunks_to_entries(chunks: &[OutputChunk]) -> Vec<LogEntry> {
    // Entries are reserved when their line starts and filled when it ends,
    // so interleaved streams keep their order.
    let mut slots: Vec<Option<LogEntry>> = Vec::new();
    let mut partial: [Partial; 3] = Default::default();
    for chunk in chunks {
        let p = &mut partial[index(chunk.stream)];
        for piece in chunk.data.split_inclusive(|b| *b == b'\n') {
            if p.slot.is_none() {
                p.slot = Some((slots.len(), chunk.ts));
                slots.push(None);
            }
            p.bytes.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                finish(&mut slots, p, chunk.stream);
            }
        }
    }
    for (i, p) in partial.iter_mut().enumerate() {
        if p.slot.is_some() {
            finish(&mut slots, p, STREAMS[i]);
        }
    }
    slots.into_iter().flatten().collect()
}

const STREAMS: [OutputStream; 3] = [
    OutputStream::Stdout,
    OutputStream::Stderr,
    OutputStream::System,
];

fn index(s: OutputStream) -> usize {
    match s {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
        OutputStream::System => 2,
    }
}

fn finish(slots: &mut [Option<LogEntry>], p: &mut Partial, stream: OutputStream) {
    let Some((slot, ts)) = p.slot.take() else {
        return;
    };
    let mut line = std::mem::take(&mut p.bytes);
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    if let Some(s) = slots.get_mut(slot) {
        *s = Some(LogEntry {
            timestamp: rfc3339(ts),
            level: match stream {
                OutputStream::Stderr => "error",
                OutputStream::Stdout | OutputStream::System => "info",
            }
            .to_string(),
            message: String::from_utf8_lossy(&line).into_owned(),
            source: stream,
        });
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
}
