"""A policy over a ``Dict(image=..., vector=...)`` observation.

pufferrs vector envs hand a policy flat rows: every observation packed into
one fixed-size byte row (``envs.single_observation_space`` is that row's
``Box``). Inside ``forward``, :func:`~pufferrs.pytorch.unflatten_observations`
views the rows as the original dict again, leaf by leaf, in each leaf's own
dtype and shape, without copying. Pass it the env's own structured space
(``envs.layout.space``), not the flat row space.

The image encoder's output size is measured from the image space, so the
same class serves 8x8 test images and 84x84 frames. Other leaves of the
dict (if any) are ignored. Actions may be ``Discrete`` or
``MultiDiscrete``.
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn

from pufferrs.pytorch import layer_init, unflatten_observations


class MultiInputPolicy(nn.Module):
    """A CNN for ``observation_space["image"]`` (channels first), an MLP for
    ``observation_space["vector"]``, combined before the heads."""

    def __init__(
        self, observation_space: gs.Dict, action_space: gs.Discrete | gs.MultiDiscrete, hidden_size: int = 256
    ):
        super().__init__()
        self.observation_space = observation_space
        image_space, vector_space = observation_space["image"], observation_space["vector"]
        # Pixels in 0..255 are scaled to [0, 1]; other images are used as they are.
        self.image_scale = 1 / 255 if np.dtype(image_space.dtype) == np.uint8 else 1.0
        self.image_encoder = nn.Sequential(
            layer_init(nn.Conv2d(image_space.shape[0], 32, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            image_features = self.image_encoder(torch.zeros(1, *image_space.shape)).shape[1]
        self.vector_encoder = nn.Sequential(
            layer_init(nn.Linear(math.prod(vector_space.shape), 128)),
            nn.ReLU(),
        )
        self.combiner = nn.Sequential(
            layer_init(nn.Linear(image_features + 128, hidden_size)),
            nn.ReLU(),
        )
        if isinstance(action_space, gs.MultiDiscrete):
            self.action_nvec: tuple[int, ...] | None = tuple(int(n) for n in action_space.nvec.ravel())
            outputs = sum(self.action_nvec)
        else:
            self.action_nvec = None
            outputs = int(action_space.n)
        self.actor = layer_init(nn.Linear(hidden_size, outputs), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple:
        """``observations``: flat rows ``(B, row)``. Returns ``(logits,
        values (B,))``; logits is a tuple of per-head tensors for a
        ``MultiDiscrete`` action."""
        obs = unflatten_observations(observations, self.observation_space)
        batch = observations.shape[0]
        image = self.image_encoder(obs["image"].float() * self.image_scale)
        vector = self.vector_encoder(obs["vector"].reshape(batch, -1).float())
        features = self.combiner(torch.cat([image, vector], dim=-1))
        logits = self.actor(features)
        if self.action_nvec is not None:
            logits = logits.split(self.action_nvec, dim=-1)
        return logits, self.critic(features).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple:
        return self.forward(observations, state)
