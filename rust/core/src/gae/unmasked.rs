//! The kernel for rows that always act (no masks), the trainer's usual
//! case, built for speed: several rows side by side, in chunks of steps.
//! Its results equal the masked kernel's on such rows, bit for bit.

use super::{Matrix, MatrixMut, Steps};

/// Rows the unmasked kernel walks side by side: the recursion's chain of a
/// multiply and an add per step would otherwise leave the core waiting on
/// one row's previous step, about four times longer than the work itself.
const LANES: usize = 8;

/// Steps the unmasked kernel takes per row at a time, back from the end:
/// small enough that a block's scratch stays in the L1 cache.
const CHUNK: usize = 64;

/// GAE without masks, `LANES` rows at a time. Each chunk of steps of a
/// block of rows goes in two passes: every step's `delta` and whether its
/// episode goes on, row by row over contiguous steps (no step depends on
/// another, so this vectorises); then the recursion, the rows side by side.
/// The arithmetic is the masked kernel's on rows that always act, operation
/// for operation, so the two agree bit for bit.
pub(super) fn advantages(steps: &Steps<'_>, gamma: f64, lambda: f64, out: &mut MatrixMut<'_, f32>) {
    let [envs, horizon] = out.shape;
    let decay = gamma * lambda;
    let mut delta = [[0.0f64; CHUNK]; LANES];
    let mut goes_on = [[0u64; CHUNK]; LANES];
    let mut results = [[0.0f32; CHUNK]; LANES];
    let mut copies = Copies {
        values: [0.0; CHUNK],
        rewards: [0.0; CHUNK],
        finals: [0.0; CHUNK],
        terminals: [0; CHUNK],
        truncations: [0; CHUNK],
    };
    for first in (0..envs).step_by(LANES) {
        let rows = LANES.min(envs - first);
        let mut after = [0.0f64; LANES];
        for (lane, value) in after.iter_mut().enumerate().take(rows) {
            *value = steps.bootstrap.at(first + lane, 0) as f64;
        }
        let mut advantage = [0.0f64; LANES];
        let mut end = horizon;
        while end > 0 {
            let start = end.saturating_sub(CHUNK);
            let len = end - start;
            for lane in 0..rows {
                let i = first + lane;
                let values = steps.values.run(i, start..end, &mut copies.values);
                let finals = match &steps.final_values {
                    Some(f) => f.run(i, start..end, &mut copies.finals),
                    // A truncated step's own value stands in for its future.
                    None => values,
                };
                let chunk = Chunk {
                    values,
                    rewards: steps.rewards.run(i, start..end, &mut copies.rewards),
                    terminals: steps.terminals.run(i, start..end, &mut copies.terminals),
                    truncations: steps.truncations.run(i, start..end, &mut copies.truncations),
                    finals,
                };
                chunk.deltas(after[lane], gamma, &mut delta[lane][..len], &mut goes_on[lane][..len]);
                after[lane] = values[0] as f64;
            }
            // As many lanes as rows: a lone row does one row's work.
            let recurse = match rows {
                1 => recurse::<1>,
                2 => recurse::<2>,
                3 => recurse::<3>,
                4 => recurse::<4>,
                5 => recurse::<5>,
                6 => recurse::<6>,
                7 => recurse::<7>,
                _ => recurse::<LANES>,
            };
            recurse(len, decay, &delta, &goes_on, &mut advantage, &mut results);
            for (lane, result) in results.iter().enumerate().take(rows) {
                out.write_run(first + lane, start, &result[..len]);
            }
            end = start;
        }
    }
}

/// The recursion over the first `len` steps of the first `L` lanes, back
/// from the last step, carrying each lane's `advantage` on.
fn recurse<const L: usize>(
    len: usize,
    decay: f64,
    delta: &[[f64; CHUNK]; LANES],
    goes_on: &[[u64; CHUNK]; LANES],
    advantage: &mut [f64; LANES],
    results: &mut [[f32; CHUNK]; LANES],
) {
    // A local copy stays in registers: the chain from one step to the
    // next goes through no memory.
    let mut carry = [0.0f64; L];
    carry.copy_from_slice(&advantage[..L]);
    for t in (0..len.min(CHUNK)).rev() {
        for lane in 0..L {
            // Zero where the episode ends, as the masked kernel sets it. By
            // the bits, lanes go in vector registers; a lone lane is scalar
            // code, where the bits would cross to the integer registers and
            // back on the chain from step to step (half the speed).
            let carried = if L == 1 {
                if goes_on[lane][t] != 0 { carry[lane] } else { 0.0 }
            } else {
                f64::from_bits(carry[lane].to_bits() & goes_on[lane][t])
            };
            carry[lane] = delta[lane][t] + decay * carried;
            results[lane][t] = carry[lane] as f32;
        }
    }
    advantage[..L].copy_from_slice(&carry);
}

/// Copies of one row's chunk of each input, for rows whose steps are not
/// adjacent in memory.
struct Copies {
    values: Run<f32>,
    rewards: Run<f32>,
    finals: Run<f32>,
    terminals: Run<u8>,
    truncations: Run<u8>,
}

type Run<T> = [T; CHUNK];

/// One row's inputs over the steps of a chunk, all of one length.
struct Chunk<'s> {
    values: &'s [f32],
    rewards: &'s [f32],
    terminals: &'s [u8],
    truncations: &'s [u8],
    /// The values of the final observations, or `values` when unknown.
    finals: &'s [f32],
}

impl Chunk<'_> {
    /// Fills `delta` with each step's TD error and `goes_on` with whether
    /// its episode continues into the next step (all ones) or not (zero);
    /// `after` is the value of the step after the chunk's last.
    ///
    /// Episodes end at few steps, so every step is first taken to go on,
    /// in a loop of plain arithmetic that vectorises, and the steps with a
    /// flag set are then found a word of flags at a time and redone.
    fn deltas(&self, after: f64, gamma: f64, delta: &mut [f64], goes_on: &mut [u64]) {
        let len = self.values.len();
        let last = len - 1;
        // Equal lengths let the compiler drop the bounds checks.
        let (values, next, rewards) = (&self.values[..last], &self.values[1..], &self.rewards[..last]);
        let (delta_head, goes_on_head) = (&mut delta[..last], &mut goes_on[..last]);
        for t in 0..last {
            delta_head[t] = going_on(rewards[t], values[t], next[t] as f64, gamma);
            goes_on_head[t] = u64::MAX;
        }
        delta[last] = going_on(self.rewards[last], self.values[last], after, gamma);
        goes_on[last] = u64::MAX;
        let (terminals, truncations) = (&self.terminals[..len], &self.truncations[..len]);
        let words = terminals.chunks_exact(8).zip(truncations.chunks_exact(8));
        let mut start = 0;
        for (terminal, truncated) in words {
            let word = |flags: &[u8]| u64::from_ne_bytes(flags.try_into().expect("chunks of 8"));
            if word(terminal) | word(truncated) != 0 {
                self.end_episodes(start..start + 8, gamma, delta, goes_on);
            }
            start += 8;
        }
        self.end_episodes(start..len, gamma, delta, goes_on);
    }

    /// Redoes the steps at `steps` where an episode ends.
    fn end_episodes(&self, steps: std::ops::Range<usize>, gamma: f64, delta: &mut [f64], goes_on: &mut [u64]) {
        for t in steps {
            let (terminal, truncated) = (self.terminals[t] != 0, self.truncations[t] != 0);
            if terminal || truncated {
                let (reward, value) = (self.rewards[t] as f64, self.values[t] as f64);
                // The masked kernel's terms in its order: the two agree bit for bit.
                delta[t] = if terminal { reward - value } else { reward + gamma * self.finals[t] as f64 - value };
                goes_on[t] = 0;
            }
        }
    }
}

/// The TD error of a step whose episode goes on into a step of value `next`.
#[inline(always)]
fn going_on(reward: f32, value: f32, next: f64, gamma: f64) -> f64 {
    reward as f64 + gamma * next - value as f64
}

impl<T: Copy> Matrix<'_, T> {
    /// Row `i`'s elements at `steps`, a non-empty range inside the shape:
    /// the matrix's own memory when they are adjacent, else copied into `copy`.
    fn run<'s>(&'s self, i: usize, steps: std::ops::Range<usize>, copy: &'s mut [T; CHUNK]) -> &'s [T] {
        if self.strides[1] == 1 {
            let first = self.origin as isize + i as isize * self.strides[0] + steps.start as isize;
            return &self.data[first as usize..first as usize + steps.len()];
        }
        let len = steps.len();
        for (slot, t) in copy.iter_mut().zip(steps) {
            *slot = self.at(i, t);
        }
        &copy[..len]
    }
}
