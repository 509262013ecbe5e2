"""Episode statistics: what the infos of an episode's steps say about it.

The vector env hands out one info dict per row and step (most are empty);
the info of the step that ends an episode also holds ``episode_return``,
``episode_length``, ``final_obs`` and ``final_info`` (see
:mod:`pufferrs.vector`). An env's per-step terms (MuJoCo's
``reward_forward``, ``reward_ctrl``, ``x_velocity``) say one step's value,
so the last step's info alone is not the episode's result.
:class:`EpisodeStats` keeps, per row, what the episode's steps need, and
turns each key into one number per episode by a rule:

- ``sum``: summed over the episode's steps (per-step reward terms);
- ``mean``: averaged over the steps that reported it (state readings);
- ``last``: the value at the episode's last step (results such as
  ``success``, ``game_return``, and anything not known: as before);
- ``none``: left out (running counters such as ALE's ``frame_number``).

A key's rule is, first that found: the user's (``--info-metrics``,
:func:`parse_info_metrics`), the env family's (:data:`FAMILIES`, by env id
prefix), then :func:`default_rule` by the key's name. The vector env's own
entries (:data:`VECTOR_KEYS`) are always ``last``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pufferrs.errors import ConfigError

__all__ = [
    "COUNTERS",
    "ENDED_EPISODE",
    "ENV_EPISODE",
    "FAMILIES",
    "RULES",
    "VECTOR_KEYS",
    "EpisodeStats",
    "Family",
    "default_rule",
    "family_of",
    "parse_info_metrics",
    "shown_metrics",
]

SUM, MEAN, LAST, NONE = "sum", "mean", "last", "none"
RULES = (SUM, MEAN, LAST, NONE)

#: Info keys that are not a result of the episode that ends: running
#: counters (ALE's ``frame_number`` counts every frame since the env was
#: made, ``episode_frame_number`` is the episode's length in frames) and the
#: state of a game (``lives``). They are left out of the episode statistics.
COUNTERS = frozenset({"frame_number", "episode_frame_number", "lives", "total_steps", "total_frames"})
#: What the vector env adds to the info of an episode's last step: its last
#: observation, and the env's own info of that step again (whose entries are
#: already at the top level).
ENDED_EPISODE = frozenset({"final_obs", "final_info"})
#: What a multi-agent vector env adds to the info of an env's first row at
#: the step where every agent of the env is done, whether or not that row's
#: own agent ended in that step.
ENV_EPISODE = ("env_episode_return", "env_episode_length")
#: The vector env's own entries: the episode's return and length, as the
#: vector env counted them. Always ``last``; no rule changes them.
VECTOR_KEYS = frozenset({"episode_return", "episode_length", *ENV_EPISODE})
#: State readings that a step reports (gymnasium's MuJoCo envs): their mean
#: over the episode says something, their last value one moment.
READINGS = frozenset(
    {
        "x_position",
        "y_position",
        "z_position",
        "x_velocity",
        "y_velocity",
        "z_velocity",
        "distance_from_origin",
        "z_distance_from_origin",
    }
)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is one number (a bool counts as 0 or 1)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value)
    return None


def _numbers(info: dict, prefix: str = "") -> dict[str, float]:
    """Every single number of ``info``, nested dicts flattened with ``/``,
    :data:`ENDED_EPISODE` left out; counters kept (their rule drops them)."""
    out: dict[str, float] = {}
    for key, value in info.items():
        if not isinstance(key, str) or (not prefix and key in ENDED_EPISODE):
            continue
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}/"))
            continue
        number = _number(value)
        if number is not None:
            out[prefix + key] = number
    return out


# ---------------------------------------------------------------------------
# Rules


def default_rule(key: str) -> str:
    """The rule of ``key`` (flattened, ``a/b``) by its last part's name:
    counters ``none``; ``reward_*``/``*_reward`` ``sum`` (per-step reward
    terms; ``episode_*`` excepted, an episode's total already); known state
    readings ``mean``; anything else ``last``."""
    name = key.rpartition("/")[2]
    if key in VECTOR_KEYS:
        return LAST
    if name in COUNTERS:
        return NONE
    if not name.startswith("episode_") and (name.startswith("reward_") or name.endswith("_reward")):
        return SUM
    if name in READINGS:
        return MEAN
    return LAST


@dataclass(frozen=True)
class Family:
    """What an env family changes: ``rules`` (flattened key: rule) over
    :func:`default_rule`, and the few metrics the progress line shows
    (``shown``, each when reported; every metric goes to the files)."""

    rules: Mapping[str, str] = field(default_factory=dict)
    shown: tuple[str, ...] = ()


_LOCOMOTION = Family(shown=("reward_forward", "x_velocity"))
_ATARI = Family(rules=dict.fromkeys(("episode_frame_number", "frame_number", "lives"), NONE), shown=("game_return",))

#: Env families by env id prefix (after any ``module:``), first match wins:
#: gymnasium's MuJoCo envs and ALE's Atari games.
FAMILIES: tuple[tuple[str, Family], ...] = (
    ("ALE/", _ATARI),
    ("HalfCheetah-", _LOCOMOTION),
    ("Hopper-", _LOCOMOTION),
    ("Walker2d-", _LOCOMOTION),
    ("Ant-", _LOCOMOTION),
    ("HumanoidStandup-", Family(shown=("reward_linup",))),
    ("Humanoid-", _LOCOMOTION),
    ("Swimmer-", _LOCOMOTION),
    ("Reacher-", Family(shown=("reward_dist",))),
    ("Pusher-", Family(shown=("reward_dist", "reward_near"))),
    ("InvertedPendulum-", Family()),
    # Its per-step penalties are reward terms (reward = survive - both).
    (
        "InvertedDoublePendulum-",
        Family(rules=dict.fromkeys(("distance_penalty", "velocity_penalty"), SUM), shown=("distance_penalty",)),
    ),
)


def family_of(env_id: str) -> Family:
    """The :class:`Family` of ``env_id`` (``module:Id`` ids by their id),
    or an empty one."""
    name = env_id.rpartition(":")[2]
    for prefix, family in FAMILIES:
        if name.startswith(prefix):
            return family
    return Family()


def parse_info_metrics(text: str | None) -> dict[str, str]:
    """``--info-metrics``: ``KEY=sum|mean|last|none`` entries,
    comma-separated, keys as reported under ``env/`` (flattened ``a/b``);
    a :class:`~pufferrs.errors.ConfigError` naming any entry that is not
    one."""
    out: dict[str, str] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, rule = (part.strip() for part in entry.partition("="))
        key = key.removeprefix("env/")
        if not sep or not key or rule not in RULES:
            raise ConfigError(f"info_metrics: {entry!r} is not KEY=sum|mean|last|none")
        if key in VECTOR_KEYS:
            raise ConfigError(f"info_metrics: {entry!r}: {key} is the vector env's own, always reported as it is")
        if out.get(key, rule) != rule:
            raise ConfigError(f"info_metrics: {key} is given two rules, {out[key]} and {rule}")
        out[key] = rule
    return out


# ---------------------------------------------------------------------------
# Accumulation


class EpisodeStats:
    """An update's episode statistics, from every ``recv``'s infos.

    :meth:`add` takes each ``recv``'s ``(infos, row_ids, ended, masks)``;
    per row it sums the ``sum``/``mean`` keys of the steps of the row's
    running episode (a present agent's steps, or the step that ends its
    episode), and at the episode's end makes the episode's numbers by the
    rules, which :meth:`add` also returns (evaluation keeps each one);
    :meth:`take` averages them over the update's episodes.
    """

    def __init__(self, env_id: str = "", info_metrics: str | None = None):
        self.family = family_of(env_id)
        self.user = parse_info_metrics(info_metrics)
        self.rules: dict[str, str] = {}  # resolved rules, by flattened key
        # Top-level keys that no step needs to look at: their rule is
        # last or none (dicts are never here: their keys may need it).
        self.skip: set[str] = set(ENDED_EPISODE | VECTOR_KEYS)
        # Per row: key -> [sum, steps] of the running episode.
        self.running: dict[int, dict[str, list[float]]] = {}
        self.values: dict[str, list[float]] = defaultdict(list)

    def rule(self, key: str) -> str:
        """The rule of flattened ``key``: the user's, the family's, or the
        default (see the module docstring)."""
        rule = self.rules.get(key)
        if rule is None:
            if key in VECTOR_KEYS:
                rule = LAST
            else:
                rule = self.user.get(key) or self.family.rules.get(key) or default_rule(key)
            self.rules[key] = rule
        return rule

    def add(
        self, infos: Sequence[dict], row_ids: np.ndarray, ended: np.ndarray, masks: np.ndarray
    ) -> list[tuple[int, dict[str, float]]]:
        """One ``recv``'s infos, rows ``row_ids``; ``ended`` is
        ``terminals | truncations``, ``masks`` the present agents. Returns
        ``(row, numbers)`` of each episode that ended."""
        # Most infos are empty dicts: count them without reading them (in C
        # for a list; `Infos.count` makes no empty row), and look at no row
        # but the ends when every non-empty info is an episode's end.
        ends = ended.nonzero()[0].tolist() if ended.any() else []
        others = len(infos) - infos.count({}) > sum(1 for k in ends if infos[k])
        if others:
            done, present, rows, skip = ended.tolist(), masks.tolist(), row_ids.tolist(), self.skip
            for k, info in enumerate(infos):
                if info and present[k] and not done[k] and not skip.issuperset(info):
                    self._step(self.running.setdefault(rows[k], {}), info, "")
        episodes = [(int(row_ids[k]), self._end(int(row_ids[k]), infos[k])) for k in ends]
        if ends and others:
            # A multi-agent env's summary is on its first row, whose own
            # agent may have ended before (or may be running still).
            for k, info in enumerate(infos):
                if not ended[k] and ENV_EPISODE[0] in info:
                    for key in ENV_EPISODE:
                        if key in info:
                            self.values[key].append(float(info[key]))
        return episodes

    def _step(self, running: dict[str, list[float]], info: dict, prefix: str) -> None:
        """Adds one step's ``sum``/``mean`` values of ``info`` to ``running``."""
        skip, rules = self.skip, self.rules
        for key, value in info.items():
            if not prefix and key in skip:
                continue
            if isinstance(value, dict):
                self._step(running, value, f"{prefix}{key}/")
                continue
            name = prefix + key if prefix else key
            rule = rules.get(name) or self.rule(name)
            if rule not in (SUM, MEAN):
                if not prefix:
                    skip.add(key)
                continue
            # Python floats and np.float64 (MuJoCo's terms) need no check.
            number = float(value) if isinstance(value, float) else _number(value)
            if number is not None:
                acc = running.get(name)
                if acc is None:
                    running[name] = [number, 1]
                else:
                    acc[0] += number
                    acc[1] += 1

    def _end(self, row: int, info: dict) -> dict[str, float]:
        """The episode of ``row`` ended with ``info``: its numbers by the
        rules, kept for :meth:`take` and returned; the row's next episode
        starts from nothing."""
        running = self.running.pop(row, {})
        numbers = _numbers(info)
        episode: dict[str, float] = {}
        for key in numbers.keys() | running.keys():
            rule = self.rule(key)
            if rule == NONE:
                continue
            if rule == LAST:
                if key in numbers:
                    episode[key] = numbers[key]
                continue
            total, steps = running.get(key, (0.0, 0))
            if key in numbers:
                total, steps = total + numbers[key], steps + 1
            episode[key] = total if rule == SUM else total / steps
        for key, value in episode.items():
            self.values[key].append(value)
        return episode

    def take(self) -> dict[str, float | int]:
        """The update's metrics, and a fresh start for the next update:
        ``env/<key>``, the mean over the update's episodes that reported
        ``key`` (absent when none did: ``env/episode_return`` is absent when
        no episode ended); ``env/episodes``, the episodes that ended; and
        ``episodes/<key>`` where fewer episodes reported ``key`` (Atari's
        ``game_return``, at a game's end only), for weighted means."""
        row: dict[str, float | int] = {}
        episodes = len(self.values.get("episode_return", ()))
        for key, values in sorted(self.values.items()):
            row[f"env/{key}"] = float(np.mean(values))
        row["env/episodes"] = episodes
        for key, values in sorted(self.values.items()):
            if len(values) != episodes:
                row[f"episodes/{key}"] = len(values)
        self.values.clear()
        return row


def shown_metrics(family: Family, metrics: Mapping[str, Any], most: int = 3) -> list[str]:
    """The ``env/`` keys of ``metrics`` that a progress line shows: the
    family's chosen ones that are reported, else the first ``most`` of the
    others (every metric still goes to ``metrics.jsonl``)."""
    if family.shown:
        return [f"env/{k}" for k in family.shown if f"env/{k}" in metrics][:most]
    main = {"env/episode_return", "env/episode_length", "env/episodes"}
    return [k for k in metrics if k.startswith("env/") and k not in main][:most]
