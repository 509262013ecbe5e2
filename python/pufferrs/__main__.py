"""The pufferrs command.

pufferrs train [ENV] [options]   PPO on a gymnasium or PettingZoo env (default: the built-in
                                 memory task, solved by an LSTM in well under a
                                 minute on two CPU cores), with a live progress
                                 display and a run directory holding the config,
                                 metrics.jsonl, learning_curve.png and checkpoints
pufferrs eval CHECKPOINT         play a trained policy, print its episode returns
pufferrs sweep [ENV] --trials K  search hyperparameters with Optuna; the best config
                                 is written as a file that train --config takes
pufferrs demo                    a tour of the reference nested space: its layout,
                                 a flatten/unflatten round trip, the time per call
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pufferrs import __version__, cli_config
from pufferrs.cli_config import MAX_SEED  # noqa: F401 - the largest seed the command takes, for tests and users

if TYPE_CHECKING:
    pass

EPILOG_TRAIN = """\
examples:
  pufferrs train                                  # the built-in memory task, with an LSTM
  pufferrs train CartPole-v1 --total-steps 50000
  pufferrs train pufferrs/Nested-v0 --backend multiprocessing --num-envs 16 --env-batch-size 8
  pufferrs train MiniGrid-Empty-5x5-v0            # imports minigrid; the mission is encoded too
  pufferrs train ALE/Breakout-v5 --backend multiprocessing   # with the standard Atari preprocessing
  pufferrs train my_pkg:MyEnv-v0 --encoders '{"grid": "codes"}'
  pufferrs train classic/connect_four-v3          # PettingZoo: a row per agent, illegal moves masked
  pufferrs train pufferrs.multiagent_envs.Rendezvous   # a ParallelEnv class, by its dotted path
  pufferrs train CartPole-v1 --track tensorboard,wandb --eval-interval 10
  pufferrs train --resume runs/<name>            # continue a stopped run where it left off
  pufferrs train --config my.toml --seed 3       # settings from a file (TOML, YAML, a run's config.json)
  pufferrs eval runs/<name>/model.pt

presets by env family (pufferrs.presets.FAMILY_PRESETS), then by env
(pufferrs.presets.PRESETS), applied before the options given:
"""


# ---------------------------------------------------------------------------
# commands


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it is handled alike."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def cmd_train(args: argparse.Namespace) -> int:
    from pufferrs import distributed
    from pufferrs.config import apply_process_settings
    from pufferrs.factories import describe_policy
    from pufferrs.ppo import Trainer
    from pufferrs.presets import describe_presets
    from pufferrs.progress import print_summary, progress_display
    from pufferrs.tracking import check_trackers

    checkpoint = None
    if args.resume:
        config, checkpoint, path = cli_config.resumed_config(args)
    else:
        config = cli_config.config_from_args(args)
    if args.print_config:
        config.validate()
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    check_trackers(config)
    # SIGTERM (a scheduler's stop, `kill`) ends the run as Ctrl-C does: the
    # trainer saves model.pt and the learning curve on the way out.
    signal.signal(signal.SIGTERM, _on_sigterm)
    # This process is the run's: its threads, seeds and cuDNN flags are set
    # before the policy is built. The trainer validates the config.
    apply_process_settings(config)
    # Under torchrun: this rank joins the others (pufferrs.distributed);
    # rank 0 alone speaks and writes. Otherwise nothing changes.
    with distributed.session(config) as ranks, Trainer(config) as trainer:
        if checkpoint is not None:  # every rank loads it
            trainer.load_state_dict(checkpoint)
        if not ranks.is_main:
            trainer.train()
            return 0
        if checkpoint is not None:
            print(f"resuming {path} after update {trainer.update} ({trainer.global_step:,} steps)", flush=True)
        ranked = f", {ranks.size} ranks" if ranks.distributed else ""
        print(
            f"pufferrs train {config.env}: {config.num_updates} updates of {config.batch_size} steps on "
            f"{trainer.device} ({config.backend}, {config.num_envs} envs{ranked}, "
            f"{'LSTM' if config.lstm else 'feed-forward'} policy) -> {config.run_dir}",
            flush=True,
        )
        compiled = f"torch.compile: {'on' if trainer.compiles else 'off'} ({trainer.compile_reason})"
        if trainer.compiles:
            # Otherwise the first update's wait looks like a hang.
            compiled += "; the first update waits for it: tens of seconds the first time on a machine, seconds after"
        for line in [*describe_presets(config.env), *describe_policy(trainer.policy), compiled]:
            print(f"  {line}", flush=True)
        with progress_display(config, plain=args.plain) as progress:
            summary = trainer.train(progress)
    print_summary(summary)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pufferrs.sweep import load_space, run_sweep, trial_table

    space = load_space(args.space)
    base = cli_config.config_from_args(args)
    directory = Path(args.dir) if args.dir else Path("sweeps") / Path(base.run_dir).name
    print(
        f"pufferrs sweep {base.env}: {args.trials} trials of {base.num_updates} updates, {args.parallel} at a time, "
        f"over {', '.join(space)} -> {directory}",
        flush=True,
    )
    study, best = run_sweep(
        base, directory, args.trials, args.parallel, space, objective=args.objective, target=args.target_return
    )
    print(trial_table(study, space, args.target_return))
    if best is None:
        print("no trial completed: no best config")
        return 1
    print(f"best: trial {study.best_trial.number}, objective {study.best_value:.4g} -> {best}")
    print(f"train it: pufferrs train --config {best}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from pufferrs.checkpoints import policy_from_checkpoint
    from pufferrs.evaluation import check_video, evaluate, record_video

    torch.set_num_threads(1)  # a small policy, one step at a time
    modes = [m for m, only in (("greedy", args.greedy), ("sampled", args.sample)) if only] or ["greedy", "sampled"]
    if args.episodes < 1:
        from pufferrs.errors import ConfigError

        raise ConfigError(f"episodes must be positive, got {args.episodes}")
    policy, config, checkpoint = policy_from_checkpoint(
        args.checkpoint, args.device, env=args.env, imports=args.imports, trust_code=args.trust_checkpoint_code
    )
    if args.video:
        check_video(config)  # before the episodes, not after them
    print(
        f"{config.env}: {args.episodes} episodes per mode, checkpoint of update "
        f"{checkpoint.get('update')} ({checkpoint.get('global_step', 0):,} steps)"
    )
    for mode in modes:
        result = evaluate(
            policy, config, episodes=args.episodes, greedy=mode == "greedy", device=args.device, seed=args.seed
        )
        returns = np.asarray(result["returns"])
        print(f"{mode} actions")
        for i, (ret, length) in enumerate(zip(result["returns"], result["lengths"])):
            print(f"  episode {i:>3}  return {ret:10.3f}  length {length}")
        print(
            f"  mean return {returns.mean():.3f} ± {returns.std():.3f} "
            f"(min {returns.min():.3f}, max {returns.max():.3f})"
        )
        for key, value in result.items():
            if key.startswith("mean_") and key != "mean_return":
                print(f"  {key.replace('_', ' ')} {value:.3f}")
    if args.video:
        paths = record_video(
            policy, config, args.video, greedy=modes[0] == "greedy", device=args.device, seed=args.seed
        )
        print(f"video of one {modes[0]} episode: {', '.join(map(str, paths))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pufferrs.demo import demo

    demo(args.quick)
    return 0


def _add_run_options(section: Any) -> None:
    """``--config`` and ``--name``, which train and sweep share."""
    section.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a TOML, YAML or JSON file (a run's config.json), applied after the env's presets and "
        "before the options given",
    )
    section.add_argument("--name", help="run name: the run directory is runs/NAME (default: env and time)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pufferrs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        usage="%(prog)s [ENV] [options]",
        help="train a policy with PPO",
        description="Train a policy with PPO on a gymnasium or PettingZoo env.\nOptions left out take the env's preset "
        "(listed at the end), then the defaults shown.",
        epilog=EPILOG_TRAIN + cli_config.presets_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "env",
        nargs="?",
        metavar="ENV",
        help="gymnasium env id (default: pufferrs/Memory-v0; also pufferrs/Nested-v0, CartPole-v1, ...), "
        "PettingZoo id (classic/connect_four-v3) or dotted path to a PettingZoo env",
    )
    sections = cli_config.add_config_options(train)
    _add_run_options(sections["run"])
    sections["run"].add_argument(
        "--resume",
        metavar="RUN_DIR|CHECKPOINT",
        help="continue a run: its directory (from its latest checkpoint) or a checkpoint file; options given "
        "change its config (--total-steps to train longer)",
    )
    sections["run"].add_argument(
        "--trust-checkpoint-code",
        action="store_true",
        help="with --resume: import and call whatever code the checkpoint's config names (see pufferrs eval)",
    )
    sections["run"].add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )
    train.add_argument("--plain", action="store_true", help="plain log lines even on a terminal")
    train.set_defaults(run=cmd_train)

    sw = commands.add_parser(
        "sweep",
        usage="%(prog)s [ENV] --trials K [options]",
        help="search hyperparameters with Optuna (TPE, median pruning); writes the best config as a file",
        description="Train --trials configs drawn by Optuna's TPE sampler from the search space (pufferrs.config."
        "SEARCH_SPACE, or --space FILE) on top of the env's presets, --config and the options given; trials "
        "whose return falls below the median are stopped early. The study is kept in DIR/study.db (the same "
        "command continues a stopped sweep); at the end a table of trials is printed and the best config is "
        "written to DIR/best_config.yaml, for pufferrs train --config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument("env", nargs="?", metavar="ENV", help="the env to tune on (default: pufferrs/Memory-v0)")
    search = sw.add_argument_group("sweep")
    search.add_argument("--trials", type=int, required=True, help="trials in the study when the sweep ends")
    search.add_argument("--parallel", type=int, default=1, help="trials run at once, in processes (default: 1)")
    search.add_argument(
        "--space",
        metavar="FILE",
        help="the search space as TOML, YAML or JSON: a table per field, replacing the declared one",
    )
    search.add_argument("--dir", metavar="DIR", help="the sweep's directory (default: sweeps/NAME)")
    search.add_argument(
        "--objective",
        choices=("auc", "final"),
        default="auc",
        help="what a trial maximises: the mean return over all updates (auc, the default: learning fast counts) "
        "or over the last 5 (final)",
    )
    search.add_argument(
        "--target-return", type=float, metavar="RETURN", help="also report the env steps each trial took to reach it"
    )
    sweep_sections = cli_config.add_config_options(sw)
    _add_run_options(sweep_sections["run"])
    sw.set_defaults(run=cmd_sweep)

    ev = commands.add_parser(
        "eval",
        help="play a checkpoint and print its episode returns, greedy and sampled",
        description="Play a trained policy from a checkpoint and print its episode returns with the most likely "
        "actions and with sampled ones (a policy that has not converged often does better sampled).",
    )
    ev.add_argument("checkpoint", help="a checkpoint file (runs/<name>/model.pt)")
    ev.add_argument("--episodes", type=int, default=10, help="episodes to play (default: 10)")
    ev.add_argument("--sample", action="store_true", help="only sampled actions (default: greedy, then sampled)")
    ev.add_argument("--greedy", action="store_true", help="only the most likely actions (default: both)")
    ev.add_argument(
        "--video",
        metavar="DIR",
        help="also write a video of one episode to DIR (gymnasium's RecordVideo: needs an env that renders "
        "rgb_array frames, and moviepy)",
    )
    ev.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    ev.add_argument(
        "--seed", type=cli_config.seed_argument, default=None, help="env seed (default: the training seed + 1000)"
    )
    trust = ev.add_argument_group(
        "code the checkpoint names",
        "A checkpoint's env may need code to be made: a dotted path to a function, module:EnvId, modules to "
        "import. Loading a file runs none of it unless you name it again here or trust the file "
        "(registered gymnasium and PettingZoo ids need neither).",
    )
    trust.add_argument(
        "--env", metavar="ENV", help="the env to play, in place of the checkpoint's (name its own to allow its code)"
    )
    trust.add_argument(
        "--imports",
        metavar="MODULES",
        help="modules to import before making the env, comma-separated, in place of the checkpoint's ('' for none)",
    )
    trust.add_argument(
        "--trust-checkpoint-code",
        action="store_true",
        help="import and call whatever code the checkpoint's config names: only for files you trust",
    )
    ev.set_defaults(run=cmd_eval)

    dm = commands.add_parser(
        "demo",
        help="a tour of flat rows on the reference nested space",
        description="Layout, round trip and flatten/unflatten times on the reference nested space.",
    )
    dm.add_argument("--quick", action="store_true", help="shorter, noisier timings")
    dm.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pufferrs.errors import ConfigError, PufferError

    # `python -m pufferrs` finds modules in the current directory first
    # (`pufferrs train mymodule:MyEnv-v0` beside mymodule.py); the console
    # script's path starts with its own directory instead. Its worker
    # processes inherit the path. Only code the user names is imported
    # (runs.load_checkpoint), so this gives a checkpoint nothing to import.
    cwd = os.getcwd()
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return args.run(args)
    except ConfigError as exc:
        # Bad settings: a message in argparse's style, not a traceback.
        print(f"pufferrs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except PufferError as exc:
        print(f"pufferrs {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(f"pufferrs {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if added and cwd in sys.path:  # main() called in a process that goes on
            sys.path.remove(cwd)


if __name__ == "__main__":
    sys.exit(main())
