"""The Stable-Baselines3 adapter against SB3's own DummyVecEnv (same seeds
and actions, same observations, rewards, dones and infos), its env
methods, and SB3's PPO learning and running on it."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor  # noqa: E402

import pufferrs.envs  # noqa: E402
from pufferrs.compat import SB3VecEnv  # noqa: E402

BACKENDS = ["serial", "multiprocessing"]


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1", max_episode_steps=12)


def nested(length: int = 5) -> gym.Env:
    # Episodes of 3 steps terminate; those of 5 are truncated after 4.
    return gym.wrappers.TimeLimit(pufferrs.envs.Nested(length=length), max_episode_steps=4)


def flat_keys(obs: dict) -> dict:
    """The nested observation as the adapter hands it to SB3."""
    inv, query = obs["inventory"], obs["query"]
    return {
        "image": obs["image"],
        "vector": obs["vector"],
        "inventory/items": inv["items"],
        "inventory/gold": inv["gold"],
        "query/0": query[0],
        "query/1": query[1],
    }


def assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_match_dummy_vec_env(backend: str) -> None:
    ref = DummyVecEnv([cartpole] * 4)
    ours = SB3VecEnv([cartpole] * 4, backend=backend, num_workers=2)
    assert isinstance(ours, VecEnv)
    assert ours.observation_space == ref.observation_space and ours.action_space == ref.action_space
    ref.seed(11)
    ours.seed(11)
    np.testing.assert_array_equal(ref.reset(), ours.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for t in range(40):
        actions = rng.integers(0, 2, 4)
        obs, rewards, dones, infos = ours.step(actions)
        ref_obs, ref_rewards, ref_dones, ref_infos = ref.step(actions)
        np.testing.assert_array_equal(obs, ref_obs, err_msg=f"step {t}")
        np.testing.assert_array_equal(rewards, ref_rewards)
        np.testing.assert_array_equal(dones, ref_dones)
        assert dones.dtype == np.bool_
        for info, ref_info in zip(infos, ref_infos):
            assert_same(info, ref_info, f"step {t} info")
        ended += int(dones.sum())
    assert ended > 4
    ref.close()
    ours.close()


def test_terminal_observation_is_the_true_last_observation_of_a_dict_env() -> None:
    creators = [functools.partial(nested, 3), nested]
    envs = SB3VecEnv(creators, num_workers=2)
    solo = [creator() for creator in creators]
    envs.seed(3)
    obs = envs.reset()
    firsts = [solo[i].reset(seed=3 + i)[0] for i in range(2)]
    for i in range(2):
        assert_same({k: v[i] for k, v in obs.items()}, flat_keys(firsts[i]), "reset")
    truncated_seen = terminated_seen = False
    for t in range(12):
        actions = np.array([[t % 4, 1, 0], [3, t % 4, 1]])
        obs, rewards, dones, infos = envs.step(actions)
        for i in range(2):
            last, reward, terminated, truncated, _ = solo[i].step(actions[i])
            assert rewards[i] == np.float32(reward) and dones[i] == (terminated or truncated)
            assert infos[i]["TimeLimit.truncated"] == (truncated and not terminated)
            if dones[i]:
                truncated_seen |= truncated
                terminated_seen |= terminated
                assert_same(infos[i]["terminal_observation"], flat_keys(last), f"step {t} terminal_observation")
                last, _ = solo[i].reset()
            assert_same({k: v[i] for k, v in obs.items()}, flat_keys(last), f"step {t}")
    assert truncated_seen and terminated_seen
    envs.close()


class Counter(gym.Env):
    """An env with an attribute and a method to reach through the adapter."""

    observation_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.scale = 1.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = float(self.np_random.integers(5)) + (options or {}).get("offset", 0)
        return np.array([start], np.float32), {"options": options}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.array([self.scale], np.float32), 0.0, False, False, {}

    def times(self, k: float, plus: float = 0.0) -> float:
        return self.scale * k + plus


@pytest.mark.parametrize("backend", BACKENDS)
def test_env_methods_attributes_seeds_and_options(backend: str) -> None:
    """Each call on the adapter and on DummyVecEnv alike (SB3 sets
    attributes on the outermost wrapper, and so does the adapter)."""
    envs = SB3VecEnv([lambda: Monitor(Counter())] * 4, backend=backend, num_workers=2)
    ref = DummyVecEnv([lambda: Monitor(Counter())] * 4)

    def both(call: Any) -> Any:
        got, expected = call(envs), call(ref)
        assert_same(got, expected, "result") if got is not None else None
        return got

    assert both(lambda vec: vec.get_attr("scale")) == [1.0] * 4
    both(lambda vec: vec.set_attr("scale", 3.0, indices=[1, 3]))
    assert both(lambda vec: vec.get_attr("scale")) == [1.0, 3.0, 1.0, 3.0]
    assert both(lambda vec: vec.get_attr("scale", indices=2)) == [1.0]
    both(lambda vec: vec.env_method("times", 2.0, indices=[3, 0], plus=1.0))
    both(lambda vec: vec.env_method("set_wrapper_attr", "scale", 5.0, indices=[2]))
    assert both(lambda vec: vec.env_method("times", 1.0)) == [1.0, 1.0, 5.0, 1.0]
    assert both(lambda vec: vec.env_is_wrapped(Monitor)) == [True] * 4
    assert both(lambda vec: vec.env_is_wrapped(gym.wrappers.TimeLimit, indices=[0])) == [False]
    assert envs.has_attr("scale") and not envs.has_attr("no_such_attribute")
    both(lambda vec: vec.seed(1))
    both(lambda vec: vec.reset())
    both(lambda vec: vec.seed(20))
    both(lambda vec: vec.set_options({"offset": 100}))
    both(lambda vec: vec.reset())
    assert envs.reset_infos == ref.reset_infos == [{"options": {"offset": 100}}] * 4
    both(lambda vec: vec.reset())  # options apply once
    assert envs.reset_infos == ref.reset_infos
    both(lambda vec: vec.step(np.zeros(4, np.int64))[0])
    envs.close()
    envs.close()
    ref.close()


def test_asynchronous_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="SB3VecEnv steps every env: batch_size must be num_envs, got 1"):
        SB3VecEnv([cartpole] * 2, backend="serial", batch_size=1)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_sb3_ppo_learns_cartpole_on_multiprocessing() -> None:
    envs = VecMonitor(SB3VecEnv([lambda: gym.make("CartPole-v1")] * 8, backend="multiprocessing", num_workers=2))
    model = PPO(
        "MlpPolicy", envs, n_steps=256, batch_size=256, learning_rate=3e-3, gamma=0.98, ent_coef=0.0, seed=0, verbose=0
    )
    model.learn(30_000)
    returns = [episode["r"] for episode in model.ep_info_buffer]
    envs.close()
    # A random policy averages about 22.
    assert np.mean(returns[-20:]) > 150, returns[-20:]


def without_image() -> gym.Env:
    # SB3 sends uint8 images to a CNN that needs 36x36 pixels at least.
    return gym.wrappers.FilterObservation(pufferrs.envs.Nested(length=8), ["inventory", "query", "vector"])


@pytest.mark.usefixtures("one_torch_thread")
def test_sb3_multi_input_policy_runs_on_a_nested_dict_env() -> None:
    envs = SB3VecEnv([without_image] * 4, num_workers=2)
    assert isinstance(envs.observation_space, gym.spaces.Dict)
    expected = {key for key in flat_keys(pufferrs.envs.Nested().reset(seed=0)[0]) if key != "image"}
    assert set(envs.observation_space) == expected
    model = PPO("MultiInputPolicy", envs, n_steps=32, batch_size=64, n_epochs=1, seed=0, verbose=0)
    model.learn(256)
    actions, _ = model.predict(envs.reset())
    assert actions.shape == (4, 3)
    envs.close()
