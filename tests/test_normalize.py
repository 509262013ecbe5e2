"""ObservationNormalizer: running statistics against numpy, precision,
clipping, when it updates, and what it saves."""

from __future__ import annotations

import copy
import io
import pickle
from types import SimpleNamespace

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from conftest import one_step_config
from pufferrs.models import Default, LSTMWrapper
from pufferrs.normalize import NormalizedPolicy, ObservationNormalizer

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def data_and_splits(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    """Observations (n, *shape) and cut points that split them into batches
    (empty batches included)."""
    shape = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    n = draw(st.integers(1, 40))
    data = draw(hnp.arrays(np.float64, (n, *shape), elements=finite))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return data, cuts


def _batches(data: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@given(data_and_splits())
def test_running_statistics_match_numpy_over_any_split(case: tuple[np.ndarray, list[int]]) -> None:
    data, cuts = case
    norm = ObservationNormalizer(data.shape[1:])
    for batch in _batches(data, cuts):
        norm.update(torch.from_numpy(batch))
    assert norm.count.item() == len(data)
    scale = max(1.0, float(np.abs(data).max()))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=1e-9, atol=1e-12 * scale**2)


@given(data_and_splits(), st.integers(0, 2**32 - 1))
def test_statistics_do_not_depend_on_how_data_is_split(case: tuple[np.ndarray, list[int]], seed: int) -> None:
    data, cuts = case
    whole = ObservationNormalizer(data.shape[1:])
    whole.update(torch.from_numpy(data))
    other_cuts = sorted(np.random.default_rng(seed).integers(0, len(data) + 1, size=3).tolist())
    split = ObservationNormalizer(data.shape[1:])
    for batch in _batches(data, other_cuts):
        split.update(torch.from_numpy(batch))
    scale = max(1.0, float(np.abs(data).max()))
    torch.testing.assert_close(split.mean, whole.mean, rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(split.var, whole.var, rtol=1e-9, atol=1e-12 * scale**2)


def test_leading_axes_all_count_as_batch() -> None:
    data = torch.randn(4, 5, 3, dtype=torch.float64)  # (batch, time, obs)
    norm = ObservationNormalizer(3)
    norm.update(data)
    flat = data.reshape(-1, 3).numpy()
    assert norm.count.item() == 20
    np.testing.assert_allclose(norm.mean.numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), flat.var(0), rtol=1e-12)


def test_float64_accumulators_survive_a_large_offset_and_many_small_updates() -> None:
    # A large offset and a small spread, in 2000 batches of 5: float32
    # accumulators (or the sum-of-squares formula) lose the variance here.
    rng = np.random.default_rng(0)
    data = 1e8 + rng.normal(0.0, 0.5, size=(10_000, 2))
    norm = ObservationNormalizer(2)
    for batch in np.split(data, 2000):
        norm.update(torch.from_numpy(batch))
    assert norm.mean.dtype == norm.var.dtype == norm.count.dtype == torch.float64
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-14)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-8)
    # float32 observations are accumulated in float64 too.
    small = ObservationNormalizer(2)
    as32 = data.astype(np.float32) - np.float32(1e8)
    for batch in np.split(as32, 2000):
        small.update(torch.from_numpy(batch))
    np.testing.assert_allclose(small.var.numpy(), as32.astype(np.float64).var(0), rtol=1e-10)


def test_accumulators_stay_float64_through_dtype_casts() -> None:
    norm = ObservationNormalizer(3)
    norm.update(torch.tensor([[1.0, 2.0, 3.0], [1.0 + 1e-9, 2.0, 3.0]], dtype=torch.float64))
    before = norm.mean.clone()
    norm.half()
    assert norm.mean.dtype == torch.float64 and torch.equal(norm.mean, before)
    norm.to(torch.bfloat16)
    assert norm.var.dtype == norm.count.dtype == torch.float64
    out = norm(torch.ones(2, 3, dtype=torch.float16))
    assert out.dtype == torch.float16


def test_normalizes_and_clips() -> None:
    norm = ObservationNormalizer(2, clip=3.0)
    data = torch.tensor([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]])
    norm.update(data)
    mean, std = data.double().mean(0), data.double().std(0, unbiased=False)
    probe = torch.tensor([[2.0, 40.0], [100.0, -100.0]])
    expected = ((probe.double() - mean) / (std**2 + norm.epsilon).sqrt()).clamp(-3, 3)
    torch.testing.assert_close(norm(probe), expected.float())
    assert norm(probe)[1].tolist() == [3.0, -3.0]


def test_before_any_update_observations_are_only_clipped() -> None:
    norm = ObservationNormalizer(3, clip=5.0)
    x = torch.tensor([[0.5, -7.0, 2.0]])
    torch.testing.assert_close(norm(x), torch.tensor([[0.5, -5.0, 2.0]]), atol=1e-6, rtol=0)


def test_integer_observations_come_out_float32() -> None:
    norm = ObservationNormalizer((2,))
    norm.update(torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8))
    out = norm(torch.tensor([[255, 255]], dtype=torch.uint8))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0]]), atol=1e-6, rtol=0)


def test_statistics_change_only_when_asked() -> None:
    norm = ObservationNormalizer(2)
    x = torch.randn(16, 2) * 5 + 3
    norm.train()
    norm(x)  # neither train mode nor a forward pass updates
    assert norm.count.item() == 0 and torch.equal(norm.mean, torch.zeros(2, dtype=torch.float64))
    y = norm(x, update=True)  # merges first, then normalises
    assert norm.count.item() == 16
    torch.testing.assert_close(y.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    norm.eval()
    norm.update(x)
    assert norm.count.item() == 32


def test_empty_batch_changes_nothing() -> None:
    norm = ObservationNormalizer(2)
    norm.update(torch.randn(5, 2))
    state = copy.deepcopy(norm.state_dict())
    norm.update(torch.empty(0, 2))
    for key, value in norm.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_wrong_shape_is_refused() -> None:
    norm = ObservationNormalizer((3,))
    with pytest.raises(ValueError, match=r"expected observations of shape \(\.\.\., 3\), got \(4, 2\)"):
        norm(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="got"):
        norm.update(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="clip"):
        ObservationNormalizer(3, clip=0)


def test_state_dict_round_trip() -> None:
    norm = ObservationNormalizer((2, 3), clip=4.0)
    norm.update(torch.randn(50, 2, 3, dtype=torch.float64) * 3 + 1)
    state = norm.state_dict()
    assert set(state) == {"mean", "var", "count"}
    assert all(t.dtype == torch.float64 for t in state.values())

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = ObservationNormalizer((2, 3), clip=4.0)
    restored.load_state_dict(torch.load(buffer))
    probe = torch.randn(7, 2, 3)
    torch.testing.assert_close(restored(probe), norm(probe), rtol=0, atol=0)
    # Updates continue from the loaded totals.
    more = torch.randn(9, 2, 3, dtype=torch.float64)
    norm.update(more)
    restored.update(more)
    torch.testing.assert_close(restored.var, norm.var, rtol=0, atol=0)
    # The whole module pickles (its load hook is a plain function).
    clone = pickle.loads(pickle.dumps(norm))
    torch.testing.assert_close(clone(probe), norm(probe), rtol=0, atol=0)


# --------------------------------------------------------------------------
# NormalizedPolicy
# --------------------------------------------------------------------------


def _env(obs_space: gs.Space, action_space: gs.Space = gs.Discrete(3)) -> SimpleNamespace:
    return SimpleNamespace(single_observation_space=obs_space, single_action_space=action_space)


class _Recorder(nn.Module):
    """Returns what it was given, to see what a wrapper passes on."""

    hidden_size = 7

    def forward(self, observations: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        return observations, state

    def forward_eval(self, observations: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        return observations, ("eval", state)


def test_normalized_policy_passes_normalized_observations_and_state() -> None:
    env = _env(gs.Box(-1e3, 1e3, (2,), np.float32))
    policy = NormalizedPolicy(env, _Recorder())
    x = torch.tensor([[10.0, 20.0], [30.0, 60.0]])
    policy.normalizer.update(x)
    seen, state = policy(x, "s")
    assert state == "s"
    torch.testing.assert_close(seen, policy.normalizer(x))
    seen, state = policy.forward_eval(x, "s")
    assert state == ("eval", "s")
    torch.testing.assert_close(seen, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-6, rtol=0)
    assert policy.hidden_size == 7  # attributes of the wrapped policy show through
    assert set(policy.state_dict()) == {"normalizer.mean", "normalizer.var", "normalizer.count"}


def test_normalized_policy_refuses_byte_rows() -> None:
    with pytest.raises(TypeError, match="float observations"):
        NormalizedPolicy(_env(gs.Box(0, 255, (4,), np.uint8)), _Recorder())


def test_normalized_lstm_policy_trains_end_to_end() -> None:
    env = _env(gs.Box(-np.inf, np.inf, (5,), np.float32))
    policy = NormalizedPolicy(env, LSTMWrapper(env, Default(env, hidden_size=16), 16, 16))
    obs = torch.randn(4, 6, 5) * 100 + 50
    policy.normalizer.update(obs)
    logits, values = policy(obs, {})
    assert logits.shape == (24, 3) and values.shape == (4, 6)
    (logits.sum() + values.sum()).backward()
    assert all(p.grad is not None for p in policy.parameters())
    state: dict = {}
    logits, values = policy.forward_eval(obs[:, 0], state)
    assert logits.shape == (4, 3) and state["lstm_h"].shape == (4, 16)
    assert policy.lstm is policy.policy.lstm


class _OffsetTarget(gym.Env):
    """Point at a target given far from the origin: observations are
    ``50 + 100 * target`` for a target in [-1, 1]^2, the action is the
    target itself, the reward minus the squared miss. One step per episode."""

    def __init__(self) -> None:
        self.observation_space = gs.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gs.Box(-1.0, 1.0, (2,), np.float32)
        self._target = np.zeros(2, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return 50 + 100 * self._target, {}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.square(np.asarray(action, np.float32) - self._target).sum())
        return 50 + 100 * self._target, reward, True, False, {}


class _Gaussian(nn.Module):
    """A small Gaussian actor-critic (the trainer's policy contract)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 32), nn.Tanh())
        self.mean = nn.Linear(32, 2)
        self.logstd = nn.Parameter(torch.zeros(1, 2))
        self.value = nn.Linear(32, 1)

    def forward(
        self, observations: torch.Tensor, state: object = None
    ) -> tuple[torch.distributions.Normal, torch.Tensor]:
        h = self.body(observations)
        mean = self.mean(h)
        return torch.distributions.Normal(mean, self.logstd.exp().expand_as(mean), validate_args=False), self.value(
            h
        ).squeeze(-1)

    def forward_eval(
        self, observations: torch.Tensor, state: object = None
    ) -> tuple[torch.distributions.Normal, torch.Tensor]:
        return self.forward(observations, state)


def test_normalized_policy_under_the_trainer() -> None:
    """The wiring a trainer option needs: wrap the policy, and merge each
    rollout's observations after the update that learned from them. The
    statistics then cover exactly the observations of every rollout, and
    nothing the trainer does on its own (rollout steps, training passes)
    changes them."""
    import pufferrs.vector
    from pufferrs.train import Trainer

    torch.manual_seed(0)
    config = one_step_config("_OffsetTarget", total_steps=16_384)
    vecenv = pufferrs.vector.make(_OffsetTarget, num_envs=config.num_envs, seed=0)
    policy = NormalizedPolicy(vecenv, _Gaussian())
    seen: list[np.ndarray] = []
    with Trainer(config, vecenv, policy) as trainer:

        def after_update(metrics: dict) -> None:
            rollout = trainer.experience.obs
            seen.append(rollout.reshape(-1, 2).double().numpy().copy())
            policy.normalizer.update(rollout)

        trainer.train(after_update)
    everything = np.concatenate(seen)
    assert policy.normalizer.count.item() == len(everything) == 16_384
    np.testing.assert_allclose(policy.normalizer.mean.numpy(), everything.mean(0), rtol=1e-12)
    np.testing.assert_allclose(policy.normalizer.var.numpy(), everything.var(0), rtol=1e-9)
    returns = [m["env/episode_return"] for m in trainer.metrics]
    assert np.mean(returns[-2:]) > returns[0] + 0.5, returns
    assert {"normalizer.mean", "normalizer.var", "normalizer.count"} <= set(policy.state_dict())


@pytest.mark.gpu
def test_update_and_normalize_on_cuda_never_sync() -> None:
    norm = ObservationNormalizer(4).to("cuda")
    assert norm.mean.dtype == torch.float64 and norm.mean.device.type == "cuda"
    x = torch.randn(256, 4, device="cuda") * 3 + 1
    norm.update(x)  # warm-up: lazy CUDA initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        norm.update(x)
        y = norm(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    both = torch.cat([x, x]).double().cpu().numpy()
    np.testing.assert_allclose(norm.mean.cpu().numpy(), both.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.cpu().numpy(), both.var(0), rtol=1e-9)
    assert y.device.type == "cuda" and y.dtype == torch.float32
