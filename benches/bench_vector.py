"""Vector-env throughput: pufferrs Serial / Multiprocessing (sync and async)
against gymnasium's SyncVectorEnv and AsyncVectorEnv(shared_memory=True).

Prints env steps per second (medians of repeats, all in this run), the
wall time per env step in microseconds, the vector env's own share of it
(its time per env step less that of a bare Python loop stepping the same
envs, resetting them at episode ends: for the vector envs that run in
this thread, the median over rounds of the difference within a round, as
the repeats take turns in short rounds, so that a change in the machine's
load touches both sides of a difference alike), and the ratio to the
gymnasium peer
(Serial vs SyncVectorEnv, Multiprocessing vs AsyncVectorEnv); for Serial
also the ratio of its own time to SyncVectorEnv's. SyncVectorEnv runs in
gymnasium's default autoreset mode (the next step resets) and in the
same-step mode that, like pufferrs, hands out ``final_obs``.

The vector envs that run in this process's thread (the bare loop,
SyncVectorEnv, Serial) also get the same figures in CPU time of the
thread (``cpu`` columns): on a shared machine, wall time includes the time
other processes take the CPU away, which can swamp a difference of a few
percent; CPU time does not (the cache misses they cause still count).

A second table gives the cost of ``FlattenObservation`` per call: a new row
per call (its default, safe under gymnasium's vector envs) against refilling
one row (``out=``).

    python benches/bench_vector.py [--num-envs 8] [--workers 2] [--repeats 40] [--seconds 0.05] [--check-bounds]
        [--envs noop-nested CartPole-v1]

Envs: a no-op env with the reference nested Dict space of
``pufferrs.demo`` (about 12.5 KB a row: the cost measured is the vector env's, not the env's), and
gymnasium's CartPole-v1. gymnasium's AsyncVectorEnv runs one process per
env (it cannot group envs in a worker); pufferrs runs ``--workers``
processes of ``num_envs / workers`` envs each.

``--check-bounds`` adds pufferrs Serial and Multiprocessing with
``check_bounds=True`` (every observation checked against its Box), with
their ratio to the same backend unchecked.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

import pufferrs.vector as pv
from pufferrs.demo import reference_space
from pufferrs.emulation import FlattenObservation


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


ENVS: dict[str, Callable[[], gym.Env]] = {"noop-nested": NoopNested, "CartPole-v1": cartpole}


def alternating(batch: int) -> Iterator[np.ndarray]:
    """Actions 0 and 1 in turn, for every env: CartPole episodes of some 40
    steps (0 alone ends them in 10, when resets would be most of the work)."""
    return itertools.cycle([np.zeros(batch, np.int64), np.ones(batch, np.int64)])


def calibrate(step: Callable[[], Any], seconds: float) -> int:
    """Warms `step` up (0.2 s) and returns how many calls take about `seconds`."""
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        step()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    return max(10, calls)


def timed(step: Callable[[], Any], calls: int) -> tuple[float, float]:
    """Wall seconds of `calls` calls, and CPU seconds of this thread (not
    the process: numpy's BLAS threads may spin meanwhile)."""
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        step()
    return time.perf_counter() - start, time.thread_time() - cpu


class Config:
    """One vector env under test: its step, env steps per call, and close."""

    def __init__(
        self, label: str, step: Callable[[], Any], steps_per_call: int, close: Callable[[], Any], in_process: bool
    ) -> None:
        self.label, self.step, self.steps_per_call, self.close = label, step, steps_per_call, close
        #: Whether all of its work runs in this thread, so that its CPU time is its cost.
        self.in_process = in_process
        self.rates: list[float] = []
        self.cpu_us: list[float] = []  # CPU time of this thread per env step

    def wall_us(self) -> list[float]:
        """Wall time per env step, one per round."""
        return [1e6 / rate for rate in self.rates]


def own(us: list[float], bare_us: list[float]) -> float:
    """The median over rounds of the time per env step beyond the bare
    loop's in the same round."""
    return statistics.median(a - b for a, b in zip(us, bare_us))


def pufferrs_config(
    label: str,
    creator: Callable,
    args: argparse.Namespace,
    backend: str,
    batch_size: int | None,
    check_bounds: bool = False,
) -> Config:
    envs = pv.make(
        creator,
        num_envs=args.num_envs,
        backend=backend,
        num_workers=args.workers,
        batch_size=batch_size,
        seed=0,
        check_bounds=check_bounds,
    )
    envs.async_reset(0)
    actions = alternating(envs.batch_size)
    recv, send = envs.recv, envs.send

    def step() -> None:
        recv()
        send(next(actions))

    return Config(label, step, envs.batch_size, envs.close, backend == "serial")


def bare_config(creator: Callable, args: argparse.Namespace) -> Config:
    """The envs stepped by a plain Python loop: what any vector env costs
    at least."""
    envs = [creator() for _ in range(args.num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)

    actions = alternating(1)

    def step() -> None:
        action = int(next(actions)[0])
        for env in envs:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return Config("bare Python loop", step, args.num_envs, lambda: [env.close() for env in envs], True)


def gymnasium_config(label: str, creator: Callable, args: argparse.Namespace, kind: str) -> Config:
    fns = [creator] * args.num_envs
    if kind == "sync":
        envs = gym.vector.SyncVectorEnv(fns, copy=False)
    elif kind == "sync-same-step":
        envs = gym.vector.SyncVectorEnv(fns, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    else:
        envs = gym.vector.AsyncVectorEnv(fns, shared_memory=True, copy=False)
    envs.reset(seed=0)
    actions = alternating(args.num_envs)
    return Config(label, lambda: envs.step(next(actions)), args.num_envs, envs.close, kind != "async")


def run_all(configs: list[Config], args: argparse.Namespace) -> None:
    """Repeats interleaved across configs, so that drift in the machine's
    load touches every config alike, in a new order each round: what runs
    just before a config changes its wall time on a loaded machine (one
    that waited on its workers gets the CPU back with the scheduler's
    credit for sleeping)."""
    calls = [calibrate(c.step, args.seconds) for c in configs]
    order = list(range(len(configs)))
    shuffle = random.Random(0).shuffle
    for _ in range(args.repeats):
        shuffle(order)
        for k in order:
            config, n = configs[k], calls[k]
            wall, cpu = timed(config.step, n)
            config.rates.append(n * config.steps_per_call / wall)
            config.cpu_us.append(1e6 * cpu / (n * config.steps_per_call))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.05, help="length of one timed repeat")
    parser.add_argument("--check-bounds", action="store_true", help="also time pufferrs with check_bounds=True")
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS), help="which envs to run")
    args = parser.parse_args()
    if args.num_envs % args.workers or (args.num_envs // 2) % (args.num_envs // args.workers):
        parser.error("num_envs must be a multiple of workers, and num_envs / 2 a multiple of envs per worker")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# {cpus} CPUs, python {sys.version.split()[0]}, gymnasium {gym.__version__}, "
        f"num_envs={args.num_envs}, pufferrs workers={args.workers}, "
        f"medians of {args.repeats} repeats of ~{args.seconds:g} s"
    )
    header = (
        f"{'env':<12} {'vector env':<44} {'steps/s':>10} {'us/step':>8} {'own us':>7} {'ratio':>7} {'own ratio':>9}"
        f" {'cpu us':>7} {'cpu own':>7} {'cpu own ratio':>13}"
    )
    print(header)
    print("-" * len(header))
    half = args.num_envs // 2
    for name in args.envs:
        creator = ENVS[name]
        configs: list[Config] = []
        try:
            configs.append(bare_config(creator, args))
            configs.append(gymnasium_config("gymnasium SyncVectorEnv", creator, args, "sync"))
            configs.append(gymnasium_config("gymnasium SyncVectorEnv (same-step)", creator, args, "sync-same-step"))
            configs.append(
                gymnasium_config(f"gymnasium AsyncVectorEnv(shm) [{args.num_envs} procs]", creator, args, "async")
            )
            configs.append(pufferrs_config("pufferrs Serial", creator, args, "serial", None))
            configs.append(
                pufferrs_config(
                    f"pufferrs Multiprocessing sync [{args.workers} procs]", creator, args, "multiprocessing", None
                )
            )
            configs.append(
                pufferrs_config(f"pufferrs Multiprocessing async batch={half}", creator, args, "multiprocessing", half)
            )
            if args.check_bounds:
                configs.append(pufferrs_config("pufferrs Serial, check_bounds", creator, args, "serial", None, True))
                configs.append(
                    pufferrs_config(
                        "pufferrs Multiprocessing sync, check_bounds", creator, args, "multiprocessing", None, True
                    )
                )
            # Those with worker processes take turns among themselves: on a
            # loaded machine their workers change how the scheduler treats
            # the others (a bare loop beside them ran at half speed while
            # Serial did not), which a difference of a few percent cannot bear.
            run_all([c for c in configs if c.in_process], args)
            run_all([c for c in configs if not c.in_process], args)
        finally:
            for config in configs:
                config.close()
        rates = [statistics.median(c.rates) for c in configs]
        cpu_us = [statistics.median(c.cpu_us) if c.in_process else None for c in configs]
        bare = configs[0]
        own_us = [
            own(c.wall_us(), bare.wall_us())
            if c.in_process
            else statistics.median(c.wall_us()) - statistics.median(bare.wall_us())
            for c in configs
        ]
        own_cpu = [own(c.cpu_us, bare.cpu_us) if c.in_process else None for c in configs]
        sync, async_, serial, multi = rates[1], rates[3], rates[4], rates[5]
        # Serial and Multiprocessing against gymnasium's peers; the
        # check_bounds rows against the same pufferrs backend unchecked.
        peers = [None, None, None, None, sync, async_, async_, serial, multi]
        for k, (config, rate, cpu, peer) in enumerate(zip(configs, rates, cpu_us, peers)):
            ratio = f"{rate / peer:6.2f}x" if peer else "      -"
            is_serial = config.label == "pufferrs Serial"
            own_ratio = f"{own_us[k] / own_us[1]:8.2f}x" if is_serial else "        -"
            own_cell = f"{own_us[k]:7.2f}" if k else "      -"
            cpu_cells = f"{'-':>7} {'-':>7} {'-':>13}"
            if cpu is not None:
                cpu_own = f"{own_cpu[k]:7.2f}" if k else "      -"
                cpu_ratio = f"{own_cpu[k] / own_cpu[1]:12.2f}x" if is_serial else f"{'-':>13}"
                cpu_cells = f"{cpu:7.2f} {cpu_own} {cpu_ratio}"
            print(
                f"{name:<12} {config.label:<44} {rate:>10,.0f} {1e6 / rate:>8.2f} {own_cell} {ratio:>7} {own_ratio}"
                f" {cpu_cells}"
            )
        print()
    print(
        "ratio: steps/s of pufferrs Serial / SyncVectorEnv, pufferrs Multiprocessing / AsyncVectorEnv"
        + ("; check_bounds / the same pufferrs backend unchecked" if args.check_bounds else "")
        + "; own us: us/step less the bare loop's; own ratio: Serial's own us / SyncVectorEnv's;"
        + " cpu: the same in CPU time of this thread, for the vector envs that run in it"
    )
    bench_flatten_observation(args)
    bench_pinned(args)


def bench_flatten_observation(args: argparse.Namespace) -> None:
    """FlattenObservation.step: a new row per call against one row refilled."""
    print("\n# FlattenObservation.step, us per call (the env's own step included)")
    for name in args.envs:
        creator = ENVS[name]
        probe = FlattenObservation(creator())
        shape, dtype = probe.observation_space.shape, probe.observation_space.dtype
        wrapped = {
            "bare env": creator(),
            "new row per call": FlattenObservation(creator()),
            "one row, out=": FlattenObservation(creator(), out=np.zeros(shape, dtype)),
        }
        steps = []
        for env in wrapped.values():
            env.reset(seed=0)

            def step(env: gym.Env = env, actions: Iterator[int] = itertools.cycle((0, 1))) -> None:
                if any(env.step(next(actions))[2:4]):
                    env.reset()

            steps.append(Config("", step, 1, env.close, True))
        run_all(steps, args)
        times = {label: 1e6 / statistics.median(c.rates) for label, c in zip(wrapped, steps)}
        row_bytes = probe.layout.row_bytes
        cells = "  ".join(f"{label} {us:6.2f}" for label, us in times.items())
        extra = times["new row per call"] - times["one row, out="]
        print(f"{name:<12} row {row_bytes:>6} B  {cells}  new row costs {extra:+.2f} us")
        for config in steps:
            config.close()


def bench_pinned(args: argparse.Namespace) -> None:
    """Host-to-device copies of a batch of observation rows, pageable
    (torch.from_numpy of the shared rows) vs page-locked in place by
    ``pin_memory()``. Needs CUDA; skipped otherwise."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        print("\n# pinned host-to-device copy: skipped (no CUDA device)")
        return
    print(f"\n# host-to-device copy of one batch of noop-nested rows, {torch.cuda.get_device_name()}")
    for pinned in (False, True):
        with pv.make(NoopNested, num_envs=args.num_envs, backend="serial") as envs:
            if pinned:
                envs.pin_memory()
            obs, _ = envs.reset(seed=0)
            host = torch.from_numpy(obs)
            device = torch.empty(host.shape, dtype=host.dtype, device="cuda")

            def copy() -> None:
                device.copy_(host, non_blocking=True)
                torch.cuda.synchronize()

            n = calibrate(copy, args.seconds)
            rate = statistics.median(n / timed(copy, n) for _ in range(args.repeats))
            gbs = rate * host.numel() * host.element_size() / 1e9
            print(f"{'pinned' if pinned else 'pageable':<10} {1e6 / rate:8.1f} us/copy {gbs:8.2f} GB/s")


if __name__ == "__main__":
    main()
