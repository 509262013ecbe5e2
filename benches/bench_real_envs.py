"""``pufferrs train`` beside Stable-Baselines3's PPO on real envs: steps/s
and the return after a fixed budget of env steps, one run each, in the
same process and on the same number of envs.

    python benches/bench_real_envs.py [--envs doorkey,breakout,highway,nethack] [--steps N] [--backend B] [--smoke]

Envs and budgets (``--steps`` overrides them all):

- ``doorkey``: MiniGrid-DoorKey-5x5-v0, 300k steps. pufferrs trains on the
  raw observation (image codes, direction, mission) with its MiniGrid
  preset; SB3 on minigrid's ``FlatObsWrapper`` (the image and the mission
  one-hot, as RL Zoo does) with ``MlpPolicy``.
- ``breakout``: ALE/Breakout-v5 with the standard preprocessing on both
  sides (pufferrs' ``--atari-preprocessing``, SB3's ``make_atari_env`` and
  a 4-frame ``VecFrameStack``), Nature CNN, 20k steps; returns are whole
  games, unclipped.
- ``highway``: highway-fast-v0, 4k steps, MLPs (an env step costs tens of
  milliseconds: its preset runs the envs in worker processes).
- ``nethack``: NetHackScore-v0 where nle is installed, 50 updates (102,400
  steps), the glyphs, bottom-line stats and message (pufferrs' NetHack
  preset: the glyphs 9x9 around the agent, the message as text; SB3's
  ``MultiInputPolicy`` on the same keys, the whole glyph map flattened).
  Also checks that pufferrs did not collapse: its entropy after the last
  update and a finite value loss.

Both use the PPO settings of pufferrs' preset for the env (envs, steps per
update, minibatch, epochs, learning rate, gamma, lambda, clip, entropy and
value coefficients, torch threads) on the CPU, and its backend: where the
preset runs envs in worker processes (``multiprocessing``, or
``--backend`` for every env), SB3 gets its ``SubprocVecEnv``, else its
``DummyVecEnv``. "return" is the mean over the episodes that ended in the
last 5 updates (pufferrs) or SB3's last 100 episodes (``ep_info_buffer``).

``--smoke`` runs each env for one update of 32 steps on 2 envs, to check
that the script runs (``tests/test_benches.py``): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch

from pufferrs.config import Config, apply_process_settings
from pufferrs.factories import env_modules
from pufferrs.ppo import Trainer

ENVS = {
    "doorkey": ("MiniGrid-DoorKey-5x5-v0", 300_000),
    "breakout": ("ALE/Breakout-v5", 20_000),
    "highway": ("highway-fast-v0", 4_096),
    "nethack": ("NetHackScore-v0", 102_400),
}
#: ``--smoke``: the smallest run of every code path, on top of the preset.
SMOKE: dict[str, Any] = dict(
    num_envs=2,
    batch_size=32,
    minibatch_size=16,
    bptt_horizon=16,
    update_epochs=1,
    num_workers=None,
    env_batch_size=None,
)


def run_pufferrs(config: Config) -> dict[str, Any]:
    apply_process_settings(config)
    start = time.perf_counter()
    with Trainer(config) as trainer:
        summary = trainer.train()
    elapsed = time.perf_counter() - start
    last = trainer.metrics[-1]
    return {
        "sps": summary["global_step"] / elapsed,
        "return": summary["mean_return_last_5_updates"],
        "entropy": last["losses/entropy"],
        "value_loss": last["losses/value_loss"],
        "updates": summary["updates"],
    }


def _sb3_env(name: str, env_id: str, num_envs: int, backend: str, seed: int) -> Any:
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    vec_cls = SubprocVecEnv if backend == "multiprocessing" else DummyVecEnv
    # SB3 makes its envs with ``gym.make("module:id")``, which imports the
    # module that registers the id first, in its worker processes too.
    env_id = f"{env_modules(env_id)[1][0][0]}:{env_id}"
    if name == "breakout":
        return VecFrameStack(make_atari_env(env_id, n_envs=num_envs, seed=seed, vec_env_cls=vec_cls), 4)
    kwargs: dict[str, Any] = {}
    wrapper = None
    if name == "doorkey":
        from minigrid.wrappers import FlatObsWrapper

        wrapper = FlatObsWrapper
    elif name == "nethack":
        kwargs = {"observation_keys": ("glyphs", "blstats", "message")}
    return make_vec_env(
        env_id, n_envs=num_envs, seed=seed, vec_env_cls=vec_cls, wrapper_class=wrapper, env_kwargs=kwargs
    )


def run_sb3(name: str, config: Config) -> dict[str, Any]:
    from stable_baselines3 import PPO

    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    env = _sb3_env(name, config.env, config.num_envs, config.backend, config.seed)
    policy = {"breakout": "CnnPolicy", "nethack": "MultiInputPolicy"}.get(name, "MlpPolicy")
    model = PPO(
        policy,
        env,
        n_steps=config.horizon,
        batch_size=config.minibatch_size,
        n_epochs=config.update_epochs,
        learning_rate=config.learning_rate,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_coef,
        ent_coef=config.ent_coef,
        vf_coef=config.vf_coef,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=config.total_steps)
    elapsed = time.perf_counter() - start
    returns = [e["r"] for e in model.ep_info_buffer]
    env.close()
    return {"sps": model.num_timesteps / elapsed, "return": float(np.mean(returns)) if returns else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS), help="comma-separated: " + ", ".join(ENVS))
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: each env's budget)")
    parser.add_argument(
        "--backend", default=None, choices=("serial", "multiprocessing"), help="for every env (default: its preset's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="one update of 32 steps on 2 envs: checks the script runs")
    args = parser.parse_args()

    rows = []
    for name in args.envs.split(","):
        env_id, budget = ENVS[name]
        if name == "nethack":
            try:
                import nle  # noqa: F401
            except ImportError:
                print(f"{env_id}: nle is not installed, skipped")
                continue
        steps = 1 if args.smoke else args.steps or budget
        backend = {"backend": args.backend} if args.backend else {}
        smoke = SMOKE if args.smoke else {}
        config = Config.for_env(env_id, device="cpu", seed=args.seed, checkpoint_interval=0, **backend, **smoke)
        config.total_steps = max(config.batch_size, math.ceil(steps / config.batch_size) * config.batch_size)
        print(f"{env_id}: {config.total_steps:,} steps, {config.num_envs} envs, {config.backend}", flush=True)
        ours = run_pufferrs(config)
        print(f"  pufferrs {ours}", flush=True)
        theirs = run_sb3(name, config)
        print(f"  sb3      {theirs}", flush=True)
        rows.append((env_id, config, ours, theirs))

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print()
    print(
        "| env | steps | envs | backend | pufferrs steps/s | SB3 steps/s | ratio | pufferrs return | SB3 return | "
        "pufferrs entropy, value loss (last update) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for env_id, config, ours, theirs in rows:
        print(
            f"| {env_id} | {config.total_steps:,} | {config.num_envs} | {config.backend} | {ours['sps']:,.0f} | "
            f"{theirs['sps']:,.0f} | "
            f"{ours['sps'] / theirs['sps']:.2f}x | {fmt(ours['return'])} | {fmt(theirs['return'])} | "
            f"{ours['entropy']:.3f}, {ours['value_loss']:.3g} |"
        )


if __name__ == "__main__":
    main()
