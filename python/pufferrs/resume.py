"""Continuing a run from a checkpoint (``pufferrs train --resume``): the
parts of a trainer's state that are not its modules', and the checks that
a checkpoint fits the trainer it is loaded into.

:meth:`pufferrs.ppo.Trainer.state_dict` holds the policy (the
observation normaliser's statistics included), Adam's state, the reward
normaliser's statistics, the update count (which places the learning-rate
schedule), the global step, the elapsed time and timers, the random
generators of torch (CPU and CUDA), numpy and Python, and a description
of the env's spaces. Everything is a tensor or plain data, so checkpoints
keep loading with ``torch.load(..., weights_only=True)``.

What a resumed run does not get back is the envs' state: envs are made
anew and reset, with seeds moved on by the update count
(:func:`resumed_env_seed`), so a resumed run plays new episodes rather
than replaying the first ones. Its updates are the same, bit for bit, as
those of an uninterrupted run wherever the envs' state at the checkpoint
is their reset state (every episode ends at the update's last step and
resets deterministically); elsewhere the episodes in flight at the
checkpoint are cut short and replaced by new ones.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pufferrs.errors import CheckpointError

__all__ = [
    "check_policy_fits",
    "check_spaces_fit",
    "describe_spaces",
    "find_checkpoint",
    "resumed_env_seed",
    "rng_state",
    "run_directory_of",
    "set_rng_state",
]


def rng_state() -> dict[str, Any]:
    """The states of torch's (every initialised CUDA device's too),
    numpy's and Python's global generators, as tensors and numbers."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Puts back what :func:`rng_state` returned. CUDA states are restored
    on as many devices as both the checkpoint and this machine have."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = [s.cpu() for s in state.get("cuda", [])]
    if cuda and torch.cuda.is_available():
        for device, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)
    np_state = state["numpy"]
    keys = np_state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))


def describe_spaces(vecenv: Any) -> dict[str, Any]:
    """What a policy's shape depends on in the env: its observation and
    action spaces (as text) and its agent rows per env."""
    return {
        "observation": str(vecenv.single_observation_space),
        "action": str(vecenv.single_action_space),
        "agents_per_env": int(getattr(vecenv, "num_agents", vecenv.num_envs) // vecenv.num_envs),
    }


def check_spaces_fit(stored: dict[str, Any] | None, vecenv: Any) -> None:
    """Raises :class:`CheckpointError` when the env differs from the one
    the checkpoint was trained on (checkpoints from before resuming
    existed hold no description: they pass)."""
    if stored is None:
        return
    here = describe_spaces(vecenv)
    for key, what in (("observation", "observation space"), ("action", "action space"), ("agents_per_env", "agents")):
        if stored.get(key) != here[key]:
            raise CheckpointError(
                f"the checkpoint was trained on an env with {what} {stored.get(key)}, this env has {here[key]}: "
                "resume on the env it was trained on"
            )


def check_policy_fits(stored: dict[str, torch.Tensor], policy: nn.Module) -> None:
    """Raises :class:`CheckpointError` naming the weights (at most three)
    that the policy lacks, does not expect, or shapes otherwise."""
    own = policy.state_dict()
    problems = [f"{k} is not in the checkpoint" for k in own if k not in stored]
    problems += [f"{k} is not in this policy" for k in stored if k not in own]
    problems += [
        f"{k} is {tuple(stored[k].shape)} in the checkpoint, {tuple(v.shape)} here"
        for k, v in own.items()
        if k in stored and tuple(stored[k].shape) != tuple(v.shape)
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            "the checkpoint's policy does not fit the one this config makes (its policy, hidden_size, lstm or "
            f"normalisation differ): {'; '.join(problems[:3])}{more}"
        )


def resumed_env_seed(seed: int, update: int, num_envs: int) -> int:
    """The seed of the envs of a run resumed after ``update`` updates:
    past every seed the run's envs (``seed + i``) and earlier resumptions
    used, so that no episode of the run is played twice, and below 2**63."""
    return (seed + update * num_envs) % 2**63


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``--resume`` means: a file as it is; a run directory's
    latest, by update count, of ``model.pt`` and ``checkpoints/*.pt``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"nothing to resume at {str(path)!r}: no such file or run directory")
    if path.is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("update_*.pt"))
    latest = candidates[-1] if candidates else None
    final = path / "model.pt"
    if final.exists():
        # model.pt is written at the end or on Ctrl-C; checkpoints after it
        # come from a later, resumed run that was killed outright.
        if latest is None or _update_of(final) >= int(latest.stem.split("_")[1]):
            latest = final
    if latest is None:
        raise CheckpointError(f"nothing to resume in {str(path)!r}: it holds no model.pt and no checkpoints/*.pt")
    return latest


def _update_of(checkpoint: Path) -> int:
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        return int(state["update"])
    except Exception:  # noqa: BLE001 - an unreadable model.pt: the numbered checkpoints win
        return -1


def run_directory_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to: ``RUN/model.pt`` and
    ``RUN/checkpoints/update_N.pt`` are both RUN's."""
    parent = Path(checkpoint).parent
    return parent.parent if parent.name == "checkpoints" else parent
