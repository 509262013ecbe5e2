"""What ``pufferrs train ENV`` learns with no flags, against Stable-Baselines3's
``PPO("MlpPolicy", env)`` with its defaults: same env steps, same number of
envs, several seeds each (issue 20, "The bench and the targets").

    python benches/bench_learning.py [--envs CartPole-v1 ...] [--seeds 3] [--steps-scale 1.0]
        [--only pufferrs|sb3] [--results benches/results/learning.json] [--force] [--table]

The two sides:

- **pufferrs**: ``Config.for_env(env, total_steps=N, seed=s, run_dir=...,
  device="cpu")``, ``apply_process_settings``, ``Trainer(config).train()``:
  what ``pufferrs train ENV --total-steps N --seed s`` runs (its presets and
  automatic policy, one torch thread). The run directory goes under
  ``--run-root``.
- **SB3**: ``PPO("MlpPolicy", make_vec_env(env, n_envs=E, seed=s),
  n_steps=2048 // E, seed=s, device="cpu")``, where ``E`` is pufferrs's
  ``num_envs`` for that env. Everything else is SB3's default; ``n_steps``
  is set so that a rollout is SB3's default 2,048 steps whatever ``E`` is
  (SB3's default is 2,048 steps *per env*, i.e. for its default of one env).
  One torch thread, as pufferrs.

Each (library, env, seed) trains in its own subprocess, so that torch's
threads and seeds are per run and a crash loses only that run.

What is measured, the same way for both:

- **eval**: after training, the mean return of 10 episodes with greedy
  actions (SB3's ``predict(deterministic=True)``; pufferrs's policy read back
  from its ``model.pt`` with ``policy_from_checkpoint``, which includes its
  observation normaliser when there is one, and ``greedy_action``), played by
  one plain gymnasium loop on ``gymnasium.make(env)`` with episode seeds
  ``10_000 + 1000 * seed + i``. The table gives the median over seeds and
  each seed's value.
- **steps/s and wall time**: env steps over the seconds of the training loop
  (pufferrs's own ``seconds`` from ``train()``, which leaves out writing the
  final checkpoint and plot; the whole of SB3's ``learn()``). Both libraries
  round the steps up to whole rollouts.
- **learning curves**: the mean return of the episodes that ended in each
  rollout, over env steps: pufferrs's ``env/episode_return`` from
  ``metrics.jsonl``; for SB3 the ``episode`` infos of its ``Monitor`` wrappers,
  gathered by a callback per rollout (the same statistic, not SB3's logged
  100-episode moving mean).

Results are merged into ``--results`` (JSON) per (library, env, seed) as each
run ends, so a bench can be run in pieces and resumed: a finished run with the
same steps and number of envs is skipped unless ``--force``. After the runs
(or with ``--table`` alone) the markdown table is printed and written next to
the results file (``.md``), with the plot of the learning curves (``.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: Envs and env steps of the issue's targets, the quick ones first so that a
#: partial run already fills rows of the table.
ENVS: dict[str, int] = {
    "CartPole-v1": 100_000,
    "Acrobot-v1": 100_000,
    "InvertedPendulum-v5": 100_000,
    "Pendulum-v1": 200_000,
    "HalfCheetah-v5": 200_000,
    "LunarLander-v3": 300_000,
}
LIBRARIES = ("pufferrs", "sb3")
LABELS = {"pufferrs": "pufferrs", "sb3": "SB3"}
SB3_ROLLOUT = 2048  # SB3's default n_steps, for its default single env
EVAL_EPISODES = 10
EVAL_SEED = 10_000  # far from the training envs' seeds (seed + i)


# ---------------------------------------------------------------------------
# One run, in its own process


def play(env_id: str, act: Callable[[Any], Any], seed: int, episodes: int = EVAL_EPISODES) -> list[float]:
    """The evaluation both libraries get: ``episodes`` episodes of
    ``gymnasium.make(env_id)``, ``act(obs)`` choosing each action."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=EVAL_SEED + 1000 * seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def run_pufferrs(env_id: str, seed: int, steps: int, run_dir: Path) -> dict[str, Any]:
    import torch

    from pufferrs import Layout
    from pufferrs.actions import ActionAdapter
    from pufferrs.factories import describe_policy, is_recurrent
    from pufferrs.train import Config, Trainer, apply_process_settings, greedy_action, policy_from_checkpoint

    config = Config.for_env(env_id, total_steps=steps, seed=seed, run_dir=str(run_dir), device="cpu")
    # A scaled-down run still needs one whole batch.
    config.total_steps = max(config.total_steps, config.batch_size)
    apply_process_settings(config)
    with Trainer(config) as trainer:
        print(f"  pufferrs {env_id}: {config.num_envs} envs, batch {config.batch_size}, policy:", flush=True)
        for line in describe_policy(trainer.policy):
            print(f"    {line}", flush=True)
        summary = trainer.train()
        global_step = trainer.global_step

    curve = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row.get("env/episode_return") is not None:
                curve.append([row["global_step"], row["env/episode_return"]])

    # Evaluated as a user would after training: the saved model, read back.
    policy, _, _ = policy_from_checkpoint(summary["checkpoint"])
    policy.eval()
    if is_recurrent(policy):
        raise SystemExit("the evaluation here plays feed-forward policies only")
    import gymnasium as gym

    probe = gym.make(env_id)
    layout, adapter = Layout(probe.observation_space), ActionAdapter(probe.action_space)
    probe.close()

    @torch.no_grad()
    def act(obs: Any) -> Any:
        row = torch.from_numpy(layout.flatten(obs)[None])
        logits, _ = policy.forward_eval(row, None)
        return adapter(greedy_action(logits))[0]

    returns = play(env_id, act, seed)
    return {
        "num_envs": config.num_envs,
        "rollout": config.batch_size,
        "global_step": global_step,
        "train_seconds": summary["seconds"],
        "config": dataclasses.asdict(config),
        "curve": curve,
        "eval_returns": returns,
    }


def run_sb3(env_id: str, seed: int, steps: int, num_envs: int) -> dict[str, Any]:
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)  # as pufferrs's default torch_threads

    class RolloutReturns(BaseCallback):
        """The mean return of the episodes that ended in each rollout (the
        statistic pufferrs logs per update), from Monitor's ``episode`` infos."""

        def __init__(self) -> None:
            super().__init__()
            self.ended: list[float] = []
            self.curve: list[list[float]] = []

        def _on_step(self) -> bool:
            self.ended.extend(float(info["episode"]["r"]) for info in self.locals["infos"] if "episode" in info)
            return True

        def _on_rollout_end(self) -> None:
            if self.ended:
                self.curve.append([self.num_timesteps, float(np.mean(self.ended))])
                self.ended = []

    env = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=SB3_ROLLOUT // num_envs, seed=seed, device="cpu", verbose=0)
    callback = RolloutReturns()
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=callback)
    train_seconds = time.perf_counter() - start
    env.close()

    def act(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    returns = play(env_id, act, seed)
    return {
        "num_envs": num_envs,
        "rollout": model.n_steps * num_envs,
        "global_step": int(model.num_timesteps),
        "train_seconds": train_seconds,
        "sb3_version": stable_baselines3.__version__,
        "curve": callback.curve,
        "eval_returns": returns,
    }


def run_one(spec: dict[str, Any]) -> None:
    """The body of a run's subprocess: trains, evaluates, writes the record
    to ``spec["out"]``."""
    import gymnasium as gym
    import torch

    started = time.perf_counter()
    library, env_id, seed, steps = spec["library"], spec["env"], spec["seed"], spec["steps"]
    if library == "pufferrs":
        record = run_pufferrs(env_id, seed, steps, Path(spec["run_dir"]))
    else:
        record = run_sb3(env_id, seed, steps, spec["num_envs"])
    returns = record["eval_returns"]
    record.update(
        library=library,
        env=env_id,
        seed=seed,
        steps=steps,
        sps=record["global_step"] / record["train_seconds"],
        eval_mean=float(np.mean(returns)),
        process_seconds=time.perf_counter() - started,
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        pufferrs_commit=spec["commit"],
        machine=machine(),
        versions={"python": platform.python_version(), "torch": torch.__version__, "gymnasium": gym.__version__},
    )
    Path(spec["out"]).write_text(json.dumps(record))


# ---------------------------------------------------------------------------
# The results file


def key(library: str, env_id: str, seed: int) -> str:
    return f"{library}|{env_id}|{seed}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds a lock on the results file (a lock file in the temp folder, out
    of the repository), so that two benches writing to one file (say, one
    per library) do not lose each other's runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bench_learning-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def merge(path: Path, record: dict[str, Any]) -> None:
    with locked(path):
        results = load(path)
        results["runs"][key(record["library"], record["env"], record["seed"])] = record
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, path)  # never a half-written results file


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} CPUs, {platform.processor() or platform.machine()}"


def commit() -> str:
    """pufferrs's commit, marked ``+dirty`` when its sources differ from it:
    the pufferrs numbers belong to the code that made them."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "python", "rust"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------
# The table and the plot


def fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"


def table(results: dict[str, Any]) -> str:
    runs = list(results["runs"].values())
    envs = [e for e in ENVS if any(r["env"] == e for r in runs)]
    envs += sorted({r["env"] for r in runs} - set(envs))
    lines = [
        "| env | steps | envs | pufferrs steps/s | SB3 steps/s | ratio | pufferrs eval, median [seeds] "
        "| SB3 eval, median [seeds] | pufferrs wall s | SB3 wall s |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for env_id in envs:
        by_lib = {
            lib: sorted((r for r in runs if r["env"] == env_id and r["library"] == lib), key=lambda r: r["seed"])
            for lib in LIBRARIES
        }

        def both(field: str) -> str:
            values = sorted({r[field] for rs in by_lib.values() for r in rs})
            # Different values mean that the two sides did not run alike.
            return f"{values[0]:,}" if len(values) == 1 else " / ".join(f"{v:,}" for v in values) + " (!)"

        sps = {lib: statistics.median(r["sps"] for r in rs) for lib, rs in by_lib.items() if rs}
        ratio = f"{sps['pufferrs'] / sps['sb3']:.1f}x" if len(sps) == 2 else "-"

        def evals(lib: str) -> str:
            rs = by_lib[lib]
            if not rs:
                return "-"
            median = statistics.median(r["eval_mean"] for r in rs)
            return f"{fmt(median)} [{', '.join(fmt(r['eval_mean']) for r in rs)}]"

        def wall(lib: str) -> str:
            rs = by_lib[lib]
            return f"{statistics.median(r['train_seconds'] for r in rs):.0f}" if rs else "-"

        cells = [
            env_id,
            both("steps"),
            both("num_envs"),
            f"{sps['pufferrs']:,.0f}" if "pufferrs" in sps else "-",
            f"{sps['sb3']:,.0f}" if "sb3" in sps else "-",
            ratio,
            evals("pufferrs"),
            evals("sb3"),
            wall("pufferrs"),
            wall("sb3"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    commits = sorted({r["pufferrs_commit"] for r in runs if r["library"] == "pufferrs"})
    machines = sorted({r["machine"] for r in runs})
    lines.append("")
    lines.append(
        f"Eval: mean return of {EVAL_EPISODES} greedy episodes per seed; steps/s and wall time: medians over seeds "
        f"of the training loop. Machine: {'; '.join(machines)}. pufferrs commit: {', '.join(commits) or '-'}."
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter

    runs = list(results["runs"].values())
    envs = [e for e in ENVS if any(r["env"] == e for r in runs)]
    envs += sorted({r["env"] for r in runs} - set(envs))
    cols = min(3, len(envs)) or 1
    rows = max(1, -(-len(envs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {"pufferrs": "C0", "sb3": "C1"}
    for ax, env_id in zip(axes.flat, envs):
        for lib in LIBRARIES:
            rs = sorted((r for r in runs if r["env"] == env_id and r["library"] == lib), key=lambda r: r["seed"])
            for i, r in enumerate(rs):
                if r["curve"]:
                    x, y = zip(*r["curve"])
                    label = f"{LABELS[lib]} ({len(rs)} seed{'s' * (len(rs) != 1)})" if i == 0 else None
                    ax.plot(x, y, color=colors[lib], lw=0.8, alpha=0.7, label=label)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))  # 200000s overlap
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    fig.suptitle("pufferrs with no flags vs SB3 PPO defaults: mean return of each rollout's ended episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(path: Path) -> None:
    with locked(path):
        results = load(path)
    if not results["runs"]:
        print(f"no runs in {path}")
        return
    text = table(results)
    print(text)
    path.with_suffix(".md").write_text(text + "\n")
    print(f"\ntable: {path.with_suffix('.md')}\nplot: {plot(results, path.with_suffix('.png'))}")


# ---------------------------------------------------------------------------
# The bench


def num_envs_of(env_id: str) -> int:
    """pufferrs's number of envs for ``env_id``, which SB3 gets too."""
    from pufferrs.train import Config

    return Config.for_env(env_id).num_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help="env ids (default: the six of issue 20)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every env's steps (quick runs)")
    parser.add_argument("--only", choices=LIBRARIES, help="run one library only")
    parser.add_argument("--results", type=Path, default=ROOT / "benches" / "results" / "learning.json")
    parser.add_argument("--run-root", type=Path, default=Path(tempfile.gettempdir()) / "bench_learning_runs")
    parser.add_argument("--force", action="store_true", help="rerun finished runs")
    parser.add_argument("--table", action="store_true", help="print the table and plot from --results, run nothing")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # a run's subprocess: its spec as JSON
    args = parser.parse_args()
    if args.run_one:
        run_one(json.loads(args.run_one))
        return
    args.results, args.run_root = args.results.resolve(), args.run_root.resolve()
    if args.table:
        report(args.results)
        return

    unknown = [e for e in args.envs if e not in ENVS]
    if unknown:
        print(f"note: no issue-20 step count for {unknown}: 100,000 steps")
    libraries = [args.only] if args.only else list(LIBRARIES)
    code = commit()
    print(f"# {machine()}, python {platform.python_version()}; pufferrs {code}; results -> {args.results}", flush=True)
    failed = []
    for env_id in args.envs:
        steps = max(1, round(ENVS.get(env_id, 100_000) * args.steps_scale))
        num_envs = num_envs_of(env_id)
        for seed in range(args.seeds):
            for library in libraries:
                name = f"{library} {env_id} seed {seed} ({steps:,} steps, {num_envs} envs)"
                with locked(args.results):
                    done = load(args.results)["runs"].get(key(library, env_id, seed))
                if done and not args.force and done["steps"] == steps and done["num_envs"] == num_envs:
                    print(f"skip {name}: done ({done['finished']})", flush=True)
                    continue
                run_dir = args.run_root / f"{library}-{env_id.replace('/', '_')}-seed{seed}-{time.strftime('%H%M%S')}"
                run_dir.mkdir(parents=True, exist_ok=True)
                out = run_dir / "record.json"
                spec = dict(
                    library=library, env=env_id, seed=seed, steps=steps, num_envs=num_envs,
                    run_dir=str(run_dir), out=str(out), commit=code,
                )  # fmt: skip
                print(f"run {name} -> {run_dir}", flush=True)
                # One thread for every library's BLAS and OpenMP too, not only torch's own.
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                # In the run's directory: MuJoCo writes its MUJOCO_LOG.TXT to the current one.
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(spec)],
                    env=env,
                    cwd=run_dir,
                )
                if proc.returncode != 0 or not out.exists():
                    print(f"FAILED {name}: exit status {proc.returncode}", flush=True)
                    failed.append(name)
                    continue
                record = json.loads(out.read_text())
                merge(args.results, record)
                print(
                    f"done {name}: eval {record['eval_mean']:.1f} {[round(r, 1) for r in record['eval_returns']]}, "
                    f"{record['sps']:,.0f} steps/s, {record['train_seconds']:.0f} s",
                    flush=True,
                )
    print()
    report(args.results)
    if failed:
        print(f"\n{len(failed)} run(s) failed: {'; '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
