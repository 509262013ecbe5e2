//! `pufferrs._native.RolloutBuffers`: a vector env's shared region, its
//! arrays as numpy views, and the waits of `core::sync` with the GIL
//! released. `pufferrs.vector` drives it from both sides.

#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use numpy::PyArrayDescr;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use pufferrs_core::dtype::DType;
use pufferrs_core::error::Error;
use pufferrs_core::plan::{Plan, Sections};
use pufferrs_core::shm::{Region, gather_rows, scatter_rows};
use pufferrs_core::sync::{Control, command, status};

use crate::errors::{Raise, raise, type_name};
use crate::numpy_arrays::{descr, view_of};

/// The shared buffers of one vector env: observations, actions, rewards,
/// terminals, truncations, masks, episode statistics, a gather area for
/// asynchronous batches, and the control words of every worker.
///
/// The parent creates it; workers `attach` to the same memory by file
/// descriptor. Arrays from `array()` view the memory and keep it mapped.
#[pyclass(module = "pufferrs._native", name = "RolloutBuffers", frozen)]
pub struct PyRolloutBuffers {
    region: Region,
    plan: Plan,
    sections: Sections,
    /// The parent's position in the completion ring; the lock also keeps
    /// two threads of one parent from taking completions at once.
    head: Mutex<u32>,
    /// In a worker: its last `wait_request` timed out, so its parent is
    /// busy elsewhere and the next wait sleeps without yielding first.
    idle: AtomicBool,
}

impl PyRolloutBuffers {
    fn control(&self) -> Result<Control<'_>, Error> {
        let start = self.region.section(&self.sections.control)?;
        // SAFETY: the control section starts the region (offset 0, page
        // aligned), lies inside it (checked by `section`), is sized by
        // `Control::bytes` for this plan, started zeroed in the memfd, and
        // lives as long as `self.region`.
        Ok(unsafe { Control::from_ptr(start, self.plan.num_workers) })
    }

    fn worker(&self, worker: u32) -> Result<usize, Error> {
        let n = self.plan.num_workers;
        usize::try_from(worker)
            .ok()
            .filter(|&w| w < n)
            .ok_or_else(|| Error::Buffers(format!("worker {worker} is out of range for {n} workers")))
    }

    /// `(first row, rows)` of each worker's envs, in order.
    fn blocks(&self, workers: &[u32]) -> Result<Vec<(usize, usize)>, Error> {
        let per = self.plan.rows_per_worker();
        let blocks = workers.iter().map(|&w| Ok((self.worker(w)? * per, per))).collect::<Result<Vec<_>, Error>>()?;
        if !self.plan.gathers || blocks.len() * per > self.plan.batch_rows() {
            return Err(Error::Buffers(format!(
                "{} workers do not fit the gather area of {} envs",
                workers.len(),
                if self.plan.gathers { self.plan.batch_envs } else { 0 }
            )));
        }
        Ok(blocks)
    }

    /// The checked plan of these arguments (see `Plan::new`) and where its
    /// sections lie.
    fn plan(
        num_envs: &Bound<'_, PyAny>,
        num_workers: Option<&Bound<'_, PyAny>>,
        obs_row_bytes: &Bound<'_, PyAny>,
        action_row_bytes: &Bound<'_, PyAny>,
        batch_size: Option<&Bound<'_, PyAny>>,
        agents_per_env: Option<&Bound<'_, PyAny>>,
    ) -> Result<(Plan, Sections), Error> {
        let num_envs = count("num_envs", Some(num_envs))?.unwrap_or(0);
        let agents_per_env = count("agents_per_env", agents_per_env)?.unwrap_or(1);
        let num_workers = count("num_workers", num_workers)?;
        let obs_row_bytes = size("obs_row_bytes", obs_row_bytes)?;
        let action_row_bytes = size("action_row_bytes", action_row_bytes)?;
        let batch_size = count("batch_size", batch_size)?;
        let plan = Plan::new(num_envs, agents_per_env, num_workers, obs_row_bytes, action_row_bytes, batch_size)?;
        let sections = Sections::new(&plan, Control::bytes(plan.num_workers))?;
        Ok((plan, sections))
    }

    fn fingerprint(plan: &Plan) -> u64 {
        // FNV-1a over the plan: a worker attached to some other region is
        // told so rather than left to corrupt it.
        let Plan { num_envs, agents_per_env, num_workers, obs_row_bytes, action_row_bytes, batch_envs, gathers } =
            *plan;
        [num_envs, agents_per_env, num_workers, obs_row_bytes, action_row_bytes, batch_envs, gathers as usize]
            .iter()
            .flat_map(|v| (*v as u64).to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    }
}

/// A count the user gave (None stays None): a non-negative int, or a
/// `Buffers` error that names the argument. Zero is left to `Plan::new`.
fn count(name: &str, value: Option<&Bound<'_, PyAny>>) -> Result<Option<usize>, Error> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    int(value).map(Some).ok_or_else(|| refuse(name, value, "a positive int"))
}

/// A size in bytes or items the user gave: a non-negative int, or a
/// `Buffers` error that names the argument.
fn size(name: &str, value: &Bound<'_, PyAny>) -> Result<usize, Error> {
    int(value).ok_or_else(|| refuse(name, value, "a non-negative int"))
}

/// `value` as a usize if it is a Python int (not a bool) that fits one.
fn int(value: &Bound<'_, PyAny>) -> Option<usize> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return None;
    }
    value.extract::<usize>().ok()
}

fn refuse(name: &str, value: &Bound<'_, PyAny>, expected: &str) -> Error {
    let shown = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| type_name(value));
    Error::Buffers(format!("{name} must be {expected}, got {shown}"))
}

/// When a wait of `timeout` seconds from now ends; None (no end) for a
/// timeout past what the clock can represent.
fn deadline(timeout: Option<f64>) -> Option<Instant> {
    let timeout = Duration::try_from_secs_f64(timeout?.max(0.0)).ok()?;
    Instant::now().checked_add(timeout)
}

#[pymethods]
impl PyRolloutBuffers {
    #[classattr]
    const STEP: u32 = command::STEP;
    #[classattr]
    const RESET: u32 = command::RESET;
    #[classattr]
    const CLOSE: u32 = command::CLOSE;
    #[classattr]
    const CALL: u32 = command::CALL;
    #[classattr]
    const OK: u32 = status::OK;
    #[classattr]
    const INFOS: u32 = status::INFOS;
    #[classattr]
    const ERROR: u32 = status::ERROR;
    #[classattr]
    const ENDED: u32 = status::ENDED;

    /// New buffers for `num_envs` envs run by `num_workers` worker
    /// processes, with rows of `obs_row_bytes` and `action_row_bytes`, and a
    /// gather area for batches of `batch_size` envs when that is less than
    /// `num_envs`. `num_workers=None`: the envs run in this process, one
    /// batch at a time (see `Plan::new` for the rules). Every array holds
    /// `agents_per_env` consecutive rows per env (its agents, in slot order).
    #[new]
    #[pyo3(signature = (num_envs, num_workers, obs_row_bytes, action_row_bytes, batch_size = None, agents_per_env = None))]
    fn new(
        num_envs: &Bound<'_, PyAny>,
        num_workers: Option<&Bound<'_, PyAny>>,
        obs_row_bytes: &Bound<'_, PyAny>,
        action_row_bytes: &Bound<'_, PyAny>,
        batch_size: Option<&Bound<'_, PyAny>>,
        agents_per_env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (plan, sections) =
            Self::plan(num_envs, num_workers, obs_row_bytes, action_row_bytes, batch_size, agents_per_env).raise()?;
        let region = Region::create("pufferrs", sections.len).map_err(|e| raise(e.into()))?;
        let this = PyRolloutBuffers { region, plan, sections, head: Mutex::new(0), idle: AtomicBool::new(false) };
        this.control().raise()?.stamp(Self::fingerprint(&plan));
        Ok(this)
    }

    /// Refuses, with the error `new` would raise, counts that no buffers
    /// can hold (see `Plan::new`): a vector env asks before it makes any
    /// env, so that `num_envs=0` is this error rather than a failed look
    /// at its first env. What depends on the env (its agents, its rows) is
    /// checked by `new`.
    #[staticmethod]
    #[pyo3(signature = (num_envs, num_workers = None, batch_size = None))]
    fn check_counts(
        num_envs: &Bound<'_, PyAny>,
        num_workers: Option<&Bound<'_, PyAny>>,
        batch_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let num_envs = count("num_envs", Some(num_envs)).raise()?.unwrap_or(0);
        let num_workers = count("num_workers", num_workers).raise()?;
        let batch_size = count("batch_size", batch_size).raise()?;
        Plan::new(num_envs, 1, num_workers, 0, 0, batch_size).raise()?;
        Ok(())
    }

    /// How many workers (processes, or Ray actors) run `num_envs` envs on
    /// `cpus` CPUs when the user does not say: the plan's rule
    /// (`Plan::default_workers`). A `num_envs` that is not a count gives 1,
    /// for `new` or `check_counts` to refuse with their own error.
    #[staticmethod]
    fn default_workers(num_envs: &Bound<'_, PyAny>, cpus: usize) -> usize {
        int(num_envs).map_or(1, |num_envs| Plan::default_workers(num_envs, cpus))
    }

    /// The buffers that another process created, from a file descriptor of
    /// theirs (see `fd`) and the same arguments. The caller keeps `fd` and
    /// may close it once this returns.
    /// Linux only, as is `fd`: elsewhere the region is private to its process.
    #[cfg(target_os = "linux")]
    #[staticmethod]
    #[pyo3(signature = (fd, num_envs, num_workers, obs_row_bytes, action_row_bytes, batch_size = None, agents_per_env = None))]
    #[allow(clippy::too_many_arguments)]
    fn attach(
        fd: i32,
        num_envs: &Bound<'_, PyAny>,
        num_workers: Option<&Bound<'_, PyAny>>,
        obs_row_bytes: &Bound<'_, PyAny>,
        action_row_bytes: &Bound<'_, PyAny>,
        batch_size: Option<&Bound<'_, PyAny>>,
        agents_per_env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (plan, sections) =
            Self::plan(num_envs, num_workers, obs_row_bytes, action_row_bytes, batch_size, agents_per_env).raise()?;
        if fd < 0 {
            return Err(raise(Error::Buffers(format!("invalid file descriptor {fd}"))));
        }
        // SAFETY: the caller owns `fd` and keeps it open for this call, the
        // only time the borrow is used (fstat and mmap); the mapping made
        // from it does not depend on the fd staying open.
        let region = Region::attach(unsafe { BorrowedFd::borrow_raw(fd) }).map_err(|e| raise(e.into()))?;
        if region.len() < sections.len {
            return Err(raise(Error::Buffers(format!(
                "the region behind fd {fd} holds {} bytes; these buffers need {}",
                region.len(),
                sections.len
            ))));
        }
        let this = PyRolloutBuffers { region, plan, sections, head: Mutex::new(0), idle: AtomicBool::new(false) };
        if !this.control().raise()?.matches(Self::fingerprint(&plan)) {
            return Err(raise(Error::Buffers(format!("fd {fd} does not hold buffers made for these arguments"))));
        }
        Ok(this)
    }

    /// The file descriptor of the region, for workers to attach to.
    #[cfg(target_os = "linux")]
    #[getter]
    fn fd(&self) -> PyResult<i32> {
        self.region
            .fd()
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| raise(Error::Buffers("attached buffers do not hold the region's fd".into())))
    }

    #[getter]
    fn num_envs(&self) -> usize {
        self.plan.num_envs
    }

    /// Rows per env (its agents; 1 for a single-agent env).
    #[getter]
    fn agents_per_env(&self) -> usize {
        self.plan.agents_per_env
    }

    #[getter]
    fn num_workers(&self) -> usize {
        self.plan.num_workers
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.plan.batch_envs
    }

    /// Whether batches are gathered from several workers (asynchronous
    /// batches of worker processes).
    #[getter]
    fn gathers(&self) -> bool {
        self.plan.gathers
    }

    /// Bytes of shared memory the buffers map.
    #[getter]
    fn nbytes(&self) -> usize {
        self.region.len()
    }

    /// A zero-copy view of one array, one row per agent of every env
    /// (`rows = num_envs * agents_per_env`): `observations` and `actions`
    /// as `(rows, row_bytes)` uint8 rows; `rewards` float32; `terminals`,
    /// `truncations`, `masks` bool; `episode_returns` float64;
    /// `episode_lengths` int64; the same with a `batch_` prefix for the
    /// gather area (`batch_size * agents_per_env` rows); and
    /// `final_observations`, the `(rows, row_bytes)` rows that keep the last
    /// observation of each agent's most recently ended episode.
    fn array<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let (s, p) = (&this.sections, &this.plan);
        let (n, b) = (p.num_rows(), if p.gathers { p.batch_rows() } else { 0 });
        let (range, dtype, dims): (_, _, Vec<usize>) = match name {
            "observations" => (&s.observations, DType::U8, vec![n, p.obs_row_bytes]),
            "actions" => (&s.actions, DType::U8, vec![n, p.action_row_bytes]),
            "rewards" => (&s.rewards, DType::F32, vec![n]),
            "terminals" => (&s.terminals, DType::Bool, vec![n]),
            "truncations" => (&s.truncations, DType::Bool, vec![n]),
            "masks" => (&s.masks, DType::Bool, vec![n]),
            "episode_returns" => (&s.episode_returns, DType::F64, vec![n]),
            "episode_lengths" => (&s.episode_lengths, DType::I64, vec![n]),
            "batch_observations" => (&s.batch_observations, DType::U8, vec![b, p.obs_row_bytes]),
            "batch_actions" => (&s.batch_actions, DType::U8, vec![b, p.action_row_bytes]),
            "batch_rewards" => (&s.batch_rewards, DType::F32, vec![b]),
            "batch_terminals" => (&s.batch_terminals, DType::Bool, vec![b]),
            "batch_truncations" => (&s.batch_truncations, DType::Bool, vec![b]),
            "batch_masks" => (&s.batch_masks, DType::Bool, vec![b]),
            "final_observations" => (&s.final_observations, DType::U8, vec![n, p.obs_row_bytes]),
            _ => return Err(raise(Error::Buffers(format!("no array named {name:?}")))),
        };
        let item = dtype.itemsize();
        let nbytes = dims.iter().try_fold(item, |n, &d| n.checked_mul(d));
        if nbytes != Some(range.len()) {
            return Err(raise(Error::Buffers(format!("{name} does not fill its section of {} bytes", range.len()))));
        }
        let start = this.region.section(range).raise()?;
        let strides: Vec<isize> =
            if dims.len() == 2 { vec![(dims[1] * item) as isize, item as isize] } else { vec![item as isize] };
        let dtype: Bound<'py, PyArrayDescr> = descr(py, dtype)?;
        // SAFETY: `range` lies inside the region (checked by `section`), and
        // `dims`/`strides` address exactly its bytes, C-ordered (their
        // product was just checked against its length, which Sections keeps
        // under isize::MAX). The region stays mapped while `slf` lives, and
        // the view holds `slf`.
        unsafe { view_of(slf.as_any(), start, &dtype, &dims, &strides, true) }
    }

    // ---- parent side ----

    /// Sends `command` to each of `workers`.
    fn request(&self, workers: Vec<u32>, command: u32) -> PyResult<()> {
        let control = self.control().raise()?;
        for &w in &workers {
            control.request(self.worker(w).raise()?, command);
        }
        Ok(())
    }

    /// Workers that completed their request, in completion order: waits
    /// (GIL released) until `max` have, one failed (its status is ERROR), or
    /// `timeout` seconds pass, and returns those taken so far.
    #[pyo3(signature = (max, timeout = None))]
    fn wait_completed(&self, py: Python<'_>, max: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Vec<u32>> {
        let max = size("max", max).raise()?;
        let control = self.control().raise()?;
        let deadline = deadline(timeout);
        Ok(py.detach(|| {
            let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            // At most one completion per worker is outstanding at a time.
            let mut out = Vec::with_capacity(max.min(self.plan.num_workers));
            control.take_completed(&mut head, max, &mut out, deadline);
            out
        }))
    }

    /// How `worker` finished its last request: OK, INFOS or ERROR, with
    /// the ENDED flag when one of its episodes ended.
    fn status(&self, worker: u32) -> PyResult<u32> {
        Ok(self.control().raise()?.status(self.worker(worker).raise()?))
    }

    /// Copies the observations, rewards, terminals, truncations and masks of
    /// `workers`' envs (all their rows) into the gather area, back to back
    /// in that order, with the GIL released.
    fn gather(&self, py: Python<'_>, workers: Vec<u32>) -> PyResult<()> {
        let blocks = self.blocks(&workers).raise()?;
        let (s, p) = (&self.sections, &self.plan);
        let pairs = [
            (&s.observations, &s.batch_observations, p.obs_row_bytes),
            (&s.rewards, &s.batch_rewards, 4),
            (&s.terminals, &s.batch_terminals, 1),
            (&s.truncations, &s.batch_truncations, 1),
            (&s.masks, &s.batch_masks, 1),
        ];
        py.detach(|| {
            for (src, dst, row) in pairs {
                let (src, dst) = (self.region.section(src)?, self.region.section(dst)?);
                // SAFETY: `blocks` checked every worker and that the batch
                // fits the gather area; both sections are inside the region
                // (checked by `section`). The workers completed and are not
                // sent anything until this returns, so nobody writes their
                // rows meanwhile.
                unsafe { gather_rows(src, dst, row, &blocks) }
            }
            Ok(())
        })
        .raise()
    }

    /// Copies action rows from the gather area to `workers`' envs, in the
    /// order of `workers`, with the GIL released.
    fn scatter_actions(&self, py: Python<'_>, workers: Vec<u32>) -> PyResult<()> {
        let blocks = self.blocks(&workers).raise()?;
        let (s, row) = (&self.sections, self.plan.action_row_bytes);
        py.detach(|| {
            let (src, dst) = (self.region.section(&s.batch_actions)?, self.region.section(&s.actions)?);
            // SAFETY: as in `gather`; the workers wait for a request, which
            // is sent after this returns, before they read their actions.
            unsafe { scatter_rows(src, dst, row, &blocks) };
            Ok(())
        })
        .raise()
    }

    // ---- worker side ----

    /// Waits (GIL released) for the next command to `worker`; None when
    /// `timeout` seconds pass first. After a wait that timed out, the next
    /// one sleeps without yielding the core first (`Control::wait_request`).
    #[pyo3(signature = (worker, timeout = None))]
    fn wait_request(&self, py: Python<'_>, worker: u32, timeout: Option<f64>) -> PyResult<Option<u32>> {
        let worker = self.worker(worker).raise()?;
        let control = self.control().raise()?;
        let deadline = deadline(timeout);
        let due = !self.idle.load(Relaxed);
        let command = py.detach(|| control.wait_request(worker, deadline, due));
        self.idle.store(command.is_none(), Relaxed);
        Ok(command)
    }

    /// Reports that `worker` finished its request with `status`.
    fn complete(&self, worker: u32, status: u32) -> PyResult<()> {
        self.control().raise()?.complete(self.worker(worker).raise()?, status);
        Ok(())
    }

    fn __repr__(&self) -> String {
        let p = &self.plan;
        format!(
            "RolloutBuffers(num_envs={}, num_workers={}, obs_row_bytes={}, action_row_bytes={}, batch_size={}, agents_per_env={}, nbytes={})",
            p.num_envs,
            p.num_workers,
            p.obs_row_bytes,
            p.action_row_bytes,
            p.batch_envs,
            p.agents_per_env,
            self.region.len()
        )
    }
}
