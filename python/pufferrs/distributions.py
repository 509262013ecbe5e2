"""Action distributions from a policy's logits: sampling, log-probabilities
and entropies for categorical, multi-discrete and Gaussian actions, and the
``action_mask`` rule. Re-exported by :mod:`pufferrs.pytorch` under
PufferLib's names."""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal
from torch.nn import functional as F

__all__ = ["Logits", "entropy", "log_prob", "mask_logits", "sample_logits"]

Logits = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor] | Normal
"""What a policy's decoder returns: categorical logits ``(B, n)``, one
logits tensor per head of a multi-discrete action, or a ``Normal`` over
continuous actions."""

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    # Log-probabilities feed PPO's importance ratio exp(new - old), where
    # half-precision rounding would show up as spurious policy change.
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _stack_heads(heads: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """Multi-discrete heads as one ``(..., heads, widest)`` tensor.

    One batched categorical costs a handful of kernels however many heads
    there are, where a loop would cost a handful per head. Narrower heads
    are padded with ``-inf`` logits: zero probability, never sampled, and
    no contribution to the entropy.
    """
    if not heads:
        raise ValueError("sample_logits: got an empty sequence of logits heads")
    widest = max(h.shape[-1] for h in heads)
    if any(h.shape[-1] != widest for h in heads):
        heads = [F.pad(h, (0, widest - h.shape[-1]), value=float("-inf")) for h in heads]
    return torch.stack(heads, dim=-2)


def _categorical_logp(logits: torch.Tensor) -> torch.Tensor:
    return _upcast(logits).log_softmax(dim=-1)


def _categorical_entropy(logp: torch.Tensor) -> torch.Tensor:
    # -inf logits (masked or padded actions) have p = 0; clamping log p to
    # the most negative finite value keeps 0 * log 0 at 0 instead of NaN.
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(dim=-1)


def _categorical_sample(logp: torch.Tensor) -> torch.Tensor:
    # Gumbel-max: argmax(log p + Gumbel noise) is a sample from p. It runs
    # entirely on the tensor's device, so sampling never waits for the GPU.
    # The noise must stay finite: a draw of u == 0 would give a legal
    # action -inf and leave a masked one (finite, see mask_logits) the
    # argmax when it was the row's only legal action (1 in 2**24 float32
    # draws; CI once saw it). torch.rand never returns 1, so the other end
    # is finite already.
    u = torch.rand_like(logp).clamp_(min=torch.finfo(logp.dtype).tiny)
    return (logp - torch.log(-torch.log(u))).argmax(dim=-1)


def _normal_sum(t: torch.Tensor) -> torch.Tensor:
    # Dimension 0 is the batch of rows; every other dimension is part of
    # one action. An empty dim list would make torch sum everything.
    return t.sum(dim=tuple(range(1, t.dim()))) if t.dim() > 1 else t


def _normal_log_prob(dist: Normal, action: torch.Tensor) -> torch.Tensor:
    # Written out instead of dist.log_prob so that argument validation
    # (a host sync when enabled) never runs in the training loop.
    loc, scale = _upcast(dist.loc), _upcast(dist.scale)
    action = action.to(loc.dtype)
    return _normal_sum(-((action - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI)


def _normal_entropy(dist: Normal) -> torch.Tensor:
    scale = _upcast(dist.scale)
    return _normal_sum(0.5 + _LOG_SQRT_2PI + scale.log())


def _multi_action(action: torch.Tensor | tuple | list, heads: int) -> torch.Tensor:
    if isinstance(action, (tuple, list)):
        action = torch.stack([torch.as_tensor(a) for a in action], dim=-1)
    if action.shape[-1] != heads:
        raise ValueError(
            f"sample_logits: expected an action with {heads} heads in its last axis, got shape {tuple(action.shape)}"
        )
    return action


def mask_logits(logits: Logits, action_mask: torch.Tensor | None) -> Logits:
    """``logits`` with the actions that ``action_mask`` forbids given zero
    probability: the one owner of the action-mask rule.

    ``action_mask`` is ``(B, n)`` (any dtype; nonzero is legal), PettingZoo's
    ``action_mask`` observation leaf: for a tensor of logits ``(B, n)`` one
    entry per action, for a tuple of multi-discrete heads the heads' masks
    side by side (``sum(n_i)`` entries, each head masked by its own slice).
    A forbidden action's logit becomes the dtype's most negative finite
    value, not ``-inf``: its probability is exactly zero, yet log-probability,
    entropy and their gradients stay finite. A row (or a head's slice) that
    allows nothing allows everything instead: that is the zeroed observation
    of an absent agent, whose action is never sent, and a row with every
    logit masked would be a categorical over nothing. ``None`` returns
    ``logits`` as they are. Logits of a ``Normal`` cannot be masked.
    """
    if action_mask is None:
        return logits
    if isinstance(logits, Normal):
        raise ValueError("action masks apply to discrete actions; got a Normal over continuous actions")
    if isinstance(logits, (tuple, list)):
        widths = [h.shape[-1] for h in logits]
        if action_mask.shape[-1] != sum(widths):
            raise ValueError(
                f"action_mask: expected {sum(widths)} entries (the heads' {widths} side by side), "
                f"got shape {tuple(action_mask.shape)}"
            )
        return tuple(mask_logits(h, m) for h, m in zip(logits, action_mask.split(widths, dim=-1)))
    if action_mask.shape[-1] != logits.shape[-1]:
        raise ValueError(
            f"action_mask: expected {logits.shape[-1]} entries (one per action), got shape {tuple(action_mask.shape)}"
        )
    legal = action_mask != 0
    legal = legal | ~legal.any(dim=-1, keepdim=True)
    return logits.masked_fill(~legal, torch.finfo(logits.dtype).min)


def sample_logits(
    logits: Logits, action: torch.Tensor | None = None, action_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples an action (or scores a given one): ``(action, logprob, entropy)``.

    ``logits`` is what a policy's ``decode_actions`` returns:

    - a tensor ``(B, n)``: a categorical; the action is an int64 index
      ``(B,)`` starting at 0 (add a ``Discrete`` space's ``start`` yourself);
    - a tuple or list of tensors ``(B, n_i)``, one per head of a
      multi-discrete action, of any sizes: actions ``(B, heads)``;
      logprob and entropy are summed over heads;
    - a :class:`torch.distributions.Normal` of shape ``(B, *action_shape)``:
      logprob and entropy are summed over every dimension but the first.

    Without ``action`` a new one is sampled (no gradient flows through
    it); with ``action`` (e.g. from the rollout buffer, any numeric dtype)
    it is returned as given and its log-probability is computed, which is
    what PPO's ratio needs. logprob and entropy are float32 for
    half-precision logits. ``action_mask`` (see :func:`mask_logits`) gives
    illegal actions zero probability first: never sampled, and scored as
    hugely negative but finite. Nothing here reads a value back to the host, so
    on a GPU the call never waits for the device (sampling is Gumbel-max on
    the device) and it traces under ``torch.compile``.
    """
    logits = mask_logits(logits, action_mask)
    if isinstance(logits, Normal):
        if action is None:
            with torch.no_grad():
                action = logits.loc + logits.scale * torch.randn_like(logits.loc)
        return action, _normal_log_prob(logits, action), _normal_entropy(logits)

    multi = isinstance(logits, (tuple, list))
    if multi:
        stacked = _stack_heads(logits)
        if action is not None:
            action = _multi_action(action, len(logits))
    else:
        stacked = logits
    logp = _categorical_logp(stacked)
    with torch.no_grad():
        chosen = _categorical_sample(logp) if action is None else action.reshape(logp.shape[:-1]).long()
    logprob = logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    ent = _categorical_entropy(logp)
    if multi:
        logprob, ent = logprob.sum(dim=-1), ent.sum(dim=-1)
    return (chosen if action is None else action), logprob, ent


def log_prob(logits: Logits, action: torch.Tensor | tuple | list) -> torch.Tensor:
    """Log-probability of ``action`` under ``logits``; see :func:`sample_logits`."""
    return sample_logits(logits, action)[1]


def entropy(logits: Logits) -> torch.Tensor:
    """Entropy of the action distribution ``logits``, one value per row;
    see :func:`sample_logits` for the kinds of logits."""
    if isinstance(logits, Normal):
        return _normal_entropy(logits)
    if isinstance(logits, (tuple, list)):
        return _categorical_entropy(_categorical_logp(_stack_heads(logits))).sum(dim=-1)
    return _categorical_entropy(_categorical_logp(logits))
