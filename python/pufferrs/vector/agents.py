"""Stepping a block of PettingZoo envs into the shared rows, one row per
agent: what :class:`~pufferrs._native.EnvBlock` does for gymnasium envs,
with the same interface (``reset(seed)``; ``step(actions=None, *,
dense=False)``, which reads the actions from the rows, returning ``(row,
info)`` pairs for the non-empty infos, or every row's info and ``ended``;
``current_env``). The blocks call the envs, check that they keep the
PettingZoo protocol and write the observations of the agents that act;
what the outcomes mean for the rows (returns, lengths, flags, masks, final
rows, the same-step reset) is the core's ``episodes.rs``, through
:class:`~pufferrs._native.EpisodeRows`.

Env ``e`` of the block owns rows ``e * A .. e * A + A - 1`` (``A =
len(possible_agents)``), slot ``k`` for ``possible_agents[k]``. A row whose
agent is absent (not yet there, ended, or not the one to move in a
turn-based game) is zero with ``mask`` False; its action is never sent.
What kind of env a creator made, and its agents' spaces, is
:mod:`pufferrs.vector.kinds`'s to say.

What the rows make of an env that bends the PettingZoo API (the README's
multi-agent section states the same):

- An agent that leaves ``agents`` without a termination or truncation flag
  is truncated at that step: its row gets the step's reward, ``truncated``,
  its final row (the observation the env still gave it, zero if none) and
  its episode statistics, like any agent that ends. Refusing it would stop
  envs that merely forget the flag; ignoring it would lose the episode's
  end, so that advantages ran across it.
- An agent that ended acts no more until its env resets, even if it stays
  in (or comes back to) ``agents``; an AEC env that selects it again
  without its flag is refused.
- Rewards of agents that are not playing (absent, or ended) are ignored.
- What cannot be given rows is refused with :class:`EnvProtocolError`
  (reaching the user as a ``WorkerError`` that names the env): an agent
  not in the ``possible_agents`` the vector env was made with, a reset
  that leaves no agent, an observation missing for an agent that acts, an
  AEC env that selects an agent not in ``agents``, and an AEC env whose
  ``step(None)`` does not remove the ended agent it was given for (the
  vector env would otherwise give it ``None`` steps forever)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium.spaces as gs
import numpy as np

from pufferrs._native import EpisodeRows
from pufferrs.errors import EnvProtocolError, PufferError, UnsupportedSpaceError
from pufferrs.spaces import Layout


def action_reader(action_layout: Layout, rows: np.ndarray) -> Callable[[], list[Any]]:
    """A function reading the actions of ``rows`` as one value per row
    (agent), the way PettingZoo envs expect them: ints for Discrete, private
    arrays otherwise."""
    n = rows.shape[0]

    def reader(space: gs.Space, view: Any) -> Callable[[], list[Any]]:
        if isinstance(space, gs.Discrete):
            return view.tolist
        if isinstance(space, gs.Dict):
            parts = [(key, reader(sub, view[key])) for key, sub in space.spaces.items()]

            def read_dict() -> list[Any]:
                values = [(key, read()) for key, read in parts]
                return [{key: column[i] for key, column in values} for i in range(n)]

            return read_dict
        if isinstance(space, gs.Tuple):
            tuple_parts = [reader(sub, v) for sub, v in zip(space.spaces, view)]

            def read_tuple() -> list[Any]:
                return list(zip(*(read() for read in tuple_parts))) if tuple_parts else [()] * n

            return read_tuple
        return lambda: list(view.copy())

    return reader(action_layout.space, action_layout.unflatten(rows))


class _AgentRows:
    """What both kinds of block share: the agents' slots, the rows' episode
    bookkeeping (:class:`~pufferrs._native.EpisodeRows`, the core's
    ``episodes.rs``: returns, lengths, ends, masks, final rows, the envs'
    summaries), observation writes and the protocol checks."""

    def __init__(
        self,
        envs: list[Any],
        first_env: int,
        arrays: dict[str, np.ndarray],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool,
    ) -> None:
        self.envs = envs
        self.first_env = first_env
        self.agents = list(envs[0].possible_agents)
        for i, env in enumerate(envs):
            if list(env.possible_agents) != self.agents:
                raise UnsupportedSpaceError(
                    f"env {first_env + i} has possible_agents {list(env.possible_agents)}, env {first_env} has "
                    f"{self.agents}: every env of a vector env must have the same agents"
                )
        A = self.A = len(self.agents)
        self.slot = {agent: k for k, agent in enumerate(self.agents)}
        rows = slice(first_env * A, (first_env + len(envs)) * A)
        self.obs = arrays["observations"][rows]
        self.layout = layout
        self.action_layout = action_layout
        self.check_bounds = check_bounds
        self.action_rows = arrays["actions"][rows]
        self.read_actions = action_reader(action_layout, self.action_rows)
        self.rows = EpisodeRows(len(envs), A, first_env, arrays, layout, check_bounds)
        self.current_env: int | None = None

    @property
    def ended(self) -> tuple[int, ...]:
        """The rows (positions in the block) whose agent's episode ended in
        the last step; empty, and false, when none did."""
        return self.rows.ended

    def _stage(self, actions: Any) -> None:
        """Writes a batch of actions (one per row, as ``send`` takes them)
        into the block's action rows, all or nothing: a batch that does
        not fit raises before any env steps, with ``current_env`` None."""
        self.current_env = None
        self.action_layout.flatten_batch(actions, out=self.action_rows, check_bounds=self.check_bounds)

    def _write(self, rows: list[int], observations: list[Any]) -> None:
        """Flattens ``observations`` into ``rows`` of the block: one call
        over the whole block when every row is written (rows come in env,
        then slot order, so they are then in order). An observation that
        does not fit raises its own error, with its env as ``current_env``."""
        layout, check_bounds = self.layout, self.check_bounds
        try:
            if len(rows) == len(self.obs):
                layout.flatten_batch(observations, out=self.obs, check_bounds=check_bounds)
                return
            for row, obs in zip(rows, observations):
                layout.flatten_into(obs, self.obs, row, check_bounds=check_bounds)
        except PufferError:
            for row, obs in zip(rows, observations):
                try:
                    layout.flatten(obs, check_bounds=check_bounds)
                except PufferError:
                    self.current_env = self.first_env + row // self.A
                    raise
            raise

    def _env_summary(self, e: int) -> dict[str, Any]:
        """What the info of the env's first row holds at its episode's end."""
        episode_return, steps = self.rows.summary(e)
        return {"env_episode_return": episode_return, "env_episode_length": steps}

    def _check_known(self, env: Any, agents: Any, what: str) -> None:
        """Refuses an agent of ``agents`` that has no slot."""
        for agent in agents:
            if agent not in self.slot:
                raise self._unknown(env, agent, what)

    def _unknown(self, env: Any, agent: Any, what: str) -> EnvProtocolError:
        now = list(getattr(env, "possible_agents", []))
        changed = f" (the env's possible_agents is now {now})" if now != self.agents else ""
        return EnvProtocolError(
            f"{type(env).__name__} {what} agent {agent!r}, which is not in the possible_agents {self.agents} "
            f"the vector env was made with{changed}: every agent needs its row from the start, so possible_agents "
            f"must list every agent that may ever play"
        )


def _observations(env: Any, obs: Any, agents: list[str], what: str) -> list[Any]:
    """The observations of ``agents`` from the env's ``obs`` dict, refusing
    one that is missing with the agents it lacks (not a bare KeyError)."""
    try:
        return [obs[agent] for agent in agents]
    except KeyError:
        missing = [agent for agent in agents if agent not in obs]
        raise EnvProtocolError(
            f"{type(env).__name__}.{what} returned no observation for {', '.join(map(repr, missing))}, in agents "
            f"and still playing: every agent in agents needs one"
        ) from None


def _merge(infos: dict[int, dict], row: int, info: dict) -> None:
    infos[row] = {**infos[row], **info} if row in infos else info


def _merge_all(infos: dict[int, dict], agents: list[str], rows: list[int], env_infos: dict) -> None:
    """The non-empty infos of ``agents`` into those of their ``rows``."""
    for agent, row in zip(agents, rows):
        info = env_infos.get(agent)
        if info:
            _merge(infos, row, info)


def _infos(infos: dict[int, dict], n: int, dense: bool, ended: tuple[int, ...]) -> Any:
    """``(row, info)`` for the non-empty infos, in row order; with ``dense``
    those infos by row and ``ended`` (``VectorEnv._step_all``'s result:
    its :class:`~pufferrs.vector.infos.Infos` makes the empty ones when
    they are read)."""
    if dense:
        return infos, ended
    return sorted(infos.items()) if infos else []


class ParallelBlock(_AgentRows):
    """A block of PettingZoo ``ParallelEnv``s: every present agent acts at
    every step."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: The agents of each env that act at the next step, in slot order,
        #: and their rows in the block: which actions each env is given.
        self.live: list[list[str]] = [[] for _ in self.envs]
        self.live_rows: list[list[int]] = [[] for _ in self.envs]
        #: A copy of each env's ``agents`` as last seen: a step that leaves it
        #: equal and raises no flag changes no row's role (one list
        #: comparison, the common case).
        self.seen: list[list[str]] = [[] for _ in self.envs]

    def reset(self, seed: int | None = None) -> list[tuple[int, dict]]:
        infos: dict[int, dict] = {}
        rows: list[int] = []
        observations: list[Any] = []
        self.rows.begin_reset()
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            obs, env_infos = env.reset(seed=None if seed is None else seed + self.first_env + e)
            self.rows.start(e)
            self._restart(e, env, obs, env_infos, rows, observations, infos)
        self._write(rows, observations)
        self.current_env = None
        self.rows.end_reset()
        return sorted(infos.items())

    def _act(self, e: int, agents: list[str]) -> None:
        """Makes ``agents`` (in slot order) the ones of env ``e`` that act."""
        base = e * self.A
        rows = [base + self.slot[agent] for agent in agents]
        self.live[e], self.live_rows[e] = agents, rows
        self.rows.act(e, rows)

    def _restart(
        self, e: int, env: Any, obs: dict, env_infos: dict, rows: list, observations: list, infos: dict
    ) -> None:
        """Env ``e`` started an episode: the agents present join and act,
        their rows to be written with ``obs``."""
        self._check_known(env, env.agents, "has in agents after reset()")
        if not env.agents:
            raise EnvProtocolError(
                f"{type(env).__name__}.reset() left agents empty: with no agent to act, its episode could never "
                f"step or end"
            )
        self.seen[e] = list(env.agents)
        live = sorted(set(self.seen[e]), key=self.slot.__getitem__)
        self.rows.join([e * self.A + self.slot[agent] for agent in live])
        self._act(e, live)
        rows += self.live_rows[e]
        observations += _observations(env, obs, live, "reset()")
        _merge_all(infos, live, self.live_rows[e], env_infos)

    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """Steps every env with the actions in its agents' action rows
        (``actions`` first written there, all or nothing, when given);
        returns ``(row, info)`` for the non-empty infos, or with ``dense``
        one info per row and ``ended``."""
        if actions is not None:
            self._stage(actions)
        actions = self.read_actions()
        episodes = self.rows
        infos: dict[int, dict] = {}
        rows: list[int] = []
        observations: list[Any] = []
        episodes.begin_step()
        e = 0
        try:
            for e, (env, live, live_rows) in enumerate(zip(self.envs, self.live, self.live_rows)):
                obs, env_rewards, env_terms, env_truncs, env_infos = env.step(
                    {agent: actions[row] for agent, row in zip(live, live_rows)}
                )
                episodes.rewards(live_rows, [env_rewards.get(agent, 0.0) for agent in live])
                if any(env_infos.values()):
                    _merge_all(infos, live, live_rows, env_infos)
                if any(env_terms.values()) or any(env_truncs.values()) or env.agents != self.seen[e]:
                    self._ends(e, env, obs, env_terms, env_truncs, rows, observations, infos)
                else:
                    # Every agent plays on (the common case).
                    rows += live_rows
                    observations += _observations(env, obs, live, "step()")
        except Exception:
            self.current_env = self.first_env + e
            raise
        if rows:
            try:
                self._write(rows, observations)
            except Exception:
                # The envs stepped: an error now always names one (the
                # first written when the write could not tell which), so
                # that it never reads as actions refused before any step.
                if self.current_env is None:
                    self.current_env = self.first_env + rows[0] // self.A
                raise
        return _infos(infos, len(self.obs), dense, self.rows.ended)

    def _ends(
        self,
        e: int,
        env: Any,
        obs: dict,
        env_terms: dict,
        env_truncs: dict,
        rows: list[int],
        observations: list[Any],
        infos: dict[int, dict],
    ) -> None:
        """Env ``e`` after a step where its agents changed: those that ended
        (flagged, or gone from agents: see the module docstring) get their
        last row, those that joined act, and the env resets when none is
        left."""
        A = self.A
        self._check_known(env, env.agents, "has in agents after step()")
        present = set(env.agents)
        for agent, row in zip(self.live[e], self.live_rows[e]):
            terminal, truncated = bool(env_terms.get(agent, False)), bool(env_truncs.get(agent, False))
            if terminal or truncated or agent not in present:
                self.rows.end(row, terminal, truncated, obs.get(agent))
        base = e * A
        acting_rows = self.rows.join(sorted(base + self.slot[agent] for agent in present))
        if not acting_rows:
            _merge(infos, base, self._env_summary(e))
            obs, reset_infos = env.reset()
            self.rows.start(e)
            self._restart(e, env, obs, reset_infos, rows, observations, infos)
            return
        self.seen[e] = list(env.agents)
        acting = [self.agents[row - base] for row in acting_rows]
        if acting != self.live[e]:
            self._act(e, acting)
        rows += self.live_rows[e]
        observations += _observations(env, obs, acting, "step()")


class TurnBlock(_AgentRows):
    """A block of PettingZoo ``AECEnv``s (turn-based games): only the agent
    to move acts. Every agent's reward from a move (``env.rewards`` after
    it) is reported on its row; an agent selected after it ended is given
    its ``None`` step here, never by the policy."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: The agent to move in each env.
        self.movers: list[str | None] = [None] * len(self.envs)

    def reset(self, seed: int | None = None) -> list[tuple[int, dict]]:
        infos: dict[int, dict] = {}
        self.rows.begin_reset()
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            env.reset(seed=None if seed is None else seed + self.first_env + e)
            self._restart(e, env, infos)
        self.current_env = None
        self.rows.end_reset()
        return sorted(infos.items())

    def _restart(self, e: int, env: Any, infos: dict[int, dict]) -> None:
        """Env ``e`` just reset: its agents join and one moves."""
        self.rows.start(e)
        if not self._settle(e, env, infos):
            raise EnvProtocolError(
                f"{type(env).__name__}.reset() left agents empty: with no agent to move, its episode could never "
                f"step or end"
            )

    def _settle(self, e: int, env: Any, infos: dict[int, dict]) -> bool:
        """Ends the agents that ended, steps the ended agents that are
        selected with ``None`` and writes the observation of the agent to
        move; False when no agent is left."""
        base = e * self.A
        self._end_changed(e, env, infos)
        # Each None step must remove an agent: more of them in a row than
        # there are agents means the env brought ended agents back.
        for _ in range(self.A + 1):
            if not env.agents:
                return False
            mover = env.agent_selection
            if mover not in self.slot:
                raise self._unknown(env, mover, "selected (agent_selection)")
            if mover not in env.agents:
                raise EnvProtocolError(
                    f"{type(env).__name__} selected agent {mover!r} (agent_selection), which is not in agents "
                    f"{list(env.agents)}: only an agent in agents can move"
                )
            if not self.rows.has_ended(base + self.slot[mover]):
                break
            if not (env.terminations.get(mover) or env.truncations.get(mover)):
                raise EnvProtocolError(
                    f"{type(env).__name__} selected agent {mover!r}, whose episode ended earlier in this episode, "
                    f"without its termination or truncation flag: an agent that ended cannot act until its env "
                    f"resets, and only a flagged agent can be given its None step"
                )
            env.step(None)
            if mover in env.agents:
                raise EnvProtocolError(
                    f"{type(env).__name__}.step(None) for agent {mover!r}, which had ended, left it in agents "
                    f"{list(env.agents)} (selected: {env.agent_selection!r}): the vector env gives an ended agent "
                    f"that is selected its None step, which must remove it from agents (PettingZoo AECEnvs do "
                    f"it in step with self._was_dead_step(None)); else it would be given None steps forever"
                )
            self._end_changed(e, env, infos)
        else:
            raise EnvProtocolError(
                f"{type(env).__name__} selected ended agents for more None steps in a row than it has "
                f"possible_agents ({self.A}): ended agents keep coming back to agents"
            )
        self.movers[e] = mover
        row = base + self.slot[mover]
        self.layout.flatten_into(env.observe(mover), self.obs, row, check_bounds=self.check_bounds)
        self.rows.set_acting(row, True)
        info = env.infos.get(mover)
        if info:
            _merge(infos, row, info)
        return True

    def _end_changed(self, e: int, env: Any, infos: dict[int, dict]) -> None:
        """Agents new in ``env.agents`` join; playing agents that are
        flagged, or that left agents (truncated, as they had no flag), end."""
        base, slot, agents = e * self.A, self.slot, env.agents
        self._check_known(env, agents, "has in agents")
        joined = self.rows.join([base + slot[agent] for agent in agents])
        playing = self.rows.playing(e)
        if not any(env.terminations.values()) and not any(env.truncations.values()) and set(playing) <= set(joined):
            return  # the common case: nobody left or ended
        for row in playing:
            agent = self.agents[row - base]
            gone = agent not in agents
            terminal, truncated = bool(env.terminations.get(agent)), bool(env.truncations.get(agent))
            if not (terminal or truncated or gone):
                continue
            info = env.infos.get(agent)
            if info:
                _merge(infos, row, info)
            self.rows.end(row, terminal, truncated, None if gone else env.observe(agent))

    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """Steps every env with the action in its mover's action row
        (``actions`` first written there, all or nothing, when given);
        returns ``(row, info)`` for the non-empty infos, or with ``dense``
        one info per row and ``ended``."""
        if actions is not None:
            self._stage(actions)
        actions = self.read_actions()
        A, slot, episodes = self.A, self.slot, self.rows
        infos: dict[int, dict] = {}
        episodes.begin_step()
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            base = e * A
            moved = base + slot[self.movers[e]]
            env.step(actions[moved])
            episodes.set_acting(moved, False)
            # The move's rewards, for the agents that were playing when it
            # was made (others' rows are not in an episode to take them).
            rewarded = []
            for agent in env.rewards:
                k = slot.get(agent)
                if k is None:
                    raise self._unknown(env, agent, "gives a reward in rewards to")
                rewarded.append(base + k)
            episodes.rewards(rewarded, env.rewards.values())
            if not self._settle(e, env, infos):
                _merge(infos, base, self._env_summary(e))
                env.reset()
                self._restart(e, env, infos)
        self.current_env = None
        return _infos(infos, len(self.obs), dense, self.rows.ended)
