//! The one error type of the core; the bindings map each kind to one
//! Python exception of `pufferrs.errors`.

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
    /// An array of rows that does not fit the layout: size, dtype,
    /// contiguity, writability.
    #[error("{0}")]
    Row(String),
    /// Rollout buffers asked to be or do what they cannot: an invalid plan,
    /// a worker out of range, a region made for other arguments.
    #[error("{0}")]
    Buffers(String),
    /// The operating system refused shared memory.
    #[error("shared memory: {0}")]
    SharedMemory(String),
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error::SharedMemory(err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
