"""Envs that step all their rows at once (pufferrs.vector.inplace):
gymnasium's vector entry points, EnvPool, and PufferLib's in-place contract,
on the Serial and Multiprocessing backends, against the same envs stepped
by hand; the trainer and ``--vectorization`` on them."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pufferrs.envs  # noqa: F401 - registers pufferrs/Nested-v0
import pufferrs.vector
from pufferrs import Layout
from pufferrs.config import Config
from pufferrs.errors import ConfigError, UnsupportedSpaceError, WorkerError
from pufferrs.vector.arguments import checked_env


def cartpole_vec(size: int, steps: int = 500) -> Any:
    """gymnasium's numpy CartPoleVectorEnv (next-step autoreset)."""
    return gym.make_vec("CartPole-v1", size, vectorization_mode="vector_entry_point", max_episode_steps=steps)


def cartpole_same_step(size: int, steps: int = 500) -> Any:
    """A SyncVectorEnv of CartPoles with same-step autoreset."""
    return gym.make_vec(
        "CartPole-v1",
        size,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        max_episode_steps=steps,
    )


def by_hand(make: Any, num_envs: int, size: int, seed: int | None, actions: np.ndarray, next_step: bool) -> dict:
    """What pufferrs should report, from ``num_envs`` vector envs stepped
    by hand: per step the rows' observations and masks (a next-step env's
    row is zero and masked for the step after its episode ends), and per
    (step, row) the episodes that ended: return, length, last observation,
    flags. ``seed`` None: the envs are seeded when made (EnvPool)."""
    rows = num_envs * size
    probe = make()
    layout = Layout(probe.single_observation_space)
    probe.close()
    obs_rows = np.zeros((len(actions), rows, layout.row_bytes), np.uint8)
    masks = np.ones((len(actions), rows), bool)
    ends: dict[tuple[int, int], tuple] = {}
    for e in range(num_envs):
        env = make()
        env.reset(seed=None if seed is None else seed + e * size)
        returns, lengths = np.zeros(size), np.zeros(size, int)
        waiting = np.zeros(size, bool)
        span = slice(e * size, (e + 1) * size)
        for t, step_actions in enumerate(actions):
            obs, rewards, terminals, truncations, info = env.step(step_actions[span])
            returns += np.where(waiting, 0.0, rewards.astype(np.float64))
            lengths += ~waiting
            done = terminals | truncations
            flat = layout.flatten_batch(obs).view(np.uint8)
            for j in np.flatnonzero(done):
                last = flat[j] if next_step else layout.flatten(info["final_obs"][j]).view(np.uint8)
                ends[(t, e * size + j)] = (returns[j], lengths[j], last.copy(), terminals[j], truncations[j])
            returns[done], lengths[done] = 0.0, 0
            if next_step:
                flat[done] = 0
                masks[t, span] = ~done
                waiting = done
            obs_rows[t, span] = flat
        env.close()
    return {"obs": obs_rows, "masks": masks, "ends": ends}


def check_against_hand(envs: Any, expected: dict, actions: np.ndarray) -> int:
    """Steps ``envs`` on ``actions`` and compares every step with
    ``expected`` (``by_hand``), bit for bit; returns the episodes seen."""
    envs.reset()
    seen = 0
    for t, step_actions in enumerate(actions):
        envs.send(step_actions)
        obs, rewards, terminals, truncations, infos, row_ids, masks = envs.recv()
        np.testing.assert_array_equal(row_ids, np.arange(len(step_actions)))
        np.testing.assert_array_equal(obs.view(np.uint8), expected["obs"][t], err_msg=f"step {t}")
        np.testing.assert_array_equal(masks, expected["masks"][t], err_msg=f"step {t}")
        for row, info in enumerate(infos):
            end = expected["ends"].get((t, row))
            if end is None:
                assert "episode_return" not in info, (t, row, info)
                assert not terminals[row] and not truncations[row]
                continue
            episode_return, length, last, terminal, truncated = end
            assert info["episode_return"] == episode_return, (t, row)
            assert info["episode_length"] == length, (t, row)
            np.testing.assert_array_equal(info["final_obs"].view(np.uint8), last)
            assert (terminals[row], truncations[row]) == (terminal, truncated)
            seen += 1
    return seen


@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**32),
    num_envs=st.integers(1, 3),
    size=st.integers(1, 5),
    steps=st.integers(5, 30),
)
def test_vector_entry_point_returns_equal_the_envs_stepped_by_hand(
    seed: int, num_envs: int, size: int, steps: int
) -> None:
    make = functools.partial(cartpole_vec, size, steps)
    actions = np.random.default_rng(seed).integers(0, 2, (40, num_envs * size))
    expected = by_hand(make, num_envs, size, seed, actions, next_step=True)
    with pufferrs.vector.make(make, num_envs=num_envs, seed=seed) as envs:
        assert (envs.num_agents, envs.agents_per_env, envs.possible_agents) == (num_envs * size, size, None)
        check_against_hand(envs, expected, actions)


def test_multiprocessing_and_async_batches_equal_serial() -> None:
    make = functools.partial(cartpole_vec, 4, 25)
    actions = np.random.default_rng(3).integers(0, 2, (80, 8))
    expected = by_hand(make, 2, 4, 7, actions, next_step=True)
    with pufferrs.vector.make(make, num_envs=2, backend="multiprocessing", num_workers=2, seed=7) as envs:
        # Terminations and truncations (25 steps) both happen.
        assert check_against_hand(envs, expected, actions) > 10
        assert any(e[4] for e in expected["ends"].values()) and any(e[3] for e in expected["ends"].values())
    # Serial in batches of one vector env: each recv is one env's rows.
    with pufferrs.vector.make(make, num_envs=2, batch_size=1, seed=7) as envs:
        envs.async_reset()
        for t in range(6):
            for e in range(2):
                obs, _, _, _, _, row_ids, masks = envs.recv()
                np.testing.assert_array_equal(row_ids, np.arange(e * 4, e * 4 + 4))
                if t:
                    np.testing.assert_array_equal(obs.view(np.uint8), expected["obs"][t - 1][row_ids])
                envs.send(actions[t][row_ids])
        envs.recv()


def test_same_step_vector_env_keeps_its_final_observations() -> None:
    make = functools.partial(cartpole_same_step, 3, 10)
    actions = np.random.default_rng(5).integers(0, 2, (30, 6))
    expected = by_hand(make, 2, 3, 11, actions, next_step=False)
    with pufferrs.vector.make(make, num_envs=2, seed=11) as envs:
        assert check_against_hand(envs, expected, actions) >= 6
    assert expected["masks"].all()


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_nested_observations_of_a_vector_env(mode: str) -> None:
    """A SyncVectorEnv of pufferrs/Nested-v0 (a Dict of an image, a
    vector, a nested Dict and a Tuple): batches of nested observations go
    into the rows, and final rows are the last observations, in both
    autoreset modes."""
    make = functools.partial(
        gym.make_vec, "pufferrs/Nested-v0", 3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    space = make().single_action_space
    space.seed(0)
    actions = np.stack([np.stack([space.sample() for _ in range(6)]) for _ in range(40)])
    expected = by_hand(make, 2, 3, 5, actions, next_step=mode == "NextStep")
    with pufferrs.vector.make(make, num_envs=2, seed=5) as envs:
        assert check_against_hand(envs, expected, actions) >= 6


def test_vector_env_that_resets_nothing_itself_is_refused() -> None:
    def disabled() -> Any:
        return gym.make_vec("CartPole-v1", 2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": "Disabled"})

    with pytest.raises(UnsupportedSpaceError, match="autoreset mode DISABLED"):
        pufferrs.vector.make(disabled, num_envs=1)


class ShortRewards(gym.vector.VectorWrapper):
    """A vector env that returns one reward too few."""

    def step(self, actions: Any) -> Any:
        obs, rewards, terminals, truncations, info = self.env.step(actions)
        return obs, rewards[:-1], terminals, truncations, info


def test_bad_outcomes_name_what_was_wrong() -> None:
    with pufferrs.vector.make(lambda: ShortRewards(cartpole_vec(3)), num_envs=2) as envs:
        envs.reset()
        with pytest.raises(WorkerError, match=r"env 0 raised .*rewards: expected one value per row \(3\), got 2"):
            envs.step(np.zeros(6, np.int64))
    with pufferrs.vector.make(lambda: cartpole_vec(3), num_envs=1) as envs:
        envs.reset()
        with pytest.raises(Exception, match="expected a batch of 3 actions"):
            envs.step(np.zeros(2, np.int64))
        envs.step(np.zeros(3, np.int64))  # nothing was sent: the envs go on
    with pytest.raises(TypeError, match="Ray backend runs gymnasium envs only"):
        checked_env(cartpole_vec(2), backend="Ray")


class Counters:
    """PufferLib's in-place contract: ``num_agents`` counters that each end
    at a drawn limit and restart inside ``step``; the reward is the action;
    agent 0 sits out (masked) every third step of its count."""

    def __init__(self, num_agents: int = 3, buf: Any = None) -> None:
        self.num_agents = num_agents
        self.single_observation_space = gs.Box(0, 100, (2,), np.float32)
        self.single_action_space = gs.Discrete(3)
        self.observations = np.zeros((num_agents, 2), np.float32)
        self.actions = np.zeros(num_agents, np.int32)
        self.rewards = np.zeros(num_agents, np.float32)
        self.terminals = np.zeros(num_agents, bool)
        self.truncations = np.zeros(num_agents, bool)
        self.masks = np.ones(num_agents, bool)

    def _observe(self) -> None:
        self.observations[:, 0] = self.count
        self.observations[:, 1] = self.limit
        self.masks[:] = True
        self.masks[0] = self.count[0] % 3 != 2

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, list]:
        self.rng = np.random.default_rng(seed)
        self.count = np.zeros(self.num_agents, int)
        self.limit = self.rng.integers(3, 8, self.num_agents)
        self._observe()
        return self.observations, []

    def step(self, actions: np.ndarray) -> tuple:
        self.count += 1
        self.rewards[:] = actions
        self.terminals[:] = self.count >= self.limit
        self.truncations[:] = False
        done = self.terminals
        self.count[done] = 0
        self.limit[done] = self.rng.integers(3, 8, int(done.sum()))
        self._observe()
        return self.observations, self.rewards, self.terminals, self.truncations, [{"ended": int(done.sum())}]

    def close(self) -> None:
        pass


class CopiesOut(Counters):
    """Writes its observations into arrays of its own: not in place."""

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, list]:
        super().reset(seed)
        return self.observations + 1, []


def test_pufferlib_env_writes_into_the_shared_rows() -> None:
    with pufferrs.vector.make(Counters, num_envs=2, seed=2) as envs:
        obs, _ = envs.reset()
        assert envs.agents_per_env == 3 and obs.shape == (6, 2)
        # The env's observations are the shared rows themselves.
        assert all(envs.call_envs(lambda env, _: np.shares_memory(env.observations, obs)))
        reference = [Counters(), Counters()]
        for e, env in enumerate(reference):
            env.reset(seed=2 + 3 * e)
        returns, lengths = np.zeros(6), np.zeros(6, int)
        acting = np.ones(6, bool)
        ended = 0
        rng = np.random.default_rng(0)
        for _ in range(40):
            actions = rng.integers(0, 3, 6)
            envs.send(actions)
            obs, rewards, terminals, truncations, infos, _, masks = envs.recv()
            lengths += acting
            for e, env in enumerate(reference):
                env.step(actions[3 * e : 3 * e + 3].astype(np.int32))
            want_obs = np.concatenate([env.observations for env in reference])
            want_masks = np.concatenate([env.masks for env in reference])
            done = np.concatenate([env.terminals for env in reference])
            returns += actions
            np.testing.assert_array_equal(masks, want_masks)
            np.testing.assert_array_equal(obs, np.where(want_masks[:, None], want_obs, 0))
            np.testing.assert_array_equal(terminals, done)
            for row in np.flatnonzero(done):
                assert infos[row]["episode_return"] == returns[row]
                assert infos[row]["episode_length"] == lengths[row]
                # A PufferLib env keeps no last observation.
                np.testing.assert_array_equal(infos[row]["final_obs"], np.zeros(2, np.float32))
                ended += 1
            assert infos[0]["ended"] == int(done[:3].sum()) and infos[3]["ended"] == int(done[3:].sum())
            returns[done], lengths[done] = 0, 0
            acting = want_masks
        assert ended > 10


class Captured(Counters):
    """Takes the arrays of ``buf`` when it is made and writes only those,
    as a PufferLib C binding holds their addresses: it runs on pufferrs's
    rows only when made with ``buf=``."""

    def __init__(self, num_agents: int = 3, buf: Any = None) -> None:
        super().__init__(num_agents)
        if buf is not None:
            for name, array in buf.items():
                setattr(self, name, array)
        self.captured = (self.observations, self.rewards, self.terminals, self.masks)

    def _observe(self) -> None:
        observations, _, _, masks = self.captured
        observations[:, 0] = self.count
        observations[:, 1] = self.limit
        masks[:] = True
        masks[0] = self.count[0] % 3 != 2

    def step(self, actions: np.ndarray) -> tuple:
        _, rewards, terminals, masks = self.captured
        self.count += 1
        rewards[:] = actions
        terminals[:] = self.count >= self.limit
        self.count[terminals] = 0
        self.limit[terminals] = self.rng.integers(3, 8, int(terminals.sum()))
        self._observe()
        return self.captured[0], rewards, terminals, self.truncations, []


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_pufferlib_env_is_made_with_buf_on_the_rows(backend: str) -> None:
    rng = np.random.default_rng(4)
    actions = rng.integers(0, 3, (30, 6))
    results = {}
    for env_class in (Counters, Captured):
        with pufferrs.vector.make(env_class, num_envs=2, backend=backend, seed=9) as envs:
            envs.reset()
            steps = []
            for step_actions in actions:
                envs.send(step_actions)
                obs, rewards, terminals, _, infos, _, masks = envs.recv()
                returns = [info.get("episode_return") for info in infos]
                steps.append((obs.copy(), rewards.copy(), terminals.copy(), masks.copy(), returns))
            results[env_class] = steps
    for a, b in zip(results[Counters], results[Captured]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert sum(r is not None for step in results[Captured] for r in step[4]) > 5


def test_pufferlib_env_that_does_not_write_in_place_is_refused() -> None:
    with pufferrs.vector.make(CopiesOut, num_envs=1) as envs:
        with pytest.raises(WorkerError, match="must write them in place"):
            envs.reset()


def test_trainer_and_vectorization_option() -> None:
    config = Config(env="CartPole-v1", num_envs=8, batch_size=256, minibatch_size=128, total_steps=512)
    trainer_env = cartpole_vec(8)
    from pufferrs.train import Trainer

    trainer = Trainer(config, trainer_env)
    assert (trainer.vecenv.num_envs, trainer.vecenv.num_agents) == (1, 8)
    summary = trainer.train()
    assert summary["updates"] == 2 and summary["env/episodes"] > 0
    with pytest.raises(ConfigError, match="gymnasium vector env"):
        Trainer(config, object())
    # A PufferLib-style env counts as one env of 3 agents, as PettingZoo's do.
    puffer = Config(env="Counters", num_envs=1, batch_size=64, minibatch_size=32, total_steps=64)
    summary = Trainer(puffer, Counters()).train()
    assert summary["updates"] == 1 and summary["env/episodes"] > 0
    config.vectorization, config.backend, config.num_workers = "vector_entry_point", "multiprocessing", 2
    from pufferrs.factories import make_vecenv

    with make_vecenv(config) as envs:
        assert (envs.num_envs, envs.num_agents, envs.agents_per_env) == (2, 8, 4)
    config.num_workers = 3
    with pytest.raises(ConfigError, match="do not split into 3"):
        make_vecenv(config)
    config.backend = "ray"
    with pytest.raises(ConfigError, match="serial and multiprocessing backends, not 'ray'"):
        make_vecenv(config)
    from pufferrs.factories import check_env

    with pytest.raises(ConfigError, match="doesn't have a vector entry point"):
        check_env(Config(env="pufferrs/Memory-v0", vectorization="vector_entry_point"))
    with pytest.raises(ConfigError, match="vectorization must be one of"):
        Config(env="CartPole-v1", vectorization="async").validate()


def _envpool() -> Any:
    """EnvPool, or a skip where it is not installed (an optional peer)."""
    return pytest.importorskip("envpool")


#: EnvPool's own spaces warn when it builds them (float64 bounds cast to
#: float32): its warning, not pufferrs's.
envpool_spaces_warn = pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning")


@envpool_spaces_warn
def test_envpool_through_pufferrs_equals_envpool_by_hand() -> None:
    ep = _envpool()
    make = functools.partial(ep.make, "CartPole-v1", env_type="gymnasium", num_envs=4, seed=3, max_episode_steps=15)
    actions = np.random.default_rng(1).integers(0, 2, (40, 4))
    expected = by_hand(make, 1, 4, None, actions, next_step=True)
    with pufferrs.vector.make(make, num_envs=1, seed=0) as envs:
        assert check_against_hand(envs, expected, actions) > 5
    with pufferrs.vector.make(make, num_envs=2, backend="multiprocessing", seed=0) as envs:
        expected = by_hand(make, 2, 4, None, np.tile(actions, 2), next_step=True)
        check_against_hand(envs, expected, np.tile(actions, 2))


@envpool_spaces_warn
def test_envpool_trains_through_the_trainer() -> None:
    ep = _envpool()
    from pufferrs.train import Trainer

    config = Config(env="CartPole-v1", num_envs=8, batch_size=256, minibatch_size=128, total_steps=512)
    summary = Trainer(config, ep.make("CartPole-v1", env_type="gymnasium", num_envs=8, seed=0)).train()
    assert summary["updates"] == 2 and summary["env/episodes"] > 0
    assert "env/env_id" not in summary
    asynchronous = ep.make("CartPole-v1", env_type="gymnasium", num_envs=4, batch_size=2)
    with pytest.raises(UnsupportedSpaceError, match="asynchronous EnvPool"):
        pufferrs.vector.make(lambda: asynchronous, num_envs=1)


def test_adapters_refuse_envs_of_several_rows() -> None:
    from pufferrs.compat.gymnasium import GymnasiumVectorEnv

    with pytest.raises(TypeError, match="take 3 rows each"):
        GymnasiumVectorEnv([lambda: cartpole_vec(3)] * 2, backend="serial", autoreset_mode="SameStep")


@st.composite
def one_leaf_batches(draw: Any) -> tuple[gs.Space, np.ndarray]:
    """A one-leaf space and a batch for it, in range or not, of its dtype
    or another."""
    kind = draw(st.sampled_from(["box", "discrete", "multidiscrete", "multibinary"]))
    n = draw(st.integers(0, 6))
    if kind == "box":
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.uint8]))
        shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        space: gs.Space = gs.Box(0, 10, shape, dtype)
        batch_dtype = draw(st.sampled_from([dtype, np.float32]))
        values = draw(st.sampled_from([0, 5, 11] if batch_dtype == np.uint8 else [-1, 0, 5, 11]))
        batch = np.full((n, *shape), values, batch_dtype)
        return space, batch
    if kind == "discrete":
        space = gs.Discrete(draw(st.integers(1, 5)), start=draw(st.integers(-3, 3)))
        shape: tuple[int, ...] = ()
    elif kind == "multidiscrete":
        space = gs.MultiDiscrete(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        shape = space.shape
    else:
        space = gs.MultiBinary(draw(st.integers(1, 3)))
        shape = space.shape
    size = n * int(np.prod(shape))
    dtype = draw(st.sampled_from([space.dtype, np.int32, np.int8]))
    low = 0 if np.dtype(dtype).kind == "u" else -4
    values = draw(st.lists(st.integers(low, 6), min_size=size, max_size=size))
    return space, np.array(values, dtype).reshape(n, *shape)


@given(one_leaf_batches(), st.booleans())
def test_store_exact_stores_what_flatten_batch_stores_or_nothing(case: tuple, check_bounds: bool) -> None:
    from pufferrs import Layout
    from pufferrs._native import store_exact

    space, batch = case
    layout = Layout(space)
    expected = np.full((len(batch), layout.row_bytes), 7, np.uint8)
    try:
        # Row by row: the general path (flatten_batch into `out` tries
        # store_exact itself first).
        for i, value in enumerate(batch):
            layout.flatten_into(value, expected, i, check_bounds=check_bounds)
        fits = True
    except (ValueError, TypeError):
        fits = False
    out = np.full_like(expected, 7)
    stored = store_exact(layout, batch, out, check_bounds)
    if stored:
        assert fits
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_array_equal(out, np.full_like(expected, 7))
    # The exact case of a value that fits is never left to the slow path.
    if fits and batch.dtype == space.dtype and space.dtype != bool:
        assert stored


@given(st.integers(1, 9), st.integers(1, 4), st.sampled_from(["reversed", "itself", "transposed"]))
def test_store_exact_reads_a_source_in_the_rows_or_in_any_order_before_writing(n: int, width: int, source: str) -> None:
    """A batch that is (a view of) the rows it is stored into, or a
    transposed (Fortran-ordered) one, stores what a copy of it stores."""
    from pufferrs import Layout
    from pufferrs._native import store_exact

    layout = Layout(gs.Box(-1e6, 1e6, (width,), np.float32))
    values = np.arange(n * width, dtype=np.float32).reshape(n, width) * 1.5 - 3
    out = np.empty((n, layout.row_bytes), np.uint8)
    out.view(np.float32)[...] = values
    rows = out.view(np.float32)
    batch = {"reversed": rows[::-1], "itself": rows, "transposed": np.asfortranarray(values)}[source]
    expected = np.array(batch)
    assert store_exact(layout, batch, out, False)
    np.testing.assert_array_equal(out.view(np.float32), expected)


def test_a_pufferlib_env_made_elsewhere_runs_on_the_rows() -> None:
    from pufferrs.vector.vector_envs import on_pufferrs

    env = Counters(4)
    with on_pufferrs(env, seed=3) as envs:
        obs, _ = envs.reset()
        assert envs.call_envs(lambda e, _: e is env) == [True]
        assert np.shares_memory(env.observations, obs) and obs.shape == (4, 2)
        envs.step(np.ones(4, np.int64))
        np.testing.assert_array_equal(env.actions, np.ones(4))
        assert (obs[1:, 0] == 1).all()  # the env's counts, in the rows
