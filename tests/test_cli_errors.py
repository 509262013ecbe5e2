"""The command line's refusals and small promises (issues 19 and 20):
seeds and encoders that are argument errors, local env modules found as
``python -m`` finds them, modules not found said as such, ``eval --video``
refusing before it plays, and a run stopped by SIGTERM that records the
updates it finished."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pufferrs.evaluation
from pufferrs.__main__ import MAX_SEED, build_parser, main
from pufferrs.config import Config
from pufferrs.encoders import ENCODERS, check_encoders
from pufferrs.errors import ConfigError
from pufferrs.factories import check_env, make_policy, make_vecenv

TIMEOUT = 180


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``pufferrs ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse_error(*args: str) -> str:
    """The one-line message of an argument error (argparse: exit status 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
        build_parser().parse_args(list(args))
    assert info.value.code == 2
    lines = err.getvalue().strip().splitlines()
    assert lines[0].startswith("usage:") and "Traceback" not in "\n".join(lines)
    return lines[-1]


# ---------------------------------------------------------------------------
# Seeds


@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)))
def test_seeds_out_of_range_are_argument_errors(seed: int) -> None:
    for command in ("train", "eval model.pt"):
        line = parse_error(*command.split(), "--seed", str(seed))
        assert line.endswith(f"argument --seed: a seed is an integer from 0 to 2**63 - 1, got {seed}"), line


@given(seed=st.integers(min_value=0, max_value=MAX_SEED))
def test_seeds_in_range_are_taken(seed: int) -> None:
    assert build_parser().parse_args(["train", "--seed", str(seed)]).seed == seed
    assert build_parser().parse_args(["eval", "model.pt", "--seed", str(seed)]).seed == seed


def test_a_seed_that_is_not_a_number() -> None:
    assert parse_error("train", "--seed", "1.5").endswith("argument --seed: invalid int value: '1.5'")


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999999"])
def test_bad_seeds_exit_with_one_line(seed: str, tmp_path: Path) -> None:
    """As a process: no training starts, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "pufferrs", "train", "CartPole-v1", "--seed", seed],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"pufferrs train: error: argument --seed: a seed is an integer from 0 to 2**63 - 1, got {seed}"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seed", [-1, 2**63, 10**25])
def test_config_refuses_seeds_out_of_range(seed: int) -> None:
    with pytest.raises(ConfigError, match=rf"seed must be an integer from 0 to 2\*\*63 - 1, got {seed}"):
        Config.for_env("CartPole-v1", seed=seed).validate()


# ---------------------------------------------------------------------------
# Encoders


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)
not_encoders = json_values.filter(lambda v: not (isinstance(v, str) and (v in ENCODERS or v.startswith("crop"))))


@given(key=st.text(max_size=8), value=not_encoders)
def test_encoders_that_are_not_names_are_argument_errors(key: str, value: object) -> None:
    line = parse_error("train", "--encoders", json.dumps({key: value}))
    assert "argument --encoders:" in line and repr(key) in line and repr(value) in line, line


def test_the_reproducer_of_a_number_for_an_encoder() -> None:
    line = parse_error("train", "--encoders", '{"": 5}')
    assert line.endswith(
        "argument --encoders: encoders: the leaf '' is given 5, not an encoder name: use image, codes, text, "
        "scalars, flat, none or crop N at LEAF[i,j]"
    )


@given(names=st.dictionaries(st.text(max_size=8), st.sampled_from([*ENCODERS, "crop 9 at blstats[0,1]"])))
def test_encoder_names_are_taken(names: dict[str, str]) -> None:
    check_encoders(names)
    assert build_parser().parse_args(["train", "--encoders", json.dumps(names)]).encoders == names


def test_check_encoders_refuses_keys_that_are_not_strings() -> None:
    with pytest.raises(ValueError, match="0 is not a leaf key"):
        check_encoders({0: "flat"})
    with pytest.raises(ValueError, match="encoders must map leaf keys to encoder names"):
        check_encoders(["flat"])  # type: ignore[arg-type]


def test_the_policy_refuses_an_encoder_that_is_not_a_name() -> None:
    """The same rule through the Python API (Config, not the command line)."""
    config = Config.for_env("CartPole-v1", policy="auto", encoders={"": 5}, num_envs=1)
    env = make_vecenv(config, num_envs=1, backend="serial")
    try:
        with pytest.raises(ConfigError, match="the leaf '' is given 5, not an encoder name"):
            make_policy(env, config)
    finally:
        env.close()


# ---------------------------------------------------------------------------
# Env modules: local ones found, unknown ones not found


MY_ENV = """\
import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class MyEnv(CartPoleEnv):
    pass


gym.register("MyEnv-v0", entry_point=MyEnv, max_episode_steps=20)
"""


def test_the_console_script_finds_a_module_in_the_current_directory(tmp_path: Path) -> None:
    script = shutil.which("pufferrs", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no pufferrs console script beside this Python")
    (tmp_path / "mymodule.py").write_text(MY_ENV)
    small = ["--total-steps", "128", "--batch-size", "128", "--minibatch-size", "64", "--num-envs", "4"]
    result = subprocess.run(
        [script, "train", "mymodule:MyEnv-v0", *small, "--plain", "--name", "local"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "local" / "model.pt").exists()


def test_main_leaves_the_import_path_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    code, _, err = cli(capsys, "train", "no_such_module_xyz:Thing-v0")
    assert code == 2 and "which was not found" in err
    assert sys.path == before


@pytest.mark.parametrize("env", ["no_such_module_xyz:Thing-v0", "no_such_module_xyz.make", "no_such_module_xyz.a.b"])
def test_a_module_that_is_not_a_known_package_is_not_found(env: str) -> None:
    with pytest.raises(ConfigError, match="needs the module 'no_such_module_xyz.*', which was not found") as info:
        check_env(Config.for_env(env))
    assert "pip install" not in str(info.value)


def test_imports_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs the module 'no_such_module_xyz', which was not found"):
        check_env(Config.for_env("CartPole-v1", imports="json, no_such_module_xyz"))


def test_a_module_whose_own_import_is_missing_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "brokenmod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "brokenmod", raising=False)
    with pytest.raises(ConfigError, match="it imports 'no_such_dependency_xyz', which was not found") as info:
        check_env(Config.for_env("brokenmod:Thing-v0"))
    assert "pip install" not in str(info.value)


# ---------------------------------------------------------------------------
# eval --video refuses before it plays


def untrained_checkpoint(env: str, path: Path) -> Path:
    """A checkpoint of a fresh, small policy for ``env`` at ``path``."""
    config = Config.for_env(env, num_envs=1, batch_size=64, minibatch_size=32, hidden_size=8)
    probe = make_vecenv(config, num_envs=1, backend="serial")
    try:
        policy = make_policy(probe, config)
    finally:
        probe.close()
    torch.save({"state_dict": policy.state_dict(), "config": dataclasses.asdict(config)}, path)
    return path


@pytest.fixture
def cartpole_checkpoint(tmp_path: Path) -> Path:
    return untrained_checkpoint("CartPole-v1", tmp_path / "model.pt")


def test_eval_video_without_moviepy_refuses_before_the_episodes(
    cartpole_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "moviepy", None)  # `import moviepy` raises ImportError

    def played(*args: object, **kwargs: object) -> None:
        raise AssertionError("episodes played before the video was refused")

    monkeypatch.setattr(pufferrs.evaluation, "evaluate", played)
    code, out, err = cli(capsys, "eval", str(cartpole_checkpoint), "--video", str(cartpole_checkpoint.parent / "v"))
    assert code == 2 and "needs moviepy" in err, err
    assert "episode" not in out


def test_eval_video_of_an_env_without_frames_refuses_before_the_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = untrained_checkpoint("pufferrs/Memory-v0", tmp_path / "model.pt")
    monkeypatch.setattr(pufferrs.evaluation, "evaluate", lambda *a, **k: pytest.fail("episodes played"))
    pytest.importorskip("moviepy")
    code, _, err = cli(capsys, "eval", str(path), "--video", str(tmp_path / "v"))
    assert code == 2 and "cannot be filmed" in err, err


# ---------------------------------------------------------------------------
# SIGTERM


def test_a_run_stopped_by_sigterm_records_the_updates_it_finished(tmp_path: Path) -> None:
    # --no-compile: a run this long would compile its update, 20 s of a
    # fresh machine's CI spent before the first update, on nothing SIGTERM
    # touches.
    args = [
        "CartPole-v1",
        "--total-steps",
        "100000000",
        "--batch-size",
        "256",
        "--minibatch-size",
        "128",
        "--no-compile",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "pufferrs", "train", *args, "--num-envs", "4", "--plain", "--name", "stopped"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / "runs" / "stopped"
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            metrics = run / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    assert "terminated" in stderr and "Traceback" not in stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    assert summary["updates"] == checkpoint["update"] == len(rows) == rows[-1]["update"] >= 3
