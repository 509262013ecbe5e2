"""Envs of a user's own crate, loaded at run time through pufferrs's C ABI
(``pufferrs_envs::abi``): a capsule of another version, of other sizes or
laid out otherwise is refused saying so, and the template crate
(``examples/native_game``, built into the environment by ``.ci/run``)
trains with ``pufferrs train pufferrs_game:Catch-v0``, on Serial and in
worker processes."""

from __future__ import annotations

import ctypes
import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import pufferrs.vector as pv
from pufferrs import _native
from pufferrs.__main__ import main
from pufferrs.errors import ConfigError
from pufferrs.native import NativeEnv, register


class Table(ctypes.Structure):
    """``pufferrs_envs::abi::EnvTable`` as a crate lays it out."""

    _fields_ = [
        ("agents", ctypes.c_uint32),
        ("observation_row_bytes", ctypes.c_uint64),
        ("action_row_bytes", ctypes.c_uint64),
        ("layout_fingerprint", ctypes.c_uint64),
        ("id", ctypes.c_char_p),
        ("spaces", ctypes.c_char_p),
        ("context", ctypes.c_void_p),
        ("make", ctypes.c_void_p),
        ("reset", ctypes.c_void_p),
        ("step", ctypes.c_void_p),
        ("drop", ctypes.c_void_p),
    ]


class Tables(ctypes.Structure):
    """``pufferrs_envs::abi::EnvTables``."""

    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("tables_size", ctypes.c_uint32),
        ("table_size", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("tables", ctypes.POINTER(Table)),
        ("version", ctypes.c_char_p),
    ]


def capsule(tables: Tables, name: bytes = b"pufferrs_envs.tables") -> object:
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ctypes.addressof(tables), name, None)


SPACES = json.dumps(
    {
        "observation": {"kind": "Box", "dtype": "float32", "shape": [4], "low": [-1.0] * 4, "high": [1.0] * 4},
        "action": {"kind": "Discrete", "dtype": "int64", "n": 2, "start": 0},
        "agents": None,
    }
).encode()


def tables(version: int = _native.ENV_ABI_VERSION, observation_row_bytes: int = 16) -> tuple[Tables, Table]:
    # Function pointers that are never called: loading refuses first.
    table = Table(0, observation_row_bytes, 8, 0, b"Fake-v0", SPACES, None, 1, 1, 1, 1)
    made = Tables(version, ctypes.sizeof(Tables), ctypes.sizeof(Table), 1, ctypes.pointer(table), b"9.9.9")
    return made, table


def test_loading_refuses_what_is_not_a_crates_tables() -> None:
    with pytest.raises(ConfigError, match='expected a capsule named "pufferrs_envs.tables".*got int'):
        _native.load_envs(3, json.loads)
    made, _ = tables()
    with pytest.raises(ConfigError, match="expected a capsule named"):
        _native.load_envs(capsule(made, b"other.name"), json.loads)


def test_loading_refuses_another_abi_version_before_reading_anything_else() -> None:
    made, _ = tables(version=_native.ENV_ABI_VERSION + 1)
    made.tables = None  # nothing past the version may be read
    with pytest.raises(ConfigError, match="the crate was built for pufferrs's env ABI version 2; this pufferrs loads"):
        _native.load_envs(capsule(made), json.loads)


def test_loading_refuses_other_sizes_and_layouts_naming_the_env() -> None:
    made, _ = tables()
    made.table_size += 8
    with pytest.raises(ConfigError, match=r"the crate's tables are \d+ and \d+ bytes, this pufferrs's"):
        _native.load_envs(capsule(made), json.loads)
    made, _ = tables(observation_row_bytes=20)
    with pytest.raises(ConfigError, match=r"Fake-v0: the crate \(pufferrs-envs 9.9.9\) was built for rows of 20 and 8"):
        _native.load_envs(capsule(made), json.loads)
    with pytest.raises(ConfigError, match="module json has no pufferrs_envs"):
        register(json)


template = pytest.mark.skipif(
    importlib.util.find_spec("pufferrs_game") is None,
    reason="the template crate is not built: .ci/run builds it with maturin develop (docs/native-envs.md)",
)


@template
def test_the_template_crate_loads_and_steps_in_processes_as_in_serial() -> None:
    import pufferrs_game

    assert pufferrs_game.ENV_IDS == ["Catch-v0"]
    env = gym.make("pufferrs_game:Catch-v0")
    assert type(env) is NativeEnv and env.observation_space["board"].shape == (6, 5)
    actions = np.random.default_rng(0).integers(0, 3, (60, 4))
    seen = []
    for backend in ("serial", "multiprocessing"):
        with pv.make(lambda: gym.make("pufferrs_game:Catch-v0"), num_envs=4, backend=backend) as envs:
            obs, _ = envs.reset(seed=1)
            rows = [obs.copy()]
            for step in actions:
                obs, rewards, *_ = envs.step(step)
                rows.append(obs.copy())
                rows.append(rewards.copy())
            seen.append(rows)
    assert all(np.array_equal(a, b) for a, b in zip(*seen))
    # Each leaf where the layout says: the board draws the ball and paddle.
    obs, _ = env.reset(seed=2)
    (column, row), paddle = obs["ball"], obs["paddle"]
    assert obs["board"][row, column] == obs["board"][5, paddle] == 1 and obs["board"].sum() == 2


@template
def test_pufferrs_train_trains_the_template_crate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(["train", "pufferrs_game:Catch-v0", "--total-steps", "4096", "--num-envs", "8", "--run-dir", str(run)])
    assert code in (0, None)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["global_step"] >= 4096 and "env/episode_return" in metrics[-1]
    assert (run / "model.pt").exists()
