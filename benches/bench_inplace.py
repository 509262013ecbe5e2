"""Envs that step all their rows at once, through pufferrs: gymnasium's
numpy ``CartPoleVectorEnv`` (``gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")``) stepped bare, and the same
vector env as one env of a pufferrs Serial vector env (and split over two
Multiprocessing workers), beside pufferrs Serial over Python CartPole
envs (one ``gymnasium.make`` each) and gymnasium's ``SyncVectorEnv`` of
them; EnvPool bare and through pufferrs where it is installed.

Prints env steps per second (a vector env's step of ``n`` envs is ``n``
steps, its masked reset steps included, as in its own stepping), medians
over rounds in which every contestant takes a turn of about ``--seconds``
(interleaved, so that a change in the machine's load touches all alike),
and each one's ratio to the bare CartPoleVectorEnv and, for a vector env
run through pufferrs, to the same env stepped bare; the load average
before and after. Actions are drawn before timing, from a few batches used in turn.

    python benches/bench_inplace.py [--sizes 8 128 1024] [--rounds 15] [--seconds 0.1] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import pufferrs.vector as pv


def cartpole_vec(size: int) -> Any:
    return gym.make_vec("CartPole-v1", size, vectorization_mode="vector_entry_point")


def python_cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


def batches(size: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 2, size).astype(np.int64) for _ in range(count)]


class Contestant:
    """A way of stepping ``size`` envs: ``step()`` steps all of them once."""

    def __init__(self, name: str, size: int, make: Callable[[], tuple[Callable[[], Any], Callable[[], Any]]]):
        self.name, self.size = name, size
        self.step, self.close = make()
        self.rates: list[float] = []

    def turn(self, seconds: float) -> None:
        calls, start = 0, time.perf_counter()
        while True:
            for _ in range(4):
                self.step()
            calls += 4
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        self.rates.append(calls * self.size / elapsed)


def bare(make_env: Callable[[], Any], size: int) -> Callable[[], tuple]:
    def make() -> tuple:
        env = make_env()
        env.reset(seed=0)
        pool = batches(size)
        k = [0]

        def step() -> Any:
            k[0] += 1
            return env.step(pool[k[0] % len(pool)])

        return step, env.close

    return make


def through_pufferrs(creator: Any, num_envs: int, size: int, **kwargs: Any) -> Callable[[], tuple]:
    def make() -> tuple:
        envs = pv.make(creator, num_envs=num_envs, seed=0, **kwargs)
        envs.reset()
        pool = batches(size)
        k = [0]

        def step() -> Any:
            k[0] += 1
            return envs.step(pool[k[0] % len(pool)])

        return step, envs.close

    return make


def contestants(size: int, workers: int, quick: bool) -> list[Contestant]:
    out = [
        Contestant("CartPoleVectorEnv, bare", size, bare(functools.partial(cartpole_vec, size), size)),
        Contestant("  through pufferrs Serial", size, through_pufferrs(functools.partial(cartpole_vec, size), 1, size)),
    ]
    if size % workers == 0 and size >= workers:
        out.append(
            Contestant(
                f"  through pufferrs Multiprocessing ({workers} workers)",
                size,
                through_pufferrs(
                    functools.partial(cartpole_vec, size // workers),
                    workers,
                    size,
                    backend="multiprocessing",
                    num_workers=workers,
                ),
            )
        )
    if size <= 128 or not quick:
        out.append(Contestant("Python CartPole, pufferrs Serial", size, through_pufferrs(python_cartpole, size, size)))
        out.append(
            Contestant(
                "Python CartPole, gymnasium SyncVectorEnv",
                size,
                bare(lambda: gym.vector.SyncVectorEnv([python_cartpole] * size), size),
            )
        )
    try:
        import envpool
    except ImportError:
        return out
    make = functools.partial(envpool.make, "CartPole-v1", env_type="gymnasium", num_envs=size, seed=0)
    out.append(Contestant("EnvPool CartPole, bare", size, bare(make, size)))
    out.append(Contestant("  through pufferrs Serial", size, through_pufferrs(make, 1, size)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 128, 1024])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="sizes 8 and 64, 2 rounds of 0.02 s (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.seconds = [8, 64], 2, 0.02
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cpus: {os.cpu_count()}")
    print(f"{args.rounds} interleaved rounds of {args.seconds} s each; env steps/s, medians\n")
    for size in args.sizes:
        field = contestants(size, args.workers, args.quick)
        try:
            for c in field:  # a warm-up turn, not counted
                c.turn(args.seconds / 4)
                c.rates.clear()
            for _ in range(args.rounds):
                for c in field:
                    c.turn(args.seconds)
        finally:
            for c in field:
                c.close()
        first = statistics.median(field[0].rates)
        print(f"{size} envs")
        print(f"  {'':50} {'steps/s':>12} {'vs CartPoleVectorEnv':>21} {'vs its bare env':>16}")
        own = first
        for c in field:
            rate = statistics.median(c.rates)
            # Indented rows are the env above them run through pufferrs.
            through = c.name.startswith("  ")
            if not through:
                own = rate
            mine = f"{rate / own:15.2f}x" if through else ""
            print(f"  {c.name:50} {rate:12,.0f} {rate / first:20.2f}x {mine}")
        print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
