"""What a training run leaves behind in its directory: ``config.json``,
``metrics.jsonl``, checkpoints (``best.pt`` too, with evaluations),
``learning_curve.png``, ``summary.json`` and the trackers' logs
(:class:`RunDirectory`), the end-of-run summary
(:func:`summarize`) and the learning-curve plot (:func:`plot_metrics`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pufferrs.config import Config

__all__ = ["RunDirectory", "plot_metrics", "summarize"]


class RunDirectory:
    """The files of a run in ``path``: ``config.json`` from the start, one
    ``metrics.jsonl`` row per update, ``checkpoints/update_NNNNNN.pt`` every
    ``checkpoint_interval`` updates and after ``checkpoint_minutes`` of wall
    time without one (a run killed outright loses at most that much),
    ``best.pt`` whenever an evaluation (``eval/return``) beats the best so
    far, and at the end (or when stopped by Ctrl-C or SIGTERM) ``model.pt``,
    ``learning_curve.png`` and ``summary.json``. ``save`` writes a
    checkpoint to the path it is given. The trackers ``config.track`` names
    (:mod:`pufferrs.tracking`) get every row and the summary.

    ``continue_at`` (a resumed run's update count) keeps the rows of
    ``metrics.jsonl`` up to that update, drops those after it (written
    after the checkpoint by a run that was then killed), and appends; the
    kept rows are :attr:`metrics`, so that the curve and the summary cover
    the whole run."""

    def __init__(self, path: str | Path, config: Config, save: Callable[[Path], Path], continue_at: int = 0):
        from pufferrs.tracking import make_trackers

        self.path, self.config, self.save = Path(path), config, save
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        self.metrics: list[dict[str, Any]] = []
        metrics_path = self.path / "metrics.jsonl"
        if continue_at and metrics_path.exists():
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            self.metrics = [row for row in rows if row["update"] <= continue_at]
        with open(metrics_path, "w") as kept:
            kept.writelines(json.dumps(row) + "\n" for row in self.metrics)
        evaluated = [row["eval/return"] for row in self.metrics if row.get("eval/return") is not None]
        self.best_eval = max(evaluated) if evaluated else None
        self.trackers = make_trackers(config, self.path)
        self.metrics_file = open(metrics_path, "a")  # noqa: SIM115 - closed by close()
        self.last_save = time.monotonic()

    def record(self, row: dict[str, Any]) -> None:
        """Appends an update's metrics; saves a checkpoint when one is due
        (the last update's is ``model.pt``, written by :meth:`finish`) and
        ``best.pt`` when the update's evaluation is the best so far."""
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        for tracker in self.trackers:
            tracker.record(row)
        evaluated = row.get("eval/return")
        if evaluated is not None and (self.best_eval is None or evaluated > self.best_eval):
            self.best_eval = evaluated
            self.save(self.path / "best.pt")
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
        if self.best_eval is not None:
            summary["best_eval_return"] = self.best_eval
            summary["best_checkpoint"] = str(self.path / "best.pt")
        if metrics:
            plot = plot_metrics(metrics, self.path / "learning_curve.png", title=self.config.env)
            summary["plot"] = str(plot)
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        for tracker in self.trackers:
            tracker.finish(summary)
        return summary

    def close(self) -> None:
        self.metrics_file.close()
        for tracker in self.trackers:
            tracker.close()


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
