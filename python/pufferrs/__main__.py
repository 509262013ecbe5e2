"""The pufferrs command.

pufferrs train [ENV] [options]   PPO on a gymnasium env (default: the built-in
                                 memory task, solved by an LSTM in well under a
                                 minute on two CPU cores), with a live progress
                                 display and a run directory holding the config,
                                 metrics.jsonl, learning_curve.png and checkpoints
pufferrs eval CHECKPOINT         play a trained policy, print its episode returns
pufferrs demo                    a tour of the reference nested space: its layout,
                                 a flatten/unflatten round trip, a benchmark
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EPILOG_TRAIN = """\
examples:
  pufferrs train                                  # the built-in memory task, with an LSTM
  pufferrs train CartPole-v1 --total-steps 50000
  pufferrs train pufferrs/Nested-v0 --backend multiprocessing --num-envs 16 --env-batch-size 8
  pufferrs eval runs/<name>/model.pt

presets (pufferrs.train.PRESETS), applied before the options given:
"""


def _presets_text() -> str:
    from pufferrs.train import PRESETS

    lines = []
    for env, preset in PRESETS.items():
        settings = " ".join(
            f"--{k.replace('_', '-')} {v}"
            if not isinstance(v, bool)
            else f"--{'' if v else 'no-'}{k.replace('_', '-')}"
            for k, v in preset.items()
        )
        lines.append(f"  {env}: {settings}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# demo


def demo(quick: bool) -> None:
    """Prints the reference space's layout, a bit-exact round trip and a
    flatten/unflatten benchmark beside gymnasium and a numpy packer."""
    from pufferrs.benchmarks import flatten_rows, format_table, reference_space
    from pufferrs.spaces import Layout

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


# ---------------------------------------------------------------------------
# train: options from the Config dataclass


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"delay\": 8}}', got {text!r}")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per Config field; defaults are None so that only what the
    user typed overrides the env's preset."""
    from pufferrs.train import Config, config_fields

    defaults = Config()
    groups = {
        "vector env": ("backend", "num_envs", "num_workers", "env_batch_size", "env_kwargs"),
        "policy": ("lstm", "hidden_size"),
        "run": ("seed", "device", "torch_threads", "torch_deterministic", "checkpoint_interval", "run_dir"),
    }
    sections = {name: parser.add_argument_group(name) for name in groups}
    ppo = parser.add_argument_group("PPO")
    for f in config_fields():
        if f.name == "env":
            continue
        group = next((sections[g] for g, names in groups.items() if f.name in names), ppo)
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f.metadata["help"]
        if default is not None:
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        kind = f.metadata.get("type", type(default))
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "json":
            group.add_argument(flag, type=_json_object, default=None, metavar="JSON", help=help_text)
        else:
            choices = {"backend": ["serial", "multiprocessing"]}.get(f.name)
            metavar = None if choices else f.name.upper()
            group.add_argument(flag, type=kind, default=None, choices=choices, metavar=metavar, help=help_text)
    parser.add_argument("--name", help="run name: the run directory is runs/NAME (default: env and time)")


def _config_from_args(args: argparse.Namespace) -> Any:
    from pufferrs.train import Config, config_fields

    overrides = {
        f.name: getattr(args, f.name)
        for f in config_fields()
        if f.name != "env" and getattr(args, f.name, None) is not None
    }
    config = Config.for_env(args.env, **overrides)
    if config.run_dir is None:
        name = args.name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', config.env)}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path("runs") / name
        suffix = 1
        while run_dir.exists():  # two runs in the same second keep apart
            suffix += 1
            run_dir = Path("runs") / f"{name}-{suffix}"
        config.run_dir = str(run_dir)
    return config


# ---------------------------------------------------------------------------
# train: progress display


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


class _PlainProgress:
    """Log lines, at most one per ``interval`` seconds (and the last), for
    logs and pipes."""

    def __init__(self, num_updates: int, interval: float = 2.0):
        self.num_updates, self.interval = num_updates, interval
        self.last = -float("inf")

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, m: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and m["update"] < self.num_updates:
            return
        self.last = now
        extra = "".join(
            f" {k[4:]} {_fmt(m[k])}"
            for k in m
            if k.startswith("env/") and k not in ("env/episode_return", "env/episode_length", "env/episodes")
        )
        print(
            f"update {m['update']}/{self.num_updates} steps {m['global_step']:,} sps {m['sps']:,.0f} "
            f"return {_fmt(m.get('env/episode_return'))}{extra} "
            f"policy_loss {_fmt(m['losses/policy_loss'])} value_loss {_fmt(m['losses/value_loss'])} "
            f"entropy {_fmt(m['losses/entropy'])}",
            flush=True,
        )


class _RichProgress:
    """A live panel: a progress bar and the latest update's numbers."""

    def __init__(self, config: Any, console: Any):
        from rich.live import Live

        self.config, self.console = config, console
        self.latest: dict[str, Any] = {}
        self.best: float | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        m, config = self.latest, self.config
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column(justify="right", style="cyan")
            table.add_column()
        steps = m.get("global_step", 0)
        total = config.num_updates * config.batch_size
        env_keys = [
            k
            for k in m
            if k.startswith("env/") and k not in ("env/episode_return", "env/episode_length", "env/episodes")
        ]
        rows = [
            (
                "steps",
                f"{steps:,} / {total:,}",
                "update",
                f"{m.get('update', 0)} / {config.num_updates}",
                "sps",
                _fmt(m.get("sps"), ",.0f"),
                "time",
                f"{m.get('time', 0):.0f} s",
            ),
            (
                "return",
                _fmt(m.get("env/episode_return")),
                "best",
                _fmt(self.best),
                "length",
                _fmt(m.get("env/episode_length")),
                "episodes",
                str(m.get("env/episodes", 0)),
            ),
            (
                "policy",
                _fmt(m.get("losses/policy_loss")),
                "value",
                _fmt(m.get("losses/value_loss")),
                "entropy",
                _fmt(m.get("losses/entropy")),
                "kl",
                _fmt(m.get("losses/approx_kl")),
            ),
        ]
        if env_keys:
            cells: list[str] = []
            for k in env_keys[:4]:
                cells += [k[4:], _fmt(m[k])]
            rows.append(tuple(cells + [""] * (8 - len(cells))))
        for row in rows:
            table.add_row(*row)
        grid = Table.grid()
        grid.add_row(ProgressBar(total=max(total, 1), completed=steps, width=60))
        grid.add_row(table)
        return Panel(grid, title=f"pufferrs train {config.env}", subtitle=str(config.run_dir), expand=False)

    def __enter__(self) -> _RichProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def __call__(self, m: dict[str, Any]) -> None:
        self.latest = m
        ret = m.get("env/episode_return")
        if ret is not None and (self.best is None or ret > self.best):
            self.best = ret
        self.live.update(self._render())


def _print_summary(summary: dict[str, Any]) -> None:
    print("\nsummary")
    width = max(map(len, summary))
    for key, value in summary.items():
        if isinstance(value, float):
            shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        else:
            shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"  {key:<{width}}  {shown}")


# ---------------------------------------------------------------------------
# commands


def cmd_train(args: argparse.Namespace) -> int:
    from pufferrs.train import Trainer

    config = _config_from_args(args)
    config.validate()
    with Trainer(config) as trainer:
        print(
            f"pufferrs train {config.env}: {config.num_updates} updates of {config.batch_size} steps on "
            f"{trainer.device} ({config.backend}, {config.num_envs} envs, "
            f"{'LSTM' if config.lstm else 'feed-forward'} policy) -> {config.run_dir}",
            flush=True,
        )
        use_rich = sys.stdout.isatty() and not args.plain
        if use_rich:
            from rich.console import Console

            progress: Any = _RichProgress(config, Console())
        else:
            progress = _PlainProgress(config.num_updates)
        with progress:
            summary = trainer.train(progress)
    _print_summary(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from pufferrs.train import ConfigError, evaluate, policy_from_checkpoint, resolve_device

    if args.episodes < 1:
        raise ConfigError(f"episodes must be positive, got {args.episodes}")
    device = resolve_device(args.device)
    torch.set_num_threads(1)  # a small policy, one step at a time
    policy, config, checkpoint = policy_from_checkpoint(args.checkpoint, str(device))
    result = evaluate(policy, config, episodes=args.episodes, greedy=not args.sample, device=device, seed=args.seed)
    mode = "sampled" if args.sample else "greedy"
    print(
        f"{config.env}: {args.episodes} episodes, {mode} actions, checkpoint of update "
        f"{checkpoint.get('update')} ({checkpoint.get('global_step', 0):,} steps)"
    )
    for i, (ret, length) in enumerate(zip(result["returns"], result["lengths"])):
        print(f"  episode {i:>3}  return {ret:10.3f}  length {length}")
    returns = np.asarray(result["returns"])
    print(f"mean return {returns.mean():.3f} ± {returns.std():.3f} (min {returns.min():.3f}, max {returns.max():.3f})")
    for key, value in result.items():
        if key.startswith("mean_") and key != "mean_return":
            print(f"{key.replace('_', ' ')} {value:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pufferrs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a policy with PPO",
        description="Train a policy with PPO on a gymnasium env.\nOptions left out take the env's preset "
        "(listed at the end), then the defaults shown.",
        epilog=EPILOG_TRAIN + _presets_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "env",
        nargs="?",
        default=None,
        help="gymnasium env id (default: pufferrs/Memory-v0; also pufferrs/Nested-v0, CartPole-v1, ...)",
    )
    _add_config_options(train)
    train.add_argument("--plain", action="store_true", help="plain log lines even on a terminal")
    train.set_defaults(run=cmd_train)

    ev = commands.add_parser(
        "eval",
        help="play a checkpoint and print its episode returns",
        description="Play a trained policy from a checkpoint and print its episode returns.",
    )
    ev.add_argument("checkpoint", help="a checkpoint file (runs/<name>/model.pt)")
    ev.add_argument("--episodes", type=int, default=10, help="episodes to play (default: 10)")
    ev.add_argument("--sample", action="store_true", help="sample actions instead of taking the most likely")
    ev.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    ev.add_argument("--seed", type=int, default=None, help="env seed (default: the training seed + 1000)")
    ev.set_defaults(run=cmd_eval)

    dm = commands.add_parser(
        "demo",
        help="a tour of flat rows on the reference nested space",
        description="Layout, round trip and flatten benchmark on the reference nested space.",
    )
    dm.add_argument("--quick", action="store_true", help="shorter, noisier benchmark")
    dm.set_defaults(run=lambda args: demo(args.quick) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pufferrs.errors import PufferError
    from pufferrs.train import ConfigError

    try:
        return args.run(args)
    except ConfigError as exc:
        # Bad settings: a message in argparse's style, not a traceback.
        commands = {"train": "train", "eval": "eval"}
        print(f"pufferrs {commands.get(args.command, '')}: error: {exc}", file=sys.stderr)
        return 2
    except PufferError as exc:
        print(f"pufferrs {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pufferrs {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
