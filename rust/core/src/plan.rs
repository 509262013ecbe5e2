//! The plan of a vector env's buffers: the numbers that shape them, with
//! every rule about those numbers (`Plan::new`), and where each array lives
//! in the shared region (`Sections`), with sizes that cannot wrap.
//!
//! Arrays hold one row per agent: env `e` of a multi-agent env owns rows
//! `e * agents_per_env ..` (one row per env otherwise). Workers and batches
//! are counted in envs, and own their envs' rows.

use std::ops::{Mul, Range};

use crate::error::{Error, Result};
use crate::shm::PAGE;

/// Sections start on cache lines so that no two processes write one line.
pub const SECTION_ALIGN: usize = 64;

/// The shape of a vector env's buffers: what `Sections` is computed from.
/// Built only by `Plan::new`, which owns every rule about these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub num_envs: usize,
    /// Rows per env: its agents (`len(possible_agents)`), 1 for a
    /// single-agent env.
    pub agents_per_env: usize,
    pub num_workers: usize,
    pub obs_row_bytes: usize,
    pub action_row_bytes: usize,
    /// Envs (not rows) in each batch that `recv` returns: the Python API's
    /// `batch_size`. A batch holds `batch_rows()` rows.
    pub batch_envs: usize,
    /// Whether batches are gathered from several workers into a gather
    /// area (asynchronous batches of worker processes).
    pub gathers: bool,
}

impl Plan {
    /// The checked plan of a vector env of `num_envs` envs of
    /// `agents_per_env` agents each, and batches of `batch_envs` envs
    /// (default: all of them).
    ///
    /// With `num_workers`, the envs run in that many worker processes, each
    /// owning a block of consecutive envs, and a batch is any set of whole
    /// blocks. Without, they run in the caller's process one batch at a
    /// time: each batch is its own block, so nothing is ever gathered.
    pub fn new(
        num_envs: usize,
        agents_per_env: usize,
        num_workers: Option<usize>,
        obs_row_bytes: usize,
        action_row_bytes: usize,
        batch_envs: Option<usize>,
    ) -> Result<Plan> {
        let refuse = |reason: String| Err(Error::Buffers(reason));
        if num_envs == 0 {
            return refuse("num_envs must be positive, got 0".into());
        }
        if agents_per_env == 0 {
            return refuse("agents_per_env must be positive, got 0".into());
        }
        if num_envs.checked_mul(agents_per_env).is_none_or(|rows| rows > isize::MAX as usize) {
            return refuse(format!("{num_envs} envs of {agents_per_env} agents each are too many rows"));
        }
        let batch_envs = batch_envs.unwrap_or(num_envs);
        if batch_envs == 0 || batch_envs > num_envs {
            return refuse(format!("batch_size ({batch_envs}) must be between 1 and num_envs ({num_envs})"));
        }
        let (num_workers, gathers) = match num_workers {
            None if num_envs % batch_envs != 0 => {
                return refuse(format!(
                    "batch_size ({batch_envs}) must divide num_envs ({num_envs}) when the envs run in this process"
                ));
            }
            None => (num_envs / batch_envs, false),
            Some(workers) if workers == 0 || num_envs % workers != 0 => {
                return refuse(format!("num_workers ({workers}) must be a positive divisor of num_envs ({num_envs})"));
            }
            Some(workers) if batch_envs % (num_envs / workers) != 0 => {
                let per = num_envs / workers;
                return refuse(format!("batch_size ({batch_envs}) must be a multiple of the envs per worker ({per})"));
            }
            Some(workers) => (workers, batch_envs < num_envs),
        };
        // Worker indices travel as u32, and the completion ring needs a bit.
        if num_workers > u32::MAX as usize / 2 {
            return refuse(format!("too many workers ({num_workers})"));
        }
        Ok(Plan { num_envs, agents_per_env, num_workers, obs_row_bytes, action_row_bytes, batch_envs, gathers })
    }

    /// How many workers run `num_envs` envs when the user does not say:
    /// the most that split the envs evenly (`Plan::new` refuses uneven
    /// splits) without outnumbering `cpus`, the CPUs they may use (this
    /// machine's for worker processes, the cluster's for Ray actors).
    /// Never 0, so that a count `Plan::new` refuses anyway reaches its
    /// refusal.
    pub fn default_workers(num_envs: usize, cpus: usize) -> usize {
        (1..=num_envs.min(cpus.max(1))).rev().find(|d| num_envs % d == 0).unwrap_or(1)
    }

    pub fn envs_per_worker(&self) -> usize {
        self.num_envs / self.num_workers
    }

    /// Rows of every array: one per agent of every env.
    pub fn num_rows(&self) -> usize {
        self.num_envs * self.agents_per_env
    }

    /// Rows of a batch, and of the gather area when there is one.
    pub fn batch_rows(&self) -> usize {
        self.batch_envs * self.agents_per_env
    }

    pub fn rows_per_worker(&self) -> usize {
        self.envs_per_worker() * self.agents_per_env
    }
}

/// Byte ranges of every array in the region, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    pub control: Range<usize>,
    pub observations: Range<usize>,
    pub actions: Range<usize>,
    pub rewards: Range<usize>,
    pub terminals: Range<usize>,
    pub truncations: Range<usize>,
    pub masks: Range<usize>,
    pub episode_returns: Range<usize>,
    pub episode_lengths: Range<usize>,
    pub batch_observations: Range<usize>,
    pub batch_actions: Range<usize>,
    pub batch_rewards: Range<usize>,
    pub batch_terminals: Range<usize>,
    pub batch_truncations: Range<usize>,
    pub batch_masks: Range<usize>,
    /// Per row, the last observation of its agent's episode that ended most
    /// recently, written before the reset that replaces it in `observations`.
    pub final_observations: Range<usize>,
    pub len: usize,
}

/// A byte count that remembers overflow: None once any product or sum
/// that made it overflowed.
#[derive(Clone, Copy)]
struct Bytes(Option<usize>);

impl From<usize> for Bytes {
    fn from(n: usize) -> Bytes {
        Bytes(Some(n))
    }
}

impl Mul<usize> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: usize) -> Bytes {
        Bytes(self.0.and_then(|n| n.checked_mul(rhs)))
    }
}

impl Sections {
    /// `control_bytes` is the size of the synchronisation block (see
    /// `sync::Control::bytes`). Refuses plans whose region would not fit
    /// in memory (more than `isize::MAX` bytes), so that no size wraps.
    pub fn new(plan: &Plan, control_bytes: usize) -> Result<Sections> {
        let mut end = Some(0usize);
        let mut next = |bytes: Bytes, align: usize| {
            let start = end.and_then(|end| end.checked_next_multiple_of(align));
            end = start.zip(bytes.0).and_then(|(start, bytes)| start.checked_add(bytes));
            // A placeholder once anything overflowed: the result is refused below.
            start.unwrap_or(0)..end.unwrap_or(0)
        };
        // Every array has a row per agent of every env; the gather area, a
        // row per agent of a batch's envs.
        let rows = Bytes::from(plan.num_rows());
        let batch_rows = Bytes::from(if plan.gathers { plan.batch_rows() } else { 0 });
        let sections = Sections {
            control: next(control_bytes.into(), SECTION_ALIGN),
            observations: next(rows * plan.obs_row_bytes, PAGE),
            actions: next(rows * plan.action_row_bytes, SECTION_ALIGN),
            rewards: next(rows * 4, SECTION_ALIGN),
            terminals: next(rows, SECTION_ALIGN),
            truncations: next(rows, SECTION_ALIGN),
            masks: next(rows, SECTION_ALIGN),
            episode_returns: next(rows * 8, SECTION_ALIGN),
            episode_lengths: next(rows * 8, SECTION_ALIGN),
            batch_observations: next(batch_rows * plan.obs_row_bytes, PAGE),
            batch_actions: next(batch_rows * plan.action_row_bytes, SECTION_ALIGN),
            batch_rewards: next(batch_rows * 4, SECTION_ALIGN),
            batch_terminals: next(batch_rows, SECTION_ALIGN),
            batch_truncations: next(batch_rows, SECTION_ALIGN),
            batch_masks: next(batch_rows, SECTION_ALIGN),
            final_observations: next(rows * plan.obs_row_bytes, SECTION_ALIGN),
            len: 0,
        };
        match end.filter(|&len| len <= isize::MAX as usize) {
            Some(len) => Ok(Sections { len, ..sections }),
            None => Err(Error::Buffers(format!(
                "buffers for {} envs{} with rows of {} observation bytes and {} action bytes do not fit in memory",
                plan.num_envs,
                if plan.agents_per_env > 1 {
                    format!(" of {} agents each", plan.agents_per_env)
                } else {
                    String::new()
                },
                plan.obs_row_bytes,
                plan.action_row_bytes
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_too_large_for_memory_are_refused_not_wrapped() {
        let plan = Plan::new(2, 1, Some(2), 4_611_686_018_426_339_328, 1_537_228_672_810_181_973, Some(1)).unwrap();
        let err = Sections::new(&plan, 200).unwrap_err();
        assert!(err.to_string().ends_with("do not fit in memory"), "{err}");
        let plan = Plan::new(4, 1, Some(2), 1 << 62, 8, None).unwrap();
        assert!(Sections::new(&plan, 200).is_err());
        let plan = Plan::new(1, 1, None, isize::MAX as usize - 4096, 0, None).unwrap();
        assert!(Sections::new(&plan, 200).is_err(), "past isize::MAX once aligned and summed");
    }

    proptest::proptest! {
        /// Any sizes: either a refusal, or sections that hold exactly their
        /// arrays, in order, inside `len`.
        #[test]
        fn sections_never_wrap(
            workers in 1usize..5,
            per_worker in 1usize..5,
            batch_workers in 1usize..5,
            obs_shift in 0u32..64,
            obs_low in 0usize..1000,
            action_shift in 0u32..64,
            envs_shift in 0u32..40,
            agents in 1usize..5,
        ) {
            let num_envs = (workers * per_worker) << envs_shift;
            let batch = (batch_workers.min(workers) * per_worker) << envs_shift;
            let obs = (1usize << obs_shift).wrapping_add(obs_low);
            let action = (1usize << action_shift) - 1;
            let plan = Plan::new(num_envs, agents, Some(workers), obs, action, Some(batch)).unwrap();
            let Ok(s) = Sections::new(&plan, 256) else { return Ok(()) };
            let (rows, b) = (num_envs * agents, if plan.gathers { batch * agents } else { 0 });
            proptest::prop_assert_eq!(s.observations.len(), rows * obs);
            proptest::prop_assert_eq!(s.actions.len(), rows * action);
            proptest::prop_assert_eq!(s.final_observations.len(), rows * obs);
            proptest::prop_assert_eq!(s.batch_observations.len(), b * obs);
            let all = [&s.control, &s.observations, &s.actions, &s.rewards, &s.episode_lengths, &s.batch_masks, &s.final_observations];
            for pair in all.windows(2) {
                proptest::prop_assert!(pair[0].end <= pair[1].start);
            }
            proptest::prop_assert!(s.final_observations.end == s.len && s.len <= isize::MAX as usize);
        }
    }

    #[test]
    fn sections_are_aligned_and_disjoint() {
        let plan = Plan::new(6, 1, Some(3), 12_504, 24, Some(4)).unwrap();
        let s = Sections::new(&plan, 200).unwrap();
        let all = [
            &s.control,
            &s.observations,
            &s.actions,
            &s.rewards,
            &s.terminals,
            &s.truncations,
            &s.masks,
            &s.episode_returns,
            &s.episode_lengths,
            &s.batch_observations,
            &s.batch_actions,
            &s.batch_rewards,
            &s.batch_terminals,
            &s.batch_truncations,
            &s.batch_masks,
            &s.final_observations,
        ];
        for pair in all.windows(2) {
            assert!(pair[0].end <= pair[1].start);
        }
        assert!(all.iter().all(|r| r.start % SECTION_ALIGN == 0));
        assert_eq!(s.observations.start % PAGE, 0);
        assert_eq!(s.observations.len(), 6 * 12_504);
        assert_eq!(s.batch_observations.len(), 4 * 12_504);
        assert_eq!(s.final_observations.len(), 6 * 12_504);
        assert_eq!(s.len, s.final_observations.end);

        let whole = Plan::new(6, 1, Some(3), 12_504, 24, None).unwrap();
        assert!(Sections::new(&whole, 200).unwrap().batch_observations.is_empty());
        let in_process = Plan::new(6, 1, None, 12_504, 24, Some(2)).unwrap();
        assert_eq!((in_process.num_workers, in_process.gathers), (3, false));
        assert!(Sections::new(&in_process, 200).unwrap().batch_observations.is_empty());
    }

    #[test]
    fn multi_agent_sections_hold_one_row_per_agent() {
        let plan = Plan::new(6, 3, Some(3), 40, 8, Some(4)).unwrap();
        assert_eq!((plan.num_rows(), plan.batch_rows(), plan.rows_per_worker()), (18, 12, 6));
        let s = Sections::new(&plan, 200).unwrap();
        assert_eq!(s.observations.len(), 18 * 40);
        assert_eq!(s.final_observations.len(), 18 * 40);
        assert_eq!(s.actions.len(), 18 * 8);
        assert_eq!((s.rewards.len(), s.masks.len(), s.episode_returns.len()), (18 * 4, 18, 18 * 8));
        assert_eq!((s.batch_observations.len(), s.batch_masks.len()), (12 * 40, 12));
        let err = Sections::new(&Plan::new(2, 1 << 40, None, 1 << 30, 0, None).unwrap(), 200).unwrap_err();
        assert!(err.to_string().contains("2 envs of 1099511627776 agents each"), "{err}");
    }

    #[test]
    fn default_workers_split_the_envs_evenly_within_the_cpus() {
        let cases = [(8, 2, 2), (8, 3, 2), (8, 16, 8), (7, 4, 1), (12, 5, 4), (12, 0, 1), (0, 4, 1), (1, 1, 1)];
        for (num_envs, cpus, workers) in cases {
            assert_eq!(Plan::default_workers(num_envs, cpus), workers, "{num_envs} envs on {cpus} CPUs");
        }
        // Large counts take at most `cpus` steps, and the plan accepts the result.
        assert_eq!(Plan::default_workers(usize::MAX, 16), 15);
        for num_envs in 1..50 {
            let workers = Plan::default_workers(num_envs, 6);
            assert!(Plan::new(num_envs, 1, Some(workers), 4, 8, None).is_ok());
        }
    }

    #[test]
    fn invalid_plans_are_refused() {
        let refusal = |num_envs, workers, batch| match Plan::new(num_envs, 1, workers, 4, 8, batch) {
            Err(Error::Buffers(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(Plan::new(8, 1, Some(4), 4, 8, Some(4)).is_ok());
        assert_eq!(refusal(8, Some(3), Some(4)), "num_workers (3) must be a positive divisor of num_envs (8)");
        assert_eq!(refusal(8, Some(0), None), "num_workers (0) must be a positive divisor of num_envs (8)");
        assert_eq!(refusal(8, Some(4), Some(3)), "batch_size (3) must be a multiple of the envs per worker (2)");
        assert_eq!(refusal(8, Some(4), Some(10)), "batch_size (10) must be between 1 and num_envs (8)");
        assert_eq!(
            refusal(8, None, Some(3)),
            "batch_size (3) must divide num_envs (8) when the envs run in this process"
        );
        assert_eq!(refusal(0, Some(1), None), "num_envs must be positive, got 0");
        let agents = |num_envs, agents| match Plan::new(num_envs, agents, None, 4, 8, None) {
            Err(Error::Buffers(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(agents(4, 0), "agents_per_env must be positive, got 0");
        assert_eq!(agents(1 << 62, 4), "4611686018427387904 envs of 4 agents each are too many rows");
        assert_eq!(agents(1 << 40, 1 << 30), "1099511627776 envs of 1073741824 agents each are too many rows");
    }
}
