"""Action masks (``pufferrs.pytorch.mask_logits``, ``sample_logits(...,
action_mask=)`` and the built-in policies reading an ``action_mask`` leaf):
illegal actions are never sampled, score hugely negative but finite, and
entropy, log-probabilities and their gradients stay finite; a row that
allows nothing allows everything."""

from __future__ import annotations

import types

import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

from pufferrs.acting import Actor
from pufferrs.encoders import Auto
from pufferrs.models import Default, LSTMWrapper
from pufferrs.normalize import NormalizedPolicy
from pufferrs.pytorch import entropy, mask_logits, sample_logits
from pufferrs.spaces import Layout


@st.composite
def masked_logits(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    batch, n = draw(st.integers(1, 16)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.01, 1.0, 30.0, 1000.0]))
    logits = torch.as_tensor(rng.normal(size=(batch, n)) * scale, dtype=torch.float32)
    mask = rng.random((batch, n)) < draw(st.sampled_from([0.1, 0.5, 0.9]))
    # Rows that allow nothing: the zeroed observation of an absent agent.
    mask[rng.random(batch) < 0.2] = False
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.bool_, np.float32]))
    return logits, torch.as_tensor(mask.astype(dtype))


def allowed(mask: torch.Tensor) -> torch.Tensor:
    legal = mask != 0
    return legal | ~legal.any(dim=-1, keepdim=True)


@settings(max_examples=100, deadline=None)
@given(masked_logits(), st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_sampled_actions_are_legal_and_everything_stays_finite(case, dtype) -> None:
    logits, mask = case
    logits = logits.to(dtype).requires_grad_(True)
    legal = allowed(mask)
    for _ in range(5):
        action, logprob, ent = sample_logits(logits, action_mask=mask)
        assert legal.gather(1, action.unsqueeze(1)).all()
    assert torch.isfinite(logprob).all() and torch.isfinite(ent).all()
    # Every action scored: legal ones as without the forbidden ones, illegal
    # ones hugely negative but finite.
    batch, n = logits.shape
    total = ent.sum()
    for a in range(n):
        _, lp, _ = sample_logits(logits, torch.full((batch,), a), action_mask=mask)
        assert torch.isfinite(lp).all()
        assert (lp[~legal[:, a]] < -1e4).all()
        total = total + lp.sum()
    total.backward()
    assert torch.isfinite(logits.grad).all()
    # The legal actions' probabilities are a softmax over them alone.
    probs = mask_logits(logits.detach().float(), mask).softmax(-1)
    assert (probs[~legal] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(batch), atol=1e-3)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_multidiscrete_heads_are_masked_by_their_own_slices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nvec = [3, 5, 2]
    heads = tuple(torch.as_tensor(rng.normal(size=(8, n)), dtype=torch.float32) for n in nvec)
    mask = torch.as_tensor(rng.random((8, sum(nvec))) < 0.4)
    action, logprob, ent = sample_logits(heads, action_mask=mask)
    for k, part in enumerate(mask.split(nvec, dim=-1)):
        assert allowed(part).gather(1, action[:, k : k + 1]).all()
    assert torch.isfinite(logprob).all() and torch.isfinite(ent).all()
    assert torch.isfinite(entropy(mask_logits(heads, mask))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_zero_uniform_draw_never_picks_a_masked_action(monkeypatch, dtype) -> None:
    # Gumbel-max turns a uniform draw u into noise -log(-log u); a draw of
    # exactly 0 (1 in 2**24 for float32) once made the only legal action
    # -inf and left a masked one, finite, the argmax.
    logits = torch.tensor([[0.0, 1.0, 2.0], [5.0, -3.0, 0.0]], dtype=dtype)
    mask = torch.tensor([[0, 1, 0], [0, 0, 1]])

    def largest_below_one(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, 1 - torch.finfo(t.dtype).eps)

    for edge in (torch.zeros_like, largest_below_one):
        monkeypatch.setattr(torch, "rand_like", edge)
        action, logprob, _ = sample_logits(logits, action_mask=mask)
        assert action.tolist() == [1, 2]
        assert torch.isfinite(logprob).all()


def test_the_rule_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.int8)
    masked = mask_logits(logits, mask)
    assert masked[0, 1] == torch.finfo(torch.float32).min
    assert torch.equal(masked[1], logits[1])  # nothing allowed: everything is
    assert mask_logits(logits, None) is logits
    assert torch.equal(mask_logits(masked, mask), masked)  # masking twice changes nothing
    with pytest.raises(ValueError, match="expected 3 entries"):
        mask_logits(logits, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"expected 5 entries \(the heads' \[3, 2\]"):
        mask_logits((logits, logits[:, :2]), torch.ones(2, 4))
    with pytest.raises(ValueError, match="continuous"):
        mask_logits(Normal(torch.zeros(2, 1), torch.ones(2, 1)), torch.ones(2, 1))


# -- the policies -------------------------------------------------------------


def masked_env(action_space: gs.Space, mask_size: int, mask_dtype=np.int8) -> types.SimpleNamespace:
    space = gs.Dict(
        observation=gs.Box(-1, 1, (4,), np.float32),
        action_mask=gs.Box(0, 1, (mask_size,), mask_dtype),
    )
    layout = Layout(space)
    return types.SimpleNamespace(
        single_observation_space=layout.observation_space, single_action_space=action_space, layout=layout
    )


def masked_rows(env: types.SimpleNamespace, batch: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = env.layout.space["action_mask"].shape[0]
    masks = (rng.random((batch, size)) < 0.3).astype(np.int8)
    masks[rng.random(batch) < 0.2] = 0
    obs = [{"observation": rng.uniform(-1, 1, 4).astype(np.float32), "action_mask": m} for m in masks]
    return torch.as_tensor(env.layout.flatten_batch(obs)), masks


POLICIES = {
    "default": lambda env: Default(env, hidden_size=16),
    "auto": lambda env: Auto(env, hidden_size=16),
    "lstm": lambda env: LSTMWrapper(env, Default(env, hidden_size=16), 16, 16),
}


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_policies_never_sample_an_illegal_action(name: str, seed: int) -> None:
    env = masked_env(gs.Discrete(6), 6)
    policy = POLICIES[name](env)
    rows, masks = masked_rows(env, 64, seed)
    legal = allowed(torch.as_tensor(masks))
    with torch.no_grad():
        for _ in range(20):
            logits, _ = policy.forward_eval(rows, {})
            action, _, _ = sample_logits(logits)
            assert legal.gather(1, action.unsqueeze(1)).all()
    # Training's forward, over sequences for the LSTM, masks alike.
    seq = rows.reshape(8, 8, -1) if name == "lstm" else rows
    logits, values = policy(seq, {})
    _, logprob, ent = sample_logits(logits, torch.zeros(64, dtype=torch.int64))
    (logprob.sum() + ent.sum() + values.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)
    assert (logprob[~legal[:, 0]] < -1e4).all()


@pytest.mark.parametrize("name", ["default", "auto"])
def test_multidiscrete_policies_mask_each_head(name: str) -> None:
    nvec = [3, 4]
    env = masked_env(gs.MultiDiscrete(nvec), sum(nvec))
    policy = POLICIES[name](env)
    rows, masks = masked_rows(env, 64, 0)
    with torch.no_grad():
        action, _, _ = sample_logits(policy(rows)[0])
    for k, part in enumerate(torch.as_tensor(masks).split(nvec, dim=-1)):
        assert allowed(part).gather(1, action[:, k : k + 1]).all()


def test_masks_that_do_not_fit_the_actions_are_refused() -> None:
    with pytest.raises(ValueError, match=r"obs\['action_mask'\]: expected a Box or MultiBinary of shape \(5,\)"):
        Default(masked_env(gs.Discrete(5), 4))
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        Auto(masked_env(gs.MultiDiscrete([3, 4]), 6))
    with pytest.raises(TypeError, match="Discrete or MultiDiscrete"):
        Default(masked_env(gs.Box(-1, 1, (3,), np.float32), 3))
    env = masked_env(gs.Discrete(3), 3, np.float32)
    with pytest.raises(TypeError, match="action_mask"):
        NormalizedPolicy(env, Default(env, hidden_size=16))


def test_an_action_mask_below_the_top_level_is_an_ordinary_leaf() -> None:
    space = gs.Dict(inner=gs.Dict(action_mask=gs.Box(0, 1, (3,), np.int8)))
    env = types.SimpleNamespace(single_observation_space=space, single_action_space=gs.Discrete(5))
    assert Default(env).action_mask_layout is None


class _IgnoresTheMask(torch.nn.Module):
    """A policy of the user's own that never reads the action_mask leaf."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward_eval(self, observations: torch.Tensor, state: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(observations), self.n), torch.zeros(len(observations))


@pytest.mark.parametrize("name", POLICIES)
def test_a_built_in_policy_is_masked_once_by_itself(name: str) -> None:
    env = masked_env(gs.Discrete(6), 6)
    actor = Actor(POLICIES[name](env), env)
    rows, _ = masked_rows(env, 8, 0)
    assert actor.mask(rows) is None  # the policy's forward masks: no second unflatten


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_actor_masks_a_policy_that_does_not(seed: int) -> None:
    env = masked_env(gs.Discrete(6), 6)
    policy = _IgnoresTheMask(6)
    actor = Actor(policy, env)
    rows, masks = masked_rows(env, 64, seed)
    legal = allowed(torch.as_tensor(masks))
    logits, _ = policy.forward_eval(rows)
    action, _, _ = actor.sample(logits, rows)
    assert legal.gather(1, action.unsqueeze(1)).all()
    assert legal.gather(1, actor.greedy(logits, rows).unsqueeze(1)).all()
