"""A run's vector env and policy, built from its :class:`~pufferrs.config.Config`,
and how the trainer calls the policy (compiled or eager).

Env ids: before an id is looked up, the package that registers it is
imported: ``ALE/...`` (ale-py), ``MiniGrid-...`` and ``BabyAI-...``
(minigrid), ``NetHack...`` (nle), ``MiniHack-...`` (minihack) and
highway-env's ids (``highway-v0``, ``merge-v0``, ``parking-v0``, ...).
``module:EnvId`` imports ``module`` first, as ``gymnasium.make`` does, and
``Config.imports`` names more modules to import. A failed import of a
known package names the package to install; any other module is reported
as not found.

PettingZoo envs are named by their registry id (``classic/connect_four-v3``)
or by their module as PettingZoo's docs import them
(``pettingzoo.classic.connect_four_v3``), and made by ``pettingzoo.make``:
the parallel form where the env has one, else the turn-based (AEC) one.
Any other dotted module path with a ``parallel_env`` or ``env`` function
is made by that function (``parallel_env`` first), and a dotted path to a
callable (``pufferrs.multiagent_envs.Rendezvous``) by calling it; both
with ``env_kwargs``.

:func:`named_code` lists what a config would import or call beyond
registered ids and known packages: a checkpoint's config is only made into
an env when the person loading it names that code again or trusts the file
(:func:`pufferrs.checkpoints.load_checkpoint`)."""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from torch import nn

import pufferrs.envs  # noqa: F401 - registers the built-in envs with gymnasium
from pufferrs import vector
from pufferrs.config import Config
from pufferrs.errors import ConfigError
from pufferrs.models import Convolutional, Default, LSTMWrapper, ProcgenResnet
from pufferrs.normalize import NormalizedPolicy
from pufferrs.presets import HIGHWAY_PREFIXES
from pufferrs.vector.vector_envs import VectorEnvCreator, vector_env_count
from pufferrs.wrappers import DropObservations, GoalSuccess, StringObservations, atari

__all__ = [
    "BUILT_IN_ENVS",
    "ENV_PACKAGES",
    "EnvCreator",
    "PettingZooCreator",
    "check_env",
    "describe_policy",
    "env_creator",
    "env_modules",
    "is_atari",
    "is_recurrent",
    "make_policy",
    "make_vecenv",
    "named_code",
]

#: ``(id prefix, module to import, package to install)``: the packages
#: behind well-known env ids.
ENV_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("ALE/", "ale_py", "ale-py"),
    ("MiniGrid-", "minigrid", "minigrid"),
    ("BabyAI-", "minigrid", "minigrid"),
    ("NetHack", "nle", "nle"),
    ("MiniHack-", "minihack", "minihack"),
    *((prefix, "highway_env", "highway-env") for prefix in HIGHWAY_PREFIXES),
)


def env_modules(env_id: str, imports: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """``(the id without a module prefix, [(module, package to install)])``:
    what to import before ``env_id`` can be made."""
    modules = [(m.strip(), m.strip()) for m in (imports or "").split(",") if m.strip()]
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        modules.append((module, module))
    modules += [(module, package) for prefix, module, package in ENV_PACKAGES if env_id.startswith(prefix)]
    return env_id, modules


#: pufferrs's own env classes, named by dotted path (``pufferrs train
#: pufferrs.multiagent_envs.Rendezvous``): as safe to make as a registered id.
BUILT_IN_ENVS = frozenset({"pufferrs.multiagent_envs.Rendezvous"})

#: Import name to package name of the packages pufferrs knows: the only
#: ones a failed import tells the user to ``pip install``. Any other name
#: may be a local module with a typo, or a package with another name.
_KNOWN_PACKAGES = {module: package for _, module, package in ENV_PACKAGES} | {"pettingzoo": "pettingzoo"}


def _import_env_modules(env_id: str, imports: str | None) -> str:
    registered, modules = env_modules(env_id, imports)
    for module, _ in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(_import_failure(env_id, module, exc)) from None
    return registered


def _import_failure(env_id: str, module: str, exc: ImportError) -> str:
    """Why ``module``, which ``env_id`` needs, did not import: a known
    package to install, a module not found, or the import's own error."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else None
    if missing is None:
        return f"{env_id} needs the module {module!r}, which did not import: {type(exc).__name__}: {exc}"
    package = _KNOWN_PACKAGES.get(missing.split(".")[0])
    if package is not None:
        return f"{env_id} needs the module {module!r}, which did not import ({exc}): pip install {package}"
    if _on_path(missing, module):
        return f"{env_id} needs the module {module!r}, which was not found (current directory, Python path)"
    return f"{env_id} needs the module {module!r}, which did not import: it imports {missing!r}, which was not found"


def _on_path(name: str, path: str) -> bool:
    """Whether the module ``name`` is ``path`` or one of its parents
    (``a`` and ``a.b`` of ``a.b.c``): the path itself was not found, as
    opposed to a module that it imports."""
    return path == name or path.startswith(name + ".")


def named_code(env_id: str | None = None, imports: str | None = None) -> list[str]:
    """What making ``env_id`` (None: no env) after importing ``imports``
    would import or call beyond what is safe to make on a file's word
    alone: registered gymnasium and PettingZoo ids, pufferrs's own envs
    (:data:`BUILT_IN_ENVS`), and the packages of :data:`ENV_PACKAGES` their
    prefixes name. One phrase each (``"import the module 'os'"``,
    ``"import and call os.system"``); empty when there is nothing else.

    Any module runs code when imported, and a dotted path is called with
    the env's keyword arguments, so a config that names them is only made
    into an env when the person running it named them."""
    asks = [f"import the module {m.strip()!r}" for m in (imports or "").split(",") if m.strip()]
    if env_id is None or env_id in BUILT_IN_ENVS:
        return asks
    if ":" in env_id:
        asks.append(f"import the module {env_id.split(':', 1)[0]!r}")
    elif env_id not in gym.registry and _MODULE_PATH.fullmatch(env_id) and _registered_pettingzoo_env(env_id) is None:
        asks.append(f"import and call {env_id}")
    return asks


#: A dotted module path, the form PettingZoo env ids take.
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def pettingzoo_maker(env_id: str) -> Callable[..., Any] | None:
    """What makes the PettingZoo env ``env_id`` names (called with the
    env's keyword arguments), or None when it names none (a gymnasium id)."""
    if env_id in gym.registry:
        return None
    maker = _registered_pettingzoo_env(env_id)
    if maker is not None or not _MODULE_PATH.fullmatch(env_id):
        return maker
    try:
        return _module_maker(env_id)
    except ModuleNotFoundError as exc:
        if not exc.name or not _on_path(exc.name, env_id):  # the module is there but imports one that is not
            raise ConfigError(_import_failure(env_id, env_id, exc)) from None
    # Not a module: a callable in its parent module.
    parent, name = env_id.rsplit(".", 1)
    try:
        maker = getattr(importlib.import_module(parent), name, None)
    except ImportError as exc:
        raise ConfigError(_import_failure(env_id, parent, exc)) from None
    if maker is None:
        raise ConfigError(f"{env_id}: module {parent} has no {name!r}")
    if not callable(maker):
        raise ConfigError(f"{env_id} is neither a PettingZoo env module nor a callable that makes an env")
    return maker


def _registered_pettingzoo_env(env_id: str) -> Callable[..., Any] | None:
    """``pettingzoo.make`` of a registered id (``classic/connect_four-v3``,
    or its module path ``pettingzoo.classic.connect_four_v3``), parallel
    where the env has that form; None when PettingZoo does not know it."""
    parts = env_id.split(".")
    from_module = parts[0] == "pettingzoo" and len(parts) == 3
    if "/" not in env_id and not from_module:
        return None
    try:
        import pettingzoo
        from pettingzoo.env_registry.exceptions import PettingZooRegistryError
        from pettingzoo.env_registry.registration import spec
    except ImportError:
        if from_module:
            raise ConfigError(f"{env_id} needs PettingZoo: pip install pettingzoo") from None
        return None
    registered = f"{parts[1]}/{parts[2]}" if from_module else env_id
    for kind in ("parallel", "aec"):
        try:
            spec(kind, registered)
        except PettingZooRegistryError:
            continue
        return functools.partial(pettingzoo.make, kind, registered)
    return None


def _module_maker(module_name: str) -> Any:
    """``parallel_env`` of the module, else its turn-based ``env``."""
    module = importlib.import_module(module_name)
    maker = getattr(module, "parallel_env", None) or getattr(module, "env", None)
    if not callable(maker):
        raise ConfigError(
            f"module {module_name} has neither parallel_env() nor env(): it is not a PettingZoo env module"
        )
    return maker


class PettingZooCreator:
    """The PettingZoo env ``env_id`` names (see :func:`pettingzoo_maker`),
    made with ``env_kwargs``, as a picklable callable for worker processes."""

    def __init__(self, env_id: str, env_kwargs: dict | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return pettingzoo_maker(self.env_id)(*args, **{**self.env_kwargs, **kwargs})


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is one of ale-py's (``ALE/Pong-v5``)."""
    return env_modules(env_id)[0].startswith("ALE/")


class EnvCreator:
    """``gymnasium.make(env_id, **env_kwargs)`` as a picklable callable, so
    that worker processes started with spawn or forkserver can make the env.
    Unpickling it there imports this module, which registers the built-in
    envs; calling it imports the modules the id needs (see the module
    docstring).

    ``atari_preprocessing`` wraps ALE envs in :func:`pufferrs.wrappers.atari`
    (``training`` adds episodic life and clipped rewards);
    MiniGrid and BabyAI envs report ``success``
    (:class:`~pufferrs.wrappers.GoalSuccess`);
    ``drop_observations`` and ``max_string_length`` apply
    :class:`~pufferrs.wrappers.DropObservations` and
    :class:`~pufferrs.wrappers.StringObservations`.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None = None,
        imports: str | None = None,
        atari_preprocessing: bool = False,
        training: bool = True,
        drop_observations: str | None = None,
        max_string_length: int | None = None,
    ):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.imports = imports
        self.atari_preprocessing = atari_preprocessing and is_atari(env_id)
        self.training = training
        self.drop_observations = drop_observations
        self.max_string_length = max_string_length

    @classmethod
    def from_config(cls, config: Config, training: bool = True) -> EnvCreator:
        return cls(
            config.env,
            config.env_kwargs,
            config.imports,
            config.atari_preprocessing,
            training,
            config.drop_observations,
            config.max_string_length,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> gym.Env:
        env_id = _import_env_modules(self.env_id, self.imports)
        kwargs = {**self.env_kwargs, **kwargs}
        if self.atari_preprocessing:
            kwargs.setdefault("frameskip", 1)  # the preprocessing skips frames itself, max-pooling the last two
            kwargs.setdefault("repeat_action_probability", 0.25)
        env = gym.make(env_id, *args, **kwargs)
        if self.atari_preprocessing:
            env = atari(env, training=self.training)
        if env_id.startswith(("MiniGrid-", "BabyAI-")):
            env = GoalSuccess(env)
        if self.drop_observations:
            env = DropObservations(env, self.drop_observations)
        if self.max_string_length is not None:
            env = StringObservations(env, self.max_string_length)
        return env


def env_creator(config: Config, training: bool = True) -> EnvCreator | PettingZooCreator:
    """The picklable creator of ``config.env``: a PettingZoo module's env,
    or a gymnasium env with the wrappers of :class:`EnvCreator`."""
    if pettingzoo_maker(config.env) is not None:
        return PettingZooCreator(config.env, config.env_kwargs)
    return EnvCreator.from_config(config, training)


def check_env(config: Config) -> None:
    """Raises :class:`ConfigError` when ``config.env`` is neither a
    registered env that ``gymnasium.make`` can build with
    ``config.env_kwargs`` nor a PettingZoo module that builds with them
    (nor, with ``config.vectorization``, a vector env of one env)."""
    if config.vectorization != "none":
        _import_env_modules(config.env, config.imports)
        try:
            VectorEnvCreator(config.vectorization, config.env, 1, config.seed, config.env_kwargs)().close()
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to build is the user's env or arguments
            raise ConfigError(
                f"{config.env} ({config.vectorization}) with {config.env_kwargs or {}} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return
    if pettingzoo_maker(config.env) is not None:
        try:
            env_creator(config)().close()
        except Exception as exc:  # noqa: BLE001 - any failure to build is the user's env or arguments
            raise ConfigError(
                f"{config.env} with {config.env_kwargs or {}} failed: {type(exc).__name__}: {exc}"
            ) from None
        return
    env_id = _import_env_modules(config.env, config.imports)
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ConfigError(f"unknown env {env_id!r}: {exc}") from None
    try:
        EnvCreator.from_config(config)().close()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to build is the user's env or arguments
        call = f"gymnasium.make({env_id!r}, **{config.env_kwargs or {}})"
        raise ConfigError(f"{call} failed: {type(exc).__name__}: {exc}") from None


def make_vecenv(
    config: Config,
    num_envs: int | None = None,
    backend: str | None = None,
    env_batch_size: int | None = None,
    seed: int | None = None,
    training: bool = True,
) -> Any:
    """The run's vector env (arguments override the config's); ``training``
    False leaves out the wrappers that only help learning (Atari's episodic
    life and clipped rewards)."""
    num_envs = config.num_envs if num_envs is None else num_envs
    backend = config.backend if backend is None else backend
    if config.vectorization != "none":
        return _make_vectorized(config, num_envs, backend, env_batch_size, config.seed if seed is None else seed)
    try:
        return vector.make(
            env_creator(config, training),
            num_envs=num_envs,
            backend=backend,
            num_workers=config.num_workers if backend in ("multiprocessing", "ray") else None,
            batch_size=env_batch_size,
            seed=config.seed if seed is None else seed,
        )
    except (ValueError, TypeError) as exc:  # sizes that do not divide, bad spaces
        raise ConfigError(str(exc)) from exc


def _make_vectorized(config: Config, num_envs: int, backend: str, env_batch_size: int | None, seed: int) -> Any:
    """``num_envs`` envs as vector envs of several rows (one per worker,
    or per batch on Serial): see :mod:`pufferrs.vector.vector_envs`."""
    workers = config.num_workers if backend == "multiprocessing" else None
    count = vector_env_count(num_envs, backend, workers, env_batch_size)
    size = num_envs // count
    _import_env_modules(config.env, config.imports)
    creators = [
        VectorEnvCreator(config.vectorization, config.env, size, seed + e * size, config.env_kwargs)
        for e in range(count)
    ]
    try:
        return vector.make(
            creators,
            num_envs=count,
            backend=backend,
            num_workers=count if backend == "multiprocessing" else None,
            batch_size=env_batch_size // size if env_batch_size else None,
            seed=seed,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc


def make_policy(env: Any, config: Config) -> nn.Module:
    """The policy ``config.policy`` names for ``env``'s spaces:
    :class:`~pufferrs.encoders.Auto` (``auto``, with ``config.encoders``),
    :class:`~pufferrs.models.Default`, :class:`~pufferrs.models.Convolutional`
    (image stacks, channels first or last) or
    :class:`~pufferrs.models.ProcgenResnet` (``procgen``, ``(H, W, C)``
    images); inside an :class:`~pufferrs.models.LSTMWrapper` when
    ``config.lstm``, inside a :class:`~pufferrs.normalize.NormalizedPolicy`
    when ``config.normalize_observations``."""
    from pufferrs.encoders import Auto

    name, hidden = config.policy.lower(), config.hidden_size
    try:
        if name == "auto":
            # An LSTM carries one memory to both heads: one trunk.
            separate = False if config.lstm else config.separate_value
            policy: nn.Module = Auto(
                env,
                hidden_size=hidden,
                encoders=config.encoders,
                separate_value=separate,
                log_std_init=config.log_std_init,
            )
        elif name == "default":
            policy = Default(env, hidden_size=hidden, log_std_init=config.log_std_init)
        elif name == "convolutional":
            shape = tuple(env.single_observation_space.shape)
            channels_last = len(shape) == 3 and shape[-1] <= 4 < shape[0]
            framestack = shape[-1] if channels_last else shape[0]
            policy = Convolutional(env, framestack, hidden_size=hidden, output_size=hidden, channels_last=channels_last)
        elif name == "procgen":
            policy = ProcgenResnet(env, mlp_width=hidden)
        else:
            raise ConfigError(f"unknown policy {config.policy!r}")
        if config.lstm:
            policy = LSTMWrapper(env, policy, input_size=hidden, hidden_size=hidden)
        if config.normalize_observations:
            policy = NormalizedPolicy(env, policy, clip=config.obs_clip)
    except (TypeError, ValueError) as exc:  # e.g. a Dict action space, byte rows to normalise, a bad encoder
        raise ConfigError(f"{config.policy} policy: {exc}") from exc
    return policy


def describe_policy(policy: nn.Module) -> list[str]:
    """Lines that say how ``policy`` encodes each observation leaf (the
    automatic policy's choices), or its class."""
    inner = policy
    while not hasattr(inner, "summary") and hasattr(inner, "policy"):
        inner = inner.policy
    lines = list(getattr(inner, "summary", [f"{type(inner).__name__} encoder"]))
    if isinstance(policy, LSTMWrapper) or hasattr(policy, "lstm"):
        lines.append("then an LSTM")
    return lines


def is_recurrent(policy: nn.Module) -> bool:
    """Whether ``policy`` speaks LSTMWrapper's protocol (a state dict with
    ``lstm_h``/``lstm_c``, ``(B, T)`` sequences in ``forward``), directly or
    through a wrapper that passes attributes on (``NormalizedPolicy``)."""
    return isinstance(policy, LSTMWrapper) or hasattr(policy, "lstm")
