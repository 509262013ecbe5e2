//! `pufferrs._native.EnvBlock`: a block of envs stepped into their rows of
//! a vector env's shared buffers, one call per batch. The per-env work
//! between `env.step` and the rows (unpacking, flattening, writing the
//! reward and flags, the episode's statistics and its final observation,
//! the reset) runs here instead of as Python bytecode, which on small
//! observations costs more than the env itself. So does reading each env's
//! action out of its action row, and, for the Serial backend, writing the
//! user's batch of actions into those rows first. What the outcomes mean
//! for the rows (returns, lengths, flags, final rows, the autoreset) is
//! `pufferrs_core::episodes`'s: this calls the envs and hands it their
//! outcomes.

use numpy::{PyArrayDescr, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::error::Error;
use pufferrs_core::layout::Rule;
use pufferrs_core::names::format_path;

use pufferrs_core::episodes::Episodes;

use crate::errors::{Raise, raise, type_name};
use crate::flatten::{Batch, Reader, resolve_batch};
use crate::layout::PyLayout;
use crate::numpy_arrays::{copy_of, descr, dtype_of, strided};
use crate::rows::{BlockRows, Cells, RowWriter};
use crate::store::store;
use crate::tree::Tree;

/// Envs `first_env, first_env + 1, ...` writing into the arrays of a
/// vector env's buffers (by their `RolloutBuffers.array` names).
#[pyclass(module = "pufferrs._native", name = "EnvBlock")]
pub struct EnvBlock {
    envs: Vec<Py<PyAny>>,
    /// Each env's bound `step` and `reset`, looked up once: with the
    /// limited API a method call by name is a lookup, a new bound method
    /// and a call, on every step.
    steps: Vec<Py<PyAny>>,
    resets: Vec<Py<PyAny>>,
    first_env: usize,
    /// The block's rows (one per env) and their episodes.
    rows: BlockRows,
    episodes: Episodes,
    writer: RowWriter,
    current_env: Option<usize>,
    /// Whether actions are checked against their Box bounds too.
    check_bounds: bool,
    action_layout: Py<PyLayout>,
    /// The numpy dtype of each action leaf, for the arrays envs get.
    action_descrs: Vec<Py<PyArrayDescr>>,
    actions: Cells,
    /// Whether the action row is its one leaf as-is (no string), so that a
    /// batch given as exactly that leaf's array takes `stage_exact`, and
    /// the area that stages it.
    exact_actions: bool,
    action_staging: Vec<u8>,
}

impl EnvBlock {
    /// Env `i` (just reset) starts an episode with `obs`: its one row
    /// plays and acts.
    fn start(&mut self, py: Python<'_>, i: usize, obs: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut rows = self.rows.rows();
        self.episodes.start_episode(i, &mut rows);
        self.episodes.join(i);
        self.episodes.set_acting(i, true, &mut rows);
        self.writer.write(py, obs, rows.observation(i))
    }

    /// Writes `actions` (a batch as `Layout.flatten_batch` takes it) into
    /// the block's action rows, all or nothing.
    fn stage_actions(&mut self, py: Python<'_>, actions: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.stage_exact(actions) {
            return Ok(());
        }
        let layout = self.action_layout.get();
        let rows = &self.actions.starts;
        let (items, _) =
            resolve_batch(|index, batch| layout.reader(index, batch), actions, Some(rows.len())).raise()?;
        // SAFETY: each start is a distinct `row_bytes` row of the action
        // array, checked by `row_start` and kept mapped by `Cells`; no Rust
        // reference to those bytes exists during the store.
        unsafe { store(py, layout.core(), &items, rows, self.check_bounds) }.raise()
    }

    /// `stage_actions` for the common batch, a numpy array of exactly the
    /// one action leaf's dtype and batched shape: the same checks (the
    /// leaf's own checker), without resolving a structure or planning a
    /// store. True when it wrote the rows; false, having written nothing,
    /// for anything else, a value that fails included: the general path
    /// then says what is wrong.
    fn stage_exact(&mut self, actions: &Bound<'_, PyAny>) -> bool {
        if !self.exact_actions {
            return false;
        }
        let Ok(array) = actions.cast::<PyUntypedArray>() else { return false };
        let layout = self.action_layout.get();
        let leaf = &layout.core().leaves[0];
        let n = self.envs.len();
        let shape = array.shape();
        if shape.first() != Some(&n) || shape[1..] != leaf.shape[..] || dtype_of(&array.dtype()) != Ok(leaf.dtype) {
            return false;
        }
        let reader = layout.reader(None, Batch::Of(n));
        let check = reader.checker(leaf, self.check_bounds);
        // Staged whole before any row is written: all or nothing, and a
        // source that overlaps the rows is read before they change.
        if strided(array, leaf.dtype).try_store_as(leaf.dtype, &mut self.action_staging, check).is_err() {
            return false;
        }
        for (i, staged) in self.action_staging.chunks_exact(self.actions.bytes).enumerate() {
            self.actions.row(i).copy_from_slice(staged);
        }
        true
    }

    /// The action env `i` gets: its row read back in the space's structure,
    /// an int for a Discrete, a str for a string and a new array otherwise
    /// (0-d for a Box of shape `()`, as its `sample()` gives), never a
    /// view: the next batch rewrites the row while the env may still hold
    /// its action.
    fn action<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.action_layout.get().reader(None, Batch::One);
        action_value(py, &reader, &self.action_descrs, reader.tree, self.actions.bytes(i))
    }
}

/// `tree`'s part of the action in `row`: see `EnvBlock::action`.
fn action_value<'py>(
    py: Python<'py>,
    reader: &Reader<'_>,
    descrs: &[Py<PyArrayDescr>],
    tree: &Tree,
    row: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match tree {
        Tree::Leaf(k) => {
            let leaf = &reader.layout.leaves[*k];
            let bytes = &row[leaf.offset..leaf.offset + leaf.nbytes()];
            match leaf.rule {
                Rule::Discrete { .. } => match leaf.dtype.read(bytes) {
                    // As an i64 where it fits: with the limited API an i128
                    // becomes a Python int through several int operations.
                    Value::Int(value) => match i64::try_from(value) {
                        Ok(value) => value.into_pyobject(py)?.into_any(),
                        Err(_) => value.into_pyobject(py)?.into_any(),
                    },
                    Value::Float(value) => value.into_pyobject(py)?.into_any(),
                },
                Rule::Text { .. } => {
                    let codes: Vec<i128> = bytes
                        .chunks_exact(leaf.dtype.itemsize())
                        .map(|code| match leaf.dtype.read(code) {
                            Value::Int(code) => code,
                            Value::Float(code) => code as i128,
                        })
                        .collect();
                    let text = leaf.decode_text(&codes).map_err(|reason| {
                        raise(Error::Row(format!("{}: {reason}", format_path(reader.name, &leaf.path))))
                    })?;
                    PyString::new(py, &text).into_any()
                }
                _ => copy_of(py, descrs[*k].bind(py), &leaf.shape, bytes)?.into_any(),
            }
        }
        Tree::Dict(items) => {
            let dict = PyDict::new(py);
            for (_, key, child) in items {
                dict.set_item(key.bind(py), action_value(py, reader, descrs, child, row)?)?;
            }
            dict.into_any()
        }
        Tree::Tuple(items) => {
            let values =
                items.iter().map(|child| action_value(py, reader, descrs, child, row)).collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, values)?.into_any()
        }
    })
}

/// `(obs, reward, terminated, truncated, info)` of `env.step`.
fn unpack<'py>(result: &Bound<'py, PyAny>) -> PyResult<[Bound<'py, PyAny>; 5]> {
    let refuse = |got: String| Error::Mismatch {
        path: "env.step()".into(),
        reason: format!("expected a tuple (obs, reward, terminated, truncated, info), got {got}"),
    };
    let tuple = result.cast::<PyTuple>().map_err(|_| refuse(type_name(result))).raise()?;
    if tuple.len() != 5 {
        return Err(refuse(format!("a tuple of {} items", tuple.len()))).raise();
    }
    Ok(std::array::from_fn(|k| tuple.get_item(k).expect("the length was checked")))
}

fn number(name: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    value
        .extract::<f64>()
        .map_err(|_| Error::Mismatch {
            path: name.into(),
            reason: format!("expected a number, got {}", type_name(value)),
        })
        .raise()
}

#[pymethods]
impl EnvBlock {
    /// `arrays` maps the buffers' array names to their full views (every
    /// env's rows); the block uses rows `first_env .. first_env + len(envs)`.
    #[new]
    #[pyo3(signature = (envs, first_env, arrays, layout, action_layout, check_bounds = false))]
    fn new(
        envs: Vec<Py<PyAny>>,
        first_env: usize,
        arrays: &Bound<'_, PyDict>,
        layout: Bound<'_, PyLayout>,
        action_layout: Bound<'_, PyLayout>,
        check_bounds: bool,
    ) -> PyResult<Self> {
        let n = envs.len();
        let py = layout.py();
        let method =
            |name: &str| envs.iter().map(|env| Ok(env.bind(py).getattr(name)?.unbind())).collect::<PyResult<Vec<_>>>();
        let (steps, resets) = (method("step")?, method("reset")?);
        let writer = RowWriter::new(layout, check_bounds);
        let action_core = action_layout.get().core();
        let exact_actions = match action_core.leaves.as_slice() {
            [leaf] => leaf.nbytes() == action_core.row_bytes && !matches!(leaf.rule, Rule::Text { .. }),
            _ => false,
        };
        let action_descrs =
            action_core.leaves.iter().map(|leaf| Ok(descr(py, leaf.dtype)?.unbind())).collect::<PyResult<_>>()?;
        Ok(EnvBlock {
            rows: BlockRows::new(arrays, first_env, n, writer.row_bytes())?,
            episodes: Episodes::new(n, 1),
            writer,
            envs,
            steps,
            resets,
            first_env,
            current_env: None,
            check_bounds,
            actions: Cells::new(arrays, "actions", DType::U8, action_core.row_bytes, first_env, n)?,
            exact_actions,
            action_staging: vec![0; n * action_core.row_bytes],
            action_descrs,
            action_layout: action_layout.unbind(),
        })
    }

    /// Resets env `i` with `seed + first_env + i` (or no seed) and writes
    /// its first observation; clears rewards and flags. Returns `(i, info)`
    /// for the non-empty infos.
    ///
    /// The seed is a Python int, summed as one: seeds are of any size (see
    /// `pufferrs.vector.base.checked_seed`, which checks them), and no
    /// fixed-width sum may wrap one env's seed into another's.
    #[pyo3(signature = (seed = None))]
    fn reset<'py>(&mut self, py: Python<'py>, seed: Option<Bound<'py, PyInt>>) -> PyResult<Bound<'py, PyList>> {
        let infos = PyList::empty(py);
        self.episodes.begin_reset(&mut self.rows.rows());
        for i in 0..self.envs.len() {
            self.current_env = Some(self.first_env + i);
            let kwargs = PyDict::new(py);
            kwargs.set_item("seed", seed.as_ref().map(|s| s.add(self.first_env + i)).transpose()?)?;
            let result = self.resets[i].bind(py).call((), Some(&kwargs))?;
            let (obs, info) = (result.get_item(0)?, result.get_item(1)?);
            self.start(py, i, &obs)?;
            if info.is_truthy()? {
                infos.append((i, info))?;
            }
        }
        self.current_env = None;
        self.episodes.end_reset();
        Ok(infos)
    }

    /// Steps env `i` with the action in its action row and writes what it
    /// returns. An env whose episode ends has its last observation written
    /// to its final row, its episode's return and length recorded, and is
    /// reset: its row holds the next episode's first observation. Returns
    /// `(i, info)` for the non-empty infos, or with `dense` a pair: every
    /// env's info in order (a new dict for one that is empty and not a
    /// dict) and `ended` (what Serial's one-call step hands its base).
    ///
    /// `actions`, when given, is first written into the action rows (a
    /// batch as `Layout.flatten_batch` takes it); a batch that does not
    /// fit raises before any env steps, with `current_env` None, and
    /// changes nothing.
    #[pyo3(signature = (actions = None, *, dense = false))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: Option<&Bound<'py, PyAny>>,
        dense: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.current_env = None;
        if let Some(actions) = actions {
            self.stage_actions(py, actions)?;
        }
        let infos = PyList::empty(py);
        self.episodes.begin_step(&mut self.rows.rows());
        for i in 0..self.envs.len() {
            self.current_env = Some(self.first_env + i);
            let action = self.action(py, i)?;
            let result = self.steps[i].bind(py).call1((action,))?;
            let [obs, reward, terminal, truncation, info] = unpack(&result)?;
            let reward = number("reward", &reward)?;
            let (terminal, truncation) = (terminal.is_truthy()?, truncation.is_truthy()?);
            let Self { rows, episodes, writer, .. } = self;
            let mut rows = rows.rows();
            episodes.reward(i, reward, &mut rows);
            if terminal || truncation {
                episodes.end(i, terminal, truncation, &mut rows, |row| writer.write(py, &obs, row))?;
                let obs = self.resets[i].bind(py).call0()?.get_item(0)?;
                self.start(py, i, &obs)?;
            } else {
                writer.write(py, &obs, rows.observation(i))?;
            }
            if dense {
                // The env's own dict, empty or not, as for a non-empty
                // info on either path; anything else empty (None) gives a
                // new dict, as `recv` does.
                let keep = info.is_exact_instance_of::<PyDict>() || info.is_truthy()?;
                infos.append(if keep { info } else { PyDict::new(py).into_any() })?;
            } else if info.is_truthy()? {
                infos.append((i, info))?;
            }
        }
        self.current_env = None;
        if dense {
            return Ok((infos, self.ended(py)?).into_pyobject(py)?.into_any());
        }
        Ok(infos.into_any())
    }

    /// The envs (positions in the block, as in the infos) whose episode
    /// ended in the last step: empty, and false, when none did.
    #[getter]
    fn ended<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.episodes.ended())
    }

    /// The env whose reset or step raised, while the block is broken by it.
    #[getter]
    fn current_env(&self) -> Option<usize> {
        self.current_env
    }
}
