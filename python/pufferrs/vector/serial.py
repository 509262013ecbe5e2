"""The Serial backend: every env in this process, one batch at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from pufferrs.errors import WorkerError
from pufferrs.vector.base import VectorEnv, checked_env, unpin
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
        check_bounds: bool = False,
        **ignored: Any,
    ) -> None:
        num_envs = len(env_creators) if num_envs is None else num_envs
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
        self._done: deque[int] = deque()
        self._finalize_with(_close_runners, self._runners, self._pinned, self.buffers)

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

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        # The function's own exceptions propagate as they are: the envs
        # stay usable, as with Multiprocessing.
        return [
            function(env, args[runner.first_env + i]) for runner in self._runners for i, env in enumerate(runner.envs)
        ]

    def _shutdown(self) -> None:
        self._finalizer()
