//! `pufferrs._native.EpisodeRows`: `pufferrs_core::episodes` for the
//! PettingZoo blocks of `pufferrs.vector.agents`, which call the envs in
//! Python and hand the outcomes here. Rows are positions in the block
//! (env `e`'s agent slot `k` is row `e * agents + k`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use pufferrs_core::episodes::{Episodes, Role};
use pufferrs_core::error::Error;

use crate::errors::{Raise, type_name};
use crate::layout::PyLayout;
use crate::rows::{BlockRows, RowWriter};

#[pyclass(module = "pufferrs._native", name = "EpisodeRows")]
pub struct EpisodeRows {
    rows: BlockRows,
    episodes: Episodes,
    writer: RowWriter,
}

impl EpisodeRows {
    fn checked(&self, row: usize) -> PyResult<usize> {
        if row < self.episodes.rows() {
            Ok(row)
        } else {
            Err(Error::Buffers(format!("row {row} is not in the block's {} rows", self.episodes.rows()))).raise()
        }
    }

    fn checked_env(&self, env: usize) -> PyResult<usize> {
        if env < self.episodes.envs() {
            Ok(env)
        } else {
            Err(Error::Buffers(format!("env {env} is not in the block's {} envs", self.episodes.envs()))).raise()
        }
    }
}

#[pymethods]
impl EpisodeRows {
    /// `num_envs` envs of `agents` rows each, from env `first_env` of the
    /// buffers' arrays (`arrays`: `RolloutBuffers.array` names to views of
    /// every row). Final rows are written with `layout`'s flatten.
    #[new]
    #[pyo3(signature = (num_envs, agents, first_env, arrays, layout, check_bounds = false))]
    fn new(
        num_envs: usize,
        agents: usize,
        first_env: usize,
        arrays: &Bound<'_, PyDict>,
        layout: Bound<'_, PyLayout>,
        check_bounds: bool,
    ) -> PyResult<Self> {
        let writer = RowWriter::new(layout, check_bounds);
        Ok(EpisodeRows {
            rows: BlockRows::new(arrays, first_env * agents, num_envs * agents, writer.row_bytes())?,
            episodes: Episodes::new(num_envs, agents),
            writer,
        })
    }

    /// A reset of the whole block begins: rewards, flags and masks cleared.
    fn begin_reset(&mut self) {
        self.episodes.begin_reset(&mut self.rows.rows());
    }

    /// The block's reset is done: `ended` is empty.
    fn end_reset(&mut self) {
        self.episodes.end_reset();
    }

    /// Env `env` (just reset) starts an episode: its rows out, zero, masked.
    fn start(&mut self, env: usize) -> PyResult<()> {
        let env = self.checked_env(env)?;
        self.episodes.start_episode(env, &mut self.rows.rows());
        Ok(())
    }

    /// The rows of `rows` that play, in order, after those out of the
    /// episode joined it (rows whose episode ended are left out).
    fn join<'py>(&mut self, py: Python<'py>, rows: Vec<usize>) -> PyResult<Bound<'py, PyList>> {
        let playing = PyList::empty(py);
        for row in rows {
            if self.episodes.join(self.checked(row)?) {
                playing.append(row)?;
            }
        }
        Ok(playing)
    }

    /// The rows of env `env` that act at the next step are exactly `rows`.
    fn act(&mut self, env: usize, rows: Vec<usize>) -> PyResult<()> {
        let env = self.checked_env(env)?;
        let mut block = self.rows.rows();
        for row in self.episodes.rows_of(env) {
            self.episodes.set_acting(row, rows.contains(&row), &mut block);
        }
        Ok(())
    }

    /// Whether `row` acts at the next step (a row that does not is zeroed).
    fn set_acting(&mut self, row: usize, acting: bool) -> PyResult<()> {
        let row = self.checked(row)?;
        self.episodes.set_acting(row, acting, &mut self.rows.rows());
        Ok(())
    }

    /// A step begins: acting rows count it; rewards and flags cleared.
    fn begin_step(&mut self) {
        self.episodes.begin_step(&mut self.rows.rows());
    }

    /// This step's `rewards` of `rows`, ignored (not even read as numbers)
    /// for rows that do not play.
    fn rewards(&mut self, rows: Vec<usize>, rewards: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut block = self.rows.rows();
        for (row, reward) in rows.into_iter().zip(rewards.try_iter()?) {
            let reward = reward?;
            if row >= self.episodes.rows() {
                return Err(Error::Buffers(format!("row {row} is not in the block"))).raise();
            }
            if self.episodes.role(row) != Role::Playing {
                continue;
            }
            let value = reward
                .extract::<f64>()
                .map_err(|_| Error::Mismatch {
                    path: "reward".into(),
                    reason: format!("expected a number, got {}", type_name(&reward)),
                })
                .raise()?;
            self.episodes.reward(row, value, &mut block);
        }
        Ok(())
    }

    /// `row`'s episode ends at this step with these flags (neither: a
    /// truncation); its final row is `last_obs` flattened, or zeros for
    /// None. A bad `last_obs` raises and changes nothing.
    #[pyo3(signature = (row, terminal, truncated, last_obs = None))]
    fn end(
        &mut self,
        py: Python<'_>,
        row: usize,
        terminal: bool,
        truncated: bool,
        last_obs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let row = self.checked(row)?;
        let Self { rows, episodes, writer } = self;
        episodes.end(row, terminal, truncated, &mut rows.rows(), |final_row| match last_obs {
            Some(obs) => writer.write(py, obs, final_row),
            None => {
                final_row.fill(0);
                Ok(())
            }
        })
    }

    /// Whether `row`'s episode ended (it waits for its env's next one).
    fn has_ended(&self, row: usize) -> PyResult<bool> {
        Ok(self.episodes.role(self.checked(row)?) == Role::Ended)
    }

    /// The rows of env `env` that play, in order.
    fn playing<'py>(&self, py: Python<'py>, env: usize) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.episodes.playing(self.checked_env(env)?))
    }

    /// `(return, length)` of env `env`'s episode once its rows ended: the
    /// sum of their returns, and the env's steps.
    fn summary(&mut self, env: usize) -> PyResult<(f64, i64)> {
        let env = self.checked_env(env)?;
        Ok(self.episodes.summary(env, &self.rows.rows()))
    }

    /// The rows whose episode ended in the last step, each once: empty,
    /// and false, when none did.
    #[getter]
    fn ended<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.episodes.ended())
    }
}
