"""Multi-agent learning figures: ``pufferrs train``'s PPO (parameters shared
by the agents) on PettingZoo envs, with the return of the first and the
last updates and the agent steps per second.

    python benches/bench_multiagent_learning.py [--env kaz|rendezvous|all] [--steps N] [--backend serial] [--smoke]

- ``rendezvous``: the built-in :class:`pufferrs.multiagent_envs.Rendezvous`
  with its preset (3 agents score together; random play scores 0.016).
- ``kaz``: PettingZoo's knights_archers_zombies (v11, vector observations,
  4 agents, agents die mid-episode): each agent's return is the zombies it
  kills.

``--smoke`` trains each env for one update of 64 steps on 2 envs, to check
that the script runs (``tests/test_benches.py``): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from pufferrs.config import apply_process_settings
from pufferrs.train import Config, Trainer

ENVS = {
    "rendezvous": ("pufferrs.multiagent_envs.Rendezvous", {}),
    "kaz": (
        "butterfly/knights_archers_zombies-v11",
        dict(num_envs=8, batch_size=2048, minibatch_size=512, learning_rate=1e-3, hidden_size=128, gamma=0.99),
    ),
}
#: ``--smoke``: the smallest run, on top of the env's settings.
SMOKE: dict[str, Any] = dict(num_envs=2, batch_size=64, minibatch_size=32, update_epochs=1, total_steps=64)


def learn(name: str, steps: int | None, backend: str, smoke: bool = False) -> dict[str, Any]:
    env, settings = ENVS[name]
    overrides: dict[str, Any] = dict(settings, backend=backend, seed=0)
    if steps is not None:
        overrides["total_steps"] = steps
    if smoke:
        overrides.update(SMOKE)
    if backend == "multiprocessing":
        overrides["num_workers"] = 2
    config = Config.for_env(env, **overrides)
    apply_process_settings(config)
    start = time.perf_counter()
    with Trainer(config) as trainer:
        trainer.train()
    elapsed = time.perf_counter() - start
    metrics = [m for m in trainer.metrics if "env/episode_return" in m]
    third = max(1, len(metrics) // 3)

    def mean(key: str, rows: list[dict[str, Any]]) -> float:
        values = [m[key] for m in rows if key in m]
        return float(np.mean(values)) if values else float("nan")

    key = "env/score" if name == "rendezvous" else "env/env_episode_return"
    return {
        "env": env,
        "env steps": config.num_updates * config.batch_size,
        "agent steps": trainer.global_step,
        "agent steps/s": trainer.global_step / elapsed,
        "metric": key.removeprefix("env/"),
        "first third": mean(key, metrics[:third]),
        "last third": mean(key, metrics[-third:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=[*ENVS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the preset's total_steps)")
    parser.add_argument("--backend", choices=["serial", "multiprocessing"], default="serial")
    parser.add_argument("--smoke", action="store_true", help="one update of 64 steps on 2 envs: checks the script runs")
    args = parser.parse_args()
    names = list(ENVS) if args.env == "all" else [args.env]
    print("| env | env steps | agent steps | agent steps/s | metric | first third | last third |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for name in names:
        r = learn(name, args.steps, args.backend, args.smoke)
        print(
            f"| {r['env']} | {r['env steps']:,} | {r['agent steps']:,} | {r['agent steps/s']:,.0f} | {r['metric']} "
            f"| {r['first third']:.3f} | {r['last third']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
