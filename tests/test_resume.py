"""Resuming a run (``Trainer.load_state_dict``, ``pufferrs train --resume``).

What is equal bit for bit: a run stopped after N updates and resumed for N
more ends with the same weights, optimizer state, normaliser statistics
and losses as the same run made in one go, when the envs' state at the
checkpoint is their reset state. Envs are not in a checkpoint (they are
made anew and reset when a run resumes), so the test of that equality
uses an env whose every episode ends at the update's last step and
resets to the same state whatever its seed: then the only state a resumed
run could lose is the trainer's own, which is what the test checks.
On CartPole the episodes in flight are cut short by the resumption, so
there the test checks the run's bookkeeping: counters, learning rate,
metrics appended, the curve continued."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from pufferrs import vector
from pufferrs.__main__ import main
from pufferrs.errors import CheckpointError
from pufferrs.resume import set_rng_state
from pufferrs.train import Config, Trainer, apply_process_settings, seed_everything

LENGTH = 4  # steps per episode; the horizon is a multiple of it


class Alternate(gym.Env):
    """Rewards the action that matches the step's parity; episodes of
    ``LENGTH`` steps, deterministic, the same from every reset."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.last = 0, 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.t / LENGTH, self.t % 2, self.last], np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self.t % 2) + 0.5 * self.last
        self.t, self.last = self.t + 1, int(action)
        return self._obs(), reward, self.t >= LENGTH, False, {}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def alternate_config(run_dir: Path, **overrides: Any) -> Config:
    values = dict(
        policy="default",
        num_envs=4,
        batch_size=64,
        minibatch_size=32,
        update_epochs=2,
        hidden_size=16,
        total_steps=6 * 64,
        learning_rate=3e-3,
        normalize_observations=True,
        normalize_rewards=True,
        checkpoint_interval=3,
        seed=7,
        run_dir=str(run_dir),
    )
    values.update(overrides)
    return Config.for_env("Alternate", **values)


def alternate_trainer(config: Config) -> Trainer:
    return Trainer(config, vector.make(Alternate, num_envs=config.num_envs, backend="serial", seed=config.seed))


def losses(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k.startswith(("losses/", "env/")) or k in ("update", "global_step")}
        for r in rows
    ]


def test_a_resumed_run_ends_bit_for_bit_where_one_run_does(tmp_path: Path) -> None:
    whole = alternate_config(tmp_path / "whole")
    apply_process_settings(whole)
    with alternate_trainer(whole) as trainer:
        trainer.train()
        expected = trainer.state_dict()

    # The checkpoint the uninterrupted run wrote after 3 of its 6 updates,
    # read as pufferrs reads any: tensors and plain data only.
    checkpoint = torch.load(tmp_path / "whole" / "checkpoints" / "update_000003.pt", weights_only=True)
    assert checkpoint["update"] == 3 and checkpoint["global_step"] == 3 * 64
    resumed = alternate_config(tmp_path / "resumed")
    seed_everything(12345)  # whatever this process drew before: the checkpoint's generators take over
    with alternate_trainer(resumed) as trainer:
        trainer.load_state_dict(checkpoint)
        stats = trainer.reward_normalizer.state_dict()
        assert all(torch.equal(stats[k], checkpoint["reward_normalizer"][k]) for k in ("mean", "var", "count"))
        assert stats["count"] > 0
        trainer.train()
        got = trainer.state_dict()

    assert (got["update"], got["global_step"]) == (expected["update"], expected["global_step"]) == (6, 6 * 64)
    for key, value in expected["state_dict"].items():  # weights and the observation normaliser
        assert torch.equal(got["state_dict"][key], value), key
    assert any(k.endswith("normalizer.count") for k in expected["state_dict"])
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(got["optimizer"]["state"][index][name], value), (index, name)
    for name, value in expected["reward_normalizer"].items():
        assert torch.equal(got["reward_normalizer"][name], value), name
    assert torch.equal(got["rng"]["torch"], expected["rng"]["torch"])
    # The resumed run's directory has the metrics it made, equal to the
    # uninterrupted run's for the same updates.
    assert losses(tmp_path / "resumed") == losses(tmp_path / "whole")[3:]


def test_checkpoints_from_a_run_hold_its_random_generators(tmp_path: Path) -> None:
    config = alternate_config(tmp_path / "run", total_steps=64, checkpoint_interval=0)
    apply_process_settings(config)
    with alternate_trainer(config) as trainer:
        trainer.train()
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    seed_everything(99)
    with alternate_trainer(config) as trainer:  # making a trainer draws from torch: the load comes after
        trainer.load_state_dict(checkpoint)
        after_load = (random.random(), np.random.random(), torch.rand(3))
    set_rng_state(checkpoint["rng"])
    again = (random.random(), np.random.random(), torch.rand(3))
    assert after_load[:2] == again[:2] and torch.equal(after_load[2], again[2])
    seed_everything(config.seed)  # what the run started from, and so not where it stands at its end
    assert torch.rand(3).tolist() != again[2].tolist()


def test_resuming_on_another_env_or_policy_shape_is_refused(tmp_path: Path) -> None:
    config = alternate_config(tmp_path / "run", total_steps=64)
    with alternate_trainer(config) as trainer:
        trainer.train()
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    with alternate_trainer(alternate_config(tmp_path / "wide", hidden_size=32)) as trainer:
        with pytest.raises(CheckpointError, match=r"does not fit .*is \(16, 3\) in the checkpoint, \(32, 3\) here"):
            trainer.load_state_dict(checkpoint)
    other = Config.for_env("CartPole-v1", **{k: v for k, v in config.__dict__.items() if k != "env"})
    with Trainer(other) as trainer:
        with pytest.raises(CheckpointError, match=r"observation space Box\(-1.0, 1.0, \(3,\), float32\).*\(4,\)"):
            trainer.load_state_dict(checkpoint)
    with alternate_trainer(alternate_config(tmp_path / "plain", normalize_rewards=False)) as trainer:
        with pytest.raises(CheckpointError, match="normalised rewards"):
            trainer.load_state_dict(checkpoint)


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``pufferrs ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cli_resume_continues_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["--num-envs", "4", "--batch-size", "256", "--minibatch-size", "128", "--checkpoint-interval", "2"]
    code, _, err = cli(capsys, "train", "CartPole-v1", "--total-steps", "1024", *tiny, "--name", "run")
    assert code == 0, err
    run = Path("runs/run")
    assert [r["update"] for r in rows(run)] == [1, 2, 3, 4]
    # As if killed outright after update 3: no model.pt, a row past the last checkpoint.
    (run / "model.pt").unlink()
    with open(run / "metrics.jsonl") as f:
        kept = f.readlines()[:3]
    (run / "metrics.jsonl").write_text("".join(kept))

    code, out, err = cli(capsys, "train", "--resume", "runs/run", "--total-steps", "1536", "--plain")
    assert code == 0, err
    assert "resuming runs/run/checkpoints/update_000002.pt after update 2 (512 steps)" in out
    after = rows(run)
    assert [r["update"] for r in after] == [1, 2, 3, 4, 5, 6]
    assert [r["global_step"] for r in after] == [256 * u for u in range(1, 7)]
    assert after[2]["time"] > after[1]["time"]  # the clock continues
    # The learning rate decays over the run's new length from where it stands.
    assert after[2]["learning_rate"] == pytest.approx(2e-3 * (1 - 2 / 6))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates"] == 6 and summary["global_step"] == 1536
    assert torch.load(run / "model.pt", weights_only=True)["update"] == 6

    code, _, err = cli(capsys, "train", "--resume", "runs/run/model.pt", "--hidden-size", "32")
    assert code == 2 and "does not fit the one this config makes" in err
    code, _, err = cli(capsys, "train", "Acrobot-v1", "--resume", "runs/run")
    assert code == 2
    assert err.strip().splitlines() == [
        "pufferrs train: error: 'runs/run/model.pt' was trained on CartPole-v1, not Acrobot-v1: "
        "resume it on CartPole-v1"
    ]
    code, _, err = cli(capsys, "train", "--resume", "runs/nothing")
    assert code == 2 and "nothing to resume at 'runs/nothing'" in err
