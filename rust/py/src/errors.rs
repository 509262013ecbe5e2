//! Core errors become the exceptions of `pufferrs.errors`, one exception per
//! kind; each derives from both `PufferError` and the matching builtin.

use pufferrs_core::error::Error;
use pyo3::prelude::*;

pyo3::import_exception!(pufferrs.errors, SpaceError);
pyo3::import_exception!(pufferrs.errors, UnsupportedSpaceError);
pyo3::import_exception!(pufferrs.errors, RowError);
pyo3::import_exception!(pufferrs.errors, BuffersError);
pyo3::import_exception!(pufferrs.errors, SharedMemoryError);

/// The exception of a core error; every error the extension raises passes
/// through here (Rust's orphan rule keeps this a function, not a `From`).
pub fn raise(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::UnsupportedSpace { .. } => UnsupportedSpaceError::new_err(message),
        Error::Mismatch { .. } => SpaceError::new_err(message),
        Error::Row(_) => RowError::new_err(message),
        Error::Buffers(_) => BuffersError::new_err(message),
        Error::SharedMemory(_) => SharedMemoryError::new_err(message),
    }
}

/// `?` for core results inside functions that return `PyResult`.
pub trait Raise<T> {
    fn raise(self) -> PyResult<T>;
}

impl<T> Raise<T> for Result<T, Error> {
    fn raise(self) -> PyResult<T> {
        self.map_err(raise)
    }
}

/// The name of `obj`'s type, for messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}
