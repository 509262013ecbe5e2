"""Multi-agent policies: one network for all agents, or one per agent.
(``independent_agents.py`` trains the second with pufferrs's PPO.)

Rows of a multi-agent batch are agents' observations; envs that flatten
agents env by env (as PufferLib's multi-agent envs do) give row ``k`` to
agent ``k % num_agents``, which is what these policies assume when no
``agent_ids`` are given.

- :class:`SharedMultiAgentPolicy`: every agent runs the same weights, so
  the whole batch is one forward pass. Optionally the agent's id is fed in
  as a one-hot, letting shared weights still behave per agent.
- :class:`IndependentMultiAgentPolicy`: each agent has its own network.
  Rows are grouped by agent, each group runs through its agent's network,
  and the outputs are put back in the order of the input rows, so that row
  ``k`` of the logits is the action of row ``k`` of the observations.
  (Concatenating the groups in agent order instead would hand agents each
  other's actions whenever the batch is not already sorted by agent.)
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import torch
from torch import nn
from torch.nn import functional as F

from pufferrs.pytorch import layer_init


def _agent_ids(observations: torch.Tensor, num_agents: int, agent_ids: torch.Tensor | None) -> torch.Tensor:
    if agent_ids is None:
        return torch.arange(observations.shape[0], device=observations.device) % num_agents
    return agent_ids.to(device=observations.device, dtype=torch.int64)


class SharedMultiAgentPolicy(nn.Module):
    """One actor-critic for all agents, over rows ``(B, *obs_shape)``
    (``B`` = envs x agents). With ``agent_id_input=True`` the agent's id is
    appended to its observation as a one-hot."""

    def __init__(
        self,
        observation_space: gs.Box,
        action_space: gs.Discrete,
        num_agents: int,
        hidden_size: int = 256,
        agent_id_input: bool = False,
    ):
        super().__init__()
        self.num_agents = num_agents
        self.agent_id_input = agent_id_input
        inputs = math.prod(observation_space.shape) + (num_agents if agent_id_input else 0)
        self.encoder = nn.Sequential(layer_init(nn.Linear(inputs, hidden_size)), nn.ReLU())
        self.actor = layer_init(nn.Linear(hidden_size, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(
        self, observations: torch.Tensor, state: dict | None = None, agent_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = observations.reshape(observations.shape[0], -1).float()
        if self.agent_id_input:
            ids = _agent_ids(observations, self.num_agents, agent_ids)
            x = torch.cat([x, F.one_hot(ids, self.num_agents).to(x.dtype)], dim=-1)
        features = self.encoder(x)
        return self.actor(features), self.critic(features).squeeze(-1)

    def forward_eval(
        self, observations: torch.Tensor, state: dict | None = None, agent_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state, agent_ids)


class IndependentMultiAgentPolicy(nn.Module):
    """A separate encoder and heads per agent; outputs in input row order."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Discrete, num_agents: int, hidden_size: int = 256):
        super().__init__()
        self.num_agents = num_agents
        self.num_actions = int(action_space.n)
        inputs = math.prod(observation_space.shape)
        self.encoders = nn.ModuleList(
            nn.Sequential(
                layer_init(nn.Linear(inputs, hidden_size)),
                nn.ReLU(),
                layer_init(nn.Linear(hidden_size, hidden_size)),
                nn.ReLU(),
            )
            for _ in range(num_agents)
        )
        self.actors = nn.ModuleList(
            layer_init(nn.Linear(hidden_size, self.num_actions), std=0.01) for _ in range(num_agents)
        )
        self.critics = nn.ModuleList(layer_init(nn.Linear(hidden_size, 1), std=1.0) for _ in range(num_agents))

    def forward(
        self, observations: torch.Tensor, state: dict | None = None, agent_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``observations`` ``(B, *obs_shape)``, ``agent_ids`` ``(B,)``
        (default: row ``k`` is agent ``k % num_agents``). Returns logits
        ``(B, n)`` and values ``(B,)``, row for row with the input."""
        x = observations.reshape(observations.shape[0], -1).float()
        ids = _agent_ids(observations, self.num_agents, agent_ids)
        # Sort rows by agent (stable: rows of an agent keep their order),
        # run each agent's contiguous group, then undo the sort. The group
        # sizes are the one value read back to the host.
        order = torch.argsort(ids, stable=True)
        sizes = torch.bincount(ids, minlength=self.num_agents).tolist()
        if len(sizes) > self.num_agents:
            raise ValueError(f"agent_ids must be in [0, {self.num_agents}), got up to {len(sizes) - 1}")
        logits, values = [], []
        for agent, group in enumerate(x[order].split(sizes)):
            # An agent without rows runs on an empty group: cheap, and it
            # keeps the concatenation below free of special cases.
            features = self.encoders[agent](group)
            logits.append(self.actors[agent](features))
            values.append(self.critics[agent](features).squeeze(-1))
        # inverse[k] is where row k went in the sorted order.
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.shape[0], device=order.device)
        return torch.cat(logits)[inverse], torch.cat(values)[inverse]

    def forward_eval(
        self, observations: torch.Tensor, state: dict | None = None, agent_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state, agent_ids)
