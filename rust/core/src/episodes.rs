//! Per-row episode bookkeeping of a block of envs: the one owner of what an
//! episode means for the rows of a vector env.
//!
//! A block is `envs` envs of `agents` rows each (one row per env for a
//! gymnasium env, one per possible agent of a PettingZoo env): env `e` owns
//! rows `e * agents .. (e + 1) * agents`. Whoever steps the envs (the
//! bindings' `EnvBlock` and PettingZoo blocks, or an env written in Rust)
//! calls the env, writes the observations of the rows that act, and hands
//! the outcomes to [`Episodes`], which keeps each row's running episode and
//! writes the rest of the rows: rewards, flags, masks, episode returns and
//! lengths, the zeros of rows that do not act. The rules:
//!
//! - A row is `Out` of its env's episode (not yet joined), `Playing`, or
//!   `Ended`. Only a playing row takes rewards; rewards for other rows are
//!   ignored. An ended row stays ended (and masked) until its env starts its
//!   next episode, even if its agent shows up again.
//! - Each step, every row that acts (its mask is set) counts one step of its
//!   episode; a row's return is the sum, in float64, of the rewards it took.
//! - A row's episode ends with its flags: a row that ends with neither flag
//!   (an agent that left without one) is truncated, since its episode was
//!   cut short. Its final row must be written first (its last observation,
//!   zeros when there is none; the caller's `write_final`); then its flags,
//!   return and length are recorded, its observation row is zeroed and it
//!   stops acting.
//! - Autoreset is same-step: when no row of an env plays any more, the
//!   caller resets the env and starts its next episode
//!   ([`Episodes::start_episode`]) in the same step, after reading
//!   [`Episodes::summary`]; the ended rows keep the step's reward and flags
//!   while they hold the next episode's first observation.
//! - A row that does not act is zero with its mask False.
//!
//! Nothing here knows Python: the shared arrays come in as slices of the
//! block's rows ([`Rows`]). An env written in Rust steps into its rows the
//! way the bindings' `EnvBlock` does for gymnasium envs:
//!
//! ```
//! use pufferrs_core::episodes::{Episodes, Rows};
//!
//! /// Counts to 3, one byte of observation, reward 1 a step.
//! struct Counter(u8);
//! impl Counter {
//!     fn reset(&mut self) -> u8 { self.0 = 0; 0 }
//!     fn step(&mut self) -> (u8, f64, bool) { self.0 += 1; (self.0, 1.0, self.0 == 3) }
//! }
//!
//! let (mut obs, mut last) = ([0u8; 2], [0u8; 2]);
//! let (mut rewards, mut terminals, mut truncations, mut masks) = ([0f32; 2], [0u8; 2], [0u8; 2], [0u8; 2]);
//! let (mut returns, mut lengths) = ([0f64; 2], [0i64; 2]);
//! let mut rows = Rows {
//!     row_bytes: 1,
//!     observations: &mut obs,
//!     final_observations: &mut last,
//!     rewards: &mut rewards,
//!     terminals: &mut terminals,
//!     truncations: &mut truncations,
//!     masks: &mut masks,
//!     episode_returns: &mut returns,
//!     episode_lengths: &mut lengths,
//! };
//! let mut envs = [Counter(0), Counter(0)];
//! let mut episodes = Episodes::new(2, 1);
//! let start = |episodes: &mut Episodes, rows: &mut Rows, i: usize, first: u8| {
//!     episodes.start_episode(i, rows);
//!     episodes.join(i);
//!     episodes.set_acting(i, true, rows);
//!     rows.observation(i)[0] = first;
//! };
//! episodes.begin_reset(&mut rows);
//! for (i, env) in envs.iter_mut().enumerate() {
//!     let first = env.reset();
//!     start(&mut episodes, &mut rows, i, first);
//! }
//! episodes.end_reset();
//! for _ in 0..3 {
//!     episodes.begin_step(&mut rows);
//!     for (i, env) in envs.iter_mut().enumerate() {
//!         let (next, reward, terminal) = env.step();
//!         episodes.reward(i, reward, &mut rows);
//!         if terminal {
//!             // The final row first, then the same-step reset.
//!             episodes.end(i, true, false, &mut rows, |row| Ok::<_, ()>(row[0] = next)).unwrap();
//!             let first = env.reset();
//!             start(&mut episodes, &mut rows, i, first);
//!         } else {
//!             rows.observation(i)[0] = next;
//!         }
//!     }
//! }
//! assert_eq!(episodes.ended(), &[0, 1]);
//! assert_eq!((rows.episode_returns[0], rows.episode_lengths[0], rows.final_observations[0]), (3.0, 3, 3));
//! assert_eq!((rows.observations[0], rows.terminals[0], rows.masks[0]), (0, 1, 1));
//! ```

use std::ops::Range;

/// The arrays of the block's rows, row `r` of the block at index `r` (and
/// at bytes `r * row_bytes ..` of the two observation arrays). Flags and
/// masks are numpy bools: one byte, 0 or 1.
pub struct Rows<'a> {
    pub row_bytes: usize,
    pub observations: &'a mut [u8],
    pub final_observations: &'a mut [u8],
    pub rewards: &'a mut [f32],
    pub terminals: &'a mut [u8],
    pub truncations: &'a mut [u8],
    pub masks: &'a mut [u8],
    pub episode_returns: &'a mut [f64],
    pub episode_lengths: &'a mut [i64],
}

impl Rows<'_> {
    fn bytes(&self, row: usize) -> Range<usize> {
        row * self.row_bytes..(row + 1) * self.row_bytes
    }

    /// The bytes of `row` in `observations`.
    pub fn observation(&mut self, row: usize) -> &mut [u8] {
        let bytes = self.bytes(row);
        &mut self.observations[bytes]
    }

    /// The bytes of `row` in `final_observations`.
    pub fn final_observation(&mut self, row: usize) -> &mut [u8] {
        let bytes = self.bytes(row);
        &mut self.final_observations[bytes]
    }
}

impl<'a> Rows<'a> {
    /// The first `rows` rows and the rest, each a block's rows of its own:
    /// parts of a block stepped on different threads each get theirs.
    pub fn split_at(self, rows: usize) -> (Rows<'a>, Rows<'a>) {
        let bytes = rows * self.row_bytes;
        let (observations, other_observations) = self.observations.split_at_mut(bytes);
        let (final_observations, other_finals) = self.final_observations.split_at_mut(bytes);
        let (rewards, other_rewards) = self.rewards.split_at_mut(rows);
        let (terminals, other_terminals) = self.terminals.split_at_mut(rows);
        let (truncations, other_truncations) = self.truncations.split_at_mut(rows);
        let (masks, other_masks) = self.masks.split_at_mut(rows);
        let (episode_returns, other_returns) = self.episode_returns.split_at_mut(rows);
        let (episode_lengths, other_lengths) = self.episode_lengths.split_at_mut(rows);
        let row_bytes = self.row_bytes;
        (
            Rows {
                row_bytes,
                observations,
                final_observations,
                rewards,
                terminals,
                truncations,
                masks,
                episode_returns,
                episode_lengths,
            },
            Rows {
                row_bytes,
                observations: other_observations,
                final_observations: other_finals,
                rewards: other_rewards,
                terminals: other_terminals,
                truncations: other_truncations,
                masks: other_masks,
                episode_returns: other_returns,
                episode_lengths: other_lengths,
            },
        )
    }
}

/// Where a row stands in its env's episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in the env's episode (yet): it takes no reward.
    Out,
    /// In the episode: it takes rewards, and counts steps when it acts.
    Playing,
    /// Its episode ended; it waits for the env's next episode.
    Ended,
}

/// The running episode of every row of a block; see the module docs.
#[derive(Clone, Debug)]
pub struct Episodes {
    agents: usize,
    roles: Vec<Role>,
    /// Whether each row acts at the next step (its mask).
    acting: Vec<bool>,
    /// The running episode of each row: its return and its acting steps.
    returns: Vec<f64>,
    lengths: Vec<i64>,
    /// The block's steps, and its value when each env's episode began: an
    /// env's episode length counts the env's steps, whoever acted.
    clock: i64,
    started: Vec<i64>,
    /// Rows whose episode ended since the last step or reset began, each
    /// once, in the order they ended.
    ended: Vec<usize>,
}

impl Episodes {
    /// `envs` envs of `agents` rows each, every row out of any episode
    /// until its env's first [`Episodes::start_episode`].
    pub fn new(envs: usize, agents: usize) -> Episodes {
        let rows = envs * agents;
        Episodes {
            agents,
            roles: vec![Role::Out; rows],
            acting: vec![false; rows],
            returns: vec![0.0; rows],
            lengths: vec![0; rows],
            clock: 0,
            started: vec![0; envs],
            ended: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.roles.len()
    }

    pub fn envs(&self) -> usize {
        self.started.len()
    }

    pub fn agents(&self) -> usize {
        self.agents
    }

    /// The rows of env `env`.
    pub fn rows_of(&self, env: usize) -> Range<usize> {
        env * self.agents..(env + 1) * self.agents
    }

    pub fn role(&self, row: usize) -> Role {
        self.roles[row]
    }

    pub fn is_acting(&self, row: usize) -> bool {
        self.acting[row]
    }

    /// The running return and length of `row`'s episode.
    pub fn running(&self, row: usize) -> (f64, i64) {
        (self.returns[row], self.lengths[row])
    }

    /// The rows whose episode ended in the last step (or reset), each once.
    pub fn ended(&self) -> &[usize] {
        &self.ended
    }

    /// The playing rows of env `env`, in order.
    pub fn playing(&self, env: usize) -> impl Iterator<Item = usize> + '_ {
        self.rows_of(env).filter(|&row| self.roles[row] == Role::Playing)
    }

    /// Whether env `env` has no playing row: its episode is over, and the
    /// caller resets it (same-step autoreset).
    pub fn env_done(&self, env: usize) -> bool {
        self.playing(env).next().is_none()
    }

    /// A reset of the whole block begins: no reward, flag or mask is left
    /// from before it. Each env then starts an episode.
    pub fn begin_reset(&mut self, rows: &mut Rows<'_>) {
        rows.rewards.fill(0.0);
        rows.terminals.fill(0);
        rows.truncations.fill(0);
        rows.masks.fill(0);
        self.acting.fill(false);
        self.ended.clear();
    }

    /// The reset is done: what ended during it (an env that gave an agent
    /// its flag at reset) is no step's end.
    pub fn end_reset(&mut self) {
        self.ended.clear();
    }

    /// Env `env` (just reset) starts an episode: every row of it is out,
    /// zero and masked, with no running episode, until it joins.
    pub fn start_episode(&mut self, env: usize, rows: &mut Rows<'_>) {
        self.started[env] = self.clock;
        for row in self.rows_of(env) {
            self.roles[row] = Role::Out;
            self.returns[row] = 0.0;
            self.lengths[row] = 0;
            self.set_acting(row, false, rows);
        }
    }

    /// `row` joins its env's episode if it is out. True when it plays (now
    /// or already); false for a row whose episode ended.
    pub fn join(&mut self, row: usize) -> bool {
        match self.roles[row] {
            Role::Out => {
                self.roles[row] = Role::Playing;
                true
            }
            Role::Playing => true,
            Role::Ended => false,
        }
    }

    /// Whether `row` acts at the next step: its mask. A row that does not
    /// act is zeroed.
    pub fn set_acting(&mut self, row: usize, acting: bool, rows: &mut Rows<'_>) {
        self.acting[row] = acting;
        rows.masks[row] = acting as u8;
        if !acting {
            rows.observation(row).fill(0);
        }
    }

    /// A step of the block begins: every acting row counts a step of its
    /// episode, and no reward or flag is left from the last step.
    pub fn begin_step(&mut self, rows: &mut Rows<'_>) {
        self.clock += 1;
        self.ended.clear();
        for (length, &acting) in self.lengths.iter_mut().zip(&self.acting) {
            *length += acting as i64;
        }
        rows.rewards.fill(0.0);
        rows.terminals.fill(0);
        rows.truncations.fill(0);
    }

    /// `row`'s reward for this step, taken if it plays (its reward row is
    /// the float32 of it; its return sums it in float64). True if taken.
    pub fn reward(&mut self, row: usize, reward: f64, rows: &mut Rows<'_>) -> bool {
        if self.roles[row] != Role::Playing {
            return false;
        }
        self.returns[row] += reward;
        rows.rewards[row] = reward as f32;
        true
    }

    /// [`Episodes::reward`] for every row at once, `rewards[row]` each (a
    /// block that steps all its rows in one call): one pass without a
    /// branch per row.
    pub fn rewards<T: Copy + Into<f64>>(&mut self, rewards: &[T], rows: &mut Rows<'_>) {
        assert_eq!(rewards.len(), self.roles.len(), "one reward per row");
        let taken = self.returns.iter_mut().zip(rows.rewards.iter_mut()).zip(self.roles.iter().zip(rewards));
        for ((sum, out), (&role, &reward)) in taken {
            let (playing, reward) = (role == Role::Playing, reward.into());
            *sum = if playing { *sum + reward } else { *sum };
            *out = if playing { reward as f32 } else { *out };
        }
    }

    /// `row`'s episode ends at this step (see the module docs for a row
    /// with neither flag). `write_final` first writes its final row (its
    /// last observation, or zeros): when it fails, nothing changes. A row
    /// that does not play is left as it is.
    pub fn end<E>(
        &mut self,
        row: usize,
        terminal: bool,
        truncated: bool,
        rows: &mut Rows<'_>,
        write_final: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.roles[row] != Role::Playing {
            return Ok(());
        }
        write_final(rows.final_observation(row))?;
        if rows.terminals[row] == 0 && rows.truncations[row] == 0 {
            self.ended.push(row);
        }
        rows.terminals[row] = terminal as u8;
        rows.truncations[row] = (truncated || !terminal) as u8;
        rows.episode_returns[row] = self.returns[row];
        rows.episode_lengths[row] = self.lengths[row];
        self.returns[row] = 0.0;
        self.lengths[row] = 0;
        self.roles[row] = Role::Ended;
        self.set_acting(row, false, rows);
        Ok(())
    }

    /// [`Episodes::end`] for a caller that has already written `row`'s last
    /// observation into its observation row (an env written in Rust writes
    /// straight into its rows, not knowing the step ends its episode): that
    /// row becomes its final row.
    pub fn end_observed(&mut self, row: usize, terminal: bool, truncated: bool, rows: &mut Rows<'_>) {
        if self.roles[row] != Role::Playing {
            return;
        }
        let bytes = rows.bytes(row);
        rows.final_observations[bytes.clone()].copy_from_slice(&rows.observations[bytes]);
        let written: Result<(), std::convert::Infallible> = self.end(row, terminal, truncated, rows, |_| Ok(()));
        let Ok(()) = written;
    }

    /// What env `env`'s episode adds up to once its rows have ended: the
    /// sum of its ended rows' returns (as numpy's `sum` adds them, so that
    /// reported metrics keep their values) and its steps.
    pub fn summary(&self, env: usize, rows: &Rows<'_>) -> (f64, i64) {
        let returns: Vec<f64> = self
            .rows_of(env)
            .filter(|&row| self.roles[row] == Role::Ended)
            .map(|row| rows.episode_returns[row])
            .collect();
        (numpy_sum(&returns), self.clock - self.started[env])
    }
}

/// `sum` of a float64 array as numpy computes it (pairwise, in blocks of
/// eight), so that a sum moved here from numpy keeps its value.
fn numpy_sum(values: &[f64]) -> f64 {
    fn pairwise(a: &[f64]) -> f64 {
        let n = a.len();
        if n < 8 {
            a.iter().fold(0.0, |sum, &x| sum + x)
        } else if n <= 128 {
            let mut r: [f64; 8] = a[..8].try_into().expect("eight values");
            let whole = n - n % 8;
            for chunk in a[8..whole].chunks_exact(8) {
                for (sum, &x) in r.iter_mut().zip(chunk) {
                    *sum += x;
                }
            }
            let sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            a[whole..].iter().fold(sum, |sum, &x| sum + x)
        } else {
            let half = n / 2;
            let half = half - half % 8;
            pairwise(&a[..half]) + pairwise(&a[half..])
        }
    }
    0.0 + pairwise(values)
}

#[cfg(test)]
mod tests;
