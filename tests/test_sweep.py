"""``pufferrs sweep``: Optuna trials over the declared search space (or a
file's), a study in SQLite that a second run continues, the base config as
the first trial, each update's return reported to the pruner, and the
best config written as a file that ``pufferrs train --config`` takes."""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch

from pufferrs.__main__ import main
from pufferrs.config import SEARCH_SPACE, Config
from pufferrs.config_files import read_config_file
from pufferrs.errors import ConfigError
from pufferrs.sweep import _study, check_space, load_space, run_sweep


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def tiny(**overrides: object) -> Config:
    values = dict(num_envs=4, batch_size=128, minibatch_size=64, total_steps=384, hidden_size=16)
    values.update(overrides)
    return Config.for_env("CartPole-v1", **values)


SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "minibatch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


def test_the_declared_space_covers_the_issue_fields() -> None:
    assert set(SEARCH_SPACE) == {
        "learning_rate",
        "gamma",
        "gae_lambda",
        "ent_coef",
        "clip_coef",
        "update_epochs",
        "minibatch_size",
        "hidden_size",
    }
    assert SEARCH_SPACE["learning_rate"]["log"] is True
    check_space(SEARCH_SPACE)


def test_a_sweep_runs_continues_and_writes_its_best_config(tmp_path: Path) -> None:
    study, best = run_sweep(tiny(), tmp_path / "sweep", trials=2, space=SPACE, target=15.0)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # The base config is the first trial; every update's return went to the pruner.
    assert trials[0].params == {"learning_rate": 2e-3, "minibatch_size": 64}
    rows = [json.loads(line) for line in (tmp_path / "sweep/trials/0000/metrics.jsonl").read_text().splitlines()]
    assert trials[0].intermediate_values == {r["update"]: r["env/episode_return"] for r in rows}
    assert trials[0].value == pytest.approx(sum(r["env/episode_return"] for r in rows) / len(rows))
    assert trials[0].user_attrs["steps_to_target"] == next(
        r["global_step"] for r in rows if r["env/episode_return"] >= 15
    )
    # The best config, read back as train --config reads it, is the base with the best trial's values.
    winner = max(trials, key=lambda t: t.value)
    assert best == tmp_path / "sweep" / "best_config.yaml"
    assert read_config_file(best) == {
        **{k: v for k, v in tiny(**winner.params).__dict__.items() if k != "run_dir"},
    }
    # The same sweep again with more trials continues the study in study.db.
    study, _ = run_sweep(tiny(), tmp_path / "sweep", trials=3, space=SPACE)
    assert [t.number for t in study.get_trials()] == [0, 1, 2]
    assert study.get_trials()[0].params == trials[0].params
    with pytest.raises(ConfigError, match="holds a sweep with another env"):
        run_sweep(Config.for_env("Acrobot-v1"), tmp_path / "sweep", trials=1, space=SPACE)


def test_a_config_the_space_makes_impossible_fails_its_trial_only(tmp_path: Path) -> None:
    space = {"minibatch_size": {"type": "categorical", "choices": [1000]}}
    study, best = run_sweep(tiny(), tmp_path / "sweep", trials=1, space=space)
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL and best is None
    assert trial.user_attrs["error"] == "ConfigError: minibatch_size (1000) must divide batch_size (128)"


@pytest.mark.parametrize(
    "space, message",
    [
        ({"lerning_rate": {"type": "float", "low": 0.1, "high": 1}}, "'lerning_rate' is not a setting"),
        ({"gamma": {"type": "float", "low": 1, "high": 0.5}}, "gamma: needs low <= high"),
        ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "both positive for log"),
        ({"hidden_size": {"type": "categorical", "choices": []}}, "non-empty list of choices"),
        ({"hidden_size": {"type": "normal"}}, "type must be float, int or categorical"),
    ],
)
def test_bad_search_spaces_are_refused(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_space(space)


def _ask_at_once(directory: str, barrier: object) -> int:
    study = _study(optuna, Path(directory), seed=0, trials=8, num_updates=3)
    # A claim of a trial (an update of its state) holds its commit 0.5 s:
    # the window in which another worker's claim must wait for it, as on a
    # loaded machine whose disk is slow to sync.
    claimed = []

    def note_a_claim(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE trials SET state"):
            claimed.append(statement)

    def hold_the_commit(_connection: object) -> None:
        if claimed:
            claimed.clear()
            time.sleep(0.5)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", note_a_claim)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", hold_the_commit)
    barrier.wait()
    return study.ask().number


def test_workers_asking_at_once_never_share_the_enqueued_trial(tmp_path: Path) -> None:
    # --parallel's workers start together and each asks for a trial; the
    # first one asked for is the enqueued base config. Two that both claimed
    # it (SQLite transactions that took the lock only at their write) ran
    # trial 0 twice and failed the sweep.
    _study(optuna, tmp_path, seed=0, trials=8, num_updates=3).enqueue_trial({"learning_rate": 1e-3})
    workers = 3
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        barrier = manager.Barrier(workers)
        numbers = list(pool.map(_ask_at_once, [str(tmp_path)] * workers, [barrier] * workers))
    assert sorted(numbers) == list(range(workers))


def test_cli_sweep_in_parallel_with_a_space_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("space.toml").write_text('[learning_rate]\ntype = "float"\nlow = 1e-4\nhigh = 1e-2\nlog = true\n')
    assert load_space("space.toml") == {"learning_rate": SPACE["learning_rate"]}
    args = [
        "--num-envs",
        "4",
        "--batch-size",
        "128",
        "--minibatch-size",
        "64",
        "--total-steps",
        "128",
        "--hidden-size",
        "16",
    ]
    code = main(
        ["sweep", "CartPole-v1", "--trials", "2", "--parallel", "2", "--space", "space.toml", "--dir", "sw", *args]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    table = out[re.search(r"^ *trial +state", out, re.M).start() :].splitlines()
    assert table[0].split() == ["trial", "state", "objective", "updates", "last", "return", "learning_rate"]
    assert [line.split()[:2] for line in table[1:3]] == [["0", "complete"], ["1", "complete"]]
    assert "train it: pufferrs train --config sw/best_config.yaml" in out
    code = main(["train", "--config", "sw/best_config.yaml", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["env"] == "CartPole-v1" and printed["total_steps"] == 128
