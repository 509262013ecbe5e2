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

__all__ = ["Layout", "Leaf", "at_path", "describe", "format_path", "is_string_space"]


class Leaf(NamedTuple):
    """One leaf of a layout: where it lives in the row and what it holds."""

    path: tuple[str | int, ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    space: gs.Space


#: ``obs['inv'][1]``: a path the way a user would index it (Rust formats
#: every path pufferrs shows, in errors and here alike).
format_path = _native.format_path

_LEAVES = (gs.Box, gs.Discrete, gs.MultiDiscrete, gs.MultiBinary)


def is_string_space(space: Any) -> bool:
    """Whether ``space`` holds strings: gymnasium's ``Text``, or a space of
    dtype ``str`` such as MiniGrid's ``MissionSpace``."""
    dtype = getattr(space, "dtype", None)
    return isinstance(space, gs.Text) or (dtype is not None and np.dtype(dtype).kind == "U")


def describe(space: gs.Space) -> dict[str, Any]:
    """The plain-data description of ``space`` that the Rust core reads:
    nested dicts with named fields. Nothing is refused here; the core
    refuses what has no flat row, naming its path.

    Strings: a ``Text`` space is described with its charset and lengths; a
    string space that is not ``Text`` (MiniGrid's mission spaces) lists no
    charset, and the core reads it by its own rule (printable ASCII, at
    most 128 characters; :class:`pufferrs.wrappers.StringObservations`
    sets another length)."""
    return _describe(space, 0)


def _describe(space: gs.Space, depth: int) -> dict[str, Any]:
    if depth > _native.MAX_DEPTH:
        # The core refuses anything this deep (Dicts and Tuples nest at most
        # MAX_DEPTH deep) without reading it, so describe no further: the
        # recursion stays bounded however deep the space goes.
        return {"kind": type(space).__name__}
    if not isinstance(space, gs.Space):
        kind = f"{type(space).__module__}.{type(space).__qualname__}"
        return {"kind": f"{kind} (not a gymnasium space; convert it to gymnasium.spaces in a wrapper)", "dtype": None}
    if isinstance(space, gs.Text):
        charset = "".join(space.character_list)
        return {"kind": "Text", "charset": charset, "min_length": space.min_length, "max_length": space.max_length}
    if is_string_space(space):
        return {"kind": "String", "max_length": getattr(space, "max_length", None)}
    if isinstance(space, gs.Dict):
        return {"kind": "Dict", "items": [(key, _describe(sub, depth + 1)) for key, sub in space.spaces.items()]}
    if isinstance(space, gs.Tuple):
        return {"kind": "Tuple", "items": [_describe(sub, depth + 1) for sub in space.spaces]}
    kind = next((leaf.__name__ for leaf in _LEAVES if isinstance(space, leaf)), type(space).__name__)
    # str() of a dtype is its name when native ("float32"), else its
    # byte-order code (">f4"), which the core refuses.
    spec: dict[str, Any] = {"kind": kind, "dtype": None if space.dtype is None else str(np.dtype(space.dtype))}
    if isinstance(space, gs.Box):
        spec.update(shape=space.shape, low=space.low.ravel().tolist(), high=space.high.ravel().tolist())
    elif isinstance(space, gs.Discrete):
        spec.update(n=int(space.n), start=int(space.start))
    elif isinstance(space, gs.MultiDiscrete):
        spec.update(shape=space.shape, nvec=space.nvec.ravel().tolist(), start=space.start.ravel().tolist())
    elif isinstance(space, gs.MultiBinary):
        spec.update(shape=space.shape)
    return spec


class Layout(_native.Layout):
    """The flat-row layout of a gymnasium space.

    Leaves are stored in their own dtype at offsets aligned to their item
    size, with C-struct padding (numpy's ``align=True``), so a ``(B, row)``
    batch can be viewed leaf by leaf without copying. ``name`` is what error
    messages call the value (``obs``, ``action``). Dicts and Tuples nest at
    most ``pufferrs._native.MAX_DEPTH`` (64) deep; deeper spaces raise
    :class:`~pufferrs.UnsupportedSpaceError`.

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
        try:
            self = super().__new__(cls, describe(space), name, row_shape)
        except UnsupportedSpaceError as exc:
            if name == "action":
                raise
            raise UnsupportedSpaceError(
                f"{exc}. To train without it, leave it out: pufferrs.wrappers.DropObservations(env, [key, ...]), "
                "or pufferrs train --drop-observations KEY"
            ) from None
        # Plain attributes, set once: cheap to read in a policy's forward and
        # transparent to torch.compile.
        self.space = space
        self.leaves = tuple(
            Leaf(path, dtype, shape, offset, nbytes, at_path(space, path))
            for path, dtype, shape, offset, nbytes in self.leaf_tuples()
        )
        self.observation_space = space if isinstance(space, gs.Box) else self._rows_space()
        return self

    def decode_text(self, path: tuple[str | int, ...], codes: Any) -> str:
        """The string that ``codes`` (the values of the string leaf at
        ``path``, as unflatten returns them) encode."""
        index = next((i for i, leaf in enumerate(self.leaves) if leaf.path == tuple(path)), None)
        if index is None:
            raise KeyError(f"no leaf at {format_path(self.name, tuple(path))}")
        return super().decode_text(index, np.asarray(codes).astype(np.int64).ravel().tolist())

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


def at_path(tree: Any, path: tuple[str | int, ...]) -> Any:
    """What ``path`` (a leaf's path: Dict keys and Tuple indices) leads to
    in ``tree``: a nested space, observation or batch of them."""
    for key in path:
        tree = tree[key]
    return tree


def _bounds(leaf: Leaf) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (low, high) of a leaf, flattened in C order."""
    space = leaf.space
    if isinstance(space, gs.Box):
        return space.low.ravel(), space.high.ravel()
    if isinstance(space, gs.Discrete | gs.MultiDiscrete):
        # In Python ints, clipped to the dtype: gymnasium allows ranges that
        # pass it (Discrete(2**63 - 1, start=1)), where numpy would wrap.
        start = np.ravel(space.start).tolist()
        n = np.ravel(space.n if isinstance(space, gs.Discrete) else space.nvec).tolist()
        top = int(np.iinfo(leaf.dtype).max)
        return np.array(start, leaf.dtype), np.array([min(s + k - 1, top) for s, k in zip(start, n)], leaf.dtype)
    size = int(np.prod(leaf.shape))
    if is_string_space(space):
        return np.zeros(size), np.full(size, np.iinfo(leaf.dtype).max)
    return np.zeros(size), np.ones(size)
