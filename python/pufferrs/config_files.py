"""Configs as files: what ``pufferrs train --config FILE`` reads and what
``pufferrs sweep`` writes.

A config file holds :class:`~pufferrs.config.Config` fields by name, in
TOML (``.toml``, read with the standard library's ``tomllib``), YAML
(``.yaml``/``.yml``, with PyYAML) or JSON (``.json``: a run directory's
``config.json``). ``env`` may be among them. The command line applies a
file after the env's presets and before its own options, so a file is a
reusable set of options.

A run directory's ``config.json`` names that run's directory in
``run_dir``; read back, it would send a new run into the old one, so
``run_dir`` is left out of JSON files (TOML and YAML files are written by
people, and keep it). TOML has no null: a field left out of a TOML file
keeps its default.

Values are checked against the fields' types here, naming the file and
the field; :meth:`Config.validate` checks the rest.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pufferrs.config import Config
from pufferrs.errors import ConfigError

__all__ = ["read_config_file", "write_config_file"]

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError("YAML config files need PyYAML: pip install pufferrs[sweep] (or pyyaml)") from None
    return yaml


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The Config fields a TOML, YAML or JSON file sets (see the module
    docstring). Raises :class:`ConfigError` naming the file for a file
    that is missing, unreadable, not a table of Config fields, or holds a
    value of the wrong type."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"config file {str(path)!r}: expected .toml, .yaml, .yml or .json, got {path.suffix!r}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        if kind == "TOML":
            values = tomllib.loads(text)
        elif kind == "YAML":
            yaml = _yaml()
            try:
                values = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                # One line: the problem and where, without PyYAML's excerpt.
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                raise ValueError(f"{getattr(exc, 'problem', None) or exc}{where}") from None
        else:
            values = json.loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {exc}") from None
    if values is None:  # an empty YAML file
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a table of settings, got {type(values).__name__}")
    if kind == "JSON":
        values.pop("run_dir", None)
    _check(path, values)
    return values


def write_config_file(path: str | Path, config: Config, leave_out: tuple[str, ...] = ("run_dir",)) -> Path:
    """Writes every field of ``config`` but ``leave_out`` to ``path`` as
    YAML (``.yaml``/``.yml``, nulls kept) or JSON, in a form
    :func:`read_config_file` reads back to the same config."""
    path = Path(path)
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in leave_out}
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "YAML":
        text = _yaml().safe_dump(values, sort_keys=False)
    elif kind == "JSON":
        text = json.dumps(values, indent=2) + "\n"
    else:
        raise ConfigError(f"config files are written as .yaml or .json, not {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _check(path: Path, values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(Config)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"config file {str(path)!r}: unknown settings {', '.join(unknown)}")
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise ConfigError(f"config file {str(path)!r}: {name} must be {_describe(hints[name])}, got {value!r}")


def _kinds(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(k for arg in typing.get_args(hint) for k in _kinds(arg))
    return (hint,)


def _fits(value: Any, hint: Any) -> bool:
    kinds = _kinds(hint)
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):  # a bool is an int to Python, not to a config
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, tuple(k for k in kinds if k is not type(None)))


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
    kinds = _kinds(hint)
    text = " or ".join(names[k] for k in kinds if k is not type(None))
    return text + (" (or null)" if type(None) in kinds else "")
