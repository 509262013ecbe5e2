"""Gymnasium envs with flat-row observations.

:class:`FlattenObservation` turns any env with a fixed-size observation space
into one whose observations are the rows of its :class:`~pufferrs.Layout`,
written by Rust, as vectorized rollouts store them. Policies view the rows
back with ``unflatten``.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium
import numpy as np

from pufferrs.spaces import Layout

__all__ = ["FlattenObservation"]


class FlattenObservation(gymnasium.Wrapper):
    """Observations as flat rows.

    By default every ``reset`` and ``step`` returns a new row, which no
    later call overwrites: what gymnasium's wrappers and vector envs
    expect. ``SyncVectorEnv`` with same-step autoreset, for one, hands out
    the observation that ended an episode as ``final_obs`` after it has
    reset the env; a row reused across calls would hold the next episode's
    first observation by then. A new row costs a small allocation more
    than refilling one.

    Pass ``out`` to have every row written into that memory instead, e.g.
    one row of a shared rollout buffer (PufferLib's convention, no
    allocation per step): each call then returns ``out``, refilled, and
    the caller copies what it keeps before the next call. Such an env does
    not suit a vector env that keeps observations across calls.

    Attributes:
        layout: the layout of the wrapped env's observation space.
        single_observation_space / single_action_space: the same spaces
            under the names vector envs use, so policies take this wrapper
            as their ``env``.
    """

    def __init__(self, env: gymnasium.Env, out: np.ndarray | None = None, check_bounds: bool = False):
        super().__init__(env)
        self.layout = Layout(env.observation_space)
        self.observation_space = self.layout.observation_space
        self.single_observation_space = self.observation_space
        self.single_action_space = env.action_space
        self.check_bounds = check_bounds
        self.out = out

    def _row(self, obs: Any) -> np.ndarray:
        if self.out is None:
            return self.layout.flatten(obs, check_bounds=self.check_bounds)
        self.layout.flatten_into(obs, self.out, check_bounds=self.check_bounds)
        return self.out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._row(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._row(obs), reward, terminated, truncated, info
