"""pufferrs.pytorch.unflatten: the views a policy's forward reads."""

from __future__ import annotations

from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given

from conftest import assert_tree_equal, spaces_with_samples, stack
from pufferrs import Layout, RowError
from pufferrs.pytorch import _fill, _plan, unflatten


def leaves_of(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, dict):
        return [leaf for sub in tree.values() for leaf in leaves_of(sub)]
    if isinstance(tree, tuple):
        return [leaf for sub in tree for leaf in leaves_of(sub)]
    return [tree]


@given(spaces_with_samples(count=4))
def test_torch_views_equal_the_samples(case: tuple[gs.Space, list[Any]]) -> None:
    space, samples = case
    layout = Layout(space)
    rows = layout.flatten_batch(samples)
    x = torch.from_numpy(rows)
    assert_tree_equal(unflatten(x, layout), stack(samples))
    assert_tree_equal(unflatten(x[2], layout), samples[2])
    time_major = x.reshape(2, 2, *x.shape[1:])
    assert_tree_equal(unflatten(time_major, layout), stack([stack(samples[:2]), stack(samples[2:])]))
    if len(layout.row_shape) == 1:  # other row shapes are matched as they are
        as_bytes = torch.from_numpy(rows.view(np.uint8))
        assert_tree_equal(unflatten(as_bytes, layout), stack(samples))
    if x.numel():  # views of no bytes need not share a storage
        for leaf in leaves_of(unflatten(x, layout)):
            assert leaf.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    # The slicing path that torch.compile traces gives the same views.
    plan = _plan(layout)
    assert_tree_equal(_fill(plan.structure, plan.traced_views(x)), stack(samples))


def test_views_of_a_slice_of_a_bigger_buffer(reference_space: gs.Dict) -> None:
    """Rows taken from the middle of a buffer (an async batch) keep their
    storage offset."""
    layout = Layout(reference_space)
    samples = [reference_space.sample() for _ in range(6)]
    buffer = torch.from_numpy(layout.flatten_batch(samples))
    assert_tree_equal(unflatten(buffer[2:5], layout), stack(samples[2:5]))
    assert_tree_equal(unflatten(buffer[1::2], layout), stack(samples[1::2]))
    # Writes through a view land in the buffer.
    unflatten(buffer, layout)["inv"]["hp"][3] = 7
    assert layout.unflatten(buffer.numpy())["inv"]["hp"][3] == 7


def test_repeated_calls_reuse_the_geometry_cache(reference_space: gs.Dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view arguments are worked out once per geometry of the rows;
    later calls with that geometry only look them up."""
    layout = Layout(reference_space)
    samples = [reference_space.sample() for _ in range(8)]
    rows = torch.from_numpy(layout.flatten_batch(samples))
    plan = _plan(layout)
    built: list[tuple[int, ...]] = []
    build = plan.geometry
    monkeypatch.setattr(plan, "geometry", lambda x: built.append(tuple(x.shape)) or build(x))
    for n in (8, 4, 8, 4, 8):
        assert_tree_equal(unflatten(rows[:n], layout), stack(samples[:n]))
    assert built == [(8, rows.shape[1]), (4, rows.shape[1])]


def test_plain_box_rows_keep_their_shape() -> None:
    layout = Layout(gs.Box(0, 255, (3, 4, 4), np.uint8))
    images = torch.arange(2 * 48, dtype=torch.uint8).reshape(2, 3, 4, 4)
    assert torch.equal(unflatten(images, layout), images)
    assert torch.equal(unflatten(images.reshape(2, 48), layout), images)
    with pytest.raises(RowError, match="C-contiguous"):
        unflatten(images.transpose(2, 3), layout)


def test_rows_that_do_not_fit_are_refused() -> None:
    layout = Layout(gs.Dict(a=gs.Discrete(3), b=gs.Box(-1, 1, (2,), np.float32)))
    with pytest.raises(RowError, match="expected rows of 16 bytes, got shape \\(4, 15\\)"):
        unflatten(torch.zeros(4, 15, dtype=torch.uint8), layout)
    with pytest.raises(RowError):
        unflatten(torch.zeros((), dtype=torch.uint8), layout)
    # Every other byte of wider rows: each leaf's strides would read the wrong bytes.
    with pytest.raises(RowError, match="last axis of rows must be contiguous"):
        unflatten(torch.zeros(4, 32, dtype=torch.uint8)[:, ::2], layout)


def test_unflatten_compiles_without_graph_breaks(reference_space: gs.Dict) -> None:
    layout = Layout(reference_space)
    rows = torch.from_numpy(layout.flatten_batch([reference_space.sample() for _ in range(4)]))

    def forward(x: torch.Tensor) -> torch.Tensor:
        obs = unflatten(x, layout)
        return obs["image"].float().mean((1, 2, 3)) + obs["vector"].sum(1) + obs["inv"]["hp"] + obs["tuple"][1]

    torch._dynamo.reset()
    compiled = torch.compile(forward, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(rows), forward(rows))


@pytest.mark.gpu
def test_cuda_views_share_device_memory(reference_space: gs.Dict) -> None:
    layout = Layout(reference_space)
    samples = [reference_space.sample() for _ in range(16)]
    x = torch.from_numpy(layout.flatten_batch(samples)).cuda()
    views = unflatten(x, layout)
    for leaf in leaves_of(views):
        assert leaf.device == x.device
        assert leaf.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert_tree_equal(views, stack(samples))


def test_zero_size_leaves() -> None:
    """Empty rows from numpy come with zero strides, which torch's dtype
    views refuse; both paths must still give empty leaves."""
    for space in (gs.Box(0, 1, (0,), np.int16), gs.Dict(a=gs.Box(0, 1, (2, 0), np.float32), b=gs.Discrete(3))):
        layout = Layout(space)
        samples = [space.sample() for _ in range(3)]
        x = torch.from_numpy(layout.flatten_batch(samples))
        assert_tree_equal(unflatten(x, layout), stack(samples))
        plan = _plan(layout)
        assert_tree_equal(_fill(plan.structure, plan.traced_views(x)), stack(samples))
