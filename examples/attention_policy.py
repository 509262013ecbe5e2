"""Self-attention over the parts of an observation.

Attention needs a set of tokens to attend between; over a single vector
(one token) it reduces to a linear layer, since each token can then only
attend to itself. So the observation is read as ``num_tokens`` tokens:
``(num_tokens, token_size)`` observations as they are (entities, objects,
agents in view), flat ones split into equal parts. Each token is embedded,
given a learned position embedding (drop it for sets whose order means
nothing), mixed by one pre-norm transformer block, and mean-pooled into
the features the heads read.
"""

from __future__ import annotations

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import layer_init


class AttentionPolicy(nn.Module):
    """Self-attention actor-critic for a ``Box`` observation of shape
    ``(num_tokens, token_size)``, or ``(n,)`` split into ``num_tokens``
    equal tokens, and a ``Discrete`` action."""

    def __init__(
        self,
        observation_space: gs.Box,
        action_space: gs.Discrete,
        num_tokens: int | None = None,
        d_model: int = 64,
        nhead: int = 4,
    ):
        super().__init__()
        shape = tuple(observation_space.shape)
        if len(shape) == 2 and num_tokens in (None, shape[0]):
            self.num_tokens, token_size = shape
        elif len(shape) == 1 and num_tokens is not None and shape[0] % num_tokens == 0:
            self.num_tokens, token_size = num_tokens, shape[0] // num_tokens
        else:
            raise ValueError(
                f"observations of shape {shape} cannot be read as num_tokens={num_tokens} tokens: "
                "give (tokens, size) observations, or flat ones with num_tokens dividing their size"
            )
        self.embed = layer_init(nn.Linear(token_size, d_model))
        self.position = nn.Parameter(torch.randn(1, self.num_tokens, d_model) * 0.02)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_model),
            layer_init(nn.Linear(d_model, 2 * d_model)),
            nn.GELU(),
            layer_init(nn.Linear(2 * d_model, d_model)),
        )
        self.out_norm = nn.LayerNorm(d_model)
        self.actor = layer_init(nn.Linear(d_model, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(d_model, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = observations.reshape(observations.shape[0], self.num_tokens, -1).float()
        x = self.embed(tokens) + self.position
        y = self.attention_norm(x)
        # need_weights=False lets torch use its fused attention kernels.
        x = x + self.attention(y, y, y, need_weights=False)[0]
        x = x + self.mlp(x)
        features = self.out_norm(x).mean(dim=1)
        return self.actor(features), self.critic(features).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state)
