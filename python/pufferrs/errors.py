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
