"""What a training run depends on: :class:`Config`, the per-env
:data:`PRESETS`, the one validation that the trainer (and so the command
line) relies on, and the process-wide settings a run asks for.

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

__all__ = [
    "BACKENDS",
    "FAMILY_PRESETS",
    "POLICIES",
    "PRESETS",
    "Config",
    "ConfigError",
    "apply_process_settings",
    "describe_presets",
    "family_preset",
    "resolve_device",
    "seed_everything",
]

BACKENDS = ("serial", "multiprocessing", "ray")

#: The policies ``--policy`` names (any case): ``auto`` is
#: :class:`pufferrs.encoders.Auto`, the others pufferrs.models' classes.
POLICIES = ("auto", "default", "convolutional", "procgen")


def _option(default: Any, help: str, group: str = "PPO", choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its command-line help, ``--help`` section and,
    for a field with a few possible values, those values."""
    metadata = {"help": help, "group": group, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    """Everything a run depends on. :meth:`for_env` starts from the env's
    preset in :data:`PRESETS`."""

    env: str = _option("pufferrs/Memory-v0", "gymnasium or PettingZoo env id", "vector env")
    env_kwargs: dict = _option(
        {}, "keyword arguments for the env's constructor (gymnasium.make), as JSON", "vector env"
    )
    backend: str = _option("serial", "vector env backend", "vector env", BACKENDS)
    num_envs: int = _option(16, "envs stepped in parallel", "vector env")
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
    hidden_size: int = _option(64, "width of the encoder (and of the LSTM)", "policy")
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
    compile: bool = _option(False, "torch.compile the policy (eager, with a warning, where compiling fails)", "policy")

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

    @classmethod
    def for_env(cls, env: str | None = None, **overrides: Any) -> Config:
        """The defaults, then the env family's preset (:data:`FAMILY_PRESETS`),
        then ``PRESETS[env]``, then ``overrides``; ``encoders`` are merged."""
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
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint_minutes must be non-negative, got {self.checkpoint_minutes!r}")
        if self.checkpoint_interval < 0:
            raise ConfigError(f"checkpoint_interval must be non-negative, got {self.checkpoint_interval}")
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        resolve_device(self.device)


#: Per-env settings that :meth:`Config.for_env` (and ``pufferrs train ENV``)
#: starts from, tuned on a 2-core CPU. Command-line options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The built-in envs' settings were tuned with the Default MLP, and keep it.
    # Solved (return 500 of 500, greedy and sampled) in 100k steps for
    # seeds 0-5. The policy's one hidden layer is shared by the action and
    # value heads: a lighter value loss (and returns kept short by gamma)
    # stop the value gradients from drowning the policy's. Returns in the
    # tens would take hundreds of updates to reach through a 0.2 value clip.
    "CartPole-v1": dict(
        policy="default",
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
        policy="default",
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
        policy="default",
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
    # Three agents score only together, each reading its own cue. Reaches
    # a score of 0.75 to 1.0 in 100k env steps (seeds 0-3; random play
    # scores 0.016, and a team that always picks one target 0.25). With the
    # Default MLP it settles at 0.25-0.5 more often, and with separate Tanh
    # networks for the actions and the value at about 0.5 (seed 0).
    "pufferrs.multiagent_envs.Rendezvous": dict(
        separate_value=False,
        num_envs=8,
        total_steps=100_000,
        batch_size=1024,
        minibatch_size=512,
        learning_rate=3e-3,
        gamma=0.5,
        ent_coef=0.01,
        hidden_size=128,
    ),
}


#: highway-env's id prefixes (its envs spend tens of milliseconds a step in Python).
HIGHWAY_PREFIXES = (
    "highway-",
    "merge-",
    "roundabout-",
    "parking-",
    "intersection-",
    "racetrack-",
    "two-way-",
    "u-turn-",
    "exit-",
    "lane-keeping-",
)

#: gymnasium's control envs with vector observations, by id prefix (CartPole-v1
#: keeps its own preset, PRESETS).
CLASSIC_CONTROL_PREFIXES = ("Acrobot-", "MountainCar-", "MountainCarContinuous-", "Pendulum-")
BOX2D_PREFIXES = ("LunarLander-", "LunarLanderContinuous-", "BipedalWalker-", "BipedalWalkerHardcore-")
MUJOCO_PREFIXES = (
    "Ant-",
    "HalfCheetah-",
    "Hopper-",
    "Humanoid-",
    "HumanoidStandup-",
    "InvertedDoublePendulum-",
    "InvertedPendulum-",
    "Pusher-",
    "Reacher-",
    "Swimmer-",
    "Walker2d-",
)

#: PPO for vector observations, discrete or continuous actions: SB3's
#: defaults (2048 steps an update, 10 epochs of minibatches of 64, learning
#: rate 3e-4, no entropy bonus, no value clipping) with CleanRL's
#: normalisation of observations and rewards (each clipped to +-10). With
#: the automatic policy these envs get separate 64x64 Tanh networks for the
#: actions and the value (pufferrs.encoders.Auto). 320 gradient steps an
#: update against 16 before: the policy moves.
VECTOR_CONTROL: dict[str, Any] = dict(
    num_envs=8,
    batch_size=2048,
    minibatch_size=64,
    update_epochs=10,
    learning_rate=3e-4,
    ent_coef=0.0,
    vf_clip_coef=0.0,
    gamma=0.99,
    gae_lambda=0.95,
    hidden_size=64,
    normalize_observations=True,
    normalize_rewards=True,
)

#: Presets by env id prefix, applied before :data:`PRESETS`: what the
#: spaces of a family of envs cannot say, and settings that train them.
FAMILY_PRESETS: tuple[tuple[str, dict[str, Any]], ...] = (
    *(
        (prefix, dict(VECTOR_CONTROL, total_steps=total))
        for prefixes, total in (
            (CLASSIC_CONTROL_PREFIXES, 200_000),
            (BOX2D_PREFIXES, 1_000_000),
            (MUJOCO_PREFIXES, 1_000_000),
        )
        for prefix in prefixes
    ),
    # MiniGrid declares its grid of object, colour and state codes as a
    # Box(0, 255, uint8) image.
    (
        "MiniGrid-",
        dict(
            encoders={"image": "codes"},
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=1e-3,
            ent_coef=0.01,
            gae_lambda=0.95,
            gamma=0.99,
            hidden_size=128,
            total_steps=300_000,
        ),
    ),
    # BabyAI's longest mission (its grammar, minigrid's verifier.py): two
    # "and"s of two "put the <colour> <type> <location> next to ..." joined
    # by " after you ", 321 characters ("the purple ball in front of you" is
    # 31: put 31 next to 31 = 75; 75 and 75 = 155; 155 after you 155 =
    # 321). Sampled, BossLevel's missions exceed the default 128 in 322 of
    # 20,000 resets (longest 218; SynthSeq, BossLevelNoUnlock, MiniBossLevel
    # alike, every other level under 100). The text encoder costs what the
    # batch's longest string does, so the room costs only row bytes.
    (
        "BabyAI-",
        dict(
            encoders={"image": "codes"},
            max_string_length=321,
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=1e-3,
            hidden_size=128,
            total_steps=1_000_000,
        ),
    ),
    # CleanRL's Atari PPO.
    (
        "ALE/",
        dict(
            num_envs=8,
            batch_size=1024,
            minibatch_size=256,
            learning_rate=2.5e-4,
            clip_coef=0.1,
            vf_clip_coef=0.1,
            ent_coef=0.01,
            hidden_size=512,
            total_steps=10_000_000,
        ),
    ),
    # NetHack's glyph ids (up to 5,976) are categories; of the many views
    # of the screen, the glyphs, the bottom-line stats and the message are
    # enough to learn from. The glyphs are seen through the crop of NLE's
    # baselines, 9x9 around the agent (blstats holds its x and y); the
    # baselines add the whole 21x79 map, left out here: embedding and
    # convolving it cost four fifths of an update on a CPU. The message is
    # a string of bytes ended by a 0. A first layer of 64, as SB3's MLP:
    # its matmuls were the largest share of an update left at 128 (the
    # measurements are in docs/benchmarks.md).
    (
        "NetHack",
        dict(
            env_kwargs={"observation_keys": ["glyphs", "blstats", "message"]},
            encoders={"glyphs": "crop 9 at blstats[0,1]", "blstats": "scalars", "message": "text"},
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=3e-4,
            hidden_size=64,
            total_steps=1_000_000,
        ),
    ),
    # A highway-env step costs tens of milliseconds of Python (its vehicles'
    # behaviour), a thousand times the policy's share: worker processes, one
    # per core, are the only lever.
    *((prefix, dict(backend="multiprocessing")) for prefix in HIGHWAY_PREFIXES),
)


def family_preset(env: str) -> tuple[str | None, dict[str, Any]]:
    """``(prefix, preset)`` of the first family of :data:`FAMILY_PRESETS`
    whose prefix ``env`` (less a ``module:``) starts with; ``(None, {})``."""
    name = env.split(":")[-1]
    return next(((prefix, preset) for prefix, preset in FAMILY_PRESETS if name.startswith(prefix)), (None, {}))


def describe_presets(env: str) -> list[str]:
    """Lines that say which presets :meth:`Config.for_env` applies to
    ``env`` and why, for the start of a run."""
    lines = []
    prefix, family = family_preset(env)
    if family and all(family.get(k) == v for k, v in VECTOR_CONTROL.items()):
        lines.append(
            f"settings: the vector-control preset ({prefix}*): SB3's PPO settings (10 epochs of minibatches of "
            "64, learning rate 3e-4, no entropy bonus) with observations and rewards normalised"
        )
    elif family:
        lines.append(f"settings: the preset of {prefix}* envs")
    if env in PRESETS:
        lines.append(f"settings: the preset of {env}")
    return lines or ["settings: the defaults (no preset for this env)"]


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
