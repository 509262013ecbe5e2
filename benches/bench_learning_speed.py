"""Training steps/s of ``pufferrs train ENV`` with no flags against
Stable-Baselines3's ``PPO("MlpPolicy")`` defaults, back to back in one
process, rounds alternating, so that both see the same machine.

    python benches/bench_learning_speed.py [--envs InvertedPendulum-v5 ...] [--steps N] [--rounds 2]

Both sides run one torch thread on the CPU with the same number of envs
(pufferrs's preset) and the same rollout of 2,048 steps (SB3's ``n_steps``
is ``2048 / num_envs``); everything else is each library's default. Each
round trains pufferrs, then SB3, for the env's steps in
``benches/bench_learning.py`` (issue 20's targets: 100,000 to 300,000) or
``--steps``, and prints the steps/s of both and their ratio; pufferrs's
time split (env, inference, learn) says where its time goes, and its
update is compiled where ``compile`` unset compiles it
(:mod:`pufferrs.compiling`: runs of at least 10,000 gradient steps, so not
at a few ``--steps``). ``benches/bench_learning.py`` measures what the same
runs learn.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bench_learning import ENVS
from pufferrs.train import Config, Trainer, apply_process_settings


def pufferrs_sps(env_id: str, steps: int, compile: bool | None = None) -> tuple[float, dict[str, float]]:
    config = Config.for_env(env_id, total_steps=steps, device="cpu", torch_threads=1, compile=compile)
    apply_process_settings(config)
    with Trainer(config) as trainer:
        summary = trainer.train()
    return summary["global_step"] / summary["seconds"], dict(trainer.timers)


def sb3_sps(env_id: str, steps: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    num_envs = Config.for_env(env_id).num_envs
    model = PPO(
        "MlpPolicy", make_vec_env(env_id, n_envs=num_envs, seed=0), n_steps=2048 // num_envs, seed=0, device="cpu"
    )
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--steps", type=int, help="env steps per run (default: the env's in bench_learning.py)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time pufferrs with --compile and --no-compile")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    variants = [None, False, True] if args.compile else [None]
    print(
        "| env | round | pufferrs | steps | pufferrs steps/s | SB3 steps/s | ratio | pufferrs env / inference / learn s |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for env_id in args.envs:
        for round_ in range(args.rounds):
            steps = args.steps or ENVS.get(env_id, 100_000)
            ours = [pufferrs_sps(env_id, steps, compile) for compile in variants]
            theirs = sb3_sps(env_id, steps)
            for compile, (sps, timers) in zip(variants, ours):
                split = " / ".join(f"{timers[k]:.1f}" for k in ("env", "inference", "learn"))
                name = {None: "no flags", False: "--no-compile", True: "--compile"}[compile]
                row = f"| {env_id} | {round_} | {name} | {steps:,} | {sps:,.0f} | {theirs:,.0f} | {sps / theirs:.2f}x | {split} |"
                print(row, flush=True)


if __name__ == "__main__":
    main()
