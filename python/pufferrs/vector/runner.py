"""Stepping a block of envs into the shared rows: the same code runs in
Serial and in every worker process, so both backends write the same bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs._native import EnvBlock
from pufferrs.spaces import Layout
from pufferrs.vector.agents import ParallelBlock, TurnBlock, pettingzoo_kind


def action_reader(action_layout: Layout, rows: np.ndarray) -> Callable[[], list[Any]]:
    """A function reading the actions of ``rows`` as one value per row (env,
    or agent of a PettingZoo env), the way the env expects them: ints for
    Discrete, private arrays otherwise."""
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
    return into the rows of ``arrays`` (the shared buffers).

    The per-env work of gymnasium envs runs in Rust
    (:class:`~pufferrs._native.EnvBlock`), one call per batch; PettingZoo
    envs, one row per agent, go through :mod:`pufferrs.vector.agents` with
    the same interface. When a step ends an episode, the episode's last
    observation goes into the env's row of ``final_observations`` before
    the env is reset, and the reset's first observation into its row of
    ``observations``."""

    def __init__(
        self,
        envs: list[gym.Env],
        first_env: int,
        arrays: dict[str, np.ndarray],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool = False,
    ) -> None:
        self.envs = envs
        self.first_env = first_env
        kind = pettingzoo_kind(envs[0])
        if kind is None:
            self.block = EnvBlock(envs, first_env, arrays, layout, check_bounds)
            rows = arrays["actions"][first_env : first_env + len(envs)]
        else:
            block = ParallelBlock if kind == "parallel" else TurnBlock
            self.block = block(envs, first_env, arrays, layout, check_bounds)
            agents = self.block.A
            rows = arrays["actions"][first_env * agents : (first_env + len(envs)) * agents]
        self.read_actions = action_reader(action_layout, rows)

    @property
    def current_env(self) -> int | None:
        """The env being reset or stepped when one raised, for error reports."""
        return self.block.current_env

    @property
    def ended(self) -> bool:
        """Whether an episode ended in the last step."""
        return self.block.ended

    def reset(self, seed: int | None) -> list[tuple[int, dict]]:
        return self.block.reset(seed)

    def step(self) -> list[tuple[int, dict]]:
        return self.block.step(self.read_actions())

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                pass
