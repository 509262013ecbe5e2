"""Observation normalisation with running statistics kept right.

:class:`ObservationNormalizer` keeps the running mean and variance of every
observation element over everything it has been shown, and maps
observations to ``clip((x - mean) / sqrt(var + epsilon), -clip, clip)``.

What "right" means here, against the usual hand-rolled version (PufferLib's
policy guide overwrites its statistics with each batch's own mean and std,
so the policy's input scale jumps with every batch):

- **Merged, not replaced.** Each batch is folded into the totals with the
  parallel form of Welford's algorithm (Chan, Golub and LeVeque, 1979):
  batch mean and sum of squared deviations, then one exact merge. Any split
  of the same data into batches gives the same statistics.
- **float64 accumulators.** Mean, variance and count are float64 buffers
  whatever the policy's dtype (``.half()`` and ``.to(bfloat16)`` leave them
  alone), so millions of steps of small updates do not drift and large
  offsets do not swamp the variance.
- **Updated only when asked**, by :meth:`ObservationNormalizer.update` or
  ``normalizer(x, update=True)``; never as a side effect of ``train()``
  mode or of a forward pass.
- **Saved with the model**: ``mean``, ``var`` and ``count`` are in
  ``state_dict``, so a checkpoint evaluates with the statistics it was
  trained with.
- **On the device**: the update is a handful of tensor ops with no read
  back to the host, so it never waits for the GPU.

:class:`NormalizedPolicy` puts a normaliser in front of any policy with the
pufferrs interface (``forward`` / ``forward_eval``, including
:class:`~pufferrs.models.LSTMWrapper`), which is what a trainer option to
normalise observations wraps the policy with.

:class:`RewardNormalizer` scales rewards by the standard deviation of the
discounted return (gymnasium's ``NormalizeReward``, SB3's
``VecNormalize``), one running return per row. Both normalisers merge their
statistics with :func:`merge_moments`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NormalizedPolicy", "ObservationNormalizer", "RewardNormalizer", "combine_moments", "merge_moments"]

_ACCUMULATORS = ("mean", "var", "count")


def merge_moments(mean: Any, var: Any, count: Any, batch: Any) -> tuple[Any, Any, Any]:
    """``(mean, var, count)`` of everything seen so far merged with the
    non-empty ``batch`` (first axis), by the parallel form of Welford's
    algorithm (Chan et al.): ``delta = mean_b - mean``, ``n = n_a + n_b``,
    ``mean + delta * n_b / n``, ``M2 = M2_a + M2_b + delta^2 * n_a * n_b /
    n``. Plain arithmetic, so that it runs on torch tensors (the
    observation normaliser, on the policy's device) and on numpy arrays
    (the reward normaliser, on the host) alike: one rule for both."""
    mean_b = batch.mean(0)
    return combine_moments(mean, var, count, mean_b, ((batch - mean_b) ** 2).sum(0), batch.shape[0])


def combine_moments(mean: Any, var: Any, count: Any, mean_b: Any, m2_b: Any, n_b: Any) -> tuple[Any, Any, Any]:
    """The merge of :func:`merge_moments` from a batch's mean, sum of
    squared deviations and (non-zero) count, however they were computed
    (summed across the ranks of a distributed run, for one)."""
    n = count + n_b
    delta = mean_b - mean
    m2 = var * count + m2_b + delta**2 * (count * n_b / n)
    return mean + delta * (n_b / n), m2 / n, n


class ObservationNormalizer(nn.Module):
    """Running mean/variance normalisation of observations of ``shape``.

    ``forward(x)`` takes observations ``(..., *shape)`` (any leading axes:
    a batch, or batch and time) and returns
    ``clip((x - mean) / sqrt(var + epsilon), -clip, clip)`` in ``x``'s
    dtype when it is a float dtype, else float32. Before the first update
    the statistics are mean 0 and variance 1, so observations only get
    clipped.

    Buffers: ``mean`` and ``var`` (float64, ``shape``; ``var`` is the
    population variance, ddof 0) and ``count`` (float64 scalar, the number
    of observations merged so far) are saved in ``state_dict``. The
    ``shift`` and ``scale`` that ``forward`` applies are float32 copies
    derived from them after each update and load, kept out of the state
    dict.
    """

    def __init__(self, shape: int | tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        if epsilon < 0:
            raise ValueError(f"epsilon must not be negative, got {epsilon}")
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(self.shape), persistent=False)
        self.register_buffer("scale", torch.ones(self.shape), persistent=False)
        self._refresh()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, clip={self.clip}, epsilon={self.epsilon}"

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < len(self.shape) or tuple(x.shape[x.dim() - len(self.shape) :]) != self.shape:
            raise ValueError(
                f"expected observations of shape (..., {', '.join(map(str, self.shape))}), got {tuple(x.shape)}"
            )

    def _refresh(self) -> None:
        # Derived in float64, stored in float32: forward then costs one
        # subtract, one multiply and one clamp in the observations' precision.
        with torch.no_grad():
            self.shift.copy_(self.mean)
            self.scale.copy_((self.var + self.epsilon).rsqrt())

    @torch.no_grad()
    def update(self, x: torch.Tensor, across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Merges observations ``x`` ``(..., *shape)`` into the statistics.

        Every leading axis counts as a batch axis. The batch's mean and sum
        of squared deviations are computed in float64 in two passes, then
        merged with the totals (Chan et al.):
        ``delta = mean_b - mean``, ``n = n_a + n_b``,
        ``mean += delta * n_b / n``,
        ``M2 = M2_a + M2_b + delta^2 * n_a * n_b / n``. An empty batch
        changes nothing. ``across`` sums a float64 tensor over the ranks of a
        distributed run (:mod:`pufferrs.distributed`): the batch is then
        every rank's ``x`` together.
        """
        self._check(x)
        batch = x.detach().reshape(-1, *self.shape).to(device=self.mean.device, dtype=torch.float64)
        if across is not None:
            n_b = across(torch.tensor(float(batch.shape[0]), dtype=torch.float64, device=batch.device))
            if n_b.item() == 0:
                return
            mean_b = across(batch.sum(0)) / n_b
            m2_b = across(((batch - mean_b) ** 2).sum(0))
            mean, var, count = combine_moments(self.mean, self.var, self.count, mean_b, m2_b, n_b)
        elif batch.shape[0] == 0:
            return
        else:
            mean, var, count = merge_moments(self.mean, self.var, self.count, batch)
        # In place, so that anything holding these buffers (an optimizer's
        # view of the module, a captured CUDA graph) sees the new values.
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)
        self._refresh()

    def forward(self, x: torch.Tensor, update: bool = False) -> torch.Tensor:
        """Normalised, clipped observations; ``update=True`` first merges
        ``x`` into the statistics (gymnasium's ``NormalizeObservation``
        order)."""
        if update:
            self.update(x)
        else:
            self._check(x)
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        y = (x.to(self.shift.dtype) - self.shift) * self.scale
        return y.clamp(-self.clip, self.clip).to(out_dtype)

    def _apply(self, fn: Callable, recurse: bool = True) -> ObservationNormalizer:
        # .half()/.to(dtype) would round the accumulators, and their
        # precision is the point: keep them float64, only follow the device.
        before = {name: self._buffers[name] for name in _ACCUMULATORS}
        result = super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new.dtype != torch.float64:
                self._buffers[name] = old.to(device=new.device)
        for name in ("shift", "scale"):
            if self._buffers[name].dtype != torch.float32:
                self._buffers[name] = self._buffers[name].float()
        self._refresh()
        return result


def _refresh_after_load(module: ObservationNormalizer, incompatible_keys: Any) -> None:
    # A module-level function, not a lambda, so that the module pickles.
    module._refresh()


class NormalizedPolicy(nn.Module):
    """A policy that sees normalised observations.

    ``NormalizedPolicy(env, policy)`` (the argument order of
    :class:`~pufferrs.models.LSTMWrapper`) normalises observations of
    ``env.single_observation_space`` with an :class:`ObservationNormalizer`
    (``self.normalizer``) and passes them, with ``state``, to ``policy``'s
    ``forward``, ``forward_eval`` or ``encode_observations``.
    ``decode_actions`` and any attribute this module lacks (``hidden_size``,
    ``is_continuous``, ``lstm``, ...) come from ``policy``, so code that
    inspects the wrapped policy keeps working.

    Observations must be float rows: a float ``Box``, or structured spaces
    whose leaves are all float (then rows are float too, element by
    element). Rows of mixed dtypes arrive as bytes, which have no
    meaningful mean: normalise the float leaves inside the policy with an
    :class:`ObservationNormalizer` of their own instead.

    **When to update.** Nothing here updates the statistics; call
    ``self.normalizer.update(observations)``. A trainer should merge each
    rollout's observations after the epochs that learn from it, so that a
    rollout and its training passes normalise alike (otherwise the log
    probabilities stored during the rollout and those recomputed in training
    differ before any learning, and PPO's ratio starts away from 1).
    """

    def __init__(self, env: Any, policy: nn.Module, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        space = env.single_observation_space
        dtype = getattr(space, "dtype", None)
        if dtype is None or np.dtype(dtype).kind != "f":
            raise TypeError(
                f"NormalizedPolicy needs float observations, got {space}; for structured rows of mixed dtypes, "
                "normalise the float leaves inside the policy with pufferrs.normalize.ObservationNormalizer"
            )
        if getattr(policy, "action_mask_layout", None) is not None:
            # Normalised, a mask's zeros would no longer read as zeros.
            raise TypeError("NormalizedPolicy cannot normalise observations that hold an action_mask leaf")
        self.policy = policy
        self.normalizer = ObservationNormalizer(tuple(space.shape), clip=clip, epsilon=epsilon)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name == "policy" or not modules or "policy" not in modules:
                raise
            return getattr(modules["policy"], name)

    def forward(self, observations: torch.Tensor, state: Any = None) -> Any:
        return self.policy(self.normalizer(observations), state)

    def forward_eval(self, observations: torch.Tensor, state: Any = None) -> Any:
        return self.policy.forward_eval(self.normalizer(observations), state)

    def encode_observations(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        return self.policy.encode_observations(self.normalizer(observations), state=state)

    def decode_actions(self, hidden: torch.Tensor) -> Any:
        return self.policy.decode_actions(hidden)


class RewardNormalizer:
    """Rewards divided by a running estimate of the discounted return's
    standard deviation, then clipped to ``[-clip, clip]``.

    Every row (an env, or an agent's slot) keeps its own discounted return
    ``G = gamma * G + r``; each step merges the ``G`` of the rows that took
    it into one running variance (:func:`merge_moments`, on the host in
    float64: a few numpy operations a step) and divides the rewards by its
    square root. A row's ``G`` restarts at 0 after its episode ends,
    terminated or truncated, so no return runs across an episode boundary.
    The mean is not subtracted: the sign of a reward is kept, as gymnasium
    and SB3 do.

    :meth:`state_dict` holds the statistics (float64 tensors, loadable with
    ``weights_only=True``); the rows' running returns are not in it, a
    resumed run starts them again at 0.
    """

    def __init__(self, rows: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.gamma, self.clip, self.epsilon = float(gamma), float(clip), float(epsilon)
        self.running = np.zeros(rows, np.float64)
        self.mean, self.var, self.count = np.float64(0), np.float64(1), np.float64(0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: torch.tensor(getattr(self, name), dtype=torch.float64) for name in _ACCUMULATORS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in _ACCUMULATORS:
            setattr(self, name, np.float64(state[name].item()))

    def __call__(self, rows: np.ndarray, rewards: np.ndarray, ended: np.ndarray, acted: np.ndarray) -> np.ndarray:
        """Normalised float32 rewards of the steps of ``rows`` that just
        ended with ``rewards`` and ``ended`` (terminal or truncated).
        ``acted`` marks the rows whose agent took the step (multi-agent
        rows that were masked carry no step of their own): only theirs
        update the returns and the statistics."""
        rewards = np.asarray(rewards, np.float64)
        stepped = rows[acted]
        if len(stepped):
            self.running[stepped] = self.gamma * self.running[stepped] + rewards[acted]
            self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, self.running[stepped])
        self.running[rows[ended]] = 0.0
        scale = 1 / np.sqrt(self.var + self.epsilon)
        return np.clip(rewards * scale, -self.clip, self.clip).astype(np.float32)
