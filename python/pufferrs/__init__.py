"""pufferrs: fast reinforcement-learning rollouts with a Rust core.

Observations from nested gymnasium spaces become flat, aligned byte rows
(:class:`Layout`), which policies view back leaf by leaf without copying
(``Layout.unflatten`` for numpy, :func:`pufferrs.pytorch.unflatten` for torch).
"""

from pufferrs.errors import PufferError, RowError, SpaceError, UnsupportedSpaceError, WorkerError
from pufferrs.spaces import Layout, Leaf

__all__ = [
    "Layout",
    "Leaf",
    "PufferError",
    "RowError",
    "SpaceError",
    "UnsupportedSpaceError",
    "WorkerError",
]

__version__ = "0.1.0"
