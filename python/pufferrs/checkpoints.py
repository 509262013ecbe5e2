"""Checkpoints: writing them, and reading them back without running code.

A checkpoint is a ``{"state_dict", "config", "update", "global_step",
"optimizer", "reward_normalizer", ...}`` dict saved with :func:`torch.save`
(:meth:`pufferrs.ppo.Trainer.state_dict` and the config; what resuming
needs is described in :mod:`pufferrs.resume`); it loads with
``torch.load(..., weights_only=True)``, and the code a
checkpoint's config names to make its env runs only when the person
loading it names it too or trusts the file (:func:`load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pufferrs.config import Config, resolve_device
from pufferrs.errors import CheckpointError, UntrustedCodeError
from pufferrs.factories import check_env, make_policy, make_vecenv, named_code

__all__ = ["load_checkpoint", "policy_from_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, state: dict[str, Any], config: Config) -> Path:
    """Writes a trainer's ``state`` (:meth:`pufferrs.ppo.Trainer.state_dict`:
    the policy's ``state_dict`` under ``state_dict``, observation statistics
    included for a normalised policy, the optimizer, the reward normaliser's
    statistics, the progress and random generators) with the config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({**state, "config": dataclasses.asdict(config)}, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint under the real name
    return path


def load_checkpoint(
    path: str | Path,
    device: str = "cpu",
    *,
    env: str | None = None,
    imports: str | None = None,
    trust_code: bool = False,
) -> tuple[dict[str, Any], Config]:
    """``(checkpoint dict, Config)`` from a file :func:`save_checkpoint` wrote.

    A checkpoint is a file people download and share, so what its config
    names is not run on its word alone. The config may name code to make
    its env (a dotted path to a callable, ``module:EnvId``, ``imports``):
    unless ``trust_code``, that is refused with
    :class:`~pufferrs.errors.UntrustedCodeError` (see
    :func:`~pufferrs.factories.named_code`) unless the caller names it:
    ``env`` replaces the config's env, ``imports`` its imports (``""`` for
    none). Registered gymnasium and PettingZoo ids need neither.

    A file that does not load as plain tensors and data (``weights_only``)
    or lacks the weights and config raises
    :class:`~pufferrs.errors.CheckpointError`."""
    checkpoint = _read_checkpoint(Path(path), resolve_device(device))
    stored = checkpoint["config"]
    known = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in stored.items() if k in known})
    # What the file alone asks to run: what the caller passes is theirs.
    env_asks = named_code(config.env) if env is None else []
    import_asks = named_code(imports=config.imports) if imports is None else []
    if (env_asks or import_asks) and not trust_code:
        raise UntrustedCodeError(_untrusted_message(Path(path), config, env_asks, import_asks))
    if env is not None:
        config.env = env
    if imports is not None:
        config.imports = imports or None
    return checkpoint, config


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint dict in ``path``, loaded with ``weights_only``; a
    :class:`CheckpointError` naming the file for anything else."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        # torch warns about pickle protocols it was not written with: the
        # file is either a checkpoint or refused below, so the warning says
        # nothing the user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:  # a directory, no permission
        raise CheckpointError(f"cannot read the checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle: not a checkpoint
        # Never torch's own text: it advises loading with weights_only=False,
        # which runs whatever code the file holds.
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: {_why_not_loaded(exc)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: it holds no config")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{str(path)!r} is not a pufferrs checkpoint: it holds no state_dict")
    stored = checkpoint["config"]
    for name, kinds in (("env", (str,)), ("imports", (str, type(None))), ("env_kwargs", (dict,))):
        if name in stored and not isinstance(stored[name], kinds):
            raise CheckpointError(
                f"{str(path)!r} is not a pufferrs checkpoint: its config's {name} is {stored[name]!r}"
            )
    return checkpoint


def _why_not_loaded(exc: Exception) -> str:
    """What stopped ``torch.load``, in words that do not advise disabling
    ``weights_only``: the Python object the file refers to when torch names
    one (``posix.system``), else that it is not tensors and plain data."""
    found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
    if found:
        return f"it refers to the Python object {found[1]}, which a checkpoint of tensors and plain data never holds"
    return f"it does not load as tensors and plain data ({type(exc).__name__})"


def _untrusted_message(path: Path, config: Config, env_asks: list[str], import_asks: list[str]) -> str:
    """What the checkpoint asks to run, and the ways to allow it."""
    kwargs = f" with env_kwargs {config.env_kwargs}" if config.env_kwargs else ""
    allow = [f"--env {config.env} (env={config.env!r} in Python)"] if env_asks else []
    if import_asks:
        allow.append(f"--imports {config.imports} (imports={config.imports!r} in Python)")
    return (
        f"{str(path)!r} asks to {' and '.join(env_asks + import_asks)} to make its env {config.env!r}{kwargs}; "
        f"pufferrs runs no code named only in a checkpoint. If you trust that code, name it yourself: "
        f"{' and '.join(allow)}, or trust the file with --trust-checkpoint-code (trust_code=True)"
    )


def policy_from_checkpoint(
    path: str | Path,
    device: str = "cpu",
    *,
    env: str | None = None,
    imports: str | None = None,
    trust_code: bool = False,
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuilds the policy a checkpoint was trained with and loads its
    weights. ``env``, ``imports`` and ``trust_code`` are
    :func:`load_checkpoint`'s: code that the file alone names is refused."""
    checkpoint, config = load_checkpoint(path, device, env=env, imports=imports, trust_code=trust_code)
    check_env(config)
    probe = make_vecenv(config, num_envs=1, backend="serial")
    try:
        policy = make_policy(probe, config)
    finally:
        probe.close()
    try:
        policy.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or misshapen weights
        raise CheckpointError(f"{str(path)!r} does not fit the policy its config describes: {exc}") from None
    return policy.to(resolve_device(device)), config, checkpoint
