"""How a command line becomes a :class:`~pufferrs.config.Config`: one option
per field (typed by its annotation, in the ``--help`` section its metadata
names), the presets that ``--help`` lists, then ``--config FILE`` and the
options typed on top; for ``--resume``, the checkpoint's config first. The
commands themselves are in :mod:`pufferrs.__main__`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pufferrs.config import Config


def flag(name: str, value: Any = None) -> str:
    """The option that sets a Config field: ``--num-envs 8``, ``--no-lstm``."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{flag}"
    return f"--{flag}" if value is None else f"--{flag} {value}"


def presets_text() -> str:
    from pufferrs.presets import FAMILY_PRESETS, PRESETS

    def flags(preset: dict[str, Any]) -> str:
        return " ".join(flag(k, f"'{json.dumps(v)}'" if isinstance(v, dict) else v) for k, v in preset.items())

    # Families that share one preset (gymnasium's control envs) on one line.
    grouped: dict[str, list[str]] = {}
    for prefix, preset in FAMILY_PRESETS:
        grouped.setdefault(flags(preset), []).append(f"{prefix}*")
    families = [(", ".join(prefixes), preset) for preset, prefixes in grouped.items()]
    presets = [*families, *((env, flags(preset)) for env, preset in PRESETS.items())]
    return "\n".join(f"  {env}: {shown}" for env, shown in presets)


# ---------------------------------------------------------------------------
# train: options from the Config dataclass


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"delay\": 8}}', got {text!r}")
    return value


#: Seeds the command takes: non-negative, and below 2**63, so that a seed
#: is stored and passed exactly as a signed 64-bit integer everywhere it
#: goes (``torch.manual_seed`` takes up to 2**64 - 1; numpy's int64).
MAX_SEED = 2**63 - 1


def seed_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is an integer from 0 to 2**63 - 1, got {text}")
    return value


def encoders_argument(text: str) -> dict:
    """``--encoders``: a JSON object of leaf keys to encoder names, checked
    here so that a bad name is an argument error and not a traceback."""
    from pufferrs.encoders import check_encoders

    value = json_object(text)
    try:
        check_encoders(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


#: Options whose values need more checking than their annotation's type.
OPTION_TYPES = {"seed": seed_argument, "encoders": encoders_argument}


def add_config_options(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """One option per Config field but ``env`` (the positional), in the
    ``--help`` section its metadata names, typed by its annotation: a bool
    is ``--x/--no-x``, a dict is JSON, ``int | None`` takes an int.
    Defaults are None, so that only what the user typed overrides the env's
    preset; the help shows Config's own default. Returns the sections."""
    from pufferrs.config import Config

    defaults, types = Config(), typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name == "env":
            continue
        group = f.metadata["group"]
        if group not in sections:
            sections[group] = parser.add_argument_group(group)
        default, choices = getattr(defaults, f.name), f.metadata["choices"]
        help_text = f.metadata["help"]
        if default is not None:
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        # `int | None` is parsed as an int: None is the default, not typed.
        kind = next(t for t in typing.get_args(types[f.name]) or (types[f.name],) if t is not type(None))
        option, section = flag(f.name), sections[group]
        if kind is bool:
            section.add_argument(option, action=argparse.BooleanOptionalAction, help=help_text)
        elif kind is dict:
            section.add_argument(option, type=OPTION_TYPES.get(f.name, json_object), metavar="JSON", help=help_text)
        else:
            metavar = None if choices else f.name.upper()
            kind = OPTION_TYPES.get(f.name, kind)
            section.add_argument(option, type=kind, choices=choices, metavar=metavar, help=help_text)
    return sections


def options_given(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields typed on the command line (``env`` aside)."""
    from pufferrs.config import Config

    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name != "env" and getattr(args, f.name) is not None
    }


def file_settings(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """``(env, other fields)`` of ``--config FILE`` (nothing without one)."""
    from pufferrs.config_files import read_config_file

    values = read_config_file(args.config) if args.config else {}
    return values.pop("env", None), values


def config_from_args(args: argparse.Namespace) -> Config:
    """The defaults, the env's presets, ``--config FILE``, then the options
    typed; the run directory defaults to runs/NAME."""
    from pufferrs.config import Config

    file_env, file_values = file_settings(args)
    config = Config.for_env(args.env or file_env, **{**file_values, **options_given(args)})
    name_run_dir(config, args)
    return config


def name_run_dir(config: Config, args: argparse.Namespace) -> None:
    if config.run_dir is None:
        name = args.name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', config.env)}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path("runs") / name
        suffix = 1
        while run_dir.exists():  # two runs in the same second keep apart
            suffix += 1
            run_dir = Path("runs") / f"{name}-{suffix}"
        config.run_dir = str(run_dir)


def resumed_config(args: argparse.Namespace) -> tuple[Config, dict[str, Any], Path]:
    """``(config, checkpoint, its path)`` of ``--resume``: the checkpoint's
    config, then ``--config FILE``, then the options typed (``--total-steps``
    to train longer, ...). The run continues in the checkpoint's run
    directory unless ``--run-dir`` or ``--name`` says otherwise. Code the
    checkpoint names runs only as ``pufferrs eval`` allows it."""
    from pufferrs.checkpoints import load_checkpoint
    from pufferrs.errors import CheckpointError
    from pufferrs.resume import find_checkpoint, run_directory_of

    path = find_checkpoint(args.resume)
    file_env, file_values = file_settings(args)
    env = args.env or file_env
    checkpoint, config = load_checkpoint(
        path, "cpu", env=env, imports=args.imports, trust_code=args.trust_checkpoint_code
    )
    trained_on = checkpoint["config"]["env"]
    if env is not None and env != trained_on:
        raise CheckpointError(f"{str(path)!r} was trained on {trained_on}, not {env}: resume it on {trained_on}")
    config = dataclasses.replace(config, **{**file_values, **options_given(args)})
    if args.run_dir is None:
        config.run_dir = None if args.name else str(run_directory_of(path))
    name_run_dir(config, args)
    return config, checkpoint, path
