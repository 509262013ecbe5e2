"""FlattenObservation: a gymnasium env whose observations are flat rows."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import gymnasium
import gymnasium.spaces as gs
import numpy as np
import pytest

from conftest import assert_tree_equal
from pufferrs import RowError
from pufferrs.emulation import FlattenObservation


class NestedEnv(gymnasium.Env):
    """Observations from a nested space, recorded so tests can compare."""

    def __init__(self) -> None:
        self.observation_space = gs.Dict(
            pos=gs.Box(-1, 1, (2,), np.float32),
            inv=gs.Dict(items=gs.MultiDiscrete([4, 4]), gold=gs.Discrete(10)),
            flags=gs.Tuple((gs.MultiBinary(3), gs.Discrete(2, start=1))),
        )
        self.action_space = gs.Discrete(2)
        self.sent: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.sent = [self.observation_space.sample()]
        return self.sent[-1], {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        self.sent.append(self.observation_space.sample())
        return self.sent[-1], 1.0, False, len(self.sent) > 3, {"action": action}


def test_observations_are_new_rows_that_later_calls_leave_alone() -> None:
    env = FlattenObservation(NestedEnv())
    assert env.observation_space == env.single_observation_space == env.layout.observation_space
    assert env.single_action_space == gs.Discrete(2)
    row, info = env.reset(seed=3)
    first = env.unwrapped.sent[-1]
    assert row.shape == env.observation_space.shape
    assert env.observation_space.contains(row)
    row2, reward, terminated, truncated, info = env.step(1)
    second = env.unwrapped.sent[-1]
    assert info == {"action": 1}
    env.reset(seed=4)
    env.step(0)
    assert_tree_equal(env.layout.unflatten(row), first)
    assert_tree_equal(env.layout.unflatten(row2), second)


def test_rows_land_in_a_buffer_of_the_callers() -> None:
    probe = FlattenObservation(NestedEnv())
    buffer = np.zeros((3, probe.layout.row_bytes), np.uint8)
    envs = [FlattenObservation(NestedEnv(), out=buffer[i]) for i in range(3)]
    for i, env in enumerate(envs):
        row, _ = env.reset(seed=i)
        assert row is env.out
    for i, env in enumerate(envs):
        assert_tree_equal(env.layout.unflatten(buffer[i]), env.unwrapped.sent[-1])


def test_a_buffer_that_cannot_hold_a_row_is_refused() -> None:
    env = FlattenObservation(NestedEnv(), out=np.zeros(3, np.uint8))
    with pytest.raises(RowError, match="holds 3 bytes"):
        env.reset(seed=0)


def test_demo_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pufferrs", "demo", "--quick"], capture_output=True, text=True, timeout=300, check=True
    )
    assert "bit-exact round trip: True" in result.stdout
    assert "flatten 1 obs" in result.stdout
