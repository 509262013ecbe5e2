"""Runs the installed pufferrs wheel the way a user does: a nested Layout
round trip, flatten_batch, torch unflatten, a two-worker Multiprocessing
vector env for a few hundred steps, and ``pufferrs train`` for one update on
the built-in default. Off Linux, where Multiprocessing is refused by name,
the vector env runs on Serial.

Run it from outside the checkout, so that nothing but the installed wheel
can be imported: ``python scripts/smoke_wheel.py``. ``.ci/run`` runs it with
no Rust toolchain on PATH.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import torch

import pufferrs
import pufferrs.vector
from pufferrs import _native
from pufferrs.config import Config
from pufferrs.demo import reference_space
from pufferrs.factories import EnvCreator
from pufferrs.pytorch import unflatten

STEPS = 300


def leaves(tree: object) -> list[np.ndarray]:
    """The leaves of a nested dict/tuple in order, as numpy arrays."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in leaves(value)]
    if isinstance(tree, tuple):
        return [leaf for value in tree for leaf in leaves(value)]
    return [np.asarray(tree.numpy() if isinstance(tree, torch.Tensor) else tree)]


def check_installed() -> None:
    site = Path(sysconfig.get_path("platlib")).resolve()
    for module in (pufferrs, _native):
        where = Path(module.__file__).resolve()
        assert where.is_relative_to(site), f"{module.__name__} comes from {where}, not the installed wheel in {site}"
    print(f"pufferrs {pufferrs.__version__} from {Path(_native.__file__).resolve().relative_to(site)}")


def check_rows() -> None:
    space = reference_space()
    space.seed(0)
    layout = pufferrs.Layout(space)
    obs = space.sample()
    back = layout.unflatten(layout.flatten(obs))
    assert all(np.array_equal(a, b) for a, b in zip(leaves(obs), leaves(back), strict=True)), "round trip"

    batch = [space.sample() for _ in range(8)]
    rows = layout.flatten_batch(batch)
    assert rows.shape == (8, layout.row_bytes)
    views = unflatten(torch.from_numpy(rows), layout)
    for i, sample in enumerate(batch):
        got = [leaf[i] for leaf in leaves(views)]
        assert all(np.array_equal(a, b) for a, b in zip(leaves(sample), got, strict=True)), f"torch row {i}"
    print(f"rows: {layout.row_bytes} bytes a row; round trip, flatten_batch and torch unflatten agree")


def row_of(tree: object, i: int) -> object:
    """Env ``i``'s observation in a batched nested structure."""
    if isinstance(tree, dict):
        return {key: row_of(value, i) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(row_of(value, i) for value in tree)
    return tree[i]


def check_vector_env() -> None:
    creator = EnvCreator("pufferrs/Nested-v0")
    backend = "multiprocessing"
    if platform.system() != "Linux":
        try:
            pufferrs.vector.make(creator, num_envs=4, backend=backend, num_workers=2)
        except pufferrs.SharedMemoryError as exc:
            assert platform.system() in str(exc), exc
            print(f"multiprocessing refused: {exc}")
            backend = "serial"
        else:
            raise AssertionError(f"Multiprocessing ran on {platform.system()}")
    with pufferrs.vector.make(creator, num_envs=4, backend=backend, num_workers=2, seed=0) as envs:
        envs.reset()
        episodes = 0
        for _ in range(STEPS):
            obs, _, _, _, infos = envs.step(envs.action_space.sample())
            episodes += sum("episode_return" in info for info in infos)
        nested = envs.layout.unflatten(obs)
        for i in range(envs.num_envs):
            assert envs.layout.space.contains(row_of(nested, i)), f"env {i}'s observation is outside its space"
    assert episodes > 0, "no episode ended"
    print(f"{backend}: 4 envs, {STEPS} steps, {episodes} episodes")


def check_train() -> None:
    batch_size = Config.for_env(Config().env).batch_size
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = ["pufferrs", "train", "--total-steps", str(batch_size), "--run-dir", str(run_dir), "--plain"]
        subprocess.run(command, check=True)
        updates = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(updates) == 1, f"expected one update, got {len(updates)}"
        assert json.loads(updates[0])["global_step"] == batch_size
        assert (run_dir / "model.pt").is_file()
    version = subprocess.run(["pufferrs", "--version"], check=True, capture_output=True, text=True).stdout
    assert version == f"pufferrs {pufferrs.__version__}\n", version
    print(f"pufferrs train: one update of {batch_size} steps; {version.strip()}")


if __name__ == "__main__":
    check_installed()
    check_rows()
    check_vector_env()
    check_train()
    print("smoke test of the installed wheel: passed")
