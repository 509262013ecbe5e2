"""Playing a trained policy: :func:`evaluate` (returns and episode
statistics over a number of episodes, greedy or sampled),
:func:`evaluate_checkpoint`, :func:`record_video`, and evaluation during
training (:class:`PeriodicEvaluation`). Actions are drawn as
in training, through :class:`pufferrs.acting.Actor`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pufferrs import vector
from pufferrs.acting import Actor
from pufferrs.actions import ActionAdapter
from pufferrs.checkpoints import policy_from_checkpoint
from pufferrs.config import Config, ConfigError, resolve_device
from pufferrs.episodes import EpisodeStats
from pufferrs.factories import EnvCreator, is_recurrent, make_vecenv

__all__ = ["PeriodicEvaluation", "check_video", "evaluate", "evaluate_checkpoint", "record_video"]


def evaluate(
    policy: nn.Module,
    config: Config,
    episodes: int = 10,
    greedy: bool = True,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Runs ``policy`` for ``episodes`` episodes of ``config.env`` and
    returns ``{"returns": [...], "lengths": [...], "mean_return": ...}`` plus
    the mean of every other numeric episode info (e.g. ``success``).

    ``greedy`` takes the most likely legal action (an ``action_mask``
    observation leaf is obeyed), else samples. Each of ``num_envs`` envs
    (default ``min(episodes, 16)``) plays the same number of episodes, so
    that short episodes are not over-counted; in a multi-agent env each
    agent slot does, and an episode is one agent's.
    ``seed`` defaults to ``config.seed + 1000``, away from training's.
    """
    _check_episodes(episodes)
    return _play(policy, config, episodes, greedy, torch.device(device), seed, num_envs)


class PeriodicEvaluation:
    """Evaluation during training: every ``config.eval_interval`` updates,
    ``config.eval_episodes`` greedy episodes (:func:`evaluate`, on envs of
    their own, seeded ``config.seed + 1000`` every time so that successive
    policies meet the same episodes). Returns the metrics to add to the
    update's row: ``eval/return``, ``eval/length`` and ``eval/KEY`` for
    every other episode metric (``success``, ...); nothing between
    evaluations. Greedy play draws nothing from torch's generator, so a
    run with evaluations trains as one without."""

    def __init__(self, config: Config, device: str | torch.device = "cpu"):
        self.config, self.device = config, torch.device(device)

    def __call__(self, policy: nn.Module, update: int) -> dict[str, float]:
        if not self.config.eval_interval or update % self.config.eval_interval:
            return {}
        result = evaluate(policy, self.config, episodes=self.config.eval_episodes, greedy=True, device=self.device)
        metrics = {"eval/return": result["mean_return"], "eval/length": float(np.mean(result["lengths"]))}
        metrics.update({f"eval/{k[5:]}": v for k, v in result.items() if k.startswith("mean_") and k != "mean_return"})
        return metrics


def evaluate_checkpoint(
    path: str | Path,
    episodes: int = 10,
    greedy: bool = True,
    device: str = "cpu",
    seed: int | None = None,
    *,
    env: str | None = None,
    imports: str | None = None,
    trust_code: bool = False,
) -> tuple[dict[str, Any], Config, dict[str, Any]]:
    """:func:`evaluate` of the policy a checkpoint holds (see
    :func:`policy_from_checkpoint`, whose ``env``, ``imports`` and
    ``trust_code`` these are); returns ``(result, config, checkpoint)``.
    Refuses bad arguments before reading the file."""
    _check_episodes(episodes)
    resolved = resolve_device(device)
    policy, config, checkpoint = policy_from_checkpoint(
        path, str(resolved), env=env, imports=imports, trust_code=trust_code
    )
    return _play(policy, config, episodes, greedy, resolved, seed, None), config, checkpoint


def record_video(
    policy: nn.Module,
    config: Config,
    folder: str | Path,
    episodes: int = 1,
    greedy: bool = True,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> list[Path]:
    """Plays ``episodes`` episodes as :func:`evaluate` does, with gymnasium's
    ``RecordVideo`` writing each to ``folder`` as an mp4; returns the files.
    Refuses, saying why, an env that does not render ``rgb_array`` frames
    and a machine without moviepy."""
    _check_episodes(episodes)
    check_video(config)
    folder = Path(folder)
    creator = EnvCreator.from_config(config, training=False)
    _play(policy, config, episodes, greedy, torch.device(device), seed, 1, _Filmed(creator, folder, episodes))
    return sorted(folder.glob("*.mp4"))


def check_video(config: Config) -> None:
    """Raises :class:`ConfigError` when :func:`record_video` cannot film
    ``config.env``: moviepy is not installed, or the env does not render
    ``rgb_array`` frames. Cheap (one env made), so that a command that
    films after other work can refuse before it."""
    try:
        import moviepy  # noqa: F401 - RecordVideo writes with it
    except ImportError:
        raise ConfigError("writing a video needs moviepy, which is not installed: pip install moviepy") from None
    probe = EnvCreator.from_config(config, training=False)()
    try:
        modes = list(probe.unwrapped.metadata.get("render_modes", []))
    finally:
        probe.close()
    if "rgb_array" not in modes:
        raise ConfigError(f"{config.env} cannot be filmed: it renders {modes or 'nothing'}, not rgb_array frames")


class _Filmed:
    """An env creator whose envs render ``rgb_array`` frames into a video
    of each of their first ``episodes`` episodes (not the one the vector
    env starts after the last)."""

    def __init__(self, creator: EnvCreator, folder: Path, episodes: int):
        self.creator, self.folder, self.episodes = creator, folder, episodes

    def __call__(self) -> gym.Env:
        env = self.creator(render_mode="rgb_array")
        return gym.wrappers.RecordVideo(
            env, str(self.folder), episode_trigger=lambda i: i < self.episodes, disable_logger=True
        )


def _check_episodes(episodes: int) -> None:
    if episodes < 1:
        raise ConfigError(f"episodes must be positive, got {episodes}")


@torch.no_grad()
def _play(
    policy: nn.Module,
    config: Config,
    episodes: int,
    greedy: bool,
    device: torch.device,
    seed: int | None,
    num_envs: int | None,
    creator: Callable[[], gym.Env] | None = None,
) -> dict[str, Any]:
    num_envs = num_envs or min(episodes, 16)
    per_env = math.ceil(episodes / num_envs)
    seed = config.seed + 1000 if seed is None else seed
    if creator is None:
        vecenv = make_vecenv(config, num_envs=num_envs, backend="serial", seed=seed, training=False)
    else:
        vecenv = vector.make(creator, num_envs=num_envs, backend="serial", seed=seed)
    actions = ActionAdapter(vecenv.single_action_space)
    recurrent = is_recurrent(policy)
    policy.eval()
    rows = getattr(vecenv, "num_agents", num_envs)
    results: list[list[dict[str, float]]] = [[] for _ in range(rows)]
    state: dict[str, Any] = {}
    try:
        actor = Actor(policy, vecenv)
        # An episode's numbers as in training: per-step reward terms summed,
        # readings averaged, counters dropped (pufferrs.episodes).
        stats = EpisodeStats(config.env, config.info_metrics)
        row_ids, everyone = np.arange(rows), np.ones(rows, bool)
        obs, infos = vecenv.reset(seed=seed)
        stats.add(infos, row_ids, np.zeros(rows, bool), everyone)
        starts = np.ones(rows, bool)
        while min(len(r) for r in results) < per_env:
            obs_t = torch.from_numpy(obs).to(device)
            if recurrent:
                state["episode_start"] = torch.from_numpy(starts).to(device)
            logits, _ = policy.forward_eval(obs_t, state if recurrent else None)
            action = actor.greedy(logits, obs_t) if greedy else actor.sample(logits, obs_t)[0]
            obs, _, terminals, truncations, infos = vecenv.step(actions(action))
            starts = terminals | truncations
            for i, numbers in stats.add(infos, row_ids, starts, everyone):
                if len(results[i]) < per_env:
                    results[i].append(numbers)
    finally:
        vecenv.close()
    # Round-robin over envs, so that the first `episodes` mix all envs.
    ordered = [results[i][k] for k in range(per_env) for i in range(rows)][:episodes]
    out: dict[str, Any] = {
        "returns": [e["episode_return"] for e in ordered],
        "lengths": [int(e["episode_length"]) for e in ordered],
    }
    out["mean_return"] = float(np.mean(out["returns"]))
    for key in sorted({k for e in ordered for k in e} - {"episode_return", "episode_length"}):
        out[f"mean_{key}"] = float(np.mean([e[key] for e in ordered if key in e]))
    return out
