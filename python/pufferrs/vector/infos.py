"""The infos of a batch: one dict per row, made when a row is read.

A vector env's ``recv`` hands out one info per row, most of them empty.
Building them all as a list costs a dict per row and, for each row whose
episode ended, a dict of its return, length and final observation: about
40 µs a batch of a thousand rows on this project's machines, which is half
of what gymnasium's numpy CartPole takes to step them. :class:`Infos` keeps
what it was given (the non-empty infos, and which rows ended with a copy of
their returns and lengths) and makes a row's dict the first time it is
read, so that a batch nobody reads costs nothing per row.

It is a :class:`collections.abc.Sequence`, not a ``list``: indexing (ints
and slices), iteration, ``len``, ``in``, ``count``, ``index``, ``==``
with a list, assignment to a row and ``repr`` behave as the list of the
same dicts would, and it pickles as that list. It does not subclass
``list`` on purpose: C code that takes a list (``json``, ``numpy``,
``list.__eq__``) reads a list's items directly and would see the rows not
made yet. ``list(infos)`` gives a real list."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

__all__ = ["Infos"]


class Infos(Sequence):
    """One info dict per row of a batch (see the module docstring).

    ``items`` is either every row's info (a list of ``n`` dicts) or the
    non-empty ones by position (a dict; the other rows are ``{}``, each a
    dict of its own once read). ``ended`` are the positions whose episode
    ended at this step; their info is the step's own plus
    ``episode_return`` and ``episode_length`` (from ``returns`` and
    ``lengths``, indexed by position: copies, since the rows change at the
    next step), ``final_obs`` (a view of ``finals[row]``, where ``row`` is
    ``rows[position]``, or the position itself when ``rows`` is None) and
    ``final_info`` (the step's own info)."""

    __slots__ = ("_n", "_items", "_ended", "_returns", "_lengths", "_finals", "_rows")

    def __init__(
        self,
        n: int,
        items: list[dict] | dict[int, dict],
        ended: Sequence[int] = (),
        returns: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
        finals: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self._n = n
        self._items = items
        self._ended = ended
        self._returns, self._lengths, self._finals, self._rows = returns, lengths, finals, rows

    def _settle(self) -> None:
        """Makes the infos of the rows that ended (once, on the first read)."""
        ended = self._ended
        self._ended = ()
        items, returns, lengths, finals, rows = self._items, self._returns, self._lengths, self._finals, self._rows
        dense = type(items) is list
        for k in ended:
            info = items[k] if dense else items.get(k) or {}
            items[k] = {
                **info,
                "episode_return": returns.item(k),
                "episode_length": lengths.item(k),
                "final_obs": finals[k if rows is None else rows.item(k)],
                "final_info": info,
            }
        self._returns = self._lengths = self._finals = self._rows = None

    def _list(self) -> list[dict]:
        """Every row's info as the list this stands for (made once, kept)."""
        if self._ended:
            self._settle()
        items = self._items
        if type(items) is not list:
            full: list[dict] = [{} for _ in range(self._n)]
            for k, info in items.items():
                full[k] = info
            self._items = items = full
        return items

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> dict: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...
    def __getitem__(self, index: Any) -> Any:
        if self._ended:
            self._settle()
        items = self._items
        if type(items) is list or isinstance(index, slice):
            return self._list()[index]
        k = operator.index(index)
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("Infos index out of range")
        info = items.get(k)
        if info is None:
            info = items[k] = {}
        return info

    def __setitem__(self, index: int, info: dict) -> None:
        if self._ended:
            self._settle()
        items = self._items
        if type(items) is list:
            items[index] = info
            return
        k = operator.index(index)
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("Infos assignment index out of range")
        items[k] = info

    def __iter__(self) -> Iterator[dict]:
        return iter(self._list())

    def __reversed__(self) -> Iterator[dict]:
        return reversed(self._list())

    def __contains__(self, value: object) -> bool:
        return value in self._list()

    def count(self, value: Any) -> int:
        """Rows whose info equals ``value``; ``count({})`` (how the trainer
        finds the rows with something to say) without making the empty ones."""
        if self._ended:
            self._settle()
        items = self._items
        if type(items) is list:
            return items.count(value)
        given = list(items.values()).count(value)
        return given + self._n - len(items) if isinstance(value, dict) and not value else given

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        return self._list().index(value, start, self._n if stop is None else stop)

    def copy(self) -> list[dict]:
        """A shallow copy, as ``list.copy`` makes: a real list of the same dicts."""
        return list(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Infos):
            return self._list() == other._list()
        if isinstance(other, list):
            return self._list() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __add__(self, other: object) -> list[dict]:
        if isinstance(other, (list, Infos)):
            return self._list() + list(other)
        return NotImplemented

    def __radd__(self, other: object) -> list[dict]:
        if isinstance(other, list):
            return other + self._list()
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._list())

    def __reduce__(self) -> tuple:
        # Pickled (for a worker, Ray, a copy) as the list it stands for.
        return list, (self._list(),)
