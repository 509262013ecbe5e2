"""What a training run depends on: :class:`Config` (which starts from the
presets of :mod:`pufferrs.presets`), the one validation that the trainer
(and so the command line) relies on, and the process-wide settings a run
asks for.

Every field of :class:`Config` is a ``pufferrs train`` option
(``num_envs`` is ``--num-envs``): its metadata holds the option's help and
the ``--help`` section it is listed in.

Constructing a :class:`~pufferrs.ppo.Trainer` changes nothing outside it.
Torch's thread count, the seeds of Python, numpy and torch, and cuDNN's
determinism belong to the program that owns the process: ``pufferrs train``
calls :func:`apply_process_settings`, and so should a script that wants a
run to be reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pufferrs.errors import ConfigError
from pufferrs.presets import PRESETS, family_preset

__all__ = [
    "BACKENDS",
    "POLICIES",
    "SEARCH_SPACE",
    "TRACKERS",
    "VECTORIZATIONS",
    "Config",
    "ConfigError",
    "apply_process_settings",
    "resolve_device",
    "seed_everything",
]

BACKENDS = ("serial", "multiprocessing", "ray")

#: What ``--track`` names (comma-separated), and W&B's modes.
TRACKERS = ("tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")

#: How the envs of a run are made (``--vectorization``): one gymnasium env
#: each, or one vector env per worker of the backend (gymnasium's vector
#: entry point, or EnvPool) stepping ``num_envs / workers`` envs at once.
VECTORIZATIONS = ("none", "vector_entry_point", "envpool")

#: The policies ``--policy`` names (any case): ``auto`` is
#: :class:`pufferrs.encoders.Auto`, the others pufferrs.models' classes.
POLICIES = ("auto", "default", "convolutional", "procgen")


def _option(
    default: Any,
    help: str,
    group: str = "PPO",
    choices: tuple[str, ...] | None = None,
    search: dict[str, Any] | None = None,
) -> Any:
    """A config field with its command-line help, ``--help`` section and,
    for a field with a few possible values, those values; ``search`` is the
    range ``pufferrs sweep`` draws the field from (:data:`SEARCH_SPACE`)."""
    metadata = {"help": help, "group": group, "choices": choices, "search": search}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    """Everything a run depends on. :meth:`for_env` starts from the env's
    preset in :data:`pufferrs.presets.PRESETS`."""

    env: str = _option("pufferrs/Memory-v0", "gymnasium or PettingZoo env id", "vector env")
    env_kwargs: dict = _option(
        {}, "keyword arguments for the env's constructor (gymnasium.make), as JSON", "vector env"
    )
    backend: str = _option("serial", "vector env backend", "vector env", BACKENDS)
    num_envs: int = _option(16, "envs stepped in parallel", "vector env")
    vectorization: str = _option(
        "none",
        "none: one gymnasium env per env; vector_entry_point: gymnasium.make_vec(env, n, "
        "vectorization_mode='vector_entry_point') per worker; envpool: envpool.make(env, env_type='gymnasium', "
        "num_envs=n) per worker, stepped by EnvPool's threads (n: num_envs / workers)",
        "vector env",
        VECTORIZATIONS,
    )
    num_workers: int | None = _option(
        None,
        "worker processes (multiprocessing; default: the most that divide num_envs, up to one per core)",
        "vector env",
    )
    env_batch_size: int | None = _option(
        None, "envs per recv (default: num_envs); fewer makes rollouts asynchronous", "vector env"
    )
    imports: str | None = _option(
        None, "modules to import before making the env, comma-separated (they register its id)", "vector env"
    )
    atari_preprocessing: bool = _option(
        True,
        "for ALE ids: no-op reset, frame skip 4 with max-pooling, 84x84 grayscale, 4 stacked frames, and "
        "for training episodic life and clipped rewards (pufferrs.wrappers.atari)",
        "vector env",
    )
    info_metrics: str | None = _option(
        None,
        "how an episode's metrics are made from its steps' infos, KEY=sum|mean|last|none, comma-separated "
        "(added to the family's rules; pufferrs.episodes)",
        "vector env",
    )
    drop_observations: str | None = _option(
        None, "observation keys to leave out, comma-separated, nested as a/b (pufferrs.wrappers)", "vector env"
    )
    max_string_length: int | None = _option(
        None,
        "longest string of a string observation that is not Text, e.g. MiniGrid's mission (default: 128)",
        "vector env",
    )

    policy: str = _option(
        "auto",
        "auto (an encoder per observation leaf, chosen from its space; pufferrs.encoders), default, "
        "convolutional or procgen",
        "policy",
    )
    encoders: dict = _option(
        {},
        'the auto policy\'s encoder of chosen leaves, as JSON: \'{"image": "codes", "inv/hp": "scalars"}\'',
        "policy",
    )
    lstm: bool = _option(False, "an LSTM between the encoder and the action/value heads", "policy")
    hidden_size: int = _option(
        64,
        "width of the encoder (and of the LSTM)",
        "policy",
        search={"type": "categorical", "choices": [32, 64, 128, 256]},
    )
    separate_value: bool | None = _option(
        None,
        "the automatic policy's value gets a network of its own (default: for vector observations without an LSTM; "
        "pufferrs.encoders.Auto)",
        "policy",
    )
    normalize_observations: bool = _option(
        False, "normalise float observations by their running mean and variance (pufferrs.normalize)", "policy"
    )
    obs_clip: float = _option(10.0, "clip normalised observations to [-obs_clip, obs_clip]", "policy")
    normalize_rewards: bool = _option(
        False,
        "scale rewards by a running estimate of the discounted return's standard deviation, per row "
        "(pufferrs.normalize.RewardNormalizer)",
        "policy",
    )
    reward_clip: float = _option(10.0, "clip normalised rewards to [-reward_clip, reward_clip]", "policy")
    log_std_init: float = _option(0.0, "initial log standard deviation of a Box action's Normal", "policy")
    compile: bool | None = _option(
        None,
        "torch.compile the update (eager, with a warning, where compiling fails); unset: compiled on a CPU for an "
        "MLP on vector observations over at least 10,000 gradient steps (pufferrs.compiling)",
        "policy",
    )

    total_steps: int = _option(200_000, "env steps to train for")
    batch_size: int = _option(2048, "env steps per update (num_envs * horizon)")
    minibatch_size: int = _option(
        512, "steps per gradient step", search={"type": "categorical", "choices": [64, 128, 256, 512, 1024]}
    )
    bptt_horizon: int = _option(16, "steps per training segment, the LSTM's backprop-through-time length")
    update_epochs: int = _option(4, "passes over the batch per update", search={"type": "int", "low": 1, "high": 10})
    learning_rate: float = _option(
        2.5e-4, "Adam learning rate", search={"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    )
    anneal_lr: bool = _option(True, "decay the learning rate linearly to 0")
    gamma: float = _option(0.99, "discount factor", search={"type": "float", "low": 0.9, "high": 0.9999})
    gae_lambda: float = _option(0.95, "GAE lambda", search={"type": "float", "low": 0.8, "high": 1.0})
    clip_coef: float = _option(0.2, "PPO policy ratio clip", search={"type": "float", "low": 0.1, "high": 0.4})
    vf_clip_coef: float = _option(0.2, "clip values to this distance from the rollout's (0: no value clipping)")
    vf_coef: float = _option(0.5, "value loss coefficient")
    ent_coef: float = _option(0.01, "entropy bonus coefficient", search={"type": "float", "low": 0.0, "high": 0.05})
    max_grad_norm: float = _option(0.5, "gradient norm clip")
    norm_adv: bool = _option(True, "normalise advantages per minibatch")

    seed: int = _option(0, "seeds Python, numpy, torch and the envs (env i gets seed + i)", "run")
    device: str = _option("auto", "auto (cuda when available), cpu, cuda or cuda:N", "run")
    torch_threads: int = _option(
        1,
        "torch CPU threads: small policies run fastest on one, and the cores stay free for envs (0: torch's default)",
        "run",
    )
    torch_deterministic: bool = _option(True, "deterministic cuDNN kernels", "run")
    checkpoint_interval: int = _option(50, "save a checkpoint every N updates (0: only at the end)", "run")
    checkpoint_minutes: float = _option(5.0, "also save a checkpoint after N minutes without one (0: never)", "run")
    run_dir: str | None = _option(
        None, "where checkpoints, metrics and plots go (no files when None; the CLI's default: runs/NAME)", "run"
    )
    dist_timeout: float = _option(
        600.0,
        "under torchrun: seconds a rank waits for the others in a collective before it stops with an error "
        "(pufferrs.distributed)",
        "run",
    )

    eval_interval: int = _option(
        0,
        "every N updates, play eval_episodes greedy episodes on envs of their own and log eval/return; the best "
        "policy so far is kept as best.pt (0: never)",
        "evaluation",
    )
    eval_episodes: int = _option(10, "episodes each evaluation plays", "evaluation")

    track: str | None = _option(
        None,
        "also log every metric to tensorboard, wandb or both (tensorboard,wandb), in the run directory; "
        "needs pip install pufferrs[track]",
        "tracking",
    )
    wandb_project: str = _option("pufferrs", "W&B project", "tracking")
    wandb_entity: str | None = _option(None, "W&B entity (team or user; default: yours)", "tracking")
    wandb_group: str | None = _option(None, "W&B group of runs", "tracking")
    wandb_tags: str | None = _option(None, "W&B tags, comma-separated", "tracking")
    wandb_mode: str | None = _option(
        None,
        "W&B mode: online, offline (no network; `wandb sync` later) or disabled (default: WANDB_MODE, else online)",
        "tracking",
        WANDB_MODES,
    )

    @classmethod
    def for_env(cls, env: str | None = None, **overrides: Any) -> Config:
        """The defaults, then the env family's preset
        (:data:`pufferrs.presets.FAMILY_PRESETS`), then
        ``pufferrs.presets.PRESETS[env]``, then ``overrides``; ``encoders``
        are merged."""
        env = env or cls.env
        _, family = family_preset(env)
        preset = {**family, **PRESETS.get(env, {})}
        values = {**preset, **overrides, "env": env}
        # Encoders name leaves: the user's are added to the family's.
        values["encoders"] = {**preset.get("encoders", {}), **overrides.get("encoders", {})}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**values)

    @property
    def horizon(self) -> int:
        """Steps each env stores per update."""
        return self.batch_size // self.num_envs

    @property
    def trackers(self) -> list[str]:
        """The trackers ``track`` names, in order, without repeats."""
        return list(dict.fromkeys(t.strip().lower() for t in (self.track or "").split(",") if t.strip()))

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
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        for name in ("num_workers", "env_batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.vectorization not in VECTORIZATIONS:
            raise ConfigError(f"vectorization must be one of {VECTORIZATIONS}, got {self.vectorization!r}")
        if self.batch_size % self.num_envs:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of num_envs ({self.num_envs})")
        if self.lstm and self.horizon % self.bptt_horizon:
            raise ConfigError(
                f"batch_size / num_envs ({self.horizon} steps per env) must be a multiple of "
                f"bptt_horizon ({self.bptt_horizon})"
            )
        if self.batch_size % self.minibatch_size:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must divide batch_size ({self.batch_size})")
        if self.lstm and self.separate_value:
            raise ConfigError("separate_value needs a feed-forward policy: an LSTM carries one memory to both heads")
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
        if self.policy.lower() not in POLICIES:
            raise ConfigError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not isinstance(self.encoders, dict):
            raise ConfigError(f"encoders must be a dict of leaf path to encoder, got {self.encoders!r}")
        if self.max_string_length is not None and self.max_string_length < 0:
            raise ConfigError(f"max_string_length must be non-negative, got {self.max_string_length}")
        for name in ("obs_clip", "reward_clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not math.isfinite(self.log_std_init):
            raise ConfigError(f"log_std_init must be finite, got {self.log_std_init!r}")
        if not self.dist_timeout > 0:
            raise ConfigError(f"dist_timeout must be positive, got {self.dist_timeout!r}")
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint_minutes must be non-negative, got {self.checkpoint_minutes!r}")
        if self.checkpoint_interval < 0:
            raise ConfigError(f"checkpoint_interval must be non-negative, got {self.checkpoint_interval}")
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        if not isinstance(self.eval_interval, int) or self.eval_interval < 0:
            raise ConfigError(f"eval_interval must be a non-negative integer, got {self.eval_interval!r}")
        if not isinstance(self.eval_episodes, int) or self.eval_episodes < 1:
            raise ConfigError(f"eval_episodes must be a positive integer, got {self.eval_episodes!r}")
        unknown = sorted(set(self.trackers) - set(TRACKERS))
        if unknown:
            raise ConfigError(f"track: unknown tracker {', '.join(unknown)} (known: {', '.join(TRACKERS)})")
        if self.trackers and self.run_dir is None:
            raise ConfigError("track needs a run_dir: the trackers write their logs there")
        if self.wandb_mode is not None and self.wandb_mode not in WANDB_MODES:
            raise ConfigError(f"wandb_mode must be one of {WANDB_MODES}, got {self.wandb_mode!r}")
        resolve_device(self.device)


#: The ranges ``pufferrs sweep`` draws settings from, declared with the
#: fields above (their ``search`` metadata): ``{field: {"type": "float",
#: "low", "high", "log"} | {"type": "int", "low", "high", "log"} |
#: {"type": "categorical", "choices": [...]}}``.
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    f.name: dict(f.metadata["search"]) for f in dataclasses.fields(Config) if f.metadata.get("search")
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


def seed_everything(seed: int) -> None:
    """Seeds Python's, numpy's and torch's (every device's) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def apply_process_settings(config: Config) -> None:
    """Applies the settings of ``config`` that hold for the whole process:
    torch's CPU thread count (``torch_threads``; 0 keeps torch's), the seeds
    (:func:`seed_everything` with ``seed``) and cuDNN's determinism
    (``torch_deterministic``). Call it once, before building the trainer,
    from the program that owns the process; ``pufferrs train`` does.

    A thread count below zero is left for :meth:`Config.validate` to refuse.
    """
    if config.torch_threads > 0:
        # Several threads on tiny matrices mostly wait for each other, and
        # far worse when the cores are busy with envs.
        torch.set_num_threads(config.torch_threads)
    seed_everything(config.seed)
    torch.backends.cudnn.deterministic = config.torch_deterministic
    torch.backends.cudnn.benchmark = not config.torch_deterministic
