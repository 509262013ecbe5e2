"""Built-in multi-agent environments: small, fast PettingZoo envs that test
a multi-agent trainer. Needs ``pettingzoo``; nothing is registered anywhere:
pass the class (or a lambda) to :func:`pufferrs.vector.make`.

- :class:`Rendezvous`: agents score only when every agent still in the
  game picks the same target, which moves every step and which each agent
  sees through a cue shifted by its own slot. Independent random policies
  score ``num_targets ** -agents`` of the time; a policy that reads its
  slot and its cue right scores every step. Some agents leave early, so
  rows go absent mid-episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium.spaces as gs
import numpy as np
from pettingzoo import ParallelEnv

__all__ = ["Rendezvous"]


class Rendezvous(ParallelEnv):
    """Meet at the target: ``num_agents`` agents, ``num_targets`` targets.

    Every step a target ``t`` is drawn. Agent ``k`` (``possible_agents[k]``,
    ``"agent_k"``) observes ``Box(0, 1, (num_agents + num_targets,),
    float32)``: its slot one-hot, then the cue ``(t + k) % num_targets``
    one-hot. So no two agents see the same cue for the same target, and an
    agent must undo its own shift: rows of the wrong agent, or actions sent
    to the wrong one, make the game unlearnable. Action:
    ``Discrete(num_targets)``.

    Reward: every agent present gets 1 when all agents present chose ``t``,
    else 0 (a team reward). Each agent but ``agent_0`` leaves with
    probability ``leave_prob`` per episode, terminated after a step drawn
    uniformly in ``1 .. max_steps - 1``; the others are truncated after
    ``max_steps`` steps. An agent's info at its last step holds ``score``,
    the fraction of its steps that scored (1 for a perfect team).

    Pure Python and numpy, precomputed observations: a step costs a few
    microseconds, so vector-env overhead shows in benchmarks.
    """

    metadata: dict[str, Any] = {"name": "pufferrs_rendezvous_v0", "render_modes": []}

    def __init__(self, num_agents: int = 3, num_targets: int = 4, max_steps: int = 16, leave_prob: float = 0.25):
        if num_agents < 1 or num_targets < 2 or max_steps < 2 or not 0 <= leave_prob <= 1:
            raise ValueError(
                "Rendezvous needs num_agents >= 1, num_targets >= 2, max_steps >= 2 and 0 <= leave_prob <= 1, got "
                f"{num_agents}, {num_targets}, {max_steps}, {leave_prob}"
            )
        self.num_targets, self.max_steps, self.leave_prob = num_targets, max_steps, leave_prob
        self.render_mode = None
        self.possible_agents = [f"agent_{k}" for k in range(num_agents)]
        self.agents: list[str] = []
        self._slot = {agent: k for k, agent in enumerate(self.possible_agents)}
        size = num_agents + num_targets
        self._observation_spaces = {a: gs.Box(0.0, 1.0, (size,), np.float32) for a in self.possible_agents}
        self._action_spaces = {a: gs.Discrete(num_targets) for a in self.possible_agents}
        # The observation of agent k for target t, built once, read-only:
        # a step hands out these arrays instead of making new ones.
        table = np.zeros((num_agents, num_targets, size), np.float32)
        for k in range(num_agents):
            for t in range(num_targets):
                table[k, t, k] = table[k, t, num_agents + (t + k) % num_targets] = 1.0
        table.flags.writeable = False
        self._table = [[table[k, t] for t in range(num_targets)] for k in range(num_agents)]
        self._rng = np.random.default_rng()
        self._targets: list[int] = []
        self._leave: dict[str, int] = {}
        self._scored: dict[str, int] = {}
        self._steps = 0

    def observation_space(self, agent: str) -> gs.Box:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> gs.Discrete:
        return self._action_spaces[agent]

    def _observations(self) -> dict[str, np.ndarray]:
        t, table = self._targets[self._steps], self._table
        slot = self._slot
        return {agent: table[slot[agent]][t] for agent in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng, steps = self._rng, self.max_steps
        # The episode's draws at once: a step then costs no call into numpy.
        self._targets = rng.integers(self.num_targets, size=steps + 1).tolist()
        leaves = rng.random(len(self.possible_agents)) < self.leave_prob
        when = rng.integers(1, steps, size=len(self.possible_agents)).tolist()
        self._leave = {a: when[k] for k, a in enumerate(self.possible_agents) if k and leaves[k]}
        self.agents = list(self.possible_agents)
        self._scored = dict.fromkeys(self.agents, 0)
        self._steps = 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        agents, target = self.agents, self._targets[self._steps]
        met = all(int(actions[agent]) == target for agent in agents)
        reward = 1.0 if met else 0.0
        self._steps += 1
        observations = self._observations()
        truncated = self._steps >= self.max_steps
        rewards, terminations, truncations, infos = {}, {}, {}, {}
        staying = []
        for agent in agents:
            self._scored[agent] += met
            rewards[agent] = reward
            left = self._leave.get(agent) == self._steps
            terminations[agent], truncations[agent] = left, truncated and not left
            if left or truncated:
                infos[agent] = {"score": self._scored[agent] / self._steps}
            else:
                infos[agent] = {}
                staying.append(agent)
        self.agents = staying
        return observations, rewards, terminations, truncations, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        pass
