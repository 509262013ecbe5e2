"""One network per agent on a PettingZoo env, trained by pufferrs's PPO.

``pufferrs train`` shares one policy among the agents (PufferLib's way).
For independent parameters, the policy must know whose row it reads, and
the trainer shuffles agents' steps into minibatches, so row positions do not
say. The agent's slot travels with its observation instead:
:class:`AgentSlot` adds it as a ``Discrete`` leaf, and
:class:`PerAgentPolicy` reads that leaf with ``unflatten`` and routes each
row through its agent's network (``IndependentMultiAgentPolicy`` from
``multi_agent_policy.py``).

    python examples/independent_agents.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium.spaces as gs
import torch
from pettingzoo.utils import BaseParallelWrapper
from torch import nn

from pufferrs import vector
from pufferrs.multiagent_envs import Rendezvous
from pufferrs.pytorch import unflatten
from pufferrs.train import Config, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from multi_agent_policy import IndependentMultiAgentPolicy  # noqa: E402


class AgentSlot(BaseParallelWrapper):
    """Each agent's observation as ``{"obs": ..., "agent": slot}``, its slot
    being its index in ``possible_agents``."""

    def __init__(self, env: Any):
        super().__init__(env)
        self.slots = {agent: k for k, agent in enumerate(env.possible_agents)}
        agents = gs.Discrete(len(self.slots))
        self.spaces = {agent: gs.Dict(obs=env.observation_space(agent), agent=agents) for agent in self.slots}

    def observation_space(self, agent: str) -> gs.Space:
        return self.spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        observations, infos = self.env.reset(seed=seed, options=options)
        return self._with_slots(observations), infos

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        observations, *rest = self.env.step(actions)
        return self._with_slots(observations), *rest

    def _with_slots(self, observations: dict) -> dict:
        return {agent: {"obs": obs, "agent": self.slots[agent]} for agent, obs in observations.items()}


class PerAgentPolicy(nn.Module):
    """``IndependentMultiAgentPolicy`` over rows of an :class:`AgentSlot` env."""

    def __init__(self, vecenv: Any, hidden_size: int = 64):
        super().__init__()
        self.layout = vecenv.layout
        space = self.layout.space
        self.networks = IndependentMultiAgentPolicy(
            space["obs"], vecenv.single_action_space, space["agent"].n, hidden_size
        )

    def forward(self, rows: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        tree = unflatten(rows, self.layout)
        return self.networks(tree["obs"], agent_ids=tree["agent"].long())

    forward_eval = forward


def train(total_steps: int | None = None, seed: int = 0) -> Trainer:
    """Rendezvous with a network per agent; the preset's other settings."""
    env_id = "pufferrs.multiagent_envs.Rendezvous"
    config = Config.for_env(env_id, seed=seed, **({} if total_steps is None else {"total_steps": total_steps}))
    vecenv = vector.make(lambda: AgentSlot(Rendezvous()), num_envs=config.num_envs, seed=seed)
    with Trainer(config, vecenv, PerAgentPolicy(vecenv)) as trainer:
        trainer.train()
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    scores = [m["env/score"] for m in train().metrics if "env/score" in m]
    print(f"score: first update {scores[0]:.3f}, last {scores[-1]:.3f} (a team that always meets scores 1)")
