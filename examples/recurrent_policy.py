"""A recurrent policy: your encoder and heads, pufferrs's LSTM between.

Split the policy in two, and :class:`~pufferrs.pytorch.LSTMWrapper` puts a
one-layer LSTM between the halves:

- ``encode_observations(observations, state=None) -> (B, input_size)``
- ``decode_actions(hidden (B, hidden_size)) -> (logits, values (B,))``

The wrapper keeps the state (``state["lstm_h"]``, ``state["lstm_c"]``),
zeroes it where ``state["episode_start"]`` says a new episode began, runs
one step at a time in ``forward_eval`` (rollouts) and whole sequences
``(B, T, ...)`` in ``forward`` (training), with one set of weights for both.
Nothing recurrent is written here: the guide's hand-rolled LSTM/LSTMCell
pair, and its state bookkeeping, is what the wrapper replaces.

Run it: ``python examples/recurrent_policy.py`` trains on the built-in
memory task, which only a policy with memory can solve.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.pytorch import LSTMWrapper, layer_init


class RecurrentPolicy(nn.Module):
    """The feed-forward halves of a recurrent policy for a flat ``Box``
    observation and a ``Discrete`` action.

    ``hidden_size`` (what the encoder produces, the LSTM's input) and
    ``output_size`` (what the heads read, the LSTM's hidden size) are the
    attributes :class:`LSTMWrapper` checks its sizes against.
    """

    def __init__(
        self, observation_space: gs.Box, action_space: gs.Discrete, input_size: int = 128, hidden_size: int = 128
    ):
        super().__init__()
        self.hidden_size = input_size
        self.output_size = hidden_size
        self.encoder = nn.Sequential(
            layer_init(nn.Linear(math.prod(observation_space.shape), input_size)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(hidden_size, int(action_space.n)), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def encode_observations(self, observations: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        return self.encoder(observations.reshape(observations.shape[0], -1).float())

    def decode_actions(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(hidden), self.critic(hidden).squeeze(-1)

    def forward(self, observations: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Without the LSTM: encoder straight into the heads (so the halves
        can be tested alone; needs ``input_size == hidden_size``)."""
        return self.decode_actions(self.encode_observations(observations, state))


def make_recurrent_policy(env: Any, input_size: int = 128, hidden_size: int = 128) -> LSTMWrapper:
    """:class:`RecurrentPolicy` inside an :class:`LSTMWrapper`, for an env
    with ``single_observation_space`` and ``single_action_space`` (a
    pufferrs vector env)."""
    policy = RecurrentPolicy(env.single_observation_space, env.single_action_space, input_size, hidden_size)
    return LSTMWrapper(env, policy, input_size=input_size, hidden_size=hidden_size)


if __name__ == "__main__":
    from pufferrs.train import Config, Trainer, apply_process_settings, make_vecenv

    config = Config.for_env("pufferrs/Memory-v0")  # lstm=True in its preset
    apply_process_settings(config)  # torch threads and seeds, as `pufferrs train` sets them
    vecenv = make_vecenv(config)
    with Trainer(config, vecenv, make_recurrent_policy(vecenv, config.hidden_size, config.hidden_size)) as trainer:
        summary = trainer.train(lambda row: print(row["update"], row.get("env/success")))
    print(summary)
