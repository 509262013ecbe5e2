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
from pufferrs._native import RolloutBuffers
from pufferrs.errors import WorkerError, WorkerTimeoutError
from pufferrs.vector.arguments import check_arguments, checked_env
from pufferrs.vector.base import VectorEnv, unpin

#: Seconds ``close()`` gives actors to close their envs before killing them.
CLOSE_GRACE = 5.0


class Packing:
    """How an actor's answer packs its rows into one uint8 array: the
    observation rows, then the float32 rewards, then the terminal flags,
    then the truncation flags. The one owner of these offsets: the actor
    packs through ``parts`` and the driver unpacks through it."""

    #: The vector env's arrays that the parts fill, in ``parts``' order.
    ARRAYS = ("observations", "rewards", "terminals", "truncations")

    def __init__(self, rows: int, row_bytes: int) -> None:
        self.rows, self.row_bytes = rows, row_bytes
        #: Bytes of an answer: per row, its observation, a float32 reward
        #: and two bool flags.
        self.nbytes = rows * (row_bytes + 6)

    def parts(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of ``packed``'s observation rows ``(rows, row_bytes)``,
        rewards, terminals and truncations."""
        n, size = self.rows, self.rows * self.row_bytes
        return (
            packed[:size].reshape(n, self.row_bytes),
            packed[size : size + 4 * n].view(np.float32),
            packed[size + 4 * n : size + 5 * n].view(np.bool_),
            packed[size + 5 * n :].view(np.bool_),
        )


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
        # One array per answer, refilled for each (Ray copies it out).
        # Gymnasium envs only (see `checked_env`): one row per env.
        packing = Packing(n, self.envs.layout.row_bytes)
        self.packed = np.zeros(packing.nbytes, np.uint8)
        self.rows, self.rewards, self.terminals, self.truncations = packing.parts(self.packed)
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
        """The block's rows as one array (see :class:`Packing`), and what
        else the driver needs for the rows with infos: ``(i, info, ended)``
        where ``i`` is the row's position in the block and ``ended`` is
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
            # The plan's rule, against the cluster's CPUs.
            num_workers = RolloutBuffers.default_workers(num_envs, int(ray.cluster_resources().get("CPU", 1)))
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
        #: How every actor packs its answer, and where each part goes here:
        #: the actor's rows of the observations, rewards and flags.
        rows = self._rows_per_worker
        self._packing = Packing(rows, self.layout.row_bytes)
        self._unpack = [
            tuple(self._arrays[name][w * rows : (w + 1) * rows] for name in Packing.ARRAYS)
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
        # in order, so its reset comes after them. (The base keeps which
        # workers are in flight and held; `_inflight` is this backend's own
        # record of the same, with the requests.)
        self._inflight.clear()
        self._owner_of.clear()
        per = self.envs_per_worker
        for w, actor in enumerate(self._actors):
            self._request(w, actor.reset.remote(None if seed is None else seed + w * per))

    def _step(self, workers: list[int]) -> None:
        actions, rows = self._arrays["actions"], self._rows_per_worker
        for w in workers:
            self._request(w, self._actors[w].step.remote(actions[w * rows : (w + 1) * rows]))

    def _request(self, worker: int, ref: Any) -> None:
        self._inflight[worker] = ref
        self._owner_of[ref] = worker

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        import ray

        refs = [self._inflight[w] for w in sorted(self._inflight)]
        ready, _ = ray.wait(refs, num_returns=count, timeout=self.timeout)
        if len(ready) < count:
            waiting = ", ".join(self._actor_name(w) for w in sorted(self._inflight))
            error = WorkerTimeoutError(
                f"recv() timed out after {self.timeout:g} s waiting for {waiting}; "
                "raise the vector env's timeout if its envs are this slow"
            )
            error.worker = min(self._inflight)
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
        for w, (packed, extras) in zip(workers, results):
            del self._inflight[w]
            for here, answered in zip(self._unpack[w], self._packing.parts(packed)):
                here[...] = answered
            if extras:
                payloads[w] = self._extras(w, extras)
                ended = ended or any(e is not None for _, _, e in extras)
        return workers, payloads, ended

    def _extras(self, worker: int, extras: list) -> list[tuple[int, dict]]:
        """The infos of an actor's answer; the ends of its episodes go into
        the arrays ``recv`` reads them from."""
        first_row = worker * self._rows_per_worker
        returns, lengths = self._arrays["episode_returns"], self._arrays["episode_lengths"]
        finals = self._arrays["final_observations"]
        infos = []
        for i, info, ended in extras:
            if ended is not None:
                returns[first_row + i], lengths[first_row + i], final = ended
                finals[first_row + i] = np.frombuffer(final, np.uint8)
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
