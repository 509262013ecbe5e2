"""Generalized advantage estimation (GAE), computed by a Rust kernel.

Arrays are ``(N, T)``: ``N`` envs by ``T`` steps, the layout the trainer
stores experience in. A time-major ``(T, N)`` buffer passes as its
transpose ``x.T``, a view: the kernel reads any strides, so nothing is
copied on the CPU. Values, rewards and bootstrap values are float32, the
flags bool; numpy arrays and torch tensors are both taken.

Tensors on a GPU go through page-locked host memory: values (and final
values) down, advantages back up, one synchronisation in between; at
``N = 64, T = 2048`` that is 1 MB each way, at the trainer's usual sizes a
few hundred KB. Flags and rewards are best kept on the host, where the
trainer keeps them: nothing then copies them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pufferrs._native import fold_outcomes_into, gae
from pufferrs.errors import RowError

__all__ = ["compute_advantages", "fold_later_outcomes"]

#: Tensor dtypes with no numpy equivalent (``Tensor.numpy()`` raises TypeError).
_NOT_NUMPY = frozenset(
    getattr(torch, name) for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "complex32") if hasattr(torch, name)
)


def compute_advantages(
    values: Any,
    bootstrap: Any,
    rewards: Any,
    terminals: Any,
    truncations: Any,
    gamma: float,
    gae_lambda: float,
    final_values: Any = None,
    masks: Any = None,
) -> Any:
    """GAE(``gamma``, ``lambda``) of ``(N, T)`` steps; returns the
    advantages as a float32 tensor on ``values``' device, or a numpy array
    when ``values`` is one.

    ``bootstrap`` ``(N,)`` is the value of the observation after each env's
    last step. A terminal step has no future. A truncated step (not
    terminal) ends its episode too, but its future is worth the value of
    the episode's final observation, ``final_values[i, t]`` (used only at
    truncated steps); without ``final_values`` a truncated step's own value
    stands in for it, which biases every time-limited env's values (the
    vector envs hand out ``final_obs`` so that it need not). No advantage
    carries across an episode boundary.

    ``masks`` ``(N, T)`` bool (multi-agent rows: True where the row's agent
    acted) folds each masked step into the row's last unmasked step before
    it: that step owns the rewards and flags stored at the masked steps up
    to the row's next unmasked step, continues into that step's value (or
    ``bootstrap``), and masked steps get advantage 0. Without ``masks``
    every step acts, and the result is exactly what it was without them.

    ``gamma`` and ``gae_lambda`` must lie in [0, 1]: the kernel refuses
    others (NaN included) with :class:`~pufferrs.SpaceError`.
    """
    given = (values, bootstrap, rewards, terminals, truncations, final_values, masks)
    try:
        # The trainer's case: numpy arrays as they are and CPU tensors as
        # numpy views, no copy. A tensor on a GPU, of a dtype numpy lacks or
        # needing grad refuses (TypeError, RuntimeError), as does anything
        # else (AttributeError): the general path takes those.
        arrays = [x if x is None or type(x) is np.ndarray else x.numpy() for x in given]
    except (AttributeError, TypeError, RuntimeError):
        return _general(values.device if isinstance(values, torch.Tensor) else None, given, gamma, gae_lambda)
    out = gae(*arrays[:5], gamma, gae_lambda, final_values=arrays[5], masks=arrays[6])
    return torch.from_numpy(out) if isinstance(values, torch.Tensor) else out


def _general(device: torch.device | None, given: tuple[Any, ...], gamma: float, gae_lambda: float) -> Any:
    """:func:`compute_advantages` of any arguments (its fast path takes
    numpy arrays and CPU tensors): tensors on a GPU or that need grad, and
    sequences; ``device`` is ``values``' (None: a numpy result)."""
    staged: set[torch.device] = set()
    names = ("values", "bootstrap", "rewards", "terminals", "truncations", "final_values", "masks")
    arrays = [_on_host(name, x, staged) if x is not None else None for name, x in zip(names, given)]
    for source in staged:
        # The copies into page-locked memory were asynchronous.
        torch.cuda.current_stream(source).synchronize()
    arrays = [x.numpy() if isinstance(x, torch.Tensor) else x for x in arrays]
    if device is None:
        return gae(*arrays[:5], gamma, gae_lambda, final_values=arrays[5], masks=arrays[6])
    if device.type == "cpu":
        return torch.from_numpy(gae(*arrays[:5], gamma, gae_lambda, final_values=arrays[5], masks=arrays[6]))
    out = torch.empty(tuple(given[0].shape), dtype=torch.float32, pin_memory=device.type == "cuda")
    gae(*arrays[:5], gamma, gae_lambda, final_values=arrays[5], out=out.numpy(), masks=arrays[6])
    return out.to(device, non_blocking=True)


def fold_later_outcomes(
    rewards: np.ndarray,
    terminals: np.ndarray,
    truncations: np.ndarray,
    rows: np.ndarray,
    steps: np.ndarray,
    later: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Folds outcomes ``later`` (rewards, terminals, truncations) that
    arrive after their step was stored into steps ``(rows[k], steps[k])``
    of the host arrays ``(N, T)``, in place, by the rule
    :func:`compute_advantages` folds a masked step into the row's last
    acting step with (the kernel's one rule: rewards add, flags stick)."""
    later_rewards, later_terminals, later_truncations = later
    fold_outcomes_into(
        rewards,
        terminals,
        truncations,
        np.asarray(rows, np.int64),
        np.asarray(steps, np.int64),
        np.asarray(later_rewards, np.float32),
        np.asarray(later_terminals, bool),
        np.asarray(later_truncations, bool),
    )


def _on_host(name: str, x: Any, staged: set[torch.device]) -> Any:
    """``x`` where the kernel can read it: numpy arrays and CPU tensors as
    they are, GPU tensors copied (asynchronously) into page-locked memory;
    ``staged`` collects the devices copied from."""
    if not isinstance(x, torch.Tensor):
        return x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype in _NOT_NUMPY:
        # The kernel refuses every dtype but its own, as a RowError naming
        # the argument; these it would never see, since numpy cannot hold them.
        raise RowError(
            f"{name}: expected float32 values (bool flags), got a tensor of {x.dtype}, which numpy cannot hold"
        )
    x = x.detach()
    if x.device.type == "cpu":
        return x
    host = torch.empty(tuple(x.shape), dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    staged.add(x.device)
    return host
