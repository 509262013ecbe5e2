"""Gymnasium envs with flat-row observations.

:class:`FlattenObservation` turns any env with a fixed-size observation space
into one whose observations are the rows of its :class:`~pufferrs.Layout`,
written by Rust straight into a preallocated buffer, as vectorized rollouts
store them. Policies view the rows back with ``unflatten``.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium
import numpy as np

from pufferrs.spaces import Layout

__all__ = ["FlattenObservation"]


class FlattenObservation(gymnasium.Wrapper):
    """Observations as flat rows, written in place.

    ``reset`` and ``step`` return ``out``, the same row every call, refilled
    with the new observation (PufferLib's convention; no allocation per
    step). Copy it to keep an observation past the next step. Pass ``out``
    to have rows land in memory of your own, e.g. one row of a shared
    rollout buffer.

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
        space = self.observation_space
        self.out = np.zeros(space.shape, space.dtype) if out is None else out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.layout.flatten_into(obs, self.out, check_bounds=self.check_bounds)
        return self.out, info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.layout.flatten_into(obs, self.out, check_bounds=self.check_bounds)
        return self.out, reward, terminated, truncated, info
