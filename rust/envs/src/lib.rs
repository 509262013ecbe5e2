//! pufferrs-envs: envs that step in Rust, straight into pufferrs's flat
//! rows. No Python: the bindings (`pufferrs-py`) hand a block of these
//! envs the shared rows and step it with the GIL released.
//!
//! - [`Env`] (one agent) and [`MultiAgentEnv`] (agents that join, act,
//!   wait and leave on their own) write observations into their rows and
//!   read actions from their action rows through accessors ([`Slot`],
//!   [`TextSlot`]) resolved by leaf path from the layout once, when an env
//!   is made ([`Binding`]): a nested `Dict`/`Tuple` observation is written
//!   leaf by leaf without knowing an offset.
//! - [`EnvKind`] declares an env's spaces (the core's `Space`, built with
//!   [`spaces`]) and makes its envs.
//! - [`Block`] steps a block of envs in one call over a pool of threads;
//!   the episode bookkeeping is the core's `episodes`, as for Python envs,
//!   and a panic in an env is that env's [`EnvFailure`].
//! - Built-in envs: [`cartpole`], [`nested`], [`rendezvous`]; [`kind`]
//!   finds them by id.
//!
//! A kind of env and a block of two of its envs, stepped once:
//!
//! ```
//! use pufferrs_core::episodes::Rows;
//! use pufferrs_envs::{Block, kind};
//!
//! let cartpole = kind("pufferrs/CartPole-rs").unwrap().unwrap();
//! let envs = (0..2).map(|_| cartpole.make().unwrap()).collect();
//! let row_bytes = cartpole.binding().observation_layout().row_bytes;
//! let mut block = Block::new(envs, 1, 8, 1).unwrap();
//! let (mut obs, mut last) = (vec![0u8; 2 * row_bytes], vec![0u8; 2 * row_bytes]);
//! let (mut rewards, mut terminals, mut truncations, mut masks) = ([0f32; 2], [0u8; 2], [0u8; 2], [0u8; 2]);
//! let (mut returns, mut lengths) = ([0f64; 2], [0i64; 2]);
//! macro_rules! rows { () => { Rows {
//!     row_bytes,
//!     observations: &mut obs,
//!     final_observations: &mut last,
//!     rewards: &mut rewards,
//!     terminals: &mut terminals,
//!     truncations: &mut truncations,
//!     masks: &mut masks,
//!     episode_returns: &mut returns,
//!     episode_lengths: &mut lengths,
//! } } }
//! block.reset(Some(0), rows!()).unwrap();
//! let actions = [1i64.to_ne_bytes(), 0i64.to_ne_bytes()].concat();
//! block.step(rows!(), &actions).unwrap();
//! assert_eq!((rewards, masks), ([1.0, 1.0], [1, 1]));
//! ```

pub mod abi;
mod block;
pub mod cartpole;
mod env;
pub mod nested;
pub mod rendezvous;
mod slots;
pub mod spaces;

pub use block::{Block, EnvFailure, Finished, MIN_ENVS_PER_THREAD};
pub use env::{Actions, Agents, Env, EnvKind, MultiAgentEnv, Status, Step};
/// The core this crate builds on (its `Space`, `Layout` and errors), for crates
/// of envs to name the same version.
pub use pufferrs_core;
pub use slots::{Binding, Element, Slot, TextSlot};

use pufferrs_core::error::Result;

/// The ids of the built-in envs.
pub const BUILT_IN: [&str; 3] = [cartpole::ID, nested::ID, rendezvous::ID];

/// An env that panics at its third step: not a built-in env to train
/// (no registry lists it), but the way to check, from Python, that a
/// panic in an env reaches the user as an error naming the env.
pub const PANICS: &str = "pufferrs/Panics-rs";

struct Panics(u32);

impl Env for Panics {
    fn reset(&mut self, _: Option<u64>, _: &mut [u8]) {
        self.0 = 0;
    }

    fn step(&mut self, _: &[u8], _: &mut [u8]) -> Step {
        self.0 += 1;
        assert!(self.0 < 3, "Panics-rs panics at step {}, as it should", self.0);
        Step { reward: 0.0, terminated: false, truncated: false }
    }
}

/// The kinds of env loaded from other crates ([`abi::load`], then
/// [`register`]), by id.
static LOADED: std::sync::Mutex<Vec<EnvKind>> = std::sync::Mutex::new(Vec::new());

/// Makes `kind` (loaded from another crate) what [`kind`] finds under its
/// id, in place of one loaded before under the same id (a module loaded
/// again); a built-in id is refused.
pub fn register(kind: EnvKind) -> std::result::Result<(), String> {
    if BUILT_IN.contains(&kind.id()) || kind.id() == PANICS {
        return Err(format!("{} is a built-in env of pufferrs: give the crate's env another id", kind.id()));
    }
    let mut loaded = LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loaded.retain(|other| other.id() != kind.id());
    loaded.push(kind);
    Ok(())
}

/// The ids of the envs loaded from other crates.
pub fn loaded() -> Vec<String> {
    LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|kind| kind.id().to_owned()).collect()
}

/// The env `id`: a built-in one (or [`PANICS`]), or one loaded from
/// another crate; None if there is none.
pub fn kind(id: &str) -> Option<Result<EnvKind>> {
    if let Some(kind) = LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().find(|k| k.id() == id) {
        return Some(Ok(kind.clone()));
    }
    match id {
        PANICS => Some(EnvKind::single(PANICS, spaces::discrete(2), spaces::discrete(2), |_| Ok(Panics(0)))),
        cartpole::ID => Some(cartpole::CartPole::kind()),
        nested::ID => Some(nested::Nested::kind()),
        rendezvous::ID => Some(rendezvous::Rendezvous::kind()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
