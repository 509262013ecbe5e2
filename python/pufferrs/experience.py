"""The trainer's storage of one update's steps, the indexing helpers
that address it by row ids and steps without copies where they can, and
the statistics over the steps where an agent acted (the steps' masks).

A row is one agent slot of one env (``vecenv.num_agents`` rows, one per
env for single-agent envs), indexed by the row ids ``recv`` returns.
Multi-agent envs also return masks, True where the row's agent acts; the
trainer then

- stores every row's every step, and folds a masked step's reward and
  flags into the row's last acting step
  (:func:`~pufferrs.advantages.compute_advantages`);
- counts only acting steps in the losses, the advantage normalisation and
  ``global_step`` (agent steps, so ``sps`` is agent steps per second);
- keeps a row's LSTM state as it is through its masked steps, so that an
  agent's memory moves on its own steps only (training unrolls each
  segment's acting steps first: :meth:`Experience.acting_first`), and
  zeroes it at the row's first acting step after its agent's episode
  ended;
- applies an ``action_mask`` observation leaf to the logits as the
  built-in policies do, so that no policy sends an illegal action;
- splits an update into ``batch_size / minibatch_size`` minibatches as for
  one agent, each holding every agent's steps."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pufferrs.actions import ActionAdapter
from pufferrs.advantages import fold_later_outcomes

__all__ = ["Experience", "FinalObservations", "ReceivedBatch", "StepWeights", "row_index", "step_index"]


class Experience:
    """One update's steps on the training device: ``rows`` rows (one per
    agent slot) of ``horizon`` steps, viewed as segments of
    ``bptt_horizon`` for training.

    Rewards, terminals, truncations, episode starts and masks arrive with
    every ``recv`` on the host, where the rollout needs them anyway, and
    stay there: GAE runs on the host too."""

    def __init__(
        self,
        rows: int,
        horizon: int,
        bptt_horizon: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        actions: ActionAdapter,
        lstm_size: int | None,
        device: torch.device,
    ):
        n, t = rows, horizon
        self.rows, self.horizon, self.bptt_horizon = n, t, bptt_horizon
        self.obs = torch.zeros(n, t, *obs_shape, dtype=obs_dtype, device=device)
        self.actions = torch.zeros(n, t, *actions.shape, dtype=actions.dtype, device=device)
        self.logprobs = torch.zeros(n, t, device=device)
        self.values = torch.zeros(n, t, device=device)
        #: V(observation after each row's last stored step), for GAE.
        self.bootstrap = torch.zeros(n, device=device)
        #: V(final observation) of truncated steps (elsewhere: the step's
        #: own value, never read).
        self.final_values = torch.zeros(n, t, device=device)
        self.host_rewards = np.zeros((n, t), np.float32)
        self.host_terminals = np.zeros((n, t), bool)
        self.host_truncations = np.zeros((n, t), bool)
        #: True where the observation is the first of an episode. Kept on
        #: the CPU for training too: LSTMWrapper.forward reads it on the host.
        self.episode_starts = torch.zeros(n, t, dtype=torch.bool)
        self.host_starts = self.episode_starts.numpy()
        #: True where the row's agent acted at the step (always, for
        #: single-agent envs); the other steps have no loss.
        self.host_masks = np.ones((n, t), bool)
        if lstm_size is not None:
            # The LSTM state going into each segment's first step (zero when
            # that step starts an episode).
            self.lstm_h = torch.zeros(n, t // bptt_horizon, lstm_size, device=device)
            self.lstm_c = torch.zeros(n, t // bptt_horizon, lstm_size, device=device)
        # Tensor views of the host arrays.
        self.rewards = torch.from_numpy(self.host_rewards)
        self.terminals = torch.from_numpy(self.host_terminals)
        self.truncations = torch.from_numpy(self.host_truncations)
        self.masks = torch.from_numpy(self.host_masks)

    def store(
        self,
        batch: ReceivedBatch,
        steps: np.ndarray,
        store: np.ndarray,
        actions: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stores the rollout step of the batch positions where ``store``
        (the row has room), at each row's ``steps``: observation, action,
        log-probability, value, episode start and mask. Returns the rows
        and steps stored."""
        if store.all():
            rows, at, chosen = batch.row_ids, steps, None
        else:
            positions = np.flatnonzero(store)
            rows, at = batch.row_ids[positions], steps[positions]
            chosen = torch.from_numpy(positions).to(self.obs.device)

        def pick(x: torch.Tensor) -> torch.Tensor:
            return x if chosen is None else x[chosen]

        where = step_index(rows, at, self.obs.device)
        self.obs[where] = pick(batch.obs)
        self.actions[where] = pick(actions).reshape(-1, *self.actions.shape[2:]).to(self.actions.dtype)
        self.logprobs[where] = pick(logprobs).float()
        self.values[where] = pick(values).float()
        self.host_starts[rows, at] = batch.starts[store]
        self.host_masks[rows, at] = batch.masks[store]
        return rows, at

    def keep_segment_starts(
        self,
        rows: np.ndarray,
        steps: np.ndarray,
        stored: np.ndarray,
        h: torch.Tensor,
        c: torch.Tensor,
        starts: torch.Tensor,
    ) -> None:
        """Keeps the LSTM state ``(h, c)`` going into the steps ``(rows[k],
        steps[k])`` that are stored (``stored[k]``) and begin a segment, as
        that step saw it: zero where it starts an episode (``starts[k]``)."""
        first = np.flatnonzero(stored & (steps % self.bptt_horizon == 0))
        if len(first):
            chosen = torch.from_numpy(first).to(h.device)
            reset = starts[chosen].unsqueeze(-1)
            where = step_index(rows[first], steps[first] // self.bptt_horizon, h.device)
            self.lstm_h[where] = h[chosen].masked_fill(reset, 0)
            self.lstm_c[where] = c[chosen].masked_fill(reset, 0)

    def acting_first(self, length: int, segments: torch.Tensor) -> torch.Tensor | None:
        """The step indices of each of the ``length``-step ``segments`` (a
        host index), those where the row's agent acted first, each group in
        time order; None when every step of them acted (always, in
        single-agent envs)."""
        masked = ~self.masks.reshape(-1, length)[segments]
        if not masked.any():
            return None
        return torch.sort(masked.to(torch.uint8), dim=1, stable=True).indices

    def record(
        self,
        rows: np.ndarray,
        steps: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        truncations: np.ndarray,
        fold: np.ndarray,
    ) -> None:
        """Stores the outcomes (reward and flags) of the steps ``(rows[k],
        steps[k])``. Where ``fold`` is True the outcome is that of a later
        masked step of the row, folded into the stored one by GAE's rule
        (:func:`~pufferrs.advantages.fold_later_outcomes`)."""
        if fold.any():
            later = rewards[fold], terminals[fold], truncations[fold]
            fold_later_outcomes(
                self.host_rewards, self.host_terminals, self.host_truncations, rows[fold], steps[fold], later
            )
            fresh = ~fold
            rows, steps = rows[fresh], steps[fresh]
            rewards, terminals, truncations = rewards[fresh], terminals[fresh], truncations[fresh]
        self.host_rewards[rows, steps] = rewards
        self.host_terminals[rows, steps] = terminals
        self.host_truncations[rows, steps] = truncations


class FinalObservations:
    """The final observations of one rollout's truncated steps, kept as
    they arrive (copied to the device: the vector env's rows are views that
    later episode ends overwrite) and valued in one forward at the end of
    the rollout, by the policy that chose the steps."""

    def __init__(self, to_device: Callable[[np.ndarray], torch.Tensor]):
        self.to_device = to_device
        # (row ids, steps, observations, LSTM state or None) per recv.
        self.entries: list[tuple] = []
        self.warned = False

    def clear(self) -> None:
        self.entries.clear()

    def keep(
        self,
        infos: list[dict],
        positions: np.ndarray,
        row_ids: np.ndarray,
        steps: np.ndarray,
        state: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """Keeps the ``final_obs`` of batch ``positions`` (truncated steps
        stored at ``(row_ids, steps)``), with each row's LSTM ``state``
        ``(h, c)`` after the step for a recurrent policy."""
        rows = [infos[k].get("final_obs") for k in positions.tolist()]
        if any(row is None for row in rows):
            if not self.warned:
                self.warned = True
                warnings.warn(
                    "the vector env gives no 'final_obs' in the info of truncated steps: "
                    "they bootstrap from the value of their own observation instead",
                    stacklevel=4,
                )
            known = np.array([row is not None for row in rows])
            rows, row_ids, steps = [r for r in rows if r is not None], row_ids[known], steps[known]
            if state is not None:
                index = torch.from_numpy(np.flatnonzero(known)).to(state[0].device)
                state = (state[0][index], state[1][index])
            if not rows:
                return
        self.entries.append((row_ids, steps, self.to_device(np.stack(rows)), state))

    def value(self, exp: Experience, forward_eval: Callable) -> None:
        """Fills ``exp.final_values``: the rollout's values, and at its
        truncated steps the value of their final observations."""
        exp.final_values.copy_(exp.values)
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        device = exp.final_values.device
        row_ids = torch.from_numpy(np.concatenate([e[0] for e in entries])).to(device)
        steps = torch.from_numpy(np.concatenate([e[1] for e in entries])).to(device)
        obs = torch.cat([e[2] for e in entries])
        state = None
        if entries[0][3] is not None:  # each from its row's state after the step; no episode starts here
            state = {"lstm_h": torch.cat([e[3][0] for e in entries]), "lstm_c": torch.cat([e[3][1] for e in entries])}
        _, values = forward_eval(obs, state)
        exp.final_values[row_ids, steps] = values.reshape(-1).float()


class ReceivedBatch:
    """What one ``recv`` returned, ready to act on: row ids and their
    observations (on the device), episode-start flags (host and device)
    and masks (host)."""

    __slots__ = ("masks", "obs", "row_ids", "starts", "starts_device")

    def __init__(
        self,
        row_ids: np.ndarray,
        obs: torch.Tensor,
        starts: np.ndarray,
        starts_device: torch.Tensor,
        masks: np.ndarray,
    ):
        self.row_ids, self.obs, self.starts, self.starts_device = row_ids, obs, starts, starts_device
        self.masks = masks


class StepWeights:
    """Means over the steps where an agent acted: ``weights`` (1 acted, 0
    not) of the steps in the order the values come, or None when every
    step acted, which then computes exactly the plain means."""

    def __init__(self, weights: torch.Tensor | None):
        self.weights = weights
        # Steps counted, at least one: a minibatch where no agent acted
        # contributes zero loss rather than 0/0.
        self.count = None if weights is None else weights.sum().clamp(min=1)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean() if self.weights is None else (x * self.weights).sum() / self.count

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` shifted and scaled to mean 0 and standard deviation 1 over
        the counted steps (the unbiased estimate, as ``Tensor.std``)."""
        if self.weights is None:
            return (x - x.mean()) / (x.std() + 1e-8)
        mean = self.mean(x)
        var = ((x - mean).square() * self.weights).sum() / (self.count - 1).clamp(min=1)
        return (x - mean) / (var.sqrt() + 1e-8)


def row_index(row_ids: np.ndarray, device: torch.device) -> slice | torch.Tensor:
    """An index into per-row storage: a slice for consecutive row ids."""
    n = len(row_ids)
    if n and row_ids[-1] - row_ids[0] == n - 1 and (np.diff(row_ids) == 1).all():
        return slice(int(row_ids[0]), int(row_ids[0]) + n)
    return torch.from_numpy(row_ids).to(device)


def step_index(row_ids: np.ndarray, steps: np.ndarray, device: torch.device) -> tuple[Any, Any]:
    """An index into ``(rows, horizon, ...)`` storage for ``(row_ids[k],
    steps[k])``: plain slices when the rows are consecutive and at the same
    step (synchronous rollouts), index tensors otherwise."""
    if len(steps) and (steps == steps[0]).all():
        index = row_index(row_ids, device)
        if isinstance(index, slice):
            return index, int(steps[0])
    return torch.from_numpy(row_ids).to(device), torch.from_numpy(steps).to(device)
