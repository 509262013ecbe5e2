"""A ``gymnasium.vector.VectorEnv`` over the pufferrs backends.

It changes one line of a gymnasium (or CleanRL-style) script::

    envs = gym.vector.AsyncVectorEnv([make_env(i) for i in range(8)])
    envs = pufferrs.compat.GymnasiumVectorEnv([make_env(i) for i in range(8)])

and keeps gymnasium's vector API: observations in the env's own nested
structure, ``infos`` as a dict of arrays with ``_key`` masks, the three
autoreset modes, ``call``/``get_attr``/``set_attr``/``render``, and
gymnasium's vector wrappers on top.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from pufferrs.compat.backend import make_backend
from pufferrs.compat.observations import Observations
from pufferrs.errors import PufferError
from pufferrs.vector.arguments import checked_seed

__all__ = ["GymnasiumVectorEnv"]


class _Autoreset(gym.Wrapper):
    """Turns the backends' same-step autoreset into ``NEXT_STEP`` or
    ``DISABLED``, in the worker, around each env.

    The backends call ``reset()`` right after a step that ends an episode
    and write what it returns into the env's row. Here that reset returns
    the episode's last observation instead, so the row shows it, as
    gymnasium does in both modes. ``NEXT_STEP`` resets the env then and
    hands the result out as the next step's, ignoring that step's action
    (reward 0, no flags, the reset's info); ``DISABLED`` leaves the env as
    it is until the user resets it."""

    def __init__(self, env: gym.Env, mode: str) -> None:
        super().__init__(env)
        self._next_step = mode == AutoresetMode.NEXT_STEP.value
        self._last: tuple[Any, dict] | None = None  # the ended episode's last step
        self._reset: tuple[Any, dict] | None = None  # NEXT_STEP: the reset to hand out

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        if self._reset is not None:
            (obs, info), self._reset = self._reset, None
            return obs, 0.0, False, False, info
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last = (obs, info) if terminated or truncated else None
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        last, self._last, self._reset = self._last, None, None
        if last is None:  # a reset the user asked for
            return self.env.reset(seed=seed, options=options)
        if self._next_step:
            self._reset = self.env.reset(seed=seed, options=options)
        return last


def _with_autoreset(mode: str, creator: Callable[[], gym.Env]) -> gym.Env:
    env = creator()
    # Anything else (a PettingZoo env) is refused by the adapter below.
    return _Autoreset(env, mode) if isinstance(env, gym.Env) else env


def _reset_env(env: gym.Env, arg: tuple[int | None, dict | None] | None) -> tuple[Any, dict] | None:
    return None if arg is None else env.reset(seed=arg[0], options=arg[1])


def _call(env: gym.Env, arg: tuple[str, tuple, dict]) -> Any:
    name, args, kwargs = arg
    attr = env.get_wrapper_attr(name)
    return attr(*args, **kwargs) if callable(attr) else attr


def _set_attr(env: gym.Env, arg: tuple[str, Any]) -> None:
    env.set_wrapper_attr(*arg)


class GymnasiumVectorEnv(gym.vector.VectorEnv):
    """``env_fns`` (one creator per env, as for ``AsyncVectorEnv``) run by a
    pufferrs backend, behind gymnasium's ``VectorEnv`` API.

    - ``backend``: ``"multiprocessing"`` (default), ``"serial"``, or any
      other ``pufferrs.vector.make`` backend; other keyword arguments
      (``num_workers``, ``timeout``, ``check_bounds``, ...) go to ``make``.
      Every step steps every env (``batch_size == num_envs``).
    - ``copy``: as in gymnasium, observations are copies by default.
      ``copy=False`` returns views of the shared rows instead (no copy at
      all), which the next ``step`` or ``reset`` overwrites.
    - ``autoreset_mode``: gymnasium's, ``NEXT_STEP`` by default as in
      gymnasium. ``SAME_STEP`` is the backends' own mode: ``infos`` then
      holds ``final_obs`` and ``final_info`` for the envs that ended, and
      (unlike gymnasium) not the info of the reset that followed, which
      the backends drop. ``DISABLED`` needs
      ``reset(options={"reset_mask": ...})`` for the envs that ended before
      they are stepped again.

    ``reset(seed=int)`` resets env ``i`` with ``seed + i``; the first reset
    without a seed uses ``seed`` (0 unless given), so runs repeat by
    default; later resets without one leave the envs' generators running.
    A list of seeds, ``options`` or a ``reset_mask`` reset through
    ``call``'s channel, a little slower. Rewards come back as float64 (the
    rows hold float32).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        backend: str | type = "multiprocessing",
        copy: bool = True,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        creators = list(env_fns)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode != AutoresetMode.SAME_STEP:
            creators = [functools.partial(_with_autoreset, self.autoreset_mode.value, c) for c in creators]
        self.vector_env = make_backend("GymnasiumVectorEnv", creators, backend, kwargs)
        self.num_envs = self.vector_env.num_envs
        self.layout = self.vector_env.layout
        self.single_observation_space = self.layout.space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = self.vector_env.single_action_space
        self.action_space = self.vector_env.action_space
        self.metadata = {**self.vector_env.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = self.vector_env.render_mode
        self.copy = copy
        self._observations = Observations(self.layout, copy)
        self._rows: np.ndarray | None = None  # the backend's observation rows, once reset
        self._needs_reset = np.zeros(self.num_envs, bool)  # DISABLED: envs that ended

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self._check_open()
        options = dict(options) if options else {}
        mask = options.pop("reset_mask", None)
        if mask is None and not options and (seed is None or isinstance(seed, (int, np.integer))):
            rows, infos = self.vector_env.reset(seed)
            self._rows = rows
            self._needs_reset[:] = False
            return self._observations.batch(rows), self._infos(infos)
        seeds = self._seeds(seed)
        mask = np.ones(self.num_envs, bool) if mask is None else _checked_mask(mask, self.num_envs)
        if self._rows is None:
            self._rows, _ = self.vector_env.reset()
        args = [(s, options or None) if m else None for s, m in zip(seeds, mask.tolist())]
        infos: dict[str, Any] = {}
        rows = self._rows
        for i, result in enumerate(self.vector_env.call_envs(_reset_env, args)):
            if result is not None:
                obs, info = result
                self.layout.flatten_into(obs, rows, i)
                infos = self._add_info(infos, info, i)
        self._needs_reset[mask] = False
        return self._observations.batch(rows), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._check_open()
        if self.autoreset_mode == AutoresetMode.DISABLED and self._needs_reset.any():
            ended = np.flatnonzero(self._needs_reset).tolist()
            raise PufferError(
                f"autoreset is DISABLED and envs {ended} ended: reset them with "
                "reset(options={'reset_mask': mask}) before stepping them again"
            )
        rows, rewards, terminals, truncations, infos = self.vector_env.step(actions)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            np.logical_or(terminals, truncations, out=self._needs_reset)
        return (
            self._observations.batch(rows),
            rewards.astype(np.float64),
            terminals.copy(),
            truncations.copy(),
            self._infos(infos),
        )

    def render(self) -> tuple[Any, ...] | None:
        return self.call("render")

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Calls ``name`` on every env (or reads it, when not callable), in
        the process that holds it; the results must pickle."""
        self._check_open()
        return tuple(self.vector_env.call_envs(_call, [(name, args, kwargs)] * self.num_envs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        self._check_open()
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        self.vector_env.call_envs(_set_attr, [(name, value) for value in values])

    def close_extras(self, **kwargs: Any) -> None:
        if hasattr(self, "vector_env"):
            self.vector_env.close()

    def __enter__(self) -> GymnasiumVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers --

    def _check_open(self) -> None:
        if self.closed:
            raise PufferError("this GymnasiumVectorEnv is closed")

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            seed = checked_seed(seed)
            return [seed + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"If seeds are passed as a list the length must match num_envs={self.num_envs} "
                f"but got length={len(seeds)}."
            )
        # Checked here, as the vector envs check theirs, not by each env.
        return [checked_seed(s, f"seed[{i}]") for i, s in enumerate(seeds)]

    def _infos(self, infos: list[dict]) -> dict[str, Any]:
        """gymnasium's dict of arrays from the backends' list of dicts."""
        out: dict[str, Any] = {}
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        for i, info in enumerate(infos):
            if not info:
                continue
            if "final_obs" in info:
                if same_step:
                    final = {
                        "final_obs": self._observations.single(info["final_obs"]),
                        "final_info": info["final_info"],
                    }
                    out = self._add_info(out, final, i)
                    continue
                info = info["final_info"]  # without the backends' episode statistics
            if info:
                out = self._add_info(out, info, i)
        return out


def _checked_mask(mask: Any, num_envs: int) -> np.ndarray:
    """gymnasium's checks of ``options["reset_mask"]``, with its messages."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError(
            f"`options['reset_mask']` must contain a boolean array with at least one True value, got reset_mask={mask}"
        )
    return mask
