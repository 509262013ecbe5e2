"""The backend behind an adapter: a pufferrs vector env that steps every
env at each step, one row per env, as the vector APIs of gymnasium and
Stable-Baselines3 expect."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pufferrs.vector


def make_backend(adapter: str, creators: Sequence[Callable[[], Any]], backend: str | type, kwargs: dict) -> Any:
    """``pufferrs.vector.make`` over ``creators`` for ``adapter`` (its name,
    for errors): refuses asynchronous batches and PettingZoo envs, which
    these APIs have no room for."""
    if kwargs.get("batch_size") not in (None, len(creators)):
        raise ValueError(f"{adapter} steps every env: batch_size must be num_envs, got {kwargs['batch_size']}")
    envs = pufferrs.vector.make(list(creators), num_envs=len(creators), backend=backend, **kwargs)
    if envs.possible_agents is not None:
        envs.close()
        raise TypeError(
            f"{adapter} adapts gymnasium envs, one row per env; these are PettingZoo envs of agents "
            f"{envs.possible_agents}: use pufferrs.vector.make, which gives each agent a row"
        )
    if envs.agents_per_env != 1:
        envs.close()
        raise TypeError(
            f"{adapter} adapts gymnasium envs, one row per env; these envs take {envs.agents_per_env} rows each "
            f"(vector envs, or envs of PufferLib's in-place contract): use pufferrs.vector.make"
        )
    return envs
