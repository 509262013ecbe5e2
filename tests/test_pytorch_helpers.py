"""layer_init, sample_logits, log_prob and entropy (pufferrs.pytorch)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from pufferrs.pytorch import entropy, layer_init, log_prob, sample_logits

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _gram(weight: torch.Tensor) -> torch.Tensor:
    """W W^T or W^T W, whichever is the identity for an orthogonal W."""
    w = weight.reshape(weight.shape[0], -1)
    return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w


# --------------------------------------------------------------------------
# layer_init
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [nn.Linear(64, 32), nn.Linear(16, 48), nn.Conv2d(4, 8, 3), nn.Conv1d(2, 64, 5)],
    ids=["linear-wide", "linear-tall", "conv2d", "conv1d-tall"],
)
@pytest.mark.parametrize("std", [math.sqrt(2), 0.01, 1.0])
def test_layer_init_is_scaled_orthogonal(layer: nn.Module, std: float) -> None:
    assert layer_init(layer, std=std, bias_const=0.25) is layer
    gram = _gram(layer.weight.detach())
    torch.testing.assert_close(gram, std**2 * torch.eye(gram.shape[0]), atol=1e-5 * max(std**2, 1), rtol=0)
    assert torch.all(layer.bias == 0.25)


def test_layer_init_defaults_and_no_bias() -> None:
    layer = layer_init(nn.Linear(32, 32, bias=False))
    torch.testing.assert_close(_gram(layer.weight.detach()), 2 * torch.eye(32), atol=1e-5, rtol=0)
    biased = layer_init(nn.Linear(8, 4))
    assert torch.all(biased.bias == 0)


# --------------------------------------------------------------------------
# Categorical
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_categorical_matches_torch_distribution(device: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 7, device=device)
    action, logprob, ent = sample_logits(logits)
    assert action.shape == (64,) and action.dtype == torch.int64
    assert logprob.shape == ent.shape == (64,) and logprob.dtype == torch.float32
    assert action.min() >= 0 and action.max() < 7
    reference = Categorical(logits=logits)
    torch.testing.assert_close(logprob, reference.log_prob(action))
    torch.testing.assert_close(ent, reference.entropy())


def test_categorical_samples_follow_the_probabilities() -> None:
    torch.manual_seed(1)
    probs = torch.tensor([0.1, 0.2, 0.0, 0.7])
    logits = probs.log().expand(40_000, 4)
    action, _, _ = sample_logits(logits)
    freq = torch.bincount(action, minlength=4).float() / len(action)
    # Binomial standard error at n = 40000 is at most 0.0025.
    torch.testing.assert_close(freq, probs, atol=0.012, rtol=0)
    assert freq[2] == 0, "an action of probability 0 was sampled"


def test_categorical_scores_a_given_action() -> None:
    torch.manual_seed(2)
    logits = torch.randn(10, 5)
    given = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    action, logprob, ent = sample_logits(logits, given)
    assert action is given
    torch.testing.assert_close(logprob, logits.log_softmax(-1)[torch.arange(10), given])
    torch.testing.assert_close(ent, Categorical(logits=logits).entropy())
    # Actions stored in a float rollout buffer, or with a trailing axis.
    torch.testing.assert_close(sample_logits(logits, given.float())[1], logprob)
    torch.testing.assert_close(sample_logits(logits, given[:, None])[1], logprob)
    torch.testing.assert_close(log_prob(logits, given), logprob)
    torch.testing.assert_close(entropy(logits), ent)


def test_categorical_masked_logits() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2000, 6)
    logits[:, [1, 4]] = float("-inf")
    action, logprob, ent = sample_logits(logits)
    assert not torch.isin(action, torch.tensor([1, 4])).any()
    assert torch.isfinite(logprob).all() and torch.isfinite(ent).all()
    kept = Categorical(logits=logits[:, [0, 2, 3, 5]])
    torch.testing.assert_close(ent, kept.entropy())


def test_categorical_half_precision_upcasts() -> None:
    logits = torch.randn(8, 4).to(torch.bfloat16)
    _, logprob, ent = sample_logits(logits)
    assert logprob.dtype == ent.dtype == torch.float32


def test_categorical_gradients_reach_logits() -> None:
    logits = torch.randn(16, 5, requires_grad=True)
    action, logprob, ent = sample_logits(logits)
    assert not action.requires_grad
    (logprob.sum() + ent.sum()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_leading_dimensions_are_kept() -> None:
    logits = torch.randn(3, 4, 6)
    action, logprob, ent = sample_logits(logits)
    assert action.shape == logprob.shape == ent.shape == (3, 4)
    torch.testing.assert_close(logprob, Categorical(logits=logits).log_prob(action))


# --------------------------------------------------------------------------
# Multi-discrete
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sizes", [(3, 7, 2), (4, 4, 4, 4)], ids=["uneven", "even"])
def test_multidiscrete_sums_over_heads(device: str, sizes: tuple[int, ...]) -> None:
    torch.manual_seed(4)
    heads = tuple(torch.randn(128, n, device=device) for n in sizes)
    action, logprob, ent = sample_logits(heads)
    assert action.shape == (128, len(sizes)) and action.dtype == torch.int64
    for i, n in enumerate(sizes):
        assert action[:, i].min() >= 0 and action[:, i].max() < n, "a padded class was sampled"
    expected_lp = sum(Categorical(logits=h).log_prob(action[:, i]) for i, h in enumerate(heads))
    expected_ent = sum(Categorical(logits=h).entropy() for h in heads)
    torch.testing.assert_close(logprob, expected_lp)
    torch.testing.assert_close(ent, expected_ent)

    # Scoring the same action given as a (B, heads) tensor, or per head.
    assert torch.equal(sample_logits(list(heads), action)[1], logprob)
    torch.testing.assert_close(log_prob(heads, tuple(action.unbind(-1))), logprob)
    torch.testing.assert_close(entropy(heads), ent)


def test_multidiscrete_heads_are_sampled_independently() -> None:
    torch.manual_seed(5)
    heads = (torch.tensor([[0.0, 10.0]]).expand(4000, 2), torch.zeros(4000, 3))
    action, _, _ = sample_logits(heads)
    assert (action[:, 0] == 1).float().mean() > 0.99
    freq = torch.bincount(action[:, 1], minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3), atol=0.03, rtol=0)


def test_multidiscrete_errors() -> None:
    heads = (torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="2 heads"):
        sample_logits(heads, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        sample_logits(())


# --------------------------------------------------------------------------
# Normal
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(32, 3), (32, 2, 3), (32,)], ids=["vector", "matrix", "scalar"])
def test_normal_sums_over_action_dims(device: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(6)
    dist = Normal(torch.randn(shape, device=device), torch.rand(shape, device=device) + 0.1, validate_args=False)
    action, logprob, ent = sample_logits(dist)
    assert action.shape == shape and action.dtype == torch.float32
    assert logprob.shape == ent.shape == (32,)
    dims = tuple(range(1, len(shape)))
    expected_lp, expected_ent = dist.log_prob(action), dist.entropy()
    if dims:
        expected_lp, expected_ent = expected_lp.sum(dims), expected_ent.sum(dims)
    torch.testing.assert_close(logprob, expected_lp)
    torch.testing.assert_close(ent, expected_ent)
    given = torch.zeros(shape, device=device)
    _, given_lp, _ = sample_logits(dist, given)
    torch.testing.assert_close(given_lp, log_prob(dist, given))
    torch.testing.assert_close(entropy(dist), ent)


def test_normal_samples_and_gradients() -> None:
    torch.manual_seed(7)
    loc = torch.full((20_000, 2), 3.0, requires_grad=True)
    log_std = torch.tensor([[0.0, math.log(0.5)]], requires_grad=True)
    action, logprob, ent = sample_logits(Normal(loc, log_std.exp().expand_as(loc), validate_args=False))
    assert not action.requires_grad
    torch.testing.assert_close(action.mean(0), torch.tensor([3.0, 3.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(action.std(0), torch.tensor([1.0, 0.5]), atol=0.03, rtol=0)
    (logprob.mean() + ent.mean()).backward()
    assert loc.grad is not None and log_std.grad is not None and log_std.grad.abs().sum() > 0


# --------------------------------------------------------------------------
# GPU: no host synchronisation
# --------------------------------------------------------------------------


@pytest.mark.gpu
def test_sampling_never_syncs_with_the_gpu() -> None:
    torch.manual_seed(8)
    logits = torch.randn(256, 6, device="cuda")
    heads = (torch.randn(256, 3, device="cuda"), torch.randn(256, 5, device="cuda"))
    dist = Normal(torch.zeros(256, 2, device="cuda"), torch.ones(256, 2, device="cuda"), validate_args=False)
    given = torch.zeros(256, dtype=torch.int64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for case in (logits, heads, dist):
            sample_logits(case)
            entropy(case)
        sample_logits(logits, given)
        sample_logits(heads, torch.zeros(256, 2, dtype=torch.int64, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
