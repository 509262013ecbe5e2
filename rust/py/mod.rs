//! Thin bindings: Python objects in, core calls, Python objects out.

pub mod buffers;
pub mod errors;
mod flatten;
pub mod layout;
mod numpy_arrays;
mod spec;
mod unflatten;
