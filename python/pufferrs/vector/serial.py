"""The Serial backend: every env in this process, one batch at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from pufferrs.errors import WorkerError
from pufferrs.vector.arguments import check_arguments, checked_env
from pufferrs.vector.base import VectorEnv, unpin
from pufferrs.vector.inplace import made_on_rows
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
    one call of the block (``_step_all``, the base's hook) that writes the
    actions into their rows, steps every env and returns every info, for
    gymnasium and PettingZoo envs alike, and ``recv`` hands back every
    row: on small observations the bookkeeping of batches would cost more
    than the vector env's whole share of a step. Everything else (async
    batches, the batch of a reset, misuse) takes the general path.

    Envs written in Rust (:mod:`pufferrs.native`) step each block in one
    call over ``threads`` threads (default: the machine's cores, but at least 32 envs a
    thread: waking a thread costs more than stepping a few small envs)."""

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
        threads: int | None = None,
        **ignored: Any,
    ) -> None:
        num_envs = len(env_creators) if num_envs is None else num_envs
        check_arguments(num_envs, None, batch_size, seed)
        env_kwargs = env_kwargs or {}
        envs = [creator(*env_args, **env_kwargs) for creator in env_creators]
        try:
            # Serial runs blocks of `batch_size` envs: one "worker" per block.
            self._setup(checked_env(envs[0]), num_envs, None, batch_size, seed, check_bounds)
            envs[:] = made_on_rows(
                envs, env_creators, env_args, env_kwargs, 0, self._arrays, self.layout, self.action_layout
            )
            size = self.batch_size
            self._runners = [
                Runner(
                    envs[w * size : (w + 1) * size],
                    w * size,
                    self._arrays,
                    self.layout,
                    self.action_layout,
                    check_bounds=self.check_bounds,
                    threads=threads,
                )
                for w in range(self.num_workers)
            ]
        except BaseException:
            for env in envs:
                env.close()
            raise
        #: (worker, infos, its rows whose episode ended) of blocks reset or
        #: stepped by the general path, in order.
        self._done: deque[tuple[int, list[tuple[int, dict]], tuple[int, ...]]] = deque()
        #: The runner of every env, when there is one block (see the class
        #: docstring).
        self._whole = self._runners[0] if self.num_workers == 1 else None
        self._finalize_with(_close_runners, self._runners, self._pinned, self.buffers)

    def _step_all(self, actions: Any) -> tuple[list[dict], tuple[int, ...]] | None:
        """See :meth:`VectorEnv._step_all`: one call of the one block."""
        runner = self._whole
        if runner is None:
            return None
        try:
            # (infos, ended): the block's positions are the vector env's
            # rows, since it holds every env.
            return runner.step(actions, dense=True)
        except Exception as exc:
            if runner.current_env is not None:
                raise self._error(0, exc) from exc
            return None  # the actions were refused before any env stepped: nothing changed

    def _error(self, worker: int, exc: Exception) -> WorkerError:
        env = self._runners[worker].current_env
        error = WorkerError(f"env {env} raised {type(exc).__name__}: {exc}")
        error.worker, error.env = worker, env
        return self._fail(error)

    def _reset(self, seed: int | None) -> None:
        self._done.clear()
        for w, runner in enumerate(self._runners):
            try:
                infos = runner.reset(seed)
            except Exception as exc:
                raise self._error(w, exc) from exc
            self._done.append((w, infos, ()))

    def _step(self, workers: list[int]) -> None:
        runners, done = self._runners, self._done
        for w in workers:
            runner = runners[w]
            try:
                infos = runner.step()
            except Exception as exc:
                raise self._error(w, exc) from exc
            done.append((w, infos, runner.ended))

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        done = self._done
        if count == 1:  # the synchronous case: one block, no lists to build
            w, infos, ended = done.popleft()
            return [w], {w: infos} if infos else {}, bool(ended)
        taken = [done.popleft() for _ in range(count)]
        workers = [w for w, _, _ in taken]
        return workers, {w: infos for w, infos, _ in taken if infos}, any(ended for _, _, ended in taken)

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        # The function's own exceptions propagate as they are: the envs
        # stay usable, as with Multiprocessing.
        return [
            function(env, args[runner.first_env + i]) for runner in self._runners for i, env in enumerate(runner.envs)
        ]

    def _shutdown(self) -> None:
        self._finalizer()
