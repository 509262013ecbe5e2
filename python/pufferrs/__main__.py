"""``python -m pufferrs`` (or ``pufferrs``): a tour on the built-in reference
space — its layout, a flatten/unflatten round trip, and a benchmark summary."""

from __future__ import annotations

import argparse

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
    back = layout.unflatten(row)
    same = all(
        np.array_equal(a, b)
        for a, b in [
            (obs["image"], back["image"]),
            (obs["vector"], back["vector"]),
            (obs["inv"]["items"], back["inv"]["items"]),
            (obs["inv"]["hp"], back["inv"]["hp"]),
            (obs["tuple"][0], back["tuple"][0]),
            (obs["tuple"][1], back["tuple"][1]),
        ]
    )
    print(f"flatten -> row of {row.nbytes} bytes ({row.dtype}); unflatten -> bit-exact round trip: {same}")
    print(f"emulated observation space: {layout.observation_space}\n")

    print("benchmark (this machine, same run):")
    print(format_table(flatten_rows(quick=quick)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pufferrs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter, noisier benchmark")
    args = parser.parse_args(argv)
    demo(args.quick)


if __name__ == "__main__":
    main()
