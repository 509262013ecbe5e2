"""GAE in Rust (``pufferrs.advantages.compute_advantages``): equal to a
plain float64 loop on random cases, episode ends at the first and last step
and both flags included, for env-major and time-major arrays, numpy and
torch; bad arrays are refused with the argument named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pufferrs import RowError, SpaceError
from pufferrs._native import gae
from pufferrs.advantages import compute_advantages


def reference(
    values: np.ndarray,
    bootstrap: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    truncations: np.ndarray,
    gamma: float,
    lam: float,
    final_values: np.ndarray | None,
) -> np.ndarray:
    """GAE of each env in float64, written as plainly as possible."""
    n, t_max = values.shape
    out = np.zeros((n, t_max))
    for i in range(n):
        gae = 0.0
        for t in reversed(range(t_max)):
            v, r = float(values[i, t]), float(rewards[i, t])
            if terminals[i, t]:
                gae = r - v
            elif truncations[i, t]:
                future = v if final_values is None else float(final_values[i, t])
                gae = r + gamma * future - v
            else:
                next_value = float(values[i, t + 1]) if t + 1 < t_max else float(bootstrap[i])
                gae = r + gamma * next_value - v + gamma * lam * gae
            out[i, t] = gae
    return out


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    # The kernel sums in float64 and rounds each result to float32 once, so
    # the only error is that rounding: 6e-8 of the value's magnitude. 1e-5
    # relative (absolute below 1) leaves a wide margin and still catches any
    # wrong term, which would be off by at least gamma * lambda times a
    # value of order 1.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 5))
    t = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 100.0]))
    p_end = draw(st.sampled_from([0.0, 0.1, 0.5]))
    case = {
        "values": (rng.normal(size=(n, t)) * scale).astype(np.float32),
        "bootstrap": (rng.normal(size=n) * scale).astype(np.float32),
        "rewards": (rng.normal(size=(n, t)) * scale).astype(np.float32),
        "terminals": rng.random((n, t)) < p_end,
        "truncations": rng.random((n, t)) < p_end,
        "final_values": (rng.normal(size=(n, t)) * scale).astype(np.float32) if draw(st.booleans()) else None,
        "gamma": draw(st.floats(0.0, 1.0)),
        "gae_lambda": draw(st.floats(0.0, 1.0)),
    }
    # Ends where they are easiest to get wrong: the first and the last step,
    # with one flag or both.
    for column in draw(st.lists(st.sampled_from([0, t - 1]), max_size=2)):
        row = draw(st.integers(0, n - 1))
        flags = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
        case["terminals"][row, column], case["truncations"][row, column] = flags
    return case


def expected_of(case: dict) -> np.ndarray:
    return reference(
        case["values"],
        case["bootstrap"],
        case["rewards"],
        case["terminals"],
        case["truncations"],
        case["gamma"],
        case["gae_lambda"],
        case["final_values"],
    )


def call(case: dict, convert=lambda a: a) -> np.ndarray:
    args = [convert(case[k]) for k in ("values", "bootstrap", "rewards", "terminals", "truncations")]
    final = case["final_values"]
    return compute_advantages(
        *args, case["gamma"], case["gae_lambda"], final_values=None if final is None else convert(final)
    )


@settings(max_examples=200, deadline=None)
@given(cases())
def test_numpy_matches_the_float64_reference(case: dict) -> None:
    got = call(case)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert_close(got, expected_of(case))


@settings(max_examples=50, deadline=None)
@given(cases())
def test_time_major_arrays_pass_as_their_transpose(case: dict) -> None:
    # (T, N) buffers, as CleanRL keeps them; `.T` is a view, not a copy.
    def time_major(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T).T if a.ndim == 2 else a

    got = call(case, time_major)
    assert_close(got, expected_of(case))


@settings(max_examples=50, deadline=None)
@given(cases())
def test_torch_tensors_give_a_tensor(case: dict) -> None:
    got = call(case, torch.from_numpy)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert_close(got.numpy(), expected_of(case))


@settings(max_examples=30, deadline=None)
@given(cases(), st.lists(st.booleans(), min_size=6, max_size=6), st.booleans())
def test_mixtures_of_arrays_tensors_and_lists_and_tensors_needing_grad(
    case: dict, as_tensor: list[bool], grad: bool
) -> None:
    # The trainer passes CPU tensors and host arrays side by side; tensors
    # that need grad and nested lists (of flags) take the general path. Whatever the
    # mixture, the same advantages, as a tensor exactly when values is one.
    names = ("values", "bootstrap", "rewards", "terminals", "truncations", "final_values")
    given = {}
    for name, tensor in zip(names, as_tensor):
        x = case[name]
        if x is not None and tensor:
            x = torch.from_numpy(x)
            if grad and x.dtype == torch.float32:
                x = x.clone().requires_grad_()
        elif name == "terminals":
            x = x.tolist()
        given[name] = x
    got = compute_advantages(
        *(given[k] for k in names[:5]), case["gamma"], case["gae_lambda"], final_values=given["final_values"]
    )
    assert isinstance(got, torch.Tensor) == as_tensor[0]
    assert not (isinstance(got, torch.Tensor) and got.requires_grad)
    assert_close(np.asarray(got.numpy() if isinstance(got, torch.Tensor) else got), expected_of(case))


@pytest.mark.parametrize("p_end", [0.01, 0.3])
def test_shapes_across_the_kernels_blocks_of_rows_and_steps(p_end: float) -> None:
    # The kernel takes 8 rows and 64 steps at a time: 19 x 150 has a block
    # of 3 rows and a chunk of 22 steps left over, in each layout.
    rng = np.random.default_rng(7)
    n, t = 19, 150
    case = {
        "values": rng.normal(size=(n, t)).astype(np.float32),
        "bootstrap": rng.normal(size=n).astype(np.float32),
        "rewards": rng.normal(size=(n, t)).astype(np.float32),
        "terminals": rng.random((n, t)) < p_end,
        "truncations": rng.random((n, t)) < p_end,
        "final_values": rng.normal(size=(n, t)).astype(np.float32),
        "gamma": 0.99,
        "gae_lambda": 0.95,
    }
    expected = expected_of(case)
    assert_close(call(case), expected)
    assert_close(call(case, torch.from_numpy).numpy(), expected)
    assert_close(call(case, lambda a: np.ascontiguousarray(a.T).T), expected)
    assert_close(call(case, lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1]), expected)


def test_boundary_cases_by_hand() -> None:
    # One env, three steps; values 2, rewards 1, final values 10, bootstrap
    # 100; gamma 0.5, lambda 1.
    def run(terminals: list[bool], truncations: list[bool], finals: bool = True) -> list[float]:
        ones = np.ones((1, 3), np.float32)
        return compute_advantages(
            2 * ones,
            np.array([100.0], np.float32),
            ones,
            np.array([terminals]),
            np.array([truncations]),
            0.5,
            1.0,
            final_values=10 * ones if finals else None,
        )[0].tolist()

    no = [False] * 3
    assert run(no, no) == [12.25, 24.5, 49.0]  # 49 = 1 + 0.5 * 100 - 2, then halved and added
    assert run(no, [False, False, True]) == [1.0, 2.0, 4.0]  # 4 = 1 + 0.5 * 10 - 2: the final value
    assert run(no, [False, False, True], finals=False) == [0.0, 0.0, 0.0]  # 1 + 0.5 * 2 - 2: its own value
    assert run([False, False, True], [False, False, True]) == [-0.25, -0.5, -1.0]  # terminal wins
    assert run([True, False, False], no) == [-1.0, 24.5, 49.0]  # an end at the first step cuts it off
    assert run(no, [True, False, False]) == [4.0, 24.5, 49.0]


def test_strided_views_and_out() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(4, 20)).astype(np.float32)
    values, rewards = wide[:, ::2], wide[:, 1::2]  # interleaved, not contiguous
    flags = np.zeros((4, 10), bool)
    flags[1, 4] = True
    out = np.full((4, 10), np.nan, np.float32)
    bootstrap = np.zeros(4, np.float32)
    got = compute_advantages(values, bootstrap, rewards, flags, flags, 0.9, 0.8)
    assert_close(got, reference(values, bootstrap, rewards, flags, flags, 0.9, 0.8, None))
    assert gae(values, bootstrap, rewards, flags, flags, 0.9, 0.8, out=out) is out
    assert_close(out, got)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(values=np.zeros((2, 3))), "values: expected a 2-d numpy array of float32, got a 2-d array of float64"),
        (dict(rewards=np.zeros((2, 4), np.float32)), r"rewards: expected shape \(2, 3\) to match values, got \(2, 4\)"),
        (dict(bootstrap=np.zeros(3, np.float32)), r"bootstrap: expected shape \(2,\) to match values, got \(3,\)"),
        (dict(terminals=np.zeros((2, 3), np.uint8)), "terminals: expected a 2-d numpy array of bool"),
        (dict(truncations=[[0] * 3] * 2), "truncations: expected a 2-d numpy array of bool, got a 2-d array of int64"),
        (dict(final_values=np.zeros(3, np.float32)), "final_values: expected a 2-d numpy array of float32"),
    ],
)
def test_bad_arrays_are_refused_with_the_argument_named(change: dict, message: str) -> None:
    args = dict(
        values=np.zeros((2, 3), np.float32),
        bootstrap=np.zeros(2, np.float32),
        rewards=np.zeros((2, 3), np.float32),
        terminals=np.zeros((2, 3), bool),
        truncations=np.zeros((2, 3), bool),
        final_values=None,
    )
    args.update(change)
    final = args.pop("final_values")
    with pytest.raises(RowError, match=message):
        compute_advantages(*args.values(), 0.9, 0.9, final_values=final)


def test_an_out_that_overlaps_an_input_or_is_read_only_is_refused() -> None:
    values, flags = np.zeros((2, 3), np.float32), np.zeros((2, 3), bool)
    bootstrap = np.zeros(2, np.float32)
    with pytest.raises(RowError, match="out: overlaps the memory of values"):
        gae(values, bootstrap, values.copy(), flags, flags, 0.9, 0.9, out=values)
    frozen = np.zeros((2, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(RowError, match="out: the array is read-only"):
        gae(values, bootstrap, values.copy(), flags, flags, 0.9, 0.9, out=frozen)


def small_case(tensors: bool = False, values: torch.dtype = torch.float32) -> list:
    """``(values, bootstrap, rewards, terminals, truncations)`` of 2 envs by
    3 steps, as numpy arrays or (with ``values`` of that dtype) tensors."""
    arrays = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.zeros((2, 3), np.float32)]
    arrays += [np.zeros((2, 3), bool), np.zeros((2, 3), bool)]
    if not tensors:
        return arrays
    return [torch.from_numpy(arrays[0]).to(values), *map(torch.from_numpy, arrays[1:])]


@given(
    gamma=st.floats(allow_nan=True, allow_infinity=True),
    gae_lambda=st.floats(allow_nan=True, allow_infinity=True),
)
def test_discounts_outside_zero_to_one_are_refused_by_the_kernel(gamma: float, gae_lambda: float) -> None:
    # The kernel owns the rule, so every caller gets it: numpy, torch, the trainer.
    for args in (small_case(), small_case(tensors=True)):
        if 0 <= gamma <= 1 and 0 <= gae_lambda <= 1:
            assert np.isfinite(np.asarray(compute_advantages(*args, gamma, gae_lambda))).all()
        else:
            name = "gamma" if not 0 <= gamma <= 1 else "gae_lambda"
            with pytest.raises(SpaceError, match=rf"^{name}: expected a value in \[0, 1\], got "):
                compute_advantages(*args, gamma, gae_lambda)


@pytest.mark.parametrize("gamma", [float("nan"), -1.0, 1e300, float("inf")])
def test_the_issues_discounts_are_refused(gamma: float) -> None:
    with pytest.raises(SpaceError, match="^gamma: expected a value in"):
        compute_advantages(*small_case(), gamma, 0.95)
    with pytest.raises(SpaceError, match="^gae_lambda: expected a value in"):
        compute_advantages(*small_case(), 0.99, gamma)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_tensors_of_other_float_dtypes_are_a_row_error(dtype: torch.dtype) -> None:
    # bfloat16 has no numpy dtype: refused as float16 is, not as torch's TypeError.
    with pytest.raises(RowError, match="^values: expected"):
        compute_advantages(*small_case(tensors=True, values=dtype), 0.99, 0.95)


@pytest.mark.gpu
def test_cuda_tensors_round_trip_through_pinned_memory() -> None:
    rng = np.random.default_rng(1)
    case = {
        "values": rng.normal(size=(8, 64)).astype(np.float32),
        "bootstrap": rng.normal(size=8).astype(np.float32),
        "rewards": rng.normal(size=(8, 64)).astype(np.float32),
        "terminals": rng.random((8, 64)) < 0.05,
        "truncations": rng.random((8, 64)) < 0.05,
        "final_values": rng.normal(size=(8, 64)).astype(np.float32),
        "gamma": 0.99,
        "gae_lambda": 0.95,
    }
    got = call(case, lambda a: torch.from_numpy(a).cuda())
    assert got.device.type == "cuda"
    assert_close(got.cpu().numpy(), expected_of(case))
