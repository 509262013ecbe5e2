use super::*;
use proptest::prelude::*;

/// GAE of one env, written as plainly as possible, in f64.
fn reference(
    values: &[f32],
    rewards: &[f32],
    ends: &[(bool, bool)],
    finals: Option<&[f32]>,
    bootstrap: f32,
    gamma: f64,
    lambda: f64,
) -> Vec<f64> {
    let n = values.len();
    let mut out = vec![0.0; n];
    let mut gae = 0.0;
    for t in (0..n).rev() {
        let (v, r) = (values[t] as f64, rewards[t] as f64);
        gae = match ends[t] {
            (true, _) => r - v,
            (false, true) => r + gamma * finals.map_or(v, |f| f[t] as f64) - v,
            _ => {
                let next = if t + 1 < n { values[t + 1] as f64 } else { bootstrap as f64 };
                r + gamma * next - v + gamma * lambda * gae
            }
        };
        out[t] = gae;
    }
    out
}

struct Case {
    envs: usize,
    horizon: usize,
    values: Vec<f32>,
    rewards: Vec<f32>,
    terminals: Vec<u8>,
    truncations: Vec<u8>,
    finals: Vec<f32>,
    bootstrap: Vec<f32>,
}

fn case(envs: usize, horizon: usize, seed: u64) -> Case {
    // A small xorshift: deterministic cases without another dependency.
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = envs * horizon;
    let mut floats = |count: usize| (0..count).map(|_| (next() * 4.0 - 2.0) as f32).collect::<Vec<_>>();
    let (values, rewards, finals, bootstrap) = (floats(n), floats(n), floats(n), floats(envs));
    let mut flags = |p: f64| (0..n).map(|_| (next() < p) as u8).collect::<Vec<_>>();
    let (terminals, truncations) = (flags(0.1), flags(0.1));
    Case { envs, horizon, values, rewards, terminals, truncations, finals, bootstrap }
}

fn run(c: &Case, finals: bool, gamma: f64, lambda: f64) -> Vec<f32> {
    try_run(c, finals, gamma, lambda).unwrap()
}

fn try_run(c: &Case, finals: bool, gamma: f64, lambda: f64) -> Result<Vec<f32>> {
    let shape = [c.envs, c.horizon];
    let steps = Steps {
        values: Matrix::c_order("values", &c.values, shape).unwrap(),
        rewards: Matrix::c_order("rewards", &c.rewards, shape).unwrap(),
        terminals: Matrix::c_order("terminals", &c.terminals, shape).unwrap(),
        truncations: Matrix::c_order("truncations", &c.truncations, shape).unwrap(),
        final_values: finals.then(|| Matrix::c_order("final_values", &c.finals, shape).unwrap()),
        bootstrap: Matrix::c_order("bootstrap", &c.bootstrap, [c.envs, 1]).unwrap(),
        masks: None,
    };
    let mut out = vec![f32::NAN; c.envs * c.horizon];
    advantages(&steps, gamma, lambda, &mut MatrixMut::c_order("out", &mut out, shape).unwrap())?;
    Ok(out)
}

fn expected(c: &Case, finals: bool, gamma: f64, lambda: f64) -> Vec<f64> {
    (0..c.envs)
        .flat_map(|i| {
            let row = i * c.horizon..(i + 1) * c.horizon;
            let ends: Vec<_> = row.clone().map(|k| (c.terminals[k] != 0, c.truncations[k] != 0)).collect();
            reference(
                &c.values[row.clone()],
                &c.rewards[row.clone()],
                &ends,
                finals.then(|| &c.finals[row.clone()]),
                c.bootstrap[i],
                gamma,
                lambda,
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn matches_the_f64_reference(
        envs in 0usize..6, horizon in 0usize..300, seed: u64, finals: bool,
        gamma in 0.0f64..=1.0, lambda in 0.0f64..=1.0,
    ) {
        let c = case(envs, horizon, seed);
        let got = run(&c, finals, gamma, lambda);
        for (g, e) in got.iter().zip(expected(&c, finals, gamma, lambda)) {
            prop_assert!((*g as f64 - e).abs() <= 1e-6 * e.abs().max(1.0), "{g} vs {e}");
        }
    }
}

#[test]
fn time_major_arrays_read_as_their_transpose() {
    let c = case(3, 7, 1);
    let env_major = run(&c, true, 0.9, 0.8);
    // The same steps stored (steps, envs), C-ordered: (envs, steps) with
    // strides (1, envs).
    let transpose = |a: &[f32]| (0..7).flat_map(|t| (0..3).map(move |i| a[i * 7 + t])).collect::<Vec<_>>();
    let flags = |a: &[u8]| (0..7).flat_map(|t| (0..3).map(move |i| a[i * 7 + t])).collect::<Vec<_>>();
    let (values, rewards, finals) = (transpose(&c.values), transpose(&c.rewards), transpose(&c.finals));
    let (terminals, truncations) = (flags(&c.terminals), flags(&c.truncations));
    let m = |name, data| Matrix::new(name, data, 0, [3, 7], [1, 3]).unwrap();
    let steps = Steps {
        values: m("values", &values),
        rewards: m("rewards", &rewards),
        terminals: Matrix::new("terminals", &terminals, 0, [3, 7], [1, 3]).unwrap(),
        truncations: Matrix::new("truncations", &truncations, 0, [3, 7], [1, 3]).unwrap(),
        final_values: Some(m("final_values", &finals)),
        bootstrap: Matrix::c_order("bootstrap", &c.bootstrap, [3, 1]).unwrap(),
        masks: None,
    };
    let mut out = vec![0.0f32; 21];
    let mut time_major = MatrixMut::new("out", &mut out, 0, [3, 7], [1, 3]).unwrap();
    advantages(&steps, 0.9, 0.8, &mut time_major).unwrap();
    let out = &out;
    let back: Vec<f32> = (0..3).flat_map(|i| (0..7).map(move |t| out[t * 3 + i])).collect();
    assert_eq!(back, env_major);
}

#[test]
fn ends_at_the_first_and_last_step() {
    // One env, two steps: values 2, rewards 1, gamma 0.5, lambda 1.
    let run_one = |terminals: [u8; 2], truncations: [u8; 2]| {
        let (values, rewards, finals, bootstrap) = ([2.0f32; 2], [1.0f32; 2], [10.0f32; 2], [100.0f32]);
        let steps = Steps {
            values: Matrix::c_order("values", &values, [1, 2]).unwrap(),
            rewards: Matrix::c_order("rewards", &rewards, [1, 2]).unwrap(),
            terminals: Matrix::c_order("terminals", &terminals, [1, 2]).unwrap(),
            truncations: Matrix::c_order("truncations", &truncations, [1, 2]).unwrap(),
            final_values: Some(Matrix::c_order("final_values", &finals, [1, 2]).unwrap()),
            bootstrap: Matrix::c_order("bootstrap", &bootstrap, [1, 1]).unwrap(),
            masks: None,
        };
        let mut out = [0.0f32; 2];
        advantages(&steps, 0.5, 1.0, &mut MatrixMut::c_order("out", &mut out, [1, 2]).unwrap()).unwrap();
        out
    };
    // No end: the last step bootstraps, the first continues into it.
    assert_eq!(run_one([0, 0], [0, 0]), [1.0 + 1.0 - 2.0 + 0.5 * 49.0, 1.0 + 50.0 - 2.0]);
    // Truncated last step: the final observation's value, not bootstrap.
    assert_eq!(run_one([0, 0], [0, 1]), [1.0 + 1.0 - 2.0 + 0.5 * 4.0, 1.0 + 5.0 - 2.0]);
    // Both flags: terminal wins.
    assert_eq!(run_one([0, 1], [0, 1]), [1.0 + 1.0 - 2.0 - 0.5, -1.0]);
    // An end at the first step cuts it from the second.
    assert_eq!(run_one([1, 0], [0, 0]), [-1.0, 49.0]);
    assert_eq!(run_one([0, 0], [1, 0]), [4.0, 49.0]);
}

#[test]
fn later_outcomes_fold_into_their_stored_step_as_masked_steps_do() {
    let (mut rewards, mut terminals, mut truncations) =
        (vec![1.0f32, 2.0, 3.0, 4.0], vec![0u8, 0, 0, 0], vec![0u8, 0, 1, 0]);
    let mut stored = StoredOutcomes {
        rewards: MatrixMut::c_order("rewards", &mut rewards, [2, 2]).unwrap(),
        terminals: MatrixMut::c_order("terminals", &mut terminals, [2, 2]).unwrap(),
        truncations: MatrixMut::c_order("truncations", &mut truncations, [2, 2]).unwrap(),
    };
    // Two outcomes for row 0's last step (a reward, then a loss that
    // ends the episode), one for row 1's first (a truncation stays).
    let cells = [(0, 1), (0, 1), (1, 0)];
    fold_outcomes(&mut stored, &cells, &[(0.5, false, false), (-1.0, true, false), (0.25, false, false)]).unwrap();
    assert_eq!(rewards, [1.0, 1.5, 3.25, 4.0]);
    assert_eq!(terminals, [0, 1, 0, 0]);
    assert_eq!(truncations, [0, 0, 1, 0]);
}

#[test]
fn folding_outside_the_steps_is_refused_and_changes_nothing() {
    let (mut rewards, mut terminals, mut truncations) = (vec![1.0f32; 4], vec![0u8; 4], vec![0u8; 4]);
    let mut stored = StoredOutcomes {
        rewards: MatrixMut::c_order("rewards", &mut rewards, [2, 2]).unwrap(),
        terminals: MatrixMut::c_order("terminals", &mut terminals, [2, 2]).unwrap(),
        truncations: MatrixMut::c_order("truncations", &mut truncations, [2, 2]).unwrap(),
    };
    let err = fold_outcomes(&mut stored, &[(0, 0), (2, 0)], &[(1.0, false, false); 2]).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    assert_eq!(rewards, [1.0; 4]);
}

#[test]
fn masked_steps_fold_into_the_last_acting_step() {
    // One row, gamma 0.5, lambda 1: the agent acts at steps 0 and 3.
    let (values, rewards, bootstrap) = ([1.0f32, 9.0, 9.0, 3.0], [1.0f32, 2.0, 4.0, 8.0], [10.0f32]);
    let flags = [0u8; 4];
    let run_masks = |masks: Option<&[u8; 4]>| {
        let steps = Steps {
            values: Matrix::c_order("values", &values, [1, 4]).unwrap(),
            rewards: Matrix::c_order("rewards", &rewards, [1, 4]).unwrap(),
            terminals: Matrix::c_order("terminals", &flags, [1, 4]).unwrap(),
            truncations: Matrix::c_order("truncations", &flags, [1, 4]).unwrap(),
            final_values: None,
            bootstrap: Matrix::c_order("bootstrap", &bootstrap, [1, 1]).unwrap(),
            masks: masks.map(|m| Matrix::c_order("masks", m, [1, 4]).unwrap()),
        };
        let mut out = [f32::NAN; 4];
        advantages(&steps, 0.5, 1.0, &mut MatrixMut::c_order("out", &mut out, [1, 4]).unwrap()).unwrap();
        out
    };
    let last = 8.0 + 0.5 * 10.0 - 3.0;
    assert_eq!(run_masks(Some(&[1, 0, 0, 1])), [7.0 + 0.5 * 3.0 - 1.0 + 0.5 * last, 0.0, 0.0, last]);
    // Rewards before the first acting step have no step here to own them.
    assert_eq!(run_masks(Some(&[0, 1, 0, 0])), [0.0, 14.0 + 0.5 * 10.0 - 9.0, 0.0, 0.0]);
    // Masks that are all set change nothing, bit for bit.
    assert_eq!(run_masks(Some(&[1; 4])).map(f32::to_bits), run_masks(None).map(f32::to_bits));
}

#[test]
fn discounts_outside_zero_to_one_are_refused() {
    let c = case(2, 3, 7);
    for (gamma, lambda, refused) in [
        (f64::NAN, 0.9, "gamma: expected a value in [0, 1], got NaN"),
        (-1.0, 0.9, "gamma: expected a value in [0, 1], got -1.0"),
        (1e300, 0.9, "gamma: expected a value in [0, 1], got 1e300"),
        (0.9, f64::INFINITY, "gae_lambda: expected a value in [0, 1], got inf"),
        (0.9, 1.0 + f64::EPSILON, "gae_lambda: expected a value in [0, 1], got 1.0000000000000002"),
    ] {
        assert_eq!(try_run(&c, false, gamma, lambda).unwrap_err().to_string(), refused);
    }
    // The bounds themselves are discounts.
    for (gamma, lambda) in [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)] {
        assert!(try_run(&c, false, gamma, lambda).is_ok());
    }
}

#[test]
fn matrices_outside_their_data_and_mismatched_shapes_are_refused() {
    let data = [0.0f32; 6];
    assert!(Matrix::new("values", &data, 0, [2, 3], [3, 1]).is_ok());
    assert!(Matrix::new("values", &data, 5, [2, 3], [-3, -1]).is_ok());
    assert!(Matrix::new("values", &data, 0, [2, 4], [3, 1]).is_err());
    assert!(Matrix::new("values", &data, 1, [2, 3], [-3, 1]).is_err());
    assert!(Matrix::new("values", &data[..0], 0, [0, 3], [3, 1]).is_ok());

    let flags = [0u8; 6];
    let short = [0.0f32; 4];
    let steps = Steps {
        values: Matrix::c_order("values", &data, [2, 3]).unwrap(),
        rewards: Matrix::c_order("rewards", &short, [2, 2]).unwrap(),
        terminals: Matrix::c_order("terminals", &flags, [2, 3]).unwrap(),
        truncations: Matrix::c_order("truncations", &flags, [2, 3]).unwrap(),
        final_values: None,
        bootstrap: Matrix::c_order("bootstrap", &data[..2], [2, 1]).unwrap(),
        masks: None,
    };
    let mut out = [0.0f32; 6];
    let mut out = MatrixMut::c_order("out", &mut out, [2, 3]).unwrap();
    assert_eq!(
        advantages(&steps, 0.9, 0.9, &mut out),
        Err(Error::Row("rewards: expected shape (2, 3) to match values, got (2, 2)".into()))
    );
}

/// The kernel without masks against the masked one with every step
/// acting, bit for bit: shapes across blocks of rows and chunks of steps,
/// dense episode ends, each layout (env-major, time-major, reversed
/// steps), values that overflow to infinity or are NaN.
fn unmasked_equals_masked(envs: usize, horizon: usize, seed: u64, finals: bool, layout: u8, gamma: f64, lambda: f64) {
    let c = case(envs, horizon, seed);
    let n = envs * horizon;
    let shape = [envs, horizon];
    // Where element k = i * horizon + t of an env-major buffer is stored in
    // `layout`, and the strides and origin that read it back.
    let store = |k: usize| match layout {
        0 => k,
        1 => (k % horizon) * envs + k / horizon,
        _ => k / horizon * horizon + horizon - 1 - k % horizon,
    };
    let (strides, origin) = match layout {
        0 => ([horizon as isize, 1], 0),
        1 => ([1, envs as isize], 0),
        _ => ([horizon as isize, -1], horizon.saturating_sub(1)),
    };
    let relayout = |a: &[f32]| {
        let mut b = vec![0.0f32; n];
        (0..n).for_each(|k| b[store(k)] = a[k]);
        b
    };
    let relayout_flags = |a: &[u8]| {
        let mut b = vec![0u8; n];
        (0..n).for_each(|k| b[store(k)] = a[k]);
        b
    };
    let mut values = c.values.clone();
    if n > 2 {
        (values[n / 2], values[n / 3]) = (f32::MAX, f32::NAN);
    }
    let (values, rewards, finals_data) = (relayout(&values), relayout(&c.rewards), relayout(&c.finals));
    let (terminals, truncations) = (relayout_flags(&c.terminals), relayout_flags(&c.truncations));
    let all_act = vec![1u8; n];
    let origin = if envs == 0 { 0 } else { origin };
    let m = |name, data| Matrix::new(name, data, origin, shape, strides).unwrap();
    let run = |masks: Option<Matrix<'_, u8>>| {
        let steps = Steps {
            values: m("values", &values),
            rewards: m("rewards", &rewards),
            terminals: Matrix::new("terminals", &terminals, origin, shape, strides).unwrap(),
            truncations: Matrix::new("truncations", &truncations, origin, shape, strides).unwrap(),
            final_values: finals.then(|| m("final_values", &finals_data)),
            bootstrap: Matrix::c_order("bootstrap", &c.bootstrap, [envs, 1]).unwrap(),
            masks,
        };
        let mut out = vec![0.5f32; n];
        let mut target = MatrixMut::new("out", &mut out, origin, shape, strides).unwrap();
        advantages(&steps, gamma, lambda, &mut target).unwrap();
        out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let masks = Matrix::new("masks", &all_act, origin, shape, strides).unwrap();
    assert_eq!(run(None), run(Some(masks)), "{envs} x {horizon}, layout {layout}");
}

proptest! {
    #[test]
    fn without_masks_equals_every_step_acting_bit_for_bit(
        envs in 0usize..20, horizon in 0usize..200, seed: u64, finals: bool, layout in 0u8..3,
        gamma in 0.0f64..=1.0, lambda in 0.0f64..=1.0,
    ) {
        unmasked_equals_masked(envs, horizon, seed, finals, layout, gamma, lambda);
    }
}

#[test]
fn without_masks_equals_every_step_acting_at_the_bounds() {
    // Rows across a block and its remainder, steps across chunks, the
    // discounts' bounds.
    for (envs, horizon) in [(1, 1), (8, 64), (9, 65), (17, 129), (3, 200)] {
        for layout in 0..3 {
            for (gamma, lambda) in [(0.0, 0.0), (1.0, 1.0), (0.99, 0.95)] {
                unmasked_equals_masked(envs, horizon, 3, true, layout, gamma, lambda);
            }
        }
    }
}
