"""The names PufferLib's policy guide imports exist in pufferrs and behave:
``pufferrs.pytorch.unflatten_observations`` (with its per-space layout
cache), ``pufferrs.pytorch.LSTMWrapper`` and ``layer_init``, and the
built-in models under ``pufferrs.models``."""

from __future__ import annotations

import copy
import gc
import subprocess
import sys
from types import SimpleNamespace

import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given

import pufferrs.pytorch
from conftest import assert_tree_equal, spaces_with_samples
from pufferrs import Layout, RowError
from pufferrs.pytorch import _LAYOUTS, unflatten, unflatten_observations


def _image_vector_space() -> gs.Dict:
    return gs.Dict(image=gs.Box(0, 255, (3, 8, 8), np.uint8), vector=gs.Box(-1, 1, (5,), np.float32))


def _rows(space: gs.Space, count: int = 4) -> tuple[torch.Tensor, list]:
    space.seed(0)
    samples = [space.sample() for _ in range(count)]
    return torch.from_numpy(Layout(space).flatten_batch(samples)), samples


def test_guide_names_are_importable() -> None:
    from pufferrs.models import Convolutional, Default, LSTMWrapper, ProcgenResnet
    from pufferrs.pytorch import LSTMWrapper as TorchLSTMWrapper
    from pufferrs.pytorch import layer_init

    assert TorchLSTMWrapper is LSTMWrapper
    assert all(isinstance(cls, type) for cls in (Convolutional, Default, ProcgenResnet))
    assert callable(layer_init)
    assert {"LSTMWrapper", "layer_init", "unflatten_observations"} <= set(pufferrs.pytorch.__all__)
    assert "LSTMWrapper" in dir(pufferrs.pytorch)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        pufferrs.pytorch.NoSuchName  # noqa: B018


@pytest.mark.parametrize(
    "statement",
    [
        "from pufferrs.pytorch import *; import pufferrs.models as m; assert LSTMWrapper is m.LSTMWrapper",
        "import pufferrs.models as m; from pufferrs.pytorch import LSTMWrapper; assert LSTMWrapper is m.LSTMWrapper",
    ],
)
def test_lstm_wrapper_reexport_has_no_import_cycle(statement: str) -> None:
    # A fresh interpreter per import order: within this process both modules
    # are already imported and a cycle would not show.
    result = subprocess.run([sys.executable, "-W", "error", "-c", statement], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@given(spaces_with_samples(count=3))
def test_unflatten_observations_matches_unflatten(case: tuple[gs.Space, list]) -> None:
    space, samples = case
    layout = Layout(space)
    rows = torch.from_numpy(layout.flatten_batch(samples))
    assert_tree_equal(unflatten_observations(rows, space), unflatten(rows, layout))
    assert_tree_equal(unflatten_observations(rows, layout), unflatten(rows, layout))


def test_views_share_memory_with_the_rows() -> None:
    space = _image_vector_space()
    rows, samples = _rows(space)
    observations = unflatten_observations(rows, space)
    np.testing.assert_array_equal(observations["image"][2].numpy(), samples[2]["image"])
    observations["vector"][0, 0] = 0.25
    assert unflatten_observations(rows, space)["vector"][0, 0].item() == 0.25


def test_layout_is_built_once_per_space_object() -> None:
    space = _image_vector_space()
    rows, _ = _rows(space)
    unflatten_observations(rows, space)
    cached = _LAYOUTS.get(space)
    unflatten_observations(rows, space)
    assert _LAYOUTS.get(space) is cached
    # An equal but distinct space (a copy, or a rebuilt one) gets its own.
    twin = copy.deepcopy(space)
    assert _LAYOUTS.get(twin) is not cached
    assert _LAYOUTS.get(twin).row_bytes == cached.row_bytes


def test_cache_entry_goes_with_its_space() -> None:
    gc.collect()  # spaces of earlier tests that are already garbage go first
    before = len(_LAYOUTS)
    space = _image_vector_space()
    _LAYOUTS.get(space)
    assert len(_LAYOUTS) == before + 1
    del space
    gc.collect()
    assert len(_LAYOUTS) == before


def test_a_reused_id_is_not_mistaken_for_the_old_space() -> None:
    # Spaces created and dropped in a loop often land at the same address.
    # Each must still be unflattened with its own layout.
    for size in range(1, 30):
        space = gs.Dict(a=gs.Box(0, 1, (size,), np.float32))
        rows = torch.zeros(2, size, dtype=torch.float32)
        assert unflatten_observations(rows, space)["a"].shape == (2, size)
        del space


def test_space_without_weakref_support_is_held_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every gymnasium space supports weak references; a user's space class
    # with __slots__ might not. Such a space is kept alive by its entry, so
    # its id cannot be reused while the entry exists.
    def no_weakref(obj: object, callback: object = None) -> None:
        raise TypeError(f"cannot create weak reference to {type(obj).__name__!r} object")

    monkeypatch.setattr(pufferrs.pytorch, "weakref", SimpleNamespace(ref=no_weakref))
    cache = pufferrs.pytorch._LayoutCache()
    space = gs.Box(0, 1, (3,), np.float32)
    layout = cache.get(space)
    assert cache.get(space) is layout and len(cache) == 1
    del space
    gc.collect()
    assert len(cache) == 1  # held, so never confused with a later object


def test_wrong_rows_raise_row_error() -> None:
    space = _image_vector_space()
    with pytest.raises(RowError, match="expected rows of"):
        unflatten_observations(torch.zeros(2, 7, dtype=torch.uint8), space)


def test_guide_style_policy_with_unflatten_observations_learns_gradients() -> None:
    """The guide's pattern: the policy keeps the original space and
    unflattens flat rows inside ``forward``."""

    class PolicyWithUnflatten(torch.nn.Module):
        def __init__(self, observation_space: gs.Dict):
            super().__init__()
            self.observation_space = observation_space
            self.encoders = torch.nn.ModuleDict(
                {"image": torch.nn.Linear(3 * 8 * 8, 4), "vector": torch.nn.Linear(5, 4)}
            )

        def forward(self, flat_observations: torch.Tensor) -> torch.Tensor:
            observations = unflatten_observations(flat_observations, self.observation_space)
            image = self.encoders["image"](observations["image"].flatten(1).float() / 255)
            return image + self.encoders["vector"](observations["vector"])

    space = _image_vector_space()
    policy = PolicyWithUnflatten(space)
    rows, _ = _rows(space, count=6)
    policy(rows).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_unflatten_observations_under_torch_compile() -> None:
    # The eager backend checks tracing without compiling kernels.
    space = _image_vector_space()
    rows, _ = _rows(space)

    def features(x: torch.Tensor) -> torch.Tensor:
        observations = unflatten_observations(x, space)
        return observations["image"].flatten(1).float().sum(1) + observations["vector"].sum(1)

    expected = features(rows)  # eager: builds and caches the layout
    torch._dynamo.reset()
    # A space seen before: the lookup traces, no graph break (fullgraph
    # fails on any).
    compiled = torch.compile(features, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(rows), expected)

    # A space never seen: its layout is built eagerly, once.
    fresh = copy.deepcopy(space)

    def fresh_features(x: torch.Tensor) -> torch.Tensor:
        observations = unflatten_observations(x, fresh)
        return observations["image"].flatten(1).float().sum(1) + observations["vector"].sum(1)

    compiled = torch.compile(fresh_features, backend="eager")
    torch.testing.assert_close(compiled(rows), expected)
    torch.testing.assert_close(compiled(rows), expected)
    assert _LAYOUTS.get(fresh) is _LAYOUTS.get(fresh)


@pytest.mark.gpu
def test_unflatten_observations_on_cuda_never_syncs() -> None:
    space = _image_vector_space()
    rows, samples = _rows(space)
    rows = rows.to("cuda")
    unflatten_observations(rows, space)  # builds and caches the layout and view plan
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        observations = unflatten_observations(rows, space)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert observations["image"].device.type == "cuda"
    np.testing.assert_array_equal(observations["image"][1].cpu().numpy(), samples[1]["image"])
