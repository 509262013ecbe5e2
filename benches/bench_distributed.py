"""Two ranks against one: ``torchrun --nproc-per-node 2 -m pufferrs train``
against ``python -m pufferrs train`` with the same command line (so the
same total envs, batch, minibatches and env steps: the config's counts are
the run's totals, split over the ranks; see pufferrs.distributed).

    python benches/bench_distributed.py [--envs CartPole-v1,pufferrs/Nested-v0] [--repeats 2]
                                        [--num-envs 8 64 256 512] [--steps-scale 1.0]
                                        [--min-updates 6] [--quick]

Every run uses the env's preset, the serial backend and one torch thread
per process (``--torch-threads 1``, ``OMP_NUM_THREADS=1``), so that one rank
uses one core and two ranks two. The runs are interleaved (1 rank, 2 ranks,
1 rank, ...), each a fresh process, with the same seed. ``--num-envs``
runs other totals of envs, keeping the preset's steps per env per update
and its number of minibatches, so that the batch and the minibatches grow
with the envs: ranks pay where a minibatch step's arithmetic outweighs the
collective after it, and that is what this shows.

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


def mean_of(values: list[float | None]) -> float | None:
    """The mean of the values that are there (None when none is)."""
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def sizes_for(preset: dict[str, Any], num_envs: int | None) -> tuple[list[str], int]:
    """The size options for ``num_envs`` envs in all (the preset's when
    None): the preset's steps per env per update and its number of
    minibatches, so that more envs mean larger minibatches, as a
    data-parallel run grows its batch. Returns them and the batch size."""
    batch = preset.get("batch_size", 2048)
    if num_envs is None:
        return [], batch
    scale = num_envs / preset.get("num_envs", 16)
    batch = int(batch * scale)
    minibatch = int(preset.get("minibatch_size", batch) * scale)
    return ["--num-envs", str(num_envs), "--batch-size", str(batch), "--minibatch-size", str(minibatch)], batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="CartPole-v1,pufferrs/Nested-v0")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="times each preset's total_steps")
    parser.add_argument(
        "--num-envs",
        type=int,
        nargs="+",
        help="total envs, one run of each (default: the preset's); batch and minibatch grow with them",
    )
    parser.add_argument("--min-updates", type=int, default=6, help="at least this many updates per run")
    parser.add_argument("--quick", action="store_true", help="CartPole-v1, two updates, one repeat (a smoke run)")
    args = parser.parse_args()
    envs = args.envs.split(",")
    if args.quick:
        envs, args.repeats = ["CartPole-v1"], 1

    load_before = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    results: dict[tuple[str, int | None, int], list[dict[str, Any]]] = {}
    cases = [(env, n) for env in envs for n in (args.num_envs or [None])]
    with tempfile.TemporaryDirectory() as tmp:
        for env, num_envs in cases:
            preset = PRESETS.get(env, {})
            sizes, batch = sizes_for(preset, num_envs)
            steps = (
                2 * batch
                if args.quick
                else max(int(preset["total_steps"] * args.steps_scale), args.min_updates * batch)
            )
            for repeat in range(args.repeats):
                for ranks in (1, 2):
                    run_dir = Path(tmp) / f"{env.replace('/', '_')}-{num_envs}-{ranks}-{repeat}"
                    start = time.perf_counter()
                    result = run(env, ranks, steps, run_dir, sizes)
                    result["wall"] = time.perf_counter() - start
                    results.setdefault((env, num_envs, ranks), []).append(result)
                    print(
                        f"  {env} envs={num_envs or 'preset'} ranks={ranks} repeat={repeat}: "
                        f"{result['summary']['sps']:,.0f} steps/s, {result['wall']:.1f} s with start-up",
                        flush=True,
                    )
    load_after = os.getloadavg()

    print()
    print(
        f"{'env':<22} {'envs':>5} {'ranks':>5} {'steps':>8} {'steps/s':>9} {'ratio':>6} "
        f"{'env s':>6} {'infer s':>7} {'learn s':>7} {'return @1/2':>12} {'return end':>11}"
    )
    for env, num_envs in cases:
        base = statistics.median(r["summary"]["sps"] for r in results[(env, num_envs, 1)])
        for ranks in (1, 2):
            runs = results[(env, num_envs, ranks)]
            sps = statistics.median(r["summary"]["sps"] for r in runs)
            half = [mean_return([r["rows"][len(r["rows"]) // 2 - 1]]) for r in runs]
            end = [mean_return(r["rows"][-5:]) for r in runs]
            split = [statistics.median(r["summary"][f"perf/{k}"] for r in runs) for k in ("env", "inference", "learn")]
            envs_count = json.loads(runs[0]["config"]).get("num_envs")
            print(
                f"{env:<22} {envs_count:>5} {ranks:>5} {runs[0]['summary']['global_step']:>8,} {sps:>9,.0f} "
                f"{sps / base:>6.2f} {split[0]:>6.1f} {split[1]:>7.1f} {split[2]:>7.1f} "
                f"{fmt(mean_of(half)):>12} {fmt(mean_of(end)):>11}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")


if __name__ == "__main__":
    main()
