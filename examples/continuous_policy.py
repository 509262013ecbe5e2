"""Continuous actions: the policy returns a ``Normal`` distribution.

Return ``torch.distributions.Normal(mean, std)`` as the "logits": pufferrs's
:func:`~pufferrs.pytorch.sample_logits` samples it and scores actions under
it (log-probability and entropy summed over the action's dimensions), and
the trainer clips sampled actions to the ``Box`` bounds only on their way
to the env, so the log-probability PPO uses is that of the action actually
sampled. (Squashing samples with ``tanh``, as some recipes do, changes
their density and needs a correction term in the log-probability.)

The standard deviation is a learned parameter, independent of the
observation: the usual choice for PPO.
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from pufferrs.pytorch import layer_init, sample_logits


class ContinuousPolicy(nn.Module):
    """Gaussian actor-critic for a flat ``Box`` observation and a float
    ``Box`` action of any shape."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Box, hidden_size: int = 256):
        super().__init__()
        self.action_space = action_space
        self.action_shape = tuple(action_space.shape)
        action_size = math.prod(self.action_shape)
        # Tanh hidden units are CleanRL's choice for continuous control.
        self.encoder = nn.Sequential(
            layer_init(nn.Linear(math.prod(observation_space.shape), hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
        )
        self.actor_mean = layer_init(nn.Linear(hidden_size, action_size), std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_size))
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)
        self.register_buffer("low", torch.as_tensor(np.asarray(action_space.low, np.float32)), persistent=False)
        self.register_buffer("high", torch.as_tensor(np.asarray(action_space.high, np.float32)), persistent=False)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[Normal, torch.Tensor]:
        batch = observations.shape[0]
        features = self.encoder(observations.reshape(batch, -1).float())
        mean = self.actor_mean(features)
        std = self.actor_logstd.exp().expand_as(mean)
        shape = (batch, *self.action_shape)
        # validate_args=False: validation reads values back to the host,
        # a GPU sync on every step.
        dist = Normal(mean.reshape(shape), std.reshape(shape), validate_args=False)
        return dist, self.critic(features).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[Normal, torch.Tensor]:
        return self.forward(observations, state)

    @torch.no_grad()
    def get_action(self, observations: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(action, value)``: the mean (``deterministic``) or a sample,
        clipped to the action space's bounds, ready for ``env.step``."""
        dist, value = self.forward(observations)
        action = dist.loc if deterministic else sample_logits(dist)[0]
        return action.clamp(self.low, self.high), value
