"""GAE: the Rust kernel against rlox's, the loop of torch ops the trainer
ran before it, and a numpy loop vectorised over envs.

    python benches/bench_gae.py [--repeats 15] [--seconds 0.1] [--rlox-threads N]

Shapes are ``(N envs, T steps)``, float32, with 1% terminal and 1%
truncated steps (final values given). Each contender is timed in rounds
that alternate between them (one block of calls of each per round), and
the table gives the median time per call over the rounds, then the ratios
of the others' times to Rust's: above 1 means Rust is faster. Rust runs as
``pufferrs.advantages.compute_advantages`` on numpy arrays, and on CPU
torch tensors as the trainer calls it; every result is checked against the
old loop (same numbers up to float32 rounding: the kernel sums in float64).

rlox (when it imports) is ``rlox.compute_gae_batched_f32(rewards, values,
dones, last_values, n_steps, gamma, lam)``: flat ``(N * T,)`` float32
arrays, one float32 done flag (here terminal or truncated: rlox has no
truncation bootstrap and no masks), ``last_values`` ``(N,)``. It copies its
four inputs, releases the GIL, computes in float32 over rayon's threads
(all cores unless ``--rlox-threads`` or ``RAYON_NUM_THREADS`` says
otherwise) and returns two new arrays, advantages and returns. pufferrs
reads its inputs in place, computes in float64 on the calling thread and
returns one new array. Both sides get their inputs prepared once, outside
the timing; both allocate their outputs in every call. On steps with no
truncation the two compute the same advantages, which the bench checks.

A second table times the kernel with multi-agent masks against none.

On CUDA (when present) a last table: the old loop on the GPU (T x 10 small
kernels) against the kernel fed through page-locked memory, with the bytes
that cross each way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pufferrs.advantages import compute_advantages

#: The sizes of rlox's comparison (issue 22): the trainer's usual ones first.
SHAPES = [(64, 128), (8, 2048), (1024, 128), (4096, 64)]


def old_loop(
    values: torch.Tensor,
    bootstrap: torch.Tensor,
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    final_values: torch.Tensor,
) -> torch.Tensor:
    """The trainer's GAE before the kernel, with the final-value bootstrap
    added (one more ``where``) so that it computes the same thing."""
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(bootstrap)
    next_values = bootstrap
    for t in reversed(range(values.shape[1])):
        terminal = terminals[:, t]
        truncated = truncations[:, t] & ~terminal
        future = torch.where(truncated, final_values[:, t], next_values) * (~terminal)
        delta = rewards[:, t] + gamma * future - values[:, t]
        last = delta + gamma * gae_lambda * (~(terminal | truncated)) * last
        advantages[:, t] = last
        next_values = values[:, t]
    return advantages


def numpy_loop(
    values: np.ndarray,
    bootstrap: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    truncations: np.ndarray,
    gamma: float,
    gae_lambda: float,
    final_values: np.ndarray,
) -> np.ndarray:
    """The same recursion as numpy operations over the envs, step by step."""
    advantages = np.zeros_like(values)
    last = np.zeros_like(bootstrap)
    next_values = bootstrap
    ongoing = ~(terminals | truncations)
    truncated = truncations & ~terminals
    for t in range(values.shape[1] - 1, -1, -1):
        future = np.where(truncated[:, t], final_values[:, t], next_values) * ~terminals[:, t]
        last = rewards[:, t] + gamma * future - values[:, t] + gamma * gae_lambda * ongoing[:, t] * last
        advantages[:, t] = last
        next_values = values[:, t]
    return advantages


def case(n: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "values": rng.normal(size=(n, t)).astype(np.float32),
        "bootstrap": rng.normal(size=n).astype(np.float32),
        "rewards": rng.normal(size=(n, t)).astype(np.float32),
        "terminals": rng.random((n, t)) < 0.01,
        "truncations": rng.random((n, t)) < 0.01,
        "final_values": rng.normal(size=(n, t)).astype(np.float32),
    }


def calls_per_block(call: Callable[[], Any], seconds: float, sync: Callable[[], None]) -> int:
    """How many calls of ``call`` take about ``seconds`` (at least 3)."""
    call()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 4 or calls < 2:
        call()
        calls += 1
    sync()
    return max(3, int(calls * seconds / max(time.perf_counter() - start, 1e-9)))


def interleaved(
    calls: dict[str, Callable[[], Any]], seconds: float, repeats: int, sync: Callable[[], None]
) -> dict[str, float]:
    """The median seconds per call of each of ``calls``, timed in
    ``repeats`` rounds of one block of about ``seconds`` of each: a machine
    that slows down for a while slows them all alike."""
    counts = {name: calls_per_block(call, seconds, sync) for name, call in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            sync()
            times[name].append((time.perf_counter() - start) / counts[name])
    return {name: statistics.median(t) for name, t in times.items()}


def args_of(arrays: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    names = ("values", "bootstrap", "rewards", "terminals", "truncations")
    return [arrays[k] for k in names], {"final_values": arrays["final_values"]}


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:9.1f} us"


def rlox_call(arrays: dict[str, np.ndarray], gamma: float, lam: float) -> Callable[[], Any] | None:
    """rlox's batched float32 GAE on the same steps, or None without rlox.
    It knows one done flag and no truncation bootstrap: a peer for the time
    of the same recursion, and for its numbers where nothing is truncated."""
    try:
        import rlox
    except ImportError:
        return None
    n, t = arrays["values"].shape
    rewards, values = arrays["rewards"].ravel(), arrays["values"].ravel()
    dones = (arrays["terminals"] | arrays["truncations"]).ravel().astype(np.float32)
    bootstrap = arrays["bootstrap"]
    return lambda: rlox.compute_gae_batched_f32(rewards, values, dones, bootstrap, t, gamma, lam)


def rlox_agrees(gamma: float, lam: float) -> float | None:
    """The largest difference between rlox's advantages and pufferrs's on
    steps with terminals and no truncations (where the two compute the
    same thing), or None without rlox."""
    arrays = case(64, 128, seed=1)
    arrays["truncations"][:] = False
    peer = rlox_call(arrays, gamma, lam)
    if peer is None:
        return None
    theirs = peer()[0].reshape(64, 128)
    np_args, _ = args_of(arrays)
    return float(np.abs(compute_advantages(*np_args, gamma, lam) - theirs).max())


def cpu_table(args: argparse.Namespace) -> None:
    print(
        f"{'N x T':<10} {'old torch loop':>14} {'numpy loop':>14} {'Rust (numpy)':>14} {'Rust (torch)':>14} {'rlox':>12}"
        f" {'old/Rust':>9} {'numpy/Rust':>11} {'rlox/Rust':>10} {'rlox/Rust(torch)':>17} {'max |diff|':>11}"
    )
    nothing = lambda: None  # noqa: E731 - no device to wait for
    gamma, lam = 0.99, 0.95
    for n, t in SHAPES:
        arrays = case(n, t)
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        np_args, np_kw = args_of(arrays)
        t_args, t_kw = args_of(tensors)
        calls = {
            "old": lambda: old_loop(*t_args, gamma, lam, **t_kw),
            "numpy": lambda: numpy_loop(*np_args, gamma, lam, **np_kw),
            "rust": lambda: compute_advantages(*np_args, gamma, lam, **np_kw),
            "rust_torch": lambda: compute_advantages(*t_args, gamma, lam, **t_kw),
        }
        peer = rlox_call(arrays, gamma, lam)
        if peer is not None:
            calls["rlox"] = peer
        times = interleaved(calls, args.seconds, args.repeats, nothing)
        expected = old_loop(*t_args, gamma, lam, **t_kw).numpy()
        diff = max(
            np.abs(compute_advantages(*np_args, gamma, lam, **np_kw) - expected).max(),
            np.abs(compute_advantages(*t_args, gamma, lam, **t_kw).numpy() - expected).max(),
            np.abs(numpy_loop(*np_args, gamma, lam, **np_kw) - expected).max(),
        )
        rlox_time = fmt(times["rlox"]) if "rlox" in times else "-"
        rlox_ratio = f"{times['rlox'] / times['rust']:.2f}x" if "rlox" in times else "-"
        rlox_torch = f"{times['rlox'] / times['rust_torch']:.2f}x" if "rlox" in times else "-"
        print(
            f"{f'{n} x {t}':<10} {fmt(times['old']):>14} {fmt(times['numpy']):>14} {fmt(times['rust']):>14} "
            f"{fmt(times['rust_torch']):>14} {rlox_time:>12} {times['old'] / times['rust']:>8.0f}x "
            f"{times['numpy'] / times['rust']:>10.1f}x {rlox_ratio:>10} {rlox_torch:>17} {diff:>11.1e}"
        )


def masks_table(args: argparse.Namespace) -> None:
    """Multi-agent rows: the kernel with masks (every step acting, and half
    of them masked, folded into the acting steps) against none."""
    print("\n# with masks (multi-agent rows): Rust on numpy arrays")
    print(f"{'N x T':<10} {'no masks':>12} {'all acting':>12} {'half masked':>12} {'all/none':>9} {'half/none':>10}")
    nothing = lambda: None  # noqa: E731 - no device to wait for
    gamma, lam = 0.99, 0.95
    for n, t in SHAPES:
        arrays = case(n, t)
        np_args, np_kw = args_of(arrays)
        half = np.random.default_rng(1).random((n, t)) < 0.5
        calls = {
            str(i): lambda m=m: compute_advantages(*np_args, gamma, lam, **np_kw, masks=m)
            for i, m in enumerate((None, np.ones((n, t), bool), half))
        }
        times = list(interleaved(calls, args.seconds, args.repeats, nothing).values())
        print(
            f"{f'{n} x {t}':<10} {fmt(times[0]):>12} {fmt(times[1]):>12} {fmt(times[2]):>12} "
            f"{times[1] / times[0]:>8.2f}x {times[2] / times[0]:>9.2f}x"
        )


def cuda_table(args: argparse.Namespace) -> None:
    device = torch.device("cuda")
    sync = torch.cuda.synchronize
    print(f"\n# on {torch.cuda.get_device_name(device)}: values on the GPU, flags and rewards on the host")
    print(
        f"{'N x T':<10} {'old loop (GPU)':>14} {'Rust via pinned':>16} {'ratio':>7} {'bytes down':>11} {'bytes up':>9}"
    )
    gamma, lam = 0.99, 0.95
    for n, t in SHAPES:
        arrays = case(n, t)
        on_gpu = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
        g_args, g_kw = args_of(on_gpu)
        # As the trainer holds them: values on the device, the rest where the
        # rollout wrote them.
        mixed = {k: torch.from_numpy(v) for k, v in arrays.items()}
        mixed["values"], mixed["bootstrap"], mixed["final_values"] = (
            on_gpu["values"],
            on_gpu["bootstrap"],
            on_gpu["final_values"],
        )
        m_args, m_kw = args_of(mixed)
        times = interleaved(
            {
                "old": lambda: old_loop(*g_args, gamma, lam, **g_kw),
                "rust": lambda: compute_advantages(*m_args, gamma, lam, **m_kw),
            },
            args.seconds,
            args.repeats,
            sync,
        )
        old, rust = times["old"], times["rust"]
        down = (2 * n * t + n) * 4
        print(f"{f'{n} x {t}':<10} {fmt(old):>14} {fmt(rust):>16} {old / rust:>6.0f}x {down:>11,} {n * t * 4:>9,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="rounds; the tables give medians over them")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one contender's block in a round")
    parser.add_argument(
        "--rlox-threads", type=int, default=None, help="rlox's rayon threads (default: RAYON_NUM_THREADS or all cores)"
    )
    args = parser.parse_args()
    if args.rlox_threads is not None:
        # Read by rayon when rlox first computes: rlox is imported after this.
        os.environ["RAYON_NUM_THREADS"] = str(args.rlox_threads)
    torch.set_num_threads(1)  # as `pufferrs train` runs
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# {cpus} CPUs, load average {load()}, python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"numpy {np.__version__}; medians of {args.repeats} interleaved rounds of ~{args.seconds:g} s per contender, "
        "one torch thread"
    )
    agreement = rlox_agrees(0.99, 0.95)
    if agreement is None:
        print("# rlox: not installed, not measured")
    else:
        import rlox

        threads = os.environ.get("RAYON_NUM_THREADS", f"all {cpus} cores")
        print(
            f"# rlox {getattr(rlox, '__version__', '?')}: compute_gae_batched_f32 (float32, rayon threads: {threads}), "
            f"done = terminal or truncated (it has no truncation bootstrap); without truncations its advantages "
            f"are pufferrs's to {agreement:.1e}"
        )
    cpu_table(args)
    masks_table(args)
    if torch.cuda.is_available():
        cuda_table(args)
    else:
        print("# CUDA: no device, the pinned-memory round trip is not measured")
    print(f"# load average at the end {load()}")


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


if __name__ == "__main__":
    main()
