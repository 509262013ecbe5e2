//! `pufferrs._native`: thin bindings of `pufferrs-core`. Python objects
//! come in, core calls run, Python objects go out.
//!
//! Modules depend one way: the classes (`layout`, `buffers`, and
//! `env_block`, `episode_rows` and `inplace_rows`, which step envs'
//! outcomes into rows through `rows`, and `native`, which steps envs
//! written in Rust into them), `gae` and `exact_rows` use `flatten` (and
//! `store`, its second step), `unflatten` and `spec`, which use `tree`,
//! `numpy_arrays` and `errors`.

mod buffers;
mod env_block;
mod episode_rows;
mod errors;
mod exact_rows;
mod flatten;
mod gae;
mod inplace_rows;
mod layout;
mod native;
mod numpy_arrays;
mod rows;
mod spec;
mod store;
mod tree;
mod unflatten;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<layout::PyLayout>()?;
    m.add_class::<buffers::PyRolloutBuffers>()?;
    m.add_class::<env_block::EnvBlock>()?;
    m.add_class::<episode_rows::EpisodeRows>()?;
    m.add_class::<native::NativeEnv>()?;
    m.add_class::<native::NativeBlock>()?;
    m.add_function(wrap_pyfunction!(native::native_env_ids, m)?)?;
    m.add_function(wrap_pyfunction!(native::cartpole_dynamics, m)?)?;
    m.add_function(wrap_pyfunction!(native::load_envs, m)?)?;
    m.add("ENV_ABI_VERSION", pufferrs_envs::abi::ABI_VERSION)?;
    m.add_class::<inplace_rows::InplaceRows>()?;
    m.add_function(wrap_pyfunction!(layout::format_path, m)?)?;
    m.add_function(wrap_pyfunction!(exact_rows::store_exact, m)?)?;
    m.add_function(wrap_pyfunction!(gae::gae, m)?)?;
    m.add_function(wrap_pyfunction!(gae::fold_outcomes_into, m)?)?;
    m.add("MAX_DEPTH", pufferrs_core::layout::MAX_DEPTH)?;
    Ok(())
}
