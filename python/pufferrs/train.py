"""PPO on pufferrs vector envs, in one file that reads top to bottom.

The loop, per update (``batch_size`` env steps)::

    rollout:  vecenv.recv() -> rows to the device -> policy.forward_eval
              (LSTM state kept per env id, zeroed where an episode starts)
              -> sample_logits -> vecenv.send(), storing every step into
              the experience buffer, until each env has stored ``horizon``
              steps (``horizon = batch_size / num_envs``)
    learn:    GAE over each env's steps, then ``update_epochs`` passes of
              minibatches of ``bptt_horizon``-step segments: clipped policy
              and value losses, entropy bonus, Adam with gradient clipping

Use it from Python::

    from pufferrs.train import Config, Trainer
    config = Config.for_env("CartPole-v1", total_steps=100_000)  # preset + overrides
    with Trainer(config) as trainer:
        summary = trainer.train()

or from the shell: ``pufferrs train CartPole-v1`` (see ``pufferrs train --help``).

Choices worth knowing:

- **Experience** lives on the training device: ``(num_envs, horizon)``
  steps of flat observation rows (packed as the vector env returns them;
  the policy unflattens them in its ``forward``), actions, log-probs,
  values, rewards, terminals, truncations, episode starts, and the LSTM
  state at the start of each ``bptt_horizon`` segment. Training unrolls
  every segment from the state it had in the rollout, not from zeros.
- **Asynchronous rollouts** (``env_batch_size < num_envs``): each ``recv``
  returns the envs that are ready; an env that has stored its ``horizon``
  steps keeps being stepped (``send`` must answer every ``recv``) without
  storing, until the others catch up. Its LSTM state keeps following it, so
  its next stored step starts from the right state. In synchronous mode no
  step is wasted: the batch that completes the rollout is held (received,
  not yet answered) across the update and acted on by the new policy.
- **Truncation** (a time limit) bootstraps from the value estimate. The
  vector env resets an env in the step that ends its episode, so the
  episode's final observation is gone; the value of the last observation
  the policy saw stands in for it: the target is ``r + gamma * V(s_t)``.
- **Episode statistics**: every numeric entry of an ended episode's info
  (``episode_return``, ``episode_length``, and e.g. ``success``) is
  averaged per update under ``env/<key>``.
- **Checkpoints** are ``{"state_dict", "config", "update", "global_step",
  "optimizer"}`` dicts saved with :func:`torch.save`; they load with
  ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn

import pufferrs.envs  # noqa: F401 - registers the built-in envs with gymnasium
from pufferrs import vector
from pufferrs.errors import PufferError
from pufferrs.models import Default, LSTMWrapper
from pufferrs.normalize import NormalizedPolicy
from pufferrs.pytorch import Logits, sample_logits

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "EnvCreator",
    "Trainer",
    "evaluate",
    "greedy_action",
    "load_checkpoint",
    "make_policy",
    "plot_metrics",
]


class ConfigError(ValueError):
    """A configuration that cannot run: the message says which setting and why."""


# ---------------------------------------------------------------------------
# Configuration


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its command-line help."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class Config:
    """Everything a run depends on. Every field is a ``pufferrs train``
    option (``num_envs`` is ``--num-envs``); :meth:`for_env` starts from the
    env's preset in :data:`PRESETS`."""

    env: str = _option("pufferrs/Memory-v0", "gymnasium env id")
    env_kwargs: dict = _option({}, "keyword arguments for gymnasium.make, as JSON", type="json")

    backend: str = _option("serial", "vector env backend: serial or multiprocessing")
    num_envs: int = _option(16, "envs stepped in parallel")
    num_workers: int | None = _option(
        None, "worker processes (multiprocessing; default: the most that divide num_envs, up to one per core)", type=int
    )
    env_batch_size: int | None = _option(
        None, "envs per recv (default: num_envs); fewer makes rollouts asynchronous", type=int
    )

    lstm: bool = _option(False, "an LSTM between the encoder and the action/value heads")
    hidden_size: int = _option(64, "width of the encoder (and of the LSTM)")
    normalize_observations: bool = _option(
        False, "normalise float observations by their running mean and variance (pufferrs.normalize)"
    )
    obs_clip: float = _option(10.0, "clip normalised observations to [-obs_clip, obs_clip]")
    compile: bool = _option(False, "torch.compile the policy (eager, with a warning, where compiling fails)")

    total_steps: int = _option(200_000, "env steps to train for")
    batch_size: int = _option(2048, "env steps per update (num_envs * horizon)")
    minibatch_size: int = _option(512, "steps per gradient step")
    bptt_horizon: int = _option(16, "steps per training segment, the LSTM's backprop-through-time length")
    update_epochs: int = _option(4, "passes over the batch per update")
    learning_rate: float = _option(2.5e-4, "Adam learning rate")
    anneal_lr: bool = _option(True, "decay the learning rate linearly to 0")
    gamma: float = _option(0.99, "discount factor")
    gae_lambda: float = _option(0.95, "GAE lambda")
    clip_coef: float = _option(0.2, "PPO policy ratio clip")
    vf_clip_coef: float = _option(0.2, "clip values to this distance from the rollout's (0: no value clipping)")
    vf_coef: float = _option(0.5, "value loss coefficient")
    ent_coef: float = _option(0.01, "entropy bonus coefficient")
    max_grad_norm: float = _option(0.5, "gradient norm clip")
    norm_adv: bool = _option(True, "normalise advantages per minibatch")

    seed: int = _option(0, "seeds Python, numpy, torch and the envs (env i gets seed + i)")
    device: str = _option("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    torch_threads: int = _option(
        1, "torch CPU threads: small policies run fastest on one, and the cores stay free for envs (0: torch's default)"
    )
    torch_deterministic: bool = _option(True, "deterministic cuDNN kernels")
    checkpoint_interval: int = _option(50, "save a checkpoint every N updates (0: only at the end)")
    run_dir: str | None = _option(
        None, "where checkpoints, metrics and plots go (no files when None; the CLI's default: runs/NAME)", type=str
    )

    @classmethod
    def for_env(cls, env: str | None = None, **overrides: Any) -> Config:
        """The defaults, then ``PRESETS[env]``, then ``overrides``."""
        env = env or cls.env
        values = {**PRESETS.get(env, {}), **overrides, "env": env}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**values)

    @property
    def horizon(self) -> int:
        """Steps each env stores per update."""
        return self.batch_size // self.num_envs

    @property
    def num_updates(self) -> int:
        return max(1, math.ceil(self.total_steps / self.batch_size))

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the first setting that cannot work."""
        positive = (
            "num_envs",
            "total_steps",
            "batch_size",
            "minibatch_size",
            "bptt_horizon",
            "update_epochs",
            "hidden_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.torch_threads, int) or self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be a non-negative integer, got {self.torch_threads!r}")
        for name in ("num_workers", "env_batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.backend not in ("serial", "multiprocessing"):
            raise ConfigError(f"backend must be 'serial' or 'multiprocessing', got {self.backend!r}")
        if self.batch_size % self.num_envs:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of num_envs ({self.num_envs})")
        if self.lstm and self.horizon % self.bptt_horizon:
            raise ConfigError(
                f"batch_size / num_envs ({self.horizon} steps per env) must be a multiple of "
                f"bptt_horizon ({self.bptt_horizon})"
            )
        if self.batch_size % self.minibatch_size:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must divide batch_size ({self.batch_size})")
        if self.lstm and self.minibatch_size % self.bptt_horizon:
            raise ConfigError(
                f"minibatch_size ({self.minibatch_size}) must be a multiple of bptt_horizon ({self.bptt_horizon})"
            )
        if self.total_steps < self.batch_size:
            raise ConfigError(f"total_steps ({self.total_steps}) is less than one batch ({self.batch_size})")
        for name in ("learning_rate", "clip_coef"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("vf_clip_coef", "vf_coef", "ent_coef", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.checkpoint_interval < 0:
            raise ConfigError(f"checkpoint_interval must be non-negative, got {self.checkpoint_interval}")
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        resolve_device(self.device)


#: Per-env settings that :meth:`Config.for_env` (and ``pufferrs train ENV``)
#: starts from, tuned on a 2-core CPU. Command-line options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Solved (return 500 of 500, greedy and sampled) in 100k steps for
    # seeds 0-5. The policy's one hidden layer is shared by the action and
    # value heads: a lighter value loss (and returns kept short by gamma)
    # stop the value gradients from drowning the policy's. Returns in the
    # tens would take hundreds of updates to reach through a 0.2 value clip.
    "CartPole-v1": dict(
        num_envs=8,
        total_steps=100_000,
        batch_size=1024,
        minibatch_size=256,
        update_epochs=8,
        learning_rate=2e-3,
        gamma=0.98,
        vf_coef=0.25,
        vf_clip_coef=0.0,
        ent_coef=0.0,
        hidden_size=128,
    ),
    # The cue must survive 5 blank steps: only the LSTM solves it, in
    # about 40k steps.
    "pufferrs/Memory-v0": dict(
        lstm=True,
        num_envs=16,
        total_steps=100_000,
        batch_size=2048,
        minibatch_size=512,
        bptt_horizon=16,
        learning_rate=1e-3,
        ent_coef=0.01,
        hidden_size=64,
    ),
    # Every step is an independent question: no future reward to discount.
    # Reaches a score of 0.95 in about 60k steps.
    "pufferrs/Nested-v0": dict(
        num_envs=16,
        total_steps=120_000,
        batch_size=2048,
        minibatch_size=512,
        update_epochs=8,
        learning_rate=3e-3,
        gamma=0.0,
        gae_lambda=0.0,
        ent_coef=0.01,
        hidden_size=128,
    ),
}


def resolve_device(device: str) -> torch.device:
    """``auto`` to cuda when available, else cpu; refuses devices that do not exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but torch sees no CUDA device (use cpu or auto)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return resolved


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


# ---------------------------------------------------------------------------
# Envs and policies


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


class ActionAdapter:
    """Actions from :func:`sample_logits` (indices from 0, flat heads,
    unsquashed floats) as the env's action space expects them."""

    def __init__(self, space: gs.Space):
        self.space = space
        if isinstance(space, gs.Discrete):
            self.dtype, self.shape = torch.int64, ()
            self.offset = None if int(space.start) == 0 else int(space.start)
        elif isinstance(space, gs.MultiDiscrete):
            self.dtype, self.shape = torch.int64, (int(np.prod(space.shape)),)
            self.offset = None if not np.any(space.start) else np.asarray(space.start, np.int64)
        elif isinstance(space, gs.MultiBinary):
            self.dtype, self.shape, self.offset = torch.int64, (int(np.prod(space.shape)),), None
        elif isinstance(space, gs.Box):
            self.dtype, self.shape, self.offset = torch.float32, tuple(space.shape), None
        else:
            raise ConfigError(f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary or Box")

    def __call__(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.cpu().numpy()
        space = self.space
        if isinstance(space, (gs.MultiDiscrete, gs.MultiBinary)):
            a = a.reshape(len(a), *space.shape)
        if self.offset is not None:
            a = a + self.offset
        if isinstance(space, gs.Box):
            # The policy's Normal is unbounded; the env's Box is not.
            a = np.clip(a, space.low, space.high).astype(space.dtype, copy=False)
        return a


def greedy_action(logits: Logits) -> torch.Tensor:
    """The most likely action: argmax per head, or a Normal's mean."""
    if isinstance(logits, torch.distributions.Normal):
        return logits.loc
    if isinstance(logits, (tuple, list)):
        return torch.stack([head.argmax(dim=-1) for head in logits], dim=-1)
    return logits.argmax(dim=-1)


# ---------------------------------------------------------------------------
# Experience


class Experience:
    """One update's steps on the training device: ``num_envs`` rows of
    ``horizon`` steps, viewed as segments of ``bptt_horizon`` for training.

    Rewards, terminals, truncations and episode starts arrive with every
    ``recv`` on the host, where the rollout needs them anyway; they are kept
    there and copied to the device once per update (``to_device``)."""

    def __init__(
        self,
        num_envs: int,
        horizon: int,
        bptt_horizon: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        actions: ActionAdapter,
        lstm_size: int | None,
        device: torch.device,
    ):
        n, t = num_envs, horizon
        self.num_envs, self.horizon, self.bptt_horizon = n, t, bptt_horizon
        self.obs = torch.zeros(n, t, *obs_shape, dtype=obs_dtype, device=device)
        self.actions = torch.zeros(n, t, *actions.shape, dtype=actions.dtype, device=device)
        self.logprobs = torch.zeros(n, t, device=device)
        self.values = torch.zeros(n, t, device=device)
        #: V(observation after each env's last stored step), for GAE.
        self.bootstrap = torch.zeros(n, device=device)
        self.host_rewards = np.zeros((n, t), np.float32)
        self.host_terminals = np.zeros((n, t), bool)
        self.host_truncations = np.zeros((n, t), bool)
        #: True where the observation is the first of an episode. Kept on
        #: the CPU for training too: LSTMWrapper.forward reads it on the host.
        self.episode_starts = torch.zeros(n, t, dtype=torch.bool)
        self.host_starts = self.episode_starts.numpy()
        if lstm_size is not None:
            # The LSTM state going into each segment's first step (zero when
            # that step starts an episode).
            self.lstm_h = torch.zeros(n, t // bptt_horizon, lstm_size, device=device)
            self.lstm_c = torch.zeros(n, t // bptt_horizon, lstm_size, device=device)
        self.rewards = torch.zeros(n, t, device=device)
        self.terminals = torch.zeros(n, t, dtype=torch.bool, device=device)
        self.truncations = torch.zeros(n, t, dtype=torch.bool, device=device)

    def to_device(self) -> None:
        """Copies the host-side rewards, terminals and truncations over."""
        for name in ("rewards", "terminals", "truncations"):
            getattr(self, name).copy_(torch.from_numpy(getattr(self, "host_" + name)))


def compute_advantages(
    values: torch.Tensor,
    bootstrap: torch.Tensor,
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """GAE(gamma, lambda) over ``(num_envs, horizon)`` steps.

    ``bootstrap`` is the value of the observation after each env's last
    step. A terminal step has no future; a truncated step's future is
    estimated by its own observation's value (the final observation was
    replaced by the next episode's first in the same step). Neither
    carries advantage across the episode boundary.
    """
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(bootstrap)
    next_values = bootstrap
    for t in reversed(range(values.shape[1])):
        terminal = terminals[:, t]
        truncated = truncations[:, t] & ~terminal
        future = torch.where(truncated, values[:, t], next_values) * (~terminal)
        delta = rewards[:, t] + gamma * future - values[:, t]
        last = delta + gamma * gae_lambda * (~(terminal | truncated)) * last
        advantages[:, t] = last
        next_values = values[:, t]
    return advantages


class _Batch:
    """What one ``recv`` returned, ready to act on: env ids and their
    observations (on the device) and episode-start flags (host and device)."""

    __slots__ = ("env_ids", "obs", "starts", "starts_device")

    def __init__(self, env_ids: np.ndarray, obs: torch.Tensor, starts: np.ndarray, starts_device: torch.Tensor):
        self.env_ids, self.obs, self.starts, self.starts_device = env_ids, obs, starts, starts_device


def _rows(env_ids: np.ndarray, steps: np.ndarray, device: torch.device) -> tuple[Any, Any]:
    """An index into ``(num_envs, horizon, ...)`` storage for ``(env_ids[k],
    steps[k])``: plain slices when the envs are consecutive and at the same
    step (synchronous rollouts), index tensors otherwise."""
    if len(steps) and (steps == steps[0]).all():
        index = _env_index(env_ids, device)
        if isinstance(index, slice):
            return index, int(steps[0])
    return torch.from_numpy(env_ids).to(device), torch.from_numpy(steps).to(device)


def _numbers(info: dict) -> dict[str, float]:
    """The numeric entries of an episode's info: what gets averaged."""
    return {
        k: float(v)
        for k, v in info.items()
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    }


def _env_index(env_ids: np.ndarray, device: torch.device) -> slice | torch.Tensor:
    """An index into per-env storage: a slice for consecutive env ids."""
    n = len(env_ids)
    if n and env_ids[-1] - env_ids[0] == n - 1 and (np.diff(env_ids) == 1).all():
        return slice(int(env_ids[0]), int(env_ids[0]) + n)
    return torch.from_numpy(env_ids).to(device)


# ---------------------------------------------------------------------------
# The trainer


class Trainer:
    """PPO on a pufferrs vector env; see the module docstring.

    ``vecenv`` and ``policy`` default to :func:`make_vecenv` and
    :func:`make_policy` of ``config``. With ``config.run_dir`` set, the
    trainer writes ``config.json``, ``metrics.jsonl`` (one row per update),
    checkpoints (``checkpoints/update_NNNNNN.pt`` every
    ``checkpoint_interval`` updates, ``model.pt`` at the end) and
    ``learning_curve.png`` there.
    """

    def __init__(self, config: Config, vecenv: Any = None, policy: nn.Module | None = None):
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        if config.torch_threads:
            # Several threads on tiny matrices mostly wait for each other,
            # and far worse when the cores are busy with envs.
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed, config.torch_deterministic)
        if vecenv is None:
            check_env(config.env, config.env_kwargs)
            vecenv = make_vecenv(config, env_batch_size=config.env_batch_size)
        self.vecenv = vecenv
        try:
            if vecenv.num_envs != config.num_envs:
                raise ConfigError(f"the vector env has {vecenv.num_envs} envs, the config {config.num_envs}")
            self.actions = ActionAdapter(vecenv.single_action_space)
            self.policy = (policy if policy is not None else make_policy(vecenv, config)).to(self.device)
            self.recurrent = is_recurrent(self.policy)
            if self.recurrent != config.lstm:
                raise ConfigError(f"config.lstm is {config.lstm}, but the policy is a {type(self.policy).__name__}")
            # With the option on, the trainer merges each rollout into the
            # policy's statistics; a NormalizedPolicy passed in with it off
            # is the caller's to update.
            self.normalizer = getattr(self.policy, "normalizer", None) if config.normalize_observations else None
            if config.normalize_observations and self.normalizer is None:
                raise ConfigError("normalize_observations needs a policy with a normalizer (pufferrs.normalize)")
        except BaseException:
            vecenv.close()
            raise
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate, eps=1e-5)
        # The calls the loop makes; compiled separately, since compiling the
        # module compiles only its `forward`. The module itself stays plain
        # for the optimizer, state_dict and checkpoints.
        self.forward_eval = self.policy.forward_eval
        self.forward = self.policy.forward
        if config.compile:
            self.forward_eval = CompiledOrEager(self.policy.forward_eval)
            self.forward = CompiledOrEager(self.policy.forward)

        n = config.num_envs
        obs_space = vecenv.single_observation_space
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.from_numpy(np.zeros(0, obs_space.dtype)).dtype
        lstm_size = self.policy.hidden_size if self.recurrent else None
        self.experience = Experience(
            n, config.horizon, config.bptt_horizon, self.obs_shape, self.obs_dtype, self.actions, lstm_size, self.device
        )
        if self.recurrent:
            # The LSTM state of every env, between its steps.
            self.lstm_h = torch.zeros(n, lstm_size, device=self.device)
            self.lstm_c = torch.zeros(n, lstm_size, device=self.device)
        # Rows go to a GPU from page-locked memory, so the copy is
        # asynchronous. The vector env can page-lock its shared rows in
        # place (no staging copy); other arrays go through a pinned staging
        # buffer. Either is safe to overwrite at the next recv: the actions
        # read back to the host before the next send wait for the copy.
        self.pinned = self.device.type == "cuda"
        self._rows_pinned = False
        if self.pinned and hasattr(vecenv, "pin_memory"):
            try:
                vecenv.pin_memory()
                self._rows_pinned = True
            except PufferError:
                pass  # e.g. registration refused: staging copies still work
        self._staging: dict[tuple, torch.Tensor] = {}

        # Rollout bookkeeping, per env id (host side).
        self.stored = np.zeros(n, np.int64)  # steps stored this rollout
        self.pending = np.full(n, -1, np.int64)  # stored step whose outcome is awaited, or -1
        self.complete = np.zeros(n, bool)  # stored `horizon` steps and the bootstrap value
        self.new_episode = np.ones(n, bool)  # the next observation starts an episode (set by a reset)
        self.held: _Batch | None = None  # a received batch not yet acted on
        self.episode_infos: dict[str, list[float]] = defaultdict(list)

        self.update = 0
        self.global_step = 0
        self.timers = dict.fromkeys(("env", "inference", "learn"), 0.0)
        self.metrics: list[dict[str, Any]] = []
        self.run_dir = Path(config.run_dir) if config.run_dir else None
        self._started = False

    # -- rollout ------------------------------------------------------------

    def _to_device(self, array: np.ndarray, rows: bool = False) -> torch.Tensor:
        """``array`` on the training device; on the CPU, the same memory."""
        tensor = torch.from_numpy(array)
        if not self.pinned:
            return tensor.to(self.device)
        if not (rows and self._rows_pinned):
            key = (tensor.dtype, tuple(tensor.shape))
            staging = self._staging.get(key)
            if staging is None:
                staging = self._staging[key] = torch.empty_like(tensor).pin_memory()
            tensor = staging.copy_(tensor)
        return tensor.to(self.device, non_blocking=True)

    def _receive(self) -> _Batch:
        """The next batch from the vector env; records the outcomes (reward,
        terminal, truncation) of the steps its envs were taking."""
        start = time.perf_counter()
        obs, rewards, terminals, truncations, infos, env_ids, _ = self.vecenv.recv()
        self.timers["env"] += time.perf_counter() - start
        env_ids = np.asarray(env_ids, np.int64)
        ended = terminals | truncations

        pending = self.pending[env_ids]
        has = pending >= 0
        if has.all():
            ids, steps = env_ids, pending
        else:
            ids, steps, rewards, terminals, truncations = (
                env_ids[has],
                pending[has],
                rewards[has],
                terminals[has],
                truncations[has],
            )
        exp = self.experience
        exp.host_rewards[ids, steps] = rewards
        exp.host_terminals[ids, steps] = terminals
        exp.host_truncations[ids, steps] = truncations
        self.pending[env_ids] = -1

        for k in np.flatnonzero(ended).tolist():
            for key, value in _numbers(infos[k]).items():
                self.episode_infos[key].append(value)

        starts = ended | self.new_episode[env_ids]
        self.new_episode[env_ids] = False
        # `obs` is a view that the next recv overwrites; the copy to the
        # device (or the clone a held CPU batch gets) keeps it.
        return _Batch(env_ids, self._to_device(obs, rows=True), starts, self._to_device(starts))

    def _act(self, batch: _Batch) -> bool:
        """Runs the policy on ``batch``, stores the steps of envs still
        filling their rows, and sends the actions. Returns True, without
        sending, when this batch completes the rollout: it is then held
        and acted on by the next rollout's (updated) policy."""
        start = time.perf_counter()
        exp, env_ids = self.experience, batch.env_ids
        steps = self.stored[env_ids]
        store = steps < exp.horizon
        finishing = ~store & ~self.complete[env_ids]

        state: dict[str, Any] | None = None
        if self.recurrent:
            index = _env_index(env_ids, self.device)
            h_in, c_in = self.lstm_h[index], self.lstm_c[index]
            state = {"lstm_h": h_in, "lstm_c": c_in, "episode_start": batch.starts_device}
        logits, values = self.forward_eval(batch.obs, state)

        if finishing.any():
            # The observation after the env's last stored step: its value
            # bootstraps GAE, computed by the policy that chose the steps.
            chosen = np.flatnonzero(finishing)
            exp.bootstrap[torch.from_numpy(env_ids[chosen]).to(self.device)] = values[
                torch.from_numpy(chosen).to(self.device)
            ].float()
            self.complete[env_ids[chosen]] = True
            if self.complete.all():
                if not self.pinned:
                    batch.obs = batch.obs.clone()
                self.held = batch
                self.timers["inference"] += time.perf_counter() - start
                return True

        actions, logprobs, _ = sample_logits(logits)
        if self.recurrent:
            at_segment = store & (steps % exp.bptt_horizon == 0)
            if at_segment.any():
                # The state this segment starts from, as its first step saw
                # it: zero when that step starts an episode.
                sel = np.flatnonzero(at_segment)
                sel_t = torch.from_numpy(sel).to(self.device)
                reset = batch.starts_device[sel_t].unsqueeze(-1)
                where = _rows(env_ids[sel], steps[sel] // exp.bptt_horizon, self.device)
                exp.lstm_h[where] = h_in[sel_t].masked_fill(reset, 0)
                exp.lstm_c[where] = c_in[sel_t].masked_fill(reset, 0)
            self.lstm_h[index] = state["lstm_h"]
            self.lstm_c[index] = state["lstm_c"]

        if store.any():
            if store.all():
                ids, at, sel_t = env_ids, steps, None
            else:
                sel = np.flatnonzero(store)
                ids, at, sel_t = env_ids[sel], steps[sel], torch.from_numpy(sel).to(self.device)
            where = _rows(ids, at, self.device)

            def pick(x: torch.Tensor) -> torch.Tensor:
                return x if sel_t is None else x[sel_t]

            exp.obs[where] = pick(batch.obs)
            exp.actions[where] = pick(actions).reshape(-1, *self.actions.shape).to(exp.actions.dtype)
            exp.logprobs[where] = pick(logprobs).float()
            exp.values[where] = pick(values).float()
            exp.host_starts[ids, at] = batch.starts[store]
            self.pending[ids] = at
            self.stored[ids] = at + 1
        env_actions = self.actions(actions)
        self.timers["inference"] += time.perf_counter() - start

        start = time.perf_counter()
        self.vecenv.send(env_actions)
        self.timers["env"] += time.perf_counter() - start
        return False

    @torch.no_grad()
    def rollout(self) -> None:
        """Fills the experience buffer: ``horizon`` steps of every env."""
        if not self._started:
            self.vecenv.async_reset(self.config.seed)
            self._started = True
        self.stored[:] = 0
        self.complete[:] = False
        # The steps in flight from the last rollout were not stored.
        self.pending[:] = -1
        self.policy.eval()
        while True:
            batch, self.held = (self.held, None) if self.held is not None else (self._receive(), None)
            if self._act(batch):
                break
        self.experience.to_device()
        self.global_step += self.config.batch_size

    # -- learning -----------------------------------------------------------

    def segments(self) -> tuple[int, int]:
        """``(count, length)`` of the training segments: ``bptt_horizon``
        steps for an LSTM, single steps (shuffled freely) otherwise."""
        length = self.config.bptt_horizon if self.recurrent else 1
        return self.config.batch_size // length, length

    def evaluate_segments(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprobs, entropy, values)`` of the stored actions of the
        segments ``index`` under the current policy, flat over
        ``len(index) * length`` steps. An LSTM unrolls every segment from its
        stored start state, zeroing at the stored episode starts."""
        exp = self.experience
        count, length = self.segments()
        obs = exp.obs.reshape(count, length, *self.obs_shape)[index]
        actions = exp.actions.reshape(count, length, *self.actions.shape)[index].reshape(-1, *self.actions.shape)
        if self.recurrent:
            host_index = index.cpu()
            state = {
                "lstm_h": exp.lstm_h.reshape(count, -1)[index],
                "lstm_c": exp.lstm_c.reshape(count, -1)[index],
                "episode_start": exp.episode_starts.reshape(count, length)[host_index],
            }
            logits, values = self.forward(obs, state)
        else:
            logits, values = self.forward(obs.reshape(-1, *self.obs_shape))
        _, logprobs, entropy = sample_logits(logits, actions)
        return logprobs, entropy, values.reshape(-1)

    def learn(self) -> dict[str, float]:
        """One PPO update on the experience buffer; returns the losses."""
        start = time.perf_counter()
        config, exp = self.config, self.experience
        self.policy.train()
        with torch.no_grad():
            advantages = compute_advantages(
                exp.values, exp.bootstrap, exp.rewards, exp.terminals, exp.truncations, config.gamma, config.gae_lambda
            )
            returns = advantages + exp.values
        count, length = self.segments()
        flat = {
            "logprobs": exp.logprobs.reshape(count, length),
            "values": exp.values.reshape(count, length),
            "advantages": advantages.reshape(count, length),
            "returns": returns.reshape(count, length),
        }
        per_minibatch = config.minibatch_size // length
        totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        steps = 0
        for _ in range(config.update_epochs):
            order = torch.randperm(count).to(self.device)
            for index in order.split(per_minibatch):
                old_logprobs, old_values, adv, ret = (
                    flat[k][index].reshape(-1) for k in ("logprobs", "values", "advantages", "returns")
                )
                logprobs, entropy, values = self.evaluate_segments(index)
                logratio = logprobs - old_logprobs
                ratio = logratio.exp()
                if config.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)).mean()
                values = values.float()
                if config.vf_clip_coef > 0:
                    clipped = old_values + (values - old_values).clamp(-config.vf_clip_coef, config.vf_clip_coef)
                    v_loss = 0.5 * torch.max((values - ret) ** 2, (clipped - ret) ** 2).mean()
                else:
                    v_loss = 0.5 * ((values - ret) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm)
                self.optimizer.step()

                with torch.no_grad():
                    totals["policy_loss"] += pg_loss.detach()
                    totals["value_loss"] += v_loss.detach()
                    totals["entropy"] += entropy_loss.detach()
                    totals["approx_kl"] += ((ratio - 1) - logratio).mean()
                    totals["clipfrac"] += ((ratio - 1).abs() > config.clip_coef).float().mean()
                steps += 1
        if self.normalizer is not None:
            # After the epochs that learn from this rollout, so that the
            # rollout and its training passes normalised alike.
            self.normalizer.update(exp.obs)
        # One read back to the host per update, not one per minibatch.
        losses = {k: v.item() / steps for k, v in totals.items()}
        with torch.no_grad():
            var = returns.var()
            losses["explained_variance"] = float("nan") if var == 0 else (1 - (returns - exp.values).var() / var).item()
        self.timers["learn"] += time.perf_counter() - start
        return losses

    # -- the loop -------------------------------------------------------------

    def train(self, on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Runs ``config.num_updates`` updates, calling ``on_update(metrics)``
        after each; returns a summary. Writes the run directory if set."""
        config = self.config
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
            metrics_file = open(self.run_dir / "metrics.jsonl", "w")  # noqa: SIM115 - closed below
        started = time.perf_counter()
        try:
            while self.update < config.num_updates:
                self.update += 1
                if config.anneal_lr:
                    frac = 1.0 - (self.update - 1) / config.num_updates
                    self.optimizer.param_groups[0]["lr"] = frac * config.learning_rate
                self.rollout()
                losses = self.learn()
                row = self._metrics(losses, time.perf_counter() - started)
                self.metrics.append(row)
                if self.run_dir is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    if (
                        config.checkpoint_interval
                        and self.update % config.checkpoint_interval == 0
                        and self.update < config.num_updates
                    ):
                        self.save_checkpoint(self.run_dir / "checkpoints" / f"update_{self.update:06d}.pt")
                if on_update is not None:
                    on_update(row)
        except KeyboardInterrupt:
            # Stopped by hand: what was learned so far is still saved.
            self._finish(time.perf_counter() - started)
            raise
        finally:
            if self.run_dir is not None:
                metrics_file.close()
        return self._finish(time.perf_counter() - started)

    def _finish(self, elapsed: float) -> dict[str, Any]:
        summary = self.summary(elapsed)
        if self.run_dir is not None:
            summary["checkpoint"] = str(self.save_checkpoint(self.run_dir / "model.pt"))
            summary["metrics"] = str(self.run_dir / "metrics.jsonl")
            if self.metrics:
                plot = plot_metrics(self.metrics, self.run_dir / "learning_curve.png", title=self.config.env)
                summary["plot"] = str(plot)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _metrics(self, losses: dict[str, float], elapsed: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "update": self.update,
            "global_step": self.global_step,
            "time": round(elapsed, 3),
            "sps": self.global_step / elapsed if elapsed > 0 else 0.0,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        for key, values in sorted(self.episode_infos.items()):
            row[f"env/{key}"] = float(np.mean(values))
        row["env/episodes"] = len(self.episode_infos.get("episode_return", ()))
        self.episode_infos.clear()
        row.update({f"losses/{k}": v for k, v in losses.items()})
        row.update({f"perf/{k}": round(v, 4) for k, v in self.timers.items()})
        return row

    def summary(self, elapsed: float) -> dict[str, Any]:
        """The end of training in numbers: steps, time, speed, the last
        update's episode statistics, and the time split."""
        last = {k: v for k, v in (self.metrics[-1] if self.metrics else {}).items() if k.startswith("env/")}
        # The last few updates, for a steadier figure than one update's.
        recent = [m["env/episode_return"] for m in self.metrics[-5:] if "env/episode_return" in m]
        return {
            "env": self.config.env,
            "updates": self.update,
            "global_step": self.global_step,
            "seconds": round(elapsed, 2),
            "sps": round(self.global_step / elapsed, 1) if elapsed > 0 else 0.0,
            "mean_return_last_5_updates": float(np.mean(recent)) if recent else None,
            **last,
            **{f"perf/{k}": round(v, 3) for k, v in self.timers.items()},
        }

    def save_checkpoint(self, path: str | Path) -> Path:
        """Writes the policy's ``state_dict`` with the config and progress."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(
            {
                "state_dict": self.policy.state_dict(),
                "config": dataclasses.asdict(self.config),
                "update": self.update,
                "global_step": self.global_step,
                "optimizer": self.optimizer.state_dict(),
            },
            tmp,
        )
        os.replace(tmp, path)  # never a half-written checkpoint under the real name
        return path

    def close(self) -> None:
        self.vecenv.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Checkpoints, evaluation, plots


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict[str, Any], Config]:
    """``(checkpoint dict, Config)`` from a file :meth:`Trainer.save_checkpoint` wrote."""
    try:
        checkpoint = torch.load(path, map_location=resolve_device(device), weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {str(path)!r}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r} is not a readable checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise ConfigError(f"{str(path)!r} is not a pufferrs checkpoint (no state_dict and config)")
    known = {f.name for f in dataclasses.fields(Config)}
    return checkpoint, Config(**{k: v for k, v in checkpoint["config"].items() if k in known})


@torch.no_grad()
def evaluate(
    policy: nn.Module,
    config: Config,
    episodes: int = 10,
    greedy: bool = True,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Runs ``policy`` for ``episodes`` episodes of ``config.env`` and
    returns ``{"returns": [...], "lengths": [...], "mean_return": ...}`` plus
    the mean of every other numeric episode info (e.g. ``success``).

    ``greedy`` takes the most likely action, else samples. Each of
    ``num_envs`` envs (default ``min(episodes, 16)``) plays the same
    number of episodes, so that short episodes are not over-counted.
    ``seed`` defaults to ``config.seed + 1000``, away from training's.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be positive, got {episodes}")
    device = torch.device(device)
    num_envs = num_envs or min(episodes, 16)
    per_env = math.ceil(episodes / num_envs)
    seed = config.seed + 1000 if seed is None else seed
    vecenv = make_vecenv(config, num_envs=num_envs, backend="serial", seed=seed)
    actions = ActionAdapter(vecenv.single_action_space)
    recurrent = is_recurrent(policy)
    policy.eval()
    results: list[list[dict[str, float]]] = [[] for _ in range(num_envs)]
    state: dict[str, Any] = {}
    try:
        obs, _ = vecenv.reset(seed=seed)
        starts = np.ones(num_envs, bool)
        while min(len(r) for r in results) < per_env:
            obs_t = torch.from_numpy(obs).to(device)
            if recurrent:
                state["episode_start"] = torch.from_numpy(starts).to(device)
            logits, _ = policy.forward_eval(obs_t, state if recurrent else None)
            action = greedy_action(logits) if greedy else sample_logits(logits)[0]
            obs, _, terminals, truncations, infos = vecenv.step(actions(action))
            starts = terminals | truncations
            for i in np.flatnonzero(starts).tolist():
                if len(results[i]) < per_env:
                    results[i].append(_numbers(infos[i]))
    finally:
        vecenv.close()
    # Round-robin over envs, so that the first `episodes` mix all envs.
    ordered = [results[i][k] for k in range(per_env) for i in range(num_envs)][:episodes]
    out: dict[str, Any] = {
        "returns": [e["episode_return"] for e in ordered],
        "lengths": [int(e["episode_length"]) for e in ordered],
    }
    out["mean_return"] = float(np.mean(out["returns"]))
    for key in sorted({k for e in ordered for k in e} - {"episode_return", "episode_length"}):
        out[f"mean_{key}"] = float(np.mean([e[key] for e in ordered if key in e]))
    return out


def policy_from_checkpoint(path: str | Path, device: str = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuilds the policy a checkpoint was trained with and loads its weights."""
    checkpoint, config = load_checkpoint(path, device)
    check_env(config.env, config.env_kwargs)
    probe = make_vecenv(config, num_envs=1, backend="serial")
    try:
        policy = make_policy(probe, config)
    finally:
        probe.close()
    try:
        policy.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or misshapen weights
        raise ConfigError(f"{str(path)!r} does not fit the policy its config describes: {exc}") from None
    return policy.to(resolve_device(device)), config, checkpoint


def plot_metrics(metrics: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Writes the learning curve as a PNG: mean episode return over env
    steps; the env's rates (``success``, ``score``) when it reports them;
    and the losses."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    from matplotlib import pyplot as plt

    path = Path(path)

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(m["global_step"], m[key]) for m in metrics if m.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    rates = [key for key in ("env/success", "env/score") if any(m.get(key) is not None for m in metrics)]
    panels = 3 if rates else 2
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3 * panels + 1), sharex=True)
    steps = metrics[-1]["global_step"] if metrics else 0
    axes[0].plot(*series("env/episode_return"))
    axes[0].set_ylabel("mean episode return")
    axes[0].set_title(f"{title} ({steps:,} steps)")
    if rates:
        for key in rates:
            axes[1].plot(*series(key), label=key[4:])
        axes[1].set_ylabel("rate")
        axes[1].set_ylim(-0.05, 1.05)
        axes[1].legend(loc="lower right")
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        axes[-1].plot(*series(f"losses/{key}"), label=key)
    axes[-1].set_ylabel("losses")
    axes[-1].set_yscale("symlog", linthresh=1e-3)
    axes[-1].legend(loc="upper right")
    axes[-1].set_xlabel("env steps")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def config_fields() -> Iterator[dataclasses.Field]:
    """The fields of :class:`Config`, for building command-line options."""
    return iter(dataclasses.fields(Config))
