"""Stepping a block of envs into the shared rows: the same code runs in
Serial and in every worker process, so both backends write the same bytes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs.spaces import Layout


def action_reader(action_layout: Layout, rows: np.ndarray) -> Callable[[], list[Any]]:
    """A function reading the actions of ``rows`` as one value per env, the
    way the env expects them: ints for Discrete, private arrays otherwise."""
    n = rows.shape[0]

    def reader(space: gs.Space, view: Any) -> Callable[[], list[Any]]:
        if isinstance(space, gs.Discrete):
            return view.tolist
        if isinstance(space, gs.Dict):
            parts = [(key, reader(sub, view[key])) for key, sub in space.spaces.items()]

            def read_dict() -> list[Any]:
                values = [(key, read()) for key, read in parts]
                return [{key: column[i] for key, column in values} for i in range(n)]

            return read_dict
        if isinstance(space, gs.Tuple):
            tuple_parts = [reader(sub, v) for sub, v in zip(space.spaces, view)]

            def read_tuple() -> list[Any]:
                return list(zip(*(read() for read in tuple_parts))) if tuple_parts else [()] * n

            return read_tuple
        return lambda: list(view.copy())

    return reader(action_layout.space, action_layout.unflatten(rows))


class Runner:
    """Steps envs ``first_env, first_env + 1, ...`` and writes what they
    return into the rows of ``arrays`` (the shared buffers)."""

    def __init__(
        self,
        envs: list[gym.Env],
        first_env: int,
        arrays: dict[str, np.ndarray],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool = False,
    ) -> None:
        lo, hi = first_env, first_env + len(envs)
        self.envs = envs
        self.first_env = first_env
        self.observations = arrays["observations"]
        # A partial only when checking: unchecked rows keep the plain method.
        self.flatten_into = (
            functools.partial(layout.flatten_into, check_bounds=True) if check_bounds else layout.flatten_into
        )
        self.rewards = arrays["rewards"][lo:hi]
        self.terminals = arrays["terminals"][lo:hi]
        self.truncations = arrays["truncations"][lo:hi]
        self.masks = arrays["masks"][lo:hi]
        self.episode_returns = arrays["episode_returns"][lo:hi]
        self.episode_lengths = arrays["episode_lengths"][lo:hi]
        self.read_actions = action_reader(action_layout, arrays["actions"][lo:hi])
        self.returns = [0.0] * len(envs)
        self.lengths = [0] * len(envs)
        #: The env being reset or stepped, for error reports.
        self.current_env: int | None = None
        #: Whether an episode ended in the last step.
        self.ended = False

    def reset(self, seed: int | None) -> list[tuple[int, dict]]:
        infos = []
        for i, env in enumerate(self.envs):
            self.current_env = self.first_env + i
            obs, info = env.reset(seed=None if seed is None else seed + self.first_env + i)
            self.flatten_into(obs, self.observations, self.first_env + i)
            if info:
                infos.append((i, info))
        self.current_env = None
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        self.returns = [0.0] * len(self.envs)
        self.lengths = [0] * len(self.envs)
        self.ended = False
        return infos

    def step(self) -> list[tuple[int, dict]]:
        actions = self.read_actions()
        rewards, terminals, truncations, infos = [], [], [], []
        returns, lengths, first = self.returns, self.lengths, self.first_env
        ended = False
        for i, env in enumerate(self.envs):
            self.current_env = first + i
            obs, reward, terminal, truncation, info = env.step(actions[i])
            returns[i] += reward
            lengths[i] += 1
            if terminal or truncation:
                ended = True
                self.episode_returns[i] = returns[i]
                self.episode_lengths[i] = lengths[i]
                returns[i], lengths[i] = 0.0, 0
                obs, _ = env.reset()
            self.flatten_into(obs, self.observations, first + i)
            rewards.append(reward)
            terminals.append(terminal)
            truncations.append(truncation)
            if info:
                infos.append((i, info))
        self.current_env = None
        self.ended = ended
        self.rewards[:] = rewards
        self.terminals[:] = terminals
        self.truncations[:] = truncations
        return infos

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                pass
