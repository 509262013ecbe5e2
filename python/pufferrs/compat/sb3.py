"""A Stable-Baselines3 ``VecEnv`` over the pufferrs backends.

One line changes in an SB3 script::

    env = SubprocVecEnv([make_env(i) for i in range(8)])
    env = pufferrs.compat.SB3VecEnv([make_env(i) for i in range(8)])

Importing this module imports Stable-Baselines3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from pufferrs.compat.backend import make_backend
from pufferrs.compat.observations import copied
from pufferrs.spaces import Layout

__all__ = ["SB3VecEnv"]

#: Joins the path of a nested leaf into one key of SB3's one-level Dict:
#: ``obs["inv"]["items"]`` becomes ``obs["inv/items"]`` (torch refuses a
#: dot in the module names SB3 makes from the keys).
KEY_SEPARATOR = "/"


def _nested(space: gs.Space) -> bool:
    parts = space.spaces.values() if isinstance(space, gs.Dict) else space.spaces if isinstance(space, gs.Tuple) else ()
    return any(isinstance(part, (gs.Dict, gs.Tuple)) for part in parts)


class _SB3Observations:
    """Rows to observations in SB3's format: arrays with the env as the
    first axis, in a one-level Dict (or Tuple) when the space has parts.
    Nested spaces, which SB3's policies refuse, become a one-level Dict of
    their leaves keyed by path (``"inv/items"``), so ``MultiInputPolicy``
    takes them. Always copies: SB3 keeps the observations of one step
    while it takes the next."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        space = layout.space
        self.keys: list[tuple[str, tuple[str | int, ...]]] | None = None
        if layout.observation_space is space or not _nested(space):
            self.space = space
        else:
            self.keys = [(KEY_SEPARATOR.join(map(str, leaf.path)), leaf.path) for leaf in layout.leaves]
            self.space = gs.Dict({key: leaf.space for (key, _), leaf in zip(self.keys, layout.leaves)})

    def __call__(self, rows: np.ndarray) -> VecEnvObs:
        """A batch of rows, or one row (a ``terminal_observation``)."""
        if self.layout.observation_space is self.layout.space:
            return np.array(rows)
        tree = self.layout.unflatten(rows)
        if self.keys is None:
            return copied(tree)
        out = {}
        for key, path in self.keys:
            value = tree
            for part in path:
                value = value[part]
            out[key] = np.array(value)
        return out


def _get_attr(env: gym.Env, name: str | None) -> Any:
    return None if name is None else env.get_wrapper_attr(name)


def _set_attr(env: gym.Env, arg: tuple[str, Any] | None) -> None:
    # SB3's own vector envs set the attribute on the outermost wrapper.
    if arg is not None:
        setattr(env, *arg)


def _env_method(env: gym.Env, arg: tuple[str, tuple, dict] | None) -> Any:
    if arg is None:
        return None
    name, args, kwargs = arg
    return env.get_wrapper_attr(name)(*args, **kwargs)


def _is_wrapped(env: gym.Env, wrapper_class: type[gym.Wrapper] | None) -> bool | None:
    from stable_baselines3.common.env_util import is_wrapped

    return None if wrapper_class is None else is_wrapped(env, wrapper_class)


def _reset_env(env: gym.Env, arg: tuple[int | None, dict]) -> tuple[Any, dict]:
    seed, options = arg
    return env.reset(seed=seed, **({"options": options} if options else {}))


class SB3VecEnv(VecEnv):
    """``env_fns`` (one creator per env, as for ``SubprocVecEnv``) run by a
    pufferrs backend, behind SB3's ``VecEnv`` API.

    ``backend`` is ``"multiprocessing"`` (default), ``"serial"`` or another
    ``pufferrs.vector.make`` backend; other keyword arguments
    (``num_workers``, ``start_method``, ``timeout``, ...) go to ``make``.
    As with SB3's vector envs, ``step_wait`` returns ``(obs, rewards,
    dones, infos)``: ``dones`` is terminated or truncated, every info has
    ``TimeLimit.truncated``, and the info of an env whose episode ended has
    its last observation as ``terminal_observation``. ``seed()`` and
    ``set_options()`` apply at the next ``reset()``; the first reset
    without seeds uses ``seed`` (0 unless given, so runs repeat), later
    ones leave the envs' generators running. The reset
    infos of autoresets are not kept (``reset_infos`` holds ``{}`` for
    them): the pufferrs backends drop them."""

    def __init__(
        self, env_fns: Sequence[Callable[[], gym.Env]], backend: str | type = "multiprocessing", **kwargs: Any
    ):
        creators = list(env_fns)
        self.vector_env = make_backend("SB3VecEnv", creators, backend, kwargs)
        self.layout = self.vector_env.layout
        self._observations = _SB3Observations(self.layout)
        self._rows: np.ndarray | None = None  # the backend's observation rows, once reset
        self.closed = False
        super().__init__(len(creators), self._observations.space, self.vector_env.single_action_space)

    def reset(self) -> VecEnvObs:
        seeds, options = self._seeds, self._options
        if not any(options) and (all(s is None for s in seeds) or _consecutive(seeds)):
            self._rows, infos = self.vector_env.reset(seeds[0])
            self.reset_infos = infos
        else:
            if self._rows is None:
                self._rows, _ = self.vector_env.reset()
            results = self.vector_env.call_envs(_reset_env, list(zip(seeds, options)))
            for i, (obs, _) in enumerate(results):
                self.layout.flatten_into(obs, self._rows, i)
            self.reset_infos = [info for _, info in results]
        self._reset_seeds()
        self._reset_options()
        return self._observations(self._rows)

    def step_async(self, actions: np.ndarray) -> None:
        self.vector_env.send(actions)

    def step_wait(self) -> VecEnvStepReturn:
        rows, rewards, terminals, truncations, infos, _, _ = self.vector_env.recv()
        dones = terminals | truncations
        for i in dones.nonzero()[0].tolist():
            # The env's own info, without the backends' episode statistics.
            info = infos[i]
            infos[i] = {**info["final_info"], "terminal_observation": self._observations(info["final_obs"])}
            self.reset_infos[i] = {}
        for info, truncated, terminated in zip(infos, truncations.tolist(), terminals.tolist()):
            info["TimeLimit.truncated"] = truncated and not terminated
        return self._observations(rows), rewards.copy(), dones, infos

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.vector_env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._on(_get_attr, attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._on(_set_attr, (attr_name, value), indices)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any):
        return self._on(_env_method, (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._on(_is_wrapped, wrapper_class, indices)

    def _on(self, function: Callable[[gym.Env, Any], Any], arg: Any, indices: VecEnvIndices) -> list[Any]:
        """``function(env, arg)`` on the envs of ``indices``, in their order."""
        chosen = list(self._get_indices(indices))
        args = [None] * self.num_envs
        for i in chosen:
            args[i] = arg
        results = self.vector_env.call_envs(function, args)
        return [results[i] for i in chosen]


def _consecutive(seeds: list[int | None]) -> bool:
    """Seeds ``s, s + 1, ...``: what ``VecEnv.seed(s)`` sets, and what the
    backends' own ``reset(s)`` does."""
    return seeds[0] is not None and all(s == seeds[0] + i for i, s in enumerate(seeds))
