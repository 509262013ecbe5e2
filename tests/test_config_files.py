"""Configs as files: ``pufferrs train --config FILE`` (TOML, YAML, a run's
``config.json``) between the env's presets and the options typed, and
``--print-config``; files are checked field by field, naming the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pufferrs.__main__ import main
from pufferrs.config import Config
from pufferrs.config_files import read_config_file, write_config_file
from pufferrs.errors import ConfigError


def printed_config(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    code = main(["train", *args, "--print-config"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


TOML = """\
env = "CartPole-v1"
learning_rate = 1e-3
num_envs = 4
batch_size = 512
lstm = false
env_kwargs = { max_episode_steps = 200 }
"""

YAML = """\
env: CartPole-v1
learning_rate: 0.001
num_envs: 4
batch_size: 512
lstm: false
env_kwargs: {max_episode_steps: 200}
num_workers: null
"""


def test_toml_and_yaml_files_sit_between_the_presets_and_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.toml").write_text(TOML)
    Path("a.yaml").write_text(YAML)
    from_toml = printed_config(capsys, "--config", "a.toml", "--batch-size", "256", "--name", "x")
    from_yaml = printed_config(capsys, "--config", "a.yaml", "--batch-size", "256", "--name", "x")
    assert from_toml == from_yaml
    preset = dataclasses.asdict(Config.for_env("CartPole-v1"))
    expected = {**preset, "learning_rate": 1e-3, "num_envs": 4, "batch_size": 256}
    expected.update(env_kwargs={"max_episode_steps": 200}, run_dir="runs/x")
    assert from_toml == expected  # the preset's update_epochs etc. stay; the file's and the option's win
    # The positional env wins over the file's.
    assert printed_config(capsys, "Acrobot-v1", "--config", "a.toml")["env"] == "Acrobot-v1"
    assert not Path("runs").exists()  # printing the config starts nothing


def test_a_run_directorys_config_json_starts_a_new_run_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    old = Config.for_env("CartPole-v1", learning_rate=5e-4, seed=9, run_dir="runs/old")
    Path("runs/old").mkdir(parents=True)
    Path("runs/old/config.json").write_text(json.dumps(dataclasses.asdict(old), indent=2))
    new = printed_config(capsys, "--config", "runs/old/config.json", "--name", "new")
    assert new == {**dataclasses.asdict(old), "run_dir": "runs/new"}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.toml", "learning_rate = ", "is not valid TOML"),
        ("a.yaml", "a: [1", "is not valid YAML"),
        ("a.json", "[1, 2]", "expected a table of settings, got list"),
        ("a.toml", "lerning_rate = 0.1\n", "unknown settings lerning_rate"),
        ("a.toml", 'batch_size = "big"\n', "batch_size must be an integer, got 'big'"),
        ("a.yaml", "lstm: 1\n", "lstm must be true or false, got 1"),
        ("a.yaml", "seed: null\n", "seed must be an integer, got None"),
        ("a.ini", "x=1", "expected .toml, .yaml, .yml or .json"),
    ],
)
def test_bad_config_files_are_refused_naming_the_file(
    name: str, text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    code = main(["train", "--config", name])
    err = capsys.readouterr().err
    assert code == 2 and message in err and name in err, err
    assert len(err.strip().splitlines()) == 1
    code = main(["train", "--config", "missing.toml"])
    assert code == 2 and "cannot read the config file 'missing.toml'" in capsys.readouterr().err


def test_print_config_refuses_what_training_would(capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "CartPole-v1", "--minibatch-size", "1000", "--print-config"])
    assert code == 2 and "minibatch_size (1000) must divide batch_size (1024)" in capsys.readouterr().err


@given(
    learning_rate=st.floats(1e-6, 1.0),
    num_envs=st.integers(1, 64),
    lstm=st.booleans(),
    num_workers=st.none() | st.integers(1, 16),
    encoders=st.dictionaries(st.sampled_from(["image", "inv/hp", "x"]), st.sampled_from(["codes", "scalars"])),
    suffix=st.sampled_from([".yaml", ".json"]),
)
def test_written_configs_read_back_to_the_same_config(tmp_path_factory: Any, suffix: str, **values: Any) -> None:
    config = Config.for_env("CartPole-v1", **values)
    path = write_config_file(tmp_path_factory.mktemp("c") / f"config{suffix}", config)
    read = read_config_file(path)
    assert Config.for_env(read.pop("env"), **read) == config


def test_written_configs_need_yaml_or_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="written as .yaml or .json"):
        write_config_file(tmp_path / "c.toml", Config())
