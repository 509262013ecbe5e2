//! The pure-Rust core: no Python types here, so it is tested by `cargo test`
//! and reusable outside the extension.

pub mod copy;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod shm;
pub mod sync;
