"""Policies: flat observation rows in, action logits and values out.

Every policy follows PufferLib's interface:

- ``forward(observations, state=None) -> (logits, values)`` for training;
- ``forward_eval(observations, state=None) -> (logits, values)`` for rollouts;
- ``encode_observations(observations, state=None) -> hidden`` and
  ``decode_actions(hidden) -> (logits, values)``, the two halves that
  :class:`LSTMWrapper` puts its recurrence between.

``logits`` is what :func:`pufferrs.pytorch.sample_logits` takes: a tensor
``(B, n)`` for a ``Discrete`` action, a tuple of ``(B, n_i)`` tensors for a
``MultiDiscrete`` (or ``MultiBinary``) one, a ``Normal`` of shape
``(B, *shape)`` for a ``Box``. ``values`` is ``(B,)`` (``(B, T)`` from
``LSTMWrapper.forward``).

The ``env`` argument is anything with ``single_observation_space`` and
``single_action_space`` (a pufferrs vector env, the
:class:`~pufferrs.emulation.FlattenObservation` wrapper, a
``types.SimpleNamespace``), plus ``layout`` when observations are
structured (Dict/Tuple spaces arrive as flat rows and are viewed back with
:func:`pufferrs.pytorch.unflatten`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from pufferrs.pytorch import Logits, layer_init, unflatten
from pufferrs.spaces import Layout

__all__ = ["Convolutional", "Default", "LSTMWrapper", "Policy", "ProcgenResnet"]

State = MutableMapping[str, Any]


# --------------------------------------------------------------------------
# Observation spaces
# --------------------------------------------------------------------------


def _structured_layout(env: Any) -> Layout | None:
    """The layout to unflatten observations with, or None for a plain Box.

    An env without a ``layout`` whose observation space is not a Box still
    gets one: a layout is fully determined by its space, so it is the one
    the emulation wrapper would have built for the same rows.
    """
    layout = getattr(env, "layout", None)
    if layout is None:
        space = env.single_observation_space
        if isinstance(space, gs.Box):
            return None
        layout = Layout(space)
    return None if isinstance(layout.space, gs.Box) else layout


def _observation_shape(env: Any) -> tuple[int, ...]:
    """Shape of one observation as the policy receives it (a row when
    observations are structured)."""
    layout = _structured_layout(env)
    if layout is not None:
        return tuple(layout.observation_space.shape)
    return tuple(env.single_observation_space.shape)


def _is_image_box(space: gs.Box) -> bool:
    return np.dtype(space.dtype) == np.uint8 and bool(np.all(space.high == 255))


class _BoxFeatures(nn.Module):
    """A Box (or MultiBinary) leaf as float features ``(B, size)``.

    Values are used as they are, except uint8 images (``high == 255``),
    which are scaled to [0, 1] so that pixels do not swamp other inputs.
    """

    def __init__(self, space: gs.Space, shape: tuple[int, ...]):
        super().__init__()
        self.width = math.prod(shape)
        self.scale = 1 / 255 if isinstance(space, gs.Box) and _is_image_box(space) else None

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.width).to(dtype)
        return x * self.scale if self.scale is not None else x


class _OneHotFeatures(nn.Module):
    """A Discrete or MultiDiscrete leaf as concatenated one-hot vectors.

    Every one-hot slot ``s`` knows which element it reads
    (``element[s]``) and which class it stands for (``klass[s]``), so one
    gather and one comparison encode all elements however different their
    ``nvec``. Values are shifted by the space's ``start`` first. Unlike
    ``F.one_hot`` nothing is range-checked on the host, so the encoding
    never synchronises with the GPU; an out-of-range value encodes as all
    zeros.
    """

    def __init__(self, space: gs.Discrete | gs.MultiDiscrete):
        super().__init__()
        nvec = np.asarray(space.n if isinstance(space, gs.Discrete) else space.nvec, dtype=np.int64).ravel()
        start = np.asarray(space.start, dtype=np.int64).ravel()
        self.elements = len(nvec)
        self.width = int(nvec.sum())
        # Derived from the space, so kept out of the state dict.
        self.register_buffer("start", torch.as_tensor(start), persistent=False)
        self.register_buffer("element", torch.as_tensor(np.repeat(np.arange(len(nvec)), nvec)), persistent=False)
        self.register_buffer("klass", torch.as_tensor(np.concatenate([np.arange(n) for n in nvec])), persistent=False)

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        index = x.reshape(x.shape[0], self.elements).to(torch.int64) - self.start
        return (index.index_select(1, self.element) == self.klass).to(dtype)


def _leaf_features(space: gs.Space, shape: tuple[int, ...]) -> _BoxFeatures | _OneHotFeatures:
    if isinstance(space, (gs.Discrete, gs.MultiDiscrete)):
        return _OneHotFeatures(space)
    return _BoxFeatures(space, shape)


def _get(tree: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------


class Policy(nn.Module):
    """Base of the built-in policies: the action and value heads.

    A subclass builds its encoder and implements
    :meth:`encode_observations`; this class supplies :meth:`decode_actions`
    for the env's action space, and :meth:`forward` / :meth:`forward_eval`
    as encode-then-decode. ``output_size`` is the width of the ``hidden``
    that :meth:`decode_actions` takes.

    Heads (PufferLib's names, CleanRL's initialisation): ``decoder``, a
    Linear with std 0.01 (one output per action, or per class of every
    multi-discrete head); for a Box, ``decoder_mean`` (std 0.01) and the
    learned, state-independent ``decoder_logstd``; ``value``, a Linear with
    std 1. Discrete actions are indices from 0: add a space's ``start``
    before stepping an env whose ``start`` is not 0. Continuous actions are
    not squashed to the Box's bounds.
    """

    def __init__(self, env: Any, output_size: int):
        super().__init__()
        space = env.single_action_space
        self.action_space = space
        self.output_size = output_size
        self.is_multidiscrete = isinstance(space, (gs.MultiDiscrete, gs.MultiBinary))
        self.is_continuous = isinstance(space, gs.Box)
        if isinstance(space, gs.Discrete):
            self.decoder = layer_init(nn.Linear(output_size, int(space.n)), std=0.01)
        elif self.is_multidiscrete:
            nvec = space.nvec if isinstance(space, gs.MultiDiscrete) else np.full(space.shape, 2)
            self.action_nvec = tuple(int(n) for n in np.asarray(nvec).ravel())
            self.decoder = layer_init(nn.Linear(output_size, sum(self.action_nvec)), std=0.01)
        elif self.is_continuous:
            if np.dtype(space.dtype).kind != "f":
                raise TypeError(f"continuous actions need a float Box, got {space}")
            self.action_shape = tuple(space.shape)
            self.decoder_mean = layer_init(nn.Linear(output_size, math.prod(space.shape)), std=0.01)
            self.decoder_logstd = nn.Parameter(torch.zeros(1, *space.shape))
        else:
            raise TypeError(
                f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary or a float Box"
            )
        self.value = layer_init(nn.Linear(output_size, 1), std=1.0)

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Observations ``(B, *obs_shape)`` to features ``(B, hidden_size)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode_observations")

    def decode_actions(self, hidden: torch.Tensor) -> tuple[Logits, torch.Tensor]:
        """Features ``(B, output_size)`` to ``(logits, values (B,))``."""
        values = self.value(hidden).squeeze(-1)
        if self.is_continuous:
            mean = self.decoder_mean(hidden).reshape(hidden.shape[0], *self.action_shape)
            # validate_args=False: validation reads the tensors back to the
            # host, a GPU sync on every rollout step.
            return Normal(mean, self.decoder_logstd.exp().expand_as(mean), validate_args=False), values
        logits = self.decoder(hidden)
        if self.is_multidiscrete:
            return logits.split(self.action_nvec, dim=-1), values
        return logits, values

    def forward(self, observations: torch.Tensor, state: State | None = None) -> tuple[Logits, torch.Tensor]:
        """``(logits, values)`` for a batch ``(B, *obs_shape)`` of observations."""
        return self.decode_actions(self.encode_observations(observations, state=state))

    def forward_eval(self, observations: torch.Tensor, state: State | None = None) -> tuple[Logits, torch.Tensor]:
        """The rollout entry point; the same computation as :meth:`forward`
        for a feed-forward policy."""
        return self.forward(observations, state)


class Default(Policy):
    """A one-layer MLP encoder for any observation space.

    A flat Box is flattened and fed to Linear + GELU. Structured
    observations (Dict/Tuple at any depth, or a single Discrete-like space)
    arrive as flat rows; :meth:`encode_observations` views them leaf by leaf
    with :func:`~pufferrs.pytorch.unflatten` and concatenates one feature
    block per leaf before the same Linear + GELU: floats as they are (cast
    to the model's dtype), uint8 images with ``high == 255`` scaled to
    [0, 1], Discrete and MultiDiscrete one-hot (after subtracting
    ``start``; a leaf costs ``sum(nvec)`` inputs), MultiBinary and bool as
    0/1. Integer Boxes other than images are used unscaled.
    """

    def __init__(self, env: Any, hidden_size: int = 128):
        super().__init__(env, hidden_size)
        self.hidden_size = hidden_size
        self.layout = _structured_layout(env)
        self.is_dict_obs = self.layout is not None
        if self.is_dict_obs:
            leaves = [(leaf.path, _leaf_features(leaf.space, leaf.shape)) for leaf in self.layout.leaves]
        else:
            space = env.single_observation_space
            leaves = [((), _BoxFeatures(space, tuple(space.shape)))]
        # Leaves of zero size carry nothing to encode.
        leaves = [(path, features) for path, features in leaves if features.width > 0]
        if not leaves:
            raise ValueError(f"observation space {env.single_observation_space} holds no values to encode")
        self.leaf_paths = tuple(path for path, _ in leaves)
        self.leaf_features = nn.ModuleList(features for _, features in leaves)
        width = sum(f.width for f in self.leaf_features)
        self.encoder = nn.Sequential(layer_init(nn.Linear(width, hidden_size)), nn.GELU())

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Observations ``(B, *obs_shape)`` (rows ``(B, row)`` when
        structured, in uint8 or the layout's ``flat_dtype``) to
        ``(B, hidden_size)``."""
        dtype = self.encoder[0].weight.dtype
        tree = unflatten(observations, self.layout) if self.is_dict_obs else observations
        features = [f(_get(tree, path), dtype) for f, path in zip(self.leaf_features, self.leaf_paths)]
        return self.encoder(features[0] if len(features) == 1 else torch.cat(features, dim=-1))


class Convolutional(Policy):
    """The Nature-DQN CNN (CleanRL's Atari PPO network) for image stacks.

    Observations are ``(B, framestack, H, W)``, or ``(B, H, W, framestack)``
    with ``channels_last=True``, in 0..255 (scaled by 1/255 here).
    ``downsample`` keeps every n-th pixel in both axes before the
    convolutions. ``flat_size``, the conv stack's output size, is computed
    from the observation space when not given (and checked when it is).

    Sizes: ``hidden_size`` is the width of :meth:`encode_observations`'s
    output, ``output_size`` the width :meth:`decode_actions` takes. They are
    equal for a plain policy; under :class:`LSTMWrapper` they are its
    ``input_size`` and ``hidden_size``. ``input_size`` is accepted for
    PufferLib signature compatibility and not used: the network's input is
    the observation itself.
    """

    def __init__(
        self,
        env: Any,
        framestack: int,
        flat_size: int | None = None,
        input_size: int = 512,
        hidden_size: int = 512,
        output_size: int = 512,
        channels_last: bool = False,
        downsample: int = 1,
    ):
        super().__init__(env, output_size)
        shape = tuple(env.single_observation_space.shape)
        if len(shape) != 3:
            raise ValueError(f"Convolutional needs image observations of 3 dims, got shape {shape}")
        channels, height, width = (shape[2], shape[0], shape[1]) if channels_last else shape
        if channels != framestack:
            side = "last" if channels_last else "first"
            raise ValueError(
                f"observation shape {shape} has {channels} channels ({side}), expected framestack={framestack}"
            )
        self.framestack = framestack
        self.channels_last = channels_last
        self.downsample = downsample
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(framestack, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            probe = torch.zeros(1, channels, height, width)[:, :, ::downsample, ::downsample]
            computed = self.convs(probe).shape[1]
        if flat_size is not None and flat_size != computed:
            raise ValueError(f"flat_size={flat_size}, but observations of shape {shape} give {computed}")
        self.flat_size = computed
        self.network = nn.Sequential(self.convs, layer_init(nn.Linear(computed, hidden_size)), nn.ReLU())

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` (``(B, H, W, C)`` if channels last) to
        ``(B, hidden_size)``."""
        x = observations.permute(0, 3, 1, 2) if self.channels_last else observations
        if self.downsample > 1:
            x = x[:, :, :: self.downsample, :: self.downsample]
        return self.network(x.to(self.value.weight.dtype) * (1 / 255))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class _ConvSequence(nn.Sequential):
    """IMPALA's stage: conv, 3x3/2 max-pool, two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.MaxPool2d(3, stride=2, padding=1),
            _ResidualBlock(out_channels),
            _ResidualBlock(out_channels),
        )


class ProcgenResnet(Policy):
    """The IMPALA ResNet (Espeholt et al. 2018; CleanRL's Procgen PPO).

    Three conv sequences of ``cnn_width``, ``2 * cnn_width`` and
    ``2 * cnn_width`` channels, each a conv, a stride-2 max-pool and two
    residual blocks, then ReLU, Linear to ``mlp_width`` and ReLU.
    Observations are ``(B, H, W, C)`` images in 0..255 (scaled by 1/255).
    ``hidden_size`` and ``output_size`` are both ``mlp_width``.
    """

    def __init__(self, env: Any, cnn_width: int = 16, mlp_width: int = 256):
        super().__init__(env, mlp_width)
        shape = tuple(env.single_observation_space.shape)
        if len(shape) != 3:
            raise ValueError(f"ProcgenResnet needs (H, W, C) image observations, got shape {shape}")
        height, width, channels = shape
        self.hidden_size = mlp_width
        stages = []
        for out_channels in (cnn_width, 2 * cnn_width, 2 * cnn_width):
            stages.append(_ConvSequence(channels, out_channels))
            channels, height, width = out_channels, (height + 1) // 2, (width + 1) // 2
        self.network = nn.Sequential(
            *stages,
            nn.Flatten(),
            nn.ReLU(),
            layer_init(nn.Linear(channels * height * width, mlp_width)),
            nn.ReLU(),
        )

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Images ``(B, H, W, C)`` to ``(B, mlp_width)``."""
        x = observations.permute(0, 3, 1, 2)
        return self.network(x.to(self.value.weight.dtype) * (1 / 255))


# --------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        backend = getattr(torch, device.type, None)
        if backend is not None and hasattr(backend, "synchronize"):
            backend.synchronize(device)


def _autocast_key(device: torch.device) -> tuple[bool, torch.dtype | None]:
    if torch.is_autocast_enabled(device.type):
        return True, torch.get_autocast_dtype(device.type)
    return False, None


class LSTMWrapper(nn.Module):
    """Puts a one-layer LSTM between a policy's encoder and decoder.

    ``policy`` must have ``encode_observations`` (to ``(B, input_size)``)
    and ``decode_actions`` (from ``(B, hidden_size)``); for the built-in
    policies that means ``policy.hidden_size == input_size`` and
    ``policy.output_size == hidden_size``.

    **One set of weights.** The parameters are ``lstm``'s
    (``lstm.weight_ih_l0``, ``lstm.weight_hh_l0``, ``lstm.bias_ih_l0``,
    ``lstm.bias_hh_l0``): :meth:`forward` runs them as an ``nn.LSTM`` over
    whole sequences (cuDNN on a GPU), :meth:`forward_eval` runs them one
    step at a time, and :attr:`cell` is an ``nn.LSTMCell`` whose parameters
    are these same tensors. So ``parameters()`` and ``state_dict()`` hold
    each tensor once, and an optimizer step is seen by both paths.
    Checkpoints of PufferLib's wrapper, which also store ``cell.*`` copies,
    load too. The LSTM is initialised here (orthogonal weights, zero
    biases); the wrapped policy is left as it was built.

    **State** is a dict: ``lstm_h`` and ``lstm_c``, each ``(B, hidden_size)``
    or absent/None for zeros (``(1, B, hidden_size)`` is accepted too), and
    optionally ``episode_start``: a bool (or 0/1) mask, ``(B,)`` for
    :meth:`forward_eval` and ``(B, T)`` for :meth:`forward`, true where the
    observation is the first of a new episode. Those rows start from zero
    state, so no memory leaks from one episode into the next. The wrapper
    writes ``lstm_h``, ``lstm_c`` and ``hidden`` (the LSTM output) back into
    the dict.

    **Rollout speed.** A single step can run through ``nn.LSTM`` (a
    length-1 sequence; cuDNN on a GPU) or through the ``LSTMCell`` kernel,
    and which is faster depends on the device, batch and width (reportedly,
    on an H100 the cell wins at hidden 128 and cuDNN at 512 in strict
    float32; on CPUs they are close). With ``eval_path="auto"``
    :meth:`forward_eval` times both the first time it sees a (device,
    dtype, batch size, grad mode, autocast) combination and keeps the faster
    (about 20 ms of extra steps with device syncs, once; the choices are in
    :attr:`eval_path_choices`). Under
    ``torch.compile`` it uses the cell, which compiles without a graph
    break and whose gates inductor fuses. While a CUDA graph is being
    captured it cannot time, so it uses the choice already made for those
    inputs (warm-up runs before capture make one), else the cell.
    ``eval_path="cell"`` or ``"lstm"`` fixes the path. Both compute the
    same function.
    """

    EVAL_PATHS = ("auto", "cell", "lstm")

    def __init__(
        self, env: Any, policy: nn.Module, input_size: int = 128, hidden_size: int = 128, *, eval_path: str = "auto"
    ):
        super().__init__()
        for name, expected in (("hidden_size", input_size), ("output_size", hidden_size)):
            found = getattr(policy, name, None)
            if isinstance(found, int) and found != expected:
                arg = "input_size" if name == "hidden_size" else "hidden_size"
                raise ValueError(f"{type(policy).__name__}.{name} is {found}, but LSTMWrapper got {arg}={expected}")
        self.policy = policy
        self.obs_shape = _observation_shape(env)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.eval_path = eval_path
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                # Orthogonal per gate block: each of the four gates gets a
                # well-conditioned map of its own.
                for block in param.data.chunk(4, dim=0):
                    nn.init.orthogonal_(block, 1.0)
            else:
                nn.init.zeros_(param)
        # Kept out of the module tree (object.__setattr__) so that its
        # parameters, which are the LSTM's, are not listed or saved twice.
        object.__setattr__(self, "_cell", nn.LSTMCell(input_size, hidden_size))
        self._tie_cell()
        self.register_load_state_dict_post_hook(LSTMWrapper._tie_cell)
        self._paths: dict[tuple, str] = {}

    # -- the shared cell ----------------------------------------------------

    def _lstm_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lstm = self.lstm
        return lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0

    def _tie_cell(self, *_: Any) -> None:
        # Straight into _parameters: torch.func.functional_call swaps plain
        # tensors in for the LSTM's parameters, and the cell must follow.
        cell = self._cell
        for name, param in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), self._lstm_weights()):
            cell._parameters[name] = param

    def _apply(self, fn: Callable, recurse: bool = True) -> LSTMWrapper:
        # .to()/.cuda()/.half() may create new parameter objects for the
        # LSTM (torch.__future__ conversion settings); keep the cell on them.
        result = super()._apply(fn, recurse)
        self._tie_cell()
        return result

    def _ensure_tied(self) -> nn.LSTMCell:
        # Ties are also restored after .to() and load_state_dict (whose
        # assign=True replaces parameter objects); this catches anything
        # else, e.g. a parameter assigned by hand, with four identity checks
        # (on the _parameters dicts: this runs on every rollout step).
        cell = self._cell
        ours, theirs = cell._parameters, self._modules["lstm"]._parameters
        if (
            ours["weight_ih"] is not theirs["weight_ih_l0"]
            or ours["weight_hh"] is not theirs["weight_hh_l0"]
            or ours["bias_ih"] is not theirs["bias_ih_l0"]
            or ours["bias_hh"] is not theirs["bias_hh_l0"]
        ):
            self._tie_cell()
        return cell

    @property
    def cell(self) -> nn.LSTMCell:
        """An ``nn.LSTMCell`` whose parameters are ``lstm``'s own tensors
        (re-tied on access if the LSTM's parameters were replaced)."""
        return self._ensure_tied()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # PufferLib's wrapper registers its cell, so its checkpoints hold
        # cell.* duplicates of lstm.*; they carry nothing new.
        for key in [k for k in state_dict if k.startswith(prefix + "cell.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def eval_path_choices(self) -> dict[tuple, str]:
        """The one-step path ``"auto"`` chose, per (device, dtype, batch
        size, grad enabled, autocast state) measured so far."""
        return dict(self._paths)

    # -- properties of the wrapped policy -----------------------------------

    @property
    def is_multidiscrete(self) -> bool:
        return bool(getattr(self.policy, "is_multidiscrete", False))

    @property
    def is_continuous(self) -> bool:
        return bool(getattr(self.policy, "is_continuous", False))

    # -- one step -----------------------------------------------------------

    def _cell_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The weights are read from the cell, not from self.lstm: dynamo
        # refuses to trace into RNN modules even for an attribute read, and
        # the cell holds the very same tensors (see _ensure_tied).
        weights = self._cell._parameters
        return torch.lstm_cell(
            x, (h, c), weights["weight_ih"], weights["weight_hh"], weights["bias_ih"], weights["bias_hh"]
        )

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, c) = self.lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        return h[0], c[0]

    def _step_function(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Callable:
        if not torch.compiler.is_compiling():
            self._ensure_tied()
        path = self.eval_path
        if path == "auto":
            if torch.compiler.is_compiling():
                # Inductor fuses the cell's pointwise gates; nn.LSTM would
                # break the graph. (The batch size may also be symbolic
                # here, not a key to look up.)
                return self._cell_step
            key = (x.device, x.dtype, x.shape[0], torch.is_grad_enabled(), _autocast_key(x.device))
            path = self._paths.get(key)
            if path is None:
                if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                    return self._cell_step  # timing would need a sync, which capture forbids
                path = self._paths[key] = self._measure(x, h, c)
        elif path not in self.EVAL_PATHS:
            raise ValueError(f"eval_path must be one of {self.EVAL_PATHS}, got {path!r}")
        return self._cell_step if path == "cell" else self._lstm_step

    def _measure(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> str:
        """The faster one-step path for inputs like these.

        Each candidate is timed as a rollout uses it, one call followed by
        a device sync, and keeps its best time. Rounds alternate the
        candidates, so a burst of load on the machine hits both alike, and
        go on for at least 3 and at most 25 rounds, until about 20 ms have
        been spent (cheap steps get many samples, costly ones few).
        """
        steps = {"cell": self._cell_step, "lstm": self._lstm_step}
        best = dict.fromkeys(steps, math.inf)
        with torch.no_grad():
            for step in steps.values():  # warm-up: lazy init, cuDNN plans
                step(x, h, c)
            _synchronize(x.device)
            begin = time.perf_counter()
            for rounds in range(1, 26):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step(x, h, c)
                    _synchronize(x.device)
                    best[name] = min(best[name], time.perf_counter() - start)
                if rounds >= 3 and time.perf_counter() - begin > 0.02:
                    break
        return min(best, key=best.get)

    # -- state --------------------------------------------------------------

    def _initial_state(
        self, state: State, like: torch.Tensor, batch: int, starts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, c)`` from the state dict, zeros where absent, and zeroed for
        rows whose ``starts`` is true."""
        h, c = state.get("lstm_h"), state.get("lstm_c")
        if h is None or c is None:
            zeros = like.new_zeros(batch, self.hidden_size)
            h = zeros if h is None else h
            c = zeros if c is None else c
        # PufferLib's training forward stores (num_layers, B, H).
        if h.dim() != 2:
            h = h.reshape(batch, self.hidden_size)
        if c.dim() != 2:
            c = c.reshape(batch, self.hidden_size)
        if starts is not None:
            h, c = h.masked_fill(starts.unsqueeze(-1), 0), c.masked_fill(starts.unsqueeze(-1), 0)
        return h, c

    @staticmethod
    def _episode_starts(state: State, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
        starts = state.get("episode_start")
        if starts is None:
            return None
        if not isinstance(starts, torch.Tensor):
            starts = torch.as_tensor(starts)
        if starts.shape != shape:
            if starts.numel() != math.prod(shape):
                raise ValueError(f"state['episode_start'] has shape {tuple(starts.shape)}, expected {shape}")
            starts = starts.reshape(shape)
        if starts.dtype != torch.bool:
            starts = starts != 0
        # A mask straight from the envs may still be on the host. The copy is
        # blocking on purpose: the envs may overwrite that buffer as soon as
        # this step returns.
        return starts.to(device)

    # -- the two entry points -----------------------------------------------

    def forward_eval(self, observations: torch.Tensor, state: State | None = None) -> tuple[Logits, torch.Tensor]:
        """One rollout step for a batch ``(B, *obs_shape)``.

        Reads ``lstm_h``/``lstm_c`` (None for zeros) and ``episode_start``
        ``(B,)`` from ``state`` and writes the new ``lstm_h``, ``lstm_c``
        and ``hidden`` (all ``(B, hidden_size)``) back into it. The new state
        is not detached, so stepping with gradients enabled backpropagates
        through time. Returns ``(logits, values (B,))``.
        """
        if state is None:
            state = {}
        hidden = self.policy.encode_observations(observations, state=state)
        batch = hidden.shape[0]
        starts = self._episode_starts(state, (batch,), hidden.device)
        h, c = self._initial_state(state, hidden, batch, starts)
        h, c = self._step_function(hidden, h, c)(hidden, h, c)
        state["lstm_h"], state["lstm_c"], state["hidden"] = h, c, h
        return self.policy.decode_actions(h)

    def forward(self, observations: torch.Tensor, state: State | None = None) -> tuple[Logits, torch.Tensor]:
        """Training on sequences: observations ``(B, T, *obs_shape)``, or
        ``(B, *obs_shape)`` for ``T = 1``.

        Starts from ``state``'s ``lstm_h``/``lstm_c`` (None for zeros),
        zeroes rows at ``episode_start`` ``(B, T)`` and stores the detached
        final ``lstm_h``/``lstm_c`` ``(B, hidden_size)`` and the LSTM output
        ``hidden`` ``(B, T, hidden_size)``. Returns logits for the ``B * T``
        rows in batch-major order and values ``(B, T)``.

        Without resets the whole sequence is one ``nn.LSTM`` call. With an
        ``episode_start`` mask it reads which time steps hold any reset
        (one small read to the host; none when the mask is already on the
        CPU) and runs ``nn.LSTM`` over the stretches between them, zeroing
        the reset rows at each boundary. Under ``torch.compile`` it steps
        the cell through every time step instead, which needs no host read.
        """
        if state is None:
            state = {}
        x = observations
        space_dims = len(self.obs_shape)
        if x.dim() == space_dims + 1:
            batch, steps = x.shape[0], 1
        elif x.dim() == space_dims + 2:
            batch, steps = x.shape[0], x.shape[1]
        else:
            raise ValueError(
                f"observations of shape {tuple(x.shape)} are neither (B, *obs_shape) nor (B, T, *obs_shape) "
                f"for obs_shape {self.obs_shape}"
            )
        hidden = self.policy.encode_observations(
            x.reshape(batch * steps, *x.shape[x.dim() - space_dims :]), state=state
        )
        hidden = hidden.reshape(batch, steps, self.input_size)

        mask = state.get("episode_start")
        starts = self._episode_starts(state, (batch, steps), hidden.device)
        h, c = self._initial_state(state, hidden, batch, None if starts is None else starts[:, 0])
        if starts is None or steps == 1:
            output, (h, c) = self.lstm(hidden, (h.unsqueeze(0), c.unsqueeze(0)))
            h, c = h[0], c[0]
        elif torch.compiler.is_compiling():
            outputs = []
            for t in range(steps):
                if t > 0:
                    h, c = h.masked_fill(starts[:, t, None], 0), c.masked_fill(starts[:, t, None], 0)
                h, c = self._cell_step(hidden[:, t], h, c)
                outputs.append(h)
            output = torch.stack(outputs, dim=1)
        else:
            # Time steps where any row begins an episode cut the sequence.
            host_mask = torch.as_tensor(mask).reshape(batch, steps)
            cuts = (host_mask[:, 1:] != 0).any(dim=0).nonzero().flatten().add(1).tolist()
            outputs = []
            for begin, end in zip([0, *cuts], [*cuts, steps]):
                if begin > 0:
                    reset = starts[:, begin, None]
                    h, c = h.masked_fill(reset, 0), c.masked_fill(reset, 0)
                segment, (h, c) = self.lstm(hidden[:, begin:end], (h.unsqueeze(0), c.unsqueeze(0)))
                h, c = h[0], c[0]
                outputs.append(segment)
            output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

        state["lstm_h"], state["lstm_c"], state["hidden"] = h.detach(), c.detach(), output
        logits, values = self.policy.decode_actions(output.reshape(batch * steps, self.hidden_size))
        return logits, values.reshape(batch, steps)
