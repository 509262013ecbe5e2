"""One LSTM rollout step: pufferrs's LSTMWrapper.forward_eval against the two
ways of running a single step in plain PyTorch.

Peers, measured in the same run on the same weights and inputs:

- ``nn.LSTM`` called on a length-1 sequence (cuDNN on a GPU);
- ``nn.LSTMCell`` (PufferLib's rollout path; its docs claim 3x over the LSTM).

pufferrs's ``forward_eval`` runs whichever of the two it measured faster for
the batch (``eval_path="auto"``), plus its own overhead: the state dict, the
episode-start handling, and the policy's encode/decode. The wrapped policy
here passes features straight through, so the table isolates the LSTM step
and the wrapper's cost. Every figure is the median over repeats, repeats
interleaved across the three so that load on the machine hits all alike.

    python benches/bench_policy.py                      # CPU here, GPU when present
    python benches/bench_policy.py --device cuda --modes fp32,tf32,bf16
    python benches/bench_policy.py --hidden 128,256,512,1024 --batch 256,1024,4096,16384 --repeats 21
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn

from pufferrs.models import LSTMWrapper


class PassThrough(nn.Module):
    """A policy whose encoder and decoder cost (almost) nothing."""

    def __init__(self, width: int):
        super().__init__()
        self.hidden_size = self.output_size = width

    def encode_observations(self, observations: torch.Tensor, state: Any = None) -> torch.Tensor:
        return observations

    def decode_actions(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden, hidden[:, 0]


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32: strict float32 (no TF32); tf32: TF32 matmuls and cuDNN;
    bf16: autocast to bfloat16."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        if mode == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _then_sync(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    def synced() -> None:
        step()
        synchronize(device)

    return synced


def calls_per_repeat(step: Callable[[], None], device: torch.device, target_s: float) -> int:
    """How many calls make a repeat of about ``target_s`` (at least 1)."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return max(1, int(target_s / max(time.perf_counter() - start, 1e-7)))


def measure(
    steps: dict[str, Callable[[], None]], device: torch.device, repeats: int, target_s: float, sync_each: bool
) -> dict[str, float]:
    """Median seconds per call of each step. With ``sync_each`` every call is
    followed by a device sync, as in a rollout, where the actions go back to
    the envs after each step; without, calls queue up (throughput)."""
    if sync_each:
        steps = {name: _then_sync(step, device) for name, step in steps.items()}
    for step in steps.values():  # warm-up: lazy init, cuDNN plans, auto path choice
        step()
        step()
    numbers = {name: calls_per_repeat(step, device, target_s) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            number = numbers[name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(number):
                step()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_one(
    hidden: int, batch: int, mode: str, device: torch.device, repeats: int, target_s: float, sync_each: bool
) -> dict[str, Any]:
    torch.manual_seed(0)
    env = types.SimpleNamespace(
        single_observation_space=gs.Box(-1, 1, (hidden,), np.float32), single_action_space=gs.Discrete(2)
    )
    wrapper = LSTMWrapper(env, PassThrough(hidden), hidden, hidden).to(device)
    lstm, cell = wrapper.lstm, wrapper.cell
    x = torch.randn(batch, hidden, device=device)
    start_h, start_c = torch.zeros(batch, hidden, device=device), torch.zeros(batch, hidden, device=device)

    # Each peer carries its state from call to call, as a rollout does.
    lstm_state = [start_h[None], start_c[None]]
    cell_state = [start_h, start_c]
    wrapper_state: dict[str, Any] = {"lstm_h": start_h, "lstm_c": start_c}

    def lstm_step() -> None:
        _, (h, c) = lstm(x[:, None], (lstm_state[0], lstm_state[1]))
        lstm_state[:] = h, c

    def cell_step() -> None:
        cell_state[:] = cell(x, (cell_state[0], cell_state[1]))

    def pufferrs_step() -> None:
        wrapper.forward_eval(x, wrapper_state)

    with torch.no_grad(), precision(mode, device):
        result = measure(
            {"lstm": lstm_step, "cell": cell_step, "pufferrs": pufferrs_step}, device, repeats, target_s, sync_each
        )
    (path,) = set(wrapper.eval_path_choices.values())
    return {**result, "path": path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", default="128,512", help="comma-separated LSTM widths")
    parser.add_argument("--batch", default="1024,4096", help="comma-separated batch sizes")
    parser.add_argument("--modes", default=None, help="fp32,tf32,bf16 (default: fp32 on CPU, all three on CUDA)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per figure (median)")
    parser.add_argument("--repeat-seconds", type=float, default=0.05, help="target length of one repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="queue calls without a sync after each (default: sync each, as rollouts do)",
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = (args.modes or ("fp32,tf32,bf16" if device.type == "cuda" else "fp32")).split(",")
    hiddens = [int(v) for v in args.hidden.split(",")]
    batches = [int(v) for v in args.batch.split(",")]

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    print(f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads")
    timing = "calls queued, one sync per repeat" if args.throughput else "device sync after every call, as in rollouts"
    print(f"one step, no grad; {timing}; median time per call; ratios from the same run\n")
    header = [
        "mode",
        "hidden",
        "batch",
        "nn.LSTM ms",
        "LSTMCell ms",
        "pufferrs ms",
        "path",
        "cell vs LSTM",
        "pufferrs vs best",
    ]
    rows = []
    for mode in modes:
        for hidden in hiddens:
            for batch in batches:
                r = bench_one(hidden, batch, mode, device, args.repeats, args.repeat_seconds, not args.throughput)
                best = min(r["lstm"], r["cell"])
                rows.append(
                    [
                        mode,
                        str(hidden),
                        str(batch),
                        f"{r['lstm'] * 1e3:.3f}",
                        f"{r['cell'] * 1e3:.3f}",
                        f"{r['pufferrs'] * 1e3:.3f}",
                        r["path"],
                        # > 1: the cell is faster than the LSTM by that factor.
                        f"{r['lstm'] / r['cell']:.2f}x",
                        # <= 1: pufferrs is at least as fast as the faster peer.
                        f"{r['pufferrs'] / best:.2f}",
                    ]
                )
                print("  measured " + " ".join(rows[-1][:3]), flush=True)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(
            "| " + " | ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        )
    print("\ncell vs LSTM: nn.LSTM time / LSTMCell time (>1: the cell is faster).")
    print("pufferrs vs best: forward_eval time / the faster peer's time (<=1: at least as fast).")


if __name__ == "__main__":
    main()
