"""What the vector envs accept, checked before any env is made or
stepped: env counts and seeds (``make``, ``reset``), the env a creator
made, and the batch of actions ``send`` takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs._native import RolloutBuffers, format_path
from pufferrs.errors import ConfigError
from pufferrs.vector.kinds import inplace_kind, pettingzoo_kind

__all__ = ["check_arguments", "checked_env", "checked_seed", "wrong_batch"]


def check_arguments(num_envs: Any, num_workers: Any, batch_size: Any, seed: Any) -> None:
    """Refuses, before any env is made, the counts no buffers can hold
    (their rules are the plan's: ``RolloutBuffers.check_counts``) and a
    seed that ``checked_seed`` refuses."""
    RolloutBuffers.check_counts(num_envs, num_workers, batch_size)
    checked_seed(seed)


def checked_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as a Python int (None stays None), or a :class:`ConfigError`
    naming it.

    Seeds are what gymnasium's ``reset`` takes (``np.random.SeedSequence``
    entropy): non-negative ints of any size. Env ``i`` gets ``seed + i``,
    summed as Python ints everywhere (here, in the workers, in
    ``EnvBlock.reset``) so that no seed wraps or overflows; numpy integers
    are taken as their value. A negative seed or a non-int (a bool, a
    float) is refused here, before any env sees it, rather than by each
    env in its worker."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"{name} must be a non-negative int, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if seed < 0:
        raise ConfigError(f"{name} must be a non-negative int, got {seed}")
    return seed


def wrong_batch(
    actions: Any, space: gs.Space, size: int, unit: str = "env", path: tuple[str | int, ...] = ()
) -> str | None:
    """Why ``actions`` is not a batch of ``size`` actions of ``space`` (one
    per ``unit`` of the batch: env, or row of a multi-agent env): the
    first part whose leading axis is not ``size`` long, as a message; None
    when every part that is there has the right length (the error is then
    something else, which flatten describes)."""
    if isinstance(space, (gs.Dict, gs.Tuple)) and not isinstance(actions, list):
        if isinstance(space, gs.Dict) and isinstance(actions, Mapping):
            parts = [(key, actions[key], sub) for key, sub in space.spaces.items() if key in actions]
        elif isinstance(space, gs.Tuple) and isinstance(actions, tuple):
            parts = list(zip(range(len(actions)), actions, space.spaces))
        else:
            return None
        for key, part, sub in parts:
            message = wrong_batch(part, sub, size, unit, (*path, key))
            if message is not None:
                return message
        return None
    shape = getattr(actions, "shape", None)
    if shape is not None:
        length = shape[0] if len(shape) else None
    else:
        length = len(actions) if isinstance(actions, (list, tuple)) else None
    if length == size:
        return None
    got = "a single value" if length is None else str(length)
    return f"{format_path('action', path)}: expected a batch of {size} actions, one per {unit} of the batch, got {got}"


def checked_env(env: Any, backend: str | None = None) -> Any:
    """``env`` if it is a gymnasium env, a PettingZoo env or an env that
    steps several rows at once (a gymnasium vector env, EnvPool's, or
    PufferLib's in-place contract), unless ``backend`` names a backend that
    runs gymnasium envs only."""
    inplace = inplace_kind(env)
    if isinstance(env, gym.Env) and inplace is None:
        if backend is not None and getattr(env, "possible_agents", None) is not None:
            # A multi-agent env written in Rust (pufferrs.native): one row per agent.
            env.close()
            raise TypeError(
                f"the {backend} backend runs envs of one agent only, got {env!r} with agents "
                f"{env.possible_agents}: use backend='serial' or 'multiprocessing'"
            )
        return env
    if pettingzoo_kind(env) is None and inplace is None:
        raise TypeError(
            f"env_creator must return a gymnasium.vector.VectorEnv, an env of PufferLib's in-place contract, a "
            f"gymnasium.Env or a PettingZoo ParallelEnv or AECEnv, got {type(env).__name__}"
        )
    if backend is not None:
        env.close()
        what = "the PettingZoo env" if inplace is None else "the env of several rows"
        raise TypeError(
            f"the {backend} backend runs gymnasium envs only, got {what} {type(env).__name__}: "
            "use backend='serial' or 'multiprocessing'"
        )
    return env
