"""Where each row stands in the rollout being collected: the trainer's
bookkeeping between ``recv`` and ``send``, in one place.

A row is one agent slot of one env (one per env for single-agent envs).
Each rollout stores ``horizon`` steps of every row; asynchronous batches
and multi-agent masks make rows reach that point at different times, and
a row's step is stored when it is acted on, while its outcome (reward and
flags) arrives with the row's next ``recv``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowProgress"]


class RowProgress:
    """Per-row state of one rollout, for ``rows`` rows of ``horizon`` steps.

    Invariants, for every row ``r``:

    - ``stored[r]`` of its steps are in the experience, ``0 <= stored[r] <=
      horizon``;
    - ``pending[r]`` is the stored step whose outcome the next ``recv`` of
      ``r`` brings, or -1 when none is awaited (no step in flight, or one
      that was not stored: a row past its horizon is stepped without
      storing until the others catch up, since ``send`` must answer every
      ``recv``);
    - ``folding[r]``: ``r`` stored its ``horizon`` steps and waits, masked,
      for its agent's next acting observation; the outcomes of its masked
      steps meanwhile go to its last stored step (``pending[r] == horizon -
      1``), as GAE does for masked steps inside the rollout, so that a game
      lost on the opponent's move is not lost at the rollout's edge;
    - ``open[r]``: ``r``'s last acting step is in a running episode, so its
      advantage needs the value of ``r``'s next acting observation;
    - ``complete[r]``: ``r`` stored its steps and has that bootstrap value
      (or its episode ended, and needs none); the rollout is done when
      every row is complete;
    - ``new_episode[r]``: ``r``'s next acting step starts an episode (its
      LSTM state is zeroed there); it survives masked steps;
    - ``acting[r]``: ``r``'s agent takes the step in flight (none before
      the first reset), so the outcome the next ``recv`` brings is its own.
    """

    def __init__(self, rows: int, horizon: int):
        self.horizon = horizon
        self.stored = np.zeros(rows, np.int64)
        self.pending = np.full(rows, -1, np.int64)
        self.complete = np.zeros(rows, bool)
        self.open = np.zeros(rows, bool)
        self.folding = np.zeros(rows, bool)
        self.new_episode = np.ones(rows, bool)
        self.acting = np.zeros(rows, bool)

    def start(self) -> None:
        """A new rollout: nothing stored. The steps in flight from the last
        rollout were not stored in this one, so no outcome is awaited."""
        self.stored[:] = 0
        self.complete[:] = False
        self.pending[:] = -1
        self.folding[:] = False

    def outcomes(self, row_ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
        """Where the outcomes that a ``recv`` of ``row_ids`` brings go:
        ``(positions, rows, steps, fold)``, the batch positions that have a
        stored step awaiting its outcome (None when all of them do), those
        rows, their steps, and whether each folds (see ``folding``). Nothing
        is awaited from these rows afterwards."""
        pending = self.pending[row_ids]
        positions = None
        rows, steps = row_ids, pending
        awaited = pending >= 0
        if not awaited.all():
            positions = np.flatnonzero(awaited)
            rows, steps = row_ids[positions], pending[positions]
        self.pending[row_ids] = -1
        return positions, rows, steps, self.folding[rows]

    def observe(self, row_ids: np.ndarray, ended: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Records that the rows' episodes ``ended`` in the step just
        received and which rows act next (``masks``); returns where the
        acting rows start an episode. An agent whose episode ended acts next
        in a new one, maybe after masked steps (same-step autoreset makes
        that this very step)."""
        self.open[row_ids[ended]] = False
        self.acting[row_ids] = masks
        episode = ended | self.new_episode[row_ids]
        self.new_episode[row_ids] = episode & ~masks
        return episode & masks

    def plan(self, row_ids: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a batch about to be acted on: ``(steps, store, finishing)``,
        each row's next step, whether it is stored (the row has room), and
        whether the row completes now: it stored its steps and its next
        acting observation is here (or its episode ended: no bootstrap).
        Rows past their horizon that must wait for their agent's turn start
        folding."""
        steps = self.stored[row_ids]
        store = steps < self.horizon
        past = ~store & ~self.complete[row_ids]
        finishing = past & (masks | ~self.open[row_ids])
        waiting = row_ids[past & ~finishing]
        self.pending[waiting], self.folding[waiting] = self.horizon - 1, True
        return steps, store, finishing

    def stored_steps(self, rows: np.ndarray, steps: np.ndarray, acting: np.ndarray) -> None:
        """Steps ``(rows[k], steps[k])`` were stored; ``acting[k]`` where the
        row's agent took it."""
        self.pending[rows] = steps
        self.stored[rows] = steps + 1
        self.open[rows[acting]] = True

    def finish(self, rows: np.ndarray) -> bool:
        """``rows`` are complete; returns whether the rollout is."""
        self.complete[rows] = True
        return bool(self.complete.all())
