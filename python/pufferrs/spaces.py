"""Layouts: where every leaf of a gymnasium space lives in a flat row.

A :class:`Layout` is built once per space. Rust computes the offsets and does
the copying; this module only describes the gymnasium space to it and dresses
the result for Python (leaf table, emulated observation space, pickling).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium.spaces as gs
import numpy as np

from pufferrs import _native
from pufferrs.errors import UnsupportedSpaceError

__all__ = ["Layout", "Leaf", "describe"]


class Leaf(NamedTuple):
    """One leaf of a layout: where it lives in the row and what it holds."""

    path: tuple[str | int, ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    space: gs.Space


def format_path(root: str, path: tuple[str | int, ...]) -> str:
    """``obs['inv'][1]``: a path the way a user would index it."""
    return root + "".join(f"[{key!r}]" for key in path)


def describe(space: gs.Space, root: str = "obs", path: tuple = ()) -> tuple:
    """The plain-data description of ``space`` that the Rust core reads.

    Raises :class:`UnsupportedSpaceError` naming the path of the first
    subspace without a fixed-size encoding.
    """

    def refuse(reason: str) -> UnsupportedSpaceError:
        return UnsupportedSpaceError(f"{format_path(root, path)}: {reason}")

    if isinstance(space, gs.Dict):
        items = []
        for key, sub in space.spaces.items():
            if not isinstance(key, str):
                raise refuse(f"Dict keys must be str, got {key!r}")
            items.append((key, describe(sub, root, (*path, key))))
        return ("dict", items)
    if isinstance(space, gs.Tuple):
        return ("tuple", [describe(sub, root, (*path, i)) for i, sub in enumerate(space.spaces)])

    dtype = np.dtype(space.dtype) if space.dtype is not None else None
    if isinstance(space, (gs.Box, gs.Discrete, gs.MultiDiscrete, gs.MultiBinary)):
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
            raise refuse(f"{type(space).__name__} of dtype {dtype} is not a numeric dtype pufferrs stores")
    if isinstance(space, gs.Box):
        return ("box", dtype.name, space.shape, space.low.ravel().tolist(), space.high.ravel().tolist())
    if isinstance(space, gs.Discrete):
        return ("discrete", dtype.name, int(space.n), int(space.start))
    if isinstance(space, gs.MultiDiscrete):
        return ("multidiscrete", dtype.name, space.shape, space.nvec.ravel().tolist(), space.start.ravel().tolist())
    if isinstance(space, gs.MultiBinary):
        return ("multibinary", dtype.name, space.shape)
    name = type(space).__name__
    if isinstance(space, (gs.Sequence, gs.Graph)):
        raise refuse(f"{name} has no fixed size, so it has no flat row")
    raise refuse(f"{name} spaces are not supported (supported: Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)")


class Layout(_native.Layout):
    """The flat-row layout of a gymnasium space.

    Leaves are stored in their own dtype at offsets aligned to their item
    size, with C-struct padding (numpy's ``align=True``), so a ``(B, row)``
    batch can be viewed leaf by leaf without copying. ``name`` is what error
    messages call the value (``obs``, ``action``).

    >>> import gymnasium.spaces as gs
    >>> layout = Layout(gs.Dict(a=gs.Discrete(3), b=gs.Box(0, 1, (2,))))
    >>> row = layout.flatten({"a": 2, "b": np.ones(2, np.float32)})
    >>> layout.unflatten(row)["a"]
    array(2)
    """

    space: gs.Space
    #: Every leaf, in row order.
    leaves: tuple[Leaf, ...]
    #: The space of the rows: a Box of ``row_shape``, ``row_bytes / itemsize``
    #: items of ``flat_dtype``. A plain Box space stays itself. When every
    #: leaf shares one dtype, the bounds are the leaves' own.
    observation_space: gs.Box

    def __new__(cls, space: gs.Space, name: str = "obs") -> Layout:
        row_shape = space.shape if isinstance(space, gs.Box) else None
        self = super().__new__(cls, describe(space, name), name, row_shape)
        # Plain attributes, set once: cheap to read in a policy's forward and
        # transparent to torch.compile.
        self.space = space
        self.leaves = tuple(
            Leaf(path, dtype, shape, offset, nbytes, _subspace(space, path))
            for path, dtype, shape, offset, nbytes in self.leaf_tuples()
        )
        self.observation_space = space if isinstance(space, gs.Box) else self._rows_space()
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.space, self.name))

    def _rows_space(self) -> gs.Box:
        dtype, shape = self.flat_dtype, self.row_shape
        if self.leaves and all(leaf.dtype == dtype for leaf in self.leaves):
            low, high = zip(*(_bounds(leaf) for leaf in self.leaves))
            return gs.Box(np.concatenate(low).astype(dtype), np.concatenate(high).astype(dtype), shape, dtype)
        return gs.Box(0, 255, shape, np.uint8)

    def __repr__(self) -> str:
        header = ("path", "dtype", "shape", "offset", "nbytes")
        rows = [
            (format_path(self.name, leaf.path), str(leaf.dtype), str(leaf.shape), str(leaf.offset), str(leaf.nbytes))
            for leaf in self.leaves
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        align = ["<", "<", "<", ">", ">"]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

        title = f"Layout(row_bytes={self.row_bytes}, flat_dtype={self.flat_dtype}, leaves={len(rows)})"
        return "\n".join([title, line(header), *map(line, rows)])


def _subspace(space: gs.Space, path: tuple[str | int, ...]) -> gs.Space:
    for key in path:
        space = space[key]
    return space


def _bounds(leaf: Leaf) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (low, high) of a leaf, flattened in C order."""
    space = leaf.space
    if isinstance(space, gs.Box):
        return space.low.ravel(), space.high.ravel()
    if isinstance(space, gs.Discrete):
        return np.array([space.start]), np.array([space.start + space.n - 1])
    if isinstance(space, gs.MultiDiscrete):
        return space.start.ravel(), (space.start + space.nvec - 1).ravel()
    size = int(np.prod(leaf.shape))
    return np.zeros(size), np.ones(size)
