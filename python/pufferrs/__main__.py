"""``python -m pufferrs`` (or ``pufferrs``): a tour on the built-in reference
space — its layout, a flatten/unflatten round trip, and a benchmark summary."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from pufferrs.benchmarks import flatten_rows, format_table, reference_space
from pufferrs.spaces import Layout


def demo(quick: bool) -> None:
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

    print("benchmark (this machine, same run):")
    print(format_table(flatten_rows(quick=quick)))


def _bit_exact(a: Any, b: Any) -> bool:
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_bit_exact(a[k], b[k]) for k in b)
    if isinstance(b, tuple):
        return len(a) == len(b) and all(map(_bit_exact, a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pufferrs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter, noisier benchmark")
    args = parser.parse_args(argv)
    demo(args.quick)


if __name__ == "__main__":
    main()
