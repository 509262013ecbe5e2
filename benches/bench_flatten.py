"""flatten / unflatten on the reference space: pufferrs against gymnasium
and a numpy structured-dtype packer. Prints one table of medians (µs).

    python benches/bench_flatten.py [--quick] [--cuda]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

from pufferrs.benchmarks import flatten_rows, format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls per measurement")
    parser.add_argument("--cuda", action="store_true", help="also time torch unflatten on the GPU")
    args = parser.parse_args()
    devices = ("cpu", "cuda") if args.cuda else ("cpu",)
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if args.cuda else "")
    )
    print(format_table(flatten_rows(quick=args.quick, torch_devices=devices)))


if __name__ == "__main__":
    main()
