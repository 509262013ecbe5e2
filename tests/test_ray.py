"""The Ray backend on one simulated two-node cluster, started once for the
session (two raylets of one CPU each, which is what starting Ray costs
most of): the same rows as Serial, every actor stepped under asynchronous
batches, a killed actor as a WorkerError, actors on both nodes, and the
user's cluster still running after close()."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

import pufferrs.envs  # noqa: E402
import pufferrs.vector  # noqa: E402
from pufferrs import WorkerError  # noqa: E402
from pufferrs.compat import GymnasiumVectorEnv  # noqa: E402
from pufferrs.errors import WorkerTimeoutError  # noqa: E402


@pytest.fixture(scope="module")  # torn down before other modules fork workers
def cluster() -> Iterator[Cluster]:
    """Two nodes of one CPU each, this process connected as the user would
    be: the backend must use it and leave it running."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    # The envs defined here travel by value: actors cannot import tests.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def nested() -> gym.Env:
    # Terminates after 5 steps, unless the time limit of 4 truncates first.
    return gym.wrappers.TimeLimit(pufferrs.envs.Nested(length=5), max_episode_steps=4)


class Breaks(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        raise ValueError("the env broke on purpose")


def comparable(infos: list[dict]) -> list[dict]:
    return [{k: v.tobytes() if isinstance(v, np.ndarray) else v for k, v in info.items()} for info in infos]


@pytest.mark.usefixtures("cluster")
def test_rows_match_serial_for_the_same_seeds() -> None:
    actions = gym.spaces.MultiDiscrete([4, 4, 2])
    with (
        pufferrs.vector.make(nested, num_envs=4, backend="ray", num_workers=2, seed=5) as remote,
        pufferrs.vector.make(nested, num_envs=4, backend="serial", seed=5) as local,
    ):
        for a, b in zip(remote.reset(), local.reset()):
            np.testing.assert_array_equal(a, b) if isinstance(a, np.ndarray) else None
        ended = 0
        for k in range(12):
            batch = np.stack([actions.sample() for _ in range(4)])
            got, expected = remote.step(batch), local.step(batch)
            for name, x, y in zip(("obs", "rewards", "terminals", "truncations"), got[:4], expected[:4]):
                np.testing.assert_array_equal(x, y, err_msg=f"step {k} {name}")
            assert comparable(got[4]) == comparable(expected[4]), f"step {k}"
            ended += int((got[2] | got[3]).sum())
        assert ended >= 4


@pytest.mark.usefixtures("cluster")
def test_every_actor_is_stepped_with_asynchronous_batches() -> None:
    with pufferrs.vector.make(
        lambda: gym.make("CartPole-v1"), num_envs=8, backend="ray", num_workers=4, num_cpus=0.25, batch_size=2
    ) as envs:
        envs.async_reset()
        seen = set()
        for _ in range(40):
            _, _, _, _, _, env_ids, _ = envs.recv()
            seen.add(int(env_ids[0]) // 2)
            envs.send(np.zeros(len(env_ids), np.int64))
        counts = envs.step_counts()
        assert seen == {0, 1, 2, 3}
        assert all(count > 0 for count in counts), counts
        # Every send reached its actor; the last four may still be running.
        assert 36 <= sum(counts) <= 40


@pytest.mark.usefixtures("cluster")
def test_envs_are_placed_on_every_node() -> None:
    with pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=4, backend="ray", num_workers=2) as envs:
        nodes = {node for node, _ in envs.placement}
        assert nodes == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        envs.reset(seed=0)
        envs.step(np.zeros(4, np.int64))


@pytest.mark.usefixtures("cluster")
def test_a_killed_actor_is_a_worker_error_naming_it() -> None:
    envs = pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=4, backend="ray", num_workers=2)
    envs.reset(seed=0)
    envs.step(np.zeros(4, np.int64))
    ray.kill(envs._actors[1])
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"Ray actor 1 \(envs 2-3, node \w+, pid \d+\) died"):
        for _ in range(20):
            envs.step(np.zeros(4, np.int64))
    assert time.monotonic() - start < 30
    with pytest.raises(WorkerError, match="broken"):
        envs.step(np.zeros(4, np.int64))
    envs.close()


@pytest.mark.usefixtures("cluster")
def test_an_env_that_raises_in_an_actor_is_a_worker_error() -> None:
    with pufferrs.vector.make(Breaks, num_envs=2, backend="ray", num_workers=2) as envs:
        envs.reset()
        with pytest.raises(WorkerError, match="the env broke on purpose"):
            envs.step(np.zeros(2, np.int64))


@pytest.mark.usefixtures("cluster")
def test_actors_that_cannot_be_placed_are_an_error_not_a_hang() -> None:
    with pytest.raises(WorkerTimeoutError, match="the cluster has 2"):
        pufferrs.vector.make(Breaks, num_envs=2, backend="ray", num_workers=2, num_cpus=2, timeout=2)


@pytest.mark.usefixtures("cluster")
def test_close_leaves_the_users_cluster_running() -> None:
    envs = pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=2, backend="ray", num_workers=2)
    actors = list(envs._actors)
    envs.close()
    assert ray.is_initialized()
    assert ray.get(ray.remote(lambda: 42).remote()) == 42
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.where.remote())


@pytest.mark.usefixtures("cluster")
def test_gymnasium_adapter_over_ray_matches_sync_vector_env() -> None:
    fns = [lambda: gym.make("CartPole-v1", max_episode_steps=10)] * 4
    ref = gym.vector.SyncVectorEnv(fns)
    with GymnasiumVectorEnv(fns, backend="ray", num_workers=2) as ours:
        np.testing.assert_array_equal(ref.reset(seed=1)[0], ours.reset(seed=1)[0])
        for k in range(25):
            actions = np.array([(k + i) % 2 for i in range(4)])
            for x, y in zip(ref.step(actions)[:4], ours.step(actions)[:4]):
                np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
        assert ours.get_attr("spec")[0].id == "CartPole-v1"
        with pytest.raises(AttributeError):
            ours.get_attr("no_such_attribute")
        ours.step(np.zeros(4, np.int64))  # still usable
    ref.close()


class Echo(gym.Env):
    """Text actions (with a number beside them): the observation is the
    action it was given, so a lost or altered action shows in the rows."""

    space = gym.spaces.Dict(word=gym.spaces.Text(6, min_length=1, charset="abc"), n=gym.spaces.Discrete(3))
    observation_space = space
    action_space = space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        return {"word": "a", "n": 0}, {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        assert isinstance(action["word"], str), f"expected a str, got {type(action['word']).__name__}"
        return action, 0.0, False, False, {}


@pytest.mark.usefixtures("cluster")
def test_text_actions_reach_the_envs_as_strings() -> None:
    # The actor takes the driver's action rows as rows: unflattened, a
    # Text action would be codes, which the env's block refuses.
    actions = {"word": ["abc", "c", "cabbac", "b"], "n": np.array([0, 1, 2, 1])}
    with (
        pufferrs.vector.make(Echo, num_envs=4, backend="ray", num_workers=2) as remote,
        pufferrs.vector.make(Echo, num_envs=4, backend="serial") as local,
    ):
        remote.reset(), local.reset()
        got, expected = remote.step(actions)[0], local.step(actions)[0]
        np.testing.assert_array_equal(got, expected)
        words = remote.layout.unflatten(got)["word"]
        assert [remote.layout.decode_text(("word",), w) for w in words] == actions["word"]


def test_cli_trains_with_the_ray_backend_on_a_running_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """``pufferrs train --backend ray`` in another process finds the
    cluster through RAY_ADDRESS, trains, and leaves it running."""
    args = ["train", "CartPole-v1", "--backend", "ray", "--num-envs", "4", "--total-steps", "512"]
    args += ["--batch-size", "256", "--minibatch-size", "128", "--name", "ray"]
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    result = subprocess.run(
        [sys.executable, "-m", "pufferrs", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "ray" / "model.pt").exists()
    assert ray.get(ray.remote(lambda: 7).remote()) == 7
