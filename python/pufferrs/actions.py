"""Actions on their way from the policy to the env: what
:func:`~pufferrs.pytorch.sample_logits` draws, or the most likely action,
turned into what the env's action space expects."""

from __future__ import annotations

import gymnasium.spaces as gs
import numpy as np
import torch

from pufferrs.distributions import Logits
from pufferrs.errors import ConfigError

__all__ = ["ActionAdapter", "greedy_action"]


class ActionAdapter:
    """Actions from :func:`~pufferrs.pytorch.sample_logits` (indices from 0,
    flat heads, unsquashed floats) as the env's action space expects them.
    ``dtype`` and ``shape`` are how the trainer stores one env's action."""

    def __init__(self, space: gs.Space):
        self.space = space
        if isinstance(space, gs.Discrete):
            self.dtype, self.shape = torch.int64, ()
            self.offset = None if int(space.start) == 0 else int(space.start)
        elif isinstance(space, gs.MultiDiscrete):
            self.dtype, self.shape = torch.int64, (int(np.prod(space.shape)),)
            self.offset = None if not np.any(space.start) else np.asarray(space.start, np.int64)
        elif isinstance(space, gs.MultiBinary):
            self.dtype, self.shape, self.offset = torch.int64, (int(np.prod(space.shape)),), None
        elif isinstance(space, gs.Box):
            self.dtype, self.shape, self.offset = torch.float32, tuple(space.shape), None
        else:
            raise ConfigError(f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary or Box")

    def __call__(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.cpu().numpy()
        space = self.space
        if isinstance(space, (gs.MultiDiscrete, gs.MultiBinary)):
            a = a.reshape(len(a), *space.shape)
        if self.offset is not None:
            a = a + self.offset
        if isinstance(space, gs.Box):
            # The policy's Normal is unbounded; the env's Box is not.
            a = np.clip(a, space.low, space.high).astype(space.dtype, copy=False)
        return a


def greedy_action(logits: Logits) -> torch.Tensor:
    """The most likely action: argmax per head, or a Normal's mean."""
    if isinstance(logits, torch.distributions.Normal):
        return logits.loc
    if isinstance(logits, (tuple, list)):
        return torch.stack([head.argmax(dim=-1) for head in logits], dim=-1)
    return logits.argmax(dim=-1)
