"""What kind of env a creator made (gymnasium, native, PettingZoo parallel
or AEC, or an env that steps several rows at once: a gymnasium vector env,
EnvPool's included, or a PufferLib-style in-place env), how many rows it
takes and the spaces of one of its rows.

Its own module so that the backends (``base``) and the PettingZoo blocks
(``agents``) both ask it, and neither imports the other. PettingZoo is
imported only once something that is not a ``gymnasium.Env`` comes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from pufferrs.errors import UnsupportedSpaceError
from pufferrs.native import NativeEnv


def pettingzoo_kind(env: Any) -> str | None:
    """``"parallel"`` for a PettingZoo ``ParallelEnv``, ``"aec"`` for an
    ``AECEnv``, None for anything else (a gymnasium env included)."""
    if isinstance(env, gym.Env):
        return None
    try:
        from pettingzoo import AECEnv, ParallelEnv
    except ImportError:
        return None
    if isinstance(env, ParallelEnv):
        return "parallel"
    if isinstance(env, AECEnv):
        return "aec"
    return None


def native_envs(envs: list[Any]) -> list[Any] | None:
    """The Rust envs (``NativeEnv.handle``) of ``envs`` when every one is a
    native env as its creator made it (not wrapped), so that a block can
    step them natively; None otherwise (a wrapped native env steps through
    its Python ``step``)."""
    if all(type(env) is NativeEnv for env in envs):
        return [env.handle for env in envs]
    return None


def inplace_kind(env: Any) -> str | None:
    """``"vector"`` for a ``gymnasium.vector.VectorEnv`` (EnvPool's envs
    are one, and gymnasium envs too: the vector kind wins), ``"puffer"``
    for an env of PufferLib's in-place contract (``num_agents``,
    ``single_observation_space``, ``single_action_space`` and the arrays
    ``observations``, ``actions``, ``rewards``, ``terminals``,
    ``truncations``, ``masks``), None for anything else.
    :mod:`pufferrs.vector.inplace` steps both."""
    if isinstance(env, gym.vector.VectorEnv):
        return "vector"
    if isinstance(env, gym.Env):
        return None
    if all(hasattr(env, name) for name in PUFFER_ATTRIBUTES):
        return "puffer"
    return None


#: What an env of PufferLib's in-place contract has.
PUFFER_ATTRIBUTES = (
    "num_agents",
    "single_observation_space",
    "single_action_space",
    "observations",
    "actions",
    "rewards",
    "terminals",
    "truncations",
    "masks",
)


def rows_per_env(env: Any) -> int:
    """The rows one env takes: its agents (PettingZoo, native, PufferLib),
    its sub-envs (a vector env), else one."""
    kind = inplace_kind(env)
    if kind == "vector":
        return int(env.num_envs)
    if kind == "puffer":
        return int(env.num_agents)
    agents = agent_spaces(env)[0]
    return 1 if agents is None else len(agents)


def agent_spaces(env: Any) -> tuple[list[str] | None, Any, Any]:
    """``(possible_agents, observation space, action space)`` of one agent;
    ``possible_agents`` is None for a gymnasium env and for a vector env
    (whose rows are envs), ``[0, 1, ..]`` for a PufferLib-style env. Every agent of a
    PettingZoo env must have the same spaces, since all rows share one
    layout: agents that differ raise :class:`UnsupportedSpaceError`."""
    if isinstance(env, NativeEnv) and env.possible_agents is not None:
        # Declared in Rust with one space for every agent.
        return list(env.possible_agents), env.observation_space, env.action_space
    kind = inplace_kind(env)
    if kind == "vector":
        return None, env.single_observation_space, env.single_action_space
    if kind == "puffer":
        # PufferLib's agents are numbered (its agent_ids): a run counts
        # these envs, not their agents, as a PettingZoo env's.
        return list(range(int(env.num_agents))), env.single_observation_space, env.single_action_space
    if pettingzoo_kind(env) is None:
        return None, env.observation_space, env.action_space
    agents = list(env.possible_agents)
    if not agents:
        raise UnsupportedSpaceError(f"{type(env).__name__} has no possible_agents: there is no row to give them")
    for what, space_of, pad in (
        ("observation", env.observation_space, "pad_observations_v0"),
        ("action", env.action_space, "pad_action_space_v0"),
    ):
        groups: dict[str, list[str]] = {}
        spaces = [space_of(agent) for agent in agents]
        for agent, space in zip(agents, spaces):
            groups.setdefault(repr(space), []).append(agent)
        if any(space != spaces[0] for space in spaces):
            listed = "; ".join(f"{', '.join(map(repr, names))}: {space}" for space, names in groups.items())
            raise UnsupportedSpaceError(
                f"the agents of {type(env).__name__} have different {what} spaces ({listed}); pufferrs gives "
                f"every agent one row of one layout: pad them to one space first, e.g. with SuperSuit's "
                f"supersuit.{pad}(env), or run each group of agents as an env of its own"
            )
    return agents, env.observation_space(agents[0]), env.action_space(agents[0])
