"""The exceptions pufferrs raises.

Each derives from :class:`PufferError` and from the builtin an ordinary
``except`` clause would name, so ``except ValueError`` still catches a bad
observation.
"""


class PufferError(Exception):
    """Base class of every pufferrs exception."""


class SpaceError(PufferError, ValueError):
    """A value does not fit its space: structure, shape, dtype or range.

    The message names the path, e.g.
    ``obs['inv']['items']: expected shape (8,), got (7,)``.
    """


class UnsupportedSpaceError(PufferError, TypeError):
    """A space has no fixed-size row encoding (``Sequence``, ``Graph``, ...)."""


class RowError(PufferError, ValueError):
    """A buffer of rows does not match the layout (size, contiguity, writability)."""


class BuffersError(PufferError, ValueError):
    """Rollout buffers asked to be or do what they cannot: an invalid plan
    (``num_envs``, ``num_workers``, ``batch_size``), a worker out of range, a
    shared region made for other arguments."""


class SharedMemoryError(PufferError, OSError):
    """The operating system refused the shared memory of a vector env."""


class ConfigError(PufferError, ValueError):
    """A training configuration that cannot run: the message says which
    setting and why."""


class WorkerError(PufferError, RuntimeError):
    """A vector env's worker raised, died, or stopped answering.

    The message names the worker and its envs and, when the worker raised,
    carries the worker's traceback. ``worker`` and ``env`` hold the indices
    when they are known (else None).
    """

    worker: int | None = None
    env: int | None = None


class WorkerTimeoutError(WorkerError, TimeoutError):
    """``recv()`` waited longer than the vector env's ``timeout`` for workers."""


class EnvProtocolError(PufferError, RuntimeError):
    """A PettingZoo env broke a promise of its API that its rows depend on
    (an agent outside ``possible_agents``, a dead selected agent that its
    ``None`` step does not remove); the message names the env's agent and
    what the env did. A worker reports it inside a :class:`WorkerError`."""


class DistributedError(PufferError, RuntimeError):
    """A collective between the ranks of a ``torchrun`` run failed: another
    rank stopped (its own output says why) or did not answer in time."""


class CheckpointError(ConfigError):
    """A file that is not a pufferrs checkpoint (it does not load as plain
    tensors and data, or lacks the policy's weights and config), or one
    that does not fit the policy its config describes. The message names
    the file."""


class UntrustedCodeError(CheckpointError):
    """A checkpoint's config names code to import or call (a module, a
    dotted path to a callable, ``imports``) that the person loading it did
    not name. A checkpoint is a file people download and share, so loading
    one never runs code on its word alone: the message says what it asks to
    run and how to allow it (name it again, or trust the file)."""
