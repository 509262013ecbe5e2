//! Core errors become the exceptions of `pufferrs.errors`, which derive from
//! both `PufferError` and the matching builtin.

use pyo3::PyErr;

use crate::core::error::Error;

pyo3::import_exception!(pufferrs.errors, SpaceError);
pyo3::import_exception!(pufferrs.errors, UnsupportedSpaceError);
pyo3::import_exception!(pufferrs.errors, RowError);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::UnsupportedSpace { .. } => UnsupportedSpaceError::new_err(message),
            Error::Mismatch { .. } => SpaceError::new_err(message),
            Error::Buffer(_) => RowError::new_err(message),
        }
    }
}
