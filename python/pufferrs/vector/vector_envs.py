"""Vector envs of several rows made from an env id (gymnasium's vector
entry point, EnvPool), and a vector env made elsewhere put on pufferrs's
buffers: how ``pufferrs train --vectorization`` and the trainer reach
:mod:`pufferrs.vector.inplace`.

A run of ``num_envs`` envs on ``n`` workers makes one vector env of
``num_envs / n`` envs per worker (one in all on Serial, or one per batch
of ``env_batch_size`` envs); each is one env of the pufferrs vector env,
with a row per sub-env, so the trainer still sees ``num_envs`` rows."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from pufferrs._native import RolloutBuffers
from pufferrs.errors import ConfigError
from pufferrs.vector.kinds import inplace_kind

__all__ = ["VectorEnvCreator", "on_pufferrs", "vector_env_count"]


class VectorEnvCreator:
    """A picklable maker of one vector env of ``size`` envs of ``env_id``:
    ``gymnasium.make_vec(env_id, size, vectorization_mode="vector_entry_point",
    **env_kwargs)``, or ``envpool.make(env_id, env_type="gymnasium",
    num_envs=size, seed=seed, **env_kwargs)`` (EnvPool seeds its envs when
    it makes them: its ``reset`` does not reseed, so each vector env gets
    its own ``seed``, the run's seed plus its first row)."""

    def __init__(
        self, vectorization: str, env_id: str, size: int, seed: int = 0, env_kwargs: dict | None = None
    ) -> None:
        if vectorization not in ("vector_entry_point", "envpool"):
            raise ConfigError(f"vectorization must be vector_entry_point or envpool, got {vectorization!r}")
        self.vectorization, self.env_id, self.size, self.seed = vectorization, env_id, size, seed
        self.env_kwargs = dict(env_kwargs or {})

    def __call__(self) -> Any:
        if self.vectorization == "vector_entry_point":
            return gym.make_vec(self.env_id, self.size, vectorization_mode="vector_entry_point", **self.env_kwargs)
        try:
            import envpool
        except ImportError as exc:
            raise ConfigError(
                f"vectorization envpool needs EnvPool, which did not import ({exc}): pip install envpool"
            ) from None
        return envpool.make(self.env_id, env_type="gymnasium", num_envs=self.size, seed=self.seed, **self.env_kwargs)

    def __repr__(self) -> str:
        return f"VectorEnvCreator({self.vectorization!r}, {self.env_id!r}, size={self.size}, seed={self.seed})"


def vector_env_count(num_envs: int, backend: str, num_workers: int | None, env_batch_size: int | None) -> int:
    """How many vector envs carry ``num_envs`` envs: one per worker
    (multiprocessing: ``num_workers``, or the plan's default), one per
    batch on Serial (``env_batch_size``, default all)."""
    if backend == "multiprocessing":
        count = num_workers or RolloutBuffers.default_workers(num_envs, _usable_cpus())
    elif backend == "serial":
        count = num_envs // env_batch_size if env_batch_size else 1
    else:
        raise ConfigError(f"vectorized envs run on the serial and multiprocessing backends, not {backend!r}")
    if count < 1 or num_envs % count or (env_batch_size and env_batch_size % (num_envs // count)):
        raise ConfigError(
            f"{num_envs} envs do not split into {count} vector envs of equal size"
            + (f" with batches of {env_batch_size}" if env_batch_size else "")
        )
    return count


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def on_pufferrs(env: Any, seed: int = 0) -> Any:
    """``env`` if it is a pufferrs vector env already (or speaks its
    protocol: ``async_reset``, ``send``, ``recv``); a gymnasium vector
    env (EnvPool's included) or an env of PufferLib's in-place contract as
    the one env of a :class:`~pufferrs.vector.Serial` vector env, a row per
    sub-env or agent, stepped by its own means (EnvPool: its threads);
    anything else is refused with a :class:`ConfigError` that says what
    the trainer takes."""
    from pufferrs.vector.base import VectorEnv
    from pufferrs.vector.serial import Serial

    if isinstance(env, VectorEnv):
        return env
    if inplace_kind(env) is not None:
        return Serial([_Given(env)], num_envs=1, seed=seed)
    if all(hasattr(env, name) for name in ("async_reset", "send", "recv")):
        # Speaks the pufferrs vector env's protocol: a wrapper of one, or an
        # adapter of another library's vector env.
        return env
    raise ConfigError(
        f"the trainer runs a pufferrs vector env (pufferrs.vector.make), a gymnasium vector env (EnvPool's "
        f"included) or an env of PufferLib's in-place contract; got {type(env).__name__}"
    )


class _Given:
    """The creator of an env made elsewhere: it returns that env, and a
    ``buf`` it is given changes nothing (the env's arrays are rebound to
    the rows instead: see :class:`~pufferrs.vector.inplace.PufferBlock`)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __call__(self, *args: Any, buf: Any = None, **kwargs: Any) -> Any:
        return self.env
