"""Evaluation during training (``--eval-interval N``): greedy episodes on
envs of their own every N updates, ``eval/return`` and the env's episode
metrics in the update's row, ``best.pt`` holding the best policy so far,
and training unchanged by it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pufferrs.train import Config, Trainer, apply_process_settings, evaluate, policy_from_checkpoint


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def train(run_dir: Path, env: str = "CartPole-v1", **overrides: Any) -> tuple[list[dict[str, Any]], dict]:
    values = dict(num_envs=4, batch_size=128, minibatch_size=64, total_steps=512, hidden_size=16, seed=2)
    values.update(overrides)
    config = Config.for_env(env, run_dir=str(run_dir), **values)
    apply_process_settings(config)
    with Trainer(config) as trainer:
        trainer.train()
        weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, weights


def test_every_nth_update_is_evaluated_and_the_best_kept(tmp_path: Path) -> None:
    rows, weights = train(tmp_path / "eval", eval_interval=2, eval_episodes=3)
    assert [("eval/return" in r) for r in rows] == [False, True, False, True]
    evaluated = [r for r in rows if "eval/return" in r]
    best = max(evaluated, key=lambda r: r["eval/return"])
    checkpoint = torch.load(tmp_path / "eval" / "best.pt", weights_only=True)
    assert checkpoint["update"] == best["update"]
    # The kept policy plays the episodes it was scored on again, greedy and seeded alike.
    policy, config, _ = policy_from_checkpoint(tmp_path / "eval" / "best.pt")
    again = evaluate(policy, config, episodes=3)
    assert again["mean_return"] == best["eval/return"]
    assert best["eval/length"] == pytest.approx(sum(again["lengths"]) / 3)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["best_eval_return"] == best["eval/return"]

    # Greedy play draws nothing from the training's generators: the same run without it learns the same.
    plain_rows, plain_weights = train(tmp_path / "plain")
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    assert [r["losses/policy_loss"] for r in plain_rows] == [r["losses/policy_loss"] for r in rows]


def test_the_envs_success_metric_is_evaluated_too(tmp_path: Path) -> None:
    rows, _ = train(
        tmp_path / "memory", "pufferrs/Memory-v0", eval_interval=1, eval_episodes=2, bptt_horizon=8, total_steps=128
    )
    assert 0 <= rows[0]["eval/success"] <= 1 and "eval/return" in rows[0]


def test_eval_settings_are_checked() -> None:
    from pufferrs.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_interval must be a non-negative integer, got -1"):
        Config(eval_interval=-1).validate()
    with pytest.raises(ConfigError, match="eval_episodes must be a positive integer, got 0"):
        Config(eval_episodes=0).validate()
