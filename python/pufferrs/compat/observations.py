"""Flat rows back to the env's own observations, for the adapters: the
nested structure of numpy arrays that gymnasium and Stable-Baselines3 code
indexes, as copies or as views of the rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from pufferrs.spaces import Layout


def copied(tree: Any) -> Any:
    """``tree`` (dicts, tuples and arrays) with every array copied."""
    if isinstance(tree, dict):
        return {key: copied(value) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(copied(value) for value in tree)
    return np.array(tree)


class Observations:
    """Turns a batch of rows (or one row) into the space's structure.

    A plain ``Box`` space's rows are its observations already; other
    spaces go through ``Layout.unflatten``, whose leaves are views of the
    rows. ``copy=False`` hands those views out: the next step overwrites
    them."""

    def __init__(self, layout: Layout, copy: bool = True) -> None:
        self.layout = layout
        self.copy = copy
        self._plain = layout.observation_space is layout.space

    def batch(self, rows: np.ndarray) -> Any:
        obs = rows if self._plain else self.layout.unflatten(rows)
        return copied(obs) if self.copy else obs

    def single(self, row: np.ndarray) -> Any:
        """One env's observation, always a copy (it outlives the row)."""
        return copied(row if self._plain else self.layout.unflatten(row))
