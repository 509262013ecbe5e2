//! CartPole with gymnasium `CartPole-v1`'s dynamics: the same constants,
//! the same Euler step in float64, observations the float32 of the state,
//! reward 1 per step (the terminating one included), terminated when the
//! cart or the pole leaves its bounds and truncated after 500 steps (what
//! `gymnasium.make` adds with its `TimeLimit`). Only the random start
//! differs: uniform in [-0.05, 0.05) from this crate's generator, not
//! numpy's.

use pufferrs_core::error::Result;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::env::{Env, EnvKind, Step};
use crate::slots::{Binding, Slot};
use crate::spaces;

pub const ID: &str = "pufferrs/CartPole-rs";

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;
pub const MAX_STEPS: u32 = 500;

/// The state after one step from `state` (`x, x_dot, theta, theta_dot`)
/// with `action` (0 pushes left, anything else right, as gymnasium
/// compares `action == 1` on a `Discrete(2)`), and whether it terminates.
/// The same float64 operations, in the same order, as gymnasium's
/// `CartPoleEnv.step`.
pub fn dynamics(state: [f64; 4], action: i64) -> ([f64; 4], bool) {
    let [x, x_dot, theta, theta_dot] = state;
    let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
    let (sintheta, costheta) = (theta.sin(), theta.cos());
    let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
    let thetaacc = (GRAVITY * sintheta - costheta * temp)
        / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS));
    let xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
    let next = [x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc];
    let terminated =
        next[0] < -X_THRESHOLD || next[0] > X_THRESHOLD || next[2] < -THETA_THRESHOLD || next[2] > THETA_THRESHOLD;
    (next, terminated)
}

pub struct CartPole {
    state: [f64; 4],
    steps: u32,
    rng: Xoshiro256PlusPlus,
    obs: Slot<f32>,
    action: Slot<i64>,
}

impl CartPole {
    pub fn new(binding: &Binding) -> Result<CartPole> {
        Ok(CartPole {
            state: [0.0; 4],
            steps: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(0),
            obs: binding.obs(&[], &[4])?,
            action: binding.action(&[], &[])?,
        })
    }

    fn observe(&self, obs: &mut [u8]) {
        for (k, &value) in self.state.iter().enumerate() {
            self.obs.set(obs, k, value as f32);
        }
    }

    /// The kind of env `pufferrs/CartPole-rs` makes.
    pub fn kind() -> Result<EnvKind> {
        let high = [X_THRESHOLD * 2.0, f64::INFINITY, THETA_THRESHOLD * 2.0, f64::INFINITY];
        let low = high.map(|h| -h);
        // gymnasium's bounds are float32: the same values once rounded.
        let (low, high) = (low.map(|v| v as f32 as f64), high.map(|v| v as f32 as f64));
        let observation = spaces::boxed_each::<f32>(&low, &high, &[4]);
        EnvKind::single(ID, observation, spaces::discrete(2), CartPole::new)
    }
}

impl Env for CartPole {
    fn reset(&mut self, seed: Option<u64>, obs: &mut [u8]) {
        if let Some(seed) = seed {
            self.rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        }
        self.state = std::array::from_fn(|_| self.rng.random_range(-0.05..0.05));
        self.steps = 0;
        self.observe(obs);
    }

    fn step(&mut self, action: &[u8], obs: &mut [u8]) -> Step {
        let (state, terminated) = dynamics(self.state, self.action.get(action, 0));
        self.state = state;
        self.steps += 1;
        self.observe(obs);
        Step { reward: 1.0, terminated, truncated: self.steps >= MAX_STEPS }
    }
}
