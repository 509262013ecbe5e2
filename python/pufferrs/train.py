"""The PPO trainer's public API, in one import::

    from pufferrs.train import Config, Trainer, apply_process_settings

    config = Config.for_env("CartPole-v1", total_steps=100_000)  # preset + overrides
    apply_process_settings(config)  # torch threads, seeds, cuDNN: for this whole process
    with Trainer(config) as trainer:
        summary = trainer.train()

or from the shell: ``pufferrs train CartPole-v1`` (see ``pufferrs train --help``).

Where each part lives:

- :mod:`pufferrs.config`: :class:`Config`, validation, the process-wide
  settings; :mod:`pufferrs.presets`: the per-env and per-family presets;
- :mod:`pufferrs.ppo`: the algorithm, top to bottom (experience, GAE,
  rollout, update, the training loop);
- :mod:`pufferrs.run_directory`, :mod:`pufferrs.checkpoints` and
  :mod:`pufferrs.evaluation`: the run's files and plots, checkpoints, and
  playing a trained policy;
- :mod:`pufferrs.factories`: the vector env and policy a config describes;
- :mod:`pufferrs.actions` and :mod:`pufferrs.device`: actions on their way
  to the env, rows on their way to the device.
"""

from pufferrs.actions import greedy_action
from pufferrs.checkpoints import load_checkpoint, policy_from_checkpoint
from pufferrs.config import Config, apply_process_settings, resolve_device, seed_everything
from pufferrs.errors import ConfigError
from pufferrs.evaluation import evaluate, evaluate_checkpoint
from pufferrs.factories import EnvCreator, make_policy, make_vecenv
from pufferrs.ppo import Trainer
from pufferrs.presets import PRESETS
from pufferrs.run_directory import plot_metrics

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "EnvCreator",
    "Trainer",
    "apply_process_settings",
    "evaluate",
    "evaluate_checkpoint",
    "greedy_action",
    "load_checkpoint",
    "make_policy",
    "make_vecenv",
    "plot_metrics",
    "policy_from_checkpoint",
    "resolve_device",
    "seed_everything",
]
