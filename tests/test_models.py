"""Policies (pufferrs.models): shapes, gradients, structured observations,
and the shared-weight LSTMWrapper."""

from __future__ import annotations

import copy
import types
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch import nn
from torch.distributions import Normal

from conftest import spaces
from pufferrs.models import Convolutional, Default, LSTMWrapper, ProcgenResnet
from pufferrs.pytorch import sample_logits
from pufferrs.spaces import Layout

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

ACTION_SPACES = {
    "discrete": gs.Discrete(5),
    "multidiscrete": gs.MultiDiscrete([3, 4, 2]),
    "multidiscrete-2d": gs.MultiDiscrete([[2, 3], [4, 5]]),
    "multibinary": gs.MultiBinary(3),
    "box": gs.Box(-1, 1, (3,), np.float32),
    "box-2d": gs.Box(-1, 1, (2, 2), np.float32),
}

NESTED = gs.Dict(
    image=gs.Box(0, 255, (3, 8, 8), np.uint8),
    vector=gs.Box(-1, 1, (5,), np.float32),
    inv=gs.Dict(items=gs.MultiDiscrete([10] * 4), hp=gs.Discrete(20, start=-3), flags=gs.MultiBinary(3)),
    tuple=gs.Tuple((gs.Box(-1, 1, (2,), np.float64), gs.Discrete(5, dtype=np.int8))),
)


def make_env(obs_space: gs.Space, action_space: gs.Space = gs.Discrete(5)) -> types.SimpleNamespace:
    """What a vector env or the emulation wrapper gives a policy."""
    if isinstance(obs_space, gs.Box):
        return types.SimpleNamespace(single_observation_space=obs_space, single_action_space=action_space)
    layout = Layout(obs_space)
    return types.SimpleNamespace(
        single_observation_space=layout.observation_space, single_action_space=action_space, layout=layout
    )


def sample_obs(space: gs.Space, batch: int, seed: int = 0) -> torch.Tensor:
    """A batch of observations as the policy receives them (rows when
    structured)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(batch)]
    if isinstance(space, gs.Box):
        return torch.as_tensor(np.stack(samples))
    return torch.as_tensor(Layout(space).flatten_batch(samples))


def action_count(space: gs.Space) -> int:
    return int(np.prod(space.shape)) if not isinstance(space, gs.Discrete) else 1


def check_outputs(policy: nn.Module, logits: Any, values: torch.Tensor, batch: int, action_space: gs.Space) -> None:
    """Shapes and dtypes of (logits, values), and that sample_logits takes
    the logits and gives actions that fit the space."""
    assert values.shape == (batch,) and values.dtype == torch.float32
    if isinstance(action_space, gs.Discrete):
        assert isinstance(logits, torch.Tensor) and logits.shape == (batch, action_space.n)
        assert not policy.is_multidiscrete and not policy.is_continuous
    elif isinstance(action_space, (gs.MultiDiscrete, gs.MultiBinary)):
        nvec = action_space.nvec.ravel() if isinstance(action_space, gs.MultiDiscrete) else [2] * action_space.n
        assert isinstance(logits, tuple) and [h.shape for h in logits] == [(batch, n) for n in nvec]
        assert policy.is_multidiscrete and not policy.is_continuous
    else:
        assert isinstance(logits, Normal) and logits.loc.shape == (batch, *action_space.shape)
        assert policy.is_continuous and not policy.is_multidiscrete
    action, logprob, ent = sample_logits(logits)
    assert logprob.shape == ent.shape == (batch,)
    assert torch.isfinite(logprob).all() and torch.isfinite(ent).all()
    if isinstance(action_space, gs.Discrete):
        assert action.shape == (batch,) and 0 <= action.min() and action.max() < action_space.n
    elif isinstance(action_space, (gs.MultiDiscrete, gs.MultiBinary)):
        assert action.shape == (batch, action_count(action_space))
        assert (action.cpu() < torch.as_tensor(np.asarray(nvec))).all()
    else:
        assert action.shape == (batch, *action_space.shape)


def assert_grads_everywhere(module: nn.Module, loss: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    loss.backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, f"{name}: no gradient"
        assert param.grad.abs().sum() > 0, f"{name}: zero gradient"


def ppo_like_loss(logits: Any, values: torch.Tensor) -> torch.Tensor:
    _, logprob, ent = sample_logits(logits)
    return logprob.mean() + 0.01 * ent.mean() + values.pow(2).mean()


# --------------------------------------------------------------------------
# Default
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("action_space", ACTION_SPACES.values(), ids=ACTION_SPACES.keys())
def test_default_flat_box(device: str, action_space: gs.Space) -> None:
    torch.manual_seed(0)
    env = make_env(gs.Box(-1, 1, (6,), np.float32), action_space)
    policy = Default(env, hidden_size=32).to(device)
    assert policy.hidden_size == 32 and not policy.is_dict_obs
    obs = sample_obs(env.single_observation_space, 9).to(device)
    logits, values = policy(obs)
    check_outputs(policy, logits, values, 9, action_space)
    eval_logits, eval_values = policy.forward_eval(obs, {})
    torch.testing.assert_close(eval_values, values)
    assert_grads_everywhere(policy, ppo_like_loss(logits, values))


def test_default_heads_initialisation() -> None:
    torch.manual_seed(0)
    env = make_env(gs.Box(-1, 1, (64,), np.float32), gs.Discrete(4))
    policy = Default(env, hidden_size=64)
    w = policy.decoder.weight.detach()
    torch.testing.assert_close(w @ w.T, 0.01**2 * torch.eye(4), atol=1e-7, rtol=0)
    v = policy.value.weight.detach()
    torch.testing.assert_close(v @ v.T, torch.ones(1, 1), atol=1e-5, rtol=0)
    enc = policy.encoder[0].weight.detach()
    torch.testing.assert_close(enc @ enc.T, 2 * torch.eye(64), atol=1e-4, rtol=0)
    continuous = Default(make_env(gs.Box(-1, 1, (6,), np.float32), gs.Box(-1, 1, (3,))), 16)
    assert torch.all(continuous.decoder_logstd == 0) and continuous.decoder_logstd.requires_grad


def test_default_scales_uint8_images_only() -> None:
    torch.manual_seed(0)
    image = Default(make_env(gs.Box(0, 255, (4,), np.uint8)), 8)
    counts = Default(make_env(gs.Box(0, 10, (4,), np.uint8)), 8)
    counts.load_state_dict(image.state_dict())
    x = torch.tensor([[255, 0, 10, 255]], dtype=torch.uint8)
    scaled = x.float() / 255
    torch.testing.assert_close(image.encode_observations(x), image.encoder(scaled))
    torch.testing.assert_close(counts.encode_observations(x), counts.encoder(x.float()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("action_space", [gs.Discrete(5), gs.MultiDiscrete([3, 4]), gs.Box(-1, 1, (2,))], ids=str)
def test_default_nested_dict(device: str, action_space: gs.Space) -> None:
    torch.manual_seed(0)
    env = make_env(NESTED, action_space)
    policy = Default(env, hidden_size=32).to(device)
    assert policy.is_dict_obs
    rows = sample_obs(NESTED, 7).to(device)
    logits, values = policy(rows)
    check_outputs(policy, logits, values, 7, action_space)
    # Rows as raw bytes work the same as rows in the layout's flat dtype.
    _, byte_values = policy(rows.view(torch.uint8))
    torch.testing.assert_close(byte_values, values)
    assert_grads_everywhere(policy, ppo_like_loss(logits, values))


def test_default_structured_features_are_the_documented_encoding() -> None:
    """Per leaf: floats as they are, images / 255, Discrete and
    MultiDiscrete one-hot after subtracting start, MultiBinary 0/1."""
    space = gs.Dict(
        img=gs.Box(0, 255, (2,), np.uint8),
        pos=gs.Box(-5, 5, (2,), np.float64),
        hp=gs.Discrete(4, start=-1),
        inv=gs.MultiDiscrete([2, 3], start=[1, 0]),
        on=gs.MultiBinary(2),
    )
    policy = Default(make_env(space), hidden_size=4)
    obs = {
        "img": np.array([255, 51], np.uint8),
        "pos": np.array([-2.5, 4.0]),
        "hp": 1,
        "inv": np.array([2, 1]),
        "on": np.array([1, 0], np.int8),
    }
    rows = torch.as_tensor(Layout(space).flatten_batch([obs]))
    expected = torch.tensor(
        [[1.0, 0.2, -2.5, 4.0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1.0, 0.0]]
    )  # img | pos | hp=1 is class 2 of 4 | inv: class 1 of 2, class 1 of 3 | on
    torch.testing.assert_close(policy.encode_observations(rows), policy.encoder(expected))


@pytest.mark.parametrize(
    "space",
    [
        gs.Dict(a=gs.Discrete(3), b=gs.Dict(c=gs.Discrete(4, start=2), d=gs.Discrete(2))),
        gs.Tuple((gs.Discrete(3), gs.Tuple((gs.Box(-1, 1, (2,)), gs.MultiBinary([2, 2]))))),
        gs.Dict(a=gs.Dict(b=gs.Dict(c=gs.Box(-1, 1, (3,), np.float16)))),
        gs.Discrete(6, start=10),
        gs.MultiDiscrete([[2, 3], [4, 5]], dtype=np.int16),
        gs.Dict(on=gs.Box(0, 1, (3,), np.bool_), n=gs.Box(0, 2**31, (2,), np.uint32), empty=gs.Box(0, 1, (0,))),
    ],
    ids=["only-discrete", "tuple", "deep", "top-level-discrete", "multidiscrete-2d", "bool-uint32-empty"],
)
def test_default_structured_spaces(space: gs.Space) -> None:
    torch.manual_seed(0)
    env = make_env(space, gs.Discrete(3))
    policy = Default(env, hidden_size=16)
    assert policy.is_dict_obs
    logits, values = policy(sample_obs(space, 5))
    check_outputs(policy, logits, values, 5, gs.Discrete(3))
    assert torch.isfinite(logits).all()


def test_default_builds_a_layout_when_the_env_has_none() -> None:
    env = types.SimpleNamespace(single_observation_space=NESTED, single_action_space=gs.Discrete(2))
    policy = Default(env, 8)
    assert policy.is_dict_obs
    logits, _ = policy(sample_obs(NESTED, 3))
    assert logits.shape == (3, 2)


def test_default_refuses_empty_observations_and_unknown_actions() -> None:
    with pytest.raises(ValueError, match="no values"):
        Default(make_env(gs.Dict(a=gs.Box(0, 1, (0,)))))
    with pytest.raises(TypeError, match="action space"):
        Default(make_env(gs.Box(-1, 1, (3,)), gs.Dict(a=gs.Discrete(2))))
    with pytest.raises(TypeError, match="float Box"):
        Default(make_env(gs.Box(-1, 1, (3,)), gs.Box(0, 3, (2,), np.int64)))


@settings(max_examples=25)
@given(space=spaces(max_depth=3))
def test_default_encodes_any_fixed_size_space(space: gs.Space) -> None:
    layout = Layout(space)
    if sum(leaf.nbytes for leaf in layout.leaves) == 0:
        return  # nothing to encode; refused with a ValueError (tested above)
    env = make_env(space, gs.Discrete(2))
    policy = Default(env, hidden_size=8)
    logits, values = policy(sample_obs(space, 3))
    assert logits.shape == (3, 2) and values.shape == (3,)
    assert torch.isfinite(logits).all() and torch.isfinite(values).all()


# --------------------------------------------------------------------------
# Convolutional and ProcgenResnet
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("action_space", [gs.Discrete(6), gs.MultiDiscrete([3, 3]), gs.Box(-1, 1, (2,))], ids=str)
def test_convolutional(device: str, action_space: gs.Space) -> None:
    torch.manual_seed(0)
    env = make_env(gs.Box(0, 255, (4, 84, 84), np.uint8), action_space)
    policy = Convolutional(env, framestack=4, hidden_size=64, output_size=64).to(device)
    assert policy.flat_size == 64 * 7 * 7 and policy.hidden_size == 64
    obs = sample_obs(env.single_observation_space, 3).to(device)
    logits, values = policy(obs)
    check_outputs(policy, logits, values, 3, action_space)
    assert_grads_everywhere(policy, ppo_like_loss(logits, values))


def test_convolutional_channels_last_and_downsample() -> None:
    torch.manual_seed(0)
    first = Convolutional(make_env(gs.Box(0, 255, (3, 64, 72), np.uint8)), 3, hidden_size=32, output_size=32)
    last = Convolutional(
        make_env(gs.Box(0, 255, (64, 72, 3), np.uint8)), 3, hidden_size=32, output_size=32, channels_last=True
    )
    last.load_state_dict(first.state_dict())
    images = torch.randint(0, 256, (2, 3, 64, 72), dtype=torch.uint8)
    torch.testing.assert_close(first(images)[1], last(images.permute(0, 2, 3, 1))[1])

    small = Convolutional(make_env(gs.Box(0, 255, (84, 84, 4), np.uint8)), 4, channels_last=True, downsample=2)
    assert small.flat_size == 64  # 42x42 -> 9x9 -> 3x3 -> 1x1
    logits, values = small(torch.randint(0, 256, (2, 84, 84, 4), dtype=torch.uint8))
    assert logits.shape == (2, 5) and values.shape == (2,)


def test_convolutional_checks_its_arguments() -> None:
    env = make_env(gs.Box(0, 255, (4, 84, 84), np.uint8))
    assert Convolutional(env, 4, flat_size=3136).flat_size == 3136
    with pytest.raises(ValueError, match="flat_size=1000"):
        Convolutional(env, 4, flat_size=1000)
    with pytest.raises(ValueError, match="framestack=3"):
        Convolutional(env, 3)
    with pytest.raises(ValueError, match="3 dims"):
        Convolutional(make_env(gs.Box(0, 255, (84, 84), np.uint8)), 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(64, 64, 3), (63, 50, 3)], ids=str)
def test_procgen_resnet(device: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    env = make_env(gs.Box(0, 255, shape, np.uint8), gs.Discrete(15))
    policy = ProcgenResnet(env, cnn_width=8, mlp_width=32).to(device)
    assert policy.hidden_size == policy.output_size == 32
    logits, values = policy(sample_obs(env.single_observation_space, 2).to(device))
    check_outputs(policy, logits, values, 2, env.single_action_space)
    assert_grads_everywhere(policy, ppo_like_loss(logits, values))


# --------------------------------------------------------------------------
# LSTMWrapper
# --------------------------------------------------------------------------

OBS = gs.Box(-1, 1, (6,), np.float32)


def make_lstm(
    action_space: gs.Space = gs.Discrete(4),
    hidden: int = 16,
    eval_path: str = "auto",
    obs_space: gs.Space = OBS,
    seed: int = 0,
) -> LSTMWrapper:
    torch.manual_seed(seed)
    env = make_env(obs_space, action_space)
    return LSTMWrapper(
        env, Default(env, hidden_size=hidden), input_size=hidden, hidden_size=hidden, eval_path=eval_path
    )


def tolerance(device: str) -> dict[str, float]:
    return {"atol": 1e-5, "rtol": 1e-5} if device == "cpu" else {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture
def strict_fp32() -> Any:
    """cuDNN's RNNs use TF32 by default on Ampere and later; the
    equivalence tests compare float32 against float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def logits_rows(logits: Any) -> Any:
    if isinstance(logits, Normal):
        return logits.loc
    return logits


def test_lstm_parameters_are_shared_and_listed_once() -> None:
    wrapper = make_lstm()
    params = list(wrapper.parameters())
    assert len(params) == len({id(p) for p in params}) == len(list(wrapper.policy.parameters())) + 4
    lstm, cell = wrapper.lstm, wrapper.cell
    assert isinstance(cell, nn.LSTMCell)
    assert cell.weight_ih is lstm.weight_ih_l0 and cell.weight_hh is lstm.weight_hh_l0
    assert cell.bias_ih is lstm.bias_ih_l0 and cell.bias_hh is lstm.bias_hh_l0
    keys = list(wrapper.state_dict())
    assert len(keys) == len(set(keys)) and not [k for k in keys if k.startswith("cell.")]
    assert {k for k in keys if k.startswith("lstm.")} == {
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.bias_ih_l0",
        "lstm.bias_hh_l0",
    }


def test_lstm_initialisation_leaves_the_policy_alone() -> None:
    torch.manual_seed(0)
    env = make_env(OBS)
    policy = Default(env, hidden_size=16)
    before = copy.deepcopy(policy.state_dict())
    wrapper = LSTMWrapper(env, policy, 16, 16)
    for key, value in before.items():
        assert torch.equal(wrapper.policy.state_dict()[key], value), key
    for name in ("weight_ih_l0", "weight_hh_l0"):
        for block in getattr(wrapper.lstm, name).detach().chunk(4):
            torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)
    assert torch.all(wrapper.lstm.bias_ih_l0 == 0) and torch.all(wrapper.lstm.bias_hh_l0 == 0)


def test_lstm_optimizer_step_reaches_the_cell() -> None:
    wrapper = make_lstm()
    x, h, c = torch.randn(5, 16), torch.randn(5, 16), torch.randn(5, 16)
    before = wrapper.cell(x, (h, c))[0].detach()
    optimizer = torch.optim.Adam(wrapper.parameters(), lr=0.05)
    logits, values = wrapper(torch.randn(5, 3, 6), {})  # nn.LSTM path
    ppo_like_loss(logits, values.flatten()).backward()
    optimizer.step()
    after = wrapper.cell(x, (h, c))[0]
    assert not torch.allclose(after, before)
    _, (expected, _) = wrapper.lstm(x[:, None], (h[None], c[None]))
    torch.testing.assert_close(after, expected[0])


def test_lstm_state_dict_round_trip() -> None:
    source, target = make_lstm(seed=1), make_lstm(seed=2)
    obs = torch.randn(4, 5, 6)
    target.load_state_dict(source.state_dict())
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(target(obs, {})[1], source(obs, {})[1])
    torch.testing.assert_close(target.forward_eval(obs[:, 0], {})[1], source.forward_eval(obs[:, 0], {})[1])


def test_lstm_loads_pufferlib_checkpoints_and_assigned_parameters() -> None:
    source, target = make_lstm(seed=1), make_lstm(seed=2)
    checkpoint = dict(source.state_dict())
    for ours, theirs in (
        ("weight_ih_l0", "weight_ih"),
        ("weight_hh_l0", "weight_hh"),
        ("bias_ih_l0", "bias_ih"),
        ("bias_hh_l0", "bias_hh"),
    ):
        checkpoint[f"cell.{theirs}"] = checkpoint[f"lstm.{ours}"].clone()
    target.load_state_dict(checkpoint)  # strict: cell.* are accepted, not unexpected
    assert torch.equal(target.lstm.weight_hh_l0, source.lstm.weight_hh_l0)

    fresh = make_lstm(seed=3)
    fresh.load_state_dict(source.state_dict(), assign=True)
    assert fresh.cell.weight_ih is fresh.lstm.weight_ih_l0
    obs = torch.randn(4, 6)
    for path in ("cell", "lstm"):
        fresh.eval_path = source.eval_path = path
        torch.testing.assert_close(fresh.forward_eval(obs, {})[1], source.forward_eval(obs, {})[1])
    params = list(fresh.parameters())
    assert len(params) == len({id(p) for p in params})


def test_lstm_survives_deepcopy_and_dtype_conversion() -> None:
    wrapper = make_lstm()
    clone = copy.deepcopy(wrapper)
    assert clone.cell.weight_ih is clone.lstm.weight_ih_l0 and clone.lstm.weight_ih_l0 is not wrapper.lstm.weight_ih_l0
    wide = make_lstm().double()
    assert wide.cell.weight_hh is wide.lstm.weight_hh_l0 and wide.cell.weight_hh.dtype == torch.float64
    logits, _ = wide.forward_eval(torch.randn(3, 6, dtype=torch.float64), {})
    assert logits.dtype == torch.float64


def step_through(
    wrapper: LSTMWrapper, obs: torch.Tensor, starts: torch.Tensor | None, state: dict
) -> tuple[Any, torch.Tensor]:
    """forward_eval over each time step of ``obs (B, T, ...)``, gathered the
    way forward returns them: logits for B*T rows (batch-major), values (B, T)."""
    batch, steps = obs.shape[:2]
    logits, values = [], []
    for t in range(steps):
        if starts is not None:
            state["episode_start"] = starts[:, t]
        step_logits, step_values = wrapper.forward_eval(obs[:, t], state)
        logits.append(step_logits)
        values.append(step_values)
    values = torch.stack(values, dim=1)
    if isinstance(logits[0], tuple):
        heads = [torch.stack([lg[i] for lg in logits], 1).reshape(batch * steps, -1) for i in range(len(logits[0]))]
        return tuple(heads), values
    if isinstance(logits[0], Normal):
        return torch.stack([lg.loc for lg in logits], 1).reshape(batch * steps, -1), values
    return torch.stack(logits, 1).reshape(batch * steps, -1), values


def assert_logits_close(actual: Any, expected: Any, **tol: float) -> None:
    actual, expected = logits_rows(actual), logits_rows(expected)
    if isinstance(expected, tuple):
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, **tol)
    else:
        torch.testing.assert_close(actual.reshape(expected.shape), expected, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eval_path", ["cell", "lstm", "auto"])
@pytest.mark.parametrize("resets", [False, True], ids=["no-resets", "resets"])
@pytest.mark.parametrize("action_space", [gs.Discrete(4), gs.MultiDiscrete([3, 5]), gs.Box(-1, 1, (2,))], ids=str)
def test_lstm_stepping_equals_the_sequence(
    device: str, eval_path: str, resets: bool, action_space: gs.Space, strict_fp32: None
) -> None:
    wrapper = make_lstm(action_space, hidden=32, eval_path=eval_path).to(device)
    batch, steps = 6, 9
    gen = torch.Generator().manual_seed(1)
    obs = (torch.rand(batch, steps, 6, generator=gen) * 2 - 1).to(device)
    h0 = torch.randn(batch, 32, generator=gen).to(device)
    c0 = torch.randn(batch, 32, generator=gen).to(device)
    starts = None
    if resets:
        starts = torch.rand(batch, steps, generator=gen) < 0.2
        starts[0, 0] = starts[1, 4] = starts[2, steps - 1] = True
        starts = starts.to(device)

    train_state = {"lstm_h": h0, "lstm_c": c0}
    if starts is not None:
        train_state["episode_start"] = starts
    seq_logits, seq_values = wrapper(obs, train_state)
    eval_state = {"lstm_h": h0, "lstm_c": c0}
    with torch.no_grad():
        step_logits, step_values = step_through(wrapper, obs, starts, eval_state)

    tol = tolerance(device)
    assert seq_values.shape == (batch, steps)
    torch.testing.assert_close(step_values, seq_values.detach(), **tol)
    assert_logits_close(step_logits, seq_logits, **tol)
    torch.testing.assert_close(eval_state["lstm_h"], train_state["lstm_h"], **tol)
    torch.testing.assert_close(eval_state["lstm_c"], train_state["lstm_c"], **tol)
    assert not train_state["lstm_h"].requires_grad and not train_state["lstm_c"].requires_grad
    assert train_state["hidden"].shape == (batch, steps, 32)


def test_lstm_episode_start_forgets_the_past() -> None:
    """From a reset on, a row's outputs depend only on the new episode."""
    wrapper = make_lstm(hidden=16)
    obs = torch.randn(3, 8, 6)
    starts = torch.zeros(3, 8, dtype=torch.bool)
    starts[:, 5] = True
    state = {"lstm_h": torch.randn(3, 16), "lstm_c": torch.randn(3, 16), "episode_start": starts}
    _, values = wrapper(obs, state)
    _, fresh_values = wrapper(obs[:, 5:], {})
    torch.testing.assert_close(values[:, 5:], fresh_values, atol=1e-6, rtol=1e-6)
    # Without the reset the past leaks in.
    _, leaky = wrapper(obs, {"lstm_h": state["lstm_h"], "lstm_c": state["lstm_c"]})
    assert not torch.allclose(leaky[:, 5:], fresh_values, atol=1e-4)

    # The same in rollouts, with a 0/1 float mask from a numpy buffer.
    eval_state: dict[str, Any] = {"lstm_h": torch.randn(3, 16), "lstm_c": torch.randn(3, 16)}
    eval_state["episode_start"] = np.array([1.0, 0.0, 1.0], np.float32)
    _, values = wrapper.forward_eval(obs[:, 0], eval_state)
    _, fresh = wrapper.forward_eval(obs[:, 0], {})
    torch.testing.assert_close(values[[0, 2]], fresh[[0, 2]])
    assert not torch.allclose(values[1], fresh[1])


def test_lstm_state_handling() -> None:
    wrapper = make_lstm(hidden=16)
    state: dict[str, Any] = {"lstm_h": None, "lstm_c": None}
    logits, values = wrapper.forward_eval(torch.randn(5, 6), state)
    assert logits.shape == (5, 4) and values.shape == (5,)
    assert state["lstm_h"].shape == state["lstm_c"].shape == state["hidden"].shape == (5, 16)
    first_h = state["lstm_h"]
    wrapper.forward_eval(torch.randn(5, 6), state)
    assert state["lstm_h"] is not first_h  # the dict is updated in place, tensors are new

    # PufferLib's training forward stores (num_layers, B, H); accepted too.
    stored = {"lstm_h": first_h[None], "lstm_c": torch.zeros(1, 5, 16)}
    wrapper.forward_eval(torch.randn(5, 6), stored)
    assert stored["lstm_h"].shape == (5, 16)

    # (B, *obs_shape) in training is one time step.
    logits, values = wrapper(torch.randn(5, 6), {"episode_start": torch.ones(5)})
    assert logits.shape == (5, 4) and values.shape == (5, 1)
    logits, values = wrapper(torch.randn(5, 6))
    assert values.shape == (5, 1)


def test_lstm_errors() -> None:
    wrapper = make_lstm(hidden=16)
    with pytest.raises(ValueError, match="obs_shape"):
        wrapper(torch.randn(2, 3, 4, 6))
    with pytest.raises(ValueError, match="episode_start"):
        wrapper(torch.randn(2, 3, 6), {"episode_start": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="eval_path"):
        make_lstm(eval_path="fast").forward_eval(torch.randn(2, 6), {})
    env = make_env(OBS)
    with pytest.raises(ValueError, match="input_size=32"):
        LSTMWrapper(env, Default(env, hidden_size=16), input_size=32, hidden_size=16)
    with pytest.raises(ValueError, match="hidden_size=64"):
        LSTMWrapper(env, Default(env, hidden_size=16), input_size=16, hidden_size=64)


def test_lstm_auto_path_is_measured_once_per_geometry() -> None:
    wrapper = make_lstm(hidden=16)
    wrapper.forward_eval(torch.randn(4, 6), {})
    wrapper.forward_eval(torch.randn(4, 6), {})
    with torch.no_grad():
        wrapper.forward_eval(torch.randn(8, 6), {})
    choices = wrapper.eval_path_choices
    assert len(choices) == 2
    assert set(choices.values()) <= {"cell", "lstm"}
    assert {key[2] for key in choices} == {4, 8} and {key[3] for key in choices} == {True, False}


@pytest.mark.parametrize("device", DEVICES)
def test_lstm_gradients_and_structured_policies(device: str, strict_fp32: None) -> None:
    """Training through the LSTM reaches every parameter, for a structured
    Default and for a CNN."""
    wrapper = make_lstm(gs.MultiDiscrete([3, 4]), hidden=16, obs_space=NESTED).to(device)
    rows = sample_obs(NESTED, 12).reshape(3, 4, -1).to(device)
    starts = torch.zeros(3, 4, dtype=torch.bool, device=device)
    starts[1, 2] = True
    logits, values = wrapper(rows, {"episode_start": starts})
    assert [h.shape for h in logits] == [(12, 3), (12, 4)] and values.shape == (3, 4)
    assert_grads_everywhere(wrapper, ppo_like_loss(logits, values.flatten()))

    torch.manual_seed(0)
    env = make_env(gs.Box(0, 255, (64, 64, 3), np.uint8), gs.Discrete(6))
    cnn = LSTMWrapper(env, ProcgenResnet(env, cnn_width=4, mlp_width=32), 32, 32).to(device)
    images = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8, device=device)
    logits, values = cnn(images, {})
    assert logits.shape == (6, 6) and values.shape == (2, 3)
    assert_grads_everywhere(cnn, ppo_like_loss(logits, values.flatten()))
    logits, values = cnn.forward_eval(images[:, 0], {})
    assert logits.shape == (2, 6) and values.shape == (2,)


# --------------------------------------------------------------------------
# GPU: rollouts without host synchronisation
# --------------------------------------------------------------------------


@pytest.mark.gpu
def test_lstm_rollout_step_never_syncs() -> None:
    wrapper = make_lstm(gs.Discrete(4), hidden=64, obs_space=NESTED).to("cuda")
    rows = sample_obs(NESTED, 32).to("cuda")
    state: dict[str, Any] = {}
    with torch.no_grad():
        wrapper.forward_eval(rows, state)  # the first call measures the paths (syncs)
        state["episode_start"] = torch.zeros(32, dtype=torch.bool, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                logits, _ = wrapper.forward_eval(rows, state)
                sample_logits(logits)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------


def _compile(fn: Any) -> Any:
    return torch.compile(fn, backend="inductor", fullgraph=True)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_forward_eval_matches_eager(device: str, strict_fp32: None) -> None:
    torch._dynamo.reset()
    wrapper = make_lstm(gs.MultiDiscrete([3, 5]), hidden=32, obs_space=NESTED).to(device)
    rows = sample_obs(NESTED, 8).to(device)
    h0, c0 = torch.randn(8, 32, device=device), torch.randn(8, 32, device=device)
    starts = torch.tensor([True, False] * 4, device=device)
    compiled = _compile(wrapper.forward_eval)
    with torch.no_grad():
        compiled_state = {"lstm_h": h0, "lstm_c": c0, "episode_start": starts}
        compiled_logits, compiled_values = compiled(rows, compiled_state)
        eager_state = {"lstm_h": h0, "lstm_c": c0, "episode_start": starts}
        eager_logits, eager_values = wrapper.forward_eval(rows, eager_state)
    tol = tolerance(device)
    assert_logits_close(compiled_logits, eager_logits, **tol)
    torch.testing.assert_close(compiled_values, eager_values, **tol)
    torch.testing.assert_close(compiled_state["lstm_h"], eager_state["lstm_h"], **tol)

    policy = Default(make_env(NESTED, gs.Box(-1, 1, (2,))), 32).to(device)
    compiled_policy = _compile(lambda x: policy.forward_eval(x)[0].loc)
    with torch.no_grad():
        torch.testing.assert_close(compiled_policy(rows), policy.forward_eval(rows)[0].loc, **tol)


@pytest.mark.slow
def test_compiled_training_forward_with_resets_matches_eager() -> None:
    """Under compile, forward steps the cell instead of cutting the sequence
    at resets (no host read); the result is the same."""
    torch._dynamo.reset()
    wrapper = make_lstm(hidden=16)
    obs = torch.randn(4, 6, 6)
    starts = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) < 0.3
    compiled = _compile(wrapper.forward)
    compiled_logits, compiled_values = compiled(obs, {"episode_start": starts})
    eager_logits, eager_values = wrapper(obs, {"episode_start": starts})
    torch.testing.assert_close(compiled_logits, eager_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_values, eager_values, atol=1e-5, rtol=1e-5)
    assert_grads_everywhere(wrapper, ppo_like_loss(compiled_logits, compiled_values.flatten()))


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (3, 3, 2), (2, 7), (4, 20), (6, 7, 2)])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_auto_encodes_grids_of_any_size(shape: tuple[int, ...], dtype: type) -> None:
    # Board games' grids (tic-tac-toe's 3x3x2, connect four's 6x7x2) are
    # smaller than two unpadded 3x3 convolutions can take.
    from pufferrs.encoders import Auto

    space = gs.Dict(board=gs.Box(0, 1, shape, dtype), action_mask=gs.Box(0, 1, (4,), np.int8))
    policy = Auto(make_env(space, gs.Discrete(4)), 16)
    logits, values = policy(sample_obs(space, 3))
    assert logits.shape == (3, 4) and values.shape == (3,) and torch.isfinite(logits).all()
