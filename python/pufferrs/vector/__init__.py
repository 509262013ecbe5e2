"""Vectorized environments over zero-copy shared-memory buffers.

:func:`make` builds a vector env in the shape of PufferLib's ``vector.make``:

>>> import gymnasium as gym
>>> import pufferrs.vector
>>> with pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=4) as envs:
...     obs, infos = envs.reset(seed=0)
...     obs, rewards, terminals, truncations, infos = envs.step(envs.action_space.sample())

Three backends share one API and produce bit-identical results for the
same seed and actions:

- :class:`Serial` steps every env in this process (for debugging, and for
  envs so cheap that processes cost more than they give).
- :class:`Multiprocessing` runs envs in worker processes. Workers write
  observations, rewards and flags straight into one shared-memory region
  that Rust creates (a memfd: it never appears in ``/dev/shm``, and the
  kernel frees it when the last process holding it exits, even after a
  SIGKILL), and the arrays :meth:`recv` returns are numpy views of that
  memory: no copy between a worker's ``env.step`` and your policy.
  Parent and workers signal each other through atomics in the region (a
  short spin, up to 2 ms of yielding the core while an answer is due, then
  a futex sleep, all with the GIL released); pipes carry only seeds,
  ``call_envs`` functions and results, non-empty infos and errors.
- :class:`Ray` runs blocks of envs in Ray actors, on one machine or a
  cluster, and writes their packed answers into the same buffers here
  (Ray is imported only when this backend is used).

``call_envs(function, args)`` runs ``function(env, arg)`` on every env
where it lives, between a ``recv`` and the next ``send``: the adapters of
:mod:`pufferrs.compat` reach the envs through it.

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
- ``infos`` is one dict per row of the batch, in ``row_ids`` order: an
  :class:`~pufferrs.vector.infos.Infos`, a sequence that reads, compares,
  assigns and pickles as a list and makes each row's dict when it is
  first read (``list(infos)`` is a real list). Most are empty; the dict
  of a step that ended an episode holds the env's info of that step plus
  ``episode_return`` (float), ``episode_length`` (int), ``final_obs`` and
  ``final_info`` (gymnasium's names): the episode's last observation, as a
  row like those of ``obs``, and the env's info of that step. Workers write the last observation
  into a per-env row of the shared memory before the reset, so nothing is
  pickled or piped; ``final_obs`` is a view of that row, valid until the
  env's next episode ends (at a later ``send`` at the earliest).
- Env ``i`` is reset with ``seed + i`` by ``reset(seed)``; the first reset
  without a seed uses ``make``'s ``seed``, later ones leave the envs' RNGs
  running. Seeds are what gymnasium takes: non-negative ints of any size,
  summed as Python ints (no wrapping); a negative seed or a non-int is a
  :class:`~pufferrs.ConfigError` before any env sees it.
- PettingZoo envs (a creator returning a ``ParallelEnv``, or an
  ``AECEnv`` for turn-based games) take one row per agent: env ``e`` owns
  rows ``e * agents_per_env ..`` (``agents_per_env =
  len(possible_agents)``), and slot ``k`` is ``possible_agents[k]`` for the
  whole episode. ``num_agents`` counts the rows, the spaces are one
  agent's, and every array ``recv`` returns has one entry per row of the
  batch (``row_ids``: row indices; ``send`` takes one action per row, in
  that order). All agents must share one observation space and one action
  space (pad them, e.g. with SuperSuit's ``pad_observations_v0`` and
  ``pad_action_space_v0``); the Ray backend runs gymnasium envs only.
- ``masks[i]`` is True where row ``i``'s agent is present and must act
  (always, for gymnasium envs). Actions of masked rows are never sent. An
  absent agent's row is zero, with reward 0 and flags False. In a
  turn-based game only the agent to move is unmasked; every agent's reward
  from a move (``env.rewards`` after it) is on its row, masked or not, and
  an ended agent that is selected is given its ``None`` step here.
- An agent that ends (terminated or truncated) gets one last row with its
  reward and flag, masked and zero, its last observation in ``final_obs``
  and its own ``episode_return``/``episode_length`` in its info; it stays
  masked until its env resets, which happens at the step its last agent
  ends. The info of the env's first row at that step holds
  ``env_episode_return`` (the sum over its agents) and
  ``env_episode_length`` (env steps).
- Infos travel from workers by pickle: an info that does not pickle ends
  ``recv`` with a :class:`~pufferrs.WorkerError` carrying the traceback.
- A vector env belongs to the process that made it. In a child made by
  ``os.fork`` (a forking ``multiprocessing`` start method included) every
  call raises :class:`~pufferrs.PufferError`, ``close()`` does nothing, and
  the child's exit leaves the parent's envs running: make the child its
  own vector env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pufferrs.errors import BuffersError
from pufferrs.vector.arguments import check_arguments
from pufferrs.vector.processes import Multiprocessing
from pufferrs.vector.ray import Ray
from pufferrs.vector.serial import Serial

__all__ = ["Multiprocessing", "Ray", "Serial", "make"]


def make(
    env_creator: Callable[..., Any] | Sequence[Callable[..., Any]],
    num_envs: int = 1,
    backend: str | type = "serial",
    num_workers: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    env_args: Sequence[Any] = (),
    env_kwargs: dict[str, Any] | None = None,
    check_bounds: bool = False,
    **kwargs: Any,
) -> Serial | Multiprocessing | Ray:
    """A vector env of ``num_envs`` envs made by ``env_creator(*env_args,
    **env_kwargs)`` (or by one creator each, given a list): gymnasium envs,
    or PettingZoo ``ParallelEnv`` or ``AECEnv`` envs with one row per agent
    (see the module's docstring for the rules).

    ``backend`` is ``"serial"``, ``"multiprocessing"`` or ``"ray"`` (or one
    of the classes; :class:`Ray` documents its own arguments).
    ``num_workers`` (multiprocessing) defaults to the largest divisor of
    ``num_envs`` that is at most the number of CPUs;
    ``batch_size`` (envs returned by each ``recv``) defaults to
    ``num_envs``, and must be a multiple of the envs per worker: smaller
    batches make ``recv`` return the first workers that are ready
    (EnvPool-style). Other keyword arguments go to the backend
    (``timeout``, ``start_method``, ``threads``, ``pin_workers``: see
    :class:`Multiprocessing`).

    Observations and actions are always checked for structure, shape,
    dtype and discrete ranges. ``check_bounds=True`` also checks ``Box``
    values against the space's bounds and for NaN and infinities: every
    observation a worker writes (an env out of bounds then ends ``recv``
    with a :class:`~pufferrs.WorkerError` naming the leaf) and every action
    ``send`` takes (a :class:`~pufferrs.SpaceError`, nothing sent). Off by
    default, as in gymnasium, whose vector envs check neither: it costs
    about 20 ns per ``Box`` value, a few percent of a CartPole step but
    about 100 times slower stepping for observations of 12,000 values such
    as a 3x64x64 image (see ``benches/bench_vector.py --check-bounds``).
    """
    backends = {"serial": Serial, "multiprocessing": Multiprocessing, "ray": Ray}
    if isinstance(backend, str):
        if backend.lower() not in backends:
            raise ValueError(f"backend must be one of {sorted(backends)}, got {backend!r}")
        backend = backends[backend.lower()]
    elif backend not in backends.values():
        raise ValueError(f"backend must be one of {sorted(backends)} or one of their classes, got {backend!r}")
    # Before any env is made; the backend checks the rest (its workers and
    # batches) before making its envs.
    check_arguments(num_envs, None, None, seed)
    if callable(env_creator):
        creators = [env_creator] * num_envs
    else:
        creators = list(env_creator)
        if len(creators) != num_envs:
            raise BuffersError(f"got {len(creators)} env creators for num_envs={num_envs}")
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
        check_bounds=check_bounds,
        **kwargs,
    )
