"""The trainer on PettingZoo envs: rows per agent, masks, action masks.

The built-in Rendezvous is only learnable when every row's observation,
action and reward belong to the same agent slot, and agents leave
mid-episode, so wrong masks or slots show as a failure to learn. Real
PettingZoo games run from the command line and never receive an illegal
move."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseWrapper

from pufferrs import vector
from pufferrs.config import seed_everything
from pufferrs.multiagent_envs import Rendezvous
from pufferrs.train import Config, Trainer

RENDEZVOUS = "pufferrs.multiagent_envs.Rendezvous"


# One torch thread for every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_rendezvous_is_learned_with_agents_leaving() -> None:
    # Random play scores 4**-3 = 0.016; agents that all pick one fixed
    # target score 0.25; only reading each slot's own cue scores more.
    config = Config.for_env(RENDEZVOUS, seed=0, compile=False)
    # Seeded as `pufferrs train` seeds its process: unseeded, about one
    # initial policy in seven was still below 0.6 at the end.
    seed_everything(config.seed)
    with Trainer(config) as trainer:
        trainer.train()
        masks = trainer.experience.host_masks
    scores = [m["env/score"] for m in trainer.metrics if "env/score" in m]
    assert np.mean(scores[:3]) < 0.15 and np.mean(scores[-3:]) >= 0.6, scores
    last = trainer.metrics[-1]
    assert last["env/env_episode_length"] == 16  # agent_0 never leaves: the env runs its full time
    assert last["env/episode_length"] < 16  # the others leave early, mid-episode
    # Agent steps are counted: fewer than rows x env steps, since absent
    # agents' rows are masked.
    assert not masks.all() and masks.any()
    env_steps = config.num_updates * config.batch_size
    assert env_steps < trainer.global_step < 3 * env_steps


def test_serial_and_multiprocessing_train_the_same_policy() -> None:
    config = Config.for_env(RENDEZVOUS, seed=3, compile=False, total_steps=2048, num_envs=4, batch_size=512)
    weights = []
    for backend, workers in (("serial", None), ("multiprocessing", 2)):
        vecenv = vector.make(Rendezvous, num_envs=4, backend=backend, num_workers=workers, seed=3)
        torch.manual_seed(0)
        with Trainer(config, vecenv) as trainer:
            trainer.train()
            weights.append({k: v.clone() for k, v in trainer.policy.state_dict().items()})
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_asynchronous_batches_of_agent_rows_train() -> None:
    # Each recv returns one worker's env (3 rows); the trainer indexes its
    # storage by the row ids and keeps stepping rows that are done storing.
    config = Config.for_env(RENDEZVOUS, seed=0, compile=False, total_steps=4096, num_envs=4, batch_size=1024)
    vecenv = vector.make(Rendezvous, num_envs=4, backend="multiprocessing", num_workers=4, batch_size=1, seed=0)
    with Trainer(config, vecenv) as trainer:
        trainer.train()
        exp = trainer.experience
    assert exp.host_masks.shape == (12, 256)
    assert all(np.isfinite(v) for m in trainer.metrics for v in m.values() if isinstance(v, float))
    # agent_0 never leaves, so it acted at every stored step of every env.
    assert exp.host_masks[0::3].all() and not exp.host_masks.all()


class CheckedMoves(BaseWrapper):
    """A turn-based game that fails the test on any illegal move (PettingZoo's
    own wrapper would only end the game with a warning), counting moves."""

    moves = 0

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if action is not None:
            legal = self.observe(agent)["action_mask"]
            assert legal[action], f"{agent} sent illegal move {action} under mask {legal}"
            CheckedMoves.moves += 1
        super().step(action)


def test_a_turn_based_game_gets_only_legal_moves() -> None:
    config = Config.for_env("classic/tictactoe-v3", seed=0, compile=False, total_steps=2048, num_envs=4, batch_size=512)
    CheckedMoves.moves = 0
    vecenv = vector.make(
        lambda: CheckedMoves(pettingzoo.make("aec", "classic/tictactoe-v3")), num_envs=4, backend="serial", seed=0
    )
    with Trainer(config, vecenv) as trainer:
        trainer.train()
        masks = trainer.experience.host_masks
    assert CheckedMoves.moves > 1000
    # Two players take turns: one of each env's two rows acts at every step.
    np.testing.assert_array_equal(masks.reshape(4, 2, -1).sum(axis=1), 1)
    assert trainer.metrics[-1]["env/episodes"] > 0


def test_pufferrs_train_runs_a_pettingzoo_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pufferrs",
            "train",
            "pettingzoo.classic.connect_four_v3",
            "--total-steps",
            "1024",
            "--num-envs",
            "4",
            "--batch-size",
            "512",
            "--minibatch-size",
            "256",
            "--name",
            "c4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "c4" / "model.pt").exists()


class ThreeMoves(AECEnv):
    """Two players alternate; after the third move (player_0, player_1,
    player_0) the game ends: player_0 wins 1, player_1 loses 1. player_1's
    loss arrives on player_0's move, a step where player_1 is masked."""

    metadata = {"name": "three_moves_v0"}

    def __init__(self) -> None:
        super().__init__()
        self.possible_agents = ["player_0", "player_1"]
        self.observation_spaces = {a: gs.Box(0, 3, (1,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: gs.Discrete(2) for a in self.possible_agents}

    def observation_space(self, agent: str) -> gs.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gs.Space:
        return self.action_spaces[agent]

    def observe(self, agent: str) -> np.ndarray:
        return np.array([self.moves], np.float32)

    def reset(self, seed: int | None = None, options: Any = None) -> None:
        self.agents = list(self.possible_agents)
        self.moves = 0
        self.agent_selection = "player_0"
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}

    def step(self, action: Any) -> None:
        if self.terminations[self.agent_selection]:
            self._was_dead_step(action)
            return
        self.moves += 1
        self.rewards = dict.fromkeys(self.agents, 0.0)
        if self.moves == 3:
            self.rewards = {"player_0": 1.0, "player_1": -1.0}
            self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = "player_1" if self.agent_selection == "player_0" else "player_0"
        self._accumulate_rewards()


def test_a_loss_on_the_opponents_move_is_kept_at_the_rollouts_edge() -> None:
    # Horizon 2: the rollout stores player_1's move at step 1; its loss
    # arrives after step 2 (player_0's move), past the horizon.
    config = Config.for_env(
        "ThreeMoves", policy="default", seed=0, compile=False, num_envs=1, batch_size=2, minibatch_size=2
    )
    vecenv = vector.make(ThreeMoves, num_envs=1, seed=0)
    with Trainer(config, vecenv) as trainer:
        trainer.rollout()
        exp = trainer.experience
        np.testing.assert_array_equal(exp.host_masks, [[True, False], [False, True]])
        # player_1 (row 1) acted at step 1: its loss and terminal fold there.
        assert exp.host_rewards[1].sum() == -1 and exp.host_terminals[1].any()
        assert exp.host_rewards[0].sum() == 0  # player_0's win comes from its move at step 2, not stored


def test_an_agents_memory_moves_on_its_own_steps_only() -> None:
    # Tic-tac-toe with an LSTM: each row acts every other step. The rollout
    # keeps a waiting agent's LSTM state as it was, and training unrolls
    # each segment through the row's own moves, so what its masked steps
    # hold (a zeroed row) cannot reach its memory.
    config = Config.for_env(
        "classic/tictactoe-v3",
        seed=0,
        compile=False,
        lstm=True,
        num_envs=4,
        batch_size=4 * 32,
        minibatch_size=4 * 32,
        bptt_horizon=8,
    )
    vecenv = vector.make(lambda: pettingzoo.make("aec", "classic/tictactoe-v3"), num_envs=4, seed=0)
    with Trainer(config, vecenv) as trainer:
        trainer.rollout()
        exp = trainer.experience
        masks = torch.from_numpy(exp.host_masks).reshape(-1)
        assert masks.any() and not masks.all()
        assert exp.episode_starts[:, 1:].any()  # episodes begin inside segments too
        count, _ = trainer.segments()
        everything = torch.arange(count)

        def replay() -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                logprobs, _, values = trainer.evaluate_segments(everything)
            return logprobs[masks], values[masks]

        # Before any update, training reproduces what the rollout computed
        # at every step where the agent acted.
        logprobs, values = replay()
        torch.testing.assert_close(logprobs, exp.logprobs.reshape(-1)[masks], rtol=0, atol=1e-5)
        torch.testing.assert_close(values, exp.values.reshape(-1)[masks], rtol=0, atol=1e-5)

        # Noise in the masked steps' observations changes none of it.
        waiting = ~torch.from_numpy(exp.host_masks)
        exp.obs[waiting] = torch.randint_like(exp.obs[waiting], 0, 2)
        noisy_logprobs, noisy_values = replay()
        torch.testing.assert_close(noisy_logprobs, logprobs, rtol=0, atol=0)
        torch.testing.assert_close(noisy_values, values, rtol=0, atol=0)
