"""Convolutional policies for image observations.

- :class:`CNNPolicy`: the Nature-DQN network for ``(C, 84, 84)`` frames,
  whose flattened size (64 x 7 x 7) is fixed by that resolution.
- :class:`EfficientCNN`: the same convolutions for any image size, with
  the flattened size measured by running a dummy frame through them once
  at construction, so no one has to redo the conv arithmetic by hand.

Both take channels-first ``uint8`` frames in 0..255 and scale them to
[0, 1]. (For images that arrive channels-last, ``permute(0, 3, 1, 2)``
first, as :class:`pufferrs.models.Convolutional` does with
``channels_last=True``.)
"""

from __future__ import annotations

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import layer_init


def nature_convolutions(in_channels: int) -> nn.Sequential:
    """Conv 8x8/4, 4x4/2, 3x3/1 with ReLUs, flattened (Mnih et al., 2015)."""
    return nn.Sequential(
        layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
        nn.ReLU(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)),
        nn.ReLU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)),
        nn.ReLU(),
        nn.Flatten(),
    )


class CNNPolicy(nn.Module):
    """Actor-critic over ``(C, 84, 84)`` frames: 84 -> 20 -> 9 -> 7 pixels
    through the three convolutions, hence 64 * 7 * 7 features."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Discrete):
        super().__init__()
        channels, height, width = observation_space.shape
        if (height, width) != (84, 84):
            raise ValueError(
                f"CNNPolicy is sized for 84x84 frames, got {height}x{width}; use EfficientCNN for other sizes"
            )
        self.encoder = nn.Sequential(
            nature_convolutions(channels),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(observations.float() * (1 / 255))
        return self.actor(features), self.critic(features).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state)


class EfficientCNN(nn.Module):
    """The Nature convolutions for frames of any size at least 36x36
    (smaller ones vanish in the strided convolutions), with
    ``n_features`` computed from the observation space."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Discrete, hidden_size: int = 512):
        super().__init__()
        self.network = nature_convolutions(observation_space.shape[0])
        # One dummy frame through the convolutions gives the flattened size
        # for this resolution; no_grad keeps it out of any autograd graph.
        with torch.no_grad():
            self.n_features = self.network(torch.zeros(1, *observation_space.shape)).shape[1]
        self.fc = layer_init(nn.Linear(self.n_features, hidden_size))
        self.actor = layer_init(nn.Linear(hidden_size, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.network(observations.float() * (1 / 255))
        x = torch.relu(self.fc(x))
        return self.actor(x), self.critic(x).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state)
