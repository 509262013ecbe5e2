"""Acting: from a policy's logits for a batch of observation rows to
actions, with illegal actions masked exactly once. The trainer's rollout
and training passes and evaluation all act through an :class:`Actor`, so
the rule of who masks has this one owner.

Who masks: an observation with a top-level ``action_mask`` leaf
(:func:`pufferrs.models.action_mask_layout`) must never yield an illegal
action. The built-in policies read the leaf and mask their logits inside
``forward`` (a caller of ``policy.forward`` gets masked logits); any other
policy is masked here, with one unflatten of the rows. Masking twice would
change nothing but cost a second unflatten and a second fill per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pufferrs.actions import greedy_action
from pufferrs.distributions import Logits, mask_logits, sample_logits
from pufferrs.models import ACTION_MASK, action_mask_layout
from pufferrs.pytorch import unflatten

__all__ = ["Actor"]


class Actor:
    """Draws actions for ``policy`` on ``env``'s observations (anything with
    ``single_observation_space``, ``single_action_space`` and, for
    structured observations, ``layout``)."""

    def __init__(self, policy: nn.Module, env: Any):
        layout = action_mask_layout(env, env.single_action_space)
        self.mask_layout = None if _masks_itself(policy) else layout

    def mask(self, observations: torch.Tensor) -> torch.Tensor | None:
        """The action mask this actor applies to rows ``(B, row)``, or None
        when there is none or the policy applies it itself."""
        if self.mask_layout is None:
            return None
        return unflatten(observations, self.mask_layout)[ACTION_MASK]

    def sample(
        self, logits: Logits, observations: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(action, logprob, entropy)`` of :func:`~pufferrs.pytorch.sample_logits`:
        drawn, or of the given ``action`` (training)."""
        return sample_logits(logits, action, action_mask=self.mask(observations))

    def greedy(self, logits: Logits, observations: torch.Tensor) -> torch.Tensor:
        """The most likely legal action (a Normal's mean)."""
        mask = self.mask(observations)
        return greedy_action(logits if mask is None else mask_logits(logits, mask))


def _masks_itself(policy: nn.Module) -> bool:
    """Whether ``policy``, or the policy a wrapper holds (LSTMWrapper and
    NormalizedPolicy keep theirs in ``.policy``), is a built-in one that
    masks its logits: it carries the layout it reads the mask with."""
    while policy is not None:
        if getattr(policy, "action_mask_layout", None) is not None:
            return True
        policy = policy._modules.get("policy") if isinstance(policy, nn.Module) else None
    return False
