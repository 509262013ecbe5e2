"""Two ranks against one: ``torchrun --nproc-per-node 2 -m pufferrs train``
against ``python -m pufferrs train`` with the same command line (so the
same total envs, batch, minibatches and env steps: the config's counts are
the run's totals, split over the ranks; see pufferrs.distributed).

    python benches/bench_distributed.py [--envs CartPole-v1,pufferrs/Nested-v0] [--repeats 2]
                                        [--steps-scale 1.0] [--quick]

Every run uses the env's preset, the serial backend and one torch thread
per process (``--torch-threads 1``, ``OMP_NUM_THREADS=1``), so that one rank
uses one core and two ranks two. The runs are interleaved (1 rank, 2 ranks,
1 rank, ...), each a fresh process, with the same seed.

Columns: the total envs; steps/s of the training loop (``summary.json``'s ``sps``: env
steps of every rank over rank 0's training time, process start-up left
out), median over the repeats; the ratio of 2 ranks over 1; rank 0's
seconds in envs (recv and send), inference and learning (all-reduces
included); the mean
episode return of the update at half the steps and of the last 5 updates
(mean over repeats), which the two runs reach at the same env step counts
since both take ``batch_size`` steps per update. The load average is
printed before and after: on a shared machine the ratio is only as good as
the cores the two ranks actually got.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pufferrs.presets import PRESETS


def run(env: str, ranks: int, steps: int, run_dir: Path, sizes: list[str]) -> dict[str, Any]:
    """One training run; its summary and metrics rows."""
    train = [
        "-m",
        "pufferrs",
        "train",
        env,
        *sizes,
        "--total-steps",
        str(steps),
        "--backend",
        "serial",
        "--torch-threads",
        "1",
        "--device",
        "cpu",
        "--checkpoint-interval",
        "0",
        "--run-dir",
        str(run_dir),
        "--plain",
    ]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [sys.executable, *(launcher if ranks > 1 else []), *train]
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env_vars, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    config = (run_dir / "config.json").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary, "rows": rows, "config": config}


def mean_return(rows: list[dict[str, Any]]) -> float | None:
    """The mean episode return of ``rows``, weighted by their episodes."""
    total = count = 0.0
    for row in rows:
        if "env/episode_return" in row:
            total += row["env/episode_return"] * row["env/episodes"]
            count += row["env/episodes"]
    return total / count if count else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="CartPole-v1,pufferrs/Nested-v0")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="times each preset's total_steps")
    parser.add_argument(
        "--num-envs", type=int, help="total envs (default: the preset's), with the preset's steps per env per update"
    )
    parser.add_argument("--quick", action="store_true", help="CartPole-v1, two updates, one repeat (a smoke run)")
    args = parser.parse_args()
    envs = args.envs.split(",")
    if args.quick:
        envs, args.repeats = ["CartPole-v1"], 1

    load_before = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env in envs:
            preset = PRESETS.get(env, {})
            sizes, batch = [], preset.get("batch_size", 2048)
            if args.num_envs:
                batch = args.num_envs * batch // preset.get("num_envs", 16)
                sizes = ["--num-envs", str(args.num_envs), "--batch-size", str(batch)]
            steps = 2 * batch if args.quick else int(preset["total_steps"] * args.steps_scale)
            for repeat in range(args.repeats):
                for ranks in (1, 2):
                    run_dir = Path(tmp) / f"{env.replace('/', '_')}-{ranks}-{repeat}"
                    start = time.perf_counter()
                    result = run(env, ranks, steps, run_dir, sizes)
                    result["wall"] = time.perf_counter() - start
                    results.setdefault((env, ranks), []).append(result)
                    print(
                        f"  {env} ranks={ranks} repeat={repeat}: {result['summary']['sps']:,.0f} steps/s, "
                        f"{result['wall']:.1f} s with start-up",
                        flush=True,
                    )
    load_after = os.getloadavg()

    print()
    print(
        f"{'env':<22} {'envs':>5} {'ranks':>5} {'steps':>8} {'steps/s':>9} {'ratio':>6} "
        f"{'env s':>6} {'infer s':>7} {'learn s':>7} {'return @1/2':>12} {'return end':>11}"
    )
    for env in envs:
        base = statistics.median(r["summary"]["sps"] for r in results[(env, 1)])
        for ranks in (1, 2):
            runs = results[(env, ranks)]
            sps = statistics.median(r["summary"]["sps"] for r in runs)
            half = [mean_return([r["rows"][len(r["rows"]) // 2 - 1]]) for r in runs]
            end = [mean_return(r["rows"][-5:]) for r in runs]
            half_mean = (
                statistics.mean([h for h in half if h is not None]) if any(h is not None for h in half) else None
            )
            end_mean = statistics.mean([e for e in end if e is not None]) if any(e is not None for e in end) else None
            split = [statistics.median(r["summary"][f"perf/{k}"] for r in runs) for k in ("env", "inference", "learn")]
            envs_count = json.loads(runs[0]["config"]).get("num_envs")
            print(
                f"{env:<22} {envs_count:>5} {ranks:>5} {runs[0]['summary']['global_step']:>8,} {sps:>9,.0f} "
                f"{sps / base:>6.2f} {split[0]:>6.1f} {split[1]:>7.1f} {split[2]:>7.1f} "
                f"{fmt(half_mean):>12} {fmt(end_mean):>11}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")


if __name__ == "__main__":
    main()
