"""The PPO trainer and ``pufferrs train``: rollouts store what the envs did,
training replays the rollout exactly (LSTM state at segment starts and
episode starts included), GAE is right, the built-in envs are learned (the
memory task only with an LSTM), and the command line makes a run directory,
evaluates it, and turns bad arguments into messages."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import pufferrs.envs  # noqa: F401 - registers the built-in envs
from pufferrs.__main__ import main
from pufferrs.envs import Memory
from pufferrs.models import LSTMWrapper
from pufferrs.ppo import compute_advantages
from pufferrs.train import (
    Config,
    ConfigError,
    Trainer,
    apply_process_settings,
    evaluate,
    load_checkpoint,
    make_policy,
    make_vecenv,
    policy_from_checkpoint,
)


@pytest.fixture(autouse=True)
def _process_settings() -> Iterator[None]:
    """One torch thread, as ``pufferrs train`` runs small policies (several
    threads on a shared 2-core machine can stall a backward pass for
    seconds). Threads and cuDNN flags are process-wide, so they are put back."""
    saved = torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def small(env: str, **overrides: Any) -> Config:
    """A config one or two rollouts long, for tests of the machinery."""
    values = dict(num_envs=4, batch_size=128, minibatch_size=64, bptt_horizon=8, total_steps=256, hidden_size=16)
    values.update(overrides)
    return Config.for_env(env, **values)


# ---------------------------------------------------------------------------
# The built-in envs


def test_memory_rewards_only_the_cue_at_the_query_step() -> None:
    env = Memory(num_cues=3, delay=4)
    obs, _ = env.reset(seed=1)
    cue = int(obs[:3].argmax())
    assert obs[3] == 0 and obs[:3].sum() == 1
    for _ in range(3):
        obs, reward, terminal, truncated, _ = env.step((cue + 1) % 3)  # ignored before the query
        assert not obs.any() and reward == 0 and not terminal
    obs, reward, terminal, _, _ = env.step(0)
    assert obs[3] == 1 and obs[:3].sum() == 0 and not terminal  # the query shows no cue
    _, reward, terminal, truncated, info = env.step(cue)
    assert (reward, terminal, truncated, info) == (1.0, True, False, {"success": 1.0})
    env.reset(seed=1)
    for _ in range(4):
        env.step(0)
    assert env.step((cue + 1) % 3)[1] == 0.0


def test_nested_rewards_each_answer_read_from_its_leaves() -> None:
    env = gym.make("pufferrs/Nested-v0", length=3)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for step in range(3):
        image = obs["image"].max(axis=0)
        quadrant = int(np.argmax([image[:4, :4].min(), image[:4, 4:].min(), image[4:, :4].min(), image[4:, 4:].min()]))
        item = int(obs["inventory"]["items"][obs["query"][0]])
        sign = int(obs["vector"].sum() > 0)
        wrong_item = (item + 1) % 4
        action = [quadrant, item, sign] if step != 1 else [quadrant, wrong_item, sign]
        obs, reward, terminal, _, info = env.step(np.array(action))
        assert reward == pytest.approx(1.0 if step != 1 else 2 / 3)
    assert terminal
    assert info["score"] == pytest.approx((2 + 2 / 3) / 3) and info["success"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------
# GAE


def reference_advantages(
    values: np.ndarray,
    bootstrap: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    truncations: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """GAE for one env at a time, written as plainly as possible."""
    out = np.zeros_like(values)
    for i in range(values.shape[0]):
        gae = 0.0
        for t in reversed(range(values.shape[1])):
            if terminals[i, t]:
                gae = rewards[i, t] - values[i, t]
            elif truncations[i, t]:
                gae = rewards[i, t] + gamma * values[i, t] - values[i, t]
            else:
                next_value = values[i, t + 1] if t + 1 < values.shape[1] else bootstrap[i]
                gae = rewards[i, t] + gamma * next_value - values[i, t] + gamma * lam * gae
            out[i, t] = gae
    return out


def test_advantages_match_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    n, t = 5, 12
    values = rng.normal(size=(n, t)).astype(np.float32)
    bootstrap = rng.normal(size=n).astype(np.float32)
    rewards = rng.normal(size=(n, t)).astype(np.float32)
    terminals = rng.random((n, t)) < 0.15
    truncations = rng.random((n, t)) < 0.15
    terminals[0, -1] = True  # an episode ending at the last step: no bootstrap
    truncations[1, 3] = True
    terminals[1, 3] = False
    got = compute_advantages(
        *(torch.as_tensor(a) for a in (values, bootstrap, rewards, terminals, truncations)), gamma=0.9, gae_lambda=0.8
    )
    np.testing.assert_allclose(
        got.numpy(),
        reference_advantages(values, bootstrap, rewards, terminals, truncations, 0.9, 0.8),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_truncated_step_bootstraps_from_its_own_value() -> None:
    def advantage(terminal: bool) -> float:
        one = torch.ones(1, 1)
        flags = torch.tensor([[terminal]]), torch.tensor([[True]])
        return compute_advantages(2 * one, torch.tensor([100.0]), one, *flags, gamma=0.5, gae_lambda=1.0).item()

    assert advantage(terminal=False) == pytest.approx(1 + 0.5 * 2 - 2)  # not + 0.5 * 100: the next episode's value
    assert advantage(terminal=True) == pytest.approx(1 - 2)  # terminal wins


# ---------------------------------------------------------------------------
# Rollouts store what happened


def replay(env_id: str, seed: int, actions: np.ndarray, **kwargs: Any) -> tuple[list, list, list]:
    """Observations, rewards and ends of one env stepped with ``actions``
    from ``reset(seed)``, resetting at episode ends like the vector env."""
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    observations, rewards, ends = [], [], []
    for action in actions:
        observations.append(obs)
        obs, reward, terminal, truncation, _ = env.step(action)
        rewards.append(reward)
        ends.append((terminal, truncation))
        if terminal or truncation:
            obs, _ = env.reset()
    return observations, rewards, ends


@pytest.mark.parametrize(
    "backend, env_batch_size",
    [("serial", None), ("serial", 2), ("multiprocessing", None), ("multiprocessing", 2)],
    ids=["serial", "serial-async", "multiprocessing", "multiprocessing-async"],
)
def test_first_rollout_stores_every_envs_own_steps(backend: str, env_batch_size: int | None) -> None:
    config = small(
        "CartPole-v1",
        backend=backend,
        num_workers=4 if backend == "multiprocessing" else None,
        env_batch_size=env_batch_size,
        seed=3,
    )
    with Trainer(config) as trainer:
        trainer.rollout()
        exp = trainer.experience
        assert trainer.progress.stored.tolist() == [config.horizon] * config.num_envs
        for i in range(config.num_envs):
            actions = exp.actions[i].numpy()
            observations, rewards, ends = replay("CartPole-v1", config.seed + i, actions)
            np.testing.assert_array_equal(exp.obs[i].numpy(), np.stack(observations))
            np.testing.assert_array_equal(exp.rewards[i].numpy(), np.float32(rewards))
            assert exp.terminals[i].tolist() == [e[0] for e in ends]
            assert exp.truncations[i].tolist() == [e[1] for e in ends]
            starts = [True] + [e[0] or e[1] for e in ends[:-1]]
            assert exp.episode_starts[i].tolist() == starts


def test_synchronous_rollouts_lose_no_step_between_updates() -> None:
    """The batch that completes a rollout is held over the update: the next
    rollout begins with the observation that followed the last stored one."""
    config = small("CartPole-v1", seed=5)
    with Trainer(config) as trainer:
        trainer.rollout()
        first = [trainer.experience.actions[i].clone() for i in range(config.num_envs)]
        trainer.learn()
        trainer.rollout()
        for i in range(config.num_envs):
            actions = torch.cat([first[i], trainer.experience.actions[i]]).numpy()
            observations, _, _ = replay("CartPole-v1", config.seed + i, actions)
            np.testing.assert_array_equal(trainer.experience.obs[i].numpy(), np.stack(observations[config.horizon :]))


# ---------------------------------------------------------------------------
# LSTM state: zeroed at episode starts, stored at segment starts, replayed


def lstm_trainer(**overrides: Any) -> Trainer:
    # Episodes of 5 steps against segments of 8: episodes start inside
    # segments, and segments start inside episodes.
    values = dict(
        env_kwargs={"delay": 4},
        num_envs=6,
        batch_size=6 * 24,
        minibatch_size=48,
        bptt_horizon=8,
        total_steps=6 * 24,
        hidden_size=16,
        seed=11,
    )
    values.update(overrides)
    return Trainer(Config.for_env("pufferrs/Memory-v0", **values))


@pytest.mark.parametrize("env_batch_size", [None, 2], ids=["sync", "async"])
def test_training_replays_the_rollout_exactly(env_batch_size: int | None) -> None:
    """Before any update, the training forward (whole segments from their
    stored start states, zeroed at stored episode starts) reproduces every
    log-probability and value the rollout computed step by step."""
    with lstm_trainer(env_batch_size=env_batch_size) as trainer:
        trainer.rollout()
        exp = trainer.experience
        count, length = trainer.segments()
        assert (count, length) == (6 * 24 // 8, 8)
        # The setup really has both kinds of boundary.
        assert exp.episode_starts[:, 1:].any() and (~exp.episode_starts[:, ::8]).any()
        everything = torch.arange(count)
        with torch.no_grad():
            logprobs, _, values = trainer.evaluate_segments(everything)
        torch.testing.assert_close(logprobs, exp.logprobs.reshape(-1), rtol=0, atol=1e-5)
        torch.testing.assert_close(values, exp.values.reshape(-1), rtol=0, atol=1e-5)

        # Each ingredient matters: without the stored start states, or
        # without the episode starts, the replay is wrong.
        saved = exp.lstm_h.clone(), exp.lstm_c.clone()
        exp.lstm_h.zero_()
        exp.lstm_c.zero_()
        with torch.no_grad():
            _, _, zero_start = trainer.evaluate_segments(everything)
        exp.lstm_h.copy_(saved[0])
        exp.lstm_c.copy_(saved[1])
        assert (zero_start - exp.values.reshape(-1)).abs().max() > 1e-3
        starts = exp.episode_starts.clone()
        exp.episode_starts[:, 1:] = False
        with torch.no_grad():
            _, _, no_resets = trainer.evaluate_segments(everything)
        exp.episode_starts.copy_(starts)
        assert (no_resets - exp.values.reshape(-1)).abs().max() > 1e-3


def test_rollout_starts_every_episode_from_zero_state() -> None:
    with lstm_trainer() as trainer:
        trainer.rollout()
        exp, policy = trainer.experience, trainer.policy
        assert isinstance(policy, LSTMWrapper)
        starts = exp.episode_starts
        with torch.no_grad():
            _, fresh = policy.forward_eval(exp.obs[starts], {})  # zero state
        torch.testing.assert_close(fresh, exp.values[starts], rtol=0, atol=1e-5)
        # Stored segment start states are zero exactly where the segment's
        # first step starts an episode, and carry memory elsewhere.
        segment_starts = starts[:, ::8]
        norms = exp.lstm_h.norm(dim=-1)
        assert (norms[segment_starts] == 0).all()
        assert (norms[~segment_starts] > 0).all()
        # The memory is real: mid-episode steps differ from a fresh start.
        with torch.no_grad():
            _, cold = policy.forward_eval(exp.obs[~starts], {})
        assert (cold - exp.values[~starts]).abs().max() > 1e-3


def test_one_update_changes_the_policy_within_the_clip() -> None:
    with lstm_trainer(total_steps=6 * 24) as trainer:
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        trainer.rollout()
        losses = trainer.learn()
        assert all(np.isfinite(v) for v in losses.values())
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
        assert 0 <= losses["clipfrac"] <= 1 and losses["approx_kl"] >= 0


def test_actions_reach_the_env_in_its_own_space() -> None:
    import gymnasium.spaces as gs

    from pufferrs.actions import ActionAdapter, greedy_action

    discrete = ActionAdapter(gs.Discrete(3, start=-1))
    assert discrete(torch.tensor([0, 2])).tolist() == [-1, 1]
    multi = ActionAdapter(gs.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 1], [0, 0]]))
    assert multi.shape == (4,)
    assert multi(torch.tensor([[1, 2, 3, 4]])).tolist() == [[[2, 3], [3, 4]]]
    box = ActionAdapter(gs.Box(-2, 2, (2,), np.float32))
    out = box(torch.tensor([[-3.0, 0.5]]))
    assert out.dtype == np.float32 and out.tolist() == [[-2.0, 0.5]]  # clipped to the Box
    with pytest.raises(ConfigError, match="not supported"):
        ActionAdapter(gs.Dict(a=gs.Discrete(2)))
    assert greedy_action(torch.tensor([[0.0, 3.0, 1.0]])).tolist() == [1]
    assert greedy_action((torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 1.0, 9.0]]))).tolist() == [[0, 2]]


def test_continuous_actions_train(tmp_path: Path) -> None:
    config = small("Pendulum-v1", run_dir=str(tmp_path))
    with Trainer(config) as trainer:
        summary = trainer.train()
    assert summary["global_step"] == 256 and trainer.experience.actions.dtype == torch.float32


# ---------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=130), "must be a multiple of num_envs"),
        (dict(batch_size=128, bptt_horizon=12, lstm=True), "multiple of bptt_horizon"),
        (dict(minibatch_size=48), "must divide batch_size"),
        (dict(total_steps=64), "less than one batch"),
        (dict(backend="threads"), "backend must be"),
        (dict(gamma=1.5), "gamma must be in"),
        (dict(num_envs=0), "num_envs must be a positive integer"),
        (dict(device="tpu"), "device must be"),
    ],
)
def test_bad_configs_are_refused_with_the_setting_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small("CartPole-v1", **overrides).validate()


def test_presets_and_overrides() -> None:
    config = Config.for_env("pufferrs/Memory-v0", hidden_size=8)
    assert config.lstm and config.hidden_size == 8
    assert not Config.for_env("CartPole-v1").lstm
    with pytest.raises(ConfigError, match="unknown config fields: nope"):
        Config.for_env("CartPole-v1", nope=1)


def test_unknown_env_and_bad_env_kwargs_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown env 'NoSuchEnv-v0'"):
        Trainer(small("NoSuchEnv-v0"))
    with pytest.raises(ConfigError, match="delay must be at least 1"):
        Trainer(small("pufferrs/Memory-v0", env_kwargs={"delay": 0}))


def test_process_settings_are_applied_by_the_caller_not_the_trainer() -> None:
    config = small("CartPole-v1", torch_threads=2, torch_deterministic=False, seed=7)
    vecenv = make_vecenv(config)
    policy = make_policy(vecenv, config)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with Trainer(config, vecenv, policy):
        assert torch.equal(torch.rand(3), expected)  # not reseeded
        assert torch.get_num_threads() == 1 and not torch.backends.cudnn.benchmark
        apply_process_settings(config)
        assert torch.get_num_threads() == 2 and torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.deterministic
        seeded = torch.rand(3)
        torch.manual_seed(7)
        assert torch.equal(seeded, torch.rand(3))


# ---------------------------------------------------------------------------
# Learning (fixed seeds; each well inside its budget on a 2-core CPU)


def train_and_evaluate(env: str, episodes: int = 100, **overrides: Any) -> tuple[dict, dict]:
    config = Config.for_env(env, **overrides)
    apply_process_settings(config)  # the seeds, as `pufferrs train` sets them
    with Trainer(config) as trainer:
        summary = trainer.train()
        result = evaluate(trainer.policy, config, episodes=episodes)
    return summary, result


@pytest.mark.slow
def test_cartpole_is_solved() -> None:
    summary, result = train_and_evaluate("CartPole-v1", episodes=20)
    assert result["mean_return"] >= 400, (summary, result)


@pytest.mark.slow
def test_memory_is_solved_with_an_lstm_and_not_without() -> None:
    _, recurrent = train_and_evaluate("pufferrs/Memory-v0", episodes=200)
    assert recurrent["mean_success"] >= 0.9, recurrent
    # The same budget without memory: nothing at the query step tells the
    # cue, so success stays at chance (1/2).
    _, feedforward = train_and_evaluate("pufferrs/Memory-v0", episodes=200, lstm=False)
    assert feedforward["mean_success"] <= 0.7, feedforward


@pytest.mark.slow
def test_nested_observations_are_learned_with_asynchronous_workers() -> None:
    """Every answer needs leaves of the nested row read right (a uint8
    image, a float vector, a Discrete indexing a MultiDiscrete across
    branches); the rollouts run on two worker processes, half the envs per
    recv."""
    summary, result = train_and_evaluate(
        "pufferrs/Nested-v0", episodes=32, backend="multiprocessing", num_workers=2, env_batch_size=8
    )
    assert result["mean_score"] >= 0.9, (summary, result)


# ---------------------------------------------------------------------------
# Options: observation normalisation, torch.compile


def test_normalized_observations_merge_every_rollout_and_checkpoint(tmp_path: Path) -> None:
    config = small("CartPole-v1", normalize_observations=True, obs_clip=4.0, run_dir=str(tmp_path / "run"))
    seen = []
    with Trainer(config) as trainer:
        normalizer = trainer.policy.normalizer
        trainer.train(on_update=lambda _: seen.append(trainer.experience.obs.clone()))
        assert normalizer.clip == 4.0
    everything = torch.cat(seen).reshape(-1, 4).double()
    assert normalizer.count.item() == len(everything) == config.num_updates * config.batch_size
    torch.testing.assert_close(normalizer.mean, everything.mean(0))
    torch.testing.assert_close(normalizer.var, everything.var(0, correction=0))
    policy, _, _ = policy_from_checkpoint(tmp_path / "run" / "model.pt")
    torch.testing.assert_close(policy.normalizer.mean, normalizer.mean)


def test_normalizing_byte_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs float observations"):
        Trainer(small("pufferrs/Nested-v0", normalize_observations=True))


# The Pendulum preset's envs, batch, network and minibatch: a compiling test
# with these compiles test_pendulum_is_learned_with_no_flags's graphs, and
# inductor's cache serves whichever runs later (one cold compile in CI).
PENDULUM_SHAPES = dict(num_envs=8, batch_size=2048, minibatch_size=64, hidden_size=64)


def learn_twice(trainer: Trainer, step: Any) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """``(losses, parameters after)`` of one update on the trainer's rollout
    by its own gradient step, then again from the same start (policy,
    Adam's state, minibatch order) by ``step``; the second pair is returned
    after the first is checked to differ from the start."""
    start = [copy.deepcopy(x.state_dict()) for x in (trainer.policy, trainer.optimizer)]
    order = torch.get_rng_state()  # in one process the shuffle draws from torch's generator
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    first = trainer.learn(), {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    assert any(not torch.equal(before[k], first[1][k]) for k in before)
    trainer.policy.load_state_dict(start[0])
    trainer.optimizer.load_state_dict(start[1])
    torch.set_rng_state(order)
    trainer.gradient_step = step
    return first, (trainer.learn(), dict(trainer.policy.state_dict()))


@pytest.mark.parametrize(
    "env",
    ["Pendulum-v1", "CartPole-v1", "pufferrs.multiagent_envs.Rendezvous"],
    ids=["normal", "categorical", "masked"],
)
def test_the_fused_gradient_step_takes_the_step_of_the_backward_one(env: str) -> None:
    """torch.func's gradients (what a compiled update runs) move the policy
    as autograd's backward does: the same update from the same start, for
    continuous and discrete actions and for agents that do not always act."""
    config = small(env, compile=False, update_epochs=2)
    with Trainer(config) as trainer:
        trainer.rollout()
        assert trainer.experience.host_masks.all() == (env != "pufferrs.multiagent_envs.Rendezvous")
        (losses, backward), (fused_losses, fused) = learn_twice(trainer, trainer.fused_gradient_step)
    for key in backward:
        torch.testing.assert_close(fused[key], backward[key], rtol=1e-5, atol=1e-6)
    assert fused_losses == pytest.approx(losses, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_a_compiled_update_is_the_eager_update_and_trains() -> None:
    """Compiled whole (loss, gradients, clip and Adam's step in one graph),
    an update moves the policy as the eager one does, within float
    reassociation; then training compiles nothing more (the annealed
    learning rate included). Warnings are errors here, so a fallback to
    eager would fail. (An LSTM's compiled forward: tests/test_models.py.)"""
    from torch._dynamo.utils import counters

    config = small("Pendulum-v1", compile=True, update_epochs=2, total_steps=2048 * 3, **PENDULUM_SHAPES)
    with Trainer(config) as trainer:
        trainer.rollout()
        compiled_step = trainer.gradient_step
        before = counters["stats"]["unique_graphs"]
        (losses, compiled), (eager_losses, eager) = learn_twice(trainer, compiled_step.fn)
        assert compiled_step.worked and compiled_step.compiled is not None
        # One graph: no graph break (Optimizer.step's wrapper makes two).
        assert counters["stats"]["unique_graphs"] == before + 1
        for key in eager:
            torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
        assert losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-5)

        trainer.gradient_step = compiled_step
        graphs: list[int] = []
        summary = trainer.train(lambda row: graphs.append(counters["stats"]["unique_graphs"]))
        # On a CPU the rollout's policy call compiles with its sampling; the
        # forward alone (the final observations') stays eager.
        assert trainer.forward_eval == trainer.policy.forward_eval
        assert trainer.policy_step.worked and trainer.policy_step.compiled is not None
        obs = trainer.experience.obs[:, 0]
        with torch.no_grad():
            values, actions, logprobs = trainer.policy_step(obs, None)
            logits, eager_values = trainer.policy.forward_eval(obs)
            _, eager_logprobs, _ = trainer.actor.sample(logits, obs, actions)
        torch.testing.assert_close(values, eager_values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logprobs, eager_logprobs, rtol=1e-5, atol=1e-5)
        assert actions.shape == (config.num_envs, 1) and actions.std() > 0
    assert summary["global_step"] == 2048 * 4  # the rollout above, then three updates'
    assert all(np.isfinite(row["losses/policy_loss"]) for row in trainer.metrics)
    # The annealed learning rate changes at every update without compiling
    # the optimizer's step again (a float rate recompiled it each update).
    rates = [row["learning_rate"] for row in trainer.metrics]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == config.num_updates > 2
    assert graphs[0] == graphs[-1], graphs


def test_each_trainer_of_a_process_compiles_its_own_update() -> None:
    """Dynamo keeps at most ``recompile_limit`` graphs per code object,
    counting those of trainers already gone; each trainer's update compiles
    on a code object of its own, so a sweep's ninth trial in a process
    still compiles. Here the limit is 1 and two trainers in turn each get
    their graph (one code object for both ran the second one eagerly)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    with torch._dynamo.config.patch(recompile_limit=1):
        for _ in range(2):
            before = counters["stats"]["unique_graphs"]
            config = small("Pendulum-v1", compile=True, update_epochs=1, total_steps=2048, **PENDULUM_SHAPES)
            with Trainer(config) as trainer:
                trainer.train()
            assert trainer.gradient_step.worked and trainer.policy_step.worked
            # The update's graph and the rollout's policy call.
            assert counters["stats"]["unique_graphs"] == before + 2


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from pufferrs.compiling import CompiledOrEager

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda fn, **options: broken)
    double = CompiledOrEager(lambda x: 2 * x)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, running eagerly: RuntimeError: no compiler"):
        assert double(3) == 6
    assert double(4) == 8  # eager from now on, without another warning
    # A compiled form's own eager twin is what runs instead of it.
    twice = CompiledOrEager(lambda x: 2 * x, eager=lambda x: x + x)
    with pytest.warns(RuntimeWarning):
        assert twice("a") == "aa"


@pytest.mark.parametrize(
    "env, overrides, compiles, why",
    [
        ("HalfCheetah-v5", {}, True, "156,480 gradient steps of an MLP on a CPU"),
        ("InvertedPendulum-v5", {"total_steps": 100_000}, True, "15,680 gradient steps"),
        ("CartPole-v1", {}, False, "3,136 gradient steps, fewer than the 10,000"),
        ("HalfCheetah-v5", {"device": "cuda"}, False, "eager on a GPU"),
        ("HalfCheetah-v5", {"lstm": True}, False, "eager except for an MLP"),
        ("CartPole-v1", {"compile": True}, True, "--compile"),
        ("HalfCheetah-v5", {"compile": False}, False, "--no-compile"),
    ],
)
def test_an_unset_compile_compiles_where_it_pays(env: str, overrides: dict, compiles: bool, why: str) -> None:
    from pufferrs.compiling import compile_choice

    config = Config.for_env(env, **overrides)
    device = torch.device(config.device if config.device != "auto" else "cpu")
    chosen, reason = compile_choice(config, device, config.lstm, 1, gym.spaces.Box(-1, 1, (17,), np.float32))
    assert chosen == compiles and why in reason, reason
    if config.compile is None:  # images, byte rows and torchrun stay eager
        for dtype, shape, ranks in ((np.uint8, (84, 84), 1), (np.uint8, (40,), 1), (np.float32, (17,), 2)):
            assert compile_choice(config, device, False, ranks, gym.spaces.Box(0, 1, shape, dtype))[0] is False


@pytest.mark.gpu
@pytest.mark.parametrize(
    "env, backend", [("CartPole-v1", "serial"), ("pufferrs/Memory-v0", "multiprocessing")], ids=["mlp", "lstm"]
)
def test_training_on_cuda_from_page_locked_rows(env: str, backend: str) -> None:
    """On CUDA the vector env's rows are page-locked in place and copied
    asynchronously; the policy trains there and its numbers stay finite."""
    config = small(env, device="cuda", backend=backend, num_workers=2 if backend == "multiprocessing" else None)
    with Trainer(config) as trainer:
        assert trainer.to_device.rows_pinned  # pin_memory() worked: no staging copy of the rows
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        trainer.train()
        after = list(trainer.policy.parameters())
    assert all(p.device.type == "cuda" for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert len(trainer.metrics) == config.num_updates == 2
    for row in trainer.metrics:
        assert all(math.isfinite(value) for value in row.values()), row
        assert row["losses/approx_kl"] >= 0


# ---------------------------------------------------------------------------
# Checkpoints and the command line


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pufferrs", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    config = small("pufferrs/Memory-v0", run_dir=str(tmp_path / "run"), checkpoint_interval=1)
    with Trainer(config) as trainer:
        trainer.train()
        weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    checkpoint, loaded = load_checkpoint(tmp_path / "run" / "model.pt")
    assert loaded == config and checkpoint["update"] == config.num_updates == 2
    assert (tmp_path / "run" / "checkpoints" / "update_000001.pt").exists()
    policy, _, _ = policy_from_checkpoint(tmp_path / "run" / "model.pt")
    for key, value in policy.state_dict().items():
        assert torch.equal(value, weights[key]), key
    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``pufferrs ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exits: --help, usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_help(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    for option in ("--num-envs", "--total-steps", "--device", "--lstm", "--no-lstm", "--backend", "--env-batch-size"):
        assert option in out
    for option in ("--resume", "--config", "--print-config", "--track", "--wandb-mode", "--eval-interval"):
        assert option in out
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and all(c in out for c in ("train", "eval", "sweep", "demo"))


def test_cli_tiny_run_then_eval(tmp_path: Path) -> None:
    result = run_cli(
        "train",
        "CartPole-v1",
        "--total-steps",
        "2048",
        "--batch-size",
        "512",
        "--minibatch-size",
        "128",
        "--checkpoint-interval",
        "2",
        "--name",
        "tiny",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["global_step"] == 2048 and "losses/policy_loss" in rows[-1] and "env/episode_return" in rows[-1]
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "model.pt").exists() and (run / "checkpoints" / "update_000002.pt").exists()
    assert json.loads((run / "config.json").read_text())["batch_size"] == 512
    assert "summary" in result.stdout and "update 4/4" in result.stdout  # plain lines: not a terminal

    evaluated = run_cli("eval", str(run / "model.pt"), "--episodes", "3", "--sample")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.count("  episode ") == 3 and "mean return" in evaluated.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "NoSuchEnv-v0"], "unknown env 'NoSuchEnv-v0'"),
        (["train", "CartPole-v1", "--batch-size", "1000", "--num-envs", "7"], "must be a multiple of num_envs"),
        (["train", "CartPole-v1", "--num-envs", "8", "--env-batch-size", "3"], "batch_size (3)"),
        (["train", "--total-steps", "many"], "invalid int value"),
        (["train", "--env-kwargs", "{nope"], "not valid JSON"),
        (["train", "--env-kwargs", "[1]"], "expected a JSON object"),
        (["train", "--backend", "threads"], "invalid choice"),
        (["train", "pufferrs/Memory-v0", "--env-kwargs", '{"delay": 0}'], "delay must be at least 1"),
        (["eval", "no/such/model.pt"], "no checkpoint at"),
        (["eval", "model.pt", "--episodes", "0"], "episodes must be positive"),
    ],
)
def test_cli_bad_arguments_get_a_message(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_cli_bad_arguments_exit_without_a_traceback(tmp_path: Path) -> None:
    """The same, as a real process: exit status 2 and one line of message."""
    result = run_cli("train", "CartPole-v1", "--minibatch-size", "1000", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pufferrs train: error: minibatch_size (1000) must divide batch_size (1024)"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "train", "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


def test_cli_without_a_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys)
    assert code == 2 and "train" in out
