"""A deeper MLP made trainable by residual connections.

Each block adds a correction to its input (``x + f(x)``) instead of
replacing it, so gradients reach the early layers through the identity
path however many blocks there are. The blocks are pre-norm (LayerNorm
before each ``f``, as in transformers), which keeps the residual stream's
scale from growing with depth; a final LayerNorm feeds the heads.
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import layer_init


class ResidualBlock(nn.Module):
    """``x + Linear(ReLU(Linear(LayerNorm(x))))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.LayerNorm(dim),
            layer_init(nn.Linear(dim, dim)),
            nn.ReLU(),
            # Unit gain on the block's output: each block starts as a
            # modest correction rather than doubling the stream's scale.
            layer_init(nn.Linear(dim, dim), std=1.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResidualPolicy(nn.Module):
    """An encoder, ``num_blocks`` residual blocks of width ``dim``, and
    actor/critic heads, for a flat ``Box`` observation and a ``Discrete``
    action."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Discrete, num_blocks: int = 4, dim: int = 256):
        super().__init__()
        self.encoder = layer_init(nn.Linear(math.prod(observation_space.shape), dim))
        self.blocks = nn.Sequential(*(ResidualBlock(dim) for _ in range(num_blocks)))
        self.norm = nn.LayerNorm(dim)
        self.actor = layer_init(nn.Linear(dim, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(dim, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.encoder(observations.reshape(observations.shape[0], -1).float()))
        x = self.norm(self.blocks(x))
        return self.actor(x), self.critic(x).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state)
