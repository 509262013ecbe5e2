"""GAE over multi-agent rows (``compute_advantages(..., masks=)``): equal to
a float64 reference of the folding rule written from its statement (each
acting step owns the rewards and flags of the masked steps after it, up to
its row's next acting step), with ends at the first and last step and
truncations with final values; rows that always act give exactly what the
kernel gives without masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pufferrs import RowError
from pufferrs.advantages import compute_advantages, fold_later_outcomes


def folded_reference(case: dict) -> np.ndarray:
    """Per row: the agent's own steps (the unmasked ones), each with what
    it owns, then plain GAE over that shorter sequence, in float64."""
    values, rewards, masks = case["values"], case["rewards"], case["masks"]
    terminals, truncations, final_values = case["terminals"], case["truncations"], case["final_values"]
    gamma, lam = case["gamma"], case["gae_lambda"]
    n, horizon = values.shape
    out = np.zeros((n, horizon))
    for i in range(n):
        acting = [t for t in range(horizon) if masks[i, t]]
        owned = [range(t, nxt) for t, nxt in zip(acting, [*acting[1:], horizon])]
        gae = 0.0
        for k in reversed(range(len(acting))):
            t, steps = acting[k], owned[k]
            v = float(values[i, t])
            r = sum(float(rewards[i, s]) for s in steps)
            cut = [s for s in steps if truncations[i, s]]
            if any(terminals[i, s] for s in steps):
                gae = r - v
            elif cut:
                future = v if final_values is None else float(final_values[i, cut[0]])
                gae = r + gamma * future - v
            else:
                nxt = float(values[i, acting[k + 1]]) if k + 1 < len(acting) else float(case["bootstrap"][i])
                gae = r + gamma * nxt - v + gamma * lam * gae
            out[i, t] = gae
    return out


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 5))
    t = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p_end = draw(st.sampled_from([0.0, 0.1, 0.5]))
    p_act = draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]))
    case = {
        "values": rng.normal(size=(n, t)).astype(np.float32),
        "bootstrap": rng.normal(size=n).astype(np.float32),
        "rewards": rng.normal(size=(n, t)).astype(np.float32),
        "terminals": rng.random((n, t)) < p_end,
        "truncations": rng.random((n, t)) < p_end,
        "final_values": rng.normal(size=(n, t)).astype(np.float32) if draw(st.booleans()) else None,
        "masks": rng.random((n, t)) < p_act,
        "gamma": draw(st.floats(0.0, 1.0)),
        "gae_lambda": draw(st.floats(0.0, 1.0)),
    }
    # Boundaries at the first and last step: acting or not, ending or not.
    for column in draw(st.lists(st.sampled_from([0, t - 1]), max_size=3)):
        row = draw(st.integers(0, n - 1))
        case["masks"][row, column] = draw(st.booleans())
        flags = draw(st.sampled_from([(False, False), (True, False), (False, True), (True, True)]))
        case["terminals"][row, column], case["truncations"][row, column] = flags
    return case


def call(case: dict, masks: np.ndarray | None) -> np.ndarray:
    keys = ("values", "bootstrap", "rewards", "terminals", "truncations")
    return compute_advantages(
        *(case[k] for k in keys),
        case["gamma"],
        case["gae_lambda"],
        final_values=case["final_values"],
        masks=masks,
    )


@settings(max_examples=300, deadline=None)
@given(cases())
def test_masked_rows_match_the_float64_folding_rule(case: dict) -> None:
    got = call(case, case["masks"])
    np.testing.assert_allclose(got, folded_reference(case), rtol=1e-5, atol=1e-5)
    assert (got[~case["masks"]] == 0).all()


@settings(max_examples=100, deadline=None)
@given(cases())
def test_rows_that_always_act_equal_the_kernel_without_masks(case: dict) -> None:
    # Bit for bit: single-agent training passes all-True masks.
    assert np.array_equal(call(case, np.ones_like(case["masks"])), call(case, None))


def test_folding_by_hand() -> None:
    # One row, gamma 0.5, lambda 1: acts at 0 and 3; steps 1 and 2 are the
    # other agents' turns, whose rewards (2 and 4) land on this row.
    values = np.array([[1.0, 9.0, 9.0, 3.0]], np.float32)
    rewards = np.array([[1.0, 2.0, 4.0, 8.0]], np.float32)
    masks = np.array([[True, False, False, True]])
    flags = np.zeros((1, 4), bool)
    bootstrap = np.array([10.0], np.float32)
    got = compute_advantages(values, bootstrap, rewards, flags, flags, 0.5, 1.0, masks=masks)
    last = 8.0 + 0.5 * 10.0 - 3.0
    first = (1.0 + 2.0 + 4.0) + 0.5 * 3.0 - 1.0 + 0.5 * last
    np.testing.assert_allclose(got, [[first, 0.0, 0.0, last]])

    # The agent is truncated during another agent's turn (step 2): its last
    # acting step bootstraps from that step's final value, and the new
    # episode's first step (3) does not reach back.
    truncations = np.array([[False, False, True, False]])
    final_values = np.full((1, 4), 6.0, np.float32)
    got = compute_advantages(
        values, bootstrap, rewards, flags, truncations, 0.5, 1.0, final_values=final_values, masks=masks
    )
    np.testing.assert_allclose(got, [[(1.0 + 2.0 + 4.0) + 0.5 * 6.0 - 1.0, 0.0, 0.0, last]])

    # Rewards before the row's first acting step belong to the last rollout.
    masks = np.array([[False, True, False, False]])
    got = compute_advantages(values, bootstrap, rewards, flags, flags, 0.5, 1.0, masks=masks)
    np.testing.assert_allclose(got, [[0.0, (2.0 + 4.0 + 8.0) + 0.5 * 10.0 - 9.0, 0.0, 0.0]])


def test_masks_as_a_tensor_and_time_major() -> None:
    rng = np.random.default_rng(0)
    case = {
        "values": rng.normal(size=(3, 7)).astype(np.float32),
        "bootstrap": rng.normal(size=3).astype(np.float32),
        "rewards": rng.normal(size=(3, 7)).astype(np.float32),
        "terminals": rng.random((3, 7)) < 0.2,
        "truncations": rng.random((3, 7)) < 0.2,
        "final_values": None,
        "masks": rng.random((3, 7)) < 0.5,
        "gamma": 0.9,
        "gae_lambda": 0.8,
    }
    expected = call(case, case["masks"])
    tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in case.items()}
    got = call(tensors, tensors["masks"])
    assert isinstance(got, torch.Tensor) and np.array_equal(got.numpy(), expected)
    transposed = {
        k: np.ascontiguousarray(v.T).T if isinstance(v, np.ndarray) and v.ndim == 2 else v for k, v in case.items()
    }
    assert np.array_equal(call(transposed, transposed["masks"]), expected)


def test_bad_masks_are_refused_with_their_name() -> None:
    values = np.zeros((2, 3), np.float32)
    flags = np.zeros((2, 3), bool)
    args = (values, np.zeros(2, np.float32), values, flags, flags, 0.9, 0.9)
    with pytest.raises(RowError, match=r"masks: expected shape \(2, 3\) to match values, got \(2, 2\)"):
        compute_advantages(*args, masks=np.ones((2, 2), bool))
    with pytest.raises(RowError, match="masks: expected a 2-d numpy array of bool"):
        compute_advantages(*args, masks=np.ones((2, 3), np.float32))


@settings(max_examples=100)
@given(st.data())
def test_outcomes_folded_after_the_rollout_equal_masked_steps_inside_it(data: st.DataObject) -> None:
    # A row whose agent waits, masked, past the rollout's last step gets
    # those steps' outcomes folded into its last stored step
    # (fold_later_outcomes, what the trainer does); GAE must then give what
    # it gives when the same steps are inside the rollout, masked. One rule.
    n = data.draw(st.integers(1, 3))
    horizon = data.draw(st.integers(1, 5))
    extra = data.draw(st.integers(1, 3))
    floats = st.floats(-10, 10, width=32)
    shape = (n, horizon + extra)
    values = np.array(data.draw(st.lists(floats, min_size=n * shape[1], max_size=n * shape[1])), np.float32)
    rewards = np.array(data.draw(st.lists(floats, min_size=n * shape[1], max_size=n * shape[1])), np.float32)
    flags = st.lists(st.booleans(), min_size=n * shape[1], max_size=n * shape[1])
    terminals = np.array(data.draw(flags), bool).reshape(shape)
    truncations = np.array(data.draw(flags), bool).reshape(shape) & ~terminals
    # No flag inside the tail but maybe on its last step (an episode ending
    # while the agent waits ends the wait).
    terminals[:, horizon:-1] = truncations[:, horizon:-1] = False
    masks = np.ones(shape, bool)
    masks[:, horizon:] = False
    values, rewards = values.reshape(shape), rewards.reshape(shape)
    bootstrap = np.array(data.draw(st.lists(floats, min_size=n, max_size=n)), np.float32)
    gamma, lam = data.draw(st.floats(0, 1)), data.draw(st.floats(0, 1))

    inside = compute_advantages(values, bootstrap, rewards, terminals, truncations, gamma, lam, masks=masks)

    stored = [np.ascontiguousarray(x[:, :horizon]) for x in (rewards, terminals, truncations)]
    rows = np.repeat(np.arange(n), extra)
    steps = np.full(n * extra, horizon - 1)
    later = tuple(x[:, horizon:].reshape(-1) for x in (rewards, terminals, truncations))
    fold_later_outcomes(*stored, rows, steps, later)
    folded = compute_advantages(
        values[:, :horizon].copy(), bootstrap, *stored, gamma, lam, masks=masks[:, :horizon].copy()
    )
    np.testing.assert_allclose(folded, inside[:, :horizon], rtol=1e-5, atol=1e-4)
