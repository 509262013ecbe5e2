"""Gymnasium wrappers that ``pufferrs train`` puts around an env: the
standard Atari preprocessing, leaves left out of an observation, and the
length of string observations.

Atari (:func:`atari`), as SB3's ``make_atari_env``, CleanRL and EnvPool do
it: up to 30 no-op actions at reset, 4 frames per step with the last two
max-pooled, 84x84 grayscale, FIRE pressed after a reset in the games that
wait for it, a stack of the last 4 frames; for training,
also the end of a life ends an episode (:class:`EpisodicLife`) and rewards
are clipped to their sign (:class:`ClipReward`). The score of a whole game,
unclipped, is reported in the info of the step that ends the game as
``game_return`` and ``game_length`` (:class:`GameScore`), since the
episode statistics of a vector env see the clipped, per-life rewards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, SupportsFloat

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs.errors import ConfigError
from pufferrs.spaces import is_string_space

__all__ = [
    "ClipReward",
    "DropObservations",
    "EpisodicLife",
    "FireReset",
    "GameScore",
    "GoalSuccess",
    "StringObservations",
    "atari",
    "parse_paths",
]


def parse_paths(keys: str | Iterable[str | tuple[str | int, ...]]) -> list[tuple[str | int, ...]]:
    """Leaf paths from ``"mission,inv/items"`` (``,`` between paths, ``/``
    between the keys of one), or from a list of such strings or tuples."""
    items = keys.split(",") if isinstance(keys, str) else list(keys)
    paths = []
    for item in items:
        if isinstance(item, tuple):
            paths.append(item)
        elif item.strip():
            paths.append(tuple(int(k) if k.isdigit() else k for k in item.strip().split("/")))
    return paths


def _without(space: gs.Space, path: tuple[str | int, ...], whole: tuple[str | int, ...]) -> gs.Space:
    if not isinstance(space, gs.Dict) or path[0] not in space.spaces:
        have = list(space.spaces) if isinstance(space, gs.Dict) else type(space).__name__
        raise ConfigError(
            f"cannot leave out {'/'.join(map(str, whole))}: the observation has no key {path[0]!r} there ({have})"
        )
    items = dict(space.spaces)
    if len(path) == 1:
        del items[path[0]]
    else:
        items[path[0]] = _without(items[path[0]], path[1:], whole)
    return gs.Dict(items)


class DropObservations(gym.ObservationWrapper):
    """Leaves out the leaves at ``keys`` (Dict keys, nested as
    ``"inv/items"``): for parts of an observation no policy needs, or that
    pufferrs cannot store."""

    def __init__(self, env: gym.Env, keys: str | Iterable[str | tuple[str | int, ...]]):
        super().__init__(env)
        self.paths = parse_paths(keys)
        space = env.observation_space
        for path in self.paths:
            space = _without(space, path, path)
        self.observation_space = space

    def observation(self, observation: Any) -> Any:
        for path in self.paths:
            observation = self._drop(observation, path)
        return observation

    def _drop(self, tree: Any, path: tuple[str | int, ...]) -> Any:
        tree = dict(tree)
        if len(path) == 1:
            tree.pop(path[0], None)
        else:
            tree[path[0]] = self._drop(tree[path[0]], path[1:])
        return tree


def _with_string_length(space: gs.Space, max_length: int) -> gs.Space:
    if isinstance(space, gs.Dict):
        return gs.Dict({k: _with_string_length(s, max_length) for k, s in space.spaces.items()})
    if isinstance(space, gs.Tuple):
        return gs.Tuple(tuple(_with_string_length(s, max_length) for s in space.spaces))
    if is_string_space(space) and not isinstance(space, gs.Text):
        space = copy.copy(space)
        space.max_length = max_length  # read by pufferrs.spaces.describe
    return space


class StringObservations(gym.Wrapper):
    """Gives the string spaces of an observation that are not ``Text``
    (MiniGrid's missions) a maximum length of ``max_length`` characters
    (the default is 128). Observations are unchanged; a longer string is a
    ``SpaceError`` naming its path."""

    def __init__(self, env: gym.Env, max_length: int):
        super().__init__(env)
        self.observation_space = _with_string_length(env.observation_space, max_length)


class ClipReward(gym.RewardWrapper):
    """Rewards clipped to their sign, -1, 0 or 1."""

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))


class EpisodicLife(gym.Wrapper):
    """The loss of a life ends the episode for the learner (``terminated``),
    while the game goes on: the next ``reset`` continues the same game with
    a no-op step, and only a game over resets it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info


class FireReset(gym.Wrapper):
    """Presses FIRE after every reset, for the games that wait for it
    (Breakout, and others whose action meanings include FIRE)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(options=options)
        return obs, info


class GameScore(gym.Wrapper):
    """Adds ``game_return`` and ``game_length`` (agent steps) to the info
    of the step that ends a game: the unclipped score, whatever the wrappers
    outside this one do to rewards and episodes."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score, self.length = 0.0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        self.score, self.length = 0.0, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.length += 1
        if terminated or truncated:
            info = {**info, "game_return": self.score, "game_length": self.length}
        return obs, reward, terminated, truncated, info


class GoalSuccess(gym.Wrapper):
    """Adds ``success`` to the info of the step that ends an episode: True
    when it ended by reaching the goal (terminated with a positive reward),
    as in MiniGrid and BabyAI, whose infos say nothing of it."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = {**info, "success": bool(terminated and float(reward) > 0)}
        return obs, reward, terminated, truncated, info


def atari(env: gym.Env, training: bool = True) -> gym.Env:
    """The standard Atari preprocessing around an ALE env made with
    ``frameskip=1`` (see the module docstring); ``training`` adds the
    episodic life and the clipped rewards."""
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = GameScore(env)
    if training:
        env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    if training:
        env = ClipReward(env)
    return gym.wrappers.FrameStackObservation(env, 4)
