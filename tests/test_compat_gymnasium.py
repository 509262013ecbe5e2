"""The gymnasium adapter against gymnasium's own SyncVectorEnv: the same
seeds and actions give the same observations, rewards, flags, infos and
final observations in every autoreset mode, with gymnasium's vector
wrappers on top, and a CleanRL-style PPO loop learns CartPole through it."""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import vector as vector_wrappers

import pufferrs.envs  # noqa: F401 - registers pufferrs/Nested-v0
from pufferrs import PufferError
from pufferrs.compat import GymnasiumVectorEnv

BACKENDS = ["serial", "multiprocessing"]


def cartpole() -> gym.Env:
    # Short episodes: many ends, terminations and truncations alike.
    return gym.make("CartPole-v1", max_episode_steps=12)


def nested(length: int = 5) -> gym.Env:
    # Episodes of 3 steps terminate; those of 5 are truncated after 4.
    return gym.wrappers.TimeLimit(pufferrs.envs.Nested(length=length), max_episode_steps=4)


#: Two envs whose episodes terminate, two whose episodes are truncated.
NESTED = [functools.partial(nested, 3), nested] * 2


class Renders(gym.Env):
    """An env with attributes and a frame to read back."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode: str | None = "rgb_array") -> None:
        self.render_mode = render_mode
        self.speed = 1.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.last_options = options
        return np.zeros(2, np.float32), {"seed": -1 if seed is None else seed}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.full(2, self.speed, np.float32), float(action), False, False, {}

    def render(self) -> np.ndarray:
        return np.full((2, 2, 3), int(self.speed), np.uint8)

    def scaled(self, factor: float) -> float:
        return self.speed * factor


def assert_same(a: Any, b: Any, where: str) -> None:
    """Equal trees of arrays (dicts of infos included), dtypes aside, except
    the wall-clock time of RecordEpisodeStatistics."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            if not (where.endswith("['episode']") and key == "t"):  # wall-clock time
                assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert b.dtype == object and a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            assert (x is None) == (y is None), f"{where}[{i}]"
            if x is not None:
                assert_same(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def run_both(creator: Any, mode: AutoresetMode, backend: str, steps: int = 40, wrap: Any = None) -> None:
    """Steps SyncVectorEnv and the adapter side by side (4 envs of
    ``creator``, or its list), resetting ended envs by mask in DISABLED
    mode, and compares everything they return."""
    fns = list(creator) if isinstance(creator, list) else [creator] * 4
    ref = SyncVectorEnv(fns, autoreset_mode=mode)
    ours = GymnasiumVectorEnv(fns, backend=backend, autoreset_mode=mode, num_workers=2)
    if wrap is not None:
        ref, ours = wrap(ref), wrap(ours)
    try:
        assert_same(ref.reset(seed=7), ours.reset(seed=7), "reset")
        ref.action_space.seed(3)
        for t in range(steps):
            actions = ref.action_space.sample()
            expected, got = ref.step(actions), ours.step(actions)
            assert got[1].dtype == np.float64 and got[2].dtype == got[3].dtype == np.bool_
            # The rows hold rewards as float32.
            expected = (expected[0], expected[1].astype(np.float32), *expected[2:])
            assert_same(expected, (got[0], got[1].astype(np.float32), *got[2:]), f"step {t}")
            if mode == AutoresetMode.DISABLED and (expected[2] | expected[3]).any():
                mask = expected[2] | expected[3]
                assert_same(
                    ref.reset(options={"reset_mask": mask}), ours.reset(options={"reset_mask": mask}), f"mask {t}"
                )
    finally:
        ref.close()
        ours.close()


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("backend", BACKENDS)
def test_autoreset_modes_match_sync_vector_env(mode: AutoresetMode, backend: str) -> None:
    run_both(cartpole, mode, backend)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_nested_dict_env_matches_sync_vector_env(mode: AutoresetMode) -> None:
    run_both(NESTED, mode, "multiprocessing", steps=20)


def test_same_step_hands_out_final_observations() -> None:
    with GymnasiumVectorEnv([cartpole] * 2, backend="serial", autoreset_mode=AutoresetMode.SAME_STEP) as envs:
        envs.reset(seed=0)
        for _ in range(12):
            _, _, terminated, truncated, infos = envs.step(np.zeros(2, np.int64))
            if (terminated | truncated).any():
                break
        ended = terminated | truncated
        np.testing.assert_array_equal(infos["_final_obs"], ended)
        for i in np.flatnonzero(ended):
            assert envs.single_observation_space.contains(infos["final_obs"][i])


def statistics_and_normalisation(envs: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    if envs.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:  # which gymnasium refuses here
        envs = vector_wrappers.NormalizeObservation(envs)
    envs = vector_wrappers.NormalizeReward(envs)
    envs = vector_wrappers.ClipAction(envs) if isinstance(envs.action_space, gym.spaces.Box) else envs
    return vector_wrappers.TransformReward(envs, lambda r: 2 * r)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_gymnasium_vector_wrappers_stack_on_top(mode: AutoresetMode) -> None:
    # RecordEpisodeStatistics reads the autoreset mode from the metadata:
    # its "episode" infos match only if the adapter declares it right.
    run_both(cartpole, mode, "multiprocessing", steps=30, wrap=statistics_and_normalisation)


def test_observation_wrappers_on_nested_observations() -> None:
    run_both(NESTED, AutoresetMode.NEXT_STEP, "serial", steps=10, wrap=vector_wrappers.FlattenObservation)


def test_spaces_metadata_and_copies() -> None:
    with GymnasiumVectorEnv([nested] * 3, backend="serial") as envs:
        assert isinstance(envs, gym.vector.VectorEnv)
        assert envs.num_envs == 3
        assert envs.single_observation_space == nested().observation_space
        assert envs.observation_space == gym.vector.utils.batch_space(envs.single_observation_space, 3)
        assert envs.action_space == gym.vector.utils.batch_space(envs.single_action_space, 3)
        assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        obs, _ = envs.reset(seed=1)
        assert envs.observation_space.contains(obs)
        kept = obs["inventory"]["items"].copy()
        envs.step(envs.action_space.sample())
        np.testing.assert_array_equal(obs["inventory"]["items"], kept)  # a copy: not overwritten


def test_views_are_zero_copy_and_overwritten_by_the_next_step() -> None:
    with GymnasiumVectorEnv([nested] * 3, backend="serial", copy=False) as envs:
        obs, _ = envs.reset(seed=1)
        image = obs["image"]
        assert not image.flags.owndata
        before = image.copy()
        next_obs, *_ = envs.step(envs.action_space.sample())
        assert np.shares_memory(next_obs["image"], image)
        assert not np.array_equal(image, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_call_get_attr_set_attr_and_render(backend: str) -> None:
    with GymnasiumVectorEnv([Renders] * 4, backend=backend, num_workers=2) as envs:
        envs.reset(seed=0)
        assert envs.render_mode == "rgb_array"
        assert envs.get_attr("speed") == (1.0,) * 4
        envs.set_attr("speed", [1.0, 2.0, 3.0, 4.0])
        assert envs.call("scaled", 10) == (10.0, 20.0, 30.0, 40.0)
        assert envs.call("scaled", factor=0.5) == (0.5, 1.0, 1.5, 2.0)
        envs.set_attr("speed", 5.0)
        frames = envs.render()
        assert len(frames) == 4 and all(frame.shape == (2, 2, 3) and frame[0, 0, 0] == 5 for frame in frames)
        obs, *_ = envs.step(np.ones(4, np.int64))
        np.testing.assert_array_equal(obs, np.full((4, 2), 5.0, np.float32))
        with pytest.raises(AttributeError):
            envs.get_attr("no_such_attribute")
        # The envs are still usable after an error in a call.
        envs.step(np.ones(4, np.int64))
        with pytest.raises(ValueError, match="length equal to the number of environments"):
            envs.set_attr("speed", [1.0, 2.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_with_seed_lists_options_and_masks(backend: str) -> None:
    with GymnasiumVectorEnv([Renders] * 4, backend=backend, num_workers=2) as envs:
        _, infos = envs.reset(seed=[5, None, 7, None], options={"level": 2})
        np.testing.assert_array_equal(infos["seed"], [5, -1, 7, -1])
        assert envs.get_attr("last_options") == ({"level": 2},) * 4
        envs.step(np.ones(4, np.int64))
        obs, infos = envs.reset(seed=3, options={"reset_mask": np.array([False, True, False, True])})
        np.testing.assert_array_equal(infos["_seed"], [False, True, False, True])
        np.testing.assert_array_equal(infos["seed"][[1, 3]], [4, 6])
        np.testing.assert_array_equal(obs[:, 0], [1.0, 0.0, 1.0, 0.0])
        with pytest.raises(ValueError, match="at least one True"):
            envs.reset(options={"reset_mask": np.zeros(4, bool)})
        with pytest.raises(ValueError, match="length must match num_envs"):
            envs.reset(seed=[1, 2])


def test_disabled_autoreset_refuses_to_step_an_ended_env() -> None:
    with GymnasiumVectorEnv([cartpole] * 2, backend="serial", autoreset_mode=AutoresetMode.DISABLED) as envs:
        envs.reset(seed=0)
        ended = np.zeros(2, bool)
        while not ended.any():
            _, _, terminated, truncated, _ = envs.step(np.zeros(2, np.int64))
            ended = terminated | truncated
        with pytest.raises(PufferError, match="reset_mask"):
            envs.step(np.zeros(2, np.int64))
        envs.reset(options={"reset_mask": ended})
        envs.step(np.zeros(2, np.int64))


def test_asynchronous_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be num_envs"):
        GymnasiumVectorEnv([cartpole] * 2, backend="serial", batch_size=1)


def test_closed_env_refuses_calls() -> None:
    envs = GymnasiumVectorEnv([cartpole] * 2, backend="serial")
    envs.close()
    envs.close()
    with pytest.raises(PufferError, match="closed"):
        envs.reset()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_cleanrl_style_ppo_learns_cartpole() -> None:
    """CleanRL's ppo.py in miniature, written against gymnasium's vector
    API only (RecordEpisodeStatistics for returns, NEXT_STEP autoreset):
    the adapter is a drop-in for AsyncVectorEnv."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    num_envs, num_steps, updates = 8, 128, 30
    envs = vector_wrappers.RecordEpisodeStatistics(
        GymnasiumVectorEnv([lambda: gym.make("CartPole-v1")] * num_envs, num_workers=2)
    )

    def layer(i: int, o: int, std: float = 2**0.5) -> nn.Linear:
        linear = nn.Linear(i, o)
        nn.init.orthogonal_(linear.weight, std)
        nn.init.zeros_(linear.bias)
        return linear

    actor = nn.Sequential(layer(4, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 2, 0.01))
    critic = nn.Sequential(layer(4, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=2.5e-3, eps=1e-5)
    obs_buf = torch.zeros(num_steps, num_envs, 4)
    act_buf, logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(num_steps, num_envs) for _ in range(5))
    returns: list[float] = []
    next_obs = torch.tensor(envs.reset(seed=1)[0])
    next_done = torch.zeros(num_envs)
    for _ in range(updates):
        for step in range(num_steps):
            obs_buf[step], done_buf[step] = next_obs, next_done
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=actor(next_obs))
                action = dist.sample()
                val_buf[step] = critic(next_obs).flatten()
            act_buf[step], logp_buf[step] = action, dist.log_prob(action)
            obs, reward, terminated, truncated, infos = envs.step(action.numpy())
            rew_buf[step] = torch.tensor(reward)
            next_obs, next_done = torch.tensor(obs), torch.tensor(terminated | truncated, dtype=torch.float32)
            if "episode" in infos:
                returns += infos["episode"]["r"][infos["_episode"]].tolist()
        with torch.no_grad():
            advantages, last = torch.zeros_like(rew_buf), 0.0
            next_value = critic(next_obs).flatten()
            for t in reversed(range(num_steps)):
                nonterminal = 1.0 - (next_done if t == num_steps - 1 else done_buf[t + 1])
                value_next = next_value if t == num_steps - 1 else val_buf[t + 1]
                delta = rew_buf[t] + 0.99 * value_next * nonterminal - val_buf[t]
                advantages[t] = last = delta + 0.99 * 0.95 * nonterminal * last
            targets = advantages + val_buf
        b_obs, b_act, b_logp = obs_buf.reshape(-1, 4), act_buf.flatten(), logp_buf.flatten()
        b_adv, b_ret = advantages.flatten(), targets.flatten()
        for _ in range(4):
            for idx in torch.randperm(num_steps * num_envs).split(256):
                dist = torch.distributions.Categorical(logits=actor(b_obs[idx]))
                ratio = (dist.log_prob(b_act[idx]) - b_logp[idx]).exp()
                adv = (b_adv[idx] - b_adv[idx].mean()) / (b_adv[idx].std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
                value_loss = 0.5 * ((critic(b_obs[idx]).flatten() - b_ret[idx]) ** 2).mean()
                optimizer.zero_grad()
                (policy_loss + 0.5 * value_loss - 0.01 * dist.entropy().mean()).backward()
                nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters()], 0.5)
                optimizer.step()
    envs.close()
    # A random policy averages about 22; learning shows in the last episodes.
    assert np.mean(returns[-20:]) > 150, returns[-20:]


def test_importing_pufferrs_imports_neither_ray_nor_stable_baselines3() -> None:
    code = (
        "import sys, pufferrs, pufferrs.vector, pufferrs.compat; "
        "print(sorted({'ray', 'stable_baselines3'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
