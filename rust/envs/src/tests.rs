use pufferrs_core::episodes::Rows;
use pufferrs_core::error::Error;

use super::*;

/// Owned arrays of a block's rows.
struct Arrays {
    row_bytes: usize,
    observations: Vec<u8>,
    final_observations: Vec<u8>,
    rewards: Vec<f32>,
    terminals: Vec<u8>,
    truncations: Vec<u8>,
    masks: Vec<u8>,
    episode_returns: Vec<f64>,
    episode_lengths: Vec<i64>,
}

/// Every array of a block's rows, copied.
type Snapshot = (Vec<u8>, Vec<u8>, Vec<f32>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<f64>, Vec<i64>);

impl Arrays {
    fn new(rows: usize, row_bytes: usize) -> Arrays {
        Arrays {
            row_bytes,
            observations: vec![0; rows * row_bytes],
            final_observations: vec![0; rows * row_bytes],
            rewards: vec![0.0; rows],
            terminals: vec![0; rows],
            truncations: vec![0; rows],
            masks: vec![0; rows],
            episode_returns: vec![0.0; rows],
            episode_lengths: vec![0; rows],
        }
    }

    fn rows(&mut self) -> Rows<'_> {
        Rows {
            row_bytes: self.row_bytes,
            observations: &mut self.observations,
            final_observations: &mut self.final_observations,
            rewards: &mut self.rewards,
            terminals: &mut self.terminals,
            truncations: &mut self.truncations,
            masks: &mut self.masks,
            episode_returns: &mut self.episode_returns,
            episode_lengths: &mut self.episode_lengths,
        }
    }

    /// Everything, to compare two runs.
    fn snapshot(&self) -> Snapshot {
        (
            self.observations.clone(),
            self.final_observations.clone(),
            self.rewards.clone(),
            self.terminals.clone(),
            self.truncations.clone(),
            self.masks.clone(),
            self.episode_returns.clone(),
            self.episode_lengths.clone(),
        )
    }
}

fn block_of(kind: &EnvKind, envs: usize, threads: usize) -> (Block, Arrays) {
    let made = (0..envs).map(|_| kind.make().unwrap()).collect();
    let binding = kind.binding();
    let agents = kind.agents_per_env();
    let block = Block::new(made, agents, binding.action_layout().row_bytes, threads).unwrap();
    (block, Arrays::new(envs * agents, binding.observation_layout().row_bytes))
}

/// Actions drawn from a fixed little generator, as int64 action rows.
fn actions(step: usize, rows: usize, width: usize, n: i64) -> Vec<u8> {
    (0..rows * width).flat_map(|k| (((step * 7919 + k * 104729) as i64 / 3) % n).to_ne_bytes()).collect()
}

#[test]
fn a_binding_refuses_a_leaf_of_another_dtype_shape_or_path_naming_it() {
    let kind = kind(nested::ID).unwrap().unwrap();
    let binding = kind.binding();
    let wrong_dtype = binding.obs::<f32>(&["grid"], &[4, 4]).unwrap_err();
    assert_eq!(
        wrong_dtype,
        Error::Mismatch {
            path: "obs['grid']".into(),
            reason: "the env reads and writes float32 of shape (4, 4), but the space's leaf is int64 of shape (4, 4)"
                .into()
        }
    );
    let wrong_shape = binding.obs::<f32>(&["pair", "1"], &[3]).unwrap_err().to_string();
    assert!(wrong_shape.starts_with("obs['pair'][1]: ") && wrong_shape.ends_with("of shape (2,)"), "{wrong_shape}");
    let missing = binding.obs::<u8>(&["pair", "2"], &[]).unwrap_err().to_string();
    assert!(missing.starts_with("obs['pair'][2]: the space has no leaf there (its leaves: obs['grid']"), "{missing}");
    let not_text = binding.obs_text(&["image"]).unwrap_err().to_string();
    assert!(not_text.contains("obs['image']: the env writes a string there"), "{not_text}");
    assert!(binding.action::<i32>(&[], &[4]).is_err());
}

#[test]
fn slots_write_each_leaf_where_the_layout_puts_it() {
    let kind = kind(nested::ID).unwrap().unwrap();
    let layout = kind.binding().observation_layout();
    let mut row = vec![0u8; layout.row_bytes];
    let pair = kind.binding().obs::<f32>(&["pair", "1"], &[2]).unwrap();
    pair.write(&mut row, &[0.5, -0.25]);
    let leaf = layout.leaves.iter().find(|leaf| leaf.path.len() == 2 && leaf.dtype.name() == "float32").unwrap();
    assert_eq!(&row[leaf.offset..leaf.offset + 8], &[0.5f32.to_ne_bytes(), (-0.25f32).to_ne_bytes()].concat()[..]);
    assert_eq!(pair.read(&row).collect::<Vec<_>>(), [0.5, -0.25]);
    let word = kind.binding().obs_text(&["word"]).unwrap();
    word.write(&mut row, "dab").unwrap();
    assert_eq!(word.read(&row).unwrap(), "dab");
    let before = row.clone();
    assert!(word.write(&mut row, "abcabca").unwrap_err().contains("at most 6 characters"));
    assert!(word.write(&mut row, "xyz").unwrap_err().contains("not in the space's charset"));
    assert_eq!(row, before, "a refused string changes nothing");
}

#[test]
fn threads_step_the_same_bytes_as_one() {
    for id in BUILT_IN {
        let kind = kind(id).unwrap().unwrap();
        let (agents, width) = (kind.agents_per_env(), kind.binding().action_layout().row_bytes / 8);
        let runs: Vec<_> = [1, 3]
            .into_iter()
            .map(|threads| {
                let (mut block, mut arrays) = block_of(&kind, 7, threads);
                assert_eq!(block.threads(), threads);
                block.reset(Some(11), arrays.rows()).unwrap();
                let mut seen = vec![arrays.snapshot()];
                for step in 0..300 {
                    block.step(arrays.rows(), &actions(step, 7 * agents, width, 2)).unwrap();
                    seen.push(arrays.snapshot());
                }
                (seen, block.ended(), block.finished().copied().collect::<Vec<_>>())
            })
            .collect();
        assert!(runs[0] == runs[1], "{id}: 1 and 3 threads differ");
    }
}

#[test]
fn cartpole_ends_episodes_with_their_final_row_and_resets_in_the_same_step() {
    let kind = kind(cartpole::ID).unwrap().unwrap();
    let (mut block, mut arrays) = block_of(&kind, 2, 1);
    block.reset(Some(0), arrays.rows()).unwrap();
    let obs = kind.binding().obs::<f32>(&[], &[4]).unwrap();
    let mut state: Vec<[f64; 4]> = Vec::new();
    // Always pushing right ends an episode within a few tens of steps.
    let push = [1i64.to_ne_bytes(), 1i64.to_ne_bytes()].concat();
    let mut steps = 0;
    while arrays.terminals[0] == 0 {
        let before: Vec<f32> = obs.read(&arrays.observations[..16]).collect();
        block.step(arrays.rows(), &push).unwrap();
        steps += 1;
        state.push(std::array::from_fn(|k| before[k] as f64));
    }
    let last: Vec<f32> = obs.read(&arrays.final_observations[..16]).collect();
    let first: Vec<f32> = obs.read(&arrays.observations[..16]).collect();
    assert!(last[0].abs() > 2.4 || last[2].abs() > 0.2094, "{last:?} ended the episode");
    assert!(first.iter().all(|v| v.abs() <= 0.05), "{first:?} starts the next one");
    assert_eq!((arrays.episode_lengths[0], arrays.episode_returns[0], arrays.rewards[0]), (steps, steps as f64, 1.0));
    assert_eq!((arrays.masks[0], arrays.truncations[0]), (1, 0));
    assert_eq!(block.ended()[0], 0);
}

#[test]
fn rendezvous_agents_leave_masked_and_the_env_resets_when_none_is_left() {
    let kind = kind(rendezvous::ID).unwrap().unwrap();
    let (mut block, mut arrays) = block_of(&kind, 4, 2);
    block.reset(Some(5), arrays.rows()).unwrap();
    assert!(arrays.masks.iter().all(|&m| m == 1));
    let (mut early, mut resets) = (0, 0);
    for step in 0..400 {
        let masks = arrays.masks.clone();
        block.step(arrays.rows(), &actions(step, 12, 1, 4)).unwrap();
        let finished: Vec<usize> = block.finished().map(|f| f.env).collect();
        for env in 0..4 {
            let rows = env * 3..env * 3 + 3;
            let ended: Vec<usize> =
                rows.clone().filter(|&r| arrays.terminals[r] == 1 || arrays.truncations[r] == 1).collect();
            for &r in &ended {
                assert_eq!(masks[r], 1, "only an agent that acted ends");
                early += arrays.terminals[r] as usize;
            }
            if finished.contains(&env) {
                resets += 1;
                // Every agent is back, acting, in the next episode.
                assert!(rows.clone().all(|r| arrays.masks[r] == 1));
            } else {
                for r in rows {
                    let acting = masks[r] == 1 && !ended.contains(&r);
                    assert_eq!(arrays.masks[r], acting as u8, "row {r} at step {step}");
                    if !acting {
                        let bytes = arrays.row_bytes;
                        assert!(arrays.observations[r * bytes..(r + 1) * bytes].iter().all(|&b| b == 0));
                    }
                }
            }
        }
    }
    assert!(early > 10 && resets > 50, "{early} agents left early, {resets} resets");
}

struct Panicky(u32);

impl Env for Panicky {
    fn reset(&mut self, _: Option<u64>, _: &mut [u8]) {}
    fn step(&mut self, _: &[u8], _: &mut [u8]) -> Step {
        self.0 += 1;
        assert!(self.0 < 3, "the env broke at step {}", self.0);
        Step { reward: 0.0, terminated: false, truncated: false }
    }
}

#[test]
fn a_panic_in_an_env_is_that_envs_failure() {
    let kind = EnvKind::single("Panicky", spaces::discrete(2), spaces::discrete(2), |_| Ok(Panicky(0))).unwrap();
    let mut made: Vec<Box<dyn MultiAgentEnv>> = (0..4).map(|_| kind.make().unwrap()).collect();
    made[2] = Box::new(crate::env::tests_single(Panicky(1)));
    let mut block = Block::new(made, 1, 8, 2).unwrap();
    let mut arrays = Arrays::new(4, 8);
    block.reset(None, arrays.rows()).unwrap();
    block.step(arrays.rows(), &[0; 32]).unwrap();
    let failure = block.step(arrays.rows(), &[0; 32]).unwrap_err();
    assert_eq!(failure, EnvFailure { env: 2, message: "the env broke at step 3".into() });
}

/// The spaces of whichever of `kinds` `json` describes (this crate reads
/// no JSON; pufferrs's Python side does).
fn spaces_of(kinds: &[EnvKind], json: &str) -> std::result::Result<abi::Spaces, String> {
    kinds
        .iter()
        .find(|kind| json.contains(&abi::space_json(kind.observation_space())))
        .map(|kind| {
            let agents = kind.agents().map(<[String]>::to_vec);
            (kind.observation_space().clone(), kind.action_space().clone(), agents)
        })
        .ok_or_else(|| format!("no kind has the spaces {json}"))
}

#[test]
fn envs_through_the_abi_step_the_same_bytes_as_in_process() {
    let originals = [kind(nested::ID).unwrap().unwrap(), kind(rendezvous::ID).unwrap().unwrap()];
    let tables = abi::export(originals.to_vec());
    // SAFETY: tables `export` made, 'static.
    let loaded = unsafe { abi::load(tables, |json| spaces_of(&originals, json)) }.unwrap();
    for (original, foreign) in originals.iter().zip(&loaded) {
        assert_eq!((foreign.id(), foreign.agents()), (original.id(), original.agents()));
        let width = original.binding().action_layout().row_bytes / 8;
        let rows = 5 * original.agents_per_env();
        let runs: Vec<_> = [original, foreign]
            .into_iter()
            .map(|kind| {
                let (mut block, mut arrays) = block_of(kind, 5, 2);
                block.reset(Some(3), arrays.rows()).unwrap();
                let mut seen = vec![arrays.snapshot()];
                for step in 0..100 {
                    block.step(arrays.rows(), &actions(step, rows, width, 4)).unwrap();
                    seen.push(arrays.snapshot());
                }
                seen
            })
            .collect();
        assert!(runs[0] == runs[1], "{}: through the ABI differs", original.id());
    }
}

#[test]
fn loading_refuses_another_abi_version_or_layout_saying_what_differs() {
    let cartpole = kind(cartpole::ID).unwrap().unwrap();
    let tables = abi::export(vec![cartpole.clone()]);
    let other = abi::EnvTables {
        abi_version: abi::ABI_VERSION + 1,
        tables_size: tables.tables_size,
        table_size: tables.table_size,
        count: tables.count,
        tables: tables.tables,
        version: tables.version,
    };
    // SAFETY: a table whose pointers are `export`'s, 'static.
    let error = unsafe { abi::load(&other, |_| unreachable!("nothing is read past the version")) }.unwrap_err();
    assert!(error.starts_with("the crate was built for pufferrs's env ABI version 2; this pufferrs loads version 1"));
    let smaller = abi::EnvTables { abi_version: abi::ABI_VERSION, table_size: tables.table_size - 8, ..other };
    // SAFETY: as above.
    let error = unsafe { abi::load(&smaller, |_| unreachable!()) }.unwrap_err();
    assert!(error.starts_with("the crate's tables are 32 and 80 bytes, this pufferrs's 32 and 88"), "{error}");
    // Spaces that lay out otherwise than the crate's rows.
    let nested = kind(nested::ID).unwrap().unwrap();
    // SAFETY: as above.
    let error = unsafe {
        abi::load(tables, |_| spaces_of(std::slice::from_ref(&nested), &abi::space_json(nested.observation_space())))
    }
    .unwrap_err();
    assert!(
        error.starts_with("pufferrs/CartPole-rs: the crate (pufferrs-envs 0.1.0) was built for rows of 16 and 8 bytes"),
        "{error}"
    );
}

#[test]
fn a_panic_across_the_abi_is_the_envs_failure() {
    let panics = kind(PANICS).unwrap().unwrap();
    let tables = abi::export(vec![panics.clone()]);
    // SAFETY: tables `export` made, 'static.
    let loaded = unsafe { abi::load(tables, |_| Ok((spaces::discrete(2), spaces::discrete(2), None))) }.unwrap();
    let (mut block, mut arrays) = block_of(&loaded[0], 2, 1);
    block.reset(None, arrays.rows()).unwrap();
    for _ in 0..2 {
        block.step(arrays.rows(), &[0; 16]).unwrap();
    }
    let failure = block.step(arrays.rows(), &[0; 16]).unwrap_err();
    assert_eq!(failure, EnvFailure { env: 0, message: "Panics-rs panics at step 3, as it should".into() });
}
