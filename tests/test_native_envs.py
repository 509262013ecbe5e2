"""Envs written in Rust (``pufferrs-envs``): CartPole's dynamics equal
gymnasium's, the spaces declared in Rust are the gymnasium spaces Python
sees, every leaf of a nested observation reaches Python where its reward
says it is, multi-agent envs mask and end their agents, every backend and
thread count writes the same bytes, a panic is a ``WorkerError`` naming
its env, and ``pufferrs train`` runs them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import pufferrs.envs  # noqa: F401 - registers the built-in envs
import pufferrs.vector as pv
from pufferrs import _native
from pufferrs.errors import BuffersError, ConfigError, WorkerError
from pufferrs.native import NATIVE_ENVS, NativeEnv
from pufferrs.spaces import Layout
from pufferrs.vector.arguments import checked_env

CARTPOLE, NESTED, RENDEZVOUS = "pufferrs/CartPole-rs", "pufferrs/Nested-rs", "pufferrs/Rendezvous-rs"


def make(env_id: str, num_envs: int, **kwargs: Any) -> Any:
    return pv.make(lambda: gym.make(env_id), num_envs=num_envs, **kwargs)


def test_cartpole_steps_as_gymnasium_does_on_long_random_trajectories() -> None:
    """From gymnasium's own state and action, the next state equals
    gymnasium's to float rounding and the float32 observation and the
    termination are the same, over episodes to their ends."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, ends = 0, 0
    while steps < 4000:
        state = np.array(env.unwrapped.state, np.float64)
        action = int(rng.integers(2))
        ours, terminated = _native.cartpole_dynamics(state.tolist(), action)
        obs, reward, gym_terminated, _, _ = env.step(action)
        theirs = np.asarray(env.unwrapped.state, np.float64)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(np.asarray(ours, np.float32), obs)
        assert (terminated, reward) == (gym_terminated, 1.0)
        steps += 1
        if terminated:
            ends += 1
            env.reset(seed=int(rng.integers(1 << 30)))
    assert ends > 100


def test_spaces_declared_in_rust_are_gymnasiums_and_lay_out_the_same() -> None:
    cartpole = gym.make(CARTPOLE)
    reference = gym.make("CartPole-v1")
    assert type(cartpole) is NativeEnv  # registered unwrapped: vector envs step it natively
    assert cartpole.observation_space == reference.observation_space
    assert cartpole.action_space == reference.action_space
    nested = NativeEnv(NESTED).observation_space
    assert list(nested.spaces) == ["grid", "image", "pair", "word"]
    assert isinstance(nested["word"], gym.spaces.Text) and nested["grid"].shape == (4, 4)
    rendezvous = NativeEnv(RENDEZVOUS)
    assert rendezvous.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert rendezvous.observation_space["action_mask"] == gym.spaces.MultiBinary(4)
    assert set(NATIVE_ENVS) == {CARTPOLE, NESTED, RENDEZVOUS}
    with pytest.raises(ConfigError, match="'nope' is not a native env; the native envs are pufferrs/CartPole-rs"):
        NativeEnv("nope")


def test_a_native_env_also_steps_alone_as_a_gymnasium_env() -> None:
    env = NativeEnv(NESTED)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    again, _ = NativeEnv(NESTED).reset(seed=3)
    np.testing.assert_array_equal(obs["image"], again["image"])
    assert obs["word"] == again["word"]
    for _ in range(16):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and 0 <= reward <= 1
    assert terminated and not truncated


def nested_answer(layout: Layout, obs: dict) -> np.ndarray:
    """The right action, read from the unflattened leaves."""
    image = obs["image"].max(axis=0)
    quadrant = int(np.argmax([image[:4, :4].min(), image[:4, 4:].min(), image[4:, :4].min(), image[4:, 4:].min()]))
    r = int(obs["pair"][0])
    word = layout.decode_text(("word",), obs["word"])
    return np.array([quadrant, obs["grid"][r, r], int(obs["pair"][1].sum() > 0), "abcd".index(word[-1])])


def test_every_leaf_of_a_nested_observation_is_where_its_reward_says() -> None:
    """The answer read from each leaf in Python scores 1; one wrong
    answer scores 0.75: a leaf written at a wrong offset, dtype or shape
    by the env, or read wrong here, could not score 1 step after step."""
    with make(NESTED, 4, threads=2) as envs:
        obs, _ = envs.reset(seed=1)
        for step in range(40):
            answers = np.stack([nested_answer(envs.layout, envs.layout.unflatten(row)) for row in obs])
            wrong = step % 4
            answers[0, wrong] = (answers[0, wrong] + 1) % (2 if wrong == 2 else 4)
            obs, rewards, terminals, _, infos = envs.step(answers)
            np.testing.assert_array_equal(rewards, [0.75, 1.0, 1.0, 1.0])
        assert terminals.any() or any("episode_return" in info for info in infos) or step == 39


def test_rendezvous_masks_agents_that_left_and_its_mask_never_hides_the_target() -> None:
    with make(RENDEZVOUS, 8, threads=2) as envs:
        obs, _ = envs.reset(seed=2)
        masks = envs.buffers.array("masks").copy()
        rows = envs.layout.unflatten(obs)
        scored = left = resets = 0
        for _ in range(200):
            cue = rows["cue"]
            slot = np.tile(np.arange(3), 8)
            target = (np.argmax(cue[:, 3:], axis=1) - slot) % 4
            legal = rows["action_mask"][np.arange(24), target]
            assert legal[masks].all(), "the target is always legal"
            obs, rewards, terminals, truncations, infos = envs.step(target)
            rows = envs.layout.unflatten(obs)
            assert (rewards[masks] == 1).all() and (rewards[~masks] == 0).all()
            scored += int(rewards.sum())
            left += int(terminals.sum())
            resets += sum("env_episode_return" in info for info in infos)
            ended = terminals | truncations
            assert (ended <= masks).all(), "only an agent that acted ends"
            new_masks = envs.buffers.array("masks").copy()
            for k in np.flatnonzero(ended & ~new_masks):
                assert infos[k]["final_obs"].any() and not obs[k].any()
            masks = new_masks
        assert left > 5 and resets > 20 and scored > 1000


@pytest.mark.parametrize("env_id", [CARTPOLE, NESTED, RENDEZVOUS])
def test_every_backend_thread_count_and_batch_writes_the_same_bytes(env_id: str) -> None:
    """Each row's own history (its observations, rewards, flags, masks,
    returns), with actions that depend only on the row and its step, is
    the same whatever steps it: Serial on 1 or 3 threads, or two worker
    processes, synchronous or half the envs per recv."""

    def run(**kwargs: Any) -> dict[int, list]:
        history: dict[int, list] = {}
        with make(env_id, 4, **kwargs) as envs:
            sample = envs.single_action_space.sample()
            envs.async_reset(seed=5)
            rows = envs.num_agents
            # Until every row has 30 steps: with asynchronous batches a worker
            # that started late may be received only after many of another's.
            for _ in range(5000):
                if len(history) == rows and min(map(len, history.values())) >= 30:
                    break
                obs, rewards, terminals, truncations, infos, row_ids, masks = envs.recv()
                actions = []
                for k, row in enumerate(row_ids.tolist()):
                    seen = history.setdefault(row, [])
                    ended = infos[k].get("episode_return")
                    seen.append((obs[k].tobytes(), rewards[k], terminals[k], truncations[k], masks[k], ended))
                    actions.append(sample * 0 + (row * 7 + len(seen) * 3) % 2)
                envs.send(np.stack(actions))
        return {row: seen[:30] for row, seen in history.items()}

    serial = run(threads=1)
    assert len(serial) == 4 * (3 if env_id == RENDEZVOUS else 1)
    assert run(threads=3) == serial
    assert run(backend="multiprocessing", num_workers=2) == serial
    assert run(backend="multiprocessing", num_workers=2, batch_size=2) == serial


def test_a_panic_in_a_native_env_is_a_worker_error_naming_it() -> None:
    with pv.make(lambda: NativeEnv("pufferrs/Panics-rs"), num_envs=3, threads=2) as envs:
        envs.reset(seed=0)
        for _ in range(2):
            envs.step(np.zeros(3, np.int64))
        with pytest.raises(WorkerError, match=r"env 0 raised RuntimeError: panicked: Panics-rs panics at step 3"):
            envs.step(np.zeros(3, np.int64))
    with pv.make(lambda: NativeEnv("pufferrs/Panics-rs"), num_envs=2, backend="multiprocessing") as envs:
        envs.reset(seed=0)
        for _ in range(2):
            envs.step(np.zeros(2, np.int64))
        with pytest.raises(
            WorkerError,
            match=r"(?s)worker ([01]) \(env \1\): env \1 raised:.*RuntimeError: panicked: Panics-rs panics at step 3",
        ):
            envs.step(np.zeros(2, np.int64))


def test_a_block_refuses_envs_it_cannot_step() -> None:
    env = NativeEnv(CARTPOLE)
    env.reset(seed=0)  # its Rust env now steps in its own block
    with pytest.raises(BuffersError, match=r"env 0 \(pufferrs/CartPole-rs\) is already stepped by a block"):
        pv.make(lambda: env, num_envs=1)
    other = Layout(gym.spaces.Box(0, 1, (5,), np.float32))
    buffers = _native.RolloutBuffers(1, None, other.row_bytes, 8, None, 1)
    arrays = {name: buffers.array(name) for name in pv.Serial._ARRAYS}
    with pytest.raises(BuffersError, match="observation layout .* is not the one pufferrs/CartPole-rs was built for"):
        _native.NativeBlock([NativeEnv(CARTPOLE).handle], 0, arrays, other, Layout(gym.spaces.Discrete(2)))


def test_the_ray_backend_refuses_a_multi_agent_native_env() -> None:
    """Ray's actors answer one row per env; the check Ray's backend makes
    of its probe env (``checked_env``) refuses an env of several agents."""
    with pytest.raises(TypeError, match=r"the Ray backend runs envs of one agent only, got NativeEnv\('pufferrs/"):
        checked_env(NativeEnv(RENDEZVOUS), backend="Ray")
    assert checked_env(NativeEnv(CARTPOLE), backend="Ray").env_id == CARTPOLE
