//! The control layer's "this request can never be accepted as it is".

/// A request that can never be accepted as it is (the API's 400); the
/// text says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
