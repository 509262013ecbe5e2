//! `pufferrs/Rendezvous-rs`: the game of pufferrs's Python `Rendezvous`
//! (`pufferrs.multiagent_envs`), with action masks. Three agents, four
//! targets; every step a target `t` is drawn, and agent `k` sees its slot
//! one-hot and the cue `(t + k) % 4` one-hot. Every agent present gets 1
//! when all agents present choose `t`, else 0. Each agent but the first
//! leaves (terminated) with probability 1/4 per episode after a step drawn
//! in `1..16`; the others are truncated after 16 steps. So rows go absent
//! mid-episode, and the env resets when its last agent has left.
//!
//! The mask: each step one target other than `t`, drawn anew, is illegal
//! for every agent (`action_mask`, int8, 1 where legal); choosing it
//! counts as a wrong choice. A policy that masks its logits meets a third
//! of the time more often by chance than one that does not.

use pufferrs_core::error::Result;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::env::{Actions, Agents, EnvKind, MultiAgentEnv, Status};
use crate::slots::{Binding, Slot};
use crate::spaces;

pub const ID: &str = "pufferrs/Rendezvous-rs";
const AGENTS: usize = 3;
const TARGETS: usize = 4;
const MAX_STEPS: u32 = 16;
const LEAVE_PROB: f64 = 0.25;

pub struct Rendezvous {
    rng: Xoshiro256PlusPlus,
    steps: u32,
    target: usize,
    illegal: usize,
    /// The step after which each agent leaves, if it does.
    leave: [Option<u32>; AGENTS],
    cue: Slot<f32>,
    mask: Slot<i8>,
    action: Slot<i64>,
}

impl Rendezvous {
    pub fn new(binding: &Binding) -> Result<Rendezvous> {
        Ok(Rendezvous {
            rng: Xoshiro256PlusPlus::seed_from_u64(0),
            steps: 0,
            target: 0,
            illegal: 1,
            leave: [None; AGENTS],
            cue: binding.obs(&["cue"], &[AGENTS + TARGETS])?,
            mask: binding.obs(&["action_mask"], &[TARGETS])?,
            action: binding.action(&[], &[])?,
        })
    }

    pub fn kind() -> Result<EnvKind> {
        let observation = spaces::dict(vec![
            ("action_mask", spaces::multi_binary(TARGETS)),
            ("cue", spaces::boxed::<f32>(0.0, 1.0, &[AGENTS + TARGETS])),
        ]);
        let agents = (0..AGENTS).map(|k| format!("agent_{k}")).collect();
        EnvKind::multi(ID, agents, observation, spaces::discrete(TARGETS as i64), Rendezvous::new)
    }

    /// Draws the step's target and illegal choice.
    fn draw(&mut self) {
        self.target = self.rng.random_range(0..TARGETS);
        self.illegal = (self.target + self.rng.random_range(1..TARGETS)) % TARGETS;
    }

    /// Writes the observation of every agent still playing.
    fn observe(&self, agents: &mut Agents<'_>) {
        for k in 0..AGENTS {
            if agents.status(k) != Status::Acting {
                continue;
            }
            let row = agents.observation(k);
            self.cue.fill(row, 0.0);
            self.cue.set(row, k, 1.0);
            self.cue.set(row, AGENTS + (self.target + k) % TARGETS, 1.0);
            self.mask.fill(row, 1);
            self.mask.set(row, self.illegal, 0);
        }
    }
}

impl MultiAgentEnv for Rendezvous {
    fn reset(&mut self, seed: Option<u64>, agents: &mut Agents<'_>) {
        if let Some(seed) = seed {
            self.rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        }
        self.steps = 0;
        for k in 0..AGENTS {
            let leaves = k > 0 && self.rng.random_bool(LEAVE_PROB);
            self.leave[k] = leaves.then(|| self.rng.random_range(1..MAX_STEPS));
            agents.set_status(k, Status::Acting);
        }
        self.draw();
        self.observe(agents);
    }

    fn step(&mut self, actions: &Actions<'_>, agents: &mut Agents<'_>) {
        let present: Vec<usize> = (0..AGENTS).filter(|&k| agents.status(k) == Status::Acting).collect();
        let met = present.iter().all(|&k| {
            let choice = self.action.get(actions.row(k), 0);
            choice == self.target as i64 && choice != self.illegal as i64
        });
        self.steps += 1;
        self.draw();
        let truncated = self.steps >= MAX_STEPS;
        for &k in &present {
            agents.reward(k, if met { 1.0 } else { 0.0 });
        }
        self.observe(agents);
        for &k in &present {
            let left = self.leave[k] == Some(self.steps);
            if left || truncated {
                agents.set_status(k, Status::Ended { terminated: left, truncated: truncated && !left });
            }
        }
    }
}
