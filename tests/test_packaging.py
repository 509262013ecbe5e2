"""What the package says about itself: its version, from the one place a
release sets it, and which platforms its backends run on."""

from __future__ import annotations

import importlib.metadata
import platform
import tomllib
from pathlib import Path

import gymnasium
import pytest

import pufferrs
import pufferrs.vector
from pufferrs.__main__ import main

CARGO_TOML = Path(__file__).resolve().parent.parent / "Cargo.toml"


def test_version_is_the_cargo_workspace_version() -> None:
    cargo_version = tomllib.loads(CARGO_TOML.read_text())["workspace"]["package"]["version"]
    assert pufferrs.__version__ == cargo_version
    assert pufferrs.__version__ == importlib.metadata.version("pufferrs")


def test_command_line_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pufferrs {pufferrs.__version__}\n"


def test_multiprocessing_elsewhere_than_linux_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with pytest.raises(pufferrs.SharedMemoryError, match=r"needs Linux .* this is Darwin: use backend='serial'"):
        pufferrs.vector.make(lambda: gymnasium.make("CartPole-v1"), num_envs=2, backend="multiprocessing")
    # Serial does not need shared memory between processes.
    with pufferrs.vector.make(lambda: gymnasium.make("CartPole-v1"), num_envs=2) as envs:
        assert envs.reset(seed=0)[0].shape == (2, 4)
