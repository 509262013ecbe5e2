"""The Multiprocessing backend: envs in worker processes that write into
the shared buffers, woken and awaited through the control words in Rust."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any

import gymnasium as gym

from pufferrs._native import RolloutBuffers
from pufferrs.errors import SharedMemoryError, WorkerError, WorkerTimeoutError
from pufferrs.spaces import Layout
from pufferrs.vector.arguments import check_arguments, checked_env
from pufferrs.vector.base import VectorEnv, unpin
from pufferrs.vector.inplace import made_on_rows
from pufferrs.vector.runner import Runner

#: between checks for a dead parent while a worker waits for commands.
POLL_INTERVAL = 0.1
#: Seconds ``close()`` gives workers to exit before terminating them.
CLOSE_GRACE = 1.0


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


class EnvCall:
    """A ``call_envs`` request: sent on a worker's pipe with the CALL
    command, run by the worker on its envs, its results sent back as
    infos."""

    def __init__(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> None:
        self.function, self.args = function, args

    def run(self, envs: list[gym.Env]) -> list[tuple[int, Any]]:
        """``(i, result)`` for each env, or ``(i, CallFailed)`` for the first
        that raised: the caller re-raises it, and the envs stay usable."""
        results = []
        for i, env in enumerate(envs):
            try:
                results.append((i, self.function(env, self.args[i])))
            except Exception as exc:
                return [(i, CallFailed(exc, traceback.format_exc()))]
        return results


class CallFailed:
    """An exception raised by a ``call_envs`` function in a worker; one that
    does not pickle travels as a :class:`WorkerError` with its traceback."""

    def __init__(self, exc: Exception, trace: str) -> None:
        try:
            reduction.ForkingPickler.loads(reduction.ForkingPickler.dumps(exc))
            self.exc: Exception = exc
        except Exception:  # noqa: BLE001 - any failure to round-trip
            self.exc = WorkerError(f"{type(exc).__name__}: {exc}\n{trace}")


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
    check_bounds: bool,
    threads: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    """A worker: makes its envs, then serves requests until told to close,
    or until its parent is gone."""
    # Ctrl-C goes to the whole process group: the parent handles it and
    # closes the workers, which must not die half-way through a step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    buffers = handle.attach()
    runner: Runner | None = None
    startup_error: str | None = None
    try:
        envs = [creator(*env_args, **env_kwargs) for creator in creators]
        arrays = {name: buffers.array(name) for name in VectorEnv._ARRAYS}
        envs = made_on_rows(envs, creators, env_args, env_kwargs, first_env, arrays, layout, action_layout)
        runner = Runner(envs, first_env, arrays, layout, action_layout, check_bounds=check_bounds, threads=threads)
    except Exception:
        startup_error = f"making its envs raised:\n{traceback.format_exc()}"
    STEP, RESET, CALL, CLOSE = RolloutBuffers.STEP, RolloutBuffers.RESET, RolloutBuffers.CALL, RolloutBuffers.CLOSE
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
            # A reset's seed and a call's function come on the pipe; a step
            # reads its actions from the rows.
            sent = conn.recv() if command in (RESET, CALL) else None
            try:
                if runner is None:
                    raise RuntimeError(startup_error)
                if command == STEP:
                    infos = runner.step()
                elif command == RESET:
                    infos = runner.reset(sent)
                elif command == CALL:
                    infos = sent.run(runner.envs)
                else:
                    raise RuntimeError(f"unknown command {command}")
            except Exception as exc:
                env = runner.current_env if runner is not None else None
                where = f"env {env} raised" if env is not None else "raised"
                message = startup_error if runner is None else f"{where}:\n{traceback.format_exc()}"
                _send_error(buffers, worker, conn, env, message, f"{where} {type(exc).__name__}")
                continue
            # A call leaves the rows, and so the episodes, as they were.
            ended = ENDED if command != CALL and runner.ended else OK
            if not infos:
                buffers.complete(worker, ended)
                continue
            # Pickled before completing, so that an info that cannot be
            # pickled is reported with its traceback, not by a worker that
            # dies half-way through sending it.
            try:
                payload = reduction.ForkingPickler.dumps(infos)
            except Exception as exc:
                # A call answers per env; a reset or step, per row.
                rows_per_env = 1 if command == CALL else buffers.agents_per_env
                env = _unpicklable(infos, first_env, rows_per_env)
                where = f"the info of env {env} cannot be pickled to send to the parent"
                _send_error(buffers, worker, conn, env, f"{where}:\n{traceback.format_exc()}", f"{where}: {exc!r}")
                continue
            buffers.complete(worker, INFOS | ended)
            conn.send_bytes(payload)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent closed its end
    finally:
        if runner is not None:
            runner.close()
        conn.close()


def _send_error(
    buffers: Any, worker: int, conn: multiprocessing.connection.Connection, env: int | None, message: str, short: str
) -> None:
    """Reports a failure to the parent: ``message`` (with the traceback),
    or ``short`` when even that does not pickle."""
    buffers.complete(worker, RolloutBuffers.ERROR)
    try:
        conn.send((env, message))
    except Exception:  # noqa: BLE001 - e.g. an exception message that does not pickle
        conn.send((env, f"{short} (traceback could not be sent)"))


def _unpicklable(infos: list[tuple[int, Any]], first_env: int, rows_per_env: int) -> int | None:
    """The env of the first of ``infos`` that does not pickle: they are
    ``(position among the worker's rows, info)`` pairs, ``rows_per_env``
    rows to an env (its agents)."""
    for row, info in infos:
        try:
            reduction.ForkingPickler.dumps(info)
        except Exception:  # noqa: BLE001 - any failure names this env
            return first_env + row // rows_per_env
    return None


def _usable_cpus() -> int:
    """The CPUs this process may run on: what the default worker count
    (the plan's rule, ``RolloutBuffers.default_workers``) is measured against."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    unpin(pinned)


class Multiprocessing(VectorEnv):
    """Envs in ``num_workers`` worker processes, ``num_envs / num_workers``
    each, writing into shared memory.

    ``timeout`` bounds every wait of ``recv`` (seconds): past it, a
    :class:`WorkerTimeoutError` names the workers that did not answer. A
    worker that raises or dies ends ``recv`` with :class:`WorkerError`
    carrying its traceback or exit code, within ``POLL_INTERVAL`` of its
    death. ``start_method`` is a multiprocessing start method (default: the
    platform's). ``threads`` is how many threads each worker steps its
    envs written in Rust with (:mod:`pufferrs.native`; default 1: the
    workers are the parallelism). ``pin_workers=True`` pins worker ``i``
    to the ``i``-th CPU this process may run on (modulo their number):
    with as many workers as cores, the scheduler otherwise may put two
    workers on one core beside the parent, which waits by yielding its
    core and so never looks idle (on 2 cores, 4096 native CartPoles: two
    workers 1.43-1.75x one unpinned, 1.76-1.84x pinned). Off by default:
    pinned workers cannot move away from other programs' load."""

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
        check_bounds: bool = False,
        threads: int = 1,
        pin_workers: bool = False,
    ) -> None:
        if platform.system() != "Linux":
            # The region workers share is a memfd and their waits are futexes.
            raise SharedMemoryError(
                f"the multiprocessing backend needs Linux (memfd shared memory, futex waits); "
                f"this is {platform.system()}: use backend='serial'"
            )
        num_envs = len(env_creators) if num_envs is None else num_envs
        env_kwargs = env_kwargs or {}
        if num_workers is None:
            num_workers = RolloutBuffers.default_workers(num_envs, _usable_cpus())
        check_arguments(num_envs, num_workers, batch_size, seed)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = float(timeout)
        self._processes: list = []
        self._conns: list = []
        # The spaces come from an env made here, as PufferLib does.
        probe = checked_env(env_creators[0](*env_args, **env_kwargs))
        try:
            self._setup(probe, num_envs, num_workers, batch_size, seed, check_bounds)
        finally:
            probe.close()
        context = multiprocessing.get_context(start_method)
        handle = _RegionHandle(
            self.buffers.fd,
            (
                self.num_envs,
                self.num_workers,
                self.layout.row_bytes,
                self.action_layout.row_bytes,
                self.batch_size,
                self.agents_per_env,
            ),
        )
        # Registered before any worker starts, so that a failure part-way
        # (or garbage collection, or interpreter exit) still stops them.
        self._finalize_with(_stop_workers, self.buffers, self._processes, self._conns, self._pinned)
        per = self.envs_per_worker
        cpus = sorted(os.sched_getaffinity(0)) if pin_workers else []
        try:
            for w in range(self.num_workers):
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
                        self.check_bounds,
                        threads,
                        child_end,
                    ),
                    daemon=True,
                )
                self._processes.append(process)
                try:
                    process.start()
                finally:
                    child_end.close()
                if cpus:
                    os.sched_setaffinity(process.pid, {cpus[w % len(cpus)]})
        except BaseException:
            self.close()
            raise

    # The base keeps which workers are in flight (`_pending`) and which are
    # held; these hooks read that and leave it to the base to update.

    def _reset(self, seed: int | None) -> None:
        if self._pending:
            # Results of steps in flight are dropped; their errors are not.
            self._collect(set(self._pending))
        for w, conn in enumerate(self._conns):
            try:
                conn.send(seed)
            except OSError as exc:
                raise self._dead(w) from exc
        self.buffers.request(list(range(self.num_workers)), RolloutBuffers.RESET)

    def _step(self, workers: list[int]) -> None:
        self.buffers.request(workers, RolloutBuffers.STEP)

    def _receive(self, count: int) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        return self._collect(set(self._pending), count)

    def _collect(
        self, waiting: set[int], count: int | None = None
    ) -> tuple[list[int], dict[int, list[tuple[int, dict]]], bool]:
        """Waits for the first ``count`` (default: all) of the workers in
        ``waiting`` to answer and returns them as ``_receive`` does.
        ``waiting`` is the caller's own set: each worker that answers is
        taken out of it. A worker that fails, dies or lets the timeout pass
        is a :class:`WorkerError`."""
        count = len(waiting) if count is None else count
        buffers, status = self.buffers, self.buffers.status
        deadline = time.monotonic() + self.timeout
        taken: list[int] = []
        new = buffers.wait_completed(count, min(POLL_INTERVAL, self.timeout))
        payloads: dict[int, list[tuple[int, dict]]] = {}
        ended = False
        while True:
            for w in new:
                waiting.discard(w)
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
            for w in sorted(waiting):
                if self._processes[w].exitcode is not None:
                    raise self._dead(w)
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(f"worker {w} ({self._envs_of(w)})" for w in sorted(waiting))
                error = WorkerTimeoutError(
                    f"recv() timed out after {self.timeout:g} s waiting for {names}; "
                    "raise the vector env's timeout if its envs are this slow"
                )
                error.worker = min(waiting) if waiting else None
                raise self._fail(error)
            new = buffers.wait_completed(count - len(taken), min(POLL_INTERVAL, left))

    def _call(self, function: Callable[[gym.Env, Any], Any], args: list[Any]) -> list[Any]:
        per, workers = self.envs_per_worker, list(range(self.num_workers))
        # Pickled before anything is sent: a function that does not pickle
        # raises here and leaves every worker as it was.
        requests = [reduction.ForkingPickler.dumps(EnvCall(function, args[w * per : (w + 1) * per])) for w in workers]
        for w in workers:
            try:
                self._conns[w].send_bytes(requests[w])
            except OSError as exc:
                raise self._dead(w) from exc
        self.buffers.request(workers, RolloutBuffers.CALL)
        _, payloads, _ = self._collect(set(workers))
        results = []
        for w in workers:
            for _, result in payloads[w]:
                if isinstance(result, CallFailed):
                    raise result.exc
                results.append(result)
        return results

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
        except Exception as exc:
            error = WorkerError(
                f"worker {worker} ({self._envs_of(worker)}): what it sent cannot be unpickled here: "
                f"{type(exc).__name__}: {exc}"
            )
            error.worker = worker
            raise self._fail(error) from exc

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

    def _disown(self) -> None:
        super()._disown()
        # multiprocessing lists the workers as this process's children too,
        # and its exit handler would SIGTERM them (they are daemons) when
        # the forked child exits.
        for process in self._processes:
            multiprocessing.process._children.discard(process)

    def _shutdown(self) -> None:
        self._finalizer()
