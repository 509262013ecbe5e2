"""PyTorch helpers for policies: the torch side of the flat-row contract.

``unflatten`` turns a batch of flat rows into the nested structure of the
space, as views of the same memory, on any device. ``layer_init`` and
``sample_logits`` (with ``log_prob``, ``entropy`` and ``mask_logits``, from
:mod:`pufferrs.distributions`) are the pieces every PPO policy and trainer
needs around it. :class:`~pufferrs.lstm.LSTMWrapper`
and ``unflatten_observations`` are here under PufferLib's names.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.distributions import Logits, entropy, log_prob, mask_logits, sample_logits
from pufferrs.errors import RowError
from pufferrs.lstm import LSTMWrapper
from pufferrs.spaces import Layout

__all__ = [
    "Logits",
    "LSTMWrapper",
    "entropy",
    "layer_init",
    "log_prob",
    "mask_logits",
    "sample_logits",
    "unflatten",
    "unflatten_observations",
]


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
            dtype = getattr(torch, leaf.dtype.name)  # numpy and torch name the 12 dtypes alike
            offset = leaf.offset // leaf.dtype.itemsize
            groups.setdefault(dtype, []).append((index, leaf.shape, _contiguous_strides(leaf.shape), offset))
        self.groups = tuple((dtype, tuple(leaves)) for dtype, leaves in groups.items())
        # Byte ranges of the leaves, in the same order, for traced calls.
        self.byte_ranges = tuple(
            (dtype, shape, layout.leaves[index].offset, layout.leaves[index].nbytes)
            for dtype, leaves in self.groups
            for index, shape, *_ in leaves
        )
        self.cache: dict[tuple, tuple] = {}
        # Views are made in group order; `structure` is the space's nesting
        # with each leaf replaced by its view's position in that order.
        order = [index for _, leaves in self.groups for index, *_ in leaves]
        position = {leaf: i for i, leaf in enumerate(order)}
        self.structure = _structure(layout.space, iter(range(len(layout.leaves))), position)
        # Eager calls rebuild the nesting with generated code (as namedtuple
        # does): a nested literal is several times faster than walking
        # `structure`. Traced calls walk it, since dynamo cannot trace eval.
        self.build = eval(f"lambda v: {_literal(self.structure)}") if not torch.compiler.is_compiling() else None

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(..., row)``, checked: the one place both paths check
        rows, since every leaf's strides assume a row's bytes are packed."""
        if self.row_shape is not None and tuple(x.shape)[x.dim() - len(self.row_shape) :] == self.row_shape:
            try:
                x = x.view(*x.shape[: x.dim() - len(self.row_shape)], -1)
            except RuntimeError:
                raise RowError("the row axes of rows must be C-contiguous") from None
        if x.dim() == 0 or x.shape[-1] * x.element_size() != self.row_bytes:
            raise RowError(f"expected rows of {self.row_bytes} bytes, got shape {tuple(x.shape)} of {x.dtype}")
        if x.shape[-1] > 1 and x.stride(-1) != 1:
            raise RowError("the last axis of rows must be contiguous")
        return x

    @staticmethod
    def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x.view(dtype)``, which torch refuses unless the rows' storage
        offset and strides are whole numbers of ``dtype``'s items."""
        try:
            return x.view(dtype)
        except RuntimeError as exc:
            raise RowError(f"rows of {x.dtype} cannot be viewed as the layout's {dtype} leaves: {exc}") from None

    def traced_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The views by slicing and viewing, which dynamo traces (it cannot
        trace ``storage_offset``) and the compiled graph makes free."""
        x = self.rows(x)
        lead = tuple(x.shape[:-1])
        if x.numel() == 0:
            # Nothing to view, and torch's empty tensors may carry strides
            # (zero, odd) that its dtype views refuse: empty leaves instead.
            return [x.new_empty(lead + shape, dtype=dtype) for dtype, shape, _, _ in self.byte_ranges]
        row = self.as_dtype(x, torch.uint8)
        return [self.as_dtype(row[..., a : a + n], dtype).view(lead + shape) for dtype, shape, a, n in self.byte_ranges]

    def geometry(self, x: torch.Tensor) -> tuple:
        """Per dtype group: the dtype to view ``x`` as (None: as it is) and
        the ``as_strided`` arguments of each of its leaves."""
        x = self.rows(x)
        lead = tuple(x.shape[:-1])
        groups = []
        for dtype, leaves in self.groups:
            base = x if x.dtype == dtype else self.as_dtype(x, dtype)
            lead_strides, base_offset = base.stride()[:-1], base.storage_offset()
            args = tuple(
                (lead + shape, lead_strides + strides, base_offset + offset) for _, shape, strides, offset in leaves
            )
            groups.append((None if base is x else dtype, args))
        return tuple(groups)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _structure(space: gs.Space, counter: Iterator[int], position: dict[int, int]) -> Any:
    if isinstance(space, gs.Dict):
        return {key: _structure(sub, counter, position) for key, sub in space.spaces.items()}
    if isinstance(space, gs.Tuple):
        return tuple(_structure(sub, counter, position) for sub in space.spaces)
    return position[next(counter)]


def _literal(structure: Any) -> str:
    """Python source that rebuilds `structure` from the list of views ``v``."""
    if isinstance(structure, dict):
        return "{" + ", ".join(f"{key!r}: {_literal(sub)}" for key, sub in structure.items()) + "}"
    if isinstance(structure, tuple):
        return "(" + "".join(f"{_literal(sub)}, " for sub in structure) + ")"
    return f"v[{structure}]"


def _fill(structure: Any, views: list[torch.Tensor]) -> Any:
    if isinstance(structure, dict):
        return {key: _fill(sub, views) for key, sub in structure.items()}
    if isinstance(structure, tuple):
        return tuple(_fill(sub, views) for sub in structure)
    return views[structure]


#: The cached geometry of rows without a single element.
_EMPTY: Any = object()


def _plan(layout: Layout) -> _Plan:
    plan = getattr(layout, "_torch_plan", None)
    if plan is None:
        plan = _Plan(layout)
        if not torch.compiler.is_compiling():  # no side effects while tracing
            layout._torch_plan = plan
    return plan


def unflatten(x: torch.Tensor, layout: Layout) -> Any:
    """Views flat rows ``x`` as the nested structure of ``layout``'s space.

    ``x`` has shape ``(..., row)`` (``(row,)``, ``(B, row)``, ``(B, T, row)``)
    in ``uint8`` or the layout's ``flat_dtype``, on any device, with a
    contiguous last axis. Each leaf comes back as a tensor of its own dtype
    and shape with the leading axes kept. Nothing is copied and no kernel is
    launched: every leaf is an ``as_strided`` view of ``x``'s storage. It
    traces under ``torch.compile`` without graph breaks.

    Rows that cannot be viewed so (not a tensor, the wrong size, a strided
    last axis, a dtype view torch refuses at their storage offset) raise
    :class:`~pufferrs.RowError`; numpy arrays go to ``layout.unflatten``.
    """
    if not isinstance(x, torch.Tensor):
        raise RowError(
            f"expected a torch.Tensor of rows, got {type(x).__name__} (use layout.unflatten for numpy arrays)"
        )
    if x.layout is not torch.strided:  # sparse tensors have no bytes to view
        raise RowError(f"expected a strided tensor of rows, got a {x.layout} tensor")
    plan = _plan(layout)
    if torch.compiler.is_compiling():
        return _fill(plan.structure, plan.traced_views(x))
    key = (x.dtype, x.shape, x.stride(), x.storage_offset())
    geometry = plan.cache.get(key)
    if geometry is None:
        if len(plan.cache) >= plan.CACHE_SIZE:
            plan.cache.clear()
        geometry = plan.cache[key] = plan.geometry(x) if x.numel() else _EMPTY
    if geometry is _EMPTY:  # no bytes to view: empty leaves (see traced_views)
        return plan.build(plan.traced_views(x))
    views = []
    for dtype, args in geometry:
        base = x if dtype is None else x.view(dtype)
        for size, stride, offset in args:
            views.append(base.as_strided(size, stride, offset))
    return plan.build(views)


# --------------------------------------------------------------------------
# Layer initialisation for policies.
# --------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights scaled by ``std`` and a constant bias, in place.

    The PPO default (CleanRL, PufferLib): ``sqrt(2)`` for hidden layers
    followed by ReLU/GELU, ``0.01`` for policy heads (near-uniform initial
    actions), ``1`` for value heads. Works for ``Linear`` and ``Conv*``
    layers (a conv weight is treated as ``(out_channels, in * kernel)``).
    Returns the layer so it can be written inline in ``nn.Sequential``.
    """
    nn.init.orthogonal_(layer.weight, std)
    if getattr(layer, "bias", None) is not None:
        nn.init.constant_(layer.bias, bias_const)
    return layer


# --------------------------------------------------------------------------
# PufferLib's names: unflatten_observations, and LSTMWrapper imported above.
# --------------------------------------------------------------------------


class _LayoutCache:
    """The :class:`Layout` of each gymnasium space object seen so far.

    Spaces are unhashable (gymnasium defines ``__eq__`` without
    ``__hash__``), so entries are keyed by ``id(space)``. An id is reused
    once its object is gone, so every entry also holds a weak reference to
    its space: a lookup only hits when that reference still points at the
    very object asked about, and the reference's callback drops the entry
    when the space is collected (each layout is built from a copy of its
    space, so nothing here keeps the space itself alive). A space that cannot be weakly referenced
    is held strongly instead, which keeps its id from being reused.
    Keying by identity (rather than, say, an attribute stored on the space)
    also means a ``copy.deepcopy`` of a space gets a layout of its own.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Callable[[], gs.Space | None], Layout]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, space: gs.Space) -> Layout:
        entry = self._entries.get(id(space))
        if entry is not None and entry[0]() is space:
            return entry[1]
        return self._add(space)

    # Building a layout (a deep copy, then Rust) cannot be traced: under
    # torch.compile a first call with a new space runs this eagerly, a
    # graph break before any tensor work. Lookups of known spaces trace.
    @torch.compiler.disable
    def _add(self, space: gs.Space) -> Layout:
        # A layout refers to its space; built from the caller's object it
        # would keep that object alive through this cache forever. A copy
        # leaves the caller's space free to be collected (which drops the
        # entry) and pins the structure the views follow.
        layout = Layout(copy.deepcopy(space))
        key = id(space)
        try:
            ref: Callable[[], gs.Space | None] = weakref.ref(space, lambda dead: self._drop(key, dead))
        except TypeError:
            ref = _StrongRef(space)
        self._entries[key] = (ref, layout)
        return layout

    def _drop(self, key: int, dead: weakref.ref) -> None:
        # The id may already belong to a newer space with an entry of its own.
        entry = self._entries.get(key)
        if entry is not None and entry[0] is dead:
            del self._entries[key]


class _StrongRef:
    """Callable like a weak reference, but keeps its object alive."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


_LAYOUTS = _LayoutCache()


def unflatten_observations(flat_observations: torch.Tensor, observation_space: gs.Space | Layout) -> Any:
    """PufferLib's name for :func:`unflatten`, taking the gymnasium space.

    ``observation_space`` is the env's own (structured) space, e.g. a vector
    env's ``layout.space``, not the flat Box the rows arrive as; a
    :class:`~pufferrs.Layout` is accepted too. The layout is built the first
    time a space object is seen and cached for as long as that object
    lives, so later calls cost what :func:`unflatten` costs plus one dict
    lookup. The cache follows the object, not its contents: build a new
    space rather than mutating one that has already been used here.

    Under ``torch.compile`` a call with a space already seen traces without
    graph breaks; the first call with a new space builds its layout eagerly
    (one graph break, before any tensor work). For ``fullgraph=True``, call
    it once before compiling, or pass a ``Layout``.

    Returns the nested dict/tuple of zero-copy views (see :func:`unflatten`).
    """
    if isinstance(observation_space, Layout):
        layout = observation_space
    else:
        layout = _LAYOUTS.get(observation_space)
    return unflatten(flat_observations, layout)
