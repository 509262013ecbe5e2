"""The trainer's mask handling without a multi-agent vector env: an
``action_mask`` observation leaf keeps every action the trainer sends
legal, for the built-in policies and for a policy that ignores the leaf,
and the task that needs the mask is learned; steps the masks leave out
change nothing in an update."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from torch import nn

from pufferrs import vector
from pufferrs.config import seed_everything
from pufferrs.experience import StepWeights
from pufferrs.train import Config, Trainer, evaluate

ACTIONS = 6


class PickTheHighestLegal(gym.Env):
    """Every step a random non-empty set of actions is legal (the
    ``action_mask`` leaf); choosing the highest legal one pays 1, any other
    legal one 0, and an illegal one raises. The ``noise`` leaf says
    nothing: only the mask tells what to do. 16 steps an episode."""

    def __init__(self) -> None:
        self.observation_space = gs.Dict(
            noise=gs.Box(-1, 1, (3,), np.float32),
            action_mask=gs.Box(0, 1, (ACTIONS,), np.int8),
        )
        self.action_space = gs.Discrete(ACTIONS)

    def _obs(self) -> dict[str, np.ndarray]:
        mask = (self.np_random.random(ACTIONS) < 0.5).astype(np.int8)
        mask[self.np_random.integers(ACTIONS)] = 1
        self.mask = mask
        return {"noise": self.np_random.uniform(-1, 1, 3).astype(np.float32), "action_mask": mask}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        action = int(action)
        if not self.mask[action]:
            raise AssertionError(f"illegal action {action} under mask {self.mask}")
        reward = float(action == np.flatnonzero(self.mask).max())
        self.steps += 1
        return self._obs(), reward, False, self.steps >= 16, {}


gym.register("PickTheHighestLegal-v0", entry_point=PickTheHighestLegal)


# One torch thread for every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**overrides: Any) -> Config:
    values = dict(
        policy="default",
        num_envs=8,
        batch_size=256,
        minibatch_size=128,
        bptt_horizon=8,
        total_steps=256 * 100,
        hidden_size=32,
        learning_rate=3e-3,
        ent_coef=0.0,
        seed=1,
    )
    values.update(overrides)
    return Config.for_env("PickTheHighestLegal-v0", **values)


def make_vecenv(cfg: Config) -> Any:
    return vector.make(PickTheHighestLegal, num_envs=cfg.num_envs, backend="serial", seed=cfg.seed)


@pytest.mark.slow
@pytest.mark.parametrize("policy,lstm", [("default", False), ("auto", False), ("default", True)])
def test_the_mask_is_obeyed_and_learned(policy: str, lstm: bool) -> None:
    # Random legal choices pay about 0.3 a step; the illegal action the env
    # raises on would end the test.
    cfg = config(policy=policy, lstm=lstm)
    seed_everything(cfg.seed)  # the initial policy too, as `pufferrs train` seeds it
    with Trainer(cfg) as trainer:
        trainer.train()
        returns = [m["env/episode_return"] for m in trainer.metrics if "env/episode_return" in m]
        assert np.mean(returns[:3]) < 8 and np.mean(returns[-3:]) >= 14.5, returns
        result = evaluate(trainer.policy, cfg, episodes=16)  # greedy: the most likely legal action
    assert result["mean_return"] >= 15, result


class IgnoresTheMask(nn.Module):
    """A user's policy that never reads the ``action_mask`` leaf and prefers
    the last action, which is often illegal."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0] * (ACTIONS - 1) + [5.0]))
        self.value = nn.Parameter(torch.zeros(()))

    def forward(self, observations: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = observations.shape[0]
        return self.bias.expand(batch, ACTIONS), self.value.expand(batch)

    forward_eval = forward


def test_the_trainer_masks_a_policy_that_ignores_the_leaf() -> None:
    cfg = config(total_steps=256 * 2)
    with Trainer(cfg, make_vecenv(cfg), IgnoresTheMask()) as trainer:
        trainer.train()  # the env raises on an illegal action
        logprobs = trainer.experience.logprobs
    assert torch.isfinite(logprobs).all()
    for greedy in (True, False):  # evaluation obeys the mask too
        assert len(evaluate(IgnoresTheMask(), cfg, episodes=4, greedy=greedy)["returns"]) == 4


def test_steps_left_out_by_the_masks_change_nothing() -> None:
    """The rollout's steps at masked positions are overwritten with other
    plausible ones: losses and the updated weights stay exactly the same.
    (Their rewards and flags stay: those fold into the acting steps.)"""
    cfg = config(total_steps=256, update_epochs=2)
    with Trainer(cfg, make_vecenv(cfg)) as trainer:
        trainer.rollout()
        exp = trainer.experience
        rng = np.random.default_rng(0)
        exp.host_masks[:] = rng.random(exp.host_masks.shape) < 0.6
        masked = torch.from_numpy(~exp.host_masks)
        saved = copy.deepcopy((trainer.policy.state_dict(), trainer.optimizer.state_dict()))
        stored = {k: getattr(exp, k).clone() for k in ("obs", "actions", "logprobs", "values")}

        def learn() -> tuple[dict, list[torch.Tensor]]:
            trainer.policy.load_state_dict(saved[0])
            trainer.optimizer.load_state_dict(saved[1])
            torch.manual_seed(0)
            losses = trainer.learn()
            return losses, [p.detach().clone() for p in trainer.policy.parameters()]

        losses, params = learn()
        for k, x in stored.items():
            getattr(exp, k).copy_(x)
        # Other observations (their masks too), or zeros as absent agents have.
        exp.obs[masked] = exp.obs.roll(1, dims=1)[masked]
        exp.obs[masked & (torch.rand(masked.shape) < 0.5)] = 0
        exp.actions[masked] = torch.randint(0, ACTIONS, exp.actions[masked].shape)
        exp.logprobs[masked] = -5 * torch.rand(exp.logprobs[masked].shape)
        exp.values[masked] = torch.randn(exp.values[masked].shape) * 100
        losses_again, params_again = learn()
    assert losses == losses_again
    assert all(torch.equal(a, b) for a, b in zip(params, params_again))


def test_step_weights() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    weights = StepWeights(torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert weights.mean(x) == 2.0
    normalized = weights.normalize(x)
    torch.testing.assert_close(normalized[:3], torch.tensor([-1.0, 0.0, 1.0]))
    # No step acted: zero, not 0/0.
    assert StepWeights(torch.zeros(4)).mean(x) == 0
    assert torch.isfinite(StepWeights(torch.zeros(4)).normalize(x)).all()
    plain = StepWeights(None)
    assert plain.mean(x) == x.mean() and torch.equal(plain.normalize(x), (x - x.mean()) / (x.std() + 1e-8))
