"""The seam between stepping envs and what their outcomes mean for the
rows (issue 21): the core's ``episodes.rs`` owns the episode rules (its
own tests are Rust's, ``cargo test -p pufferrs-core``); the gymnasium
block (``EnvBlock``) and the PettingZoo blocks (``vector/agents.py``,
through ``EpisodeRows``) only call envs and hand it their outcomes, and
Serial steps either kind in one call."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pettingzoo
import pytest

import pufferrs.vector as pv
from pufferrs import BuffersError, Layout, SpaceError
from pufferrs._native import EnvBlock, EpisodeRows, RolloutBuffers
from pufferrs.multiagent_envs import Rendezvous
from pufferrs.vector.base import VectorEnv
from pufferrs.vector.serial import Serial

AGENTS = Path(pv.__file__).with_name("agents.py")

#: What only the episode bookkeeping may hold or write: running returns and
#: lengths, who ended, the block's clock, and the arrays of outcomes.
BOOKKEEPING = {
    "returns",
    "lengths",
    "clock",
    "started",
    "done",
    "present",
    "final",
    "rewards",
    "terminals",
    "truncations",
    "masks",
    "episode_returns",
    "episode_lengths",
}


def test_the_pettingzoo_blocks_hold_no_episode_bookkeeping() -> None:
    tree = ast.parse(AGENTS.read_text())
    held = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }
    assert not held & BOOKKEEPING, f"agents.py keeps {sorted(held & BOOKKEEPING)}: the core's episodes.rs owns them"
    indexed = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    }
    assert not indexed & BOOKKEEPING, f"agents.py reads the arrays {sorted(indexed & BOOKKEEPING)}"


def tictactoe() -> Any:
    return pettingzoo.make("aec", "classic/tictactoe-v3")


def policy(envs: Any, obs: np.ndarray, rows: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Actions that depend on each row's own id and observation only: the
    same whichever batch the row comes in."""
    space = envs.layout.space
    if isinstance(space, gs.Dict) and "action_mask" in space.spaces:
        return np.where(masks, envs.layout.unflatten(obs)["action_mask"].argmax(axis=1), 0)
    return (obs.argmax(axis=1) + rows) % envs.single_action_space.n


def records(creator: Any, batch_size: int | None, recvs: int) -> dict[int, list[tuple]]:
    """What each row gets at each of its recvs."""
    got: dict[int, list[tuple]] = {}
    with pv.make(creator, 2, batch_size=batch_size, seed=4) as envs:
        envs.async_reset()
        for _ in range(recvs):
            obs, rewards, terminals, truncations, infos, rows, masks = envs.recv()
            for k, row in enumerate(rows.tolist()):
                info = infos[k]
                ended = None
                if "final_obs" in info:
                    ended = (info["episode_return"], info["episode_length"], info["final_obs"].tobytes())
                summary = (info.get("env_episode_return"), info.get("env_episode_length"))
                outcome = (float(rewards[k]), bool(terminals[k]), bool(truncations[k]), bool(masks[k]))
                got.setdefault(row, []).append((obs[k].tobytes(), outcome, ended, summary))
            envs.send(policy(envs, obs, rows, masks))
    return got


@pytest.mark.parametrize("creator", [Rendezvous, tictactoe], ids=["parallel", "aec"])
def test_serial_steps_pettingzoo_envs_in_one_call(creator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one block, Serial's send never takes the general path (its
    ``_step`` hook), and every row gets what the general path gives it
    (Serial with a block per env, stepped in turn)."""

    def general(*args: Any) -> None:
        raise AssertionError("the general path stepped the envs")

    with monkeypatch.context() as patched:
        patched.setattr(Serial, "_step", general)
        one_call = records(creator, None, 60)
    blocks = records(creator, 1, 120)
    assert one_call.keys() == blocks.keys()
    for row, got in one_call.items():
        assert len(got) >= 50 and got[:50] == blocks[row][:50], f"row {row} differs"
    assert any(ended for got in one_call.values() for _, _, ended, _ in got), "no episode ended"


class Counter(gym.Env):
    observation_space = gs.Box(0, 100, (1,), np.float32)
    action_space = gs.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        self.t += 1
        return np.full(1, self.t, np.float32), 0.5, self.t == 3, False, {}


def arrays(buffers: RolloutBuffers) -> dict[str, np.ndarray]:
    return {name: buffers.array(name) for name in VectorEnv._ARRAYS}


def test_a_block_needs_its_rows_as_one_span() -> None:
    layout, action_layout = Layout(Counter.observation_space), Layout(Counter.action_space)
    buffers = RolloutBuffers(2, None, layout.row_bytes, action_layout.row_bytes, None, 1)
    given = arrays(buffers)
    given["rewards"] = np.zeros(4, np.float32)[::2]
    with pytest.raises(BuffersError, match="rewards: the block's rows must be one aligned span"):
        EnvBlock([Counter(), Counter()], 0, given, layout, action_layout)


def test_episode_rows_refuse_rows_outside_the_block_and_bad_final_rows_change_nothing() -> None:
    space = gs.Box(-1, 1, (2,), np.float32)
    layout = Layout(space)
    buffers = RolloutBuffers(2, None, layout.row_bytes, 8, None, 3)
    every = arrays(buffers)
    rows = EpisodeRows(1, 3, 1, every, layout)  # env 1 of 2: rows 3, 4, 5 of the buffers
    rows.begin_reset()
    rows.start(0)
    assert rows.join([0, 2]) == [0, 2]
    rows.act(0, [0, 2])
    rows.end_reset()
    np.testing.assert_array_equal(every["masks"], [False] * 3 + [True, False, True])
    rows.begin_step()
    rows.rewards([0, 1, 2], [1.5, "not playing: never read", 2])
    np.testing.assert_array_equal(every["rewards"][3:], [1.5, 0, 2])
    with pytest.raises(SpaceError, match="expected shape"):
        rows.end(0, True, False, np.zeros(3, np.float32))
    assert not every["terminals"].any() and rows.ended == () and not rows.has_ended(0)
    rows.end(0, True, False, np.ones(2, np.float32))
    rows.end(2, False, False)  # no flag: a truncation, and no last observation: a zero final row
    assert rows.ended == (0, 2) and rows.playing(0) == []
    np.testing.assert_array_equal(every["terminals"][3:], [True, False, False])
    np.testing.assert_array_equal(every["truncations"][3:], [False, False, True])
    assert every["final_observations"][3].view(np.float32).tolist() == [1.0, 1.0]
    assert not every["final_observations"][5].any()
    assert rows.summary(0) == (3.5, 1)
    with pytest.raises(BuffersError, match="row 3 is not in the block's 3 rows"):
        rows.end(3, True, False)
    with pytest.raises(BuffersError, match="env 1 is not in the block's 1 envs"):
        rows.start(1)
    with pytest.raises(BuffersError, match="rows 6..9 do not fit its 6 rows"):
        EpisodeRows(1, 3, 2, every, layout)
