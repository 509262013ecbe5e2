//! Catch, a small game written in Rust for pufferrs. A ball falls down a
//! board of 6 rows and 5 columns, one row a step, from a random column;
//! the paddle on the bottom row moves left, stays or moves right. The
//! ball reaching the bottom row scores +1 when the paddle is under it and
//! -1 otherwise, and the next ball starts at the top. An episode is 8
//! balls (40 steps).
//!
//! The observation is nested, as most games' are (keys in gymnasium's
//! sorted order):
//!
//! ```text
//! Dict(
//!     ball=Tuple((Discrete(5), Discrete(6))),   # its column and row
//!     board=Box(0, 1, (6, 5), uint8),           # the ball and the paddle drawn
//!     paddle=Discrete(5),                       # its column
//! )
//! ```
//!
//! The env writes each leaf through an accessor resolved once from the
//! layout (`Binding`), never an offset of its own; the module exports the
//! game through pufferrs's C ABI (`pufferrs_envs::abi::export`) in the
//! capsule pufferrs loads.

use pufferrs_envs::pufferrs_core::error::Result;
use pufferrs_envs::{Binding, Env, EnvKind, Slot, Step, abi, spaces};
use pyo3::prelude::*;

const ROWS: i64 = 6;
const COLUMNS: i64 = 5;
const BALLS: u32 = 8;

struct Catch {
    /// A small generator of its own (xorshift): a game needs no more.
    state: u64,
    ball: (i64, i64),
    paddle: i64,
    balls: u32,
    ball_column: Slot<i64>,
    ball_row: Slot<i64>,
    board: Slot<u8>,
    paddle_slot: Slot<i64>,
    action: Slot<i64>,
}

impl Catch {
    fn new(binding: &Binding) -> Result<Catch> {
        Ok(Catch {
            state: 1,
            ball: (0, 0),
            paddle: COLUMNS / 2,
            balls: 0,
            ball_column: binding.obs(&["ball", "0"], &[])?,
            ball_row: binding.obs(&["ball", "1"], &[])?,
            board: binding.obs(&["board"], &[ROWS as usize, COLUMNS as usize])?,
            paddle_slot: binding.obs(&["paddle"], &[])?,
            action: binding.action(&[], &[])?,
        })
    }

    fn kind() -> Result<EnvKind> {
        let observation = spaces::dict(vec![
            ("ball", spaces::tuple(vec![spaces::discrete(COLUMNS), spaces::discrete(ROWS)])),
            ("board", spaces::boxed::<u8>(0.0, 1.0, &[ROWS as usize, COLUMNS as usize])),
            ("paddle", spaces::discrete(COLUMNS)),
        ]);
        EnvKind::single("Catch-v0", observation, spaces::discrete(3), Catch::new)
    }

    fn random(&mut self, n: i64) -> i64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % n as u64) as i64
    }

    fn drop_ball(&mut self) {
        self.ball = (self.random(COLUMNS), 0);
    }

    fn observe(&self, obs: &mut [u8]) {
        self.ball_column.set(obs, 0, self.ball.0);
        self.ball_row.set(obs, 0, self.ball.1);
        self.board.fill(obs, 0);
        self.board.set(obs, (self.ball.1 * COLUMNS + self.ball.0) as usize, 1);
        self.board.set(obs, ((ROWS - 1) * COLUMNS + self.paddle) as usize, 1);
        self.paddle_slot.set(obs, 0, self.paddle);
    }
}

impl Env for Catch {
    fn reset(&mut self, seed: Option<u64>, obs: &mut [u8]) {
        if let Some(seed) = seed {
            // Never 0, which xorshift would keep.
            self.state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        }
        self.paddle = COLUMNS / 2;
        self.balls = 0;
        self.drop_ball();
        self.observe(obs);
    }

    fn step(&mut self, action: &[u8], obs: &mut [u8]) -> Step {
        self.paddle = (self.paddle + self.action.get(action, 0) - 1).clamp(0, COLUMNS - 1);
        self.ball.1 += 1;
        let mut reward = 0.0;
        if self.ball.1 == ROWS - 1 {
            reward = if self.ball.0 == self.paddle { 1.0 } else { -1.0 };
            self.balls += 1;
            self.drop_ball();
        }
        self.observe(obs);
        Step { reward, terminated: self.balls == BALLS, truncated: false }
    }
}

/// The extension module: its `pufferrs_envs` capsule carries the tables of
/// its envs, which `pufferrs.native.register` loads.
#[pymodule]
fn _envs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let kinds = vec![Catch::kind().map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?];
    let tables: &'static abi::EnvTables = abi::export(kinds);
    // SAFETY: the capsule holds a pointer to tables that live as long as
    // the process (`export` leaks them), under the name pufferrs checks;
    // it owns nothing, so it needs no destructor.
    let capsule = unsafe {
        let pointer = (tables as *const abi::EnvTables).cast_mut().cast();
        Bound::from_owned_ptr_or_err(m.py(), pyo3::ffi::PyCapsule_New(pointer, abi::CAPSULE_NAME.as_ptr(), None))?
    };
    m.add("pufferrs_envs", capsule)
}
