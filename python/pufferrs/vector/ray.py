"""The Ray backend: envs in Ray actors, on one machine or across a cluster.

Each actor hosts a block of envs in a pufferrs vector env of its own, on
its node (Serial by default, or Multiprocessing for several cores per
actor), and answers every step with one remote call that returns the
block's rows packed into one array: observations, rewards and flags.
The driver writes them into its own buffers (the same region the other
backends use, so ``pin_memory`` page-locks it for the GPU), keeps requests
in flight while it infers, and, for ``batch_size < num_envs``, takes
whichever actors answer first (``ray.wait``).

Ray is imported when this backend is used, never by ``import pufferrs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import pufferrs.vector
from pufferrs.errors import WorkerError, WorkerTimeoutError
from pufferrs.vector.base import VectorEnv, check_arguments, checked_env, unpin

#: Seconds ``close()`` gives actors to close their envs before killing them.
CLOSE_GRACE = 5.0


class EnvActor:
    """The body of one actor (made a Ray actor by :class:`Ray`): a block of
    envs in a local vector env, stepped one block per call."""

    def __init__(
        self,
        creators: list[Callable[..., gym.Env]],
        env_args: tuple,
        env_kwargs: dict,
        seed: int,
        backend: str,
        backend_kwargs: dict,
        check_bounds: bool,
    ) -> None:
        n = len(creators)
        self.envs = pufferrs.vector.make(
            creators,
            num_envs=n,
            backend=backend,
            seed=seed,
            env_args=env_args,
            env_kwargs=env_kwargs,
            check_bounds=check_bounds,
            **backend_kwargs,
        )
        row_bytes = self.envs.layout.row_bytes
        # One array per answer: observation rows, then rewards, then flags.
        self.packed = np.zeros(n * (row_bytes + 6), np.uint8)
        self.rows = self.packed[: n * row_bytes].reshape(n, row_bytes)
        self.rewards = self.packed[n * row_bytes : n * (row_bytes + 4)].view(np.float32)
        self.terminals = self.packed[n * (row_bytes + 4) : n * (row_bytes + 5)].view(np.bool_)
        self.truncations = self.packed[n * (row_bytes + 5) :].view(np.bool_)
        self.steps = 0

    def where(self) -> tuple[str, int]:
        """The node this actor runs on and its process id."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def reset(self, seed: int | None) -> tuple[np.ndarray, list | None]:
        obs, infos = self.envs.reset(seed)
        return self._pack(obs, None, None, None, infos)

    def step(self, action_rows: np.ndarray) -> tuple[np.ndarray, list | None]:
        self.steps += 1
        # The rows as the driver flattened them: unflattened here they would
        # not flatten again (a Text action unflattens to codes, not a str).
        self.envs.send_rows(action_rows)
        obs, rewards, terminals, truncations, infos, _, _ = self.envs.recv()
        return self._pack(obs, rewards, terminals, truncations, infos)

    def call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        return self.envs.call_envs(function, args)

    def step_count(self) -> int:
        return self.steps

    def close(self) -> None:
        self.envs.close()

    def _pack(self, obs: np.ndarray, rewards: Any, terminals: Any, truncations: Any, infos: list[dict]) -> tuple:
        """The block's rows as one array, and what else the driver needs
        for the envs with infos: ``(i, info, ended)`` where ``ended`` is
        ``(return, length, last observation row)`` for an episode's end."""
        n = len(infos)
        self.rows[:] = obs.reshape(n, -1).view(np.uint8)
        if rewards is None:
            self.rewards[:], self.terminals[:], self.truncations[:] = 0, False, False
        else:
            self.rewards[:], self.terminals[:], self.truncations[:] = rewards, terminals, truncations
        extras = None
        for i, info in enumerate(infos):
            if not info:
                continue
            ended = None
            if "final_obs" in info:
                ended = (info["episode_return"], info["episode_length"], info["final_obs"].tobytes())
                info = info["final_info"]
            extras = extras or []
            extras.append((i, info, ended))
        return self.packed, extras


def _stop_actors(actors: list, owns_ray: bool, pinned: list[int]) -> None:
    """Closes the actors' envs, kills the actors, and shuts Ray down only
    if this backend started it. A module function, so that the finalizer
    holds no vector env."""
    unpin(pinned)
    import ray

    if not ray.is_initialized():
        return
    try:
        ray.wait([actor.close.remote() for actor in actors], num_returns=len(actors), timeout=CLOSE_GRACE)
    except Exception:  # noqa: BLE001 - dead actors are killed below all the same
        pass
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
    actors.clear()
    if owns_ray:
        ray.shutdown()


class Ray(VectorEnv):
    """Envs in ``num_workers`` Ray actors, ``num_envs / num_workers`` each.

    - ``address``: the Ray cluster to use. By default, the one this
      process is already connected to (``ray.init`` called before), else
      the one ``ray.init()`` finds (``RAY_ADDRESS``, or a cluster started
      with ``ray start`` on this machine), else a new local one.
      ``close()`` shuts Ray down only when it started or connected it
      itself, which never stops a cluster that was already running.
    - ``num_workers``: actors (default: the largest divisor of ``num_envs``
      at most the cluster's CPUs). Actors are spread over the nodes.
    - ``actor_backend``: each actor's own vector env, ``"serial"`` (default)
      or ``"multiprocessing"`` with ``actor_workers`` processes;
      ``num_cpus`` is what each actor reserves (default: its processes).
    - ``timeout``: seconds ``recv`` (and placing the actors) may wait.

    An actor that dies ends ``recv`` with :class:`WorkerError` naming it,
    its envs and its node; an env that raises in an actor, with the env's
    error. Envs and their creators travel by Ray's pickling
    (cloudpickle): lambdas are fine."""

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
        address: str | None = None,
        actor_backend: str = "serial",
        actor_workers: int | None = None,
        num_cpus: float | None = None,
        timeout: float = 60.0,
    ) -> None:
        import ray

        num_envs = len(env_creators) if num_envs is None else num_envs
        env_kwargs = env_kwargs or {}
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if actor_backend not in ("serial", "multiprocessing"):
            raise ValueError(f"actor_backend must be 'serial' or 'multiprocessing', got {actor_backend!r}")
        self.timeout = float(timeout)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        self._actors: list = []
        if num_workers is None:
            num_workers = _default_actors(num_envs, int(ray.cluster_resources().get("CPU", 1)))
        try:
            check_arguments(num_envs, num_workers, batch_size, seed)
            probe = checked_env(env_creators[0](*env_args, **env_kwargs), backend="Ray")
            try:
                self._setup(probe, num_envs, num_workers, batch_size, seed, check_bounds)
            finally:
                probe.close()
        except BaseException:
            if self._owns_ray:
                ray.shutdown()
            raise
        self._finalize_with(_stop_actors, self._actors, self._owns_ray, self._pinned)
        per = self.envs_per_worker
        backend_kwargs = {} if actor_backend == "serial" else {"num_workers": actor_workers}
        cpus = num_cpus if num_cpus is not None else (1 if actor_backend == "serial" else actor_workers or 1)
        actor_class = ray.remote(num_cpus=cpus, max_restarts=0, scheduling_strategy="SPREAD")(EnvActor)
        try:
            for w in range(self.num_workers):
                self._actors.append(
                    actor_class.remote(
                        env_creators[w * per : (w + 1) * per],
                        env_args,
                        env_kwargs,
                        self.seed + w * per,
                        actor_backend,
                        backend_kwargs,
                        self.check_bounds,
                    )
                )
            self.placement = self._place(ray, cpus)
        except BaseException:
            for actor in self._actors:  # unplaced actors would never answer close()
                ray.kill(actor)
            self.close()
            raise
        #: The request in flight for each actor, and the actor of each request.
        self._inflight: dict[int, Any] = {}
        self._owner_of: dict[Any, int] = {}
        obs = self._arrays["observations"]
        self._unpack = [
            (
                obs[w * per : (w + 1) * per],
                self._arrays["rewards"][w * per : (w + 1) * per],
                self._arrays["terminals"][w * per : (w + 1) * per],
                self._arrays["truncations"][w * per : (w + 1) * per],
            )
            for w in range(self.num_workers)
        ]

    def _place(self, ray: Any, cpus: float) -> list[tuple[str, int]]:
        """Waits until every actor is up: ``(node id, pid)`` of each. An
        actor that cannot be placed (too few CPUs) or made is a clear error,
        not a hang."""
        refs = [actor.where.remote() for actor in self._actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        if len(ready) < len(refs):
            have = ray.cluster_resources().get("CPU", 0)
            raise WorkerTimeoutError(
                f"{len(refs) - len(ready)} of {len(refs)} Ray actors were not up after {self.timeout:g} s: "
                f"each reserves {cpus:g} CPUs and the cluster has {have:g}; "
                "use fewer actors (num_workers), fewer CPUs each (num_cpus), or a larger cluster"
            )
        placement = []
        for w, ref in enumerate(refs):
            try:
                placement.append(ray.get(ref))
            except Exception as exc:
                raise self._failed(w, exc) from exc
        return placement

    def _reset(self, seed: int | None) -> None:
        # Results of steps in flight are dropped: each actor runs its calls
        # in order, so its reset comes after them.
        self._held = []
        self._inflight.clear()
        self._owner_of.clear()
        per = self.envs_per_worker
        for w, actor in enumerate(self._actors):
            self._request(w, actor.reset.remote(None if seed is None else seed + w * per))
        self._pending = set(range(self.num_workers))

    def _step(self, workers: list[int]) -> None:
        actions, per = self._arrays["actions"], self.envs_per_worker
        for w in workers:
            self._request(w, self._actors[w].step.remote(actions[w * per : (w + 1) * per]))

    def _request(self, worker: int, ref: Any) -> None:
        self._inflight[worker] = ref
        self._owner_of[ref] = worker

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        import ray

        refs = [self._inflight[w] for w in sorted(self._pending)]
        ready, _ = ray.wait(refs, num_returns=count, timeout=self.timeout)
        if len(ready) < count:
            waiting = ", ".join(self._actor_name(w) for w in sorted(self._pending))
            error = WorkerTimeoutError(
                f"recv() timed out after {self.timeout:g} s waiting for {waiting}; "
                "raise the vector env's timeout if its envs are this slow"
            )
            error.worker = min(self._pending)
            raise self._fail(error)
        workers = [self._owner_of.pop(ref) for ref in ready]
        try:
            results = ray.get(ready)
        except Exception:
            for w, ref in zip(workers, ready):
                try:
                    ray.get(ref)
                except Exception as exc:
                    raise self._failed(w, exc) from exc
            raise
        payloads: dict[int, list[tuple[int, dict]]] = {}
        ended = False
        per = self.envs_per_worker
        for w, (packed, extras) in zip(workers, results):
            del self._inflight[w]
            self._pending.discard(w)
            rows, rewards, terminals, truncations = self._unpack[w]
            size = rows.size
            rows[:] = packed[:size].reshape(rows.shape)
            rewards[:] = packed[size : size + 4 * per].view(np.float32)
            terminals[:] = packed[size + 4 * per : size + 5 * per].view(np.bool_)
            truncations[:] = packed[size + 5 * per :].view(np.bool_)
            if extras:
                payloads[w] = self._extras(w, extras)
                ended = ended or any(e is not None for _, _, e in extras)
        return workers, payloads, ended

    def _extras(self, worker: int, extras: list) -> list[tuple[int, dict]]:
        """The infos of an actor's answer; the ends of its episodes go into
        the arrays ``recv`` reads them from."""
        first = worker * self.envs_per_worker
        returns, lengths = self._arrays["episode_returns"], self._arrays["episode_lengths"]
        finals = self._arrays["final_observations"]
        infos = []
        for i, info, ended in extras:
            if ended is not None:
                returns[first + i], lengths[first + i], final = ended
                finals[first + i] = np.frombuffer(final, np.uint8)
            infos.append((i, info))
        return infos

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        import ray

        per = self.envs_per_worker
        refs = [actor.call.remote(function, args[w * per : (w + 1) * per]) for w, actor in enumerate(self._actors)]
        results = []
        for w, ref in enumerate(refs):
            try:
                results += ray.get(ref, timeout=self.timeout)
            except ray.exceptions.RayTaskError as exc:
                # The function's own exception, as the other backends raise it.
                raise (exc.cause if exc.cause is not None else exc.as_instanceof_cause()) from None
            except Exception as exc:
                raise self._failed(w, exc) from exc
        return results

    def step_counts(self) -> list[int]:
        """How many steps each actor has taken since it was made."""
        import ray

        return ray.get([actor.step_count.remote() for actor in self._actors])

    def _actor_name(self, worker: int) -> str:
        where = ""
        if getattr(self, "placement", None):
            node, pid = self.placement[worker]
            where = f", node {node[:12]}, pid {pid}"
        return f"Ray actor {worker} ({self._envs_of(worker)}{where})"

    def _failed(self, worker: int, exc: BaseException) -> WorkerError:
        """The WorkerError for an actor whose call failed: dead, or its env
        raised."""
        import ray

        if isinstance(exc, ray.exceptions.RayActorError):
            what = f"died: {type(exc).__name__}: {exc}"
        elif isinstance(exc, ray.exceptions.RayTaskError):
            what = f"raised:\n{exc}"
        else:
            what = f"failed: {type(exc).__name__}: {exc}"
        error = WorkerError(f"{self._actor_name(worker)} {what}")
        error.worker = worker
        return self._fail(error)

    def _shutdown(self) -> None:
        self._finalizer()


def _default_actors(num_envs: int, cpus: int) -> int:
    """The most actors that split the envs evenly without outnumbering the
    cluster's CPUs."""
    if not isinstance(num_envs, int):
        return 1
    return max((d for d in range(1, min(num_envs, max(cpus, 1)) + 1) if num_envs % d == 0), default=1)
