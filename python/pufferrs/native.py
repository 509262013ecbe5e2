"""Envs written in Rust (the ``pufferrs-envs`` crate), as gymnasium envs
that pufferrs's vector envs step natively.

:class:`NativeEnv` is what an env creator returns for a native env: a
``gymnasium.Env`` whose spaces are declared in Rust (turned here into
gymnasium spaces) and whose Rust env a vector env's ``Runner`` takes and
steps with its block, with the GIL released and no Python per env (see
:class:`pufferrs._native.NativeBlock`). The built-in ones are registered
with gymnasium by :mod:`pufferrs.envs` (``gymnasium.make("pufferrs/CartPole-rs")``
returns one, unwrapped), so ``pufferrs train pufferrs/CartPole-rs`` runs it.

A single-agent native env also steps on its own, through ``reset`` and
``step`` as any gymnasium env (a block of one env over rows of its own):
for wrappers, checks and evaluation, not for speed. A multi-agent one
steps in a vector env only, one row per agent.

Envs of your own crate: build it with maturin into an extension module
that exports ``pufferrs_envs`` (``pufferrs_envs::abi::export``), and call
:func:`register` on that module when your package is imported; see the
template in ``examples/native_game`` and docs/native-envs.md."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs import _native
from pufferrs.errors import ConfigError, PufferError, UnsupportedSpaceError

__all__ = ["NATIVE_ENVS", "NativeEnv", "register", "register_ids", "space"]

#: The ids of the built-in native envs.
NATIVE_ENVS: tuple[str, ...] = tuple(_native.native_env_ids())


def register(module: ModuleType) -> list[str]:
    """Loads the envs of a crate of envs written in Rust from its extension
    module (its ``pufferrs_envs`` capsule), checking that it was built for
    this pufferrs (ABI version, sizes, the layout of every space), and
    registers each with gymnasium under its id, unwrapped like the
    built-ins: ``gymnasium.make(id)`` and ``pufferrs train package:id``
    make it. Returns the ids. Loading a module again replaces its envs."""
    capsule = getattr(module, "pufferrs_envs", None)
    if capsule is None:
        raise ConfigError(
            f"module {module.__name__} has no pufferrs_envs: a crate of envs puts the capsule that "
            f"pufferrs_envs::abi::export makes there"
        )
    ids = _native.load_envs(capsule, json.loads)
    register_ids(ids)
    return ids


def register_ids(ids: list[str] | tuple[str, ...]) -> None:
    """Registers native env ids with gymnasium (those not registered yet).
    Unwrapped, so that vector envs find the Rust env to step: the env
    checks its own actions, keeps its own order and limits its own
    episodes."""
    for env_id in ids:
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="pufferrs.native:NativeEnv",
                kwargs={"env_id": env_id},
                disable_env_checker=True,
                order_enforce=False,
            )


def space(description: dict[str, Any]) -> gs.Space:
    """The gymnasium space of a description made in Rust (the form
    :func:`pufferrs.spaces.describe` makes of a gymnasium space)."""
    kind = description["kind"]
    if kind == "Dict":
        return gs.Dict([(key, space(sub)) for key, sub in description["items"]])
    if kind == "Tuple":
        return gs.Tuple([space(sub) for sub in description["items"]])
    if kind == "Text":
        return gs.Text(description["max_length"], min_length=description["min_length"], charset=description["charset"])
    if kind == "Unsupported":
        raise UnsupportedSpaceError(description["reason"])
    dtype = np.dtype(description["dtype"])
    if kind == "Box":
        shape = tuple(description["shape"])
        low = np.array(description["low"], dtype).reshape(shape)
        high = np.array(description["high"], dtype).reshape(shape)
        return gs.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return gs.Discrete(description["n"], start=description["start"], dtype=dtype)
    if kind == "MultiDiscrete":
        shape = tuple(description["shape"])
        nvec = np.array(description["nvec"], dtype).reshape(shape)
        start = np.array(description["start"], dtype).reshape(shape)
        return gs.MultiDiscrete(nvec, dtype=dtype, start=start)
    if kind == "MultiBinary":
        shape = list(description["shape"])
        return gs.MultiBinary(shape[0] if len(shape) == 1 else shape)  # as gymnasium compares them
    raise UnsupportedSpaceError(f"a native env declared a space of kind {kind!r}")


class NativeEnv(gym.Env):
    """The native env ``env_id`` (one of :data:`NATIVE_ENVS`).

    ``observation_space`` and ``action_space`` are one agent's;
    ``possible_agents`` names the agents of a multi-agent env (one row
    each in a vector env) and is None for an env of one agent."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str, render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise PufferError(f"{env_id} does not render (render_mode={render_mode!r})")
        #: The Rust env, until a block takes it.
        self.handle = _native.NativeEnv(env_id)
        self.env_id = env_id
        self.possible_agents: list[str] | None = self.handle.possible_agents
        self.observation_space = space(self.handle.observation_description())
        self.action_space = space(self.handle.action_description())
        self.render_mode = None
        self._single: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"NativeEnv({self.env_id!r})"

    def _alone(self) -> tuple[Any, ...]:
        """A block of this one env over rows of its own, made at the first
        ``reset``: ``(block, arrays, layout, action layout)``."""
        if self._single is None:
            if self.possible_agents is not None:
                raise PufferError(
                    f"{self.env_id} has several agents: it steps in a pufferrs vector env "
                    f"(pufferrs.vector.make), one row per agent, not on its own"
                )
            from pufferrs.spaces import Layout
            from pufferrs.vector.base import VectorEnv

            layout, action_layout = Layout(self.observation_space, name="obs"), Layout(self.action_space, name="action")
            buffers = _native.RolloutBuffers(1, None, layout.row_bytes, action_layout.row_bytes, None, 1)
            arrays = {name: buffers.array(name) for name in VectorEnv._ARRAYS}
            block = _native.NativeBlock([self.handle], 0, arrays, layout, action_layout, threads=1)
            self._single = (block, arrays, layout, action_layout)
        return self._single

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        block, arrays, layout, _ = self._alone()
        block.reset(seed)
        self._started = True
        return _value(layout, self.observation_space, layout.unflatten(arrays["observations"][0]), ()), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """One step. On the step that ends an episode the observation is
        its last one; the env has already started its next episode, whose
        first observation is lost: call ``reset`` then, as gymnasium asks."""
        block, arrays, layout, _ = self._alone()
        if not getattr(self, "_started", False):
            raise PufferError(f"{self.env_id}: call reset() before step()")
        block.step([action])
        terminated, truncated = bool(arrays["terminals"][0]), bool(arrays["truncations"][0])
        rows = arrays["final_observations"] if terminated or truncated else arrays["observations"]
        obs = _value(layout, self.observation_space, layout.unflatten(rows[0]), ())
        return obs, float(arrays["rewards"][0]), terminated, truncated, {}


def _value(layout: Any, space: gs.Space, tree: Any, path: tuple) -> Any:
    """An unflattened row as the space's own value: arrays copied out of
    the rows (which the next step rewrites), a string leaf's codes decoded,
    a ``Discrete`` leaf a numpy scalar, as its ``sample()`` gives."""
    if isinstance(space, gs.Dict):
        return {key: _value(layout, sub, tree[key], (*path, key)) for key, sub in space.spaces.items()}
    if isinstance(space, gs.Tuple):
        return tuple(_value(layout, sub, tree[i], (*path, i)) for i, sub in enumerate(space.spaces))
    if isinstance(space, gs.Text):
        return layout.decode_text(path, tree)
    if isinstance(space, gs.Discrete):
        return np.asarray(tree)[()]
    return np.array(tree)
