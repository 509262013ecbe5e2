"""Experiment tracking (``--track tensorboard,wandb``): every row of a run's
``metrics.jsonl`` also goes to TensorBoard and/or Weights & Biases, under
the same names, fed by :class:`~pufferrs.run_directory.RunDirectory`.

- **TensorBoard**, through ``torch.utils.tensorboard`` (the ``tensorboard``
  package), into ``RUN/tensorboard``: each numeric value of a row is a
  scalar at the row's ``global_step``; the config is the run's
  hyperparameters (the HPARAMS tab, with ``env/episode_return`` and
  ``eval/return`` as its metrics); the end-of-run summary is logged under
  ``summary/``.
- **W&B**, through ``wandb``, into ``RUN/wandb``: each row is logged with
  ``global_step`` as every metric's x axis (``define_metric``), the config
  is the run's config, and the summary goes to the run's summary. Project,
  entity, group, tags and mode come from the config (``wandb_*``);
  ``offline`` needs no network (``wandb sync RUN/wandb/offline-run-*``
  uploads it later). The run's id is kept in ``RUN/wandb_id``, so a resumed
  run continues the same W&B run.

Both are optional (``pip install pufferrs[track]``); asking for one that is
not installed is a :class:`~pufferrs.errors.ConfigError` naming the extra.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path
from typing import Any, Protocol

from pufferrs.config import Config
from pufferrs.errors import ConfigError

__all__ = ["TensorBoard", "Tracker", "WandB", "check_trackers", "make_trackers"]

#: The module each tracker needs.
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class Tracker(Protocol):
    """What :class:`~pufferrs.run_directory.RunDirectory` feeds."""

    def record(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def check_trackers(config: Config) -> None:
    """Raises :class:`ConfigError` when a tracker ``config.track`` names
    does not import, so that a run refuses before it makes its envs."""
    for name in config.trackers:
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise ConfigError(
                f"--track {name} needs the {MODULES[name]} package: pip install pufferrs[track]"
            ) from None


def make_trackers(config: Config, run_dir: Path) -> list[Tracker]:
    """The trackers ``config.track`` names, writing under ``run_dir``."""
    check_trackers(config)
    makers = {"tensorboard": TensorBoard, "wandb": WandB}
    trackers: list[Tracker] = []
    try:
        for name in config.trackers:
            trackers.append(makers[name](config, run_dir))
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers


def numbers(row: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, float]:
    """The numeric values of a row (``warning`` and other text left out)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k not in leave_out and isinstance(v, int | float) and not isinstance(v, bool)
    }


def hyperparameters(config: Config) -> dict[str, Any]:
    """The config as flat values trackers accept: None as ``"none"``,
    tables as JSON."""
    values = {}
    for key, value in dataclasses.asdict(config).items():
        if value is None:
            value = "none"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        values[key] = value
    return values


class TensorBoard:
    """Scalars, hyperparameters and the summary in ``RUN/tensorboard``."""

    def __init__(self, config: Config, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        # The HPARAMS tab reads its metrics from scalars of these names.
        experiment, session_start, session_end = hparams(
            hyperparameters(config), {"env/episode_return": math.nan, "eval/return": math.nan}
        )
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)

    def record(self, row: dict[str, Any]) -> None:
        step = int(row["global_step"])
        for key, value in numbers(row, ("global_step",)).items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: dict[str, Any]) -> None:
        step = int(summary.get("global_step", 0))
        for key, value in numbers(summary, ("global_step",)).items():
            self.writer.add_scalar(f"summary/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run in ``RUN/wandb`` (see the module docstring)."""

    def __init__(self, config: Config, run_dir: Path):
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        tags = [t.strip() for t in (config.wandb_tags or "").split(",") if t.strip()]
        self.run = wandb.init(
            project=config.wandb_project,
            entity=config.wandb_entity,
            group=config.wandb_group,
            tags=tags or None,
            mode=config.wandb_mode,
            dir=str(run_dir),
            name=run_dir.name,
            id=run_id,
            resume="allow" if run_id else None,
            config=hyperparameters(config),
            # The run's own display and logs stay pufferrs's.
            settings=wandb.Settings(console="off", quiet=True),
        )
        id_file.write_text(self.run.id + "\n")
        # Env steps are every metric's x axis, and a resumed run's rows
        # continue it: W&B's own step counter is left to itself.
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def record(self, row: dict[str, Any]) -> None:
        self.run.log(numbers(row))

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(numbers(summary))

    def close(self) -> None:
        self.run.finish()
