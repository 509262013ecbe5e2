"""Envs written in Rust: native CartPole (``pufferrs/CartPole-rs``)
stepped by pufferrs against gymnasium's CartPole-v1, in one run.

Part 1, env steps per second with random actions (drawn before timing,
the same for everyone), for each number of envs:

- native CartPole on Serial with 1 and 2 threads, and on Multiprocessing
  with 1 and 2 worker processes;
- gymnasium's CartPole-v1 on pufferrs Serial and on gymnasium's
  ``SyncVectorEnv``;
- rlox's Rust ``VecEnv`` (CartPole), when ``import rlox`` works.

Every configuration takes turns in short rounds (``--seconds`` each,
``--repeats`` rounds), so that a change in the machine's load touches all
of them alike; the figure is the median over rounds, and ratios are to
``SyncVectorEnv`` and to rlox in the same run.

Part 2, agent steps per second of the multi-agent ``pufferrs/Rendezvous-rs``
against pufferrs's Python ``Rendezvous`` (the same game, without action
masks), both on Serial with ``--agent-envs`` envs of 3 agents, random
actions; agent steps count the rows that acted.

Part 2b, how Multiprocessing scales with native envs (``--scaling``,
``ENV:N`` items): the same ``N`` envs on Serial with one thread (what
stepping them costs in this process) and on Multiprocessing with one and
two workers, interleaved; time per batch (median), two workers' speed
over one worker's, and the parent's CPU time per batch with two workers
(it waits by yielding its core: see ``rust/core/src/sync.rs``); then two
workers pinned to one core each (``pin_workers=True``).

Part 3 (``--train-steps``, 0 to skip), ``pufferrs train`` with CartPole-v1's
settings on CartPole-v1 and on the native CartPole: env steps per second,
the trainer's time split (env, inference, learning) and the mean return of
the last updates at the same env steps.

    python benches/bench_native.py [--sizes 8 128 1024] [--repeats 15] [--seconds 0.2] [--agent-envs 32]
        [--train-steps 100000] [--scaling pufferrs/CartPole-rs:1024 pufferrs/Nested-rs:512 ...]
    python benches/bench_native.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import pufferrs.envs  # noqa: F401 - registers the built-in envs
import pufferrs.vector as pv

NATIVE = "pufferrs/CartPole-rs"


class Stepper:
    """One configuration: a vector env and its step on a batch of actions."""

    def __init__(self, label: str, make: Callable[[], Any], step: Callable[[Any, np.ndarray], Any]) -> None:
        self.label, self.make, self.step_fn = label, make, step
        self.env: Any = None
        self.rates: list[float] = []

    def open(self) -> None:
        self.env = self.make()

    def run(self, actions: list[np.ndarray], seconds: float) -> None:
        """Steps for about ``seconds``, cycling through ``actions``; keeps the rate."""
        env, step, n = self.env, self.step_fn, len(actions)
        steps, k = 0, 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            step(env, actions[k % n])
            k += 1
            if k % 16 == 0 and time.perf_counter() >= deadline:
                break
        steps = k * len(actions[0])
        self.rates.append(steps / (time.perf_counter() - start))

    def close(self) -> None:
        if self.env is not None and hasattr(self.env, "close"):
            self.env.close()


def pufferrs_stepper(label: str, env_id: str, num_envs: int, **kwargs: Any) -> Stepper:
    def make() -> Any:
        envs = pv.make(lambda: gym.make(env_id), num_envs=num_envs, **kwargs)
        envs.reset(seed=0)
        return envs

    return Stepper(label, make, lambda envs, actions: envs.step(actions))


def gymnasium_stepper(num_envs: int) -> Stepper:
    def make() -> Any:
        envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(num_envs)])
        envs.reset(seed=0)
        return envs

    return Stepper("gymnasium SyncVectorEnv, CartPole-v1", make, lambda envs, actions: envs.step(actions))


def rlox_stepper(num_envs: int) -> Stepper | None:
    try:
        import rlox
    except ImportError:
        return None

    def make() -> Any:
        envs = rlox.VecEnv(num_envs, seed=0)
        envs.reset_all()
        return envs

    return Stepper("rlox VecEnv, its CartPole", make, lambda envs, actions: envs.step_all(actions))


def steppers(num_envs: int, workers: int) -> list[Stepper]:
    found = [
        pufferrs_stepper("pufferrs Serial, native, 1 thread", NATIVE, num_envs, threads=1),
        pufferrs_stepper("pufferrs Serial, native, 2 threads", NATIVE, num_envs, threads=2),
        pufferrs_stepper(
            "pufferrs Multiprocessing, native, 1 worker", NATIVE, num_envs, backend="multiprocessing", num_workers=1
        ),
    ]
    if workers > 1 and num_envs % workers == 0:
        found.append(
            pufferrs_stepper(
                f"pufferrs Multiprocessing, native, {workers} workers",
                NATIVE,
                num_envs,
                backend="multiprocessing",
                num_workers=workers,
            )
        )
    found += [pufferrs_stepper("pufferrs Serial, CartPole-v1", "CartPole-v1", num_envs), gymnasium_stepper(num_envs)]
    rlox = rlox_stepper(num_envs)
    if rlox is not None:
        found.append(rlox)
    return found


def bench_stepping(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    for num_envs in args.sizes:
        found = steppers(num_envs, args.workers)
        actions = [rng.integers(0, 2, num_envs).astype(np.int64) for _ in range(64)]
        rlox_actions = [a.astype(np.uint32) for a in actions]
        for stepper in found:
            stepper.open()
        try:
            for _ in range(args.repeats):
                for stepper in found:
                    stepper.run(rlox_actions if stepper.label.startswith("rlox") else actions, args.seconds)
        finally:
            for stepper in found:
                stepper.close()
        rates = {s.label: statistics.median(s.rates) for s in found}
        sync = rates["gymnasium SyncVectorEnv, CartPole-v1"]
        rlox = rates.get("rlox VecEnv, its CartPole")
        print(f"\n{num_envs} envs, random actions: env steps/s (median of {args.repeats} rounds), load {load()}")
        print(f"{'':46} {'steps/s':>12} {'x SyncVectorEnv':>16} {'x rlox':>8}")
        for label, rate in rates.items():
            vs_rlox = f"{rate / rlox:8.2f}" if rlox else f"{'-':>8}"
            print(f"{label:46} {rate:12,.0f} {rate / sync:16.1f} {vs_rlox}")
        one = rates.get("pufferrs Multiprocessing, native, 1 worker")
        two = rates.get(f"pufferrs Multiprocessing, native, {args.workers} workers")
        if one and two:
            print(f"Multiprocessing, native: {args.workers} workers / 1 worker = {two / one:.2f}")


def bench_agents(args: argparse.Namespace) -> None:
    from pufferrs.multiagent_envs import Rendezvous

    rng = np.random.default_rng(0)
    found = {
        "pufferrs Serial, Rendezvous-rs (native)": lambda: gym.make("pufferrs/Rendezvous-rs"),
        "pufferrs Serial, Rendezvous (Python)": Rendezvous,
    }
    envs = {label: pv.make(make, num_envs=args.agent_envs, threads=1) for label, make in found.items()}
    rates: dict[str, list[float]] = {label: [] for label in found}
    try:
        for vecenv in envs.values():
            vecenv.reset(seed=0)
        actions = [rng.integers(0, 4, args.agent_envs * 3) for _ in range(64)]
        for _ in range(args.repeats):
            for label, vecenv in envs.items():
                agent_steps, k = 0, 0
                start = time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    masks = vecenv.buffers.array("masks")
                    agent_steps += int(masks.sum())
                    vecenv.step(actions[k % 64])
                    k += 1
                rates[label].append(agent_steps / (time.perf_counter() - start))
    finally:
        for vecenv in envs.values():
            vecenv.close()
    medians = {label: statistics.median(r) for label, r in rates.items()}
    python = medians["pufferrs Serial, Rendezvous (Python)"]
    print(
        f"\n{args.agent_envs} envs of 3 agents, random actions: agent steps/s (median of {args.repeats}), load {load()}"
    )
    for label, rate in medians.items():
        print(f"{label:46} {rate:12,.0f} {rate / python:8.1f}x")


def bench_scaling(args: argparse.Namespace) -> None:
    """Part 2b: see the module docstring."""
    rng = np.random.default_rng(0)
    print(f"\nMultiprocessing with native envs, 1 and 2 workers (median of {args.repeats} rounds), load {load()}")
    print(
        f"{'':32} {'Serial 1 thread':>16} {'1 worker':>10} {'2 workers':>10} {'2 / 1':>6} {'parent CPU, 2':>14} "
        f"{'2 pinned':>10} {'/ 1':>6}"
    )
    for item in args.scaling:
        env_id, _, count = item.rpartition(":")
        num_envs = int(count)
        configs = {
            "serial": dict(threads=1),
            "one": dict(backend="multiprocessing", num_workers=1),
            "two": dict(backend="multiprocessing", num_workers=2),
            "pinned": dict(backend="multiprocessing", num_workers=2, pin_workers=True),
        }
        made = {
            name: pv.make(lambda: gym.make(env_id), num_envs=num_envs, seed=0, **kw) for name, kw in configs.items()
        }
        space = made["serial"].action_space
        space.seed(int(rng.integers(1 << 31)))
        actions = [space.sample() for _ in range(16)]
        times: dict[str, list[float]] = {name: [] for name in made}
        parent: list[float] = []
        try:
            for envs in made.values():
                envs.reset(seed=0)
            for _ in range(args.repeats):
                for name, envs in made.items():
                    batches, cpu, start = 0, time.process_time(), time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        for a in actions:
                            envs.step(a)
                        batches += len(actions)
                    times[name].append((time.perf_counter() - start) / batches)
                    if name == "two":
                        parent.append((time.process_time() - cpu) / batches)
        finally:
            for envs in made.values():
                envs.close()
        t = {name: statistics.median(v) * 1e6 for name, v in times.items()}
        print(
            f"{env_id + ', ' + str(num_envs) + ' envs':32} {t['serial']:13.1f} us {t['one']:7.1f} us {t['two']:7.1f} us "
            f"{t['one'] / t['two']:5.2f}x {statistics.median(parent) * 1e6:11.1f} us "
            f"{t['pinned']:7.1f} us {t['one'] / t['pinned']:5.2f}x"
        )


def bench_training(args: argparse.Namespace) -> None:
    import torch

    from pufferrs.train import Config, Trainer, apply_process_settings

    base = Config.for_env("CartPole-v1", total_steps=args.train_steps, seed=0)
    print(f"\npufferrs train, CartPole-v1's settings, {args.train_steps} env steps, load {load()}")
    print(f"{'env':24} {'steps/s':>10} {'return':>8} {'env s':>7} {'infer s':>8} {'learn s':>8} {'total s':>8}")
    for env in ("CartPole-v1", NATIVE):
        config = dataclasses.replace(base, env=env)
        apply_process_settings(config)
        torch.set_num_threads(1)
        with Trainer(config) as trainer:
            summary = trainer.train()
        print(
            f"{env:24} {summary['sps']:10,.0f} {summary['mean_return_last_5_updates']:8.1f} "
            f"{summary['perf/env']:7.2f} {summary['perf/inference']:8.2f} {summary['perf/learn']:8.2f} "
            f"{summary['seconds']:8.2f}"
        )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 128, 1024])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--agent-envs", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=100_000)
    parser.add_argument(
        "--scaling",
        nargs="*",
        default=[
            f"{NATIVE}:128",
            f"{NATIVE}:1024",
            f"{NATIVE}:4096",
            "pufferrs/Nested-rs:128",
            "pufferrs/Nested-rs:512",
        ],
        help="ENV:N items for part 2b (none: skip it)",
    )
    parser.add_argument("--quick", action="store_true", help="smallest settings: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.seconds, args.train_steps, args.agent_envs = [8], 1, 0.01, 4096, 4
        args.scaling = [f"{NATIVE}:8"]
    bench_stepping(args)
    bench_agents(args)
    if args.scaling:
        bench_scaling(args)
    if args.train_steps:
        bench_training(args)


if __name__ == "__main__":
    main()
