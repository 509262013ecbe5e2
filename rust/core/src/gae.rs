//! Generalized advantage estimation (GAE) over the steps of many envs.
//!
//! Every array is an `(envs, steps)` matrix addressed by element strides, so
//! one kernel reads env-major buffers, time-major ones (as their transpose)
//! and strided views of either without copying them. Sums run in f64 and
//! round to f32 once per result, so long horizons with `gamma * lambda`
//! near 1 lose no precision to accumulation.
//!
//! At each step `t` of env `i`, walking backwards:
//!
//! - a terminal step has no future: `delta = r - V(s_t)`;
//! - a truncated step (not terminal) ends the episode too, but its future is
//!   worth `V(final observation)`: `delta = r + gamma * final - V(s_t)`,
//!   where `final` is `final_values[i, t]` when known, else `V(s_t)`;
//! - any other step continues into the next one, whose value is
//!   `values[i, t + 1]`, or `bootstrap[i]` after the last step.
//!
//! `advantage = delta + gamma * lambda * (next step's advantage)`, the
//! latter taken as zero across an episode boundary.
//!
//! With `masks` (multi-agent rows: true where the agent acted), a masked
//! step is not a step of the agent's own: the rewards and flags stored at
//! it belong to the row's last unmasked step before it. So an unmasked step
//! owns the sum of the rewards at itself and at the masked steps after it
//! up to the row's next unmasked step, ends its episode if any of them
//! does (terminal first; a truncation's future is `final_values` at the
//! truncated step), and continues into that next unmasked step's value, or
//! `bootstrap[i]` when the row has none. Discounting counts the agent's
//! steps, not the env's. Masked steps get advantage 0, as do the rewards
//! before a row's first unmasked step (their step was in an earlier
//! rollout).

use crate::error::{Error, Result};

/// A read-only `(envs, steps)` matrix: element `(i, t)` is
/// `data[origin + i * strides[0] + t * strides[1]]`, every one of them
/// checked to lie inside `data` when the matrix is made.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a, T> {
    data: &'a [T],
    origin: usize,
    shape: [usize; 2],
    strides: [isize; 2],
}

/// The writable counterpart of `Matrix`, for the advantages.
#[derive(Debug)]
pub struct MatrixMut<'a, T> {
    data: &'a mut [T],
    origin: usize,
    shape: [usize; 2],
    strides: [isize; 2],
}

/// Checks that every element of `shape` and `strides` from `origin` lies
/// inside `len` elements.
fn check_extent(name: &str, len: usize, origin: usize, shape: [usize; 2], strides: [isize; 2]) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    // i128 holds any product of a usize and an isize, so nothing overflows.
    let (mut lo, mut hi) = (origin as i128, origin as i128);
    for (&dim, &stride) in shape.iter().zip(&strides) {
        let extent = (dim as i128 - 1) * stride as i128;
        lo += extent.min(0);
        hi += extent.max(0);
    }
    if lo < 0 || hi >= len as i128 {
        return Err(Error::Row(format!(
            "{name}: shape {shape:?} with strides {strides:?} from element {origin} reaches outside its {len} elements"
        )));
    }
    Ok(())
}

impl<T: Copy> Matrix<'_, T> {
    fn at(&self, i: usize, t: usize) -> T {
        // In range by `check_extent`: no overflow, and the index is inside `data`.
        let index = self.origin as isize + i as isize * self.strides[0] + t as isize * self.strides[1];
        self.data[index as usize]
    }
}

impl<'a, T: Copy> Matrix<'a, T> {
    /// The matrix of `shape` and element `strides` whose element `(0, 0)` is
    /// `data[origin]`; refused (naming it `name`) unless every element lies
    /// inside `data`.
    pub fn new(name: &str, data: &'a [T], origin: usize, shape: [usize; 2], strides: [isize; 2]) -> Result<Self> {
        check_extent(name, data.len(), origin, shape, strides)?;
        Ok(Matrix { data, origin, shape, strides })
    }

    /// A C-ordered `(rows, cols)` matrix over all of `data`.
    pub fn c_order(name: &str, data: &'a [T], shape: [usize; 2]) -> Result<Self> {
        Self::new(name, data, 0, shape, [shape[1] as isize, 1])
    }

    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }
}

impl<'a, T: Copy> MatrixMut<'a, T> {
    /// As `Matrix::new`.
    pub fn new(name: &str, data: &'a mut [T], origin: usize, shape: [usize; 2], strides: [isize; 2]) -> Result<Self> {
        check_extent(name, data.len(), origin, shape, strides)?;
        Ok(MatrixMut { data, origin, shape, strides })
    }

    /// As `Matrix::c_order`.
    pub fn c_order(name: &str, data: &'a mut [T], shape: [usize; 2]) -> Result<Self> {
        Self::new(name, data, 0, shape, [shape[1] as isize, 1])
    }

    fn index(&self, i: usize, t: usize) -> usize {
        // In range by `check_extent`, as in `Matrix::at`.
        (self.origin as isize + i as isize * self.strides[0] + t as isize * self.strides[1]) as usize
    }

    fn at(&self, i: usize, t: usize) -> T {
        self.data[self.index(i, t)]
    }

    fn set(&mut self, i: usize, t: usize, value: T) {
        let index = self.index(i, t);
        self.data[index] = value;
    }

    /// Writes `values` to row `i` from step `start` on.
    fn write_run(&mut self, i: usize, start: usize, values: &[T]) {
        if self.strides[1] == 1 {
            let first = self.index(i, start);
            self.data[first..first + values.len()].copy_from_slice(values);
        } else {
            for (t, &value) in (start..).zip(values) {
                self.set(i, t, value);
            }
        }
    }

    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }
}

/// One rollout's steps, each array `(envs, steps)` but `bootstrap`,
/// which is `(envs, 1)`. Flags are bytes, nonzero for true (numpy's and
/// torch's bool).
#[derive(Clone, Copy, Debug)]
pub struct Steps<'a> {
    /// `V(s_t)`, as the rollout's policy estimated it.
    pub values: Matrix<'a, f32>,
    pub rewards: Matrix<'a, f32>,
    pub terminals: Matrix<'a, u8>,
    pub truncations: Matrix<'a, u8>,
    /// `V(final observation)` of each truncated step; used only where a
    /// step is truncated and not terminal. None: no final observations are
    /// known, and a truncated step's own value stands in for its future.
    pub final_values: Option<Matrix<'a, f32>>,
    /// `V(observation after each env's last step)`.
    pub bootstrap: Matrix<'a, f32>,
    /// Where the row's agent acted (nonzero); None: at every step.
    pub masks: Option<Matrix<'a, u8>>,
}

impl Steps<'_> {
    /// Refuses arrays whose shapes do not match `values`'.
    fn check(&self) -> Result<[usize; 2]> {
        let shape = self.values.shape;
        let refuse = |name: &str, expected: [usize; 2], got: [usize; 2]| {
            Err(Error::Row(format!(
                "{name}: expected shape ({}, {}) to match values, got ({}, {})",
                expected[0], expected[1], got[0], got[1]
            )))
        };
        for (name, got) in [
            ("rewards", self.rewards.shape),
            ("terminals", self.terminals.shape),
            ("truncations", self.truncations.shape),
        ]
        .into_iter()
        .chain(self.final_values.map(|f| ("final_values", f.shape)))
        .chain(self.masks.map(|m| ("masks", m.shape)))
        {
            if got != shape {
                return refuse(name, shape, got);
            }
        }
        if self.bootstrap.shape != [shape[0], 1] {
            return Err(Error::Row(format!(
                "bootstrap: expected shape ({},) to match values, got ({},)",
                shape[0], self.bootstrap.shape[0]
            )));
        }
        Ok(shape)
    }
}

/// Writes GAE(`gamma`, `lambda`) of `steps` into `out` (the module
/// documentation gives the rule); refuses shapes that do not match, and a
/// `gamma` or `lambda` outside [0, 1] (NaN included), which would fill
/// `out` with NaNs or with sums that grow without bound, not advantages.
pub fn advantages(steps: &Steps<'_>, gamma: f64, lambda: f64, out: &mut MatrixMut<'_, f32>) -> Result<()> {
    for (name, value) in [("gamma", gamma), ("gae_lambda", lambda)] {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::Mismatch {
                path: name.into(),
                reason: format!("expected a value in [0, 1], got {value:?}"),
            });
        }
    }
    let [envs, horizon] = steps.check()?;
    if out.shape != [envs, horizon] {
        let got = out.shape;
        return Err(Error::Row(format!(
            "out: expected shape ({envs}, {horizon}) to match values, got ({}, {})",
            got[0], got[1]
        )));
    }
    match steps.masks {
        None => unmasked::advantages(steps, gamma, lambda, out),
        Some(masks) => masked(steps, masks, gamma, lambda, out),
    }
    Ok(())
}

/// GAE with masks: one row at a time, step by step, folding each masked
/// step's outcome into the row's last unmasked step before it.
fn masked(steps: &Steps<'_>, masks: Matrix<'_, u8>, gamma: f64, lambda: f64, out: &mut MatrixMut<'_, f32>) {
    let [envs, horizon] = out.shape;
    let decay = gamma * lambda;
    for i in 0..envs {
        let mut next_value = steps.bootstrap.at(i, 0) as f64;
        let mut next_advantage = 0.0f64;
        // What the masked steps after the current one hand to the row's
        // previous unmasked step.
        let mut folded: Option<Outcome> = None;
        for t in (0..horizon).rev() {
            let own = Outcome::at(steps, i, t);
            if masks.at(i, t) == 0 {
                folded = Some(folded.map_or(own, |later| own.then(later)));
                out.set(i, t, 0.0);
                continue;
            }
            // Without a masked step after it, the step's own outcome as it
            // is: rows that always act compute exactly what `unmasked` does.
            let outcome = folded.take().map_or(own, |later| own.then(later));
            let value = steps.values.at(i, t) as f64;
            let delta = if outcome.terminal {
                next_advantage = 0.0;
                outcome.reward - value
            } else if let Some(at) = outcome.truncated_at {
                next_advantage = 0.0;
                let future = steps.final_values.map_or(value, |f| f.at(i, at) as f64);
                outcome.reward + gamma * future - value
            } else {
                outcome.reward + gamma * next_value - value
            };
            next_advantage = delta + decay * next_advantage;
            out.set(i, t, next_advantage as f32);
            next_value = value;
        }
    }
}

/// One rollout's stored outcomes, writable: `(envs, steps)` rewards and
/// flags (bytes, nonzero for true).
#[derive(Debug)]
pub struct StoredOutcomes<'a> {
    pub rewards: MatrixMut<'a, f32>,
    pub terminals: MatrixMut<'a, u8>,
    pub truncations: MatrixMut<'a, u8>,
}

/// Folds outcomes that arrive after the step that owns them was stored
/// into that step, by the rule `advantages` folds a masked step into the
/// row's last acting step (`Outcome::then`): the trainer's rows that have
/// stored a whole rollout and wait, masked, for their agent's turn hand
/// their masked steps' outcomes to their last stored step this way.
/// `later[k]` (reward, terminal, truncated) goes to step `cells[k]`.
pub fn fold_outcomes(
    stored: &mut StoredOutcomes<'_>,
    cells: &[(usize, usize)],
    later: &[(f32, bool, bool)],
) -> Result<()> {
    let shape = stored.rewards.shape;
    if stored.terminals.shape != shape || stored.truncations.shape != shape {
        return Err(Error::Row(format!(
            "terminals and truncations: expected shape {shape:?} to match rewards, got {:?} and {:?}",
            stored.terminals.shape, stored.truncations.shape
        )));
    }
    if cells.len() != later.len() {
        return Err(Error::Row(format!("{} steps for {} outcomes", cells.len(), later.len())));
    }
    if let Some(&(i, t)) = cells.iter().find(|&&(i, t)| i >= shape[0] || t >= shape[1]) {
        return Err(Error::Row(format!("step ({i}, {t}) is outside the ({}, {}) steps", shape[0], shape[1])));
    }
    for (&(i, t), &(reward, terminal, truncated)) in cells.iter().zip(later) {
        let own = Outcome {
            reward: stored.rewards.at(i, t) as f64,
            terminal: stored.terminals.at(i, t) != 0,
            truncated_at: (stored.truncations.at(i, t) != 0).then_some(t),
        };
        let folded = own.then(Outcome { reward: reward as f64, terminal, truncated_at: truncated.then_some(t) });
        stored.rewards.set(i, t, folded.reward as f32);
        stored.terminals.set(i, t, folded.terminal as u8);
        stored.truncations.set(i, t, folded.truncated_at.is_some() as u8);
    }
    Ok(())
}

/// The reward and episode end of a stretch of one row's steps.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    reward: f64,
    terminal: bool,
    /// The step whose truncation ends the stretch's episode, if one does.
    truncated_at: Option<usize>,
}

impl Outcome {
    fn at(steps: &Steps<'_>, i: usize, t: usize) -> Self {
        Outcome {
            reward: steps.rewards.at(i, t) as f64,
            terminal: steps.terminals.at(i, t) != 0,
            truncated_at: (steps.truncations.at(i, t) != 0).then_some(t),
        }
    }

    /// This stretch followed by `later`: rewards add, a terminal anywhere
    /// wins, and of two truncations the earlier one ends the episode.
    fn then(self, later: Outcome) -> Self {
        Outcome {
            reward: self.reward + later.reward,
            terminal: self.terminal || later.terminal,
            truncated_at: self.truncated_at.or(later.truncated_at),
        }
    }
}

mod unmasked;

#[cfg(test)]
mod tests;
