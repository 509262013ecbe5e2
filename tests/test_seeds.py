"""Seeds and counts a vector env is given: env ``i`` gets ``seed + i`` for
every non-negative int seed, of any size, on every backend and through the
gymnasium adapter; what no env can take (a negative seed, a non-int,
``num_envs`` of 0 or less) is refused up front with a pufferrs error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pufferrs.vector as pv
from pufferrs import BuffersError, ConfigError
from pufferrs.compat import GymnasiumVectorEnv

#: Seeds around the widths a fixed-size sum would wrap or overflow at.
EDGES = [0, 2**31 - 1, 2**32, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**40]


class SeedEnv(gym.Env):
    """Reports the seed of its last reset in the reset's info (and seeds
    its RNG with it, as gymnasium envs do: this fails for a seed gymnasium
    refuses)."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {"seed": seed}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(1, np.float32), 0.0, False, False, {}


@pytest.fixture(scope="module", params=["serial", "multiprocessing"])
def envs(request: pytest.FixtureRequest) -> Iterator[pv.Serial | pv.Multiprocessing]:
    workers = {"num_workers": 2} if request.param == "multiprocessing" else {}
    with pv.make(SeedEnv, num_envs=4, backend=request.param, **workers) as envs:
        yield envs


def reset_seeds(envs: pv.Serial | pv.Multiprocessing, seed: Any) -> list[int]:
    _, infos = envs.reset(seed=seed)
    return [info["seed"] for info in infos]


@pytest.mark.parametrize("seed", EDGES)
def test_env_i_gets_seed_plus_i_at_the_int64_edges(envs: pv.Serial | pv.Multiprocessing, seed: int) -> None:
    assert reset_seeds(envs, seed) == [seed + i for i in range(4)]


@given(seed=st.integers(min_value=0, max_value=2**200))
def test_env_i_gets_seed_plus_i_for_any_non_negative_int(envs: pv.Serial | pv.Multiprocessing, seed: int) -> None:
    assert reset_seeds(envs, seed) == [seed + i for i in range(4)]


def test_numpy_integer_seeds_are_their_value(envs: pv.Serial | pv.Multiprocessing) -> None:
    assert reset_seeds(envs, np.uint64(2**64 - 1)) == [2**64 - 1 + i for i in range(4)]


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        (-1, "seed must be a non-negative int, got -1"),
        (-(2**63), "seed must be a non-negative int, got -9223372036854775808"),
        (1.0, r"seed must be a non-negative int, got 1.0 \(float\)"),
        (True, r"seed must be a non-negative int, got True \(bool\)"),
        ("3", r"seed must be a non-negative int, got '3' \(str\)"),
    ],
)
def test_seeds_no_env_takes_are_refused_and_the_env_goes_on(
    envs: pv.Serial | pv.Multiprocessing, seed: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        envs.reset(seed=seed)
    # Refused before any env saw it: nothing broke.
    assert reset_seeds(envs, 7) == [7, 8, 9, 10]


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_make_seed_is_the_first_resets_and_refused_before_any_env_is_made(backend: str) -> None:
    with pv.make(SeedEnv, num_envs=2, backend=backend, seed=2**63 - 1) as envs:
        assert reset_seeds(envs, None) == [2**63 - 1, 2**63]
    made = []

    def creator() -> gym.Env:
        made.append(1)
        return SeedEnv()

    with pytest.raises(ConfigError, match="seed must be a non-negative int, got -5"):
        pv.make(creator, num_envs=2, backend=backend, seed=-5)
    assert not made


class TextSeedEnv(SeedEnv):
    """The seed as text: gymnasium's vector infos put an int info in an
    int64 array, which no seed past 2**63 fits."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(seed=seed, options=options)
        return obs, {"seed": str(info["seed"])}


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_gymnasium_adapter_seeds_as_the_vector_envs(backend: str) -> None:
    def seeds(envs: GymnasiumVectorEnv, **kwargs: Any) -> list[str]:
        return list(envs.reset(**kwargs)[1]["seed"])

    with GymnasiumVectorEnv([TextSeedEnv] * 2, backend=backend, seed=2**64) as envs:
        assert seeds(envs) == [str(2**64), str(2**64 + 1)]
        assert seeds(envs, seed=2**63 - 1) == [str(2**63 - 1), str(2**63)]
        # Through call's channel: options, and a list of seeds.
        assert seeds(envs, seed=2**70, options={"x": 1}) == [str(2**70), str(2**70 + 1)]
        assert seeds(envs, seed=[2**65, None]) == [str(2**65), "None"]
        with pytest.raises(ConfigError, match="seed must be a non-negative int, got -1"):
            envs.reset(seed=-1, options={"x": 1})
        with pytest.raises(ConfigError, match=r"seed\[1\] must be a non-negative int, got -2"):
            envs.reset(seed=[0, -2])
    with pytest.raises(ConfigError, match="seed must be a non-negative int, got -1"):
        GymnasiumVectorEnv([TextSeedEnv] * 2, backend=backend, seed=-1)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
@pytest.mark.parametrize(
    ("num_envs", "creators", "message"),
    [
        (0, None, "num_envs must be positive, got 0"),
        (-1, None, "num_envs must be a positive int, got -1"),
        (2.0, None, "num_envs must be a positive int, got 2.0"),
        (0, [], "num_envs must be positive, got 0"),
        (1, [], "got 0 env creators for num_envs=1"),
    ],
)
def test_env_counts_no_buffers_hold_are_refused_before_any_env_is_made(
    backend: str, num_envs: Any, creators: list | None, message: str
) -> None:
    made = []

    def creator() -> gym.Env:
        made.append(1)
        return SeedEnv()

    with pytest.raises(BuffersError, match=message):
        pv.make(creator if creators is None else creators, num_envs=num_envs, backend=backend)
    assert not made


@pytest.mark.parametrize("backend", [pv.Serial, pv.Multiprocessing])
def test_backends_given_no_creators_refuse_them_the_same_way(backend: type) -> None:
    with pytest.raises(BuffersError, match="num_envs must be positive, got 0"):
        backend([])
