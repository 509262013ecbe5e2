//! pufferrs: flat rows and zero-copy buffers for reinforcement-learning
//! rollouts. `core` is plain Rust; `py` binds it to Python.

pub mod core;
mod py;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py::layout::PyLayout>()?;
    m.add_class::<py::buffers::PyRolloutBuffers>()?;
    Ok(())
}
