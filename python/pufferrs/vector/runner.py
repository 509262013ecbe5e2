"""Stepping a block of envs into the shared rows: the same code runs in
Serial and in every worker process, so both backends write the same bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from pufferrs._native import EnvBlock, NativeBlock
from pufferrs.spaces import Layout
from pufferrs.vector.agents import ParallelBlock, TurnBlock
from pufferrs.vector.inplace import PufferBlock, VectorBlock
from pufferrs.vector.kinds import inplace_kind, native_envs, pettingzoo_kind


class Runner:
    """Steps envs ``first_env, first_env + 1, ...`` and writes what they
    return into the rows of ``arrays`` (the shared buffers).

    The per-env work of gymnasium envs runs in Rust
    (:class:`~pufferrs._native.EnvBlock`), one call per batch, reading each
    env's action from its action row (an int for a Discrete, a str for a
    string, a new array for the other leaves); PettingZoo envs, one row per
    agent, go through :mod:`pufferrs.vector.agents`, and envs that step
    all their rows at once through :mod:`pufferrs.vector.inplace`, with the
    same interface. Either way, what the outcomes mean for the rows (returns,
    lengths, flags, final rows, the same-step autoreset) is the core's
    ``episodes.rs``. Envs written in Rust (:class:`pufferrs.native.NativeEnv`)
    step in a :class:`~pufferrs._native.NativeBlock` instead: every env in
    one call with the GIL released, over ``threads`` threads (default:
    the machine's cores, at least 32 envs a thread), with no Python per env."""

    def __init__(
        self,
        envs: list[gym.Env],
        first_env: int,
        arrays: dict[str, np.ndarray],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool = False,
        threads: int | None = None,
    ) -> None:
        self.envs = envs
        self.first_env = first_env
        native = native_envs(envs)
        if native is not None:
            self.block = NativeBlock(native, first_env, arrays, layout, action_layout, check_bounds, threads)
        else:
            kind = inplace_kind(envs[0]) or pettingzoo_kind(envs[0])
            block = {None: EnvBlock, "parallel": ParallelBlock, "aec": TurnBlock, "vector": VectorBlock}.get(
                kind, PufferBlock
            )
            self.block = block(envs, first_env, arrays, layout, action_layout, check_bounds)
        #: ``reset(seed)`` resets every env: ``(position, info)`` for the
        #: non-empty infos. ``step(actions=None, *, dense=False)`` steps
        #: every env on its action rows: ``(position, info)`` for the
        #: non-empty infos, or with ``dense`` every row's info and the rows
        #: that ended (what ``VectorEnv._step_all`` returns). ``actions``,
        #: when given, is first written into the action rows (a batch as
        #: ``send`` takes it); a batch that does not fit raises before any
        #: env steps, with ``current_env`` None, and changes nothing. Both
        #: are the block's own methods, not methods that call them: a frame
        #: per call is a measurable share of Serial's step on small envs.
        self.reset: Callable[..., list[Any]] = self.block.reset
        self.step: Callable[..., Any] = self.block.step

    @property
    def current_env(self) -> int | None:
        """The env being reset or stepped when one raised, for error reports."""
        return self.block.current_env

    @property
    def ended(self) -> tuple[int, ...]:
        """The rows (positions in the block) whose episode ended in the last
        step; empty, and false, when none did."""
        return self.block.ended

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                pass
