"""pufferrs: fast reinforcement-learning rollouts with a Rust core.

Observations from nested gymnasium spaces become flat, aligned byte rows
(:class:`Layout`), which policies view back leaf by leaf without copying
(``Layout.unflatten`` for numpy, :func:`pufferrs.pytorch.unflatten` for torch).

The rest lives in submodules, imported when used (so ``import pufferrs``
does not import torch): ``pufferrs.vector`` (vector envs over shared
memory), ``pufferrs.emulation`` (a gymnasium wrapper with flat-row
observations), ``pufferrs.pytorch`` (torch helpers) and ``pufferrs.models``
(policies).
"""

import importlib.metadata

from pufferrs.errors import (
    BuffersError,
    CheckpointError,
    ConfigError,
    DistributedError,
    EnvProtocolError,
    PufferError,
    RowError,
    SharedMemoryError,
    SpaceError,
    UnsupportedSpaceError,
    UntrustedCodeError,
    WorkerError,
    WorkerTimeoutError,
)
from pufferrs.spaces import Layout, Leaf

__all__ = [
    "BuffersError",
    "CheckpointError",
    "ConfigError",
    "DistributedError",
    "EnvProtocolError",
    "Layout",
    "Leaf",
    "PufferError",
    "RowError",
    "SharedMemoryError",
    "SpaceError",
    "UnsupportedSpaceError",
    "UntrustedCodeError",
    "WorkerError",
    "WorkerTimeoutError",
]

# The installed distribution's version, which maturin takes from the Cargo
# workspace: the one place a release sets it.
__version__ = importlib.metadata.version("pufferrs")
