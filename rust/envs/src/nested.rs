//! `pufferrs/Nested-rs`: four questions, each about other leaves of a
//! nested observation, answered by one `MultiDiscrete([4, 4, 2, 4])`
//! action per step. A leaf read wrong (a wrong offset, dtype or shape
//! anywhere between this env and the policy) leaves its question at
//! chance, so learning shows it.
//!
//! Observation, new at every step (keys in gymnasium's sorted order):
//!
//! ```text
//! Dict(
//!     grid=MultiDiscrete(4 * ones((4, 4))),       # codes 0..4
//!     image=Box(0, 255, (3, 8, 8), uint8),        # noise below 64, one bright 4x4 quadrant
//!     pair=Tuple((Discrete(4), Box(-1, 1, (2,), float32))),
//!     word=Text(6, min_length=1, charset="abcd"),
//! )
//! ```
//!
//! The right action is `[quadrant, grid[r, r], pair[1].sum() > 0, last]`:
//! which quadrant of the image is bright, the code on the grid's diagonal
//! at the row `r = pair[0]` names, the sign of the float pair, and which
//! letter ends the word (its codes and its length read right). The reward
//! is the fraction of the four answers that are right: about 0.28 a step
//! for a random policy, 1 for a perfect one. Episodes are 16 steps.

use pufferrs_core::error::Result;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::env::{Env, EnvKind, Step};
use crate::slots::{Binding, Slot, TextSlot};
use crate::spaces;

pub const ID: &str = "pufferrs/Nested-rs";
pub const LENGTH: u32 = 16;
const LETTERS: &str = "abcd";

pub struct Nested {
    rng: Xoshiro256PlusPlus,
    steps: u32,
    answer: [i64; 4],
    image: Slot<u8>,
    grid: Slot<i64>,
    row: Slot<i64>,
    pair: Slot<f32>,
    word: TextSlot,
    action: Slot<i64>,
}

impl Nested {
    pub fn new(binding: &Binding) -> Result<Nested> {
        Ok(Nested {
            rng: Xoshiro256PlusPlus::seed_from_u64(0),
            steps: 0,
            answer: [0; 4],
            image: binding.obs(&["image"], &[3, 8, 8])?,
            grid: binding.obs(&["grid"], &[4, 4])?,
            row: binding.obs(&["pair", "0"], &[])?,
            pair: binding.obs(&["pair", "1"], &[2])?,
            word: binding.obs_text(&["word"])?,
            action: binding.action(&[], &[4])?,
        })
    }

    pub fn kind() -> Result<EnvKind> {
        let observation = spaces::dict(vec![
            ("grid", spaces::multi_discrete(&[4; 16], &[4, 4])),
            ("image", spaces::boxed::<u8>(0.0, 255.0, &[3, 8, 8])),
            ("pair", spaces::tuple(vec![spaces::discrete(4), spaces::boxed::<f32>(-1.0, 1.0, &[2])])),
            ("word", spaces::text(LETTERS, 1, 6)),
        ]);
        EnvKind::single(ID, observation, spaces::multi_discrete(&[4, 4, 2, 4], &[4]), Nested::new)
    }

    /// Draws the next observation into `obs` and keeps its answer.
    fn observe(&mut self, obs: &mut [u8]) {
        let rng = &mut self.rng;
        for k in 0..self.image.len() {
            self.image.set(obs, k, rng.random_range(0..64));
        }
        let quadrant = rng.random_range(0..4usize);
        let (channel, top, left) = (rng.random_range(0..3usize), 4 * (quadrant / 2), 4 * (quadrant % 2));
        for y in top..top + 4 {
            for x in left..left + 4 {
                self.image.set(obs, channel * 64 + y * 8 + x, 255);
            }
        }
        let mut grid = [0i64; 16];
        grid.iter_mut().for_each(|code| *code = rng.random_range(0..4));
        self.grid.write(obs, &grid);
        let r = rng.random_range(0..4usize);
        self.row.set(obs, 0, r as i64);
        let pair = [rng.random_range(-1.0f32..1.0), rng.random_range(-1.0f32..1.0)];
        self.pair.write(obs, &pair);
        let length = rng.random_range(1..=6usize);
        let word: String = (0..length).map(|_| LETTERS.as_bytes()[rng.random_range(0..4usize)] as char).collect();
        self.word.write(obs, &word).expect("the word fits the space");
        let last = LETTERS.find(word.chars().last().expect("a word of at least one letter")).expect("a letter");
        self.answer = [quadrant as i64, grid[r * 4 + r], i64::from(pair[0] + pair[1] > 0.0), last as i64];
    }
}

impl Env for Nested {
    fn reset(&mut self, seed: Option<u64>, obs: &mut [u8]) {
        if let Some(seed) = seed {
            self.rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        }
        self.steps = 0;
        self.observe(obs);
    }

    fn step(&mut self, action: &[u8], obs: &mut [u8]) -> Step {
        let right = (0..4).filter(|&k| self.action.get(action, k) == self.answer[k]).count();
        self.steps += 1;
        let done = self.steps >= LENGTH;
        self.observe(obs);
        Step { reward: right as f64 / 4.0, terminated: done, truncated: false }
    }
}
