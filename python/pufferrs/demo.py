"""``pufferrs demo``: a tour of flat rows on the reference nested space.

The reference space is also the one tests and ``benches/`` measure on, so
that the figures in the docs' benchmarks page and the demo describe the
same rows. Timings beside peers (gymnasium, a numpy structured-dtype
packer) live in ``benches/bench_flatten.py``, not in the package.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

import gymnasium.spaces as gs
import numpy as np

from pufferrs.spaces import Layout

__all__ = ["demo", "reference_space"]


def reference_space() -> gs.Dict:
    """A nested space of about 12.5 KB a row: an image, a float vector, a
    nested ``Dict`` of discrete leaves and a ``Tuple``."""
    return gs.Dict(
        image=gs.Box(0, 255, (3, 64, 64), np.uint8),
        vector=gs.Box(-1, 1, (32,), np.float32),
        inv=gs.Dict(items=gs.MultiDiscrete([10] * 8), hp=gs.Discrete(100)),
        tuple=gs.Tuple((gs.Box(-1, 1, (4,), np.float32), gs.Discrete(5))),
    )


def demo(quick: bool = False) -> None:
    """Prints the reference space's layout, a bit-exact round trip and
    pufferrs's flatten/unflatten times on this machine."""
    space = reference_space()
    space.seed(0)
    print(f"space: {space}\n")
    layout = Layout(space)
    print(f"{layout}\n")

    obs = space.sample()
    row = layout.flatten(obs)
    same = _bit_exact(layout.unflatten(row), obs)
    print(f"flatten -> row of {row.nbytes} bytes ({row.dtype}); unflatten -> bit-exact round trip: {same}")
    print(f"emulated observation space: {layout.observation_space}\n")

    print("time per call (this machine, median of repeats; peers: benches/bench_flatten.py):")
    for operation, us in _timings(space, layout, quick):
        print(f"  {operation:<32} {us:10.2f} µs")


def _timings(space: gs.Dict, layout: Layout, quick: bool) -> list[tuple[str, float]]:
    scale = 0.1 if quick else 1.0

    def median_us(fn: Callable[[], Any], number: int) -> float:
        number = max(1, int(number * scale))
        fn()  # warm caches and lazy initialisation
        return statistics.median(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    obs = space.sample()
    row = np.zeros(layout.row_bytes, np.uint8)
    batch = [space.sample() for _ in range(1024)]
    rows = layout.flatten_batch(batch)
    timings = [
        ("flatten 1 obs", median_us(lambda: layout.flatten_into(obs, row), 20000)),
        ("flatten batch of 1024", median_us(lambda: layout.flatten_batch(batch), 50)),
        ("numpy unflatten (1024, row)", median_us(lambda: layout.unflatten(rows), 20000)),
    ]
    try:
        import torch
    except ImportError:  # torch is optional for flat rows
        return timings
    from pufferrs.pytorch import unflatten

    x = torch.from_numpy(rows)
    timings.append(("torch unflatten (1024, row), cpu", median_us(lambda: unflatten(x, layout), 20000)))
    return timings


def _bit_exact(a: Any, b: Any) -> bool:
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_bit_exact(a[k], b[k]) for k in b)
    if isinstance(b, tuple):
        return len(a) == len(b) and all(map(_bit_exact, a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
