"""Vectorized environments over zero-copy shared-memory buffers.

:func:`make` builds a vector env in the shape of PufferLib's ``vector.make``:

>>> import gymnasium as gym
>>> import pufferrs.vector
>>> with pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=4) as envs:
...     obs, infos = envs.reset(seed=0)
...     obs, rewards, terminals, truncations, infos = envs.step(envs.action_space.sample())

Two backends share one API and produce bit-identical results for the same
seed and actions:

- :class:`Serial` steps every env in this process (for debugging, and for
  envs so cheap that processes cost more than they give).
- :class:`Multiprocessing` runs envs in worker processes. Workers write
  observations, rewards and flags straight into one shared-memory region
  that Rust creates (a memfd: it never appears in ``/dev/shm``, and the
  kernel frees it when the last process holding it exits, even after a
  SIGKILL), and the arrays :meth:`recv` returns are numpy views of that
  memory: no copy between a worker's ``env.step`` and your policy.
  Parent and workers signal each other through atomics in the region (a
  short spin, then a futex sleep with the GIL released); pipes carry only
  seeds, non-empty infos and errors.

Arrays returned by ``reset``/``step``/``recv`` are views that the next call
overwrites: copy what you keep. Observations are flat rows
(``single_observation_space``, the emulated Box of :class:`pufferrs.Layout`);
``vecenv.layout.unflatten(obs)`` (or :func:`pufferrs.pytorch.unflatten`)
views them as the env's nested structure again.

Choices where gymnasium and PufferLib differ:

- Autoreset happens in the worker at the step that ends an episode: that
  step returns the first observation of the next episode with the reward,
  terminal and truncation of the last step (PufferLib's and gymnasium's
  ``SAME_STEP`` mode). The reset's own info is dropped.
- ``infos`` is a list with one dict per env of the batch, in ``env_ids``
  order. Most are empty; the dict of a step that ended an episode holds the
  env's info of that step plus ``episode_return`` (float) and
  ``episode_length`` (int).
- Env ``i`` is reset with ``seed + i`` by ``reset(seed)``; the first reset
  without a seed uses ``make``'s ``seed``, later ones leave the envs' RNGs
  running.
- ``masks`` are all True (one agent per env).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing import reduction
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
from gymnasium.vector.utils import batch_space

from pufferrs import _native
from pufferrs.errors import PufferError, SpaceError, WorkerError, WorkerTimeoutError
from pufferrs.spaces import Layout

__all__ = ["Multiprocessing", "Serial", "make"]

RolloutBuffers = _native.RolloutBuffers

#: Seconds between liveness checks while the parent waits for workers, and
#: between checks for a dead parent while a worker waits for commands.
POLL_INTERVAL = 0.1
#: Seconds ``close()`` gives workers to exit before terminating them.
CLOSE_GRACE = 1.0


def make(
    env_creator: Callable[..., gym.Env] | Sequence[Callable[..., gym.Env]],
    num_envs: int = 1,
    backend: str | type = "serial",
    num_workers: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    env_args: Sequence[Any] = (),
    env_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Serial | Multiprocessing:
    """A vector env of ``num_envs`` envs made by ``env_creator(*env_args,
    **env_kwargs)`` (or by one creator each, given a list).

    ``backend`` is ``"serial"`` or ``"multiprocessing"`` (or one of the
    classes). ``num_workers`` (multiprocessing) defaults to the largest
    divisor of ``num_envs`` that is at most the number of CPUs;
    ``batch_size`` (envs returned by each ``recv``) defaults to
    ``num_envs``, and must be a multiple of the envs per worker: smaller
    batches make ``recv`` return the first workers that are ready
    (EnvPool-style). Other keyword arguments go to the backend
    (``timeout``, ``start_method``).
    """
    backends = {"serial": Serial, "multiprocessing": Multiprocessing}
    if isinstance(backend, str):
        if backend.lower() not in backends:
            raise ValueError(f"backend must be one of {sorted(backends)}, got {backend!r}")
        backend = backends[backend.lower()]
    elif backend not in (Serial, Multiprocessing):
        raise ValueError(f"backend must be 'serial', 'multiprocessing', Serial or Multiprocessing, got {backend!r}")
    if callable(env_creator):
        creators = [env_creator] * num_envs
    else:
        creators = list(env_creator)
        if len(creators) != num_envs:
            raise ValueError(f"got {len(creators)} env creators for num_envs={num_envs}")
        if not all(callable(c) for c in creators):
            raise TypeError("env_creator must be a callable or a list of callables")
    return backend(
        creators,
        env_args=tuple(env_args),
        env_kwargs=dict(env_kwargs or {}),
        num_envs=num_envs,
        num_workers=num_workers,
        batch_size=batch_size,
        seed=seed,
        **kwargs,
    )


# ---------------------------------------------------------------------------
# Stepping a block of envs: the same code in Serial and in every worker, so
# both backends write the same bytes.


def _action_reader(action_layout: Layout, rows: np.ndarray) -> Callable[[], list[Any]]:
    """A function reading the actions of ``rows`` as one value per env, the
    way the env expects them: ints for Discrete, private arrays otherwise."""
    n = rows.shape[0]

    def reader(space: gs.Space, view: Any) -> Callable[[], list[Any]]:
        if isinstance(space, gs.Discrete):
            return view.tolist
        if isinstance(space, gs.Dict):
            parts = [(key, reader(sub, view[key])) for key, sub in space.spaces.items()]

            def read_dict() -> list[Any]:
                values = [(key, read()) for key, read in parts]
                return [{key: column[i] for key, column in values} for i in range(n)]

            return read_dict
        if isinstance(space, gs.Tuple):
            tuple_parts = [reader(sub, v) for sub, v in zip(space.spaces, view)]

            def read_tuple() -> list[Any]:
                return list(zip(*(read() for read in tuple_parts))) if tuple_parts else [()] * n

            return read_tuple
        return lambda: list(view.copy())

    return reader(action_layout.space, action_layout.unflatten(rows))


class _Runner:
    """Steps envs ``first_env, first_env + 1, ...`` and writes what they
    return into the rows of ``arrays`` (the shared buffers)."""

    def __init__(
        self, envs: list[gym.Env], first_env: int, arrays: dict[str, np.ndarray], layout: Layout, action_layout: Layout
    ) -> None:
        lo, hi = first_env, first_env + len(envs)
        self.envs = envs
        self.first_env = first_env
        self.observations = arrays["observations"]
        self.flatten_into = layout.flatten_into
        self.rewards = arrays["rewards"][lo:hi]
        self.terminals = arrays["terminals"][lo:hi]
        self.truncations = arrays["truncations"][lo:hi]
        self.masks = arrays["masks"][lo:hi]
        self.episode_returns = arrays["episode_returns"][lo:hi]
        self.episode_lengths = arrays["episode_lengths"][lo:hi]
        self.read_actions = _action_reader(action_layout, arrays["actions"][lo:hi])
        self.returns = [0.0] * len(envs)
        self.lengths = [0] * len(envs)
        #: The env being reset or stepped, for error reports.
        self.current_env: int | None = None
        #: Whether an episode ended in the last step.
        self.ended = False

    def reset(self, seed: int | None) -> list[tuple[int, dict]]:
        infos = []
        for i, env in enumerate(self.envs):
            self.current_env = self.first_env + i
            obs, info = env.reset(seed=None if seed is None else seed + self.first_env + i)
            self.flatten_into(obs, self.observations, self.first_env + i)
            if info:
                infos.append((i, info))
        self.current_env = None
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        self.returns = [0.0] * len(self.envs)
        self.lengths = [0] * len(self.envs)
        self.ended = False
        return infos

    def step(self) -> list[tuple[int, dict]]:
        actions = self.read_actions()
        rewards, terminals, truncations, infos = [], [], [], []
        returns, lengths, first = self.returns, self.lengths, self.first_env
        ended = False
        for i, env in enumerate(self.envs):
            self.current_env = first + i
            obs, reward, terminal, truncation, info = env.step(actions[i])
            returns[i] += reward
            lengths[i] += 1
            if terminal or truncation:
                ended = True
                self.episode_returns[i] = returns[i]
                self.episode_lengths[i] = lengths[i]
                returns[i], lengths[i] = 0.0, 0
                obs, _ = env.reset()
            self.flatten_into(obs, self.observations, first + i)
            rewards.append(reward)
            terminals.append(terminal)
            truncations.append(truncation)
            if info:
                infos.append((i, info))
        self.current_env = None
        self.ended = ended
        self.rewards[:] = rewards
        self.terminals[:] = terminals
        self.truncations[:] = truncations
        return infos

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                pass


# ---------------------------------------------------------------------------
# What both backends share: spaces, arrays, the send/recv bookkeeping.


class _VectorEnv:
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
    )

    def _setup(
        self, probe: gym.Env, num_envs: int, num_workers: int, batch_size: int | None, seed: int, gathers: bool
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(num_workers, int) or num_workers < 1 or num_envs % num_workers:
            raise ValueError(f"num_workers ({num_workers!r}) must be a positive divisor of num_envs ({num_envs})")
        batch_size = num_envs if batch_size is None else batch_size
        per_worker = num_envs // num_workers
        if not isinstance(batch_size, int) or not 0 < batch_size <= num_envs or batch_size % per_worker:
            raise ValueError(
                f"batch_size ({batch_size!r}) must be a multiple of the envs per worker ({per_worker}) "
                f"between {per_worker} and num_envs ({num_envs})"
            )
        self.num_envs = num_envs
        self.num_workers = num_workers
        self.envs_per_worker = per_worker
        self.batch_size = batch_size
        self.seed = int(seed)
        self.layout = Layout(probe.observation_space, name="obs")
        self.action_layout = Layout(probe.action_space, name="action")
        self.single_observation_space = self.layout.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = batch_space(self.single_observation_space, batch_size)
        self.action_space = batch_space(self.single_action_space, batch_size)
        self.metadata = getattr(probe, "metadata", {})
        self.render_mode = getattr(probe, "render_mode", None)

        self.buffers = RolloutBuffers(
            num_envs, num_workers, self.layout.row_bytes, self.action_layout.row_bytes, batch_size if gathers else None
        )
        self._arrays = {name: self.buffers.array(name) for name in self._ARRAYS}
        obs_shape = self.single_observation_space.shape
        self._observations = self._arrays["observations"].view(self.layout.flat_dtype).reshape(num_envs, *obs_shape)
        self._batch_workers = batch_size // per_worker
        self._full = (
            self._observations,
            self._arrays["rewards"],
            self._arrays["terminals"],
            self._arrays["truncations"],
            np.arange(num_envs),
            self._arrays["masks"],
        )
        if gathers and batch_size < num_envs:
            batch = {
                name: self.buffers.array(f"batch_{name}")
                for name in ("observations", "actions", "rewards", "terminals", "truncations", "masks")
            }
            self._gathered = (
                batch["observations"].view(self.layout.flat_dtype).reshape(batch_size, *obs_shape),
                batch["rewards"],
                batch["terminals"],
                batch["truncations"],
                batch["masks"],
            )
            self._batch_actions = batch["actions"]
        self._blocks: dict[int, tuple] = {}
        self._action_blocks: dict[int, np.ndarray] = {}
        self._flat_actions = not isinstance(self.single_action_space, (gs.Dict, gs.Tuple))
        self._pending: set[int] = set()  # workers asked to reset or step, not yet received
        self._held: list[int] = []  # workers received, waiting for actions, in env order
        self._held_lo: int | None = None  # their first env when they are consecutive
        self._first_reset = True
        self._pinned: list[int] = []  # addresses registered with CUDA
        self._closed = False
        self._broken: WorkerError | None = None

    # -- the public API --

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, list[dict]]:
        """Resets every env (env ``i`` with ``seed + i``) and returns the
        observations and infos of the first batch."""
        self.async_reset(seed)
        obs, _, _, _, infos, _, _ = self.recv()
        return obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
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
        self._first_reset = False
        self._reset(None if seed is None else int(seed))

    def send(self, actions: Any) -> None:
        """Writes ``actions`` (a batch for the envs of the last ``recv``, in
        its ``env_ids`` order) into the shared action rows and starts those
        envs stepping. Bad actions raise :class:`SpaceError` and send nothing."""
        if self._closed or self._broken is not None:
            self._check_open()
        held = self._held
        if not held:
            raise PufferError("send() needs a batch to act on: call reset(), async_reset() or recv() first")
        if type(actions) is not np.ndarray:
            actions = self._as_batch(actions)
        elif self._flat_actions and (actions.ndim == 0 or actions.shape[0] != self.batch_size):
            self._refuse_batch(actions.shape[0] if actions.ndim else None)
        lo = self._held_lo
        if lo is not None:
            rows = self._action_blocks.get(lo)
            if rows is None:
                rows = self._action_blocks[lo] = self._arrays["actions"][lo : lo + self.batch_size]
            self.action_layout.flatten_batch(actions, out=rows)
        else:
            self.action_layout.flatten_batch(actions, out=self._batch_actions)
            self.buffers.scatter_actions(held)
        self._step(held)
        self._pending.update(held)
        self._held = []

    def _as_batch(self, actions: Any) -> Any:
        if not isinstance(actions, (dict, tuple, list)) and hasattr(actions, "__array__"):
            actions = np.asarray(actions)  # e.g. a CPU torch tensor
            if self._flat_actions and (actions.ndim == 0 or actions.shape[0] != self.batch_size):
                self._refuse_batch(actions.shape[0] if actions.ndim else None)
        elif self._flat_actions and isinstance(actions, list) and len(actions) != self.batch_size:
            self._refuse_batch(len(actions))
        return actions

    def _refuse_batch(self, size: int | None) -> None:
        got = f"{size} actions" if size is not None else "a 0-d array"
        raise SpaceError(f"action: expected a batch of {self.batch_size} actions, one per env of the batch, got {got}")

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict], np.ndarray, np.ndarray]:
        """Waits for the next batch of ``batch_size`` envs and returns
        ``(obs, rewards, terminals, truncations, infos, env_ids, masks)``.

        With ``batch_size < num_envs`` these are the first workers to finish;
        ``env_ids`` says which envs they hold, and ``send`` acts on them."""
        if self._closed or self._broken is not None:
            self._check_open()
        if self._held:
            raise PufferError("recv() called twice without send(): act on the batch you hold first")
        if len(self._pending) < self._batch_workers:
            raise PufferError("recv() needs envs in flight: call reset(), async_reset() or send() first")
        workers, payloads, ended = self._receive(self._batch_workers)
        workers.sort()
        self._held = workers
        # Sorted and distinct: consecutive exactly when the span fits.
        lo = workers[0] * self.envs_per_worker if workers[-1] - workers[0] == len(workers) - 1 else None
        self._held_lo = lo
        if lo is None:
            self.buffers.gather(workers)
            obs, rewards, terminals, truncations, masks = self._gathered
            env_ids = np.concatenate(
                [np.arange(w * self.envs_per_worker, (w + 1) * self.envs_per_worker) for w in workers]
            )
        else:
            obs, rewards, terminals, truncations, env_ids, masks = self._block(lo)
        infos: list[dict] = [{} for _ in range(self.batch_size)]
        if payloads:
            for position, worker in enumerate(workers):
                for i, info in payloads.get(worker, ()):
                    infos[position * self.envs_per_worker + i] = info
        if ended:
            returns, lengths = self._arrays["episode_returns"], self._arrays["episode_lengths"]
            for k in np.flatnonzero(terminals | truncations).tolist():
                env = int(env_ids[k])
                infos[k] = {**infos[k], "episode_return": float(returns[env]), "episode_length": int(lengths[env])}
        return obs, rewards, terminals, truncations, infos, env_ids, masks

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

    def close(self) -> None:
        """Closes every env and stops the workers; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._shutdown()

    def __enter__(self) -> _VectorEnv:
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
        if self._closed:
            raise PufferError(f"this {type(self).__name__} vector env is closed")
        if self._broken is not None:
            raise WorkerError(f"this vector env is broken by an earlier error; close() it.\n{self._broken}")

    def _block(self, lo: int) -> tuple:
        """Views of the consecutive envs from ``lo``, one batch long (cached)."""
        block = self._blocks.get(lo)
        if block is None:
            if self.batch_size == self.num_envs:
                block = self._full
            else:
                hi = lo + self.batch_size
                block = tuple(a[lo:hi] for a in self._full)
            self._blocks[lo] = block
        return block

    def _envs_of(self, worker: int) -> str:
        lo = worker * self.envs_per_worker
        return f"env {lo}" if self.envs_per_worker == 1 else f"envs {lo}-{lo + self.envs_per_worker - 1}"

    def _fail(self, error: WorkerError) -> WorkerError:
        self._broken = error
        return error

    # Backends implement these.
    def _reset(self, seed: int | None) -> None:
        raise NotImplementedError

    def _step(self, workers: list[int]) -> None:
        raise NotImplementedError

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        """``count`` workers that finished, their infos, and whether an
        episode of theirs ended."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError


def _unpin(pinned: list[int]) -> None:
    """Unregisters what ``pin_memory`` registered, while it is still mapped
    (the caller holds the buffers)."""
    if pinned:
        import torch

        cudart = torch.cuda.cudart()
        while pinned:
            cudart.cudaHostUnregister(pinned.pop())


def _close_runners(runners: list[_Runner], pinned: list[int], buffers: Any) -> None:
    _unpin(pinned)
    for runner in runners:
        runner.close()


def _checked_env(env: Any) -> gym.Env:
    if not isinstance(env, gym.Env):
        raise TypeError(f"env_creator must return a gymnasium.Env, got {type(env).__name__}")
    return env


class Serial(_VectorEnv):
    """Every env in this process, stepped one after the other into the same
    buffers the multiprocessing backend shares.

    ``batch_size < num_envs`` steps blocks of ``batch_size`` envs in turn,
    so code written for asynchronous batches runs unchanged. An env that
    raises surfaces as :class:`WorkerError` chained to the original."""

    def __init__(
        self,
        env_creators: list[Callable[..., gym.Env]],
        env_args: tuple = (),
        env_kwargs: dict | None = None,
        num_envs: int | None = None,
        num_workers: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        **ignored: Any,
    ) -> None:
        num_envs = len(env_creators) if num_envs is None else num_envs
        env_kwargs = env_kwargs or {}
        envs = [creator(*env_args, **env_kwargs) for creator in env_creators]
        self._envs = envs
        try:
            # Serial runs blocks of `batch_size` envs: one "worker" per block.
            size = num_envs if batch_size is None else batch_size
            blocks = num_envs // size if isinstance(size, int) and size > 0 and num_envs % size == 0 else 0
            if not blocks:
                raise ValueError(
                    f"batch_size ({batch_size!r}) must divide num_envs ({num_envs}) for the serial backend"
                )
            self._setup(_checked_env(envs[0]), num_envs, blocks, batch_size, seed, gathers=False)
            self._runners = [
                _Runner(envs[w * size : (w + 1) * size], w * size, self._arrays, self.layout, self.action_layout)
                for w in range(blocks)
            ]
        except BaseException:
            for env in envs:
                env.close()
            raise
        self._done: deque[int] = deque()
        self._finalizer = weakref.finalize(self, _close_runners, self._runners, self._pinned, self.buffers)

    def _run(self, worker: int, call: Callable[[], Any]) -> list[tuple[int, dict]]:
        try:
            return call()
        except Exception as exc:
            env = self._runners[worker].current_env
            error = WorkerError(f"env {env} raised {type(exc).__name__}: {exc}")
            error.worker, error.env = worker, env
            raise self._fail(error) from exc

    def _reset(self, seed: int | None) -> None:
        self._held, self._pending = [], set()
        self._done.clear()
        self._payloads: dict[int, list[tuple[int, dict]]] = {}
        for w, runner in enumerate(self._runners):
            infos = self._run(w, lambda: runner.reset(seed))
            if infos:
                self._payloads[w] = infos
            self._pending.add(w)
            self._done.append(w)

    def _step(self, workers: list[int]) -> None:
        for w in workers:
            infos = self._run(w, self._runners[w].step)
            if infos:
                self._payloads[w] = infos
            self._done.append(w)

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        workers = [self._done.popleft() for _ in range(count)]
        self._pending.difference_update(workers)
        payloads = {w: self._payloads.pop(w) for w in workers if w in self._payloads} if self._payloads else {}
        return workers, payloads, any(self._runners[w].ended for w in workers)

    def _shutdown(self) -> None:
        self._finalizer()


# ---------------------------------------------------------------------------
# Multiprocessing


class _RegionHandle:
    """What a worker needs to map the parent's buffers: the region's fd and
    the buffers' arguments. Pickling (spawn, forkserver) sends a duplicate
    of the fd to the child; fork children inherit the fd itself. Either
    way the worker's copy is its own, and ``attach`` closes it: the mapping
    alone keeps the memory, so it goes when the worker does."""

    def __init__(self, fd: int, args: tuple[int, ...]) -> None:
        self.fd, self.args = fd, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_handle, (reduction.DupFd(self.fd), self.args))

    def attach(self) -> Any:
        """Maps the buffers in a worker (only there: it closes the fd)."""
        try:
            return RolloutBuffers.attach(self.fd, *self.args)
        finally:
            os.close(self.fd)


def _rebuild_handle(dup: Any, args: tuple[int, ...]) -> _RegionHandle:
    return _RegionHandle(dup.detach(), args)


def _worker_main(
    worker: int,
    handle: _RegionHandle,
    creators: list[Callable[..., gym.Env]],
    env_args: tuple,
    env_kwargs: dict,
    layout: Layout,
    action_layout: Layout,
    first_env: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    """A worker: makes its envs, then serves requests until told to close,
    or until its parent is gone."""
    # Ctrl-C goes to the whole process group: the parent handles it and
    # closes the workers, which must not die half-way through a step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    buffers = handle.attach()
    runner: _Runner | None = None
    startup_error: str | None = None
    try:
        envs = [creator(*env_args, **env_kwargs) for creator in creators]
        arrays = {name: buffers.array(name) for name in _VectorEnv._ARRAYS}
        runner = _Runner(envs, first_env, arrays, layout, action_layout)
    except Exception:
        startup_error = f"making its envs raised:\n{traceback.format_exc()}"
    STEP, RESET, CLOSE = RolloutBuffers.STEP, RolloutBuffers.RESET, RolloutBuffers.CLOSE
    OK, INFOS, ENDED = RolloutBuffers.OK, RolloutBuffers.INFOS, RolloutBuffers.ENDED
    try:
        while True:
            command = buffers.wait_request(worker, POLL_INTERVAL)
            if command is None:
                if os.getppid() != parent:
                    return  # orphaned: the parent died (SIGKILL included)
                continue
            if command == CLOSE:
                return
            seed = conn.recv() if command == RESET else None
            try:
                if runner is None:
                    raise RuntimeError(startup_error)
                infos = runner.step() if command == STEP else runner.reset(seed)
            except Exception as exc:
                env = runner.current_env if runner is not None else None
                where = f"env {env} raised" if env is not None else "raised"
                message = startup_error if runner is None else f"{where}:\n{traceback.format_exc()}"
                buffers.complete(worker, RolloutBuffers.ERROR)
                try:
                    conn.send((env, message))
                except Exception:  # noqa: BLE001 - e.g. the exception itself does not pickle
                    conn.send((env, f"{where} {type(exc).__name__} (traceback could not be sent)"))
                continue
            ended = ENDED if runner.ended else OK
            if infos:
                buffers.complete(worker, INFOS | ended)
                conn.send(infos)
            else:
                buffers.complete(worker, ended)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent closed its end
    finally:
        if runner is not None:
            runner.close()
        conn.close()


def _default_workers(num_envs: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(d for d in range(1, min(num_envs, cpus) + 1) if num_envs % d == 0)


def _stop_workers(buffers: Any, processes: list, conns: list, pinned: list[int]) -> None:
    """Asks workers to exit, then terminates and kills those that do not.
    A module function, so that the finalizer holds no vector env."""
    started = [(w, p) for w, p in enumerate(processes) if p.pid is not None]
    try:
        buffers.request([w for w, _ in started], RolloutBuffers.CLOSE)
    except Exception:  # noqa: BLE001 - terminating below still works
        pass
    deadline = time.monotonic() + CLOSE_GRACE
    for stop in (None, "terminate", "kill"):
        alive = [p for _, p in started if p.exitcode is None]
        if stop is not None:
            for p in alive:
                getattr(p, stop)()
        while alive and time.monotonic() < deadline:
            multiprocessing.connection.wait([p.sentinel for p in alive], deadline - time.monotonic())
            alive = [p for p in alive if p.exitcode is None]
        if not alive:
            break
        deadline = time.monotonic() + CLOSE_GRACE
    for _, p in started:
        p.join(0)
        if p.exitcode is not None:
            p.close()
    for conn in conns:
        conn.close()
    _unpin(pinned)


class Multiprocessing(_VectorEnv):
    """Envs in ``num_workers`` worker processes, ``num_envs / num_workers``
    each, writing into shared memory.

    ``timeout`` bounds every wait of ``recv`` (seconds): past it, a
    :class:`WorkerTimeoutError` names the workers that did not answer. A
    worker that raises or dies ends ``recv`` with :class:`WorkerError`
    carrying its traceback or exit code, within ``POLL_INTERVAL`` of its
    death. ``start_method`` is a multiprocessing start method (default: the
    platform's)."""

    def __init__(
        self,
        env_creators: list[Callable[..., gym.Env]],
        env_args: tuple = (),
        env_kwargs: dict | None = None,
        num_envs: int | None = None,
        num_workers: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        timeout: float = 60.0,
        start_method: str | None = None,
    ) -> None:
        num_envs = len(env_creators) if num_envs is None else num_envs
        env_kwargs = env_kwargs or {}
        num_workers = _default_workers(num_envs) if num_workers is None else num_workers
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = float(timeout)
        self._processes: list = []
        self._conns: list = []
        # The spaces come from an env made here, as PufferLib does.
        probe = _checked_env(env_creators[0](*env_args, **env_kwargs))
        try:
            self._setup(probe, num_envs, num_workers, batch_size, seed, gathers=True)
        finally:
            probe.close()
        context = multiprocessing.get_context(start_method)
        handle = _RegionHandle(
            self.buffers.fd,
            (num_envs, num_workers, self.layout.row_bytes, self.action_layout.row_bytes, self.buffers.batch_size),
        )
        # Registered before any worker starts, so that a failure part-way
        # (or garbage collection, or interpreter exit) still stops them.
        self._finalizer = weakref.finalize(
            self, _stop_workers, self.buffers, self._processes, self._conns, self._pinned
        )
        per = self.envs_per_worker
        try:
            for w in range(num_workers):
                parent_end, child_end = context.Pipe()
                self._conns.append(parent_end)
                process = context.Process(
                    target=_worker_main,
                    name=f"pufferrs-worker-{w}",
                    args=(
                        w,
                        handle,
                        env_creators[w * per : (w + 1) * per],
                        env_args,
                        env_kwargs,
                        self.layout,
                        self.action_layout,
                        w * per,
                        child_end,
                    ),
                    daemon=True,
                )
                self._processes.append(process)
                try:
                    process.start()
                finally:
                    child_end.close()
        except BaseException:
            self.close()
            raise

    def _reset(self, seed: int | None) -> None:
        if self._pending:
            # Results of steps in flight are dropped; their errors are not.
            self._receive(len(self._pending))
        self._held = []
        for w, conn in enumerate(self._conns):
            try:
                conn.send(seed)
            except OSError as exc:
                raise self._dead(w) from exc
        all_workers = list(range(self.num_workers))
        self.buffers.request(all_workers, RolloutBuffers.RESET)
        self._pending = set(all_workers)

    def _step(self, workers: list[int]) -> None:
        self.buffers.request(workers, RolloutBuffers.STEP)

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        buffers, status = self.buffers, self.buffers.status
        deadline = time.monotonic() + self.timeout
        taken: list[int] = []
        new = buffers.wait_completed(count, min(POLL_INTERVAL, self.timeout))
        payloads: dict[int, list[tuple[int, dict]]] = {}
        ended = False
        while True:
            for w in new:
                self._pending.discard(w)
                flags = status(w)
                if flags:
                    if flags & RolloutBuffers.ERROR:
                        env, message = self._payload(w, deadline)
                        error = WorkerError(f"worker {w} ({self._envs_of(w)}): {message}")
                        error.worker, error.env = w, env
                        raise self._fail(error)
                    if flags & RolloutBuffers.INFOS:
                        payloads[w] = self._payload(w, deadline)
                    ended = ended or bool(flags & RolloutBuffers.ENDED)
            taken += new
            if len(taken) == count:
                return taken, payloads, ended
            for w in sorted(self._pending):
                if self._processes[w].exitcode is not None:
                    raise self._dead(w)
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = ", ".join(f"worker {w} ({self._envs_of(w)})" for w in sorted(self._pending))
                error = WorkerTimeoutError(
                    f"recv() timed out after {self.timeout:g} s waiting for {waiting}; "
                    "raise the vector env's timeout if its envs are this slow"
                )
                error.worker = min(self._pending) if self._pending else None
                raise self._fail(error)
            new = buffers.wait_completed(count - len(taken), min(POLL_INTERVAL, left))

    def _payload(self, worker: int, deadline: float) -> Any:
        """What ``worker`` sends on its pipe after completing with INFOS or
        ERROR; it may still be writing it."""
        conn = self._conns[worker]
        while not conn.poll(POLL_INTERVAL):
            if self._processes[worker].exitcode is not None and not conn.poll(0):
                raise self._dead(worker)
            if time.monotonic() >= deadline:
                raise self._fail(WorkerTimeoutError(f"worker {worker} did not send its infos in time"))
        try:
            return conn.recv()
        except (EOFError, OSError) as exc:
            raise self._dead(worker) from exc

    def _dead(self, worker: int) -> WorkerError:
        process = self._processes[worker]
        process.join(POLL_INTERVAL)
        code = process.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        error = WorkerError(f"worker {worker} ({self._envs_of(worker)}, pid {process.pid}) {how}")
        error.worker = worker
        return self._fail(error)

    def _shutdown(self) -> None:
        self._finalizer()
