//! The one error type of the core; `py::errors` maps each kind to a Python
//! exception.

/// Everything the core can refuse. Messages name the path of the offending
/// leaf the way a user would index it, e.g. `obs['inv']['items'][3]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A space that has no fixed-size row encoding.
    #[error("{path}: {reason}")]
    UnsupportedSpace { path: String, reason: String },
    /// A value that does not fit its space: structure, shape, dtype or range.
    #[error("{path}: {reason}")]
    Mismatch { path: String, reason: String },
    /// A destination buffer that cannot hold the rows asked of it.
    #[error("{0}")]
    Buffer(String),
}

pub type Result<T> = std::result::Result<T, Error>;
