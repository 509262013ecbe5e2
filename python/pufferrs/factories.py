"""A run's vector env and policy, built from its :class:`~pufferrs.config.Config`,
and how the trainer calls the policy (compiled or eager)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from torch import nn

import pufferrs.envs  # noqa: F401 - registers the built-in envs with gymnasium
from pufferrs import vector
from pufferrs.config import Config
from pufferrs.errors import ConfigError
from pufferrs.models import Default, LSTMWrapper
from pufferrs.normalize import NormalizedPolicy

__all__ = ["CompiledOrEager", "EnvCreator", "check_env", "is_recurrent", "make_policy", "make_vecenv"]


class EnvCreator:
    """``gymnasium.make(env_id, **env_kwargs)`` as a picklable callable, so
    that worker processes started with spawn or forkserver can make the env.
    Unpickling it there imports this module, which registers the built-in
    envs."""

    def __init__(self, env_id: str, env_kwargs: dict | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})

    def __call__(self, *args: Any, **kwargs: Any) -> gym.Env:
        return gym.make(self.env_id, *args, **{**self.env_kwargs, **kwargs})


def check_env(env_id: str, env_kwargs: dict | None = None) -> None:
    """Raises :class:`ConfigError` when ``env_id`` is not a registered env
    that ``gymnasium.make`` can build with ``env_kwargs``."""
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ConfigError(f"unknown env {env_id!r}: {exc}") from None
    try:
        EnvCreator(env_id, env_kwargs)().close()
    except Exception as exc:  # noqa: BLE001 - any failure to build is the user's env or arguments
        call = f"gymnasium.make({env_id!r}, **{env_kwargs or {}})"
        raise ConfigError(f"{call} failed: {type(exc).__name__}: {exc}") from None


def make_vecenv(
    config: Config,
    num_envs: int | None = None,
    backend: str | None = None,
    env_batch_size: int | None = None,
    seed: int | None = None,
) -> Any:
    """The run's vector env (arguments override the config's)."""
    num_envs = config.num_envs if num_envs is None else num_envs
    backend = config.backend if backend is None else backend
    try:
        return vector.make(
            EnvCreator(config.env, config.env_kwargs),
            num_envs=num_envs,
            backend=backend,
            num_workers=config.num_workers if backend == "multiprocessing" else None,
            batch_size=env_batch_size,
            seed=config.seed if seed is None else seed,
        )
    except ValueError as exc:  # sizes that do not divide, bad spaces
        raise ConfigError(str(exc)) from exc


def make_policy(env: Any, config: Config) -> nn.Module:
    """:class:`~pufferrs.models.Default` for any observation space, inside
    an :class:`~pufferrs.models.LSTMWrapper` when ``config.lstm``, inside a
    :class:`~pufferrs.normalize.NormalizedPolicy` when
    ``config.normalize_observations``."""
    try:
        policy: nn.Module = Default(env, hidden_size=config.hidden_size)
        if config.lstm:
            policy = LSTMWrapper(env, policy, input_size=config.hidden_size, hidden_size=config.hidden_size)
        if config.normalize_observations:
            policy = NormalizedPolicy(env, policy, clip=config.obs_clip)
    except TypeError as exc:  # e.g. a Dict action space, or byte rows to normalise
        raise ConfigError(str(exc)) from exc
    return policy


def is_recurrent(policy: nn.Module) -> bool:
    """Whether ``policy`` speaks LSTMWrapper's protocol (a state dict with
    ``lstm_h``/``lstm_c``, ``(B, T)`` sequences in ``forward``), directly or
    through a wrapper that passes attributes on (``NormalizedPolicy``)."""
    return isinstance(policy, LSTMWrapper) or hasattr(policy, "lstm")


class CompiledOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` with a warning when
    compiling fails on the first call (no compiler, unsupported Python).
    Errors after a successful first call are the model's and propagate."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn)
        self.worked = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.fn(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:
            if self.worked:
                raise
            warnings.warn(
                f"torch.compile failed, running eagerly: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2
            )
            self.compiled = None
            return self.fn(*args, **kwargs)
        self.worked = True
        return out
