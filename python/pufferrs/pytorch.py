"""PyTorch helpers for policies: the torch side of the flat-row contract.

``unflatten`` turns a batch of flat rows into the nested structure of the
space, as views of the same memory, on any device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium.spaces as gs
import torch

from pufferrs.errors import RowError
from pufferrs.spaces import Layout

__all__ = ["unflatten"]


class _Plan:
    """Everything ``unflatten`` needs, computed once per layout.

    Leaves are grouped by dtype, so each call reinterprets the rows once per
    dtype and then makes one ``as_strided`` view per leaf: the least host
    work torch allows for a view. The view arguments depend on the rows'
    geometry (dtype, shape, strides, offset), which repeats from one call to
    the next, so they are cached per geometry.
    """

    CACHE_SIZE = 64

    def __init__(self, layout: Layout):
        self.row_bytes = layout.row_bytes
        # A plain Box's rows may keep its shape; those axes fold into one.
        self.row_shape = layout.row_shape if len(layout.row_shape) != 1 else None
        groups: dict[torch.dtype, list[tuple[int, tuple, tuple, int]]] = {}
        for index, leaf in enumerate(layout.leaves):
            dtype = _TORCH_DTYPES[leaf.dtype.name]
            offset = leaf.offset // leaf.dtype.itemsize
            groups.setdefault(dtype, []).append((index, leaf.shape, _contiguous_strides(leaf.shape), offset))
        self.groups = tuple((dtype, tuple(leaves)) for dtype, leaves in groups.items())
        self.cache: dict[tuple, tuple] = {}
        # Views are made in group order; `build` puts them back in the space's
        # nesting. It is generated code (like namedtuple's) because a nested
        # literal is several times faster than walking the structure per call.
        order = [index for _, leaves in self.groups for index, *_ in leaves]
        position = {leaf: i for i, leaf in enumerate(order)}
        counter = iter(range(len(layout.leaves)))
        self.build = eval(f"lambda v: {_literal(layout.space, counter, position)}")

    def geometry(self, x: torch.Tensor) -> tuple:
        """Per dtype group: the dtype to view ``x`` as (None: as it is) and
        the ``as_strided`` arguments of each of its leaves."""
        if self.row_shape is not None and tuple(x.shape)[x.dim() - len(self.row_shape) :] == self.row_shape:
            try:
                x = x.view(*x.shape[: x.dim() - len(self.row_shape)], -1)
            except RuntimeError:
                raise RowError("the row axes of rows must be C-contiguous") from None
        if x.dim() == 0 or x.shape[-1] * x.element_size() != self.row_bytes:
            raise RowError(f"expected rows of {self.row_bytes} bytes, got shape {tuple(x.shape)} of {x.dtype}")
        lead = tuple(x.shape[:-1])
        groups = []
        for dtype, leaves in self.groups:
            base = x if x.dtype == dtype else x.view(dtype)
            lead_strides, base_offset = base.stride()[:-1], base.storage_offset()
            args = tuple((lead + shape, lead_strides + strides, base_offset + offset) for _, shape, strides, offset in leaves)
            groups.append((None if base is x else dtype, args))
        return tuple(groups)


_TORCH_DTYPES = {
    "bool": torch.bool,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _literal(space: gs.Space, counter: Iterator[int], position: dict[int, int]) -> str:
    """Python source of the space's nesting, each leaf read from ``v``."""
    if isinstance(space, gs.Dict):
        items = ", ".join(f"{key!r}: {_literal(sub, counter, position)}" for key, sub in space.spaces.items())
        return "{" + items + "}"
    if isinstance(space, gs.Tuple):
        return "(" + "".join(f"{_literal(sub, counter, position)}, " for sub in space.spaces) + ")"
    return f"v[{position[next(counter)]}]"


def _plan(layout: Layout) -> _Plan:
    plan = layout.__dict__.get("_torch_plan")
    if plan is None:
        plan = layout.__dict__["_torch_plan"] = _Plan(layout)
    return plan


def unflatten(x: torch.Tensor, layout: Layout) -> Any:
    """Views flat rows ``x`` as the nested structure of ``layout``'s space.

    ``x`` has shape ``(..., row)`` (``(row,)``, ``(B, row)``, ``(B, T, row)``)
    in ``uint8`` or the layout's ``flat_dtype``, on any device, with a
    contiguous last axis. Each leaf comes back as a tensor of its own dtype
    and shape with the leading axes kept. Nothing is copied and no kernel is
    launched: every leaf is an ``as_strided`` view of ``x``'s storage. It
    traces under ``torch.compile`` without graph breaks.
    """
    plan = _plan(layout)
    if torch.compiler.is_compiling():
        geometry = plan.geometry(x)
    else:
        key = (x.dtype, x.shape, x.stride(), x.storage_offset())
        geometry = plan.cache.get(key)
        if geometry is None:
            if len(plan.cache) >= plan.CACHE_SIZE:
                plan.cache.clear()
            geometry = plan.cache[key] = plan.geometry(x)
    views = []
    for dtype, args in geometry:
        base = x if dtype is None else x.view(dtype)
        for size, stride, offset in args:
            views.append(base.as_strided(size, stride, offset))
    return plan.build(views)
