use super::*;

/// Owned arrays for a block's rows.
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

impl Arrays {
    fn new(rows: usize, row_bytes: usize) -> Arrays {
        Arrays {
            row_bytes,
            observations: vec![7; rows * row_bytes],
            final_observations: vec![7; rows * row_bytes],
            rewards: vec![9.0; rows],
            terminals: vec![1; rows],
            truncations: vec![1; rows],
            masks: vec![1; rows],
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
}

fn ok(_: &mut [u8]) -> Result<(), ()> {
    Ok(())
}

/// A block of one-row envs, reset: every row plays and acts.
fn gym_block(envs: usize) -> (Episodes, Arrays) {
    let (mut episodes, mut arrays) = (Episodes::new(envs, 1), Arrays::new(envs, 2));
    episodes.begin_reset(&mut arrays.rows());
    for env in 0..envs {
        episodes.start_episode(env, &mut arrays.rows());
        assert!(episodes.join(env));
        episodes.set_acting(env, true, &mut arrays.rows());
    }
    episodes.end_reset();
    (episodes, arrays)
}

#[test]
fn a_reset_clears_the_last_steps_outcomes() {
    let (episodes, arrays) = gym_block(3);
    assert_eq!(arrays.rewards, [0.0; 3]);
    assert_eq!((arrays.terminals, arrays.truncations, arrays.masks), (vec![0; 3], vec![0; 3], vec![1; 3]));
    assert_eq!(arrays.observations, [0; 6], "rows are zero until the caller writes them");
    assert!(episodes.ended().is_empty());
}

#[test]
fn returns_and_lengths_run_until_the_episode_ends() {
    let (mut episodes, mut arrays) = gym_block(2);
    for reward in [0.5, 0.25] {
        episodes.begin_step(&mut arrays.rows());
        episodes.reward(0, reward, &mut arrays.rows());
        episodes.reward(1, 1.0, &mut arrays.rows());
    }
    assert_eq!(episodes.running(0), (0.75, 2));
    episodes
        .end(0, true, false, &mut arrays.rows(), |row| {
            row.copy_from_slice(&[3, 4]);
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!((arrays.episode_returns[0], arrays.episode_lengths[0]), (0.75, 2));
    assert_eq!((arrays.terminals[0], arrays.truncations[0], arrays.masks[0]), (1, 0, 0));
    assert_eq!(&arrays.final_observations[..2], &[3, 4]);
    assert_eq!(arrays.rewards[0], 0.25, "the ended step keeps its reward");
    assert_eq!(episodes.ended(), &[0]);
    assert!(episodes.env_done(0) && !episodes.env_done(1));
    assert_eq!(episodes.summary(0, &arrays.rows()), (0.75, 2));
    // Same-step autoreset: the next episode starts; the flags stay.
    episodes.start_episode(0, &mut arrays.rows());
    episodes.join(0);
    episodes.set_acting(0, true, &mut arrays.rows());
    assert_eq!(episodes.running(0), (0.0, 0));
    assert_eq!((arrays.terminals[0], arrays.masks[0]), (1, 1));
    episodes.begin_step(&mut arrays.rows());
    assert!(episodes.ended().is_empty());
    assert_eq!((arrays.terminals[0], episodes.running(0)), (0, (0.0, 1)));
    assert_eq!(episodes.running(1), (0.0 + 1.0 + 1.0, 3));
}

#[test]
fn an_end_without_a_flag_is_a_truncation() {
    let (mut episodes, mut arrays) = gym_block(1);
    episodes.begin_step(&mut arrays.rows());
    episodes.end(0, false, false, &mut arrays.rows(), ok).unwrap();
    assert_eq!((arrays.terminals[0], arrays.truncations[0]), (0, 1));
    episodes.start_episode(0, &mut arrays.rows());
    episodes.join(0);
    episodes.begin_step(&mut arrays.rows());
    episodes.end(0, true, true, &mut arrays.rows(), ok).unwrap();
    assert_eq!((arrays.terminals[0], arrays.truncations[0]), (1, 1));
}

#[test]
fn a_final_row_that_fails_changes_nothing() {
    let (mut episodes, mut arrays) = gym_block(1);
    episodes.begin_step(&mut arrays.rows());
    episodes.reward(0, 2.0, &mut arrays.rows());
    let before = (arrays.terminals.clone(), arrays.episode_returns.clone(), arrays.masks.clone());
    assert_eq!(episodes.end(0, true, false, &mut arrays.rows(), |_| Err("bad")), Err("bad"));
    assert_eq!((arrays.terminals.clone(), arrays.episode_returns.clone(), arrays.masks.clone()), before);
    assert_eq!((episodes.role(0), episodes.running(0)), (Role::Playing, (2.0, 1)));
    assert!(episodes.ended().is_empty());
}

#[test]
fn agents_that_do_not_play_take_no_reward_and_ended_agents_stay_ended() {
    let (mut episodes, mut arrays) = (Episodes::new(1, 3), Arrays::new(3, 1));
    episodes.begin_reset(&mut arrays.rows());
    episodes.start_episode(0, &mut arrays.rows());
    for row in [0, 1] {
        episodes.join(row);
        episodes.set_acting(row, true, &mut arrays.rows());
    }
    episodes.end_reset();
    assert_eq!(arrays.observations, [0, 0, 0]);
    episodes.begin_step(&mut arrays.rows());
    assert!(episodes.reward(0, 1.0, &mut arrays.rows()));
    assert!(!episodes.reward(2, 5.0, &mut arrays.rows()), "row 2 is out");
    assert_eq!(arrays.rewards, [1.0, 0.0, 0.0]);
    episodes.end(1, false, true, &mut arrays.rows(), ok).unwrap();
    assert!(!episodes.join(1), "an ended agent does not come back");
    assert!(!episodes.reward(1, 5.0, &mut arrays.rows()));
    assert!(episodes.join(2));
    assert_eq!(episodes.playing(0).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(arrays.masks, [1, 0, 0], "joining is not acting");
    episodes.begin_step(&mut arrays.rows());
    episodes.begin_step(&mut arrays.rows());
    assert_eq!(episodes.running(0), (1.0, 3));
    assert_eq!(episodes.running(2), (0.0, 0), "row 2 never acted");
    episodes.end(0, true, false, &mut arrays.rows(), ok).unwrap();
    episodes.end(2, true, false, &mut arrays.rows(), ok).unwrap();
    assert!(episodes.env_done(0));
    assert_eq!(episodes.summary(0, &arrays.rows()), (1.0, 3));
    assert_eq!(episodes.ended(), &[0, 2]);
}

#[test]
fn a_row_that_ends_twice_in_a_step_is_listed_once() {
    let (mut episodes, mut arrays) = gym_block(1);
    episodes.begin_step(&mut arrays.rows());
    episodes.end(0, true, false, &mut arrays.rows(), ok).unwrap();
    episodes.start_episode(0, &mut arrays.rows());
    episodes.join(0);
    episodes.end(0, false, true, &mut arrays.rows(), ok).unwrap();
    assert_eq!(episodes.ended(), &[0]);
    assert_eq!((arrays.terminals[0], arrays.truncations[0]), (0, 1));
}

#[test]
fn the_env_sum_is_numpys() {
    // Values whose sum depends on the order of the additions.
    let values = [1e16, 1.0, -1e16, 1.0, 3.0, 1e-3, 7.0, 1e16, 2.0, -1e16];
    assert_eq!(numpy_sum(&values[..3]), 0.0 + ((0.0 + 1e16) + 1.0) + -1e16);
    let sum = ((values[0] + values[1]) + (values[2] + values[3]))
        + ((values[4] + values[5]) + (values[6] + values[7]))
        + values[8]
        + values[9];
    assert_eq!(numpy_sum(&values), sum);
    assert_eq!(numpy_sum(&[]), 0.0);
    assert!(numpy_sum(&[-0.0]).is_sign_positive());
}

/// The rules, restated as plainly as possible: each row keeps the list
/// of its episode's rewards and its acting steps; every output array is
/// recomputed from them.
mod reference {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Step,
        Reward(usize, f64),
        Join(usize),
        Act(usize, bool),
        End(usize, bool, bool),
        Restart(usize),
    }

    fn op(rows: usize, envs: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Step),
            4 => (0..rows, -4.0..4.0f64).prop_map(|(r, x)| Op::Reward(r, x)),
            2 => (0..rows).prop_map(Op::Join),
            2 => (0..rows, any::<bool>()).prop_map(|(r, a)| Op::Act(r, a)),
            2 => (0..rows, any::<bool>(), any::<bool>()).prop_map(|(r, t, u)| Op::End(r, t, u)),
            1 => (0..envs).prop_map(Op::Restart),
        ]
    }

    #[derive(Clone, Default)]
    struct Row {
        state: u8, // 0 out, 1 playing, 2 ended
        acting: bool,
        rewards: Vec<f64>,
        steps: i64,
        reward: f32,
        flags: (u8, u8),
        last: (f64, i64),
        final_row: u8,
        obs_zeroed: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        #[test]
        fn episodes_follow_the_reference(
            (envs, agents, ops) in (1..4usize, 1..4usize).prop_flat_map(|(envs, agents)| {
                (Just(envs), Just(agents), prop::collection::vec(op(envs * agents, envs), 0..80))
            })
        ) {
            let n = envs * agents;
            let (mut episodes, mut arrays) = (Episodes::new(envs, agents), Arrays::new(n, 1));
            let mut model: Vec<Row> = vec![Row::default(); n];
            let (mut clock, mut started) = (0i64, vec![0i64; envs]);
            episodes.begin_reset(&mut arrays.rows());
            for env in 0..envs {
                episodes.start_episode(env, &mut arrays.rows());
            }
            episodes.end_reset();
            for (k, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Step => {
                        episodes.begin_step(&mut arrays.rows());
                        clock += 1;
                        for row in &mut model {
                            row.steps += row.acting as i64;
                            row.reward = 0.0;
                            row.flags = (0, 0);
                        }
                    }
                    Op::Reward(r, x) => {
                        let taken = episodes.reward(r, x, &mut arrays.rows());
                        prop_assert_eq!(taken, model[r].state == 1);
                        if taken {
                            model[r].rewards.push(x);
                            model[r].reward = x as f32;
                        }
                    }
                    Op::Join(r) => {
                        let plays = episodes.join(r);
                        if model[r].state == 0 {
                            model[r].state = 1;
                        }
                        prop_assert_eq!(plays, model[r].state == 1);
                    }
                    Op::Act(r, acting) => {
                        episodes.set_acting(r, acting, &mut arrays.rows());
                        model[r].acting = acting;
                        if !acting {
                            model[r].obs_zeroed = true;
                        }
                    }
                    Op::End(r, terminal, truncated) => {
                        let mark = (k % 250) as u8 + 1;
                        episodes.end(r, terminal, truncated, &mut arrays.rows(), |row| {
                            row.fill(mark);
                            Ok::<_, ()>(())
                        }).unwrap();
                        let row = &mut model[r];
                        if row.state == 1 {
                            let mut sum = 0.0;
                            for x in &row.rewards {
                                sum += x;
                            }
                            row.last = (sum, row.steps);
                            row.flags = (terminal as u8, (truncated || !terminal) as u8);
                            row.final_row = mark;
                            row.state = 2;
                            row.acting = false;
                            row.obs_zeroed = true;
                            row.rewards.clear();
                            row.steps = 0;
                        }
                    }
                    Op::Restart(e) => {
                        episodes.start_episode(e, &mut arrays.rows());
                        started[e] = clock;
                        for row in &mut model[e * agents..(e + 1) * agents] {
                            *row = Row { reward: row.reward, flags: row.flags, last: row.last, final_row: row.final_row, obs_zeroed: true, ..Row::default() };
                        }
                    }
                }
                for (r, row) in model.iter().enumerate() {
                    let sum: f64 = row.rewards.iter().fold(0.0, |s, x| s + x);
                    prop_assert_eq!(episodes.running(r), (sum, row.steps));
                    prop_assert_eq!(arrays.rewards[r], row.reward);
                    prop_assert_eq!((arrays.terminals[r], arrays.truncations[r]), row.flags);
                    prop_assert_eq!(arrays.masks[r], row.acting as u8);
                    if row.state == 2 {
                        prop_assert_eq!((arrays.episode_returns[r], arrays.episode_lengths[r]), row.last);
                        prop_assert_eq!(arrays.final_observations[r], row.final_row);
                    }
                    if row.obs_zeroed && !row.acting {
                        prop_assert_eq!(arrays.observations[r], 0);
                    }
                }
                for e in 0..envs {
                    let rows = &model[e * agents..(e + 1) * agents];
                    prop_assert_eq!(episodes.env_done(e), rows.iter().all(|row| row.state != 1));
                    let ended: Vec<f64> = rows.iter().filter(|row| row.state == 2).map(|row| row.last.0).collect();
                    prop_assert_eq!(episodes.summary(e, &arrays.rows()), (numpy_sum(&ended), clock - started[e]));
                }
            }
        }
    }
}

#[test]
fn end_observed_makes_the_observation_row_the_final_row() {
    let mut arrays = Arrays::new(2, 2);
    let mut rows = arrays.rows();
    let mut episodes = Episodes::new(2, 1);
    episodes.begin_reset(&mut rows);
    for env in 0..2 {
        episodes.start_episode(env, &mut rows);
        episodes.join(env);
        episodes.set_acting(env, true, &mut rows);
    }
    episodes.end_reset();
    episodes.begin_step(&mut rows);
    rows.observation(1).copy_from_slice(&[3, 4]);
    episodes.reward(1, 2.5, &mut rows);
    episodes.end_observed(1, false, true, &mut rows);
    assert_eq!(rows.final_observation(1), &[3, 4]);
    assert_eq!(rows.observation(1), &[0, 0]);
    assert_eq!(
        (rows.terminals[1], rows.truncations[1], rows.episode_returns[1], rows.episode_lengths[1]),
        (0, 1, 2.5, 1)
    );
    assert_eq!(episodes.ended(), &[1]);
    // A row that does not play is left alone.
    rows.observation(1).copy_from_slice(&[5, 6]);
    episodes.end_observed(1, true, false, &mut rows);
    assert_eq!(rows.final_observation(1), &[3, 4]);
}

#[test]
fn split_rows_are_the_two_parts_of_the_block() {
    let mut arrays = Arrays::new(3, 2);
    let (mut first, mut rest) = arrays.rows().split_at(1);
    first.observation(0).copy_from_slice(&[1, 1]);
    rest.observation(1).copy_from_slice(&[2, 2]);
    rest.rewards[0] = 4.0;
    assert_eq!((first.rewards.len(), rest.masks.len(), rest.observations.len()), (1, 2, 4));
    assert_eq!(arrays.observations, [1, 1, 7, 7, 2, 2]);
    assert_eq!(arrays.rewards, [9.0, 4.0, 9.0]);
}

#[test]
fn rewards_of_every_row_are_the_rows_rewards_one_by_one() {
    // Rows out, playing and ended, with float32 and float64 rewards: the
    // bulk call leaves the rows and the running returns as one call per row.
    let setup = || {
        let (mut episodes, mut arrays) = (Episodes::new(1, 4), Arrays::new(4, 1));
        episodes.begin_reset(&mut arrays.rows());
        episodes.start_episode(0, &mut arrays.rows());
        for row in [0, 1, 3] {
            episodes.join(row);
            episodes.set_acting(row, true, &mut arrays.rows());
        }
        episodes.end_reset();
        episodes.begin_step(&mut arrays.rows());
        episodes.end(3, true, false, &mut arrays.rows(), ok).unwrap();
        episodes.begin_step(&mut arrays.rows());
        (episodes, arrays)
    };
    let rewards32 = [0.1f32, -2.5, 7.0, 1e30];
    let (mut one, mut one_arrays) = setup();
    for (row, &r) in rewards32.iter().enumerate() {
        one.reward(row, r as f64, &mut one_arrays.rows());
    }
    let (mut bulk, mut bulk_arrays) = setup();
    bulk.rewards(&rewards32, &mut bulk_arrays.rows());
    assert_eq!(bulk_arrays.rewards, one_arrays.rewards);
    assert_eq!(bulk_arrays.rewards, [0.1, -2.5, 0.0, 0.0]);
    let running = |e: &Episodes| (0..4).map(|row| e.running(row)).collect::<Vec<_>>();
    assert_eq!(running(&bulk), running(&one));
    let rewards64 = [0.25f64, 1e300, -3.0, 4.0];
    bulk.rewards(&rewards64, &mut bulk_arrays.rows());
    for (row, &r) in rewards64.iter().enumerate() {
        one.reward(row, r, &mut one_arrays.rows());
    }
    assert_eq!(bulk_arrays.rewards, one_arrays.rewards);
    assert_eq!(running(&bulk), running(&one));
}
