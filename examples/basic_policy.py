"""A basic MLP actor-critic, with a deterministic and a sampled action.

The pattern every other example builds on. A policy for pufferrs is a
plain ``nn.Module`` with:

- ``forward(observations, state=None) -> (logits, values)``, where
  ``values`` is ``(B,)`` (one value per row, no trailing axis);
- ``forward_eval(observations, state=None)``, what rollouts call; the same
  computation for a feed-forward policy.

Run it: ``python examples/basic_policy.py`` steps CartPole with the
untrained policy through a pufferrs vector env.
"""

from __future__ import annotations

import math

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import layer_init, sample_logits


class BasicPolicy(nn.Module):
    """Two hidden layers shared by an actor (categorical logits) and a
    critic (a scalar value), for flat ``Box`` observations and a
    ``Discrete`` action."""

    def __init__(self, observation_space: gs.Box, action_space: gs.Discrete, hidden_size: int = 256):
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.encoder = nn.Sequential(
            layer_init(nn.Linear(math.prod(observation_space.shape), hidden_size)),
            nn.ReLU(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.ReLU(),
        )
        # Small actor weights start the policy near uniform; the critic's
        # unit scale matches returns of order one.
        self.actor = layer_init(nn.Linear(hidden_size, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(observations.reshape(observations.shape[0], -1).float())
        return self.actor(features), self.critic(features).squeeze(-1)

    def forward_eval(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(observations, state)

    @torch.no_grad()
    def get_action(self, observations: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(action (B,), value (B,))``: the most likely action when
        ``deterministic`` (for evaluation), else a sample (for exploring).
        Nothing here builds a graph; training recomputes what it needs."""
        logits, value = self.forward(observations)
        if deterministic:
            return logits.argmax(dim=-1), value
        action, _, _ = sample_logits(logits)
        return action, value


if __name__ == "__main__":
    import gymnasium as gym

    import pufferrs.vector

    with pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=4) as envs:
        policy = BasicPolicy(envs.single_observation_space, envs.single_action_space)
        obs, _ = envs.reset(seed=0)
        total = 0.0
        for _ in range(100):
            action, _ = policy.get_action(torch.from_numpy(obs))
            obs, rewards, *_ = envs.step(action.numpy())
            total += float(rewards.sum())
        print(f"untrained policy: {total:.0f} reward over 100 steps of 4 envs")
