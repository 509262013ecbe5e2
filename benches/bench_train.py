"""End-to-end PPO training throughput: env steps per second of
``pufferrs.train.Trainer`` (rollout + update), with the time split into
env stepping, policy inference and learning.

    python benches/bench_train.py [--num-envs 16] [--workers 2] [--updates 4] [--repeats 3] [--device cpu]

For CartPole-v1 and the built-in nested-observation task (pufferrs/Nested-v0),
the same trainer and policy run on:

- pufferrs Serial, Multiprocessing (``--workers`` processes) and
  Multiprocessing with asynchronous batches (``env_batch_size = num_envs / 2``);
- the peers: gymnasium's SyncVectorEnv and AsyncVectorEnv (shared memory,
  one process per env, SAME_STEP autoreset) of the same envs wrapped in
  ``pufferrs.emulation.FlattenObservation`` (so that the policy sees the same
  rows), behind a small adapter to the recv/send API that hands the
  trainer gymnasium's ``final_obs`` for its truncation bootstrap.

Columns: steps/s (median of repeats, each ``--updates`` updates after one
warm-up update, configs interleaved), then the share of wall time spent
waiting on envs (recv + send), in policy inference (forward, sampling,
storing the step) and in learning (GAE and the PPO epochs); "ratio" is
steps/s over the gymnasium peer (Serial and the sync/async Multiprocessing
rows against SyncVectorEnv and AsyncVectorEnv). Each env uses its preset
from ``pufferrs.train.PRESETS`` (hidden size, epochs, minibatches) with
``num_envs`` and ``batch_size = num_envs * 128`` set here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pufferrs.emulation import FlattenObservation
from pufferrs.train import Config, EnvCreator, Trainer, apply_process_settings, resolve_device


class GymnasiumVector:
    """gymnasium's SyncVectorEnv / AsyncVectorEnv behind the recv/send API
    the trainer uses (synchronous: every recv returns every env)."""

    def __init__(self, env_id: str, num_envs: int, kind: str, seed: int):
        creator = _FlatCreator(env_id)
        fns = [creator] * num_envs
        mode = gym.vector.AutoresetMode.SAME_STEP
        if kind == "sync":
            self.envs = gym.vector.SyncVectorEnv(fns, copy=False, autoreset_mode=mode)
        else:
            self.envs = gym.vector.AsyncVectorEnv(fns, shared_memory=True, copy=False, autoreset_mode=mode)
        probe = creator()
        self.layout = probe.layout
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        probe.close()
        self.num_envs = num_envs
        self.seed = seed
        self._env_ids = np.arange(num_envs)
        self._masks = np.ones(num_envs, bool)
        self._infos: list[dict] = [{} for _ in range(num_envs)]
        self._next: tuple | None = None

    def async_reset(self, seed: int | None = None) -> None:
        obs, _ = self.envs.reset(seed=self.seed if seed is None else seed)
        zeros = np.zeros(self.num_envs, bool)
        self._next = (obs, np.zeros(self.num_envs, np.float32), zeros, zeros)

    def recv(self) -> tuple:
        obs, rewards, terminals, truncations = self._next
        return obs, rewards, terminals, truncations, self._infos, self._env_ids, self._masks

    def send(self, actions: np.ndarray) -> None:
        obs, rewards, terminals, truncations, infos = self.envs.step(actions)
        self._next = (obs, rewards.astype(np.float32), terminals, truncations)
        self._infos = [{} for _ in range(self.num_envs)]
        if "final_obs" in infos:
            # The ended episodes' last rows, for the trainer's truncation
            # bootstrap, as pufferrs's vector envs hand them out.
            for i in np.flatnonzero(infos["_final_obs"]).tolist():
                self._infos[i] = {"final_obs": infos["final_obs"][i]}

    def close(self) -> None:
        self.envs.close()


class _FlatCreator:
    """A picklable maker of a row-observation env (for AsyncVectorEnv)."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self) -> FlattenObservation:
        return FlattenObservation(EnvCreator(self.env_id)())


class Setup:
    """One trainer under test, warmed up, with its measurements."""

    def __init__(self, label: str, peer: str | None, config: Config, vecenv: Any = None):
        self.label, self.peer = label, peer
        # As `pufferrs train` runs: one torch thread, and every setup's
        # policy initialised from the same seed.
        apply_process_settings(config)
        self.trainer = Trainer(config, vecenv=vecenv)
        self.trainer.rollout()  # warm-up: first recv, lazily built caches,
        self.trainer.learn()  # the LSTM path choice, allocator growth
        self.rates: list[float] = []
        self.shares: list[tuple[float, float, float]] = []

    def measure(self, updates: int) -> None:
        trainer = self.trainer
        before = dict(trainer.timers)
        start = time.perf_counter()
        for _ in range(updates):
            trainer.rollout()
            trainer.learn()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        spent = {k: trainer.timers[k] - before[k] for k in before}
        self.rates.append(updates * trainer.config.batch_size / wall)
        self.shares.append((spent["env"] / wall, spent["inference"] / wall, spent["learn"] / wall))

    def close(self) -> None:
        self.trainer.close()


def setups(env_id: str, args: argparse.Namespace) -> list[Setup]:
    base = dict(
        num_envs=args.num_envs,
        batch_size=args.num_envs * 128,
        total_steps=args.num_envs * 128,
        device=args.device,
        seed=0,
        checkpoint_interval=0,
    )
    preset = Config.for_env(env_id, **base)
    # Minibatches of a quarter batch at most, as the presets have.
    preset.minibatch_size = min(preset.minibatch_size, preset.batch_size // 4)

    def config(**overrides: Any) -> Config:
        return Config.for_env(env_id, **{**base, "minibatch_size": preset.minibatch_size, **overrides})

    return [
        Setup("pufferrs Serial", "gymnasium SyncVectorEnv", config(backend="serial")),
        Setup(
            f"pufferrs Multiprocessing ({args.workers} workers)",
            "gymnasium AsyncVectorEnv",
            config(backend="multiprocessing", num_workers=args.workers),
        ),
        Setup(
            f"pufferrs Multiprocessing async (batch {args.num_envs // 2})",
            "gymnasium AsyncVectorEnv",
            config(backend="multiprocessing", num_workers=args.workers, env_batch_size=args.num_envs // 2),
        ),
        Setup("gymnasium SyncVectorEnv", None, config(), GymnasiumVector(env_id, args.num_envs, "sync", 0)),
        Setup("gymnasium AsyncVectorEnv", None, config(), GymnasiumVector(env_id, args.num_envs, "async", 0)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--updates", type=int, default=4, help="updates per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "pufferrs/Nested-v0"])
    args = parser.parse_args()
    half = args.num_envs // 2
    if args.num_envs % args.workers or half % (args.num_envs // args.workers):
        parser.error("num_envs must be a multiple of workers, and num_envs / 2 a multiple of envs per worker")
    device = resolve_device(args.device)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# {cpus} CPUs, {where}, python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"gymnasium {gym.__version__}; num_envs={args.num_envs}, batch {args.num_envs * 128} steps, "
        f"medians of {args.repeats} repeats of {args.updates} updates"
    )
    header = f"{'env':<20} {'trainer fed by':<42} {'steps/s':>9} {'env':>6} {'infer':>6} {'learn':>6} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for env_id in args.envs:
        runs = setups(env_id, args)
        try:
            # Repeats interleaved across setups, so that drift in the
            # machine's load touches every setup alike.
            for _ in range(args.repeats):
                for run in runs:
                    run.measure(args.updates)
        finally:
            for run in runs:
                run.close()
        medians = {run.label: statistics.median(run.rates) for run in runs}
        for run in runs:
            env_share, infer_share, learn_share = (statistics.median(s) for s in zip(*run.shares))
            ratio = f"{medians[run.label] / medians[run.peer]:.2f}x" if run.peer else ""
            print(
                f"{env_id:<20} {run.label:<42} {medians[run.label]:>9,.0f} {env_share:>6.0%} {infer_share:>6.0%} "
                f"{learn_share:>6.0%} {ratio:>6}"
            )


if __name__ == "__main__":
    main()
