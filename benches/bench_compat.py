"""The adapters and the Ray backend against what they replace, in one run.

- Stable-Baselines3: ``SubprocVecEnv`` (one process per env) against
  ``pufferrs.compat.SB3VecEnv`` (Multiprocessing, ``--workers`` processes,
  and as many processes as the peer: on a loaded machine the scheduler
  gives more processes more of the cores), and the Multiprocessing
  backend's own API for what the adapter costs.
- gymnasium: ``AsyncVectorEnv`` (shared memory, one process per env)
  against ``pufferrs.compat.GymnasiumVectorEnv`` (Multiprocessing), both
  with their defaults (copies of the observations, NEXT_STEP autoreset)
  and both without copies.
- Ray: one actor per env, each step one remote call per env returning
  Python objects (PufferLib's Ray design), against the pufferrs Ray
  backend (``--workers`` actors, one packed answer per actor per step),
  on a local Ray of ``--workers`` CPUs; and what one step costs with Ray
  on this machine (two actors of one env each).

Prints env steps per second (medians of interleaved repeats), the wall
time per env step, and the ratio to the peer.

    python benches/bench_compat.py [--num-envs 8] [--ray-envs 16] [--workers 2] [--repeats 5] [--seconds 0.4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

import gymnasium as gym
import numpy as np

import pufferrs.vector as pv
from bench_vector import Config, NoopNested, cartpole, run_all
from pufferrs.compat import GymnasiumVectorEnv, SB3VecEnv


def print_rows(env: str, configs: list[Config], peers: list[int | None]) -> None:
    rates = [statistics.median(c.rates) for c in configs]
    for config, rate, peer in zip(configs, rates, peers):
        ratio = f"{rate / rates[peer]:6.2f}x" if peer is not None else "      -"
        print(f"{env:<12} {config.label:<52} {rate:>10,.0f} {1e6 / rate:>8.2f} {ratio:>7}")


def stepping(label: str, envs: Any, step: Any, num_envs: int) -> Config:
    actions = np.zeros(num_envs, np.int64)
    return Config(label, lambda: step(actions), num_envs, envs.close, in_process=False)


def sb3_and_gymnasium(args: argparse.Namespace) -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    n, w = args.num_envs, args.workers
    for name, creator in [("CartPole-v1", cartpole), ("noop-nested", NoopNested)]:
        configs: list[Config] = []
        peers: list[int | None] = []
        try:
            if name == "CartPole-v1":  # SB3 stacks no nested observations
                sb3 = SubprocVecEnv([creator] * n)
                sb3.reset()
                configs.append(stepping(f"SB3 SubprocVecEnv [{n} procs]", sb3, sb3.step, n))
                peers.append(None)
                for workers in sorted({w, n}):
                    ours = SB3VecEnv([creator] * n, num_workers=workers)
                    ours.reset()
                    configs.append(stepping(f"pufferrs SB3VecEnv [{workers} procs]", ours, ours.step, n))
                    peers.append(0)
                raw = pv.make(creator, num_envs=n, backend="multiprocessing", num_workers=w)
                raw.reset(seed=0)
                configs.append(stepping(f"pufferrs Multiprocessing, its own API [{w} procs]", raw, raw.step, n))
                peers.append(0)
            for copy in (True, False):
                first = len(configs)
                peer = gym.vector.AsyncVectorEnv([creator] * n, shared_memory=True, copy=copy)
                peer.reset(seed=0)
                configs.append(stepping(f"gymnasium AsyncVectorEnv copy={copy} [{n} procs]", peer, peer.step, n))
                peers.append(None)
                for workers in sorted({w, n}):
                    ours = GymnasiumVectorEnv([creator] * n, num_workers=workers, copy=copy)
                    ours.reset(seed=0)
                    label = f"pufferrs GymnasiumVectorEnv copy={copy} [{workers} procs]"
                    configs.append(stepping(label, ours, ours.step, n))
                    peers.append(first)
            run_all(configs, args)
        finally:
            for config in configs:
                config.close()
        print_rows(name, configs, peers)
        print()


class OneEnvActor:
    """PufferLib's Ray design: an actor per env worker, stepped by one
    remote call that returns the env's step as Python objects."""

    def __init__(self, creator: Any, seed: int) -> None:
        self.env = creator()
        self.env.reset(seed=seed)

    def step(self, action: int) -> tuple:
        obs, reward, terminal, truncation, info = self.env.step(action)
        if terminal or truncation:
            obs, _ = self.env.reset()
        return obs, reward, terminal, truncation, info


def ray_backends(args: argparse.Namespace) -> None:
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    # The actors cannot import this script's modules: they travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules["bench_vector"])
    n, w = args.ray_envs, args.workers
    configs: list[Config] = []
    try:
        # Actors reserve no CPUs, so that every design fits on the same Ray
        # at once: Ray's CPUs are placement tokens, the cores are shared.
        actor_class = ray.remote(num_cpus=0)(OneEnvActor)
        actors = [actor_class.remote(cartpole, i) for i in range(n)]

        def one_per_env(actions: np.ndarray) -> tuple:
            results = ray.get([actor.step.remote(int(a)) for actor, a in zip(actors, actions)])
            obs, rewards, terminals, truncations, infos = zip(*results)
            return np.stack(obs), np.array(rewards), np.array(terminals), np.array(truncations), infos

        ray.get([actor.step.remote(0) for actor in actors])
        configs.append(
            Config(
                f"Ray, one actor per env [{n} actors]", lambda: one_per_env(np.zeros(n)), n, lambda: 0, in_process=False
            )
        )
        ours = pv.make(cartpole, num_envs=n, backend="ray", num_workers=w, num_cpus=0)
        ours.reset(seed=0)
        configs.append(stepping(f"pufferrs Ray backend, sync [{w} actors]", ours, ours.step, n))
        asynchronous = pv.make(cartpole, num_envs=n, backend="ray", num_workers=w, num_cpus=0, batch_size=n // w)
        asynchronous.async_reset(0)
        actions = np.zeros(n // w, np.int64)

        def async_step() -> None:
            asynchronous.recv()
            asynchronous.send(actions)

        configs.append(
            Config(
                f"pufferrs Ray backend, async batch={n // w}", async_step, n // w, asynchronous.close, in_process=False
            )
        )
        latency = pv.make(cartpole, num_envs=w, backend="ray", num_workers=w, num_cpus=0)
        latency.reset(seed=0)
        configs.append(stepping(f"pufferrs Ray backend, 1 env per actor [{w} actors]", latency, latency.step, w))
        run_all(configs, args)
        print_rows("CartPole-v1", configs, [None, 0, 0, None])
        step_ms = 1e3 / statistics.median(configs[3].rates) * w
        print(f"\none step of {w} actors of one env each (a round trip through Ray): {step_ms:.2f} ms")
    finally:
        for config in configs:
            config.close()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--ray-envs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one timed repeat")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray table")
    parser.add_argument("--only-ray", action="store_true", help="only the Ray table")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# {cpus} CPUs, python {sys.version.split()[0]}, gymnasium {gym.__version__}, num_envs={args.num_envs}, "
        f"ray_envs={args.ray_envs}, pufferrs workers={args.workers}, medians of {args.repeats} repeats of "
        f"~{args.seconds:g} s"
    )
    header = f"{'env':<12} {'vector env':<52} {'steps/s':>10} {'us/step':>8} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    if not args.only_ray:
        sb3_and_gymnasium(args)
    if not args.no_ray:
        ray_backends(args)
    print("\nratio: each pufferrs row / the row it replaces (SubprocVecEnv, AsyncVectorEnv, one Ray actor per env)")


if __name__ == "__main__":
    main()
