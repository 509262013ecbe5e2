"""The seams between the vector backends (issue 21): ``call_envs`` (its
own worker command) leaves the rows and episodes as they were, the
default worker count is the plan's one rule, the Ray answer's packing has
one owner, and the backends' base asks ``kinds`` (not the PettingZoo
blocks) what an env is."""

from __future__ import annotations

import ast
import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import pufferrs.vector as pv
from pufferrs import WorkerError
from pufferrs._native import RolloutBuffers
from pufferrs.multiagent_envs import Rendezvous
from pufferrs.vector.ray import Packing

VECTOR = Path(pv.__file__).parent


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


def state(env: gym.Env, _: Any) -> list[float]:
    return [float(x) for x in env.unwrapped.state]


def run(backend: str, call_at: set[int], steps: int = 60) -> list[tuple]:
    """Copies of what every step returns, with ``call_envs`` run between the
    ``recv`` and the ``send`` of the steps in ``call_at``."""
    got = []
    options = {"num_workers": 2} if backend == "multiprocessing" else {}
    with pv.make(cartpole, 4, backend=backend, seed=3, **options) as envs:
        obs, infos = envs.reset()
        rng = np.random.default_rng(0)
        for t in range(steps):
            if t in call_at:
                held = obs.copy()
                states = envs.call_envs(state)
                assert len(states) == 4 and all(len(s) == 4 for s in states)
                assert np.array_equal(obs, held), "call_envs changed the rows of the batch held"
            obs, rewards, terminals, truncations, infos = envs.step(rng.integers(0, 2, 4))
            ended = [(i, info["episode_length"], info["final_obs"].copy()) for i, info in enumerate(infos) if info]
            got.append((obs.copy(), rewards.copy(), terminals.copy(), truncations.copy(), ended))
    return got


def same(a: list[tuple], b: list[tuple]) -> bool:
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x[:4], y[:4]):
            if not np.array_equal(u, v):
                return False
        if [(i, n) for i, n, _ in x[4]] != [(i, n) for i, n, _ in y[4]]:
            return False
        if not all(np.array_equal(f, g) for (_, _, f), (_, _, g) in zip(x[4], y[4])):
            return False
    return True


def test_call_envs_between_steps_leaves_the_rows_and_episodes_as_they_were() -> None:
    # Every step: calls land after steps that ended episodes too.
    reference = run("serial", set())
    assert any(step[4] for step in reference), "no episode ended: the test proves nothing"
    assert same(run("serial", set(range(60))), reference)
    assert same(run("multiprocessing", set(range(60))), reference)


def brute_force(num_envs: int, cpus: int) -> int:
    return max((d for d in range(1, min(num_envs, max(cpus, 1)) + 1) if num_envs % d == 0), default=1)


def test_default_workers_is_the_plans_rule() -> None:
    for num_envs in range(0, 70):
        for cpus in range(0, 20):
            assert RolloutBuffers.default_workers(num_envs, cpus) == brute_force(num_envs, cpus), (num_envs, cpus)
    # Not a count: 1, for the plan to refuse with its own error.
    for bad in (8.0, "8", None, True, -4):
        assert RolloutBuffers.default_workers(bad, 4) == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_multiprocessing_defaults_to_the_plans_worker_count() -> None:
    cpus = len(os.sched_getaffinity(0))
    with pv.make(cartpole, 6, backend="multiprocessing") as envs:
        assert envs.num_workers == RolloutBuffers.default_workers(6, cpus)


def test_an_actors_answer_unpacks_to_what_it_packed() -> None:
    rows, row_bytes = 3, 10
    packing = Packing(rows, row_bytes)
    packed = np.zeros(packing.nbytes, np.uint8)
    obs, rewards, terminals, truncations = packing.parts(packed)
    obs[:] = np.arange(rows * row_bytes).reshape(rows, row_bytes)
    rewards[:] = [0.5, -1.0, 2.0]
    terminals[:] = [True, False, False]
    truncations[:] = [False, False, True]
    answer = packed.copy()  # what Ray hands the driver: another array, read-only
    answer.flags.writeable = False
    got = packing.parts(answer)
    for mine, theirs in zip(got, (obs, rewards, terminals, truncations)):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert (got[0].shape, got[1].shape) == ((rows, row_bytes), (rows,))


def imports(module: str) -> set[str]:
    tree = ast.parse((VECTOR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_backends_base_does_not_import_the_pettingzoo_blocks() -> None:
    assert "pufferrs.vector.agents" not in imports("base")
    assert "pufferrs.vector.kinds" in imports("base")
    assert not {m for m in imports("kinds") if m.startswith("pufferrs.vector")}


class LockedInfo(Rendezvous):
    """Rendezvous whose last agent's info holds a lock (which does not
    pickle) at every step, when ``locked``."""

    def __init__(self, locked: bool) -> None:
        super().__init__(num_agents=3, leave_prob=0.0)
        self.locked = locked

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        observations, rewards, terminations, truncations, infos = super().step(actions)
        if self.locked:
            infos["agent_2"] = {"lock": threading.Lock()}
        return observations, rewards, terminations, truncations, infos


def test_an_agents_info_that_does_not_pickle_names_its_env_not_its_row() -> None:
    creators = [partial(LockedInfo, False), partial(LockedInfo, True)]
    with pv.make(creators, 2, backend="multiprocessing", num_workers=1, timeout=10) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError) as caught:
            envs.step(np.zeros(6, np.int64))
    # Env 1's agent_2 has row 5 of the worker's rows.
    assert caught.value.env == 1
    assert "the info of env 1 cannot be pickled" in str(caught.value)
