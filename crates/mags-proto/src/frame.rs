//! Framing: turning bytes on the wire into [`Frame`]s and back.

/// Largest payload a single frame may carry. Larger data is split by the sender.
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER: usize = 1 + 4;

/// What a frame's payload means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON [`crate::HostMsg`] or [`crate::GuestMsg`].
    Control = 1,
    /// Bytes the process wrote to its standard output.
    Stdout = 2,
    /// Bytes the process wrote to its standard error.
    Stderr = 3,
    /// Input bytes from the host: a process's stdin, or a file's contents.
    Input = 4,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Control),
            2 => Some(Self::Stdout),
            3 => Some(Self::Stderr),
            4 => Some(Self::Input),
            _ => None,
        }
    }
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A control frame carrying `msg` as JSON.
    pub fn control<T: serde::Serialize>(stream: u32, msg: &T) -> Self {
        // Serializing our own plain enums cannot fail: no maps with non-string
        // keys, no custom Serialize impls.
        let payload = serde_json::to_vec(msg).unwrap_or_default();
        Self {
            kind: FrameKind::Control,
            stream,
            payload,
        }
    }

    /// Parses a control frame's payload.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        if self.kind != FrameKind::Control {
            return Err(DecodeError::NotControl);
        }
        serde_json::from_slice(&self.payload).map_err(|e| DecodeError::BadMessage(e.to_string()))
    }

    /// The frame's bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + HEADER + self.payload.len());
        encode_frame(self.kind, self.stream, &self.payload, &mut out);
        out
    }
}

/// Appends one frame to `out`.
pub fn encode_frame(kind: FrameKind, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = (HEADER + payload.len()) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why bytes could not be turned into a frame or message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("frame shorter than its header")]
    Truncated,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("expected a control frame")]
    NotControl,
    #[error("malformed control message: {0}")]
    BadMessage(String),
}

/// Incremental decoder: feed it bytes as they arrive, take frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable: the peer is broken or hostile.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len < HEADER {
            return Err(DecodeError::Truncated);
        }
        if len > HEADER + MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(len));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let body = &avail[4..4 + len];
        let kind = FrameKind::from_u8(body[0]).ok_or(DecodeError::UnknownKind(body[0]))?;
        let stream = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
        let payload = body[HEADER..].to_vec();
        self.start += 4 + len;
        if self.start > 1 << 16 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Frame {
            kind,
            stream,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_split_at_every_byte() {
        let mut wire = Vec::new();
        encode_frame(FrameKind::Stdout, 7, b"hello", &mut wire);
        encode_frame(FrameKind::Control, 0, b"{}", &mut wire);
        encode_frame(FrameKind::Stderr, 9, b"", &mut wire);
        for split in 0..wire.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            d.push(&wire[..split]);
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
            d.push(&wire[split..]);
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].payload, b"hello");
            assert_eq!(got[0].stream, 7);
            assert_eq!(got[1].kind, FrameKind::Control);
            assert_eq!(got[2].kind, FrameKind::Stderr);
        }
    }

    #[test]
    fn rejects_oversized_and_unknown() {
        let mut d = Decoder::new();
        d.push(&(u32::MAX).to_le_bytes());
        assert!(matches!(d.next_frame(), Err(DecodeError::TooLarge(_))));
        let mut d = Decoder::new();
        d.push(&[5, 0, 0, 0, 99, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(DecodeError::UnknownKind(99)));
        let mut d = Decoder::new();
        d.push(&[2, 0, 0, 0, 1, 0]);
        assert_eq!(d.next_frame(), Err(DecodeError::Truncated));
    }
}
