"""Multi-agent rollout throughput: pufferrs Serial and Multiprocessing on
PettingZoo envs against SuperSuit's ``concat_vec_envs_v1`` over
``pettingzoo_env_to_vec_env_v1`` (one process, and two) and a plain
PettingZoo loop, on the same envs with the same number of envs, in one run.

Prints agent steps per second (env steps times agents per env: every agent
acts at every step here), medians of repeats, the ratio of each to the
plain loop and to SuperSuit's one- and two-process paths, and the spread of
the repeats (slowest and fastest over the median).

    python benches/bench_multiagent.py [--kaz-envs 4] [--rendezvous-envs 32] [--repeats 5] [--seconds 1.0]

Envs:

- knights_archers_zombies (vector observations, 4 agents of 27x5 float64)
  with ``killable_knights=False, killable_archers=False``: SuperSuit's path
  requires every agent to be present for the whole episode (its
  ``black_death_v3`` never ends an episode that ends by terminations), so
  the agents do not die here; episodes end when a zombie reaches the wall.
- :class:`pufferrs.multiagent_envs.Rendezvous` (3 agents, a step of a few
  microseconds: the vector env's own cost shows) with ``leave_prob=0`` for
  the same reason.

A last row, "two plain loops in two processes", is the machine's ceiling
for any two-process backend: two independent plain loops of half the envs
each, free-running, their rates summed. No backend can pass it; how close
each comes shows its own cost, apart from how well this machine runs two
copies of the env at once.

Actions are drawn uniformly once, before timing, and replayed. Each run is
warmed up, then timed for about ``--seconds``.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import pufferrs.vector as pv
from pufferrs.multiagent_envs import Rendezvous

ACTION_TABLE = 64
#: SuperSuit is a peer, not a dependency: without it its rows are left out.
HAVE_SUPERSUIT = importlib.util.find_spec("supersuit") is not None
CEILING = "two plain loops in two processes"


def kaz() -> Any:
    import pettingzoo

    return pettingzoo.make(
        "parallel", "butterfly/knights_archers_zombies-v11", killable_knights=False, killable_archers=False
    )


def rendezvous() -> Any:
    return Rendezvous(leave_prob=0.0)


def timed(step: Callable[[], Any], seconds: float) -> float:
    """Seconds per call of ``step``: warmed up, then timed for about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 5 or calls < 3:
        step()
        calls += 1
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def plain_loop(creator: Callable[[], Any], num_envs: int, actions: np.ndarray) -> tuple[Callable[[], Any], Any]:
    """Steps ``num_envs`` PettingZoo envs one after the other, resetting
    each when its agents are gone: what a user writes without a vector env."""
    envs = [creator() for _ in range(num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    agents = envs[0].possible_agents
    A = len(agents)
    t = [0]

    def step() -> None:
        row = actions[t[0] % ACTION_TABLE]
        t[0] += 1
        for e, env in enumerate(envs):
            env.step({a: row[e * A + k] for k, a in enumerate(agents) if a in env.agents})
            if not env.agents:
                env.reset()

    return step, lambda: [env.close() for env in envs]


def _plain_rate(creator: Callable[[], Any], num_envs: int, agents: int, actions: np.ndarray, seconds: float) -> float:
    step, close = plain_loop(creator, num_envs, actions)
    try:
        return num_envs * agents / timed(step, seconds)
    finally:
        close()


def two_plain_loops(
    creator: Callable[[], Any], num_envs: int, agents: int, actions: np.ndarray, seconds: float
) -> float:
    """Agent steps/s of two plain loops of ``num_envs / 2`` envs each, run
    at once in two processes: the ceiling of any two-process backend."""
    half = num_envs // 2
    with multiprocessing.get_context("fork").Pool(2) as pool:
        rates = pool.starmap(_plain_rate, [(creator, half, agents, actions, seconds)] * 2)
    return sum(rates)


def supersuit(creator: Callable[[], Any], num_envs: int, cpus: int, actions: np.ndarray) -> tuple[Any, Any]:
    import supersuit as ss

    venv = ss.concat_vec_envs_v1(
        ss.pettingzoo_env_to_vec_env_v1(creator()), num_envs, num_cpus=cpus, base_class="gymnasium"
    )
    venv.reset(seed=0)
    t = [0]

    def step() -> None:
        venv.step(actions[t[0] % ACTION_TABLE])
        t[0] += 1

    return step, venv.close


def pufferrs_env(
    creator: Callable[[], Any], num_envs: int, backend: str, actions: np.ndarray, batches: int = 1
) -> tuple[Any, Any]:
    """A pufferrs vector env; with ``batches > 1``, asynchronous batches of
    ``num_envs / batches`` envs (each ``recv`` takes the workers that are
    ready), stepped ``batches`` times per call so that a call is still one
    step of every env."""
    kwargs = {"num_workers": 2} if backend == "multiprocessing" else {}
    envs = pv.make(creator, num_envs, backend=backend, seed=0, batch_size=num_envs // batches, **kwargs)
    envs.reset()
    rows = envs.num_agents // batches
    t = [0]

    def step() -> None:
        for _ in range(batches):
            envs.send(actions[t[0] % ACTION_TABLE][:rows])
            envs.recv()
            t[0] += 1

    return step, envs.close


def bench(name: str, creator: Callable[[], Any], num_envs: int, repeats: int, seconds: float) -> None:
    probe = creator()
    A = len(probe.possible_agents)
    n = probe.action_space(probe.possible_agents[0]).n
    probe.close()
    actions = np.random.default_rng(0).integers(0, n, (ACTION_TABLE, num_envs * A))
    runs: dict[str, Callable[[], tuple[Any, Any]]] = {
        "plain PettingZoo loop": lambda: plain_loop(creator, num_envs, actions),
        "SuperSuit, 1 process": lambda: supersuit(creator, num_envs, 1, actions),
        "SuperSuit, 2 processes": lambda: supersuit(creator, num_envs, 2, actions),
        "pufferrs Serial": lambda: pufferrs_env(creator, num_envs, "serial", actions),
        "pufferrs Multiprocessing, 2 workers": lambda: pufferrs_env(creator, num_envs, "multiprocessing", actions),
        "pufferrs Multiprocessing, async halves": lambda: pufferrs_env(
            creator, num_envs, "multiprocessing", actions, batches=2
        ),
    }
    if not HAVE_SUPERSUIT:
        del runs["SuperSuit, 1 process"], runs["SuperSuit, 2 processes"]
    rates: dict[str, list[float]] = {label: [] for label in [*runs, CEILING]}
    for _ in range(repeats):
        # Interleaved, so that a noisy moment of the machine hits all of them.
        for label, make in runs.items():
            step, close = make()
            try:
                rates[label].append(num_envs * A / timed(step, seconds))
            finally:
                close()
        rates[CEILING].append(two_plain_loops(creator, num_envs, A, actions, seconds))
    median = {label: statistics.median(r) for label, r in rates.items()}
    peers = {"plain loop": median["plain PettingZoo loop"]}
    if HAVE_SUPERSUIT:
        peers["SuperSuit 1p"] = median["SuperSuit, 1 process"]
        peers["SuperSuit 2p"] = median["SuperSuit, 2 processes"]
    print(f"\n{name}: {num_envs} envs x {A} agents, median of {repeats} runs of {seconds:g} s")
    print(f"{'':36} {'agent steps/s':>14}" + "".join(f" {'vs ' + peer:>16}" for peer in peers) + f" {'spread':>10}")
    for label, r in rates.items():
        ratios = "".join(f" {median[label] / rate:15.2f}x" for rate in peers.values())
        spread = f"{min(r) / median[label]:.2f}-{max(r) / median[label]:.2f}"
        print(f"{label:36} {median[label]:14,.0f}{ratios} {spread:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kaz-envs", type=int, default=4)
    parser.add_argument("--rendezvous-envs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--only", choices=["kaz", "rendezvous"])
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not HAVE_SUPERSUIT:
        print("SuperSuit is not installed: its rows are left out (pip install supersuit)")
    if args.only in (None, "kaz"):
        bench("knights_archers_zombies (vector observations)", kaz, args.kaz_envs, args.repeats, args.seconds)
    if args.only in (None, "rendezvous"):
        bench("Rendezvous (built-in)", rendezvous, args.rendezvous_envs, args.repeats, args.seconds)


if __name__ == "__main__":
    main()
