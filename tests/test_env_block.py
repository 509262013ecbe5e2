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
from pufferrs import Layout, PufferError, SpaceError, WorkerError


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


class Recorder(gym.Env):
    """Checks the actions it gets: each the type the env expects, and still
    intact a step later (a view of the shared action rows would have been
    rewritten by then)."""

    def __init__(self) -> None:
        self.observation_space = gs.Box(-1, 1, (2,), np.float32)
        self.action_space = gs.Dict(
            move=gs.Discrete(3, start=1),
            aim=gs.Box(-1, 1, (2,), np.float32),
            say=gs.Text(4, charset="ab"),
            pair=gs.Tuple((gs.MultiBinary(3), gs.Box(0, 9, (), np.int16))),
        )
        self.kept: Any = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> Any:
        if self.kept is not None:
            old, copy = self.kept
            assert old["say"] == copy["say"] and old["move"] == copy["move"]
            np.testing.assert_array_equal(old["aim"], copy["aim"])
            np.testing.assert_array_equal(old["pair"][0], copy["pair"][0])
        assert self.action_space.contains(action), action
        assert type(action["move"]) is int and type(action["say"]) is str
        assert isinstance(action["pair"], tuple) and action["pair"][1].shape == ()
        self.kept = (action, {**action, "aim": action["aim"].copy(), "pair": (action["pair"][0].copy(),)})
        return np.zeros(2, np.float32), 0.0, False, False, {"action": action}


def recorder_actions(k: int, batch: int) -> dict:
    return {
        "move": np.array([1 + (k + e) % 3 for e in range(batch)]),
        "aim": np.full((batch, 2), (k % 3) / 4 - 0.25, np.float32),
        "say": ["ab"[k % 2] * (1 + e % 4) for e in range(batch)],
        "pair": (np.array([[k % 2, 1, 0]] * batch, np.int8), np.full(batch, k % 10, np.int16)),
    }


@pytest.mark.parametrize(
    "backend, batch_size", [("serial", None), ("serial", 2), ("multiprocessing", None)], ids=["serial", "async", "mp"]
)
def test_envs_get_their_own_action_values(backend: str, batch_size: int | None) -> None:
    with pv.make(Recorder, num_envs=4, backend=backend, num_workers=2, batch_size=batch_size) as envs:
        envs.async_reset(seed=0)
        sent: dict[int, tuple[str, int]] = {}  # what each env was last sent
        checked = 0
        for k in range(8):
            *_, infos, env_ids, _ = envs.recv()
            for env, info in zip(env_ids.tolist(), infos):
                if "action" in info:
                    assert (info["action"]["say"], info["action"]["move"]) == sent[env]
                    checked += 1
            actions = recorder_actions(k, len(env_ids))
            for b, env in enumerate(env_ids.tolist()):
                sent[env] = (actions["say"][b], int(actions["move"][b]))
            envs.send(actions)
        assert checked == 8 * envs.batch_size - 4  # every step but the resets


@pytest.mark.parametrize(
    "space, bad, good",
    [
        (gs.Discrete(3), np.array([0, 3]), np.array([2, 1])),
        (
            gs.Box(-1, 1, (2,), np.float32),
            np.array([[0, 0], [0, 1.5]], np.float32),
            np.array([[0.5, -1], [1, 0.25]], np.float32),
        ),
        (gs.MultiDiscrete([2, 5]), np.array([[1, 4], [2, 0]]), np.array([[1, 4], [0, 3]])),
    ],
    ids=["discrete", "box-bounds", "multidiscrete"],
)
def test_refused_action_batches_say_what_flatten_says_and_change_nothing(
    space: gs.Space, bad: np.ndarray, good: np.ndarray
) -> None:
    with pytest.raises(SpaceError) as expected:
        Layout(space, name="action").flatten_batch(bad, check_bounds=True)

    def creator() -> gym.Env:
        env = Scripted(BOX, [(np.zeros((2, 3), np.float32), 1.0, False, False, {})])
        env.action_space = space
        return env

    with pv.make(creator, num_envs=2, check_bounds=True) as envs:
        envs.reset(seed=0)
        rows = envs._arrays["actions"].copy()
        with pytest.raises(SpaceError) as got:
            envs.send(bad)
        assert str(got.value) == str(expected.value)
        np.testing.assert_array_equal(envs._arrays["actions"], rows)
        envs.step(good)  # still usable, and the rows are what flatten writes
        np.testing.assert_array_equal(envs._arrays["actions"], Layout(space).flatten_batch(good).view(np.uint8))


def test_serial_keeps_its_bookkeeping_between_send_and_recv() -> None:
    steps = [(np.zeros((2, 3), np.float32), 1.0, False, False, {"k": 1})]
    with pv.make(lambda: Scripted(BOX, steps), num_envs=2) as envs:
        envs.reset(seed=0)
        envs.send(np.zeros(2, np.int64))
        with pytest.raises(PufferError, match="send"):
            envs.send(np.zeros(2, np.int64))
        with pytest.raises(PufferError, match="stepping"):
            envs.call_envs(lambda env, _: None)
        envs.async_reset(seed=1)  # the step's results are dropped
        assert envs.recv()[4] == [{}, {}]
        envs.send(np.zeros(2, np.int64))
        infos = envs.recv()[4]
        assert infos == [{"k": 1}, {"k": 1}]
        with pytest.raises(PufferError, match="twice"):
            envs.recv()
