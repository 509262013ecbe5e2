"""Policies: flat observation rows in, action logits and values out.

Every policy follows PufferLib's interface:

- ``forward(observations, state=None) -> (logits, values)`` for training;
- ``forward_eval(observations, state=None) -> (logits, values)`` for rollouts;
- ``encode_observations(observations, state=None) -> hidden`` and
  ``decode_actions(hidden) -> (logits, values)``, the two halves that
  :class:`~pufferrs.lstm.LSTMWrapper` (importable from here too, as in
  PufferLib) puts its recurrence between.

``logits`` is what :func:`pufferrs.pytorch.sample_logits` takes: a tensor
``(B, n)`` for a ``Discrete`` action, a tuple of ``(B, n_i)`` tensors for a
``MultiDiscrete`` (or ``MultiBinary``) one, a ``Normal`` of shape
``(B, *shape)`` for a ``Box``. ``values`` is ``(B,)`` (``(B, T)`` from
``LSTMWrapper.forward``).

Action masks: an observation Dict with a top-level ``action_mask`` leaf
(PettingZoo's convention, 1 = legal) makes the built-in policies give
illegal actions zero probability (:func:`pufferrs.pytorch.mask_logits`):
``forward`` reads the leaf from the rows and ``decode_actions`` applies it.
The leaf also stays an input of the encoder like any other leaf: which
moves are legal says something about the state, and the value head may use it.

The ``env`` argument is anything with ``single_observation_space`` and
``single_action_space`` (a pufferrs vector env, the
:class:`~pufferrs.emulation.FlattenObservation` wrapper, a
``types.SimpleNamespace``), plus ``layout`` when observations are
structured (Dict/Tuple spaces arrive as flat rows and are viewed back with
:func:`pufferrs.pytorch.unflatten`).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from pufferrs.distributions import Logits, mask_logits
from pufferrs.lstm import LSTMWrapper, State
from pufferrs.pytorch import layer_init, unflatten
from pufferrs.spaces import Layout, at_path

__all__ = ["ACTION_MASK", "Convolutional", "Default", "LSTMWrapper", "Policy", "ProcgenResnet", "action_mask_layout"]


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


ACTION_MASK = "action_mask"


def action_mask_layout(env: Any, action_space: gs.Space) -> Layout | None:
    """The layout to read the ``action_mask`` leaf of ``env``'s observation
    rows with (``unflatten(rows, layout)["action_mask"]``), or None when the
    observation has none; refuses a mask that does not fit ``action_space``."""
    layout = getattr(env, "layout", None)
    space = layout.space if layout is not None else env.single_observation_space
    if not isinstance(space, gs.Dict) or ACTION_MASK not in space.spaces:
        return None
    mask = space.spaces[ACTION_MASK]
    if isinstance(action_space, gs.Discrete):
        expected, what = int(action_space.n), f"one entry per action of {action_space}"
    elif isinstance(action_space, gs.MultiDiscrete):
        nvec = np.asarray(action_space.nvec).ravel()
        expected, what = int(nvec.sum()), f"the masks of the heads of {action_space} side by side"
    else:
        raise TypeError(
            f"obs['{ACTION_MASK}']: action masks need a Discrete or MultiDiscrete action space, got {action_space}"
        )
    shape = tuple(getattr(mask, "shape", None) or ())
    if not isinstance(mask, (gs.Box, gs.MultiBinary)) or shape != (expected,):
        raise ValueError(
            f"obs['{ACTION_MASK}']: expected a Box or MultiBinary of shape ({expected},), {what}; got {mask}"
        )
    return layout if layout is not None else Layout(space)


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
    not squashed: the policy's Normal is unbounded, and
    :class:`~pufferrs.actions.ActionAdapter` clips what it sends to the
    env's bounds while the trainer stores and learns from the sampled value
    (SB3's and CleanRL's rule). ``log_std_init`` is the Normal's initial
    log standard deviation. An ``action_mask`` observation leaf (see the
    module docstring) is read by :meth:`action_mask`.

    ``separate_value``: the features the encoder returns are
    ``2 * output_size`` wide, the first half the action heads' and the
    second the value head's, so that an encoder can give the value its own
    network (:class:`~pufferrs.encoders.Auto` does, for vector observations).
    """

    def __init__(self, env: Any, output_size: int, log_std_init: float = 0.0, separate_value: bool = False):
        super().__init__()
        self.separate_value = separate_value
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
            self.decoder_logstd = nn.Parameter(torch.full((1, *space.shape), float(log_std_init)))
        else:
            raise TypeError(
                f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary or a float Box"
            )
        self.value = layer_init(nn.Linear(output_size, 1), std=1.0)
        self.action_mask_layout = action_mask_layout(env, space)

    def action_mask(self, observations: torch.Tensor) -> torch.Tensor | None:
        """The ``action_mask`` leaf of observation rows ``(B, row)`` (a view,
        ``(B, n)``), or None when the observation has none."""
        if self.action_mask_layout is None:
            return None
        return unflatten(observations, self.action_mask_layout)[ACTION_MASK]

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Observations ``(B, *obs_shape)`` to features ``(B, hidden_size)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode_observations")

    def decode_actions(
        self, hidden: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> tuple[Logits, torch.Tensor]:
        """Features ``(B, output_size)`` (twice that with ``separate_value``)
        to ``(logits, values (B,))``, illegal actions masked when
        ``action_mask`` ``(B, n)`` is given."""
        if self.separate_value:
            hidden, value_hidden = hidden.split(self.output_size, dim=-1)
        else:
            value_hidden = hidden
        values = self.value(value_hidden).squeeze(-1)
        if self.is_continuous:
            mean = self.decoder_mean(hidden).reshape(hidden.shape[0], *self.action_shape)
            # validate_args=False: validation reads the tensors back to the
            # host, a GPU sync on every rollout step.
            return Normal(mean, self.decoder_logstd.exp().expand_as(mean), validate_args=False), values
        logits = self.decoder(hidden)
        if self.is_multidiscrete:
            return mask_logits(logits.split(self.action_nvec, dim=-1), action_mask), values
        return mask_logits(logits, action_mask), values

    def forward(self, observations: torch.Tensor, state: State | None = None) -> tuple[Logits, torch.Tensor]:
        """``(logits, values)`` for a batch ``(B, *obs_shape)`` of observations."""
        hidden = self.encode_observations(observations, state=state)
        return self.decode_actions(hidden, self.action_mask(observations))

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

    def __init__(self, env: Any, hidden_size: int = 128, log_std_init: float = 0.0):
        super().__init__(env, hidden_size, log_std_init=log_std_init)
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
        features = [f(at_path(tree, path), dtype) for f, path in zip(self.leaf_features, self.leaf_paths)]
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
