"""What a training run leaves behind, and what is done with it afterwards:
the run directory (``config.json``, ``metrics.jsonl``, checkpoints,
``learning_curve.png``, ``summary.json``), loading checkpoints back, and
playing a policy for evaluation.

Checkpoints are ``{"state_dict", "config", "update", "global_step",
"optimizer"}`` dicts saved with :func:`torch.save`; they load with
``torch.load(..., weights_only=True)``, and the code a checkpoint's config
names to make its env runs only when the person loading it names it too
or trusts the file (:func:`load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pufferrs import vector
from pufferrs.actions import ActionAdapter, greedy_action
from pufferrs.config import Config, ConfigError, resolve_device
from pufferrs.distributions import mask_logits, sample_logits
from pufferrs.episodes import episode_numbers
from pufferrs.errors import CheckpointError, UntrustedCodeError
from pufferrs.factories import EnvCreator, check_env, is_recurrent, make_policy, make_vecenv, named_code
from pufferrs.models import ACTION_MASK, action_mask_layout
from pufferrs.pytorch import unflatten

__all__ = [
    "RunDirectory",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "plot_metrics",
    "policy_from_checkpoint",
    "record_video",
    "save_checkpoint",
    "summarize",
]


# ---------------------------------------------------------------------------
# The run directory


class RunDirectory:
    """The files of a run in ``path``: ``config.json`` from the start, one
    ``metrics.jsonl`` row per update, ``checkpoints/update_NNNNNN.pt`` every
    ``checkpoint_interval`` updates and after ``checkpoint_minutes`` of wall
    time without one (a run killed outright loses at most that much), and
    at the end (or when stopped by Ctrl-C or SIGTERM) ``model.pt``,
    ``learning_curve.png`` and ``summary.json``. ``save`` writes a
    checkpoint to the path it is given."""

    def __init__(self, path: str | Path, config: Config, save: Callable[[Path], Path]):
        self.path, self.config, self.save = Path(path), config, save
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        self.metrics_file = open(self.path / "metrics.jsonl", "w")  # noqa: SIM115 - closed by close()
        self.last_save = time.monotonic()

    def record(self, row: dict[str, Any]) -> None:
        """Appends an update's metrics; saves a checkpoint when one is due
        (the last update's is ``model.pt``, written by :meth:`finish`)."""
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        update, interval, minutes = row["update"], self.config.checkpoint_interval, self.config.checkpoint_minutes
        due = interval and update % interval == 0
        late = minutes and time.monotonic() - self.last_save >= 60 * minutes
        if (due or late) and update < self.config.num_updates:
            self.save(self.path / "checkpoints" / f"update_{update:06d}.pt")
            self.last_save = time.monotonic()

    def finish(self, summary: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
        """Saves ``model.pt``, the learning curve and ``summary.json``;
        returns ``summary`` with their paths added."""
        summary["checkpoint"] = str(self.save(self.path / "model.pt"))
        summary["metrics"] = str(self.path / "metrics.jsonl")
        if metrics:
            plot = plot_metrics(metrics, self.path / "learning_curve.png", title=self.config.env)
            summary["plot"] = str(plot)
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def close(self) -> None:
        self.metrics_file.close()


def summarize(
    env: str, metrics: list[dict[str, Any]], update: int, global_step: int, timers: dict[str, float], elapsed: float
) -> dict[str, Any]:
    """The end of training in numbers: steps, time, speed, the last
    update's episode statistics, the mean return of every episode that
    ended in the last 5 updates, and the time split."""
    last = {k: v for k, v in (metrics[-1] if metrics else {}).items() if k.startswith("env/")}
    # The last few updates, for a steadier figure than one update's.
    # Atari's unclipped score when reported, not the clipped per-life return.
    key = "game_return" if any("env/game_return" in m for m in metrics) else "episode_return"
    # Each update's mean weighted by its episodes (those that reported the
    # key, where fewer did: pufferrs.episodes.EpisodeStats.take).
    total = count = 0.0
    for m in metrics[-5:]:
        if f"env/{key}" in m:
            n = m.get(f"episodes/{key}", m.get("env/episodes", 1))
            total, count = total + n * m[f"env/{key}"], count + n
    return {
        "env": env,
        "updates": update,
        "global_step": global_step,
        "seconds": round(elapsed, 2),
        "sps": round(global_step / elapsed, 1) if elapsed > 0 else 0.0,
        "mean_return_last_5_updates": total / count if count else None,
        **last,
        **{f"perf/{k}": round(v, 3) for k, v in timers.items()},
    }


def plot_metrics(metrics: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Writes the learning curve as a PNG: mean episode return over env
    steps (and ``game_return``, Atari's unclipped score, when reported);
    the env's other episode statistics (rates such as ``success`` and
    ``crashed`` together, the others one panel each, at most 6); and the
    losses."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    from matplotlib import pyplot as plt

    path = Path(path)

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(m["global_step"], m[key]) for m in metrics if m.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    main = {"env/episode_return", "env/game_return", "env/episode_length", "env/episodes"}
    keys = sorted(
        {k for m in metrics for k, v in m.items() if k.startswith("env/") and k not in main and v is not None}
    )
    rates = [k for k in keys if all(0 <= m[k] <= 1 for m in metrics if m.get(k) is not None)]
    others = [k for k in keys if k not in rates][:6]
    panels = 2 + bool(rates) + len(others)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.5 * panels + 1.5), sharex=True)
    steps = metrics[-1]["global_step"] if metrics else 0
    axes[0].plot(*series("env/episode_return"), label="episode_return")
    if any(m.get("env/game_return") is not None for m in metrics):
        axes[0].plot(*series("env/game_return"), label="game_return (unclipped)")
        axes[0].legend(loc="lower right")
    axes[0].set_ylabel("mean episode return")
    axes[0].set_title(f"{title} ({steps:,} steps)")
    if rates:
        for key in rates:
            axes[1].plot(*series(key), label=key[4:])
        axes[1].set_ylabel("rate")
        axes[1].set_ylim(-0.05, 1.05)
        axes[1].legend(loc="lower right", fontsize="small")
    for ax, key in zip(axes[1 + bool(rates) : -1], others):
        ax.plot(*series(key))
        ax.set_ylabel(key[4:], fontsize="small")
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        axes[-1].plot(*series(f"losses/{key}"), label=key)
    axes[-1].set_ylabel("losses")
    axes[-1].set_yscale("symlog", linthresh=1e-3)
    axes[-1].legend(loc="upper right")
    axes[-1].set_xlabel("env steps")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    path: str | Path,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Config,
    update: int,
    global_step: int,
    reward_normalizer: nn.Module | None = None,
) -> Path:
    """Writes the policy's ``state_dict`` (observation statistics included,
    for a normalised policy) with the config, progress and the reward
    normaliser's statistics."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "state_dict": policy.state_dict(),
            "config": dataclasses.asdict(config),
            "update": update,
            "global_step": global_step,
            "optimizer": optimizer.state_dict(),
            "reward_normalizer": None if reward_normalizer is None else reward_normalizer.state_dict(),
        },
        tmp,
    )
    os.replace(tmp, path)  # never a half-written checkpoint under the real name
    return path


def load_checkpoint(
    path: str | Path,
    device: str = "cpu",
    *,
    env: str | None = None,
    imports: str | None = None,
    trust_code: bool = False,
) -> tuple[dict[str, Any], Config]:
    """``(checkpoint dict, Config)`` from a file :func:`save_checkpoint` wrote.

    A checkpoint is a file people download and share, so what its config
    names is not run on its word alone. The config may name code to make
    its env (a dotted path to a callable, ``module:EnvId``, ``imports``):
    unless ``trust_code``, that is refused with
    :class:`~pufferrs.errors.UntrustedCodeError` (see
    :func:`~pufferrs.factories.named_code`) unless the caller names it:
    ``env`` replaces the config's env, ``imports`` its imports (``""`` for
    none). Registered gymnasium and PettingZoo ids need neither.

    A file that does not load as plain tensors and data (``weights_only``)
    or lacks the weights and config raises
    :class:`~pufferrs.errors.CheckpointError`."""
    checkpoint = _read_checkpoint(Path(path), resolve_device(device))
    stored = checkpoint["config"]
    known = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in stored.items() if k in known})
    # What the file alone asks to run: what the caller passes is theirs.
    env_asks = named_code(config.env) if env is None else []
    import_asks = named_code(imports=config.imports) if imports is None else []
    if (env_asks or import_asks) and not trust_code:
        raise UntrustedCodeError(_untrusted_message(Path(path), config, env_asks, import_asks))
    if env is not None:
        config.env = env
    if imports is not None:
        config.imports = imports or None
    return checkpoint, config


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint dict in ``path``, loaded with ``weights_only``; a
    :class:`CheckpointError` naming the file for anything else."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        # torch warns about pickle protocols it was not written with: the
        # file is either a checkpoint or refused below, so the warning says
        # nothing the user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:  # a directory, no permission
        raise CheckpointError(f"cannot read the checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle: not a checkpoint
        # Never torch's own text: it advises loading with weights_only=False,
        # which runs whatever code the file holds.
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: {_why_not_loaded(exc)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: it holds no config")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: it holds no state_dict")
    stored = checkpoint["config"]
    for name, kinds in (("env", (str,)), ("imports", (str, type(None))), ("env_kwargs", (dict,))):
        if name in stored and not isinstance(stored[name], kinds):
            raise CheckpointError(
                f"{str(path)!r} is not a pufferrs checkpoint: its config's {name} is {stored[name]!r}"
            )
    return checkpoint


def _why_not_loaded(exc: Exception) -> str:
    """What stopped ``torch.load``, in words that do not advise disabling
    ``weights_only``: the Python object the file refers to when torch names
    one (``posix.system``), else that it is not tensors and plain data."""
    found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
    if found:
        return f"it refers to the Python object {found[1]}, which a checkpoint of tensors and plain data never holds"
    return f"it does not load as tensors and plain data ({type(exc).__name__})"


def _untrusted_message(path: Path, config: Config, env_asks: list[str], import_asks: list[str]) -> str:
    """What the checkpoint asks to run, and the ways to allow it."""
    kwargs = f" with env_kwargs {config.env_kwargs}" if config.env_kwargs else ""
    allow = [f"--env {config.env} (env={config.env!r} in Python)"] if env_asks else []
    if import_asks:
        allow.append(f"--imports {config.imports} (imports={config.imports!r} in Python)")
    return (
        f"{str(path)!r} asks to {' and '.join(env_asks + import_asks)} to make its env {config.env!r}{kwargs}; "
        f"pufferrs runs no code named only in a checkpoint. If you trust that code, name it yourself: "
        f"{' and '.join(allow)}, or trust the file with --trust-checkpoint-code (trust_code=True)"
    )


def policy_from_checkpoint(
    path: str | Path,
    device: str = "cpu",
    *,
    env: str | None = None,
    imports: str | None = None,
    trust_code: bool = False,
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuilds the policy a checkpoint was trained with and loads its
    weights. ``env``, ``imports`` and ``trust_code`` are
    :func:`load_checkpoint`'s: code that the file alone names is refused."""
    checkpoint, config = load_checkpoint(path, device, env=env, imports=imports, trust_code=trust_code)
    check_env(config)
    probe = make_vecenv(config, num_envs=1, backend="serial")
    try:
        policy = make_policy(probe, config)
    finally:
        probe.close()
    try:
        policy.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or misshapen weights
        raise CheckpointError(f"{str(path)!r} does not fit the policy its config describes: {exc}") from None
    return policy.to(resolve_device(device)), config, checkpoint


# ---------------------------------------------------------------------------
# Evaluation


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
        mask_layout = action_mask_layout(vecenv, vecenv.single_action_space)
        obs, _ = vecenv.reset(seed=seed)
        starts = np.ones(rows, bool)
        while min(len(r) for r in results) < per_env:
            obs_t = torch.from_numpy(obs).to(device)
            if recurrent:
                state["episode_start"] = torch.from_numpy(starts).to(device)
            logits, _ = policy.forward_eval(obs_t, state if recurrent else None)
            if mask_layout is not None:
                logits = mask_logits(logits, unflatten(obs_t, mask_layout)[ACTION_MASK])
            action = greedy_action(logits) if greedy else sample_logits(logits)[0]
            obs, _, terminals, truncations, infos = vecenv.step(actions(action))
            starts = terminals | truncations
            for i in np.flatnonzero(starts).tolist():
                if len(results[i]) < per_env:
                    results[i].append(episode_numbers(infos[i]))
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
