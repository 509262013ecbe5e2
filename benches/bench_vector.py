"""Vector-env throughput: pufferrs Serial / Multiprocessing (sync and async)
against gymnasium's SyncVectorEnv and AsyncVectorEnv(shared_memory=True).

Prints env steps per second (medians of repeats, all in this run), the
per-step overhead in microseconds (1 / SPS per env, i.e. wall time per env
step), and the ratio to the gymnasium peer (Serial vs SyncVectorEnv,
Multiprocessing vs AsyncVectorEnv).

    python benches/bench_vector.py [--num-envs 8] [--workers 2] [--repeats 5] [--seconds 0.4]

Envs: a no-op env with the reference nested Dict space of DESIGN.md (about
12.5 KB a row: the cost measured is the vector env's, not the env's), and
gymnasium's CartPole-v1. gymnasium's AsyncVectorEnv runs one process per
env (it cannot group envs in a worker); pufferrs runs ``--workers``
processes of ``num_envs / workers`` envs each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

import pufferrs.vector as pv


def reference_space() -> gs.Dict:
    return gs.Dict(
        image=gs.Box(0, 255, (3, 64, 64), np.uint8),
        vector=gs.Box(-1, 1, (32,), np.float32),
        inv=gs.Dict(items=gs.MultiDiscrete([10] * 8), hp=gs.Discrete(100)),
        tuple=gs.Tuple((gs.Box(-1, 1, (4,), np.float32), gs.Discrete(5))),
    )


class NoopNested(gym.Env):
    """Returns one fixed observation of the reference space; never ends."""

    def __init__(self) -> None:
        self.observation_space = reference_space()
        self.action_space = gs.Discrete(2)
        self.observation_space.seed(0)
        self.obs = self.observation_space.sample()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        return self.obs, {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        return self.obs, 0.0, False, False, {}


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


def measure(step: Callable[[], Any], steps_per_call: int, seconds: float, repeats: int) -> float:
    """Median env steps per second of `step` over `repeats` timed runs."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 4:  # warm up and calibrate
        step()
        calls += 1
    per_run = max(10, int(calls * 4 * (seconds / 4) / max(time.perf_counter() - start, 1e-9)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_run):
            step()
        rates.append(per_run * steps_per_call / (time.perf_counter() - start))
    return statistics.median(rates)


def run_pufferrs(creator: Callable, args: argparse.Namespace, backend: str, batch_size: int | None) -> float:
    with pv.make(creator, num_envs=args.num_envs, backend=backend, num_workers=args.workers,
                 batch_size=batch_size, seed=0) as envs:
        envs.async_reset(0)
        batch = envs.batch_size
        actions = np.zeros(batch, dtype=np.int64)
        recv, send = envs.recv, envs.send

        def step() -> None:
            recv()
            send(actions)

        rate = measure(step, batch, args.seconds, args.repeats)
        recv()
        return rate


def run_gymnasium(creator: Callable, args: argparse.Namespace, kind: str) -> float:
    fns = [creator] * args.num_envs
    if kind == "sync":
        envs = gym.vector.SyncVectorEnv(fns, copy=False)
    else:
        envs = gym.vector.AsyncVectorEnv(fns, shared_memory=True, copy=False)
    try:
        envs.reset(seed=0)
        actions = np.zeros(args.num_envs, dtype=np.int64)
        return measure(lambda: envs.step(actions), args.num_envs, args.seconds, args.repeats)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one timed repeat")
    args = parser.parse_args()
    if args.num_envs % args.workers or (args.num_envs // 2) % (args.num_envs // args.workers):
        parser.error("num_envs must be a multiple of workers, and num_envs / 2 a multiple of envs per worker")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# {cpus} CPUs, python {sys.version.split()[0]}, gymnasium {gym.__version__}, "
          f"num_envs={args.num_envs}, pufferrs workers={args.workers}, "
          f"medians of {args.repeats} repeats of ~{args.seconds:g} s")
    header = f"{'env':<12} {'vector env':<44} {'steps/s':>10} {'us/step':>8} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    half = args.num_envs // 2
    for name, creator in [("noop-nested", NoopNested), ("CartPole-v1", cartpole)]:
        sync = run_gymnasium(creator, args, "sync")
        async_ = run_gymnasium(creator, args, "async")
        rows = [
            ("gymnasium SyncVectorEnv", sync, None),
            (f"gymnasium AsyncVectorEnv(shm) [{args.num_envs} procs]", async_, None),
            ("pufferrs Serial", run_pufferrs(creator, args, "serial", None), sync),
            (f"pufferrs Multiprocessing sync [{args.workers} procs]",
             run_pufferrs(creator, args, "multiprocessing", None), async_),
            (f"pufferrs Multiprocessing async batch={half}",
             run_pufferrs(creator, args, "multiprocessing", half), async_),
        ]
        for label, rate, peer in rows:
            ratio = f"{rate / peer:6.1f}x" if peer else "      -"
            print(f"{name:<12} {label:<44} {rate:>10,.0f} {1e6 / rate:>8.2f} {ratio:>7}")
        print()
    print("ratio: pufferrs Serial / SyncVectorEnv; pufferrs Multiprocessing / AsyncVectorEnv")


if __name__ == "__main__":
    main()
