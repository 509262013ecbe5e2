"""Loading a checkpoint runs no code that the person loading it did not
name (issue 19): a config naming a dotted path to a callable,
``module:EnvId`` or ``imports`` is refused by every loading path unless
the env or imports are given again or the file is trusted; and a file that
does not load under ``weights_only`` is a pufferrs error that never
suggests disabling ``weights_only``."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pufferrs.checkpoints import load_checkpoint, policy_from_checkpoint
from pufferrs.config import Config
from pufferrs.errors import CheckpointError, ConfigError, UntrustedCodeError
from pufferrs.evaluation import evaluate_checkpoint
from pufferrs.factories import BUILT_IN_ENVS, make_policy, make_vecenv, named_code

TIMEOUT = 180


@pytest.fixture(scope="module")
def weights() -> tuple[dict[str, Any], Config]:
    """A CartPole policy's weights and config, to store under other configs."""
    config = Config.for_env("CartPole-v1", num_envs=1, batch_size=64, minibatch_size=32, hidden_size=8)
    probe = make_vecenv(config, num_envs=1, backend="serial")
    try:
        policy = make_policy(probe, config)
    finally:
        probe.close()
    return policy.state_dict(), config


def write_checkpoint(path: Path, weights: tuple[dict[str, Any], Config], **fields: Any) -> Path:
    """A checkpoint of plain data whose config has ``fields`` replaced."""
    state_dict, config = weights
    stored = {**dataclasses.asdict(config), **fields}
    torch.save({"state_dict": state_dict, "config": stored, "update": 1, "global_step": 64}, path)
    return path


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``evilmod``, importable from ``tmp_path``, touches ``tmp_path/marker``
    when imported; its ``make`` does too when called. Yields the marker."""
    marker = tmp_path / "marker"
    (tmp_path / "evilmod.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "def make(**kwargs):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("evilmod", None)
    yield marker
    sys.modules.pop("evilmod", None)  # a test that trusted it imported it


def asks(marker: Path) -> dict[str, dict[str, Any]]:
    """The configs that ask to run code, each touching ``marker`` if run."""
    return {
        "os.system": {"env": "os.system", "env_kwargs": {"command": f"touch {marker}"}},
        "subprocess.getoutput": {"env": "subprocess.getoutput", "env_kwargs": {"cmd": f"touch {marker}"}},
        "module:EnvId": {"env": "evilmod:CartPole-v1"},
        "dotted path": {"env": "evilmod.make"},
        "imports": {"env": "CartPole-v1", "imports": "json, evilmod"},
    }


ASKS = ["os.system", "subprocess.getoutput", "module:EnvId", "dotted path", "imports"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pufferrs", *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )


# ---------------------------------------------------------------------------
# Code named in a checkpoint


@pytest.mark.parametrize("ask", ASKS)
@pytest.mark.parametrize("load", ["load_checkpoint", "policy_from_checkpoint", "evaluate_checkpoint"])
def test_loading_refuses_the_code_a_checkpoint_names(
    ask: str, load: str, tmp_path: Path, weights: tuple, evil_module: Path
) -> None:
    path = write_checkpoint(tmp_path / "model.pt", weights, **asks(evil_module)[ask])
    loaders = {
        "load_checkpoint": load_checkpoint,
        "policy_from_checkpoint": policy_from_checkpoint,
        "evaluate_checkpoint": functools.partial(evaluate_checkpoint, episodes=1),
    }
    with pytest.raises(UntrustedCodeError) as info:
        loaders[load](path)
    message = str(info.value)
    assert str(path) in message and "--trust-checkpoint-code" in message and "trust_code=True" in message
    assert ("--imports json, evilmod" if ask == "imports" else f"--env {asks(evil_module)[ask]['env']}") in message
    assert not evil_module.exists()
    assert "evilmod" not in sys.modules


@pytest.mark.parametrize("ask", ASKS)
def test_pufferrs_eval_refuses_the_code_a_checkpoint_names(ask: str, tmp_path: Path, weights: tuple) -> None:
    """As a process run in the directory of the module the checkpoint names,
    where the command finds local modules (issue 20)."""
    marker = tmp_path / "marker"
    (tmp_path / "evilmod.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nmake = print\n")
    path = write_checkpoint(tmp_path / "model.pt", weights, **asks(marker)[ask])
    result = run_cli("eval", str(path), "--episodes", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs no code named only in a checkpoint" in lines[0], result.stderr
    assert not marker.exists()


def test_pufferrs_eval_video_refuses_the_code_a_checkpoint_names(tmp_path: Path, weights: tuple) -> None:
    marker = tmp_path / "marker"
    path = write_checkpoint(tmp_path / "model.pt", weights, **asks(marker)["os.system"])
    result = run_cli("eval", str(path), "--episodes", "1", "--video", str(tmp_path / "video"), cwd=tmp_path)
    assert result.returncode == 2 and "UntrustedCodeError" not in result.stderr
    assert "asks to import and call os.system" in result.stderr
    assert not marker.exists() and not (tmp_path / "video").exists()


def test_naming_the_code_again_loads_the_checkpoint(tmp_path: Path, weights: tuple) -> None:
    # Harmless code to name: a module path before a registered id, and imports.
    env, imports = "gymnasium.envs.classic_control:CartPole-v1", "json"
    path = write_checkpoint(tmp_path / "model.pt", weights, env=env, imports=imports)
    with pytest.raises(UntrustedCodeError, match="--env gymnasium.envs.classic_control:CartPole-v1 .* --imports json"):
        policy_from_checkpoint(path)
    # Each must be named: the env alone leaves the imports refused, and so on.
    with pytest.raises(UntrustedCodeError, match="import the module 'json'") as info:
        policy_from_checkpoint(path, env=env)
    assert "--env" not in str(info.value)
    with pytest.raises(UntrustedCodeError, match="gymnasium.envs.classic_control") as info:
        policy_from_checkpoint(path, imports=imports)
    assert "--imports" not in str(info.value)
    _, config, _ = policy_from_checkpoint(path, env=env, imports=imports)
    assert (config.env, config.imports) == (env, imports)
    _, config, _ = policy_from_checkpoint(path, trust_code=True)
    assert (config.env, config.imports) == (env, imports)
    result, config, _ = evaluate_checkpoint(path, episodes=1, env=env, imports="")
    assert len(result["returns"]) == 1 and config.imports is None  # the caller's: none
    # The caller's env replaces the checkpoint's.
    _, config, _ = policy_from_checkpoint(path, env="CartPole-v1", imports="")
    assert config.env == "CartPole-v1"


def test_pufferrs_eval_loads_what_is_named_or_trusted(tmp_path: Path, weights: tuple) -> None:
    env = "gymnasium.envs.classic_control:CartPole-v1"
    path = write_checkpoint(tmp_path / "model.pt", weights, env=env)
    named = run_cli("eval", str(path), "--episodes", "1", "--greedy", "--env", env, cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert "mean return" in named.stdout
    trusted = run_cli("eval", str(path), "--episodes", "1", "--greedy", "--trust-checkpoint-code", cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr


def test_trusting_the_file_runs_its_code(tmp_path: Path, weights: tuple, evil_module: Path) -> None:
    """The other side of the refusals above: the marker is what the code
    would do, and trust_code lets it."""
    path = write_checkpoint(tmp_path / "model.pt", weights, env="evilmod:CartPole-v1")
    policy_from_checkpoint(path, trust_code=True)
    assert evil_module.exists()


def test_registered_and_built_in_envs_need_no_trust(tmp_path: Path, weights: tuple) -> None:
    for env in ("CartPole-v1", "pufferrs/Memory-v0", "ALE/Pong-v5", "classic/connect_four-v3", *BUILT_IN_ENVS):
        path = write_checkpoint(tmp_path / "model.pt", weights, env=env)
        assert load_checkpoint(path)[1].env == env
    pytest.importorskip("pettingzoo")
    assert named_code("pettingzoo.classic.connect_four_v3") == []


identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
dotted = st.lists(identifiers, min_size=2, max_size=4).map(".".join)
# Real modules and callables that would do harm, and made-up ones.
harmful = st.sampled_from(["os.system", "subprocess.getoutput", "shutil.rmtree", "builtins.exec", "os.remove"])


@given(
    env=st.one_of(
        harmful,
        dotted.filter(lambda e: not e.startswith("pettingzoo.")),
        st.tuples(st.one_of(identifiers, dotted), st.sampled_from(["CartPole-v1", "X-v0", ""])).map(":".join),
    ),
    kwargs=st.dictionaries(identifiers, st.text(max_size=10), max_size=3),
)
def test_any_code_a_checkpoint_names_is_refused(env: str, kwargs: dict, weights: tuple) -> None:
    before = set(sys.modules)
    with tempfile.TemporaryDirectory() as folder:
        path = write_checkpoint(Path(folder) / "model.pt", weights, env=env, env_kwargs=kwargs)
        with pytest.raises(UntrustedCodeError) as info:
            load_checkpoint(path)
        with pytest.raises(UntrustedCodeError):
            policy_from_checkpoint(path)
    assert (repr(env.split(":")[0]) if ":" in env else f"import and call {env}") in str(info.value)
    assert env.split(":")[0].split(".")[0] not in set(sys.modules) - before


@given(modules=st.lists(st.one_of(identifiers, dotted), min_size=1, max_size=3))
def test_any_imports_a_checkpoint_names_are_refused(modules: list[str], weights: tuple) -> None:
    imports = ", ".join(modules)
    with tempfile.TemporaryDirectory() as folder:
        path = write_checkpoint(Path(folder) / "model.pt", weights, imports=imports)
        with pytest.raises(UntrustedCodeError) as info:
            load_checkpoint(path)
        assert load_checkpoint(path, imports=imports)[1].imports == imports
    assert all(repr(m) in str(info.value) for m in modules)


@given(env=st.sampled_from(sorted(gym.registry)))
def test_registered_gymnasium_ids_are_not_code(env: str) -> None:
    assert named_code(env) == []


# ---------------------------------------------------------------------------
# Files that are not checkpoints


def assert_not_a_checkpoint(path: Path, info: pytest.ExceptionInfo) -> None:
    message = str(info.value)
    assert str(path) in message and "is not a pufferrs checkpoint" in message
    assert "weights_only" not in message and "trust" not in message
    # No chained traceback carrying torch's text either.
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def touch_marker() -> None:  # pickled by reference below
    Path("marker").touch()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: pickle.dumps({"state_dict": {}, "config": os.system}, protocol=2), id="os.system"),
        pytest.param(lambda: pickle.dumps(functools.partial(subprocess.getoutput, "touch marker")), id="getoutput"),
        pytest.param(lambda: pickle.dumps({"config": touch_marker}), id="a function"),
        pytest.param(lambda: b"hello, world\n", id="text"),
        pytest.param(lambda: b"", id="empty"),
        pytest.param(lambda: b"PK\x03\x04" + b"\0" * 100, id="broken zip"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused(
    payload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    path.write_bytes(payload())
    for load in (load_checkpoint, policy_from_checkpoint, functools.partial(evaluate_checkpoint, episodes=1)):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert_not_a_checkpoint(path, info)
    assert not (tmp_path / "marker").exists()


def test_a_blocked_global_names_the_object(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "config": os.system}, path)
    with pytest.raises(CheckpointError, match=r"refers to the Python object (posix|nt|os)\.system") as info:
        load_checkpoint(path)
    assert_not_a_checkpoint(path, info)


@given(data=st.binary(max_size=200))
def test_any_bytes_are_a_checkpoint_or_a_pufferrs_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert_not_a_checkpoint(path, info)


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(value=plain)
def test_plain_data_without_weights_and_config_is_not_a_checkpoint(value: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        torch.save(value, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert_not_a_checkpoint(path, info)


@pytest.mark.parametrize(
    "fields",
    [{"env": 5}, {"env": ["os.system"]}, {"imports": ["os"]}, {"env_kwargs": "command"}],
    ids=["env int", "env list", "imports list", "env_kwargs str"],
)
def test_a_config_of_the_wrong_types_is_not_a_checkpoint(fields: dict, tmp_path: Path, weights: tuple) -> None:
    path = write_checkpoint(tmp_path / "model.pt", weights, **fields)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_not_a_checkpoint(path, info)


def test_pufferrs_eval_of_a_pickle_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "config": os.system}, protocol=2))
    result = run_cli("eval", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a pufferrs checkpoint" in lines[0], result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path)
    assert issubclass(CheckpointError, ConfigError) and issubclass(UntrustedCodeError, CheckpointError)
