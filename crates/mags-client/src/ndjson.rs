//! The NDJSON streams our server sends (`/output`, `/exec/stream`): lines
//! of JSON events, output bytes as text or base64.

use crate::ClientError;
use base64::Engine as _;
use serde::de::DeserializeOwned;

/// Takes the next complete, non-blank line out of `buf`, trimmed.
pub(crate) fn next_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        let line = line.trim_ascii();
        if !line.is_empty() {
            return Some(line.to_vec());
        }
    }
    None
}

/// Decodes one event line.
pub(crate) fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(line).map_err(|e| ClientError::Decode(e.to_string()))
}

/// An output chunk's bytes, sent as text (`data`) or base64 (`data_b64`).
pub(crate) fn output_bytes(
    data: Option<String>,
    data_b64: Option<String>,
) -> Result<Vec<u8>, ClientError> {
    match (data, data_b64) {
        (Some(s), _) => Ok(s.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| ClientError::Decode(format!("data_b64: {e}"))),
        (None, None) => Ok(Vec::new()),
    }
}
