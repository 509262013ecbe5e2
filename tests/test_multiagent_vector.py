"""PettingZoo envs through the vector envs: one row per agent, real masks,
per-agent episode ends, checked against plain PettingZoo loops run with the
same seeds and actions (the reference), on Serial and Multiprocessing."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pettingzoo
import pytest
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import BaseWrapper

import pufferrs.vector
from pufferrs import BuffersError, Layout, UnsupportedSpaceError, WorkerError
from pufferrs._native import RolloutBuffers
from pufferrs.multiagent_envs import Rendezvous
from pufferrs.vector.arguments import checked_env

#: Random numbers that pick every action: row r's k-th action comes from
#: TABLE[r, k], so a row's actions do not depend on how batches interleave.
TABLE = np.random.default_rng(12).integers(0, 1 << 30, size=(64, 2048))

#: (obs row bytes, reward, terminal, truncated, mask, (episode_return, episode_length) or ())
Record = tuple[bytes, float, bool, bool, bool, tuple]


def kaz() -> Any:
    # Zombies every 5 cycles: random agents die well before the episode ends.
    return pettingzoo.make("parallel", "butterfly/knights_archers_zombies-v11", spawn_delay=5, max_cycles=300)


def tictactoe() -> Any:
    return pettingzoo.make("aec", "classic/tictactoe-v3")


def connect_four() -> Any:
    return pettingzoo.make("aec", "classic/connect_four-v3")


def legal(action_mask: np.ndarray, r: int, k: int) -> int:
    moves = np.flatnonzero(action_mask)
    return int(moves[TABLE[r, k] % len(moves)]) if len(moves) else 0


# -- the references: plain PettingZoo loops --


def reference_parallel(creator: Any, e: int, seed: int, steps: int) -> list[list[Record]]:
    """The records of env ``e``'s rows over ``steps`` steps of a plain loop,
    acting at random as `random_action` does: the contract of
    pufferrs.vector written out for one ParallelEnv."""
    env = creator()
    agents = list(env.possible_agents)
    A = len(agents)
    layout = Layout(env.observation_space(agents[0]))
    zero = bytes(layout.row_bytes)
    obs, _ = env.reset(seed=seed + e)
    live = [a for a in agents if a in env.agents]
    rows: list[list[Record]] = [[] for _ in agents]
    returns, lengths = dict.fromkeys(agents, 0.0), dict.fromkeys(agents, 0)
    first = {a: (layout.flatten(obs[a]).tobytes() if a in live else zero) for a in agents}
    for k, a in enumerate(agents):
        rows[k].append((first[a], 0.0, False, False, a in live, ()))
    for t in range(steps):
        actions = {a: int(TABLE[e * A + agents.index(a), t] % env.action_space(a).n) for a in live}
        obs, rewards, terms, truncs, _ = env.step(actions)
        step: dict[str, Record] = {a: (zero, 0.0, False, False, False, ()) for a in agents}
        for a in live:
            reward = float(np.float32(rewards.get(a, 0.0)))
            returns[a] += float(rewards.get(a, 0.0))
            lengths[a] += 1
            if terms.get(a) or truncs.get(a):
                stats = (returns[a], lengths[a])
                step[a] = (zero, reward, bool(terms.get(a)), bool(truncs.get(a)), False, stats)
            else:
                step[a] = (layout.flatten(obs[a]).tobytes(), reward, False, False, True, ())
        live = [a for a in agents if a in env.agents and not step[a][2] and not step[a][3]]
        if not live:
            obs, _ = env.reset()
            live = [a for a in agents if a in env.agents]
            returns, lengths = dict.fromkeys(agents, 0.0), dict.fromkeys(agents, 0)
            for a in live:
                step[a] = (layout.flatten(obs[a]).tobytes(), *step[a][1:4], True, step[a][5])
        for k, a in enumerate(agents):
            rows[k].append(step[a])
    return rows


def reference_turns(creator: Any, e: int, seed: int, steps: int) -> list[list[Record]]:
    """The same for a turn-based AECEnv: only the agent to move is unmasked."""
    env = creator()
    agents = list(env.possible_agents)
    A = len(agents)
    layout = Layout(env.observation_space(agents[0]))
    zero = bytes(layout.row_bytes)
    env.reset(seed=seed + e)
    rows: list[list[Record]] = [[] for _ in agents]
    returns, lengths = dict.fromkeys(agents, 0.0), dict.fromkeys(agents, 0)

    def first_rows(step: dict[str, Record]) -> None:
        mover = env.agent_selection
        step[mover] = (layout.flatten(env.observe(mover)).tobytes(), *step[mover][1:4], True, step[mover][5])

    step: dict[str, Record] = {a: (zero, 0.0, False, False, False, ()) for a in agents}
    first_rows(step)
    for t in range(steps + 1):
        for k, a in enumerate(agents):
            rows[k].append(step[a])
        if t == steps:
            return rows
        mover = env.agent_selection
        r = e * A + agents.index(mover)
        env.step(legal(env.observe(mover)["action_mask"], r, t))
        lengths[mover] += 1
        step = {a: (zero, 0.0, False, False, False, ()) for a in agents}
        for a in env.agents:
            reward = float(env.rewards[a])
            returns[a] += reward
            if env.terminations[a] or env.truncations[a]:
                stats = (returns[a], lengths[a])
                step[a] = (zero, reward, bool(env.terminations[a]), bool(env.truncations[a]), False, stats)
            else:
                step[a] = (zero, reward, False, False, False, ())
        while env.agents and (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
            env.step(None)
        if not env.agents:
            env.reset()
            returns, lengths = dict.fromkeys(agents, 0.0), dict.fromkeys(agents, 0)
        first_rows(step)
    return rows


# -- driving a vector env --


def drive(envs: Any, seed: int, recvs: int, choose: Any, each: int = 0) -> tuple[dict[int, list[Record]], list[dict]]:
    """Runs ``recvs`` batches, then more until every row has ``each``
    records (async batches come from whichever worker answers first, so on
    a busy machine one worker's rows can fall behind), and returns each
    row's records and every ended row's info (with its ``row`` and record
    index ``t``). ``choose(layout, obs_row, r, k)`` picks row r's k-th
    action; masked rows get one that must never reach the env."""
    never = envs.single_action_space.n - 1
    records: dict[int, list[Record]] = {r: [] for r in range(envs.num_agents)}
    ends: list[dict] = []
    envs.async_reset(seed)
    done = 0
    while done < recvs or (min(map(len, records.values())) < each and done < 20 * recvs):
        done += 1
        obs, rewards, terminals, truncations, infos, row_ids, masks = envs.recv()
        assert len(obs) == len(rewards) == len(infos) == len(row_ids) == len(masks)
        assert len(row_ids) == envs.batch_size * envs.agents_per_env
        actions = []
        for k, r in enumerate(row_ids.tolist()):
            info = infos[k]
            stats = (info["episode_return"], info["episode_length"]) if "episode_return" in info else ()
            assert bool(stats) == bool(terminals[k] or truncations[k])
            if stats:
                ends.append({**info, "final_obs": info["final_obs"].copy(), "row": r, "t": len(records[r])})
            elif "env_episode_return" in info:
                ends.append({**info, "row": r, "t": len(records[r])})
            if not masks[k]:
                assert not obs[k].any(), f"row {r}: a masked row must be zero"
            records[r].append(
                (obs[k].tobytes(), float(rewards[k]), bool(terminals[k]), bool(truncations[k]), bool(masks[k]), stats)
            )
            actions.append(choose(envs.layout, obs[k], r, len(records[r]) - 1) if masks[k] else never)
        envs.send(np.array(actions))
    return records, ends


def compare(records: dict[int, list[Record]], reference: Any, creator: Any, seed: int, agents: int) -> None:
    for e in range(len(records) // agents):
        length = min(len(records[e * agents + k]) for k in range(agents))
        expected = reference(creator, e, seed, length - 1)
        for k in range(agents):
            got = records[e * agents + k]
            for t, (g, x) in enumerate(zip(got, expected[k])):
                assert g[0] == x[0], f"env {e} slot {k} step {t}: observation row differs"
                assert g[1:5] == x[1:5], f"env {e} slot {k} step {t}: {g[1:5]} != {x[1:5]}"
                assert g[5] == pytest.approx(x[5]), f"env {e} slot {k} step {t}: episode stats"


def random_action_of(n: int) -> Any:
    return lambda layout, obs, r, k: int(TABLE[r, k] % n)


random_action = random_action_of(6)


# -- knights_archers_zombies: parallel, agents die mid-episode --


@pytest.fixture(scope="module")
def kaz_serial() -> tuple[dict[int, list[Record]], list[dict]]:
    with pufferrs.vector.make(kaz, 4, seed=3) as envs:
        assert (envs.agents_per_env, envs.num_agents) == (4, 16)
        assert envs.possible_agents == ["archer_0", "archer_1", "knight_0", "knight_1"]
        return drive(envs, 3, 330, random_action)


def test_kaz_rows_match_a_plain_pettingzoo_loop(kaz_serial: Any) -> None:
    records, ends = kaz_serial
    compare(records, reference_parallel, kaz, 3, 4)
    # What the comparison covered: agents dying while others play on, and
    # whole episodes ending.
    env_ends = {(info["row"] // 4, info["t"]) for info in ends if "env_episode_return" in info}
    died_early = [
        (r, t) for r, rows in records.items() for t, rec in enumerate(rows) if rec[2] and (r // 4, t) not in env_ends
    ]
    assert died_early, "no agent died while another of its env played on"
    assert env_ends


def test_a_dead_agent_keeps_a_zero_masked_row_until_the_reset(kaz_serial: Any) -> None:
    records, _ = kaz_serial
    checked = 0
    for rows in records.values():
        for t, (obs, _, terminal, truncated, mask, _) in enumerate(rows):
            if not (terminal or truncated) or mask:
                continue  # (masked again: its env reset at this step, the row is the next episode's)
            assert not any(obs)
            # Later rows are zero and masked, until the env's agents act again.
            for later in rows[t + 1 :]:
                if later[4]:
                    break
                assert later[:4] == (bytes(len(obs)), 0.0, False, False)
                checked += 1
    assert checked > 0


def test_kaz_episode_statistics_are_the_sums_of_the_rows(kaz_serial: Any) -> None:
    records, ends = kaz_serial
    by_row: dict[int, list[dict]] = {}
    for info in ends:
        if "episode_return" not in info:
            continue
        by_row.setdefault(info["row"], []).append(info)
        assert info["final_obs"].any(), "the final row holds the dead agent's last observation"
    for r, infos in by_row.items():
        rows, start = records[r], 0
        for info in infos:
            t = info["t"]
            # The agent's episode: from its first acting record, whose
            # rewards come with the records after it, up to its end.
            first = next(s for s in range(start, t) if rows[s][4])
            assert info["episode_length"] == sum(rows[s][4] for s in range(first, t))
            assert info["episode_return"] == pytest.approx(sum(rows[s][1] for s in range(first + 1, t + 1)), abs=1e-4)
            start = t
    env_ends = [info for info in ends if "env_episode_return" in info]
    assert env_ends and all(info["row"] % 4 == 0 for info in env_ends)
    for info in env_ends:
        e, t = info["row"] // 4, info["t"]
        before = max((x["t"] for x in env_ends if x["row"] // 4 == e and x["t"] < t), default=-1)
        episode = [x for x in ends if x["row"] // 4 == e and before < x["t"] <= t and "episode_return" in x]
        assert info["env_episode_return"] == pytest.approx(sum(x["episode_return"] for x in episode))
        # Every agent acts from the first step, so the last one standing saw them all.
        assert info["env_episode_length"] == max(x["episode_length"] for x in episode)


def test_kaz_serial_equals_multiprocessing_with_async_batches() -> None:
    with pufferrs.vector.make(kaz, 4, backend="multiprocessing", num_workers=2, batch_size=2, seed=5) as envs:
        records, _ = drive(envs, 5, 300, random_action, each=120)
    with pufferrs.vector.make(kaz, 4, batch_size=2, seed=5) as envs:
        serial, _ = drive(envs, 5, 300, random_action, each=120)
    for r in records:
        n = min(len(records[r]), len(serial[r]))
        assert n > 100
        assert records[r][:n] == serial[r][:n], f"row {r} differs"


# -- turn-based games with action masks --


class Checked(BaseWrapper):
    """Raises on any illegal action: in a worker, that ends recv."""

    def step(self, action: Any) -> None:
        if action is not None:
            mask = self.observe(self.agent_selection)["action_mask"]
            if not mask[action]:
                raise AssertionError(f"illegal action {action} sent to {self.agent_selection}")
        super().step(action)


def checked_tictactoe() -> Any:
    return Checked(tictactoe())


def masked_action(layout: Layout, obs: np.ndarray, r: int, k: int) -> int:
    return legal(layout.unflatten(obs)["action_mask"], r, k)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**20))
def test_tictactoe_masks_alternate_and_no_illegal_action_is_sent(seed: int) -> None:
    with pufferrs.vector.make(checked_tictactoe, 2, seed=seed) as envs:
        records, ends = drive(envs, seed, 40, masked_action)
    for e in range(2):
        slots = [records[2 * e], records[2 * e + 1]]
        for t in range(len(slots[0])):
            masks = [slots[0][t][4], slots[1][t][4]]
            assert sum(masks) == 1, "exactly the player to move is unmasked"
            if t and not (slots[0][t][2] or slots[0][t][3]):
                assert masks != [slots[0][t - 1][4], slots[1][t - 1][4]], "players alternate"
            if slots[0][t][2]:
                assert slots[1][t][2], "the game ends for both players at once"
                assert slots[0][t][1] + slots[1][t][1] == 0, "a win for one is a loss for the other"
    compare(records, reference_turns, tictactoe, seed, 2)
    assert ends, "no game ended"
    for info in ends:
        board = info["final_obs"]
        assert board.any(), "the final row holds the last position"


def test_connect_four_serial_equals_multiprocessing() -> None:
    def game() -> Any:
        return Checked(connect_four())

    with pufferrs.vector.make(game, 4, backend="multiprocessing", num_workers=2, seed=9) as envs:
        records, ends = drive(envs, 9, 120, masked_action)
    with pufferrs.vector.make(game, 4, seed=9) as envs:
        serial, _ = drive(envs, 9, 120, masked_action)
    assert records == serial
    assert ends
    compare(records, reference_turns, connect_four, 9, 2)


# -- the built-in env --


def oracle(layout: Layout, obs: np.ndarray, r: int, k: int) -> int:
    """Rendezvous solved: undo the agent's shift of the cue."""
    agents = 3
    slot, cue = int(np.argmax(obs[:agents])), int(np.argmax(obs[agents:]))
    return (cue - slot) % (len(obs) - agents)


def test_rendezvous_follows_the_parallel_api_and_its_seed() -> None:
    with warnings.catch_warnings():
        # pettingzoo.test imports PettingZoo's own envs the deprecated way.
        warnings.simplefilter("ignore", DeprecationWarning)
        from pettingzoo.test import parallel_api_test, parallel_seed_test

    parallel_api_test(Rendezvous(), num_cycles=100)
    parallel_seed_test(Rendezvous)


def test_rendezvous_rewards_coordination_only() -> None:
    def mean_reward(choose: Any, seed: int) -> float:
        with pufferrs.vector.make(Rendezvous, 4, seed=seed) as envs:
            records, ends = drive(envs, seed, 200, choose)
        acting = [(rows[t][4], rows[t + 1][1]) for rows in records.values() for t in range(len(rows) - 1)]
        assert any(info["row"] % 3 and info["episode_length"] < 16 for info in ends), "no agent left early"
        return float(np.mean([reward for mask, reward in acting if mask]))

    assert mean_reward(oracle, 1) == 1.0, "actions reached the wrong agents"
    assert mean_reward(random_action_of(4), 1) < 0.1


def test_rendezvous_serial_equals_multiprocessing_with_gathered_batches() -> None:
    # Three workers and batches of two: batches are gathered from workers
    # that are not consecutive.
    with pufferrs.vector.make(Rendezvous, 6, backend="multiprocessing", num_workers=3, batch_size=4, seed=2) as envs:
        assert envs.buffers.gathers
        records, _ = drive(envs, 2, 300, random_action_of(4))
    compare(records, reference_parallel, Rendezvous, 2, 3)
    with pufferrs.vector.make(Rendezvous, 6, seed=2, batch_size=2) as envs:
        serial, _ = drive(envs, 2, 300, random_action_of(4))
    compare(serial, reference_parallel, Rendezvous, 2, 3)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**20))
def test_seeds_reproduce_and_differ(seed: int) -> None:
    def run(s: int) -> dict[int, list[Record]]:
        with pufferrs.vector.make(Rendezvous, 2, seed=s) as envs:
            return drive(envs, s, 30, random_action_of(4))[0]

    assert run(seed) == run(seed)
    assert run(seed) != run(seed + 2)


# -- what is refused --


class Mismatched(ParallelEnv):
    metadata: dict = {"name": "mismatched"}
    possible_agents = ["a", "b", "c"]

    def observation_space(self, agent: str) -> gs.Space:
        return gs.Box(0, 1, (3 if agent == "c" else 2,))

    def action_space(self, agent: str) -> gs.Space:
        return gs.Discrete(2)


def test_agents_with_different_spaces_are_refused_with_what_to_do() -> None:
    with pytest.raises(UnsupportedSpaceError) as info:
        pufferrs.vector.make(Mismatched, 2)
    message = str(info.value)
    assert "different observation spaces" in message
    assert "'a', 'b': Box(0.0, 1.0, (2,), float32)" in message and "'c': Box(0.0, 1.0, (3,), float32)" in message
    assert "pad_observations_v0" in message


def test_other_objects_are_refused_naming_what_is_accepted() -> None:
    class NotAnEnv:
        def close(self) -> None:
            pass

    with pytest.raises(TypeError, match="gymnasium.Env or a PettingZoo ParallelEnv or AECEnv, got NotAnEnv"):
        pufferrs.vector.make(NotAnEnv, 1)
    with pytest.raises(TypeError, match="the Ray backend runs gymnasium envs only"):
        checked_env(Rendezvous(), backend="Ray")
    assert isinstance(checked_env(gym.make("CartPole-v1"), backend="Ray"), gym.Env)


def test_buffers_hold_one_row_per_agent() -> None:
    buffers = RolloutBuffers(6, 3, 16, 8, 4, agents_per_env=3)
    assert buffers.agents_per_env == 3
    assert buffers.array("observations").shape == (18, 16)
    assert buffers.array("final_observations").shape == (18, 16)
    assert buffers.array("masks").shape == (18,)
    assert buffers.array("batch_observations").shape == (12, 16)
    assert RolloutBuffers(2, None, 8, 8).agents_per_env == 1
    with pytest.raises(BuffersError, match="agents_per_env must be positive, got 0"):
        RolloutBuffers(2, None, 8, 8, agents_per_env=0)
    with pytest.raises(BuffersError, match="agents_per_env must be a positive int, got 1.5"):
        RolloutBuffers(2, None, 8, 8, agents_per_env=1.5)
    with pytest.raises(BuffersError, match="does not hold buffers made for these arguments"):
        RolloutBuffers.attach(buffers.fd, 6, 3, 16, 8, 4, agents_per_env=2)
    obs = buffers.array("observations")
    obs[:] = np.arange(18)[:, None]
    buffers.gather([0, 2])
    # Workers own their envs' rows: worker 2 holds envs 4-5, rows 12-17.
    assert buffers.array("batch_observations")[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]


def test_the_adapters_with_one_row_per_env_refuse_pettingzoo_envs() -> None:
    from pufferrs.compat import GymnasiumVectorEnv, SB3VecEnv

    with pytest.raises(TypeError, match="SB3VecEnv adapts gymnasium envs, one row per env"):
        SB3VecEnv([Rendezvous] * 2, backend="serial")
    for mode in AutoresetMode:
        with pytest.raises(TypeError, match="GymnasiumVectorEnv adapts gymnasium envs, one row per env"):
            GymnasiumVectorEnv([Rendezvous] * 2, backend="multiprocessing", num_workers=2, autoreset_mode=mode)


class Failing(Rendezvous):
    """Raises at its third step."""

    def step(self, actions: dict) -> tuple:
        if self._steps == 2:
            raise RuntimeError("the env broke")
        return super().step(actions)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_an_env_that_raises_is_named(backend: str) -> None:
    creators = [Rendezvous, Failing, Rendezvous, Rendezvous]
    with pufferrs.vector.make(creators, 4, backend=backend, num_workers=2 if backend != "serial" else None) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError, match="env 1 raised") as info:
            for _ in range(3):
                envs.step(np.zeros(envs.num_agents, np.int64))
        assert info.value.env == 1
        assert "the env broke" in str(info.value) or "the env broke" in str(info.value.__cause__)


# -- envs that break the protocol: rows or a clear error, never a hang --


class Stubborn(AECEnv):
    """Two players; "a" terminates at its first move, and ``step(None)``
    does not remove it (the bug): its selection never changes."""

    metadata: dict = {"name": "stubborn"}
    possible_agents = ["a", "b"]

    def observation_space(self, agent: str) -> gs.Space:
        return gs.Box(0, 1, (2,), np.float32)

    def action_space(self, agent: str) -> gs.Space:
        return gs.Discrete(2)

    def observe(self, agent: str) -> np.ndarray:
        return np.ones(2, np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = "a"

    def step(self, action: Any) -> None:
        if action is None:
            return  # the bug: a dead step that keeps the dead agent
        self.terminations["a"] = True


def copied(step: tuple) -> tuple:
    """A step's arrays are views of the shared rows, which the next step rewrites."""
    *arrays, infos = step
    return (
        *(a.copy() for a in arrays),
        [{k: np.copy(v) if k == "final_obs" else v for k, v in i.items()} for i in infos],
    )


HANG_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import pufferrs.vector
from pufferrs import WorkerError
from test_multiagent_vector import Stubborn
kwargs = dict(backend={backend!r}, timeout=30) if {backend!r} == "multiprocessing" else {{}}
with pufferrs.vector.make(Stubborn, 2, **kwargs) as envs:
    envs.reset(seed=0)
    try:
        envs.step(np.zeros(envs.num_agents, np.int64))
    except WorkerError as error:
        print("ERROR", error.env, error)
"""


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_an_aec_step_none_that_keeps_the_dead_agent_is_refused_not_a_hang(backend: str) -> None:
    # In a subprocess with a timeout: a regression fails instead of hanging the suite.
    script = HANG_SCRIPT.format(tests=str(Path(__file__).parent), backend=backend)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Both envs break at once: either may be the one reported.
    assert done.stdout.startswith(("ERROR 0 ", "ERROR 1 ")), done.stdout
    assert f"env {done.stdout.split()[1]} raised" in done.stdout
    assert "Stubborn.step(None) for agent 'a', which had ended, left it in agents ['a', 'b']" in done.stdout
    assert "timed out" not in done.stdout


class Scripted(ParallelEnv):
    """Two agents, each rewarded 1.0 + its slot per step. ``plan`` says, at
    each step, which agents are still in ``agents`` afterwards (no flag
    ever); ``intruder`` (``"reset"``, ``"step"``, ``"possible_agents"``)
    brings in an agent "zz" that is not in possible_agents."""

    metadata: dict = {"name": "scripted"}

    def __init__(self, plan: tuple = ((), ()), intruder: str | None = None) -> None:
        self.possible_agents = ["a", "b"]
        self.plan, self.intruder, self.resets = plan, intruder, 0

    def observation_space(self, agent: str) -> gs.Space:
        return gs.Box(0, 10, (2,), np.float32)

    def action_space(self, agent: str) -> gs.Space:
        return gs.Discrete(2)

    def _obs(self) -> dict:
        return {a: np.array([["a", "b", "zz"].index(a) + 1, self.t], np.float32) for a in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.resets += 1
        self.t, self.agents = 0, ["a", "b"]
        if self.intruder == "reset" or (self.intruder == "possible_agents" and self.resets > 1):
            self.possible_agents = ["a", "zz"] if self.intruder == "possible_agents" else self.possible_agents
            self.agents = ["a", "zz"]
        return self._obs(), {}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        rewards = {a: 1.0 + ["a", "b", "zz"].index(a) for a in actions}
        self.t += 1
        self.agents = [a for a in self.agents if a in self.plan[min(self.t, len(self.plan)) - 1]]
        if self.intruder == "step" and self.t == 2:
            self.agents.append("zz")
        flags = dict.fromkeys(actions, False)
        return self._obs(), rewards, flags, dict(flags), {}


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_agents_that_leave_without_a_flag_are_truncated_with_a_final_row(backend: str) -> None:
    # "b" leaves after step 2, "a" after step 3; neither is ever flagged.
    def creator() -> Scripted:
        return Scripted(plan=(("a", "b"), ("a",), ()))

    kwargs: dict = {"backend": backend, "num_workers": 1} if backend == "multiprocessing" else {}
    with pufferrs.vector.make(creator, 1, **kwargs) as envs:
        envs.reset(seed=0)
        steps = [copied(envs.step(np.zeros(2, np.int64))) for _ in range(3)]
    obs, rewards, terms, truncs, infos = steps[1]
    # Step 2: "b" (row 1) is truncated, its row zero and masked; "a" plays on.
    assert truncs.tolist() == [False, True] and not terms.any()
    assert not obs[1].any() and obs[0].tolist() == [1, 2]
    assert infos[1]["episode_return"] == 4.0 and infos[1]["episode_length"] == 2
    # No observation for it at that step: its final row is zero.
    assert not infos[1]["final_obs"].any()
    obs, rewards, terms, truncs, infos = steps[2]
    # Step 3: "a" goes too; the episode ends with a flag and its statistics,
    # and the env resets (same step): both rows play the next episode.
    assert truncs.tolist() == [True, False] and rewards.tolist() == [1.0, 0.0]
    assert infos[0]["episode_return"] == 3.0 and infos[0]["episode_length"] == 3
    assert infos[0]["env_episode_return"] == 7.0 and infos[0]["env_episode_length"] == 3
    assert obs.tolist() == [[1, 0], [2, 0]]


class VanishingTurns(Stubborn):
    """Two players taking turns, rewarded 1.0 each move; "b" disappears from
    agents after its second move, "a" after its third, with no flag."""

    metadata: dict = {"name": "vanishing_turns"}

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        super().reset(seed)
        self.moves = dict.fromkeys(self.agents, 0)

    def step(self, action: Any) -> None:
        mover = self.agent_selection
        self.moves[mover] += 1
        self.rewards = {a: 1.0 if a == mover else 0.0 for a in self.agents}
        if self.moves[mover] == {"a": 3, "b": 2}[mover]:
            self.agents.remove(mover)
        if self.agents:
            self.agent_selection = (
                self.agents[(self.agents.index(mover) + 1) % len(self.agents)]
                if mover in self.agents
                else self.agents[0]
            )


def test_an_aec_agent_that_leaves_without_a_flag_is_truncated() -> None:
    with pufferrs.vector.make(VanishingTurns, 1) as envs:
        envs.reset(seed=0)
        steps = [copied(envs.step(np.zeros(2, np.int64))) for _ in range(5)]
    # Moves: a, b, a, b (b leaves), a (a leaves: the episode ends).
    obs, rewards, terms, truncs, infos = steps[3]
    assert truncs.tolist() == [False, True] and infos[1]["episode_return"] == 2.0
    assert not infos[1]["final_obs"].any()
    obs, rewards, terms, truncs, infos = steps[4]
    assert truncs.tolist() == [True, False] and infos[0]["episode_return"] == 3.0
    assert infos[0]["env_episode_return"] == 5.0 and infos[0]["env_episode_length"] == 5


@pytest.mark.parametrize("where", ["reset", "step", "possible_agents"])
@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_an_agent_not_in_possible_agents_is_named(where: str, backend: str) -> None:
    def creator() -> Scripted:
        return Scripted(plan=(("a", "b"), ("a", "b"), ()), intruder=where)

    kwargs: dict = {"backend": backend, "num_workers": 2} if backend == "multiprocessing" else {}
    with pufferrs.vector.make(creator, 2, **kwargs) as envs:
        with pytest.raises(WorkerError) as info:
            envs.reset(seed=0)
            for _ in range(4):
                envs.step(np.zeros(4, np.int64))
    message = str(info.value)
    # Both envs break at once: the one reported is named, in the message too.
    assert info.value.env in (0, 1) and f"env {info.value.env} raised" in message
    assert "agent 'zz', which is not in the possible_agents ['a', 'b'] the vector env was made with" in message
    assert ("the env's possible_agents is now ['a', 'zz']" in message) == (where == "possible_agents")
    assert "KeyError" not in message


class RewardsAStranger(Stubborn):
    metadata: dict = {"name": "rewards_a_stranger"}

    def step(self, action: Any) -> None:
        self.rewards = {"a": 1.0, "b": 0.0, "zz": 5.0}
        self.agent_selection = "b" if self.agent_selection == "a" else "a"


def test_an_aec_reward_for_an_agent_not_in_possible_agents_is_named() -> None:
    with pufferrs.vector.make(RewardsAStranger, 1) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError, match="env 0 raised EnvProtocolError: RewardsAStranger gives a reward") as info:
            envs.step(np.zeros(2, np.int64))
    assert "agent 'zz', which is not in the possible_agents ['a', 'b']" in str(info.value)
