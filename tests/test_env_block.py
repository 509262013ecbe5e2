"""The Rust stepper of a vector env's envs (``EnvBlock``, behind
``Runner``): rows as ``Layout.flatten`` writes them whichever path it takes,
episode statistics, and step results that do not fit named in the error."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest

import pufferrs.vector as pv
from pufferrs import Layout, WorkerError


class Scripted(gym.Env):
    """Starts from zeros and returns the step results it is given, in turn."""

    def __init__(self, space: gs.Box, results: list[Any]) -> None:
        self.observation_space, self.action_space = space, gs.Discrete(2)
        self.results = results

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.k = 0
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), {}

    def step(self, action: int) -> Any:
        self.k += 1
        return self.results[(self.k - 1) % len(self.results)]


BOX = gs.Box(-1, 1, (2, 3), np.float32)


@pytest.mark.parametrize(
    "obs",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),  # exactly the leaf: copied as it is
        np.arange(6, dtype=np.float64).reshape(2, 3),  # cast to float32
        np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2],  # a strided view
        [[0, 1, 2], [3, 4, 5]],  # a nested list
    ],
    ids=["exact", "float64", "strided", "list"],
)
def test_rows_are_what_flatten_writes_whatever_the_observation(obs: Any) -> None:
    expected = Layout(BOX).flatten(obs)
    with pv.make(lambda: Scripted(BOX, [(obs, 1.0, False, False, {})]), num_envs=2) as envs:
        envs.reset(seed=0)
        rows = envs.step(np.zeros(2, np.int64))[0]
        np.testing.assert_array_equal(rows, np.stack([expected, expected]))


def test_episode_statistics_sum_rewards_in_float64() -> None:
    obs = np.zeros((2, 3), np.float32)
    steps = [(obs, np.float32(0.1), False, False, {}), (obs, 0.2, False, True, {"k": 2})]
    with pv.make(lambda: Scripted(BOX, steps), num_envs=1) as envs:
        envs.reset(seed=0)
        infos = [envs.step(np.zeros(1, np.int64))[4][0] for _ in range(2)]
    assert infos[0] == {}
    assert infos[1]["episode_length"] == 2 and infos[1]["final_info"] == {"k": 2}
    assert infos[1]["episode_return"] == float(np.float32(0.1)) + 0.2


@pytest.mark.parametrize(
    "result, message",
    [
        (
            (np.zeros((2, 3), np.float32), 1.0, False, False),
            r"env.step\(\): expected a tuple .* got a tuple of 4 items",
        ),
        ([np.zeros((2, 3), np.float32), 1.0, False, False, {}], r"env.step\(\): expected a tuple .* got list"),
        ((np.zeros((2, 3), np.float32), None, False, False, {}), "reward: expected a number, got NoneType"),
        ((np.zeros((2, 4), np.float32), 1.0, False, False, {}), r"obs: expected shape \(2, 3\), got \(2, 4\)"),
    ],
    ids=["four-items", "list", "no-reward", "bad-obs"],
)
def test_step_results_that_do_not_fit_name_what_is_wrong(result: Any, message: str) -> None:
    with pv.make(lambda: Scripted(BOX, [result]), num_envs=2) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError, match=message) as caught:
            envs.step(np.zeros(2, np.int64))
        assert caught.value.env == 0
