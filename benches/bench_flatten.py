"""flatten / unflatten on the reference space: pufferrs against gymnasium
and a numpy structured-dtype packer (the technique PufferLib's emulation
uses, written here). Prints one table of medians (µs), all measured in the
same run.

    python benches/bench_flatten.py [--quick] [--cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium.spaces as gs
import numpy as np

from pufferrs.demo import reference_space
from pufferrs.spaces import Layout


def median_us(fn: Callable[[], Any], number: int, repeats: int = 7) -> float:
    """Median over ``repeats`` of the mean time of ``number`` calls, in µs."""
    fn()  # warm caches and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        times.append((time.perf_counter_ns() - start) / number / 1e3)
    return statistics.median(times)


class StructuredPacker:
    """Flat rows through a numpy structured dtype (``align=True``): assign
    each leaf into its field, and view rows back field by field."""

    def __init__(self, space: gs.Space):
        self.space = space
        self.dtype = _struct_dtype(space)

    def flatten_into(self, obs: Any, row: np.ndarray) -> None:
        _assign(row.view(self.dtype), self.space, obs)

    def unflatten(self, rows: np.ndarray) -> Any:
        return _fields(rows.view(self.dtype)[..., 0], self.space)


def _struct_dtype(space: gs.Space) -> np.dtype:
    if isinstance(space, gs.Dict):
        return np.dtype([(k, _struct_dtype(s)) for k, s in space.spaces.items()], align=True)
    if isinstance(space, gs.Tuple):
        return np.dtype([(f"f{i}", _struct_dtype(s)) for i, s in enumerate(space.spaces)], align=True)
    return np.dtype((space.dtype, space.shape))


def _assign(struct: Any, space: gs.Space, value: Any) -> None:
    if isinstance(space, gs.Dict):
        for key, sub in space.spaces.items():
            _assign(struct[key], sub, value[key])
    elif isinstance(space, gs.Tuple):
        for i, sub in enumerate(space.spaces):
            _assign(struct[f"f{i}"], sub, value[i])
    else:
        struct[...] = value


def _fields(struct: np.ndarray, space: gs.Space) -> Any:
    if isinstance(space, gs.Dict):
        return {key: _fields(struct[key], sub) for key, sub in space.spaces.items()}
    if isinstance(space, gs.Tuple):
        return tuple(_fields(struct[f"f{i}"], sub) for i, sub in enumerate(space.spaces))
    return struct


def flatten_rows(quick: bool = False, torch_devices: tuple[str, ...] = ("cpu",)) -> list[tuple[str, dict[str, float]]]:
    """Times flatten/unflatten on the reference space.

    Returns ``(operation, {implementation: µs})`` rows; implementations a
    peer lacks are left out. ``quick`` trades precision for a short run.
    """
    space = reference_space()
    space.seed(0)
    layout = Layout(space)
    packer = StructuredPacker(space)
    scale = 0.1 if quick else 1.0

    def n(count: int) -> int:
        return max(1, int(count * scale))

    obs = space.sample()
    row = np.zeros(layout.row_bytes, np.uint8)
    flat = gs.flatten(space, obs)
    batch = [space.sample() for _ in range(1024)]
    rows = layout.flatten_batch(batch)

    def packer_batch() -> None:
        out = np.zeros((len(batch), layout.row_bytes), np.uint8)
        for i, o in enumerate(batch):
            packer.flatten_into(o, out[i])

    table = [
        (
            "flatten 1 obs",
            {
                "pufferrs": median_us(lambda: layout.flatten_into(obs, row), n(20000)),
                "structured numpy": median_us(lambda: packer.flatten_into(obs, row), n(5000)),
                "gymnasium": median_us(lambda: gs.flatten(space, obs), n(2000)),
            },
        ),
        (
            "flatten batch of 1024",
            {
                "pufferrs": median_us(lambda: layout.flatten_batch(batch), n(50), 5),
                "structured numpy": median_us(packer_batch, n(5), 5),
                "gymnasium": median_us(lambda: np.stack([gs.flatten(space, o) for o in batch]), n(3), 3),
            },
        ),
        (
            "numpy unflatten (1024, row)",
            {
                "pufferrs": median_us(lambda: layout.unflatten(rows), n(20000)),
                "structured numpy": median_us(lambda: packer.unflatten(rows), n(5000)),
                # gymnasium has no batched unflatten: one call per row.
                "gymnasium": median_us(lambda: [gs.unflatten(space, flat) for _ in range(1024)], 1, 3),
            },
        ),
    ]
    try:
        import torch
    except ImportError:
        return table
    from pufferrs.pytorch import unflatten

    for device in torch_devices:
        x = torch.from_numpy(rows).to(device)
        table.append(
            (
                f"torch unflatten (1024, row), {device}",
                {
                    "pufferrs": median_us(lambda: unflatten(x, layout), n(20000)),
                    "slice+view per leaf": median_us(lambda: _slice_view_unflatten(x, layout), n(5000)),
                },
            )
        )
        with torch.inference_mode():
            table.append(
                (
                    f"  same, in inference_mode, {device}",
                    {
                        "pufferrs": median_us(lambda: unflatten(x, layout), n(20000)),
                        "slice+view per leaf": median_us(lambda: _slice_view_unflatten(x, layout), n(5000)),
                    },
                )
            )
    return table


def _slice_view_unflatten(x: Any, layout: Layout) -> dict:
    """The straightforward torch unflatten: per leaf, slice its bytes, view
    them as its dtype, reshape (what hand-written policies do)."""
    import torch

    lead = x.shape[:-1]
    views = {}
    for leaf in layout.leaves:
        dtype = getattr(torch, leaf.dtype.name)
        chunk = x[..., leaf.offset : leaf.offset + leaf.nbytes].view(dtype)
        views[leaf.path] = chunk.view(*lead, *leaf.shape)
    return views


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A plain-text table: µs per implementation and pufferrs's speedup over
    the fastest peer."""
    peers = list(dict.fromkeys(name for _, times in rows for name in times if name != "pufferrs"))
    header = ["operation (µs, median)", "pufferrs", *peers, "speedup vs best peer"]
    lines = []
    for op, times in rows:
        best_peer = min(t for name, t in times.items() if name != "pufferrs")
        cells = [op, f"{times['pufferrs']:.2f}"]
        cells += [f"{times[p]:.2f}" if p in times else "-" for p in peers]
        cells.append(f"{best_peer / times['pufferrs']:.1f}x")
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


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
