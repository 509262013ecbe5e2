//! The env traits and the kind of env that makes them.
//!
//! An env owns no buffers: [`Env::reset`] and [`Env::step`] get its own row
//! of the vector env's shared observations (and its action row) and write
//! the observation there, through the accessors it resolved from the
//! layout when it was made ([`crate::Binding`]). What an outcome means for
//! the rows (rewards, flags, returns, lengths, masks, final rows, the
//! same-step autoreset) is `pufferrs_core::episodes`'s, as for Python envs.

use std::sync::Arc;

use pufferrs_core::error::{Error, Result};
use pufferrs_core::layout::Space;

use crate::slots::Binding;

/// What a step of a single-agent env returns besides its observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
}

/// An env of one agent, stepping in its own row.
pub trait Env: Send {
    /// Starts an episode and writes its first observation into `obs`. With
    /// a seed, the env's random numbers restart from it; without one they
    /// run on.
    fn reset(&mut self, seed: Option<u64>, obs: &mut [u8]);

    /// Takes the action in `action` (its action row) and writes the next
    /// observation into `obs`: on the step that ends an episode, its last
    /// one (the block keeps it as the final observation, then resets).
    fn step(&mut self, action: &[u8], obs: &mut [u8]) -> Step;
}

/// Where an agent of a multi-agent env stands after a reset or step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not in the episode (not yet, or no longer): its row is zero and
    /// masked.
    Absent,
    /// In the episode and acting at the next step: its observation row was
    /// written.
    Acting,
    /// In the episode but not acting at the next step (another agent's
    /// turn): its row is zero and masked, its rewards still count.
    Waiting,
    /// Its episode ended at this step, with its last observation written
    /// in its row (kept as its final observation). With neither flag it
    /// counts as truncated. It is absent from then on.
    Ended { terminated: bool, truncated: bool },
}

/// The rows of one env's agents (slot `k` is the env's `k`-th possible
/// agent) as its step writes them: observations, rewards, statuses. The
/// block clears the rewards before each step and keeps the statuses from
/// the last one (an ended agent's as `Absent`).
pub struct Agents<'a> {
    pub(crate) row_bytes: usize,
    pub(crate) observations: &'a mut [u8],
    pub(crate) rewards: &'a mut [f64],
    pub(crate) status: &'a mut [Status],
}

impl Agents<'_> {
    /// How many agent slots the env has.
    pub fn count(&self) -> usize {
        self.status.len()
    }

    /// Agent `agent`'s observation row.
    pub fn observation(&mut self, agent: usize) -> &mut [u8] {
        &mut self.observations[agent * self.row_bytes..(agent + 1) * self.row_bytes]
    }

    /// Agent `agent`'s reward for this step (0 unless set).
    pub fn reward(&mut self, agent: usize, reward: f64) {
        self.rewards[agent] = reward;
    }

    pub fn status(&self, agent: usize) -> Status {
        self.status[agent]
    }

    pub fn set_status(&mut self, agent: usize, status: Status) {
        self.status[agent] = status;
    }
}

/// The action rows of one env's agents; only the rows of agents that acted
/// hold an action.
pub struct Actions<'a> {
    pub(crate) row_bytes: usize,
    pub(crate) rows: &'a [u8],
}

impl Actions<'_> {
    /// Agent `agent`'s action row.
    pub fn row(&self, agent: usize) -> &[u8] {
        &self.rows[agent * self.row_bytes..(agent + 1) * self.row_bytes]
    }
}

/// An env of several agents, one row each, that join, act, wait and leave
/// on their own ([`Status`]). Its episode is over when no agent is left in
/// it; the block then resets it in the same step.
pub trait MultiAgentEnv: Send {
    /// Starts an episode: writes the observations of the agents present
    /// and sets every agent's status (the block sets them `Absent` first).
    /// At least one agent must be present.
    fn reset(&mut self, seed: Option<u64>, agents: &mut Agents<'_>);

    /// Takes the actions of the agents that acted and writes what follows.
    fn step(&mut self, actions: &Actions<'_>, agents: &mut Agents<'_>);
}

/// A single-agent env as an env of one agent slot: the block steps both
/// kinds the same way.
struct Single<E>(E);

impl<E: Env> MultiAgentEnv for Single<E> {
    fn reset(&mut self, seed: Option<u64>, agents: &mut Agents<'_>) {
        self.0.reset(seed, agents.observation(0));
        agents.set_status(0, Status::Acting);
    }

    fn step(&mut self, actions: &Actions<'_>, agents: &mut Agents<'_>) {
        let step = self.0.step(actions.row(0), agents.observation(0));
        agents.reward(0, step.reward);
        let status = if step.terminated || step.truncated {
            Status::Ended { terminated: step.terminated, truncated: step.truncated }
        } else {
            Status::Acting
        };
        agents.set_status(0, status);
    }
}

/// A single-agent env as the block steps it, for tests that build blocks by hand.
#[cfg(test)]
pub(crate) fn tests_single<E: Env>(env: E) -> impl MultiAgentEnv {
    Single(env)
}

type Make = dyn Fn(&Binding) -> Result<Box<dyn MultiAgentEnv>> + Send + Sync;

/// A kind of env: its id, its spaces (one agent's), its agents' names (for
/// a multi-agent env) and how to make one env bound to its layouts.
#[derive(Clone)]
pub struct EnvKind {
    id: String,
    agents: Option<Vec<String>>,
    observation_space: Space,
    action_space: Space,
    binding: Arc<Binding>,
    make: Arc<Make>,
}

impl std::fmt::Debug for EnvKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvKind").field("id", &self.id).field("agents", &self.agents).finish_non_exhaustive()
    }
}

impl EnvKind {
    /// A single-agent env: `make` builds one, resolving its accessors from
    /// the binding. Spaces with no flat row are refused here, with their
    /// path.
    pub fn single<E: Env + 'static>(
        id: &str,
        observation_space: Space,
        action_space: Space,
        make: impl Fn(&Binding) -> Result<E> + Send + Sync + 'static,
    ) -> Result<EnvKind> {
        let binding = Binding::new(&observation_space, &action_space)?;
        let make = move |binding: &Binding| Ok(Box::new(Single(make(binding)?)) as Box<dyn MultiAgentEnv>);
        Ok(EnvKind {
            id: id.to_owned(),
            agents: None,
            observation_space,
            action_space,
            binding: Arc::new(binding),
            make: Arc::new(make),
        })
    }

    /// A multi-agent env of the agents `agents` (one row each, in this
    /// order), all with the same spaces.
    pub fn multi<E: MultiAgentEnv + 'static>(
        id: &str,
        agents: Vec<String>,
        observation_space: Space,
        action_space: Space,
        make: impl Fn(&Binding) -> Result<E> + Send + Sync + 'static,
    ) -> Result<EnvKind> {
        if agents.is_empty() {
            return Err(Error::UnsupportedSpace {
                path: id.to_owned(),
                reason: "a multi-agent env needs agents".into(),
            });
        }
        EnvKind::multi_of(id, Some(agents), observation_space, action_space, make)
    }

    /// Envs stepped as multi-agent envs (one agent slot when `agents` is
    /// None: a single-agent env to its users), such as those of another
    /// crate, whose envs come through its table.
    pub(crate) fn multi_of<E: MultiAgentEnv + 'static>(
        id: &str,
        agents: Option<Vec<String>>,
        observation_space: Space,
        action_space: Space,
        make: impl Fn(&Binding) -> Result<E> + Send + Sync + 'static,
    ) -> Result<EnvKind> {
        let binding = Binding::new(&observation_space, &action_space)?;
        let make = move |binding: &Binding| Ok(Box::new(make(binding)?) as Box<dyn MultiAgentEnv>);
        Ok(EnvKind {
            id: id.to_owned(),
            agents,
            observation_space,
            action_space,
            binding: Arc::new(binding),
            make: Arc::new(make),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agents' names of a multi-agent env; None for a single-agent one.
    pub fn agents(&self) -> Option<&[String]> {
        self.agents.as_deref()
    }

    /// Rows per env: one per agent.
    pub fn agents_per_env(&self) -> usize {
        self.agents.as_ref().map_or(1, Vec::len)
    }

    pub fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    pub fn action_space(&self) -> &Space {
        &self.action_space
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// One env, bound to the kind's layouts.
    pub fn make(&self) -> Result<Box<dyn MultiAgentEnv>> {
        (self.make)(&self.binding)
    }
}
