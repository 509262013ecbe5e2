"""Several discrete choices per step: a ``MultiDiscrete`` action.

One linear layer produces the logits of every head side by side, and
``split(nvec)`` cuts them into one tensor per head. Return that tuple as the
logits: :func:`~pufferrs.pytorch.sample_logits` samples every head at once
(actions ``(B, heads)``) and sums log-probabilities and entropies over
heads, which is the joint distribution of independent heads.

Sampled indices start at 0; add the space's ``start`` where it is not 0
before stepping the env (the pufferrs trainer does this).
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import layer_init


class MultiDiscretePolicy(nn.Module):
    """An MLP actor-critic for a flat ``Box`` observation and a
    ``MultiDiscrete`` action (any ``nvec`` shape; heads in C order)."""

    def __init__(self, observation_space: gs.Box, action_space: gs.MultiDiscrete, hidden_size: int = 256):
        super().__init__()
        self.nvec = tuple(int(n) for n in action_space.nvec.ravel())
        self.encoder = nn.Sequential(
            layer_init(nn.Linear(math.prod(observation_space.shape), hidden_size)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(hidden_size, sum(self.nvec)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(
        self, observations: torch.Tensor, state: dict | None = None
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        features = self.encoder(observations.reshape(observations.shape[0], -1).float())
        return self.actor(features).split(self.nvec, dim=-1), self.critic(features).squeeze(-1)

    def forward_eval(
        self, observations: torch.Tensor, state: dict | None = None
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return self.forward(observations, state)
