"""The Serial backend: every env in this process, one batch at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from pufferrs.errors import WorkerError
from pufferrs.vector.base import VectorEnv, check_arguments, checked_env, unpin
from pufferrs.vector.runner import Runner


def _close_runners(runners: list[Runner], pinned: list[int], buffers: Any) -> None:
    unpin(pinned)
    for runner in runners:
        runner.close()


class Serial(VectorEnv):
    """Every env in this process, stepped one after the other into the same
    buffers the multiprocessing backend shares.

    ``batch_size < num_envs`` steps blocks of ``batch_size`` envs in turn,
    so code written for asynchronous batches runs unchanged. An env that
    raises surfaces as :class:`WorkerError` chained to the original.

    With one block (``batch_size == num_envs``, the default) ``send`` is
    one Rust call that writes the actions into their rows, steps every env
    and returns every info, and ``recv`` hands back the views it holds
    already: on small observations the bookkeeping of batches would cost
    more than the vector env's whole share of a step. Everything else
    (async batches, the batch of a reset, misuse) takes the general path."""

    def __init__(
        self,
        env_creators: list[Callable[..., gym.Env]],
        env_args: tuple = (),
        env_kwargs: dict | None = None,
        num_envs: int | None = None,
        num_workers: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        check_bounds: bool = False,
        **ignored: Any,
    ) -> None:
        num_envs = len(env_creators) if num_envs is None else num_envs
        check_arguments(num_envs, None, batch_size, seed)
        env_kwargs = env_kwargs or {}
        envs = [creator(*env_args, **env_kwargs) for creator in env_creators]
        self._envs = envs
        try:
            # Serial runs blocks of `batch_size` envs: one "worker" per block.
            self._setup(checked_env(envs[0]), num_envs, None, batch_size, seed, check_bounds)
            size = self.batch_size
            self._runners = [
                Runner(
                    envs[w * size : (w + 1) * size],
                    w * size,
                    self._arrays,
                    self.layout,
                    self.action_layout,
                    check_bounds=self.check_bounds,
                )
                for w in range(self.num_workers)
            ]
        except BaseException:
            for env in envs:
                env.close()
            raise
        #: (worker, infos, its envs whose episode ended) of blocks reset or
        #: stepped by the general path, in order.
        self._done: deque[tuple[int, list[tuple[int, dict]], tuple[int, ...]]] = deque()
        #: The block of every env, when there is one (see the class docstring),
        #: and the infos of its step that the next recv hands out.
        whole = self.num_workers == 1 and self.possible_agents is None  # PettingZoo blocks step in Python
        self._whole = self._runners[0].block if whole else None
        self._stepped: list[dict] | None = None
        self._finalize_with(_close_runners, self._runners, self._pinned, self.buffers)

    def send(self, actions: Any) -> None:
        """See :meth:`VectorEnv.send`."""
        block = self._whole
        if block is None or not self._held or self._closed or self._broken is not None:
            return super().send(actions)
        try:
            infos = block.step(actions, dense=True)
        except Exception as exc:
            if block.current_env is not None:
                raise self._error(0, exc) from exc
            infos = None  # the actions were refused before any env stepped: nothing changed
        if infos is None:
            return super().send(actions)  # which refuses them again, diagnosing the batch
        self._stepped = infos
        self._pending.add(0)
        self._held = []
        return None

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict], np.ndarray, np.ndarray]:
        """See :meth:`VectorEnv.recv`."""
        infos = self._stepped
        if infos is None or self._closed or self._broken is not None:
            return super().recv()  # which also refuses misuse
        self._stepped = None
        self._pending.clear()
        self._held, self._held_lo = [0], 0
        # The block has not stepped since (only send steps it), and its
        # positions are env ids.
        for i in self._whole.ended:
            infos[i] = self._ended_info(infos[i], i)
        obs, rewards, terminals, truncations, env_ids, masks = self._full
        return obs, rewards, terminals, truncations, infos, env_ids, masks

    def _error(self, worker: int, exc: Exception) -> WorkerError:
        env = self._runners[worker].current_env
        error = WorkerError(f"env {env} raised {type(exc).__name__}: {exc}")
        error.worker, error.env = worker, env
        return self._fail(error)

    def _reset(self, seed: int | None) -> None:
        self._held, self._pending = [], set()
        self._done.clear()
        self._stepped = None
        for w, runner in enumerate(self._runners):
            try:
                infos = runner.reset(seed)
            except Exception as exc:
                raise self._error(w, exc) from exc
            self._pending.add(w)
            self._done.append((w, infos, ()))

    def _step(self, workers: list[int]) -> None:
        runners, done = self._runners, self._done
        for w in workers:
            block = runners[w].block  # Runner.step, inlined
            try:
                infos = block.step()
            except Exception as exc:
                raise self._error(w, exc) from exc
            done.append((w, infos, block.ended))

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        done = self._done
        if count == 1:  # the synchronous case: one block, no lists to build
            w, infos, ended = done.popleft()
            self._pending.discard(w)
            return [w], {w: infos} if infos else {}, bool(ended)
        taken = [done.popleft() for _ in range(count)]
        workers = [w for w, _, _ in taken]
        self._pending.difference_update(workers)
        return workers, {w: infos for w, infos, _ in taken if infos}, any(ended for _, _, ended in taken)

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        # The function's own exceptions propagate as they are: the envs
        # stay usable, as with Multiprocessing.
        return [
            function(env, args[runner.first_env + i]) for runner in self._runners for i, env in enumerate(runner.envs)
        ]

    def _shutdown(self) -> None:
        self._finalizer()
