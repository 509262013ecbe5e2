//! pufferrs-core: flat rows of nested spaces and the shared memory that
//! vector envs run on, in plain Rust. No Python here: the crate builds and
//! tests without an interpreter, and `pufferrs-py` binds it.
//!
//! Everything builds on every platform. Sharing a region with worker
//! processes needs Linux (a memfd, futex waits); elsewhere `shm::Region` is
//! a `local_region::LocalRegion`, private to the process, and waits nap.

pub mod copy;
pub mod dtype;
pub mod episodes;
pub mod error;
mod futex;
pub mod gae;
pub mod layout;
pub mod local_region;
pub mod names;
pub mod plan;
pub mod shm;
pub mod sync;
pub mod text;
