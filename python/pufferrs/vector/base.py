"""What both backends share: spaces, the arrays over the shared buffers,
and the send/recv bookkeeping of synchronous and asynchronous batches."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from pufferrs._native import RolloutBuffers
from pufferrs.errors import PufferError, RowError, SpaceError, WorkerError
from pufferrs.spaces import Layout
from pufferrs.vector.arguments import checked_seed, wrong_batch
from pufferrs.vector.infos import Infos
from pufferrs.vector.kinds import agent_spaces, rows_per_env

#: The vector envs open in this process, for the fork handler below.
_OPEN: weakref.WeakSet[VectorEnv] = weakref.WeakSet()


def _disown_after_fork() -> None:
    """Runs in the child of every ``os.fork``: the child shares the parent's
    buffers, workers and control words, so any use of an inherited vector
    env (a step, a recv, a close, the exit-time finalizer) would act on the
    parent's envs behind its back. The child's copies are disowned instead:
    their finalizers never run there and every call raises."""
    for env in list(_OPEN):
        env._disown()


os.register_at_fork(after_in_child=_disown_after_fork)


class VectorEnv:
    """The API both backends share; see the module docstring."""

    #: Arrays of the buffers, as numpy views.
    _ARRAYS = (
        "observations",
        "actions",
        "rewards",
        "terminals",
        "truncations",
        "masks",
        "episode_returns",
        "episode_lengths",
        "final_observations",
    )

    def _setup(
        self,
        probe: Any,
        num_envs: int,
        num_workers: int | None,
        batch_size: int | None,
        seed: int,
        check_bounds: bool,
    ) -> None:
        """Builds the buffers (whose plan checks every count: see
        ``RolloutBuffers``) and the views over them. ``num_workers=None``
        runs the envs in this process, one batch at a time. A PettingZoo
        env takes one row per agent, a vector env one per sub-env: the
        spaces are those of one row."""
        self.check_bounds = bool(check_bounds)
        #: The agent of each row of an env (slot order); None for gymnasium envs.
        self.possible_agents, observation_space, action_space = agent_spaces(probe)
        agents = rows_per_env(probe)
        self.layout = Layout(observation_space, name="obs")
        self.action_layout = Layout(action_space, name="action")
        self.buffers = RolloutBuffers(
            num_envs, num_workers, self.layout.row_bytes, self.action_layout.row_bytes, batch_size, agents
        )
        self.num_envs = self.buffers.num_envs
        self.num_workers = self.buffers.num_workers
        self.envs_per_worker = self.num_envs // self.num_workers
        self.batch_size = self.buffers.batch_size
        #: Rows per env, and rows in all: env ``e`` owns rows ``e * agents_per_env ..``.
        self.agents_per_env = self.buffers.agents_per_env
        self.num_agents = self.num_envs * self.agents_per_env
        self.seed = checked_seed(seed)
        self.single_observation_space = self.layout.observation_space
        self.single_action_space = action_space
        rows, batch_rows = self.num_agents, self.batch_size * self.agents_per_env
        self.observation_space = batch_space(self.single_observation_space, batch_rows)
        self.action_space = batch_space(self.single_action_space, batch_rows)
        self.metadata = getattr(probe, "metadata", {})
        self.render_mode = getattr(probe, "render_mode", None)
        self._rows_per_worker = self.envs_per_worker * self.agents_per_env
        self._batch_rows = batch_rows

        self._arrays = {name: self.buffers.array(name) for name in self._ARRAYS}
        obs_shape = self.single_observation_space.shape
        self._observations = self._arrays["observations"].view(self.layout.flat_dtype).reshape(rows, *obs_shape)
        self._final_observations = (
            self._arrays["final_observations"].view(self.layout.flat_dtype).reshape(rows, *obs_shape)
        )
        self._batch_workers = self.batch_size // self.envs_per_worker
        self._full = (
            self._observations,
            self._arrays["rewards"],
            self._arrays["terminals"],
            self._arrays["truncations"],
            np.arange(rows),
            self._arrays["masks"],
        )
        if self.buffers.gathers:
            batch = {
                name: self.buffers.array(f"batch_{name}")
                for name in ("observations", "actions", "rewards", "terminals", "truncations", "masks")
            }
            self._gathered = (
                batch["observations"].view(self.layout.flat_dtype).reshape(batch_rows, *obs_shape),
                batch["rewards"],
                batch["terminals"],
                batch["truncations"],
                batch["masks"],
            )
            self._batch_actions = batch["actions"]
        self._blocks: dict[int, tuple] = {}
        self._action_blocks: dict[int, np.ndarray] = {}
        self._pending: set[int] = set()  # workers asked to reset or step, not yet received
        self._held: list[int] = []  # workers received, waiting for actions, in env order
        self._held_lo: int | None = None  # their first row when they are consecutive
        # What _step_all returned, for recv.
        self._stepped: tuple[list[dict] | dict[int, dict], Sequence[int]] | None = None
        self._first_reset = True
        self._pinned: list[int] = []  # addresses registered with CUDA
        self._closed = False
        self._broken: WorkerError | None = None
        self._owner = os.getpid()
        self._foreign = False  # True in a forked child: see _disown_after_fork

    # -- the public API --

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Resets every env (env ``i`` with ``seed + i``) and returns the
        observations and infos of the first batch."""
        self.async_reset(seed)
        obs, _, _, _, infos, _, _ = self.recv()
        return obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Sends ``actions`` to the envs of the last batch and returns the
        next batch: ``(obs, rewards, terminals, truncations, infos)``."""
        self.send(actions)
        obs, rewards, terminals, truncations, infos, _, _ = self.recv()
        return obs, rewards, terminals, truncations, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Starts a reset of every env; ``recv`` returns the results."""
        self._check_open()
        if seed is None and self._first_reset:
            seed = self.seed
        seed = checked_seed(seed)
        self._first_reset = False
        self._held, self._stepped = [], None
        self._reset(seed)
        self._pending = set(range(self.num_workers))

    def send(self, actions: Any) -> None:
        """Writes ``actions`` (one per row of the last ``recv``, in its
        ``row_ids`` order) into the shared action rows and starts those envs
        stepping. Bad actions raise :class:`SpaceError` and send nothing."""
        if self._closed or self._broken is not None:
            self._check_open()
        held = self._held
        if not held:
            raise PufferError("send() needs a batch to act on: call reset(), async_reset() or recv() first")
        stepped = self._step_all(actions)
        if stepped is not None:
            self._stepped = stepped
            self._pending.update(held)
            self._held = []
            return
        lo = self._held_lo
        try:
            if lo is not None:
                rows = self._action_blocks.get(lo)
                if rows is None:
                    rows = self._action_blocks[lo] = self._arrays["actions"][lo : lo + self._batch_rows]
            else:
                rows = self._batch_actions
            self.action_layout.flatten_batch(actions, out=rows, check_bounds=self.check_bounds)
        except (RowError, SpaceError):
            # Diagnosed only on failure, to keep the hot path free of it:
            # a batch of the wrong size is the error to report first.
            message = wrong_batch(
                actions, self.single_action_space, self._batch_rows, "env" if self.possible_agents is None else "row"
            )
            if message is None:
                raise
            raise SpaceError(message) from None
        self._dispatch(held, lo)

    def send_rows(self, rows: np.ndarray) -> None:
        """Like ``send``, with actions that are rows already: ``(B,
        action_layout.row_bytes)`` uint8, one per row of the last ``recv``,
        as ``action_layout.flatten_batch`` writes them. They are copied as
        they are, unchecked (their writer checked them): this is how the
        Ray backend hands its actors the rows it flattened, since a row
        unflattened and flattened again is not always the same value (a
        ``Text`` action unflattens to codes, not a str)."""
        self._check_open()
        held = self._held
        if not held:
            raise PufferError("send_rows() needs a batch to act on: call reset(), async_reset() or recv() first")
        lo = self._held_lo
        out = self._batch_actions if lo is None else self._arrays["actions"][lo : lo + self._batch_rows]
        rows = np.asarray(rows)
        if rows.dtype != np.uint8 or rows.shape != out.shape:
            raise RowError(
                f"action rows: expected a {out.shape} array of uint8, got a {rows.shape} array of {rows.dtype}"
            )
        out[...] = rows
        self._dispatch(held, lo)

    def _dispatch(self, held: list[int], lo: int | None) -> None:
        """Starts the workers ``held`` stepping on the actions written for
        them (at their rows when they are consecutive from row ``lo``, else
        in the gather area, scattered to their rows here)."""
        if lo is None:
            self.buffers.scatter_actions(held)
        self._step(held)
        self._pending.update(held)
        self._held = []

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray, np.ndarray]:
        """Waits for the next batch of ``batch_size`` envs and returns
        ``(obs, rewards, terminals, truncations, infos, row_ids, masks)``,
        one entry per row: per env, or per agent slot of a PettingZoo env.

        With ``batch_size < num_envs`` these are the first workers to finish;
        ``row_ids`` says which rows they hold (the env ids of gymnasium envs),
        and ``send`` acts on them. ``infos`` is an :class:`Infos`: a
        sequence that makes each row's dict when it is read."""
        if self._closed or self._broken is not None:
            self._check_open()
        stepped = self._stepped
        if stepped is not None:
            # The batch `_step_all` stepped (send left no batch held): every
            # row, its positions the rows themselves. Inline: a call here is
            # a measurable share of Serial's step on small envs.
            given, ended = stepped
            self._stepped = None
            self._pending.clear()
            self._held, self._held_lo = [0], 0
            obs, rewards, terminals, truncations, row_ids, masks = self._full
            if ended:
                arrays = self._arrays
                infos = Infos(
                    self._batch_rows,
                    given,
                    ended,
                    arrays["episode_returns"].copy(),
                    arrays["episode_lengths"].copy(),
                    self._final_observations,
                )
            else:
                infos = Infos(self._batch_rows, given)
            return obs, rewards, terminals, truncations, infos, row_ids, masks
        if self._held:
            raise PufferError("recv() called twice without send(): act on the batch you hold first")
        if len(self._pending) < self._batch_workers:
            raise PufferError("recv() needs envs in flight: call reset(), async_reset() or send() first")
        workers, payloads, ended = self._receive(self._batch_workers)
        self._pending.difference_update(workers)
        workers.sort()
        self._held = workers
        # Sorted and distinct: consecutive exactly when the span fits.
        per = self._rows_per_worker
        lo = workers[0] * per if workers[-1] - workers[0] == len(workers) - 1 else None
        self._held_lo = lo
        if lo is None:
            self.buffers.gather(workers)
            obs, rewards, terminals, truncations, masks = self._gathered
            row_ids = np.concatenate([np.arange(w * per, (w + 1) * per) for w in workers])
            span: Any = row_ids
        else:
            block = self._blocks.get(lo) or self._block(lo)
            obs, rewards, terminals, truncations, row_ids, masks = block
            span = slice(lo, lo + self._batch_rows)
        given: dict[int, dict] = {}
        if payloads:
            for position, worker in enumerate(workers):
                for i, info in payloads.get(worker, ()):
                    given[position * per + i] = info
        if ended:
            # The rows' returns and lengths as they are now (the next step
            # rewrites them), for the infos of the rows that ended, which
            # are made when read (see `Infos`).
            arrays = self._arrays
            infos = Infos(
                self._batch_rows,
                given,
                (terminals | truncations).nonzero()[0].tolist(),
                arrays["episode_returns"][span].copy(),
                arrays["episode_lengths"][span].copy(),
                self._final_observations,
                row_ids,
            )
        else:
            infos = Infos(self._batch_rows, given)
        # `row_ids` is what PufferLib calls `env_ids`: a row per env, or per
        # agent of a PettingZoo env.
        return obs, rewards, terminals, truncations, infos, row_ids, masks

    def pin_memory(self) -> None:
        """Page-locks the observation rows (and the gather area) for CUDA
        with ``cudaHostRegister``, in place: ``torch.from_numpy(obs)`` is
        then pinned, and ``.to("cuda", non_blocking=True)`` copies at
        pinned-memory speed without a staging copy. ``close()`` (or garbage
        collection) unregisters it. Needs torch with CUDA."""
        self._check_open()
        import torch

        if not torch.cuda.is_available():
            raise PufferError("pin_memory() needs a CUDA device (torch.cuda.is_available() is False)")
        cudart = torch.cuda.cudart()
        arrays = [self._observations] + ([self._gathered[0]] if hasattr(self, "_gathered") else [])
        for array in arrays:
            address = array.ctypes.data
            if address in self._pinned or not array.nbytes:
                continue
            code = int(cudart.cudaHostRegister(address, array.nbytes, 0))
            if code != 0:
                raise PufferError(f"cudaHostRegister failed with CUDA error {code}")
            self._pinned.append(address)

    def call_envs(self, function: Callable[[gym.Env, Any], Any], args: Sequence[Any] | None = None) -> list[Any]:
        """``function(env, args[i])`` for every env ``i``, run where the env
        lives (in its worker for Multiprocessing); the results in env order.

        This is how adapters reach the envs themselves (``get_attr``,
        ``render``, a reset with options): nothing on the rows changes, so
        the batch last received can still be sent. ``function``, the args
        and the results must pickle for Multiprocessing. Call it between a
        ``recv`` and the next ``send`` (or before the first reset), when no
        env is stepping. An env that raises ends it with
        :class:`WorkerError`."""
        self._check_open()
        if self._pending:
            raise PufferError("call_envs() while envs are stepping: recv() their batch first")
        args = [None] * self.num_envs if args is None else list(args)
        if len(args) != self.num_envs:
            raise ValueError(f"call_envs() needs one argument per env ({self.num_envs}), got {len(args)}")
        return self._call(function, args)

    def close(self) -> None:
        """Closes every env and stops the workers; safe to call twice."""
        if not self._closed:
            self._closed = True
            _OPEN.discard(self)
            self._shutdown()

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_envs={self.num_envs}, num_workers={self.num_workers}, "
            f"batch_size={self.batch_size}, closed={self._closed})"
        )

    # -- helpers --

    def _check_open(self) -> None:
        if self._foreign:
            raise PufferError(
                f"this {type(self).__name__} vector env belongs to process {self._owner}, which made it; "
                f"process {os.getpid()} (a forked child) cannot use it: make a vector env of its own"
            )
        if self._closed:
            raise PufferError(f"this {type(self).__name__} vector env is closed")
        if self._broken is not None:
            raise WorkerError(f"this vector env is broken by an earlier error; close() it.\n{self._broken}")

    def _block(self, lo: int) -> tuple:
        """Views of the consecutive rows from ``lo``, one batch long (cached)."""
        block = self._blocks.get(lo)
        if block is None:
            if self.batch_size == self.num_envs:
                block = self._full
            else:
                hi = lo + self._batch_rows
                block = tuple(a[lo:hi] for a in self._full)
            self._blocks[lo] = block
        return block

    def _envs_of(self, worker: int) -> str:
        lo = worker * self.envs_per_worker
        return f"env {lo}" if self.envs_per_worker == 1 else f"envs {lo}-{lo + self.envs_per_worker - 1}"

    def _finalize_with(self, func: Any, *args: Any) -> None:
        """Registers what ``close()`` (or garbage collection, or the end of
        the process) runs, as a function of ``args`` only, so that it holds
        no reference to this env; from then on a forked child disowns it."""
        self._finalizer = weakref.finalize(self, func, *args)
        _OPEN.add(self)

    def _disown(self) -> None:
        """In a forked child: never act on the parent's envs (see
        ``_disown_after_fork``); ``closed`` sends every call to
        ``_check_open``, and ``close()`` does nothing."""
        self._foreign = self._closed = True
        self._finalizer.detach()

    def _fail(self, error: WorkerError) -> WorkerError:
        self._broken = error
        return error

    # Backends implement these.
    def _reset(self, seed: int | None) -> None:
        raise NotImplementedError

    def _step(self, workers: list[int]) -> None:
        raise NotImplementedError

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        """``count`` workers that finished, their non-empty infos as
        ``(position among the worker's rows, info)`` pairs, and whether an
        episode of theirs ended."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def _step_all(self, actions: Any) -> tuple[list[dict] | dict[int, dict], Sequence[int]] | None:
        """A backend whose one batch is every env (one worker), stepped in
        one call, writes ``actions`` into the action rows (all or nothing),
        steps every env and returns the infos (a list of one per row, or
        the non-empty ones by row) and the rows whose episode ended;
        ``recv`` then hands out every row. None (the
        default) takes the general path, as does a backend that refused the
        actions having changed nothing: ``send`` then diagnoses them."""
        return None

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        raise NotImplementedError


def unpin(pinned: list[int]) -> None:
    """Unregisters what ``pin_memory`` registered, while it is still mapped
    (the caller holds the buffers)."""
    if pinned:
        import torch

        cudart = torch.cuda.cudart()
        while pinned:
            cudart.cudaHostUnregister(pinned.pop())
