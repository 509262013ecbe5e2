"""Shared test fixtures: hypothesis strategies for random nested spaces,
the reference space, one torch thread for tests that train small
policies, and the skip of ``gpu`` tests where there is no CUDA device."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("PUFFERRS_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# CI runs the same examples every time, so that a run fails for the code and
# not for the draw; local runs keep exploring (and remember what failed).
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One place for the skip, so that no gpu test can forget it; torch is
    # imported only when such a test was collected.
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_DTYPES = ["float16", "float32", "float64"]
DISCRETE_DTYPES = ["int8", "int16", "int32", "int64"]

shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), max_size=3).map(tuple)


@st.composite
def boxes(draw: st.DrawFn) -> gs.Box:
    dtype = np.dtype(draw(st.sampled_from(["bool", *INT_DTYPES, *FLOAT_DTYPES])))
    shape = draw(shapes)
    if dtype.kind == "b":
        return gs.Box(0, 1, shape, dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low = draw(st.integers(max(info.min, -1000), 100))
        high = draw(st.integers(low, min(info.max, low + 1000)))
        return gs.Box(low, high, shape, dtype)
    low = draw(st.sampled_from([-np.inf, -10.0, -1.0, 0.0]))
    high = draw(st.sampled_from([np.inf, 1.0, 10.0]))
    return gs.Box(low, high, shape, dtype)


@st.composite
def discretes(draw: st.DrawFn) -> gs.Discrete:
    return gs.Discrete(
        draw(st.integers(1, 10)), start=draw(st.integers(-5, 5)), dtype=draw(st.sampled_from(DISCRETE_DTYPES))
    )


@st.composite
def multi_discretes(draw: st.DrawFn) -> gs.MultiDiscrete:
    shape = draw(nonempty_shapes.filter(len))
    nvec = draw(st.lists(st.integers(1, 9), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    start = draw(st.lists(st.integers(-3, 3), min_size=len(nvec), max_size=len(nvec)))
    dtype = draw(st.sampled_from(DISCRETE_DTYPES))
    return gs.MultiDiscrete(np.reshape(nvec, shape), dtype=dtype, start=np.reshape(start, shape))


@st.composite
def multi_binaries(draw: st.DrawFn) -> gs.MultiBinary:
    shape = draw(nonempty_shapes.filter(len))
    return gs.MultiBinary(list(shape) if len(shape) > 1 else shape[0])


leaf_spaces = st.one_of(boxes(), discretes(), multi_discretes(), multi_binaries())

keys = st.text("abcdefghij_'", min_size=1, max_size=6)


def nested(children: st.SearchStrategy[gs.Space]) -> st.SearchStrategy[gs.Space]:
    return st.one_of(
        st.dictionaries(keys, children, max_size=4).map(gs.Dict),
        st.lists(children, max_size=4).map(lambda items: gs.Tuple(tuple(items))),
    )


def spaces(max_depth: int = 4) -> st.SearchStrategy[gs.Space]:
    """Random fixed-size spaces: leaves of every kind and dtype, odd shapes
    and scalars, inside Dicts and Tuples nested up to ``max_depth``."""
    strategy: st.SearchStrategy[gs.Space] = leaf_spaces
    for _ in range(max_depth):
        strategy = st.one_of(leaf_spaces, nested(strategy))
    return strategy


@st.composite
def spaces_with_samples(draw: st.DrawFn, count: int = 1) -> tuple[gs.Space, list[Any]]:
    space = draw(spaces())
    space.seed(draw(st.integers(0, 2**32 - 1)))
    return space, [space.sample() for _ in range(count)]


def assert_tree_equal(actual: Any, expected: Any, path: str = "obs") -> None:
    """Bit-exact equality of nested dicts/tuples of arrays, with the path of
    the first difference."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert list(actual) == list(expected), path
        for key in expected:
            assert_tree_equal(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_tree_equal(a, e, f"{path}[{i}]")
    else:
        actual = actual.cpu().numpy() if hasattr(actual, "cpu") else np.asarray(actual)
        expected = np.asarray(expected)
        assert actual.shape == expected.shape, f"{path}: shape {actual.shape} != {expected.shape}"
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.tobytes() == expected.tobytes(), f"{path}: values differ"


def stack(samples: list[Any]) -> Any:
    """A list of samples as one batched structure (leading batch axis)."""
    first = samples[0]
    if isinstance(first, dict):
        return {k: stack([s[k] for s in samples]) for k in first}
    if isinstance(first, tuple):
        return tuple(stack([s[i] for s in samples]) for i in range(len(first)))
    return np.stack([np.asarray(s) for s in samples])


def one_step_config(env: str, total_steps: int) -> Any:
    """Trainer settings for envs whose every step is a question of its own
    (nothing to discount), as the small continuous-action tests use."""
    from pufferrs.train import Config

    return Config(
        env=env,
        num_envs=16,
        total_steps=total_steps,
        batch_size=2048,
        minibatch_size=512,
        learning_rate=3e-3,
        gamma=0.0,
        gae_lambda=0.0,
        ent_coef=0.0,
        torch_threads=1,
    )


@pytest.fixture
def reference_space() -> gs.Dict:
    from pufferrs.demo import reference_space

    space = reference_space()
    space.seed(0)
    return space


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a small policy: several threads on a shared
    2-core machine stall for seconds. Process-wide, so it is put back."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
