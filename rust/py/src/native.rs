//! `pufferrs._native.NativeEnv` and `NativeBlock`: envs written in Rust
//! (`pufferrs-envs`) stepped into a vector env's rows. A `NativeEnv` is
//! what an env creator returns: one env of a kind, with its spaces (as the
//! descriptions `pufferrs.spaces.describe` makes, which Python turns into
//! gymnasium spaces). A `NativeBlock` takes the envs of a block out of
//! their `NativeEnv`s and steps them all in one call with the GIL
//! released, over its threads; it has the interface of `EnvBlock`, so the
//! backends' `Runner` drives either.

use std::sync::Mutex;

use numpy::PyUntypedArray;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyTuple};

use pufferrs_core::dtype::DType;
use pufferrs_core::error::Error;
use pufferrs_envs::{Block, EnvFailure, EnvKind, MultiAgentEnv};

use crate::errors::Raise;
use crate::layout::PyLayout;
use crate::rows::{BlockRows, Cells};
use crate::spec::describe;

pyo3::import_exception!(pufferrs.errors, ConfigError);

/// One env of a kind written in Rust, until a block takes it.
#[pyclass(module = "pufferrs._native", name = "NativeEnv", frozen)]
pub struct NativeEnv {
    kind: EnvKind,
    env: Mutex<Option<Box<dyn MultiAgentEnv>>>,
}

#[pymethods]
impl NativeEnv {
    /// An env of the built-in kind `id` (`native_env_ids()`).
    #[new]
    fn new(id: &str) -> PyResult<Self> {
        let kind = pufferrs_envs::kind(id)
            .ok_or_else(|| {
                ConfigError::new_err(format!(
                    "{} is not a native env; the native envs are {}",
                    pufferrs_core::names::quote(id),
                    pufferrs_envs::BUILT_IN.join(", ")
                ))
            })?
            .raise()?;
        let env = kind.make().raise()?;
        Ok(NativeEnv { kind, env: Mutex::new(Some(env)) })
    }

    #[getter]
    fn id(&self) -> &str {
        self.kind.id()
    }

    /// The agents' names of a multi-agent env (one row each); None for an
    /// env of one agent.
    #[getter]
    fn possible_agents(&self) -> Option<Vec<String>> {
        self.kind.agents().map(<[String]>::to_vec)
    }

    /// The observation space of one agent, described as
    /// `pufferrs.spaces.describe` describes a gymnasium space.
    fn observation_description<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        describe(py, self.kind.observation_space())
    }

    fn action_description<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        describe(py, self.kind.action_space())
    }

    /// Whether the env is still here, not taken by a block.
    #[getter]
    fn available(&self) -> bool {
        self.env.lock().map(|env| env.is_some()).unwrap_or(false)
    }
}

/// The ids of the envs written in Rust that pufferrs has built in.
#[pyfunction]
pub fn native_env_ids() -> Vec<&'static str> {
    pufferrs_envs::BUILT_IN.to_vec()
}

/// Loads the envs of another crate from `capsule` (its module's
/// `pufferrs_envs`, a capsule named `pufferrs_envs.tables`; see
/// `pufferrs_envs::abi`), checking its ABI version, sizes and layouts,
/// and makes them what `NativeEnv(id)` finds. `parse` reads a table's
/// spaces JSON (Python's `json.loads`). Returns the ids.
#[pyfunction]
pub fn load_envs(capsule: &Bound<'_, PyAny>, parse: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let name = pufferrs_envs::abi::CAPSULE_NAME;
    // SAFETY: `PyCapsule_IsValid` accepts any object and checks that it is
    // a capsule of that name with a pointer.
    if unsafe { pyo3::ffi::PyCapsule_IsValid(capsule.as_ptr(), name.as_ptr()) } == 0 {
        return Err(ConfigError::new_err(format!(
            "expected a capsule named {:?} (a crate's `pufferrs_envs`, made with pufferrs_envs::abi::export), got {}",
            name,
            crate::errors::type_name(capsule)
        )));
    }
    // SAFETY: checked valid just above; the pointer is the crate's static
    // tables, which live as long as its module, loaded for good.
    let tables = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), name.as_ptr()) };
    let read = |json: &str| -> Result<pufferrs_envs::abi::Spaces, String> {
        let spaces = parse.call1((json,)).map_err(|e| e.to_string())?;
        let field = |key: &str| spaces.get_item(key).map_err(|e| format!("{key}: {e}"));
        let agents: Option<Vec<String>> = field("agents")?.extract().map_err(|e| format!("agents: {e}"))?;
        Ok((crate::spec::parse(&field("observation")?), crate::spec::parse(&field("action")?), agents))
    };
    // SAFETY: a capsule of that name holds what `abi::export` made.
    let kinds = unsafe { pufferrs_envs::abi::load(tables.cast(), read) }.map_err(ConfigError::new_err)?;
    kinds
        .into_iter()
        .map(|kind| {
            let id = kind.id().to_owned();
            pufferrs_envs::register(kind).map_err(ConfigError::new_err)?;
            Ok(id)
        })
        .collect()
}

/// The built-in CartPole's transition from `state` (`x, x_dot, theta,
/// theta_dot`, float64) with `action`: `(next state, terminated)`. It is
/// gymnasium `CartPole-v1`'s, which tests check it against.
#[pyfunction]
pub fn cartpole_dynamics(state: [f64; 4], action: i64) -> ([f64; 4], bool) {
    pufferrs_envs::cartpole::dynamics(state, action)
}

/// A block of native envs of one kind, stepped into rows
/// `first_env * agents ..` of a vector env's buffers; see the module docs.
#[pyclass(module = "pufferrs._native", name = "NativeBlock")]
pub struct NativeBlock {
    /// Locked only by the methods, which `&mut self` already makes
    /// exclusive: the lock makes the block `Sync`, as a class must be.
    block: Mutex<Block>,
    rows: BlockRows,
    actions: Cells,
    /// The block's action rows as a numpy array, for `flatten_batch`.
    action_rows: Py<PyUntypedArray>,
    action_layout: Py<PyLayout>,
    check_bounds: bool,
    first_env: usize,
    agents: usize,
    /// Whether the envs have agents: their ended envs' summaries go in the
    /// infos, as for PettingZoo envs.
    multi_agent: bool,
    current_env: Option<usize>,
    ended: Vec<usize>,
}

impl NativeBlock {
    /// The exception of an env that failed, which becomes the backends'
    /// `WorkerError` naming it.
    fn failed(&mut self, failure: EnvFailure) -> PyErr {
        self.current_env = Some(self.first_env + failure.env);
        PyRuntimeError::new_err(format!("panicked: {}", failure.message))
    }

    /// `run` on the block and its rows, with the GIL released.
    fn run(
        &mut self,
        py: Python<'_>,
        run: impl FnOnce(&mut Block, pufferrs_core::episodes::Rows<'_>, &[u8]) -> Result<(), EnvFailure> + Send,
    ) -> PyResult<()> {
        let Self { block, rows, actions, .. } = self;
        let block = block.get_mut().map_err(|_| PyRuntimeError::new_err("the block is broken by an earlier panic"))?;
        let count = actions.starts.len();
        let bytes = actions.bytes;
        let start = actions.span::<u8>("actions")?;
        let rows = rows.rows();
        // SAFETY: `span` checked that the block's `count` action rows of
        // `bytes` bytes are one span, kept mapped by `actions`. Nothing
        // writes them while the block steps: `send` writes them before the
        // step (Serial, in the call that leads here) or before it wakes
        // the worker, and the vector env's users hold them only between a
        // `recv` and the next `send`.
        let action_rows = unsafe { std::slice::from_raw_parts(start.cast_const(), count * bytes) };
        // The observation rows, like the action rows, belong to this
        // block from `send` to `recv`; `&mut self` keeps every other Rust
        // use of them out while the GIL is released.
        let result = py.detach(move || run(block, rows, action_rows));
        self.ended = match self.block.get_mut() {
            Ok(block) => block.ended(),
            Err(_) => Vec::new(),
        };
        result.map_err(|failure| self.failed(failure))
    }

    /// `(position, info)` of each env whose episode ended in the last step:
    /// the info of its first row holds its agents' summed return and its
    /// steps (multi-agent envs only; a single-agent env's row gets its
    /// return and length from the vector env).
    fn summaries<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<(usize, Bound<'py, PyDict>)>> {
        if !self.multi_agent {
            return Ok(Vec::new());
        }
        let agents = self.agents;
        let block = self.block.get_mut().map_err(|_| PyRuntimeError::new_err("broken block"))?;
        block
            .finished()
            .map(|finished| {
                let info = PyDict::new(py);
                info.set_item("env_episode_return", finished.episode_return)?;
                info.set_item("env_episode_length", finished.episode_length)?;
                Ok((finished.env * agents, info))
            })
            .collect()
    }
}

#[pymethods]
impl NativeBlock {
    /// `envs` (native envs of one kind, each taken out of its `NativeEnv`)
    /// writing into the arrays of a vector env's buffers, as `EnvBlock`;
    /// `threads` step parts of the block at once (default: the machine's
    /// cores, at least 32 envs a thread: `Block::default_threads`). The layouts must be the ones the kind's envs were bound to.
    #[new]
    #[pyo3(signature = (envs, first_env, arrays, layout, action_layout, check_bounds = false, threads = None))]
    fn new(
        envs: Vec<Bound<'_, NativeEnv>>,
        first_env: usize,
        arrays: &Bound<'_, PyDict>,
        layout: Bound<'_, PyLayout>,
        action_layout: Bound<'_, PyLayout>,
        check_bounds: bool,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let refuse = |message: String| Err(Error::Buffers(message)).raise();
        let Some(first) = envs.first() else { return refuse("a native block needs at least one env".into()) };
        let kind = first.get().kind.clone();
        if let Some(other) = envs.iter().find(|env| env.get().kind.id() != kind.id()) {
            return refuse(format!(
                "a native block steps envs of one kind: got {} and {}",
                kind.id(),
                other.get().kind.id()
            ));
        }
        let binding = kind.binding();
        for (what, given, bound) in [
            ("observation", layout.get().core(), binding.observation_layout()),
            ("action", action_layout.get().core(), binding.action_layout()),
        ] {
            if given != bound {
                return refuse(format!(
                    "the vector env's {what} layout ({} bytes a row) is not the one {} was built for ({} bytes a \
                     row): a native env's rows must be laid out from its own space",
                    given.row_bytes,
                    kind.id(),
                    bound.row_bytes
                ));
            }
        }
        let taken: Vec<Box<dyn MultiAgentEnv>> = envs
            .iter()
            .enumerate()
            .map(|(i, env)| {
                env.get().env.lock().ok().and_then(|mut env| env.take()).ok_or_else(|| {
                    Error::Buffers(format!("env {} ({}) is already stepped by a block", first_env + i, kind.id()))
                })
            })
            .collect::<Result<_, _>>()
            .raise()?;
        let (n, agents) = (taken.len(), kind.agents_per_env());
        let action_bytes = binding.action_layout().row_bytes;
        let threads = threads.unwrap_or_else(|| Block::default_threads(n));
        let block = Block::new(taken, agents, action_bytes, threads).map_err(PyRuntimeError::new_err)?;
        let rows = BlockRows::new(arrays, first_env * agents, n * agents, binding.observation_layout().row_bytes)?;
        let actions = Cells::new(arrays, "actions", DType::U8, action_bytes, first_env * agents, n * agents)?;
        let py = arrays.py();
        let slice =
            pyo3::types::PySlice::new(py, (first_env * agents) as isize, ((first_env + n) * agents) as isize, 1);
        let action_rows = arrays
            .get_item("actions")?
            .expect("Cells checked it")
            .get_item(slice)?
            .cast_into::<PyUntypedArray>()?
            .unbind();
        Ok(NativeBlock {
            block: Mutex::new(block),
            rows,
            actions,
            action_rows,
            action_layout: action_layout.unbind(),
            check_bounds,
            first_env,
            agents,
            multi_agent: kind.agents().is_some(),
            current_env: None,
            ended: Vec::new(),
        })
    }

    /// How many threads step the block.
    #[getter]
    fn threads(&mut self) -> usize {
        self.block.get_mut().map_or(0, |block| block.threads())
    }

    /// Resets every env (env `i` of the vector env with `seed + i`, modulo
    /// 2**64, or with no seed: their generators run on) and writes their
    /// first observations. Returns `[]`: native envs have no reset infos.
    #[pyo3(signature = (seed = None))]
    fn reset<'py>(&mut self, py: Python<'py>, seed: Option<Bound<'py, PyInt>>) -> PyResult<Bound<'py, PyList>> {
        self.current_env = None;
        let seed = match seed {
            Some(seed) => Some(seed.add(self.first_env)?.call_method1("__and__", (u64::MAX,))?.extract::<u64>()?),
            None => None,
        };
        self.run(py, move |block, rows, _| block.reset(seed, rows))?;
        Ok(PyList::empty(py))
    }

    /// Steps every env on its action rows (`actions`, when given, first
    /// written there with the action layout's `flatten_batch`, all or
    /// nothing: a batch that does not fit raises with `current_env` None
    /// and changes nothing). Returns `(position, info)` for the non-empty
    /// infos, or with `dense` every row's info and the rows that ended,
    /// as `EnvBlock.step`.
    #[pyo3(signature = (actions = None, *, dense = false))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: Option<&Bound<'py, PyAny>>,
        dense: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.current_env = None;
        if let Some(actions) = actions {
            // Called in Rust, not through Python's method call (one pass for
            // a batch that is exactly the action leaf's array: see
            // `Layout.flatten_batch`).
            let out = self.action_rows.bind(py);
            PyLayout::flatten_batch(self.action_layout.bind(py), actions, Some(out), self.check_bounds)?;
        }
        self.run(py, |block, rows, actions| block.step(rows, actions))?;
        let summaries = self.summaries(py)?;
        if !dense {
            return Ok(PyList::new(py, summaries)?.into_any());
        }
        // The non-empty infos by row: `VectorEnv.recv`'s `Infos` makes the
        // empty ones when they are read (a dict per row here cost more than
        // stepping a thousand CartPoles).
        let infos = PyDict::new(py);
        for (row, info) in summaries {
            infos.set_item(row, info)?;
        }
        Ok((infos, self.ended(py)?).into_pyobject(py)?.into_any())
    }

    /// The rows (positions in the block) whose episode ended in the last
    /// step: empty, and false, when none did.
    #[getter]
    fn ended<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.ended)
    }

    /// The env whose step panicked, while the block is broken by it.
    #[getter]
    fn current_env(&self) -> Option<usize> {
        self.current_env
    }
}
