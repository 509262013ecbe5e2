"""The pufferrs backends behind the vector APIs of other libraries, so that
their training code runs unchanged:

- :class:`GymnasiumVectorEnv`: a ``gymnasium.vector.VectorEnv`` (for
  gymnasium's vector wrappers and CleanRL-style scripts), in place of
  ``AsyncVectorEnv`` or ``SyncVectorEnv``.
- :class:`SB3VecEnv`: a Stable-Baselines3 ``VecEnv``, in place of
  ``SubprocVecEnv`` or ``DummyVecEnv`` (importing it imports
  Stable-Baselines3, so it is loaded only when used).
"""

from __future__ import annotations

from typing import Any

from pufferrs.compat.gymnasium import GymnasiumVectorEnv

__all__ = ["GymnasiumVectorEnv", "SB3VecEnv"]


def __getattr__(name: str) -> Any:
    if name == "SB3VecEnv":
        from pufferrs.compat.sb3 import SB3VecEnv

        return SB3VecEnv
    raise AttributeError(f"module 'pufferrs.compat' has no attribute {name!r}")
