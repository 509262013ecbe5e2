"""A protocol fuzzer for PettingZoo envs: hypothesis draws scripted
ParallelEnvs and AECEnvs that keep or break the PettingZoo API's promises
(agents joining, leaving with and without flags, flagged agents lingering
in ``agents``, turn orders, ended agents selected, rewards for agents that
are not playing, agents not in ``possible_agents``, empty resets, missing
observations, ``step(None)`` that keeps an ended agent), and drives them
through Serial and Multiprocessing. Every step must match a plain reference
loop, the documented contract (the README's multi-agent section) written
out once per env, or both must refuse the env at the same step, the vector
env with a ``WorkerError`` that says why, within a bounded time.

The budget is small by default (CI); ``PUFFERRS_FUZZ_SCALE=20`` runs
twenty times as many examples of each test."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pettingzoo import AECEnv, ParallelEnv

import pufferrs.vector
from pufferrs import Layout, WorkerError

SCALE = int(os.environ.get("PUFFERRS_FUZZ_SCALE", "1"))
NAMES = ("p0", "p1", "p2")
OBS = gs.Box(-1e4, 1e4, (3,), np.float32)
LAYOUT = Layout(OBS)
ZERO = bytes(LAYOUT.row_bytes)
STEPS = 14  # vector steps per example
TIMEOUT = 20.0  # seconds an example may take: past it, something hangs


# -- the scripts --

#: What happens to a playing agent at a step: it plays on, ends with a flag,
#: leaves ``agents`` without one (``leave_obs``: with its observation), or
#: ends with a flag but stays in ``agents`` (a parallel env) / leaves
#: ``agents`` with its flag at once (an AEC env).
FATES = ("stay", "stay", "stay", "term", "trunc", "leave", "leave_obs", "linger")
#: The promises a script may break, once or more, at the steps it marks
#: (AEC envs only for the last three): an agent not in possible_agents
#: joins, a staying agent gets no observation, an agent not in
#: possible_agents gets a reward, ``step(None)`` keeps the ended agent
#: (from then on, in the episode), an ended agent comes back and is
#: selected without a flag, an absent agent is selected.
BAD = {
    "parallel": ("unknown", "no_obs", "unknown_reward"),
    "aec": ("unknown", "unknown_reward", "sticky", "select_ended", "select_absent"),
}


@dataclass(frozen=True)
class Step:
    fates: tuple[str, ...]  # per possible agent, if it plays
    joins: tuple[bool, ...]  # per possible agent, if it has not played this episode
    stray_reward: bool  # rewards for every possible agent not playing
    deads_first: bool  # (AEC) flagged agents are selected before the others
    bad: str | None  # the script's broken promise, if it happens here


@dataclass(frozen=True)
class Episode:
    start: tuple[bool, ...]  # who is in agents after reset
    bad_reset: str | None  # None, "empty" or "unknown" (possible_agents gains "zz", who plays)
    steps: tuple[Step, ...]  # then every playing agent is truncated


@dataclass(frozen=True)
class Script:
    n: int  # possible agents
    episodes: tuple[Episode, ...]


@st.composite
def scripts(draw: Any, kind: str, bad: bool) -> Script:
    n = draw(st.integers(1, len(NAMES)))
    broken = draw(st.sampled_from(BAD[kind])) if bad else None
    flags = st.tuples(*[st.booleans()] * n)
    step = st.builds(
        Step,
        fates=st.tuples(*[st.sampled_from(FATES)] * n),
        joins=flags,
        stray_reward=st.booleans(),
        deads_first=st.booleans(),
        bad=st.sampled_from((None, None, None, broken)),
    )
    episode = st.builds(
        Episode,
        start=flags.filter(any),
        bad_reset=st.sampled_from((None,) * 18 + ("empty", "unknown")) if bad else st.none(),
        steps=st.lists(step, max_size=5).map(tuple),
    )
    return Script(n, tuple(draw(st.lists(episode, min_size=1, max_size=3))))


# -- the envs --


class Scripted:
    """What both scripted envs share: episodes in turn from ``offset``, and
    observations that say the episode, the step and the agent's last action
    (so that rows of the wrong agent or step differ)."""

    metadata: dict[str, Any] = {"name": "scripted", "render_modes": []}
    render_mode = None

    def __init__(self, script: Script, offset: int) -> None:
        self.script, self.episode_no = script, offset - 1
        self.possible_agents = list(NAMES[: script.n])
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> gs.Space:
        return OBS

    def action_space(self, agent: str) -> gs.Space:
        return gs.Discrete(5)

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.episode_no % 100, self.t, self.last.get(agent, -1)], np.float32)

    def _start(self) -> None:
        self.episode_no += 1
        self.episode = self.script.episodes[self.episode_no % len(self.script.episodes)]
        self.t, self.last = 0, {}
        self.possible_agents = list(NAMES[: self.script.n])
        self.agents = [a for a, there in zip(self.possible_agents, self.episode.start) if there]
        if self.episode.bad_reset == "unknown":
            self.possible_agents.append("zz")
            self.agents.append("zz")
        elif self.episode.bad_reset == "empty":
            self.agents = []
        self.played = set(self.agents)

    def _next(self) -> Step | None:
        self.t += 1
        steps = self.episode.steps
        return steps[self.t - 1] if self.t <= len(steps) else None

    def _fate(self, step: Step | None, agent: str) -> str:
        return "trunc" if step is None or agent == "zz" else step.fates[NAMES.index(agent)]

    def _joiners(self, step: Step | None) -> list[str]:
        if step is None:
            return []
        new = [a for a, j in zip(self.possible_agents, step.joins) if j and a not in self.played]
        self.played.update(new)
        return new + (["zz"] if step.bad == "unknown" else [])

    def render(self) -> None:
        return None

    def close(self) -> None:
        pass


def reward_of(agent: str, action: int) -> float:
    return (action + 1) * 0.5 + NAMES.index(agent) if agent in NAMES else 1.0


class FuzzParallel(Scripted, ParallelEnv):
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self._start()
        self.lingering: list[str] = []
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        playing = [a for a in self.agents if a not in self.lingering]
        assert sorted(actions) == sorted(playing), f"actions for {sorted(actions)}, playing: {playing}"
        step = self._next()
        self.last.update({a: int(x) for a, x in actions.items()})
        rewards = {a: reward_of(a, int(x)) for a, x in actions.items()}
        obs, terms, truncs, agents, self.lingering = {}, {}, {}, [], []
        for a in playing:
            fate = self._fate(step, a)
            terms[a], truncs[a] = fate in ("term", "linger"), fate == "trunc"
            if fate != "leave":
                obs[a] = self._obs(a)
            if fate in ("stay", "linger"):
                agents.append(a)
            if fate == "linger":
                self.lingering.append(a)
        for a in self._joiners(step):
            agents.append(a)
            obs[a] = self._obs(a)
        if step is not None and step.bad == "no_obs":
            staying = [a for a in agents if a in playing and a not in self.lingering]
            if staying:
                del obs[staying[0]]
        if step is not None and step.stray_reward:
            rewards.update({a: 9.0 for a in self.possible_agents if a not in playing})
        if step is not None and step.bad == "unknown_reward":
            rewards["zz"] = 1.0
        self.agents = agents
        return obs, rewards, terms, truncs, {a: {} for a in agents}


class FuzzAEC(Scripted, AECEnv):
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._start()
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.sticky = False
        self.agent_selection = self.agents[0] if self.agents else "p0"

    def observe(self, agent: str) -> np.ndarray:
        assert agent in self.agents, f"observe({agent!r}): not in agents {self.agents}"
        return self._obs(agent)

    def _flagged(self, agent: str) -> bool:
        return self.terminations.get(agent, False) or self.truncations.get(agent, False)

    def _remove(self, agent: str) -> None:
        self.agents.remove(agent)
        for d in (self.rewards, self.terminations, self.truncations, self.infos):
            d.pop(agent, None)

    def _select(self, after: int, deads_first: bool) -> None:
        """The next agent: flagged ones first if ``deads_first``, else in
        turn from position ``after`` of agents."""
        if not self.agents:
            return
        turn = self.agents[after:] + self.agents[:after]
        dead = [a for a in turn if self._flagged(a)]
        self.agent_selection = dead[0] if dead and deads_first else turn[0]

    def step(self, action: Any) -> None:
        mover = self.agent_selection
        assert mover in self.agents, f"step for {mover!r}, not in agents {self.agents}"
        if self._flagged(mover):
            assert action is None, f"an action for the ended agent {mover!r}"
            if self.sticky:
                return  # the bug: the ended agent stays, selected
            i = self.agents.index(mover)
            self._remove(mover)
            self._select(i, deads_first=True)
            return
        assert action is not None, f"a None step for {mover!r}, which plays"
        step = self._next()
        self.last[mover] = int(action)
        i = self.agents.index(mover) + 1
        self.rewards = {a: reward_of(a, int(action)) * (2 if a == mover else 1) for a in self.agents}
        for a in list(self.agents):
            if self._flagged(a):
                continue
            fate = self._fate(step, a)
            if fate in ("term", "trunc", "linger"):
                self.terminations[a], self.truncations[a] = fate != "trunc", fate == "trunc"
            if fate in ("leave", "leave_obs", "linger"):
                i -= self.agents.index(a) < i
                self.agents.remove(a)  # (its flags, if any, stay in the dicts)
        for a in self._joiners(step):
            self.agents.append(a)
            self.rewards[a], self.terminations[a], self.truncations[a], self.infos[a] = 0.0, False, False, {}
        if step is not None and step.stray_reward:
            self.rewards.update({a: 9.0 for a in self.possible_agents if a not in self.agents})
        if step is not None and step.bad == "unknown_reward":
            self.rewards["zz"] = 1.0
        self.sticky = self.sticky or (step is not None and step.bad == "sticky")
        self._select(i, step is None or step.deads_first)
        if step is not None and step.bad == "select_ended":
            ended = [a for a in self.possible_agents if a in self.played and a not in self.agents]
            if ended:
                self.agents.append(ended[0])  # back, without a flag
                self.rewards[ended[0]], self.terminations[ended[0]], self.truncations[ended[0]] = 0.0, False, False
                self.agent_selection = ended[0]
        if step is not None and step.bad == "select_absent" and self.agents:
            absent = [a for a in self.possible_agents if a not in self.agents]
            if absent:
                self.agent_selection = absent[0]


# -- the reference: the contract, one env at a time --


class Refused(Exception):
    """The contract refuses the env here; the vector env must say ``why``."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


#: One row's record at one step: (observation, reward, terminal, truncated,
#: mask, (episode_return, episode_length) or (), final observation or b"",
#: (env_episode_return, env_episode_length) or ()).
Record = tuple


def blank() -> list:
    return [ZERO, 0.0, False, False, False, (), b"", ()]


def flat(obs: Any) -> bytes:
    return LAYOUT.flatten(obs).tobytes() if obs is not None else ZERO


def action(row: int, k: int) -> int:
    return (row * 7 + k * 3) % 5


def reference_parallel(script: Script, e: int, steps: int) -> tuple[list[list[Record]], str | None]:
    """Env ``e``'s rows over ``steps`` steps (fewer if it is refused: then
    also why): a ParallelEnv as the README describes it."""
    env = FuzzParallel(script, e)
    names = list(env.possible_agents)
    A = len(names)
    history: list[list[Record]] = [[] for _ in names]
    recs = {a: blank() for a in names}
    state: dict[str, Any] = {}

    def start(obs: dict) -> None:
        if any(a not in names for a in env.agents):
            raise Refused("which is not in the possible_agents")
        if not env.agents:
            raise Refused("reset() left agents empty")
        state.update(
            live=set(env.agents), ended=set(), returns=dict.fromkeys(names, 0.0), lengths=dict.fromkeys(names, 0)
        )
        state["begun"] = len(history[0])
        for a in env.agents:
            if a not in obs:
                raise Refused("returned no observation for")
            recs[a][0], recs[a][4] = flat(obs[a]), True

    def record() -> None:
        for k, a in enumerate(names):
            history[k].append(tuple(recs[a]))

    try:
        obs, _ = env.reset()
        start(obs)
        record()
        for t in range(steps):
            live = sorted(state["live"], key=names.index)
            obs, rewards, terms, truncs, _ = env.step({a: action(e * A + names.index(a), t) for a in live})
            recs.update({a: blank() for a in names})
            ended = state["ended"]
            for a in live:
                reward = float(rewards.get(a, 0.0))
                state["returns"][a] += reward
                state["lengths"][a] += 1
                recs[a][1] = float(np.float32(reward))
                term, trunc = bool(terms.get(a)), bool(truncs.get(a))
                if term or trunc or a not in env.agents:
                    recs[a][2:7] = (
                        term,
                        trunc or not term,
                        False,
                        (state["returns"][a], state["lengths"][a]),
                        flat(obs.get(a)),
                    )
                    ended.add(a)
            if any(a not in names for a in env.agents):
                raise Refused("which is not in the possible_agents")
            state["live"] = set(env.agents) - ended
            if not state["live"]:
                total = sum(state["returns"][a] for a in ended)
                recs[names[0]][7] = (total, len(history[0]) - state["begun"])
                obs, _ = env.reset()
                start(obs)
            else:
                for a in state["live"]:
                    if a not in obs:
                        raise Refused("returned no observation for")
                    recs[a][0], recs[a][4] = flat(obs[a]), True
            record()
    except Refused as refused:
        return history, refused.why
    return history, None


def reference_aec(script: Script, e: int, steps: int) -> tuple[list[list[Record]], str | None]:
    """The same for an AECEnv: one agent moves per step; every agent playing
    when it moves takes its reward."""
    env = FuzzAEC(script, e)
    names = list(env.possible_agents)
    A = len(names)
    history: list[list[Record]] = [[] for _ in names]
    recs = {a: blank() for a in names}
    state: dict[str, Any] = {}

    def end_changed() -> None:
        playing, ended = state["playing"], state["ended"]
        for a in env.agents:
            if a not in names:
                raise Refused("which is not in the possible_agents")
            if a not in ended:
                playing.add(a)
        for a in sorted(playing, key=names.index):
            term, trunc, gone = bool(env.terminations.get(a)), bool(env.truncations.get(a)), a not in env.agents
            if term or trunc or gone:
                final = ZERO if gone else flat(env.observe(a))
                recs[a][0] = ZERO
                recs[a][2:7] = term, trunc or not term, False, (state["returns"][a], state["lengths"][a]), final
                playing.discard(a)
                ended.add(a)

    def settle() -> bool:
        end_changed()
        for _ in range(A + 1):
            if not env.agents:
                return False
            mover = env.agent_selection
            if mover not in names:
                raise Refused("which is not in the possible_agents")
            if mover not in env.agents:
                raise Refused("which is not in agents")
            if mover not in state["ended"]:
                break
            if not (env.terminations.get(mover) or env.truncations.get(mover)):
                raise Refused("whose episode ended earlier")
            env.step(None)
            if mover in env.agents:
                raise Refused("step(None) for agent")
            end_changed()
        else:
            raise Refused("more None steps in a row")
        recs[mover][0], recs[mover][4] = flat(env.observe(mover)), True
        state["mover"] = mover
        return True

    def start() -> None:
        state.update(playing=set(), ended=set(), returns=dict.fromkeys(names, 0.0), lengths=dict.fromkeys(names, 0))
        state["begun"] = len(history[0])
        if not settle():
            raise Refused("reset() left agents empty")

    try:
        env.reset()
        start()
        for k, a in enumerate(names):
            history[k].append(tuple(recs[a]))
        for t in range(steps):
            mover = state["mover"]
            playing = set(state["playing"])
            recs.update({a: blank() for a in names})
            env.step(action(e * A + names.index(mover), t))
            state["lengths"][mover] += 1
            for a, reward in env.rewards.items():
                if a not in names:
                    raise Refused("which is not in the possible_agents")
                if a in playing:
                    recs[a][1] = float(np.float32(reward))
                    state["returns"][a] += float(reward)
            if not settle():
                total = sum(state["returns"][a] for a in state["ended"])
                recs[names[0]][7] = (total, len(history[0]) - state["begun"])
                env.reset()
                start()
            for k, a in enumerate(names):
                history[k].append(tuple(recs[a]))
    except Refused as refused:
        return history, refused.why
    return history, None


# -- driving the vector env --


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raises :class:`Hang` in the main thread past ``seconds`` (a Python
    loop that never ends is interrupted between bytecodes)."""

    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def drive(envs: Any, steps: int) -> tuple[list[list[Record]], WorkerError | None]:
    """Every row's records over ``steps`` steps, and the error that ended
    them early, if one did."""
    n = envs.num_agents
    history: list[list[Record]] = [[] for _ in range(n)]
    try:
        envs.async_reset()
        for t in range(steps + 1):
            obs, rewards, terminals, truncations, infos, row_ids, masks = envs.recv()
            assert row_ids.tolist() == list(range(n))
            for r in range(n):
                info = infos[r]
                stats = (info["episode_return"], info["episode_length"]) if "episode_return" in info else ()
                final = info["final_obs"].tobytes() if "final_obs" in info else b""
                summary = (
                    (info["env_episode_return"], info["env_episode_length"]) if "env_episode_return" in info else ()
                )
                history[r].append(
                    (obs[r].tobytes(), float(rewards[r]), bool(terminals[r]), bool(truncations[r]), bool(masks[r]))
                    + (stats, final, summary)
                )
            if t < steps:
                envs.send(np.array([action(r, t) for r in range(n)]))
    except WorkerError as error:
        return history, error
    return history, None


def same(got: Record, expected: Record) -> bool:
    return (
        got[:5] == expected[:5]
        and got[6] == expected[6]
        and len(got[5]) == len(expected[5])
        and all(g == pytest.approx(x, abs=1e-3) for g, x in zip(got[5], expected[5]))
        and len(got[7]) == len(expected[7])
        and all(g == pytest.approx(x, abs=1e-3) for g, x in zip(got[7], expected[7]))
    )


def check(kind: str, script: Script, backend: str) -> str | None:
    """Runs two envs of ``script`` (offset by one episode) through
    ``backend`` and checks every row against the reference; returns the
    refusal, if one was expected."""
    env_class, reference = (FuzzParallel, reference_parallel) if kind == "parallel" else (FuzzAEC, reference_aec)
    creators = [partial(env_class, script, e) for e in range(2)]
    expected = [reference(script, e, STEPS) for e in range(2)]
    options: dict[str, Any] = {"num_workers": 2, "timeout": TIMEOUT} if backend == "multiprocessing" else {}
    with deadline(2 * TIMEOUT):
        try:
            envs = pufferrs.vector.make(creators, 2, backend=backend, **options)
        except WorkerError as error:
            got, made_error = [], error
        else:
            with envs:
                got, made_error = drive(envs, STEPS)
    A = script.n
    # The step (record count) at which each env is refused, if it is.
    stops = [len(history[0]) if why else STEPS + 1 for history, why in expected]
    stop = min(stops)
    if stop > STEPS:
        assert made_error is None, f"refused where the contract is kept: {made_error}"
    else:
        assert made_error is not None, f"not refused: {[why for _, why in expected]}"
        culprits = [e for e in range(2) if stops[e] == stop]
        message = str(made_error) + str(made_error.__cause__ or "")
        assert any(expected[e][1] in message for e in culprits), (
            f"expected {[expected[e][1] for e in culprits]} from env {culprits}, got: {message}"
        )
        assert "EnvProtocolError" in message, message
        assert made_error.env in (*culprits, None), f"blamed env {made_error.env}, not {culprits}"
    for e in range(2):
        for k in range(A):
            rows = got[e * A + k] if got else []
            want = expected[e][0][k][:stop]
            assert len(rows) >= min(stop, STEPS + 1) or made_error is not None
            for t, (g, x) in enumerate(zip(rows, want)):
                assert same(g, x), f"{backend}, env {e} slot {k} step {t}:\n got  {g}\n want {x}"
    why = next((why for _, why in expected if why), None)
    event(f"refused: {why}" if why else "kept")
    ended = sum(bool(x[5]) for history, _ in expected for rows in history for x in rows)
    event(f"agent ends: {min(ended, 5)}{'+' if ended >= 5 else ''}")
    return why


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.mark.parametrize("kind", ["parallel", "aec"])
@settings(FUZZ, max_examples=150 * SCALE)
@given(data=st.data())
def test_serial_keeps_the_contract(kind: str, data: Any) -> None:
    assert check(kind, data.draw(scripts(kind, bad=False)), "serial") is None


@pytest.mark.parametrize("kind", ["parallel", "aec"])
@settings(FUZZ, max_examples=150 * SCALE)
@given(data=st.data())
def test_serial_refuses_broken_promises_clearly(kind: str, data: Any) -> None:
    check(kind, data.draw(scripts(kind, bad=True)), "serial")


@pytest.mark.parametrize("kind", ["parallel", "aec"])
@settings(FUZZ, max_examples=15 * SCALE)
@given(data=st.data())
def test_multiprocessing_matches_the_reference(kind: str, data: Any) -> None:
    check(kind, data.draw(scripts(kind, bad=data.draw(st.booleans()))), "multiprocessing")
