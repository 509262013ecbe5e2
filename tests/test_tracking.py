"""``--track tensorboard,wandb``: every metric of ``metrics.jsonl`` under
its own name, read back with the trackers' own readers (TensorBoard's
EventAccumulator; the records of W&B's offline run file, decoded with
wandb's protobuf classes), the config as hyperparameters, and a tracker
that is not installed refused in one line."""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from wandb.proto import wandb_internal_pb2

from pufferrs.__main__ import main
from pufferrs.errors import ConfigError
from pufferrs.train import Config, Trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def tracked_run(run_dir: Path, track: str, **overrides: Any) -> list[dict[str, Any]]:
    values = dict(num_envs=4, batch_size=128, minibatch_size=64, total_steps=384, hidden_size=16, seed=3)
    values.update(overrides)
    config = Config.for_env("CartPole-v1", run_dir=str(run_dir), track=track, **values)
    with Trainer(config) as trainer:
        trainer.train()
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, int | float)}


def test_tensorboard_holds_every_metric_and_the_config(tmp_path: Path) -> None:
    rows = tracked_run(tmp_path / "run", "tensorboard", eval_interval=1, eval_episodes=2)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    keys = {k for row in rows for k in numeric(row)} - {"global_step"}
    assert "eval/return" in keys and "losses/approx_kl" in keys
    for key in keys:
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        expected = [(r["global_step"], r[key]) for r in rows if key in r]
        assert [s for s, _ in logged] == [s for s, _ in expected], key
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), key
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    end = events.Scalars("summary/mean_return_last_5_updates")
    assert [(e.step, e.value) for e in end] == [(384, pytest.approx(summary["mean_return_last_5_updates"]))]
    (start,) = [
        plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        for content in events.PluginTagToContent("hparams").values()
        if plugin_data_pb2.HParamsPluginData.FromString(content).HasField("session_start_info")
    ]
    assert start.hparams["learning_rate"].number_value == pytest.approx(2e-3)
    assert start.hparams["env"].string_value == "CartPole-v1"
    assert start.hparams["num_workers"].string_value == "none"


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline run's ``.wandb`` file: LevelDB's log
    framing (32 KiB blocks; a record is a 7-byte header, crc32, length and
    kind, then its bytes, split across blocks as first/middle/last) after
    W&B's 7-byte file header, each record a wandb ``Record`` protobuf."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            pending = chunk if kind == 2 else pending + chunk
        elif kind == 4:
            records.append(pending + chunk)
        else:
            break
    return [wandb_internal_pb2.Record.FromString(r) for r in records]


def name(item: Any) -> str:
    """A W&B item's key (wandb-core writes it as a one-part nested key)."""
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_holds_every_metric_and_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    rows = tracked_run(tmp_path / "run", "wandb", wandb_group="tests", wandb_tags="a,b")
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process may still be writing the file when finish()
    # returns; the run's exit record is its last.
    deadline = time.monotonic() + 30
    while True:
        records = wandb_records(run_file)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == (tmp_path / "run" / "wandb_id").read_text().strip()
    assert (run.project, run.run_group, list(run.tags)) == ("pufferrs", "tests", ["a", "b"])
    config = {name(item): json.loads(item.value_json) for item in run.config.update}
    assert config["learning_rate"] == 2e-3 and config["env"] == "CartPole-v1" and config["num_workers"] == "none"

    history = [
        {name(item): json.loads(item.value_json) for item in r.history.item}
        for r, kind in zip(records, kinds)
        if kind == "history"
    ]
    assert len(history) == len(rows)
    for logged, row in zip(history, rows):
        assert {k: logged[k] for k in numeric(row)} == pytest.approx(numeric(row))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    final = {
        name(item): json.loads(item.value_json)
        for r, kind in zip(records, kinds)
        if kind == "summary"
        for item in r.summary.update
    }
    assert final["mean_return_last_5_updates"] == pytest.approx(summary["mean_return_last_5_updates"])
    assert "exit" in kinds  # the run was finished, not left open


@pytest.mark.parametrize("tracker, module", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(
    tracker: str,
    module: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    # None in sys.modules makes `import` fail as for a package not installed.
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    if tracker == "tensorboard":
        for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
            monkeypatch.delitem(sys.modules, name)
    code = main(["train", "CartPole-v1", "--track", tracker])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"pufferrs train: error: --track {tracker} needs the {module} package: pip install pufferrs[track]"
    ]
    assert not (tmp_path / "runs").exists()


def test_unknown_trackers_and_tracking_without_a_run_directory_are_refused() -> None:
    with pytest.raises(ConfigError, match="track: unknown tracker mlflow"):
        Config.for_env("CartPole-v1", track="tensorboard,mlflow", run_dir="x").validate()
    with pytest.raises(ConfigError, match="track needs a run_dir"):
        Config.for_env("CartPole-v1", track="wandb").validate()
