//! The guest-protocol frame decoder (what the host reads from a guest it
//! does not trust, and the agent from the host), fed arbitrary bytes cut
//! into arbitrary pieces: it never panics, never yields a payload over the
//! limit, and the frames it yields re-encode to exactly the bytes it
//! consumed. Control frames go on to the message decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mags_proto::{Decoder, FrameKind, GuestMsg, HostMsg, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    // The first bytes say where to cut the rest into pieces.
    let (cuts, wire) = data.split_at(data.len().min(4));
    let mut pieces = Vec::new();
    let mut rest = wire;
    for c in cuts {
        let n = usize::from(*c).min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces.push(rest);

    let mut decoder = Decoder::new();
    let mut reencoded = Vec::new();
    'feed: for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX_PAYLOAD);
                    if frame.kind == FrameKind::Control {
                        let _ = frame.parse::<HostMsg>();
                        let _ = frame.parse::<GuestMsg>();
                    } else {
                        assert!(frame.parse::<HostMsg>().is_err());
                    }
                    reencoded.extend_from_slice(&frame.to_bytes());
                }
                Ok(None) => break,
                // The stream is unusable after an error; stop feeding it.
                Err(_) => break 'feed,
            }
        }
    }
    assert!(wire.starts_with(&reencoded), "frames re-encode to their bytes");
});
