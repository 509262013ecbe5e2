//! A block of native envs stepped into its rows in one call, its envs
//! spread over threads.
//!
//! The block is cut into parts of consecutive envs, one per thread; each
//! part owns its envs and their episodes (`pufferrs_core::episodes`) and
//! gets its own span of every array ([`Rows::split_at`]), so parts share
//! nothing while they step. A panic in an env is caught where the env is
//! called and reported as that env's failure; the block is then broken
//! (its rows half-written), as a Python env that raised leaves its
//! vector env.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pufferrs_core::episodes::{Episodes, Rows};
use rayon::prelude::*;

use crate::env::{Actions, Agents, MultiAgentEnv, Status};

/// An env of the block that failed: its position in the block and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFailure {
    pub env: usize,
    pub message: String,
}

/// An episode of an env that ended in the last step or reset: its env
/// (position in the block), the sum of its agents' returns and its steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finished {
    pub env: usize,
    pub episode_return: f64,
    pub episode_length: i64,
}

struct Part {
    /// The block's position of its first env.
    first: usize,
    agents: usize,
    action_bytes: usize,
    envs: Vec<Box<dyn MultiAgentEnv>>,
    episodes: Episodes,
    /// Each row's reward and status, as its env last set them.
    rewards: Vec<f64>,
    status: Vec<Status>,
    finished: Vec<Finished>,
}

/// What a part does to each of its envs.
#[derive(Clone, Copy)]
enum Call {
    Reset(Option<u64>),
    Step,
}

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".into()
    }
}

impl Part {
    /// Calls `call` on env `e` with its rows, catching a panic.
    fn call(&mut self, e: usize, call: Call, rows: &mut Rows<'_>, actions: &[u8]) -> Result<(), EnvFailure> {
        let a = self.agents;
        let (row_bytes, action_bytes) = (rows.row_bytes, self.action_bytes);
        let span = e * a..(e + 1) * a;
        self.rewards[span.clone()].fill(0.0);
        let mut agents = Agents {
            row_bytes,
            observations: &mut rows.observations[span.start * row_bytes..span.end * row_bytes],
            rewards: &mut self.rewards[span.clone()],
            status: &mut self.status[span.clone()],
        };
        let env = &mut self.envs[e];
        let result = catch_unwind(AssertUnwindSafe(|| match call {
            Call::Reset(seed) => env.reset(seed, &mut agents),
            Call::Step => {
                let actions = Actions {
                    row_bytes: action_bytes,
                    rows: &actions[span.start * action_bytes..span.end * action_bytes],
                };
                env.step(&actions, &mut agents)
            }
        }));
        result.map_err(|payload| EnvFailure { env: self.first + e, message: message(payload) })
    }

    /// Env `e` (just reset) starts an episode with its agents as it set them.
    fn start(&mut self, e: usize, seed: Option<u64>, rows: &mut Rows<'_>) -> Result<(), EnvFailure> {
        let span = self.episodes.rows_of(e);
        self.status[span.clone()].fill(Status::Absent);
        self.episodes.start_episode(e, rows);
        self.call(e, Call::Reset(seed), rows, &[])?;
        let mut present = false;
        for row in span {
            let status = self.status[row];
            present |= matches!(status, Status::Acting | Status::Waiting);
            self.settle(row, status, rows);
        }
        if !present {
            return Err(EnvFailure {
                env: self.first + e,
                message: "reset() left no agent in the episode: it could never step or end".into(),
            });
        }
        Ok(())
    }

    /// Hands `row`'s status to the episodes: an agent that ended gets its
    /// last row (and is absent from then on), one present joins and acts
    /// or waits.
    fn settle(&mut self, row: usize, status: Status, rows: &mut Rows<'_>) {
        match status {
            Status::Ended { terminated, truncated } => {
                self.episodes.end_observed(row, terminated, truncated, rows);
                self.status[row] = Status::Absent;
            }
            Status::Acting | Status::Waiting => {
                let playing = self.episodes.join(row);
                self.episodes.set_acting(row, playing && status == Status::Acting, rows);
            }
            Status::Absent => self.episodes.set_acting(row, false, rows),
        }
    }

    fn reset(&mut self, seed: Option<u64>, mut rows: Rows<'_>) -> Result<(), EnvFailure> {
        self.finished.clear();
        self.episodes.begin_reset(&mut rows);
        for e in 0..self.envs.len() {
            // Env i of the block gets seed + i, as Python envs do.
            self.start(e, seed.map(|seed| seed.wrapping_add((self.first + e) as u64)), &mut rows)?;
        }
        self.episodes.end_reset();
        Ok(())
    }

    fn step(&mut self, mut rows: Rows<'_>, actions: &[u8]) -> Result<(), EnvFailure> {
        self.finished.clear();
        self.episodes.begin_step(&mut rows);
        for e in 0..self.envs.len() {
            self.call(e, Call::Step, &mut rows, actions)?;
            let span = self.episodes.rows_of(e);
            for row in span.clone() {
                self.episodes.reward(row, self.rewards[row], &mut rows);
            }
            for row in span {
                self.settle(row, self.status[row], &mut rows);
            }
            if self.episodes.env_done(e) {
                let (episode_return, episode_length) = self.episodes.summary(e, &rows);
                self.finished.push(Finished { env: self.first + e, episode_return, episode_length });
                self.start(e, None, &mut rows)?;
            }
        }
        Ok(())
    }
}

/// See [`Block::default_threads`].
pub const MIN_ENVS_PER_THREAD: usize = 32;

/// Envs of `agents` rows each, stepped into a block's rows (env `e` owns
/// rows `e * agents ..`) in one call, over `threads` threads.
pub struct Block {
    agents: usize,
    action_bytes: usize,
    parts: Vec<Part>,
    /// The threads, when there is more than one part.
    pool: Option<rayon::ThreadPool>,
}

impl Block {
    /// `envs`, cut into `threads` parts (at most one per env; at least one).
    /// Fails only when the operating system refuses the threads.
    pub fn new(
        envs: Vec<Box<dyn MultiAgentEnv>>,
        agents: usize,
        action_bytes: usize,
        threads: usize,
    ) -> Result<Block, String> {
        let n = envs.len();
        let count = threads.clamp(1, n.max(1));
        let mut parts = Vec::with_capacity(count);
        let mut envs = envs.into_iter();
        let mut first = 0;
        for p in 0..count {
            // Sizes differ by at most one env.
            let size = n / count + usize::from(p < n % count);
            let part_envs: Vec<_> = envs.by_ref().take(size).collect();
            parts.push(Part {
                first,
                agents,
                action_bytes,
                episodes: Episodes::new(size, agents),
                rewards: vec![0.0; size * agents],
                status: vec![Status::Absent; size * agents],
                finished: Vec::new(),
                envs: part_envs,
            });
            first += size;
        }
        let pool = if count > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(count)
                .thread_name(|i| format!("pufferrs-envs-{i}"))
                .build()
                .map_err(|e| format!("could not start {count} threads for the block's envs: {e}"))?;
            Some(pool)
        } else {
            None
        };
        Ok(Block { agents, action_bytes, parts, pool })
    }

    /// The threads a block of `envs` envs takes when its user does not
    /// say: the machine's cores, but never fewer than
    /// [`MIN_ENVS_PER_THREAD`] envs a thread, since waking a thread costs
    /// more than stepping a few small envs (on 2 cores, 8 CartPoles step
    /// about 5 times slower on 2 threads than on 1; 128 a little faster).
    pub fn default_threads(envs: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.min(envs / MIN_ENVS_PER_THREAD).max(1)
    }

    pub fn envs(&self) -> usize {
        self.parts.iter().map(|part| part.envs.len()).sum()
    }

    pub fn threads(&self) -> usize {
        self.parts.len()
    }

    /// Runs `run` on every part with its rows and action rows, on the
    /// threads; the failure of the first env that failed, if any.
    fn run(
        &mut self,
        rows: Rows<'_>,
        actions: &[u8],
        run: impl Fn(&mut Part, Rows<'_>, &[u8]) -> Result<(), EnvFailure> + Sync,
    ) -> Result<(), EnvFailure> {
        let (agents, action_bytes) = (self.agents, self.action_bytes);
        let mut work = Vec::with_capacity(self.parts.len());
        let (mut rows, mut actions) = (rows, actions);
        for part in &mut self.parts {
            let n = part.envs.len() * agents;
            let (mine, rest) = rows.split_at(n);
            let (my_actions, other_actions) = actions.split_at((n * action_bytes).min(actions.len()));
            work.push((part, mine, my_actions));
            (rows, actions) = (rest, other_actions);
        }
        let results: Vec<Result<(), EnvFailure>> = match &self.pool {
            Some(pool) => {
                pool.install(|| work.into_par_iter().map(|(part, rows, actions)| run(part, rows, actions)).collect())
            }
            None => work.into_iter().map(|(part, rows, actions)| run(part, rows, actions)).collect(),
        };
        results.into_iter().collect()
    }

    /// Resets every env (env `i` with `seed + i`, wrapping) and writes the
    /// first observations.
    pub fn reset(&mut self, seed: Option<u64>, rows: Rows<'_>) -> Result<(), EnvFailure> {
        self.run(rows, &[], |part, rows, _| part.reset(seed, rows))
    }

    /// Steps every env on its agents' action rows (`actions`: the block's
    /// action rows, `action_bytes` each) and writes what follows, resetting
    /// the envs whose episode ended.
    pub fn step(&mut self, rows: Rows<'_>, actions: &[u8]) -> Result<(), EnvFailure> {
        self.run(rows, actions, |part, rows, actions| part.step(rows, actions))
    }

    /// The rows whose episode ended in the last step or reset, in order.
    pub fn ended(&self) -> Vec<usize> {
        let agents = self.agents;
        self.parts
            .iter()
            .flat_map(|part| part.episodes.ended().iter().map(move |row| part.first * agents + row))
            .collect()
    }

    /// Whether any row's episode ended in the last step or reset.
    pub fn any_ended(&self) -> bool {
        self.parts.iter().any(|part| !part.episodes.ended().is_empty())
    }

    /// The envs whose episode ended (every agent gone) in the last step.
    pub fn finished(&self) -> impl Iterator<Item = &Finished> {
        self.parts.iter().flat_map(|part| &part.finished)
    }
}
