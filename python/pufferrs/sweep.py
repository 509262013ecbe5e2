"""Hyperparameter sweeps with Optuna (``pufferrs sweep ENV --trials K``).

Each trial trains a config drawn from the search space (the ``search``
metadata of :class:`~pufferrs.config.Config`'s fields,
:data:`~pufferrs.config.SEARCH_SPACE`, or a file of the same shape) on top
of the sweep's base config (the env's presets, ``--config FILE`` and the
options given), in ``DIR/trials/NNNN`` as a run of its own.

- **Sampler**: Optuna's TPE, multivariate (it models the settings
  together, as the RL Zoo does), seeded by the base config's seed plus the
  worker's index. Its first ``startup`` trials are drawn at random
  (:func:`startup_trials`: a third of the sweep, at most 10), and the
  first trial of a new sweep is the base config itself, so the table shows
  what the sweep improved on.
- **Pruner**: the median rule, fed each update's mean episode return:
  after ``startup`` finished trials and a third of a trial's updates, a
  trial whose return falls below the median of the others' at the same
  update is stopped.
- **Objective** (maximised): the mean over updates of the update's mean
  episode return, the area under the learning curve, which rewards
  learning early as well as ending high; ``--objective final`` takes the
  mean return of the last 5 updates instead.
- **Storage**: SQLite in ``DIR/study.db``. Running the same command again
  continues the sweep until the study holds ``K`` finished trials
  (complete, pruned or failed; a trial stopped by Ctrl-C is run again). A
  trial left running by a sweep that was killed is marked failed after
  its heartbeat stops.
- ``--parallel N`` runs N trials at once, each in a process of its own
  (spawned), all on the one study; its SQLite transactions take the
  database's lock when they begin, so two workers never claim one trial
  (:func:`_serialize_transactions`).

At the end a table of the trials is printed and the best trial's whole
config is written to ``DIR/best_config.yaml``, which ``pufferrs train
--config`` takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pufferrs.config import SEARCH_SPACE, Config
from pufferrs.config_files import SUFFIXES, write_config_file
from pufferrs.errors import ConfigError, PufferError

__all__ = ["OBJECTIVES", "check_space", "load_space", "run_sweep", "startup_trials", "trial_table"]

OBJECTIVES = ("auc", "final")
STUDY = "pufferrs"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("pufferrs sweep needs optuna: pip install pufferrs[sweep]") from None
    # A failed trial's error is in the table (and a line as it ends), not
    # a traceback in the log.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The search space in a TOML, YAML or JSON file (a table per field:
    ``[learning_rate] type = "float" low = 1e-4 high = 1e-2 log = true``),
    which replaces the declared one; :data:`SEARCH_SPACE` without a file."""
    if path is None:
        return {k: dict(v) for k, v in SEARCH_SPACE.items()}
    import tomllib

    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    try:
        text = path.read_text()
        if kind == "TOML":
            space = tomllib.loads(text)
        elif kind == "YAML":
            import yaml

            space = yaml.safe_load(text)
        elif kind == "JSON":
            space = json.loads(text)
        else:
            raise ConfigError(f"search space file {str(path)!r}: expected .toml, .yaml, .yml or .json")
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot read the search space file {str(path)!r}: {exc}") from None
    check_space(space, str(path))
    return space


def check_space(space: Any, where: str = "the search space") -> None:
    """Raises :class:`ConfigError` naming the field whose range is not one
    Optuna can draw from, or that is not a numeric Config field."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a table of fields, each a table of type, low, high or choices")
    fields = {f.name for f in dataclasses.fields(Config)}
    for name, spec in space.items():
        if name not in fields or name in ("env", "run_dir", "seed"):
            raise ConfigError(f"{where}: {name!r} is not a setting a sweep can draw")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: {name}: a categorical range needs a non-empty list of choices")
            continue
        if kind not in ("float", "int"):
            raise ConfigError(f"{where}: {name}: type must be float, int or categorical, got {kind!r}")
        low, high = spec.get("low"), spec.get("high")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low <= high or (spec.get("log") and low <= 0):
            raise ConfigError(f"{where}: {name}: needs low <= high (both positive for log), got {low!r}, {high!r}")


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per field of ``space``, drawn by ``trial``."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log")))
    return values


def _within(value: Any, spec: dict[str, Any]) -> bool:
    if spec["type"] == "categorical":
        return value in spec["choices"]
    return isinstance(value, int | float) and spec["low"] <= value <= spec["high"]


def startup_trials(trials: int) -> int:
    """Trials drawn at random before TPE models the results, and finished
    before the pruner stops any: a third of the sweep, from 1 to 10."""
    return max(1, min(10, trials // 3))


def steps_to(metrics: list[dict[str, Any]], target: float) -> int | None:
    """The env steps of the first update whose mean episode return reached ``target``."""
    return next((m["global_step"] for m in metrics if (m.get("env/episode_return") or -math.inf) >= target), None)


@dataclasses.dataclass
class _Objective:
    """One trial: the base config with drawn values, trained in its own
    run directory, reporting each update's mean return to the pruner."""

    base: Config
    directory: Path
    space: dict[str, dict[str, Any]]
    objective: str
    target: float | None

    def __call__(self, trial: Any) -> float:
        import optuna

        from pufferrs.config import apply_process_settings
        from pufferrs.ppo import Trainer

        values = suggest(trial, self.space)
        run_dir = self.directory / "trials" / f"{trial.number:04d}"
        config = dataclasses.replace(self.base, **values, run_dir=str(run_dir))
        metrics: list[dict[str, Any]] = []

        def on_update(row: dict[str, Any]) -> None:
            metrics.append(row)
            ret = row.get("env/episode_return")
            if ret is not None:
                trial.report(ret, row["update"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at update {row['update']} with return {ret:.3g}")

        started = time.monotonic()
        try:
            apply_process_settings(config)
            with Trainer(config) as trainer:
                summary = trainer.train(on_update)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except optuna.TrialPruned as exc:
            print(f"trial {trial.number}: {exc} ({time.monotonic() - started:.0f} s)", flush=True)
            raise
        except PufferError as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            print(f"trial {trial.number}: failed: {exc}", flush=True)
            raise
        finally:
            returns = [m["env/episode_return"] for m in metrics if m.get("env/episode_return") is not None]
            trial.set_user_attr("updates", len(metrics))
            trial.set_user_attr("last_return", returns[-1] if returns else None)
            if self.target is not None:
                trial.set_user_attr("steps_to_target", steps_to(metrics, self.target))
        if self.objective == "final":
            value = summary.get("mean_return_last_5_updates")
            value = -math.inf if value is None else float(value)
        else:
            value = float(sum(returns) / len(returns)) if returns else -math.inf
        print(f"trial {trial.number}: objective {value:.4g} ({time.monotonic() - started:.0f} s)", flush=True)
        return value


def _study(optuna: Any, directory: Path, seed: int, trials: int, num_updates: int) -> Any:
    with warnings.catch_warnings():
        # Heartbeats are marked experimental; they are what fails a trial
        # whose process was killed, so that a resumed sweep runs it again.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{(directory / 'study.db').resolve()}",
            # A worker waits up to 60 s (sqlite3's default: 5) for another's
            # transaction: on a loaded machine with a slow disk, commits queue.
            engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=30,
            grace_period=120,
        )
    _serialize_transactions(storage.engine)
    startup = startup_trials(trials)
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(multivariate=True, seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=num_updates // 3),
        load_if_exists=True,
    )


def _serialize_transactions(engine: Any) -> None:
    """Makes each of ``engine``'s SQLite transactions take the database's
    write lock when it begins (``BEGIN IMMEDIATE``).

    Optuna claims a waiting trial (the base config, enqueued) by reading its
    state and, if it is still waiting, writing "running", relying on
    ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3
    opens a transaction only at the write. Two ``--parallel`` workers that
    ask at the same moment both read "waiting" and both run trial 0, and
    the second to finish fails the sweep ("Cannot tell a COMPLETE trial").
    With the lock taken at BEGIN, the read and the write are one step; a
    worker waits its turn (a sweep's transactions take milliseconds). This
    is SQLAlchemy's documented recipe for the pysqlite driver."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    # Connections pooled while Optuna set the database up predate the hooks.
    engine.dispose()


def _finished(optuna: Any, study: Any) -> int:
    states = optuna.trial.TrialState
    return sum(
        t.state in (states.COMPLETE, states.PRUNED) or (t.state == states.FAIL and not t.user_attrs.get("interrupted"))
        for t in study.get_trials(deepcopy=False)
    )


def _work(
    base: dict[str, Any],
    directory: str,
    space: dict,
    objective: str,
    target: float | None,
    seed: int,
    trials: int,
    count: int,
) -> None:
    """A worker's share of a sweep: ``count`` trials of the study in
    ``directory`` (run in this process, or in one of ``--parallel``'s)."""
    optuna = _optuna()
    config = Config(**base)
    study = _study(optuna, Path(directory), seed, trials, config.num_updates)
    run = _Objective(config, Path(directory), space, objective, target)
    # A config the space makes impossible (a minibatch that does not divide
    # the batch) fails its trial, not the sweep.
    study.optimize(run, n_trials=count, catch=(PufferError,))


def run_sweep(
    base: Config,
    directory: str | Path,
    trials: int,
    parallel: int = 1,
    space: dict[str, dict[str, Any]] | None = None,
    objective: str = "auc",
    target: float | None = None,
) -> tuple[Any, Path | None]:
    """Runs the sweep (see the module docstring) until its study holds
    ``trials`` finished trials; returns ``(study, best config file)``
    (None when no trial completed)."""
    optuna = _optuna()
    space = load_space(None) if space is None else space
    check_space(space)
    if trials < 1 or parallel < 1:
        raise ConfigError(f"trials and parallel must be positive, got {trials} and {parallel}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    base.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study = _study(optuna, directory, base.seed, trials, base.num_updates)
    described = {"env": base.env, "space": json.dumps(space, sort_keys=True), "objective": objective}
    if study.user_attrs:
        for key, value in described.items():
            if study.user_attrs.get(key) != value:
                raise ConfigError(
                    f"{directory} holds a sweep with another {key} ({study.user_attrs.get(key)}): "
                    "give this one a directory of its own"
                )
    else:
        for key, value in described.items():
            study.set_user_attr(key, value)
        # The base config is the first trial: what the sweep must beat.
        start = {k: getattr(base, k) for k, spec in space.items() if _within(getattr(base, k), spec)}
        study.enqueue_trial(start)
    remaining = trials - _finished(optuna, study)
    if remaining > 0:
        workers = min(parallel, remaining)
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        args = (dataclasses.asdict(base), str(directory), space, objective, target)
        if workers == 1:
            _work(*args, base.seed, trials, remaining)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                done = [pool.submit(_work, *args, base.seed + i, trials, share) for i, share in enumerate(shares)]
                for future in done:
                    future.result()
    best = _best_config(optuna, study, base, directory)
    return study, best


def _best_config(optuna: Any, study: Any, base: Config, directory: Path) -> Path | None:
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        return None
    best = max(completed, key=lambda t: t.value)
    config = dataclasses.replace(base, **best.params)
    return write_config_file(directory / "best_config.yaml", config)


def trial_table(study: Any, space: dict[str, dict[str, Any]], target: float | None = None) -> str:
    """The trials as a text table: number, state, objective, updates run,
    last mean return, steps to ``target`` (when given), and the drawn
    values."""
    names = list(space)
    header = ["trial", "state", "objective", "updates", "last return"]
    if target is not None:
        header.append(f"steps to {target:g}")
    header += names
    rows = [header]
    for t in study.get_trials(deepcopy=False):
        row = [str(t.number), t.state.name.lower(), _cell(t.value), _cell(t.user_attrs.get("updates"))]
        row.append(_cell(t.user_attrs.get("last_return")))
        if target is not None:
            row.append(_cell(t.user_attrs.get("steps_to_target"), "-"))
        row += [_cell(t.params.get(n)) for n in names]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines += [
        f"trial {t.number}: {t.user_attrs['error']}"
        for t in study.get_trials(deepcopy=False)
        if "error" in t.user_attrs
    ]
    return "\n".join(lines)


def _cell(value: Any, none: str = "") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
