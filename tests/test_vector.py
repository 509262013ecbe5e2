"""Vector envs: rows land bit-exactly where they belong, both backends agree,
async batches route actions back, and faults end in exceptions, not hangs,
with nothing left behind."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest

import pufferrs
import pufferrs.vector as pv
from pufferrs import BuffersError, Layout, PufferError, SpaceError, WorkerError
from pufferrs._native import RolloutBuffers
from pufferrs.demo import reference_space
from pufferrs.errors import WorkerTimeoutError


def dict_action_space() -> gs.Dict:
    return gs.Dict(
        move=gs.Discrete(3, start=-1),
        aim=gs.Box(-1, 1, (2,), np.float32),
        buttons=gs.MultiDiscrete([2, 3]),
        combo=gs.Tuple((gs.Discrete(2), gs.MultiBinary(3))),
    )


def action_value(action: Any) -> float:
    """A number that depends on every part of an action: the reward, so
    that a misrouted action shows up in the rewards."""
    if isinstance(action, dict):
        return sum((i + 1) * action_value(action[k]) for i, k in enumerate(sorted(action)))
    if isinstance(action, tuple):
        return sum((i + 1) * action_value(a) for i, a in enumerate(action))
    return float(np.sum(np.asarray(action, dtype=np.float64) * (1 + np.arange(np.asarray(action).size))))


class NestedEnv(gym.Env):
    """Observations of the reference nested space drawn from the env's
    seeded RNG; episodes of 3-8 steps; the reward encodes the action."""

    def __init__(
        self,
        dict_actions: bool = False,
        fault: str | None = None,
        fault_step: int = 2,
        step_delay: float = 0.0,
        gate: Any = None,
    ) -> None:
        self.observation_space = reference_space()
        self.action_space = dict_action_space() if dict_actions else gs.Discrete(4)
        self.fault, self.fault_step, self.step_delay = fault, fault_step, step_delay
        # A semaphore that every step and seeded reset (not the autoreset
        # inside a step) takes a permit of, so that a test decides which
        # envs finish, and in what order.
        self.gate = gate
        self.steps = 0
        if fault == "init":
            raise RuntimeError("cannot make this env")

    def _obs(self) -> dict:
        rng = self.np_random
        return {
            "image": rng.integers(0, 256, (3, 64, 64), dtype=np.uint8),
            "vector": rng.uniform(-1, 1, 32).astype(np.float32),
            "inv": {"items": rng.integers(0, 10, 8), "hp": int(rng.integers(100))},
            "tuple": (rng.uniform(-1, 1, 4).astype(np.float32), int(rng.integers(5))),
        }

    def _pass_gate(self) -> None:
        if self.gate is not None and not self.gate.acquire(timeout=30):
            raise TimeoutError("the test never let this env go")

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._pass_gate()
        super().reset(seed=seed)
        self.t = 0
        self.length = int(self.np_random.integers(3, 9))
        return self._obs(), ({"seeded": seed} if seed is not None else {})

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        assert self.action_space.contains(action), action
        if isinstance(self.action_space, gs.Discrete):
            assert type(action) is int, type(action)
        self._pass_gate()
        self.steps += 1
        if self.fault and self.steps >= self.fault_step:
            if self.fault == "raise":
                raise ValueError("the env broke on purpose")
            if self.fault == "exit":
                os._exit(3)
            if self.fault == "hang":
                time.sleep(60)
            if self.fault == "bad_obs":
                return {"image": 0}, 0.0, False, False, {}
        if self.step_delay:
            time.sleep(self.step_delay)
        self.t += 1
        terminal = self.t >= self.length
        truncation = not terminal and self.t >= 6
        info = {"last": self.t} if terminal else {}
        return self._obs(), self.t + action_value(action), terminal, truncation, info


def action_for(space: gs.Space, env: int, k: int) -> Any:
    """A deterministic action for env `env` at its step `k`."""
    space.seed(1000 * env + k)
    action = space.sample()
    return int(action) if isinstance(space, gs.Discrete) else action


def stack_actions(space: gs.Space, actions: list[Any]) -> Any:
    if isinstance(space, gs.Dict):
        return {key: stack_actions(sub, [a[key] for a in actions]) for key, sub in space.spaces.items()}
    if isinstance(space, gs.Tuple):
        return tuple(stack_actions(sub, [a[i] for a in actions]) for i, sub in enumerate(space.spaces))
    return np.stack([np.asarray(a, dtype=space.dtype) for a in actions])


Record = tuple[bytes, float, bool, bool, tuple]


def reference_trajectory(creator: Any, env: int, seed: int, steps: int) -> list[Record]:
    """What env `env` of a vector env must produce, computed without one."""
    instance = creator()
    layout = Layout(instance.observation_space)
    obs, _ = instance.reset(seed=seed + env)
    records: list[Record] = [(layout.flatten(obs).tobytes(), 0.0, False, False, ())]
    ret, length = 0.0, 0
    for k in range(steps):
        obs, reward, terminal, truncation, _ = instance.step(action_for(instance.action_space, env, k))
        ret, length = ret + reward, length + 1
        stats: tuple = ()
        if terminal or truncation:
            stats, ret, length = (ret, length), 0.0, 0
            obs, _ = instance.reset()
        records.append((layout.flatten(obs).tobytes(), float(np.float32(reward)), terminal, truncation, stats))
    return records


def drive(
    envs: Any, seed: int, recvs: int, before_recv: Any = None
) -> tuple[dict[int, list[Record]], list[np.ndarray]]:
    """Runs `recvs` batches through async_reset/recv/send, acting with
    `action_for`, and returns each env's records plus every batch's env_ids.
    `before_recv(k)` runs before the k-th recv."""
    records: dict[int, list[Record]] = {e: [] for e in range(envs.num_envs)}
    batches = []
    envs.async_reset(seed)
    for k in range(recvs):
        if before_recv is not None:
            before_recv(k)
        obs, rewards, terminals, truncations, infos, env_ids, masks = envs.recv()
        assert len(obs) == len(rewards) == len(infos) == len(env_ids) == envs.batch_size
        assert masks.all()
        batches.append(env_ids.copy())
        actions = []
        for k, env in enumerate(env_ids.tolist()):
            info = infos[k]
            stats = (info["episode_return"], info["episode_length"]) if "episode_return" in info else ()
            assert bool(stats) == bool(terminals[k] or truncations[k])
            records[env].append((obs[k].tobytes(), float(rewards[k]), bool(terminals[k]), bool(truncations[k]), stats))
            actions.append(action_for(envs.single_action_space, env, len(records[env]) - 1))
        envs.send(stack_actions(envs.single_action_space, actions))
    return records, batches


def assert_matches_reference(records: dict[int, list[Record]], creator: Any, seed: int) -> None:
    for env, got in records.items():
        expected = reference_trajectory(creator, env, seed, len(got) - 1)
        for k, (g, e) in enumerate(zip(got, expected)):
            assert g[0] == e[0], f"env {env} step {k}: observation row differs"
            assert g[1:] == e[1:], f"env {env} step {k}: {g[1:]} != {e[1:]}"


def pufferrs_shm() -> set[str]:
    """Entries of /dev/shm that pufferrs or multiprocessing could leave."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    return {n for n in names if n.startswith(("sem.mp-", "psm_", "mp-")) or "puffer" in n}


@pytest.fixture(autouse=True)
def nothing_left_in_dev_shm():
    before = pufferrs_shm()
    yield
    gc.collect()
    assert pufferrs_shm() <= before


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    return True  # a zombie holds no memory; its parent reaps it
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------
# Buffers


def test_buffers_are_views_of_one_shared_region() -> None:
    buffers = RolloutBuffers(4, 2, 24, 8, 2)
    obs = buffers.array("observations")
    assert obs.shape == (4, 24) and obs.dtype == np.uint8 and obs.flags.c_contiguous and obs.flags.writeable
    assert buffers.array("rewards").dtype == np.float32
    assert buffers.array("terminals").dtype == np.bool_
    assert buffers.array("episode_lengths").dtype == np.int64
    assert buffers.array("batch_observations").shape == (2, 24)
    assert obs.ctypes.data % 4096 == 0, "observations start on a page"

    attached = RolloutBuffers.attach(buffers.fd, 4, 2, 24, 8, 2)
    obs[2, 5] = 77
    assert attached.array("observations")[2, 5] == 77
    with pytest.raises(BuffersError, match=r"^fd \d+ does not hold buffers made for these arguments$"):
        RolloutBuffers.attach(buffers.fd, 4, 2, 24, 16, 2)
    with pytest.raises(BuffersError, match='^no array named "nope"$'):
        buffers.array("nope")


def test_arrays_keep_the_mapping_alive_and_torch_shares_it() -> None:
    torch = pytest.importorskip("torch")
    rewards = RolloutBuffers(3, 1, 8, 8).array("rewards")
    gc.collect()
    rewards[:] = [1, 2, 3]
    tensor = torch.from_numpy(rewards)
    tensor[1] = 9
    assert rewards.tolist() == [1, 9, 3]
    assert tensor.data_ptr() == rewards.ctypes.data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 3, 8, 8, None), r"num_workers \(3\) must be a positive divisor of num_envs \(4\)"),
        ((4, 2, 8, 8, 3), r"batch_size \(3\) must be a multiple of the envs per worker \(2\)"),
        ((4, 2, 8, 8, 6), r"batch_size \(6\) must be between 1 and num_envs \(4\)"),
        ((0, 1, 8, 8, None), r"num_envs must be positive, got 0"),
        ((-2, 1, 8, 8, None), r"num_envs must be a positive int, got -2"),
        ((4, 2.0, 8, 8, None), r"num_workers must be a positive int, got 2.0"),
        ((4, None, 8, 8, 3), r"batch_size \(3\) must divide num_envs \(4\) when the envs run in this process"),
    ],
)
def test_bad_plans_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(BuffersError, match=f"^{message}$"):
        RolloutBuffers(*args)


def test_wait_request_times_out_and_wakes() -> None:
    buffers = RolloutBuffers(2, 2, 8, 8)
    start = time.monotonic()
    assert buffers.wait_request(0, 0.05) is None
    assert time.monotonic() - start >= 0.05
    assert buffers.wait_completed(2, 0.01) == []
    buffers.request([1], RolloutBuffers.STEP)
    assert buffers.wait_request(1, 1.0) == RolloutBuffers.STEP
    buffers.complete(1, RolloutBuffers.INFOS)
    assert buffers.wait_completed(2, 0.05) == [1]
    assert buffers.status(1) == RolloutBuffers.INFOS
    with pytest.raises(BuffersError, match=r"^worker 2 is out of range for 2 workers$"):
        buffers.request([2], RolloutBuffers.STEP)


# ---------------------------------------------------------------------------
# Correctness


def test_serial_rows_match_standalone_envs_bit_exactly() -> None:
    with pv.make(NestedEnv, num_envs=3, backend="serial", seed=5) as envs:
        records, _ = drive(envs, seed=5, recvs=20)
    assert_matches_reference(records, NestedEnv, seed=5)
    assert any(r[4] for env in records.values() for r in env), "episodes ended and reported their stats"


def test_dict_actions_reach_their_envs() -> None:
    creator = functools.partial(NestedEnv, dict_actions=True)
    with pv.make(creator, num_envs=4, backend="multiprocessing", num_workers=2, seed=3) as envs:
        assert isinstance(envs.single_action_space, gs.Dict)
        records, _ = drive(envs, seed=3, recvs=12)
    assert_matches_reference(records, creator, seed=3)


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_backends_agree_bit_for_bit(start_method: str | None) -> None:
    results = {}
    for backend in ("serial", "multiprocessing"):
        extra = {"start_method": start_method} if backend == "multiprocessing" else {}
        with pv.make(NestedEnv, num_envs=4, backend=backend, num_workers=2, seed=11, **extra) as envs:
            obs, infos = envs.reset()
            steps = [(obs.copy(), infos)]
            for k in range(15):
                actions = np.array([(k * 7 + e) % 4 for e in range(4)])
                obs, rewards, terminals, truncations, infos = envs.step(actions)
                # final_obs is a view of a row that a later episode end rewrites.
                infos = [{**i, "final_obs": i["final_obs"].tobytes()} if "final_obs" in i else i for i in infos]
                steps.append((obs.copy(), rewards.copy(), terminals.copy(), truncations.copy(), infos))
            results[backend] = steps
    for s, m in zip(results["serial"], results["multiprocessing"]):
        assert s[0].tobytes() == m[0].tobytes()
        for a, b in zip(s[1:], m[1:]):
            if isinstance(a, np.ndarray):
                assert a.tobytes() == b.tobytes()
            else:
                assert a == b


def test_spaces_and_shapes() -> None:
    with pv.make(NestedEnv, num_envs=4, backend="serial", batch_size=2) as envs:
        layout = Layout(reference_space())
        assert envs.layout == layout
        assert envs.single_observation_space == layout.observation_space
        assert envs.observation_space.shape == (2, *layout.observation_space.shape)
        assert envs.single_action_space == gs.Discrete(4)
        assert envs.action_space.shape == (2,)
        obs, infos = envs.reset(seed=0)
        assert obs.shape == envs.observation_space.shape and obs.dtype == layout.flat_dtype
        assert infos == [{"seeded": 0}, {"seeded": 1}]
        views = envs.layout.unflatten(obs)
        assert views["image"].shape == (2, 3, 64, 64)


def test_seeding_is_reproducible_and_env_i_gets_seed_plus_i() -> None:
    def first_rows(seed: int) -> bytes:
        with pv.make(NestedEnv, num_envs=3, backend="serial", seed=seed) as envs:
            return envs.reset()[0].tobytes()

    assert first_rows(1) == first_rows(1)
    assert first_rows(1) != first_rows(2)
    with pv.make(NestedEnv, num_envs=3, backend="serial") as envs:
        obs, _ = envs.reset(seed=40)
        alone = NestedEnv()
        assert obs[2].tobytes() == Layout(reference_space()).flatten(alone.reset(seed=42)[0]).tobytes()


def test_plain_box_observations_keep_their_shape() -> None:
    with pv.make(lambda: gym.make("CartPole-v1"), num_envs=2, backend="serial") as envs:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 4) and obs.dtype == np.float32
        obs, rewards, *_ = envs.step(np.array([0, 1]))
        assert rewards.tolist() == [1.0, 1.0]


def test_serial_batches_take_turns() -> None:
    envs = pv.make(NestedEnv, num_envs=4, backend="serial", batch_size=2, seed=7)
    with envs:
        records, batches = drive(envs, seed=7, recvs=12)
    assert_matches_reference(records, NestedEnv, seed=7)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]] * 6


def test_async_batches_are_the_envs_that_finish_first() -> None:
    # Each env waits for a permit before every reset and step, so the test
    # picks which two of the four workers finish first in every round: the
    # batch must be exactly those (gathered from non-adjacent workers where
    # the pair is), and every action must reach the env it was meant for.
    gates = [multiprocessing.Semaphore(0) for _ in range(4)]
    creators = [functools.partial(NestedEnv, gate=gates[e]) for e in range(4)]
    rounds = [(0, 2), (1, 3), (3, 0), (2, 1), (0, 2), (0, 2), (1, 2), (3, 0), (1, 3), (0, 3), (2, 1), (1, 0)]

    def release(k: int) -> None:
        for env in rounds[k]:
            gates[env].release()

    envs = pv.make(creators, num_envs=4, backend="multiprocessing", num_workers=4, batch_size=2, seed=7)
    with envs:
        records, batches = drive(envs, seed=7, recvs=len(rounds), before_recv=release)
    assert [b.tolist() for b in batches] == [sorted(pair) for pair in rounds]
    assert_matches_reference(records, NestedEnv, seed=7)


def test_misuse_gets_clear_errors() -> None:
    with pv.make(NestedEnv, num_envs=2, backend="serial") as envs:
        with pytest.raises(PufferError, match="recv"):
            envs.recv()
        with pytest.raises(PufferError, match="send"):
            envs.send(np.zeros(2, np.int64))
        envs.reset()
        with pytest.raises(PufferError, match="twice"):
            envs.recv()
    with pytest.raises(PufferError, match="closed"):
        envs.reset()
    envs.close()
    with pytest.raises(BuffersError, match=r"^num_workers \(3\) must be a positive divisor of num_envs \(4\)$"):
        pv.make(NestedEnv, num_envs=4, backend="multiprocessing", num_workers=3)
    with pytest.raises(BuffersError, match=r"^batch_size \(3\) must be a multiple of the envs per worker \(2\)$"):
        pv.make(NestedEnv, num_envs=4, backend="multiprocessing", num_workers=2, batch_size=3)
    with pytest.raises(BuffersError, match=r"^batch_size \(3\) must divide num_envs \(4\)"):
        pv.make(NestedEnv, num_envs=4, backend="serial", batch_size=3)
    with pytest.raises(ValueError, match="backend"):
        pv.make(NestedEnv, num_envs=4, backend="threads")


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_bad_actions_are_refused_before_sending(backend: str) -> None:
    with pv.make(NestedEnv, num_envs=2, backend=backend, num_workers=2) as envs:
        envs.reset(seed=0)
        for bad, message in [
            (np.array([0, 4]), r"^action\[1\]: expected a value in \[0, 4\), got 4$"),
            (np.array([0.5, 1.0]), r"^action: expected int64 values, got float64, which does not cast safely"),
            (np.array([0, 1, 2]), "expected a batch of 2 actions"),
            (np.zeros((2, 2), np.int64), "shape"),
        ]:
            with pytest.raises(SpaceError, match=message):
                envs.send(bad)
        obs, rewards, *_ = envs.step(np.array([1, 2]))  # still usable
        assert rewards.tolist() == [2.0, 3.0]


# ---------------------------------------------------------------------------
# Faults


def faulty(fault: str, bad_env: int = 1, num_envs: int = 2) -> list:
    return [functools.partial(NestedEnv, fault=fault if e == bad_env else None) for e in range(num_envs)]


def step_until_error(envs: Any, steps: int = 5) -> None:
    envs.reset(seed=0)
    for _ in range(steps):
        envs.step(np.zeros(envs.batch_size, np.int64))


def test_serial_env_that_raises_is_a_worker_error() -> None:
    with pv.make(faulty("raise"), num_envs=2, backend="serial") as envs:
        with pytest.raises(WorkerError, match="env 1 raised ValueError: the env broke") as info:
            step_until_error(envs)
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(WorkerError, match="broken"):
            envs.step(np.zeros(2, np.int64))


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_worker_that_raises_sends_its_traceback(start_method: str | None) -> None:
    envs = pv.make(
        faulty("raise", bad_env=3, num_envs=4),
        num_envs=4,
        backend="multiprocessing",
        num_workers=2,
        start_method=start_method,
    )
    pids = [p.pid for p in envs._processes]
    with envs:
        with pytest.raises(WorkerError) as info:
            step_until_error(envs)
        message = str(info.value)
        assert "worker 1 (envs 2-3)" in message and "env 3 raised" in message
        assert "Traceback" in message and "ValueError: the env broke on purpose" in message
        assert (info.value.worker, info.value.env) == (1, 3)
    assert all(gone(pid) for pid in pids)


def test_pinned_workers_each_run_on_one_cpu_of_the_parent() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    creator = functools.partial(gym.make, "CartPole-v1")
    with pv.make(creator, num_envs=3, backend="multiprocessing", num_workers=3, pin_workers=True, seed=1) as envs:
        pinned = [os.sched_getaffinity(p.pid) for p in envs._processes]
        assert pinned == [{cpus[w % len(cpus)]} for w in range(3)]
        envs.reset()
        obs, *_ = envs.step(np.ones(3, np.int64))
        with pv.make(creator, num_envs=3, backend="serial", seed=1) as serial:
            serial.reset()
            np.testing.assert_array_equal(obs, serial.step(np.ones(3, np.int64))[0])
    with pv.make(creator, num_envs=2, backend="multiprocessing", num_workers=2) as envs:
        assert all(os.sched_getaffinity(p.pid) == set(cpus) for p in envs._processes), "not pinned by default"


def test_worker_that_dies_is_detected() -> None:
    envs = pv.make(faulty("exit"), num_envs=2, backend="multiprocessing", num_workers=2, timeout=30)
    with envs:
        start = time.monotonic()
        with pytest.raises(WorkerError, match=r"worker 1 \(env 1, pid \d+\) exited with code 3"):
            step_until_error(envs)
        assert time.monotonic() - start < 10, "found well before the timeout"


def test_worker_killed_by_a_signal_is_detected() -> None:
    with pv.make(NestedEnv, num_envs=2, backend="multiprocessing", num_workers=2) as envs:
        envs.reset(seed=0)
        os.kill(envs._processes[0].pid, signal.SIGKILL)
        envs._processes[0].join(5)
        with pytest.raises(WorkerError, match="worker 0 .* killed by SIGKILL"):
            envs.step(np.zeros(2, np.int64))


def test_hung_worker_times_out() -> None:
    envs = pv.make(faulty("hang"), num_envs=2, backend="multiprocessing", num_workers=2, timeout=0.5)
    pids = [p.pid for p in envs._processes]
    with envs:
        with pytest.raises(WorkerTimeoutError, match=r"timed out after 0.5 s waiting for worker 1 \(env 1\)"):
            step_until_error(envs)
    assert all(gone(pid) for pid in pids), "close() terminates a hung worker"


def test_env_that_cannot_be_made_in_a_worker() -> None:
    creators = [NestedEnv, functools.partial(NestedEnv, fault="init")]
    with pv.make(creators, num_envs=2, backend="multiprocessing", num_workers=2) as envs:
        with pytest.raises(WorkerError, match="(?s)making its envs raised.*cannot make this env"):
            envs.reset()


def test_bad_observation_from_an_env_names_the_path() -> None:
    with pv.make(faulty("bad_obs"), num_envs=2, backend="multiprocessing", num_workers=2) as envs:
        with pytest.raises(WorkerError, match=r"SpaceError: obs\['image'\]"):
            step_until_error(envs)


def test_garbage_collection_stops_the_workers() -> None:
    envs = pv.make(NestedEnv, num_envs=2, backend="multiprocessing", num_workers=2)
    envs.reset(seed=0)
    pids = [p.pid for p in envs._processes]
    del envs
    gc.collect()
    assert all(gone(pid) for pid in pids)


@pytest.mark.slow
def test_sigkill_of_the_parent_leaves_nothing_behind() -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = {sys.path!r}
        import numpy as np
        import pufferrs.vector as pv
        from test_vector import NestedEnv
        envs = pv.make(NestedEnv, num_envs=2, backend="multiprocessing", num_workers=2)
        envs.reset(seed=0)
        envs.step(np.zeros(2, np.int64))
        print(*[p.pid for p in envs._processes], flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        memfds = [
            pid
            for pid in pids
            if any(
                "memfd:pufferrs" in os.readlink(f"/proc/{pid}/fd/{fd}")
                for fd in os.listdir(f"/proc/{pid}/fd")
                if os.path.exists(f"/proc/{pid}/fd/{fd}")
            )
        ]
        assert memfds == [], "workers map the region but keep no fd to it"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert all(gone(pid) for pid in pids), "orphaned workers exit, releasing the region"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_errors_are_exported() -> None:
    assert pufferrs.WorkerError is WorkerError
    assert issubclass(WorkerError, (PufferError, RuntimeError))
    assert issubclass(WorkerTimeoutError, (WorkerError, TimeoutError))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_pinned_observations_copy_to_the_gpu(backend: str) -> None:
    import torch

    with pv.make(NestedEnv, num_envs=4, backend=backend, num_workers=2, batch_size=2) as envs:
        envs.pin_memory()
        obs, _ = envs.reset(seed=0)
        host = torch.from_numpy(obs)
        assert host.is_pinned()
        device = host.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        assert device.cpu().numpy().tobytes() == obs.tobytes()


def test_pin_memory_without_cuda_is_a_clear_error() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pv.make(NestedEnv, num_envs=2, backend="serial") as envs:
        with pytest.raises(PufferError, match=r"^pin_memory\(\) needs a CUDA device"):
            envs.pin_memory()
