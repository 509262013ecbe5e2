//! `pufferrs._native.InplaceRows`: `pufferrs_core::episodes` for a block of
//! rows that one env object steps all at once (a gymnasium vector env, an
//! EnvPool, a PufferLib-style env writing into the rows it was handed).
//!
//! The env has written (or the caller has copied, once per batch) every
//! row's observation before a step reaches here; one call then hands the
//! whole step's rewards and flags to the core's bookkeeping, so no Python
//! runs per row. Each row is an episode of its own (`Episodes::new(rows,
//! 1)`): the sub-envs of a vector env end and restart independently.
//!
//! Two ways an env restarts a row whose episode ended:
//!
//! - same step (PufferLib's envs, gymnasium's `SAME_STEP` vector envs): the
//!   row already holds the next episode's first observation; the final row
//!   comes from the caller (`final_observations`), or is zeros when the env
//!   gives none. The row keeps playing.
//! - next step (gymnasium's `NEXT_STEP` vector envs, EnvPool): the row still
//!   holds the episode's last observation, which becomes the final row;
//!   the row is then masked (zero, `mask` False) for one step, the step at
//!   which the env resets it and ignores its action, and plays again from
//!   the observation that step returns. This is the multi-agent rule of an
//!   agent that ended and waits for its env: the core's `Ended` role.

use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use pufferrs_core::episodes::{Episodes, Role};
use pufferrs_core::error::Error;

use crate::errors::{Raise, type_name};
use crate::layout::PyLayout;
use crate::rows::{BlockRows, RowWriter};
use pufferrs_core::episodes::Rows;

#[pyclass(module = "pufferrs._native", name = "InplaceRows")]
pub struct InplaceRows {
    rows: BlockRows,
    episodes: Episodes,
    writer: RowWriter,
    next_step: bool,
    row_bytes: usize,
    /// One observation row, kept while the bookkeeping zeroes the row.
    saved: Vec<u8>,
}

/// One reward per row, in the dtype the env gave them.
enum Floats {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// `values` as one float per row: a 1-d numpy array of float32 or float64,
/// copied (the env may reuse its array) in its own dtype.
fn floats(name: &str, values: &Bound<'_, PyAny>, n: usize) -> PyResult<Floats> {
    let got = if let Ok(array) = values.extract::<PyReadonlyArray1<'_, f32>>() {
        check_count(name, array.len(), n)?;
        Floats::F32(array.as_array().to_vec())
    } else if let Ok(array) = values.extract::<PyReadonlyArray1<'_, f64>>() {
        check_count(name, array.len(), n)?;
        Floats::F64(array.as_array().to_vec())
    } else {
        return Err(Error::Mismatch {
            path: name.into(),
            reason: format!("expected a 1-d numpy array of float32 or float64, got {}", describe(values)),
        })
        .raise();
    };
    Ok(got)
}

/// `values` as one bool per row: a 1-d numpy array of bool.
fn flags(name: &str, values: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<bool>> {
    let Ok(array) = values.extract::<PyReadonlyArray1<'_, bool>>() else {
        return Err(Error::Mismatch {
            path: name.into(),
            reason: format!("expected a 1-d numpy array of bool, got {}", describe(values)),
        })
        .raise();
    };
    counted(name, array.as_array().to_vec(), n)
}

fn describe(values: &Bound<'_, PyAny>) -> String {
    match values.cast::<numpy::PyUntypedArray>() {
        Ok(array) => format!("a {}-d array of {}", array.ndim(), array.dtype()),
        Err(_) => type_name(values),
    }
}

fn counted<T>(name: &str, values: Vec<T>, n: usize) -> PyResult<Vec<T>> {
    check_count(name, values.len(), n)?;
    Ok(values)
}

fn check_count(name: &str, len: usize, n: usize) -> PyResult<()> {
    if len != n {
        return Err(Error::Mismatch {
            path: name.into(),
            reason: format!("expected one value per row ({n}), got {len}"),
        })
        .raise();
    }
    Ok(())
}

/// `row` starts an episode (its env just reset it), acting or not; the
/// observation already in its row stays when it acts (the core zeroes a
/// row that does not act, and one that restarts). `saved` holds it meanwhile.
fn restart(episodes: &mut Episodes, saved: &mut [u8], rows: &mut Rows<'_>, row: usize, acting: bool) {
    if acting {
        saved.copy_from_slice(rows.observation(row));
    }
    episodes.start_episode(row, rows);
    episodes.join(row);
    episodes.set_acting(row, acting, rows);
    if acting {
        rows.observation(row).copy_from_slice(saved);
    }
}

#[pymethods]
impl InplaceRows {
    /// Rows `first_row .. first_row + rows` of the buffers' `arrays` (by
    /// their `RolloutBuffers.array` names), observations written with
    /// `layout`; `next_step` says how ended rows restart (module docs).
    #[new]
    #[pyo3(signature = (rows, first_row, arrays, layout, next_step, check_bounds = false))]
    fn new(
        rows: usize,
        first_row: usize,
        arrays: &Bound<'_, PyDict>,
        layout: Bound<'_, PyLayout>,
        next_step: bool,
        check_bounds: bool,
    ) -> PyResult<Self> {
        let writer = RowWriter::new(layout, check_bounds);
        let row_bytes = writer.row_bytes();
        Ok(InplaceRows {
            rows: BlockRows::new(arrays, first_row, rows, row_bytes)?,
            episodes: Episodes::new(rows, 1),
            writer,
            next_step,
            row_bytes,
            saved: vec![0; row_bytes],
        })
    }

    /// Every row starts an episode from the observation in its row (the
    /// env's reset wrote it); `masks` (bool per row, default all) says
    /// which act.
    #[pyo3(signature = (masks = None))]
    fn reset(&mut self, masks: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let n = self.episodes.rows();
        let masks = masks.map(|m| flags("masks", m, n)).transpose()?;
        let mut rows = self.rows.rows();
        self.episodes.begin_reset(&mut rows);
        for row in 0..n {
            restart(&mut self.episodes, &mut self.saved, &mut rows, row, masks.as_ref().is_none_or(|m| m[row]));
        }
        self.episodes.end_reset();
        Ok(())
    }

    /// One step of every row, whose observations are in their rows:
    /// `rewards` (float32 or float64), `terminals` and `truncations`
    /// (bool), one per row; `masks` (bool per row), where given, says
    /// which playing rows act at the next step. Rows that ended get their
    /// final row, their flags, return and length (module docs for how
    /// they restart); `final_observations`, for same-step envs, is indexed
    /// by row for the ended rows' last observations (None, or a None
    /// item: zeros). Bad arguments raise before any row changes.
    #[pyo3(signature = (rewards, terminals, truncations, masks = None, final_observations = None))]
    fn step(
        &mut self,
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        terminals: &Bound<'_, PyAny>,
        truncations: &Bound<'_, PyAny>,
        masks: Option<&Bound<'_, PyAny>>,
        final_observations: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let n = self.episodes.rows();
        let rewards = floats("rewards", rewards, n)?;
        let terminals = flags("terminals", terminals, n)?;
        let truncations = flags("truncations", truncations, n)?;
        let masks = masks.map(|m| flags("masks", m, n)).transpose()?;
        let acting = |row: usize| masks.as_ref().is_none_or(|m| m[row]);
        // Rows that ended at the last step and that the env resets now:
        // with next-step restarts, exactly those the last step ended (every
        // row that ends waits one step, and a step restarts every waiting row).
        let waiting: Vec<usize> = if self.next_step { self.episodes.ended().to_vec() } else { Vec::new() };
        debug_assert_eq!(
            waiting,
            if self.next_step {
                (0..n).filter(|&row| self.episodes.role(row) == Role::Ended).collect()
            } else {
                Vec::new()
            }
        );
        // One view of the rows for the whole step: made once, not per row.
        let mut rows = self.rows.rows();
        self.episodes.begin_step(&mut rows);
        match &rewards {
            Floats::F32(values) => self.episodes.rewards(values, &mut rows),
            Floats::F64(values) => self.episodes.rewards(values, &mut rows),
        }
        // The rows with a flag, found in one pass over the two arrays.
        let flagged: Vec<usize> = (0..n).filter(|&row| terminals[row] | truncations[row]).collect();
        for row in flagged {
            let (terminal, truncated) = (terminals[row], truncations[row]);
            if self.episodes.role(row) != Role::Playing {
                continue;
            }
            if self.next_step {
                // The row holds the episode's last observation: its final row.
                self.episodes.end_observed(row, terminal, truncated, &mut rows);
                continue;
            }
            self.saved.copy_from_slice(rows.observation(row));
            let last = match final_observations {
                Some(all) => Some(all.get_item(row)?).filter(|obs| !obs.is_none()),
                None => None,
            };
            let writer = &self.writer;
            self.episodes.end(row, terminal, truncated, &mut rows, |out| match &last {
                Some(obs) => writer.write(py, obs, out),
                None => {
                    out.fill(0);
                    Ok(())
                }
            })?;
            // The same-step restart: the row holds the next episode's
            // first observation, saved above.
            self.episodes.start_episode(row, &mut rows);
            self.episodes.join(row);
            let act = acting(row);
            self.episodes.set_acting(row, act, &mut rows);
            if act {
                rows.observation(row).copy_from_slice(&self.saved);
            }
        }
        for &row in &waiting {
            restart(&mut self.episodes, &mut self.saved, &mut rows, row, acting(row));
        }
        if let Some(masks) = &masks {
            for (row, &mask) in masks.iter().enumerate() {
                if self.episodes.role(row) == Role::Playing && self.episodes.is_acting(row) != mask {
                    self.episodes.set_acting(row, mask, &mut rows);
                }
            }
        }
        Ok(())
    }

    /// The rows whose episode ended in the last step: empty, and false,
    /// when none did.
    #[getter]
    fn ended<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.episodes.ended())
    }

    /// The rows that wait for their env to restart them at the next step
    /// (next-step envs): masked, their actions ignored.
    #[getter]
    fn waiting(&self) -> Vec<usize> {
        (0..self.episodes.rows()).filter(|&row| self.episodes.role(row) == Role::Ended).collect()
    }

    /// Bytes of one observation row.
    #[getter]
    fn row_bytes(&self) -> usize {
        self.row_bytes
    }
}
