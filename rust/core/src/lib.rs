//! pufferrs-core: flat rows of nested spaces and the shared memory that
//! vector envs run on, in plain Rust. No Python here: the crate builds and
//! tests without an interpreter, and `pufferrs-py` binds it.

pub mod copy;
pub mod dtype;
pub mod error;
pub mod gae;
pub mod layout;
pub mod shm;
pub mod sync;
