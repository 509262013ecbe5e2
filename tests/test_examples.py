"""Every example in examples/: output shapes, and gradients reaching every
parameter (the policy guide's own debugging checks), plus short training
runs with the pufferrs trainer for the recurrent, multi-input and
continuous ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from conftest import one_step_config
from pufferrs import Layout
from pufferrs.models import LSTMWrapper
from pufferrs.pytorch import sample_logits

# The examples are scripts, not a package: put their folder on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from attention_policy import AttentionPolicy  # noqa: E402
from basic_policy import BasicPolicy  # noqa: E402
from cnn_policy import CNNPolicy, EfficientCNN  # noqa: E402
from continuous_policy import ContinuousPolicy  # noqa: E402
from independent_agents import train as train_independent_agents  # noqa: E402
from multi_agent_policy import IndependentMultiAgentPolicy, SharedMultiAgentPolicy  # noqa: E402
from multi_discrete_policy import MultiDiscretePolicy  # noqa: E402
from multi_input_policy import MultiInputPolicy  # noqa: E402
from recurrent_policy import RecurrentPolicy, make_recurrent_policy  # noqa: E402
from residual_policy import ResidualPolicy  # noqa: E402

B = 6


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    torch.manual_seed(0)
    # The training runs apply their configs' process settings: one torch
    # thread (on a shared 2-core machine, torch's spinning worker threads
    # can stall a backward pass for seconds) and cuDNN flags. Those are
    # process-wide, so put them back.
    saved = torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.set_num_threads(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def ppo_loss(logits: Any, values: torch.Tensor) -> torch.Tensor:
    """The pieces of a PPO loss that reach the parameters: the log-prob of
    a sampled action (actor), the entropy (actor and, for a Normal, its
    std) and a value loss (critic)."""
    _, logprob, entropy = sample_logits(logits)
    return -logprob.mean() - 0.01 * entropy.mean() + values.float().square().mean()


def assert_gradients_reach_every_parameter(policy: nn.Module, loss: torch.Tensor) -> None:
    policy.zero_grad(set_to_none=True)
    loss.backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient for {name}"
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"


def env_of(observation_space: gs.Space, action_space: gs.Space) -> SimpleNamespace:
    """What LSTMWrapper and the built-in policies read from a vector env."""
    return SimpleNamespace(single_observation_space=observation_space, single_action_space=action_space)


def box(*shape: int, dtype: type = np.float32) -> gs.Box:
    if dtype is np.uint8:
        return gs.Box(0, 255, shape, np.uint8)
    return gs.Box(-1.0, 1.0, shape, dtype)


def sample_batch(space: gs.Space, count: int = B) -> torch.Tensor:
    space.seed(1)
    return torch.from_numpy(np.stack([space.sample() for _ in range(count)]))


# --------------------------------------------------------------------------
# Basic MLP
# --------------------------------------------------------------------------


def test_basic_policy_shapes_and_gradients() -> None:
    obs_space, action_space = box(4), gs.Discrete(3)
    policy = BasicPolicy(obs_space, action_space)
    obs = sample_batch(obs_space)
    logits, values = policy(obs)
    assert logits.shape == (B, 3) and values.shape == (B,)
    eval_logits, _ = policy.forward_eval(obs, None)
    torch.testing.assert_close(eval_logits, logits)
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_basic_policy_actions_deterministic_and_sampled() -> None:
    policy = BasicPolicy(box(4), gs.Discrete(2), hidden_size=8)
    # Fix the action distribution at p = softmax([2, 0]) = [0.881, 0.119].
    with torch.no_grad():
        policy.actor.weight.zero_()
        policy.actor.bias.copy_(torch.tensor([2.0, 0.0]))
    obs = torch.zeros(4000, 4)
    greedy, values = policy.get_action(obs, deterministic=True)
    assert greedy.shape == (4000,) and values.shape == (4000,)
    assert (greedy == 0).all()
    sampled, _ = policy.get_action(obs)
    assert sampled.dtype == torch.int64 and set(sampled.unique().tolist()) == {0, 1}
    expected = torch.softmax(torch.tensor([2.0, 0.0]), 0)[1].item()
    # 4000 draws: the standard error of the frequency is about 0.005.
    assert abs(sampled.float().mean().item() - expected) < 0.025
    assert not values.requires_grad  # acting builds no graph


def test_basic_policy_steps_a_vector_env() -> None:
    import pufferrs.vector

    with pufferrs.vector.make(lambda: gym.make("CartPole-v1"), num_envs=3) as envs:
        policy = BasicPolicy(envs.single_observation_space, envs.single_action_space, hidden_size=16)
        obs, _ = envs.reset(seed=0)
        for _ in range(5):
            action, _ = policy.get_action(torch.from_numpy(obs))
            obs, rewards, *_ = envs.step(action.numpy())
        assert rewards.shape == (3,)


# --------------------------------------------------------------------------
# CNNs
# --------------------------------------------------------------------------


def test_cnn_policy_on_84x84_frames() -> None:
    obs_space = box(3, 84, 84, dtype=np.uint8)
    policy = CNNPolicy(obs_space, gs.Discrete(5))
    logits, values = policy(sample_batch(obs_space, 4))
    assert logits.shape == (4, 5) and values.shape == (4,)
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))
    with pytest.raises(ValueError, match="84x84.*EfficientCNN"):
        CNNPolicy(box(3, 64, 64, dtype=np.uint8), gs.Discrete(5))


@pytest.mark.parametrize(
    ("shape", "features"),
    [
        ((4, 84, 84), 64 * 7 * 7),  # 84 -> 20 -> 9 -> 7
        ((3, 64, 64), 64 * 4 * 4),  # 64 -> 15 -> 6 -> 4
        ((1, 36, 50), 64 * 1 * 2),  # 36 -> 8 -> 3 -> 1, 50 -> 11 -> 4 -> 2: not square
    ],
)
def test_efficient_cnn_computes_its_flattened_size(shape: tuple[int, ...], features: int) -> None:
    def out(size: int) -> int:
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            size = (size - kernel) // stride + 1
        return size

    assert features == 64 * out(shape[1]) * out(shape[2])
    obs_space = box(*shape, dtype=np.uint8)
    policy = EfficientCNN(obs_space, gs.Discrete(4), hidden_size=64)
    assert policy.n_features == features
    logits, values = policy(sample_batch(obs_space, 3))
    assert logits.shape == (3, 4) and values.shape == (3,)
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


# --------------------------------------------------------------------------
# Recurrent
# --------------------------------------------------------------------------


def test_recurrent_policy_halves() -> None:
    obs_space, action_space = box(5), gs.Discrete(3)
    policy = RecurrentPolicy(obs_space, action_space, input_size=16, hidden_size=16)
    obs = sample_batch(obs_space)
    hidden = policy.encode_observations(obs)
    assert hidden.shape == (B, 16)
    logits, values = policy.decode_actions(hidden)
    assert logits.shape == (B, 3) and values.shape == (B,)


def test_recurrent_policy_in_lstm_wrapper() -> None:
    obs_space, action_space = box(5), gs.Discrete(3)
    env = env_of(obs_space, action_space)
    policy = make_recurrent_policy(env, input_size=16, hidden_size=24)
    assert isinstance(policy, LSTMWrapper)

    # Rollout: one step at a time, state carried in the dict.
    state: dict = {}
    obs = sample_batch(obs_space)
    logits, values = policy.forward_eval(obs, state)
    assert logits.shape == (B, 3) and values.shape == (B,)
    assert state["lstm_h"].shape == state["lstm_c"].shape == (B, 24)
    # Where an episode starts the state is zeroed: those rows act as if
    # they had no past.
    state["episode_start"] = torch.tensor([True, False] * (B // 2))
    carried, _ = policy.forward_eval(obs, state)
    fresh, _ = policy.forward_eval(obs, {})
    torch.testing.assert_close(carried[0::2], fresh[0::2])
    assert not torch.allclose(carried[1::2], fresh[1::2])

    # Training: whole sequences (B, T, obs).
    seq = sample_batch(box(4, 5), B)
    state = {"episode_start": torch.zeros(B, 4, dtype=torch.bool)}
    logits, values = policy(seq, state)
    assert logits.shape == (B * 4, 3) and values.shape == (B, 4)
    assert state["hidden"].shape == (B, 4, 24)
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


# --------------------------------------------------------------------------
# Multi-input
# --------------------------------------------------------------------------


def image_vector_space(size: int = 16) -> gs.Dict:
    return gs.Dict(image=box(3, size, size, dtype=np.uint8), vector=box(5))


@pytest.mark.parametrize(
    "action_space", [gs.Discrete(4), gs.MultiDiscrete([4, 4, 2])], ids=["discrete", "multidiscrete"]
)
def test_multi_input_policy_on_flat_rows(action_space: gs.Space) -> None:
    space = image_vector_space()
    layout = Layout(space)
    space.seed(0)
    samples = [space.sample() for _ in range(B)]
    rows = torch.from_numpy(layout.flatten_batch(samples))
    assert rows.shape == (B, layout.row_bytes) and rows.dtype == torch.uint8

    policy = MultiInputPolicy(space, action_space, hidden_size=32)
    logits, values = policy(rows)
    heads = logits if isinstance(logits, tuple) else (logits,)
    expected = tuple(action_space.nvec) if isinstance(action_space, gs.MultiDiscrete) else (4,)
    assert tuple(h.shape[1] for h in heads) == expected and all(h.shape[0] == B for h in heads)
    assert values.shape == (B,)

    # The policy read the right bytes: the same network on the samples
    # themselves gives the same values.
    image = torch.from_numpy(np.stack([s["image"] for s in samples])).float() / 255
    vector = torch.from_numpy(np.stack([s["vector"] for s in samples]))
    features = policy.combiner(torch.cat([policy.image_encoder(image), policy.vector_encoder(vector)], dim=-1))
    torch.testing.assert_close(values, policy.critic(features).squeeze(-1))
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_multi_input_policy_sizes_itself_from_the_image_space() -> None:
    for size in (8, 84):
        space = image_vector_space(size)
        policy = MultiInputPolicy(space, gs.Discrete(2), hidden_size=16)
        rows = torch.from_numpy(Layout(space).flatten_batch([space.sample() for _ in range(2)]))
        logits, _ = policy(rows)
        assert logits.shape == (2, 2)


# --------------------------------------------------------------------------
# Continuous
# --------------------------------------------------------------------------


def test_continuous_policy_returns_a_normal() -> None:
    obs_space, action_space = box(6), gs.Box(-2.0, 2.0, (2, 3), np.float32)
    policy = ContinuousPolicy(obs_space, action_space, hidden_size=32)
    obs = sample_batch(obs_space)
    dist, values = policy(obs)
    assert isinstance(dist, Normal)
    assert dist.loc.shape == dist.scale.shape == (B, 2, 3) and values.shape == (B,)
    action, logprob, entropy = sample_logits(dist)
    assert action.shape == (B, 2, 3) and logprob.shape == entropy.shape == (B,)
    torch.testing.assert_close(logprob, dist.log_prob(action).sum(dim=(1, 2)))
    assert_gradients_reach_every_parameter(policy, ppo_loss(dist, values))


def test_continuous_policy_actions_stay_in_bounds() -> None:
    policy = ContinuousPolicy(box(3), gs.Box(-0.5, 0.5, (2,), np.float32), hidden_size=16)
    with torch.no_grad():
        policy.actor_logstd.fill_(2.0)  # std 7.4: most samples fall outside
        policy.actor_mean.bias.copy_(torch.tensor([0.2, 3.0]))
    obs = torch.zeros(500, 3)
    sampled, _ = policy.get_action(obs)
    assert sampled.shape == (500, 2) and sampled.abs().max() <= 0.5
    greedy, _ = policy.get_action(obs, deterministic=True)
    torch.testing.assert_close(greedy[0], torch.tensor([0.2, 0.5]), atol=1e-2, rtol=0)


# --------------------------------------------------------------------------
# Multi-discrete
# --------------------------------------------------------------------------


def test_multi_discrete_policy_splits_by_nvec() -> None:
    obs_space, action_space = box(4), gs.MultiDiscrete([[3, 5], [2, 7]])
    policy = MultiDiscretePolicy(obs_space, action_space, hidden_size=16)
    logits, values = policy(sample_batch(obs_space))
    assert [h.shape for h in logits] == [(B, 3), (B, 5), (B, 2), (B, 7)] and values.shape == (B,)
    action, logprob, _ = sample_logits(logits)
    assert action.shape == (B, 4) and logprob.shape == (B,)
    assert (action < torch.tensor([3, 5, 2, 7])).all() and (action >= 0).all()
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


# --------------------------------------------------------------------------
# Multi-agent
# --------------------------------------------------------------------------


@pytest.mark.parametrize("agent_id_input", [False, True])
def test_shared_multi_agent_policy(agent_id_input: bool) -> None:
    obs_space, num_agents = box(5), 3
    policy = SharedMultiAgentPolicy(
        obs_space, gs.Discrete(4), num_agents, hidden_size=16, agent_id_input=agent_id_input
    )
    obs = sample_batch(obs_space, 2 * num_agents)  # 2 envs x 3 agents
    logits, values = policy(obs)
    assert logits.shape == (6, 4) and values.shape == (6,)
    # The same observation gives the same output for every agent unless
    # the agent's id is an input.
    same = obs[:1].expand(3, -1)
    out, _ = policy(same, agent_ids=torch.arange(3))
    assert torch.allclose(out[0], out[1]) != agent_id_input
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_independent_multi_agent_policy_keeps_input_order() -> None:
    obs_space, num_agents = box(5), 3
    policy = IndependentMultiAgentPolicy(obs_space, gs.Discrete(4), num_agents, hidden_size=16)
    obs = sample_batch(obs_space, 9)
    agent_ids = torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1])
    logits, values = policy(obs, agent_ids=agent_ids)
    assert logits.shape == (9, 4) and values.shape == (9,)
    for k in range(9):
        agent = int(agent_ids[k])
        features = policy.encoders[agent](obs[k : k + 1])
        torch.testing.assert_close(logits[k], policy.actors[agent](features)[0])
        torch.testing.assert_close(values[k], policy.critics[agent](features)[0, 0])
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_independent_multi_agent_policy_default_ids_and_bad_ids() -> None:
    obs_space = box(5)
    policy = IndependentMultiAgentPolicy(obs_space, gs.Discrete(4), 2, hidden_size=8)
    obs = sample_batch(obs_space, 4)
    by_position, _ = policy(obs)
    explicit, _ = policy(obs, agent_ids=torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(by_position, explicit)
    with pytest.raises(ValueError, match=r"agent_ids must be in \[0, 2\)"):
        policy(obs, agent_ids=torch.tensor([0, 1, 2, 1]))


# --------------------------------------------------------------------------
# Attention and residual
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "num_tokens"), [((6, 4), None), ((24,), 6)])
def test_attention_policy(shape: tuple[int, ...], num_tokens: int | None) -> None:
    obs_space = box(*shape)
    policy = AttentionPolicy(obs_space, gs.Discrete(3), num_tokens=num_tokens, d_model=16, nhead=2)
    assert policy.num_tokens == 6
    obs = sample_batch(obs_space)
    logits, values = policy(obs)
    assert logits.shape == (B, 3) and values.shape == (B,)
    # Tokens interact: changing one token changes the value of the whole.
    changed = obs.clone().reshape(B, 6, -1)
    changed[:, 0] += 1
    assert not torch.allclose(policy(changed.reshape(obs.shape))[1], values)
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_attention_policy_refuses_shapes_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="cannot be read as num_tokens=5"):
        AttentionPolicy(box(24), gs.Discrete(3), num_tokens=5)
    with pytest.raises(ValueError, match="num_tokens=None"):
        AttentionPolicy(box(24), gs.Discrete(3))


def test_residual_policy_through_depth() -> None:
    obs_space = box(8)
    policy = ResidualPolicy(obs_space, gs.Discrete(3), num_blocks=16, dim=32)
    logits, values = policy(sample_batch(obs_space))
    assert logits.shape == (B, 3) and values.shape == (B,)
    assert torch.isfinite(values).all()
    assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))


def test_residual_block_adds_to_its_input() -> None:
    block = ResidualPolicy(box(8), gs.Discrete(3), num_blocks=1, dim=32).blocks[0]
    x = torch.randn(B, 32)
    with torch.no_grad():
        correction = block.block(x)
        assert correction.abs().sum() > 0
        torch.testing.assert_close(block(x), x + correction)
        # With its last layer zeroed, a block is the identity: what makes a
        # deep stack start out trainable.
        block.block[-1].weight.zero_()
        block.block[-1].bias.zero_()
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.gpu
def test_examples_run_on_cuda() -> None:
    space = image_vector_space()
    rows = torch.from_numpy(Layout(space).flatten_batch([space.sample() for _ in range(B)]))
    cases: list[tuple[nn.Module, torch.Tensor]] = [
        (BasicPolicy(box(4), gs.Discrete(3), hidden_size=16), sample_batch(box(4))),
        (
            EfficientCNN(box(3, 64, 64, dtype=np.uint8), gs.Discrete(3), hidden_size=16),
            sample_batch(box(3, 64, 64, dtype=np.uint8)),
        ),
        (MultiInputPolicy(space, gs.MultiDiscrete([4, 4, 2]), hidden_size=16), rows),
        (ContinuousPolicy(box(4), gs.Box(-1, 1, (2,), np.float32), hidden_size=16), sample_batch(box(4))),
        (AttentionPolicy(box(6, 4), gs.Discrete(3), d_model=16, nhead=2), sample_batch(box(6, 4))),
        (IndependentMultiAgentPolicy(box(4), gs.Discrete(3), 2, hidden_size=16), sample_batch(box(4))),
    ]
    for policy, obs in cases:
        policy = policy.to("cuda")
        logits, values = policy(obs.to("cuda"))
        assert values.device.type == "cuda" and values.shape == (B,)
        assert_gradients_reach_every_parameter(policy, ppo_loss(logits, values))
    recurrent = make_recurrent_policy(env_of(box(4), gs.Discrete(3)), 16, 16).to("cuda")
    state: dict = {}
    logits, values = recurrent.forward_eval(sample_batch(box(4)).to("cuda"), state)
    assert state["lstm_h"].device.type == "cuda" and logits.shape == (B, 3)


# --------------------------------------------------------------------------
# Training with the pufferrs trainer
# --------------------------------------------------------------------------


class TargetEnv(gym.Env):
    """Point at a target: the observation is a random point in [-1, 1]^2
    (times ``scale``), the action a point in [-1, 1]^2, and the reward
    minus the squared distance between the two (in target units). Every
    episode is one step. A policy that has learned nothing scores about
    -1.7 (a unit-std Gaussian around 0, clipped to the box); the best
    deterministic policy scores 0."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.observation_space = gs.Box(-scale, scale, (2,), np.float32)
        self.action_space = gs.Box(-1.0, 1.0, (2,), np.float32)
        self._target = np.zeros(2, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._target * self.scale, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.square(np.asarray(action, np.float32) - self._target).sum())
        return self._target * self.scale, reward, True, False, {}


def returns_of(metrics: list[dict], key: str = "env/episode_return") -> list[float]:
    return [m[key] for m in metrics if key in m]


@pytest.mark.slow
def test_recurrent_example_learns_the_memory_task() -> None:
    from pufferrs.train import Config, Trainer, apply_process_settings, make_vecenv

    # The cue must be carried through 5 blank steps: a feed-forward policy
    # stays at 0.5, so success well above it is the LSTM at work.
    config = Config.for_env("pufferrs/Memory-v0", total_steps=40_960, torch_threads=1)
    assert config.lstm
    vecenv = make_vecenv(config)
    policy = make_recurrent_policy(vecenv, config.hidden_size, config.hidden_size)
    apply_process_settings(config)
    with Trainer(config, vecenv, policy) as trainer:
        trainer.train()
    success = returns_of(trainer.metrics, "env/success")
    assert success[0] < 0.7
    assert np.mean(success[-3:]) >= 0.9, success


@pytest.mark.slow
def test_multi_input_example_learns_from_image_and_vector_leaves() -> None:
    from pufferrs.train import Config, Trainer, apply_process_settings, make_vecenv

    # Nested-v0 asks which image quadrant is bright (image leaf), the item
    # in a queried slot (inventory leaves) and the sign of the vector's sum
    # (vector leaf). The example reads only image and vector, so its
    # ceiling is (1 + 1/4 + 1) / 3 = 0.75; chance is 1/3. Above 0.6 needs
    # both leaves read from the right bytes of the rows.
    config = Config.for_env("pufferrs/Nested-v0", total_steps=24_576, torch_threads=1)
    vecenv = make_vecenv(config)
    policy = MultiInputPolicy(vecenv.layout.space, vecenv.single_action_space, hidden_size=64)
    apply_process_settings(config)
    with Trainer(config, vecenv, policy) as trainer:
        trainer.train()
    score = returns_of(trainer.metrics, "env/score")
    assert score[0] < 0.45
    assert np.mean(score[-2:]) > 0.6, score


def test_continuous_example_learns_to_point_at_the_target() -> None:
    import pufferrs.vector
    from pufferrs.train import Trainer, apply_process_settings

    config = one_step_config("TargetEnv", total_steps=32_768)
    vecenv = pufferrs.vector.make(TargetEnv, num_envs=config.num_envs, seed=0)
    policy = ContinuousPolicy(vecenv.single_observation_space, vecenv.single_action_space, hidden_size=64)
    apply_process_settings(config)
    with Trainer(config, vecenv, policy) as trainer:
        trainer.train()
    returns = returns_of(trainer.metrics)
    assert returns[0] < -1.2
    assert np.mean(returns[-2:]) > -0.5, returns
    # The mean action follows the target (it overshoots while the std is
    # large: the env clips samples to the box, which pulls their mean in)
    # and the std has shrunk.
    targets = torch.rand(512, 2) * 2 - 1
    action, _ = policy.get_action(targets, deterministic=True)
    for dim in range(2):
        correlation = torch.corrcoef(torch.stack([action[:, dim], targets[:, dim]]))[0, 1]
        assert correlation > 0.9, correlation
    assert (policy.actor_logstd < -0.3).all()


@pytest.mark.slow
def test_independent_agents_example_learns_rendezvous() -> None:
    # A network per agent, routed by the slot each observation carries,
    # through the trainer's shuffled minibatches: random play scores 0.016.
    trainer = train_independent_agents(seed=1)
    scores = [m["env/score"] for m in trainer.metrics if "env/score" in m]
    assert np.mean(scores[:3]) < 0.15 and np.mean(scores[-3:]) >= 0.8, scores
    networks = trainer.policy.networks
    assert not torch.equal(networks.actors[0].weight, networks.actors[1].weight)  # trained apart
