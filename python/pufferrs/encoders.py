"""The automatic policy: one encoder per observation leaf, chosen from the
leaf's space, concatenated (Stable-Baselines3's multi-input pattern), then
one ReLU layer of ``hidden_size`` before the action and value heads.

The rules, in order (:func:`choose_encoder`):

- a string leaf (``Text``, MiniGrid's mission) is ``text``: the mean of
  the embeddings (32 wide) of its character trigrams, hashed into 4,096
  buckets, over the characters of the longest string in the batch (so a
  short mission in a long row costs what its length does). ``text`` also
  reads a 1-dim uint8 Box as a string of bytes ended by a 0 (NetHack's
  ``message``), when named for it;
- ``Discrete`` and ``MultiDiscrete`` are ``codes``: one embedding per
  element, 8 wide;
- ``MultiBinary`` and bool Boxes are ``flat``: 0/1 as they are;
- a uint8 Box from 0 to 255 with 2 or 3 dims is an ``image``: scaled to
  [0, 1]; channels are the axis of at most 4 (first or last), else the
  last. Images of at least 36 pixels a side get the Nature-DQN CNN (8x8/4,
  4x4/2, 3x3/1), smaller ones two 3x3 convolutions of 16 and 32 channels
  (stride 2 when a side is over 16);
- another integer Box with 2 or more dims and at most 8,192 values per
  element is a grid of ``codes`` (NetHack's glyphs): each value embedded,
  the embeddings of the last axis' channels side by side (3 dims) or one
  channel (2 dims), then convolutions (strided when a side is over 16);
- any other integer Box (counters, stats) is ``scalars``: ``symlog(x) =
  sign(x) log(1 + |x|)``, so that no value can swamp an update;
- a float Box is ``flat``: its values as they are.

``crop N at LEAF[i,j]`` (named, never chosen) encodes a 2-dim grid of codes
as the ``N`` x ``N`` window centred on the column ``LEAF[i]`` and the row
``LEAF[j]``, both read from another integer leaf of the observation, with
cells off the grid an extra code of their own, each embedded, the
embeddings flattened into the first layer. It is the egocentric view of
NLE's baselines: ``crop 9 at blstats[0,1]`` gives a NetHack agent the 81
cells around it (``blstats`` holds its x and y) for a twentieth of the cost
of the 21x79 map. The window is flattened, not convolved, because that
costs a fifth as much and NetHack trains on it without collapsing; whole
grids keep their convolutions, with which MiniGrid-Empty-5x5 learned in a
third of the updates it took flattened.

``none`` leaves a leaf out of the encoding. Spaces cannot always say what
they hold (MiniGrid declares its grid of codes as a 0..255 image): a
family preset (:data:`pufferrs.presets.FAMILY_PRESETS`) or the user
(``--encoders '{"image": "codes"}'``) names the encoder of a leaf by its
path, keys joined with ``/`` (``inv/items``; ``""`` for a plain Box).
"""

from __future__ import annotations

import math
import re
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import torch
from torch import nn

from pufferrs.lstm import State
from pufferrs.models import Policy
from pufferrs.pytorch import layer_init, unflatten
from pufferrs.spaces import Layout, at_path, format_path, is_string_space

__all__ = ["ENCODERS", "Auto", "check_encoders", "choose_encoder", "leaf_key", "parse_crop"]

ENCODERS = ("image", "codes", "text", "scalars", "flat", "none")

_MAX_CODES = 8192
_CROP = re.compile(r"crop\s+(\d+)\s+at\s+(\S+?)\[(\d+),\s*(\d+)\]")
_NATURE_SIDE = 36
_TRIGRAM_BUCKETS = 4096


def leaf_key(path: tuple[str | int, ...]) -> str:
    """A leaf's name in ``encoders``: its keys joined with ``/``."""
    return "/".join(map(str, path))


def parse_crop(name: str) -> tuple[int, tuple[str | int, ...], int, int] | None:
    """``(size, position leaf path, column index, row index)`` of an
    encoder named ``crop N at LEAF[i,j]``; None for any other name."""
    match = _CROP.fullmatch(name.strip())
    if match is None:
        return None
    size, leaf, column, row = match.groups()
    path = tuple(int(k) if k.isdigit() else k for k in leaf.split("/"))
    return int(size), path, int(column), int(row)


def check_encoders(encoders: dict) -> None:
    """Raises ValueError naming the first entry of ``encoders`` that is
    not a leaf key (a string) mapped to an encoder name: one of
    :data:`ENCODERS` or ``crop N at LEAF[i,j]``. Whether the leaves exist
    is the policy's to check, with the observation space."""
    if not isinstance(encoders, dict):
        raise ValueError(f"encoders must map leaf keys to encoder names, got {encoders!r}")
    for key, name in encoders.items():
        if not isinstance(key, str):
            raise ValueError(f"encoders: {key!r} is not a leaf key: keys are leaf paths such as 'inv/items'")
        names = f"{', '.join(ENCODERS)} or crop N at LEAF[i,j]"
        if not isinstance(name, str):
            raise ValueError(f"encoders: the leaf {key!r} is given {name!r}, not an encoder name: use {names}")
        if name not in ENCODERS and parse_crop(name) is None:
            raise ValueError(f"unknown encoders [{name!r}]: use {names} (given for the leaf {key!r})")


def choose_encoder(space: gs.Space) -> str:
    """The encoder the rules of the module docstring pick for ``space``."""
    if is_string_space(space):
        return "text"
    if isinstance(space, (gs.Discrete, gs.MultiDiscrete)):
        return "codes"
    if isinstance(space, gs.MultiBinary) or not isinstance(space, gs.Box):
        return "flat"
    dtype = np.dtype(space.dtype)
    if dtype.kind == "b" or dtype.kind == "f":
        return "flat"
    if dtype == np.uint8 and len(space.shape) in (2, 3) and np.all(space.low == 0) and np.all(space.high == 255):
        return "image"
    span = space.high.astype(np.float64) - space.low.astype(np.float64) + 1
    if len(space.shape) >= 2 and np.all(span <= _MAX_CODES):
        return "codes"
    return "scalars"


def _image_axes(shape: tuple[int, ...]) -> tuple[bool, int, int, int]:
    """``(channels_last, channels, height, width)`` of an image leaf."""
    if len(shape) == 2:
        return False, 1, shape[0], shape[1]
    if shape[0] <= 4 < shape[-1]:
        return False, shape[0], shape[1], shape[2]
    return True, shape[2], shape[0], shape[1]


def _conv_stack(channels: int, height: int, width: int, nature: bool) -> tuple[nn.Sequential, str]:
    if nature:
        layers = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
        text = "Nature CNN 8x8/4, 4x4/2, 3x3/1"
    elif max(height, width) > 16:
        layers = [(16, 3, 2), (32, 3, 2)]
        text = "3x3/2, 3x3/2 convolutions of 16, 32"
    else:
        layers = [(16, 3, 1), (32, 3, 1)]
        text = "3x3, 3x3 convolutions of 16, 32"
    # Grids smaller than two unpadded 3x3 convolutions can take (a 3x3
    # board) keep their size: padded by one cell.
    padding = 1 if not nature and min(height, width) < 5 else 0
    if padding:
        text += ", padded"
    modules: list[nn.Module] = []
    for out, kernel, stride in layers:
        modules += [layer_init(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding)), nn.ReLU()]
        channels = out
    modules.append(nn.Flatten())
    return nn.Sequential(*modules), text


class _Image(nn.Module):
    def __init__(self, space: gs.Box, shape: tuple[int, ...]):
        super().__init__()
        self.channels_last, channels, height, width = _image_axes(shape)
        self.shape = (channels, height, width)
        self.scale = 1 / 255 if np.dtype(space.dtype) == np.uint8 else 1.0
        self.convs, text = _conv_stack(channels, height, width, min(height, width) >= _NATURE_SIDE)
        # Kernels in channels-last order: a sixth less CPU time for the
        # Nature CNN's forward and backward (oneDNN), the same results; the
        # convolutions then lay out their inputs alike.
        self.convs.to(memory_format=torch.channels_last)
        self.width = self.convs(torch.zeros(1, *self.shape)).shape[1]
        self.text = f"image {channels}x{height}x{width}: {text}"

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.channels_last:
            x = x.movedim(-1, 1)
        return self.convs(x.reshape(x.shape[0], *self.shape).to(dtype) * self.scale)


def _code_bounds(space: gs.Space, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-element ``(low, number of values)``, shaped like the leaf."""
    if isinstance(space, gs.Discrete):
        return np.array(space.start), np.array(space.n)
    if isinstance(space, gs.MultiDiscrete):
        return space.start, space.nvec
    return space.low.astype(np.int64), (space.high.astype(np.int64) - space.low.astype(np.int64) + 1)


class _Codes(nn.Module):
    """Each element's value embedded. Elements of a Discrete or
    MultiDiscrete each have their own values; a Box's elements share them
    (per channel, the last axis, for a 3-dim grid). Grids (2 or more dims)
    go through convolutions; other leaves are flattened. ``window`` (a
    crop's side) encodes that square of the grid instead of the whole, with
    one more code, :attr:`outside`, for cells off the grid, flattened."""

    def __init__(self, space: gs.Space, shape: tuple[int, ...], window: int | None = None):
        super().__init__()
        low, count = (np.broadcast_to(a, shape).astype(np.int64) for a in _code_bounds(space, shape))
        if isinstance(space, gs.Box):
            # One table per channel (the last axis of a 3-dim grid), else
            # one for the whole leaf.
            axis = (0, 1) if len(shape) == 3 else None
            table_low = low.min(axis=axis)
            table_count = (low + count - 1).max(axis=axis) - table_low + 1
            starts = np.concatenate([[0], np.cumsum(table_count)[:-1]]) if axis else np.array(0)
            low, offset = np.broadcast_to(table_low, shape), np.broadcast_to(starts, shape)
            count = np.broadcast_to(table_count, shape)
            vocab = int(np.sum(table_count))
        else:
            flat = count.reshape(-1)
            offset = np.concatenate([[0], np.cumsum(flat)[:-1]]).reshape(shape)
            vocab = int(flat.sum())
        self.outside = vocab
        self.dim = 8
        self.embedding = nn.Embedding(vocab + (window is not None), self.dim)
        self.grid = shape if window is None else (window, window)
        # A window's cells share the one table of a 2-dim grid.
        low, offset, high = (
            np.broadcast_to(a if window is None else a.flat[0], self.grid) for a in (low, offset, count - 1)
        )
        self.register_buffer("low", torch.as_tensor(np.array(low)), persistent=False)
        self.register_buffer("offset", torch.as_tensor(np.array(offset)), persistent=False)
        self.register_buffer("high", torch.as_tensor(np.array(high)), persistent=False)
        self.elements = math.prod(self.grid)
        self.convs: nn.Sequential | None = None
        text = f"{vocab} values embedded in {self.dim}"
        if window is not None:
            self.width = self.elements * self.dim
            self.text = f"codes grid {window}x{window}, {text}, flattened: {self.width}"
        elif len(self.grid) >= 2:
            channels = (shape[2] if len(shape) == 3 else 1) * self.dim
            height, width = self.grid[0], self.grid[1]
            self.convs, convs = _conv_stack(channels, height, width, nature=False)
            self.width = self.convs(torch.zeros(1, channels, height, width)).shape[1]
            self.text = f"codes grid {height}x{width}, {text}: {convs}"
        else:
            self.width = self.elements * self.dim
            self.text = f"codes: {self.elements} x embedding of {vocab} values in {self.dim}"

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """Each element's row of the embedding table (of the window's
        elements, for a window)."""
        x = x.reshape(x.shape[0], *self.grid).to(torch.int64) - self.low
        # An out-of-range value reads its nearest code, never another table.
        return torch.minimum(x.clamp(min=0), self.high) + self.offset

    def encode(self, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        batch = rows.shape[0]
        emb = self.embedding(rows).to(dtype)
        if self.convs is None:
            return emb.reshape(batch, self.width)
        height, width = self.grid[0], self.grid[1]
        return self.convs(emb.reshape(batch, height, width, -1).permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.encode(self.index(x), dtype)


class _Crop(nn.Module):
    """``crop N at LEAF[i,j]``: the ``N`` x ``N`` window of a 2-dim grid of
    codes centred on the column ``LEAF[i]`` and the row ``LEAF[j]`` (a
    position outside the grid is clamped to its edge), encoded as a grid of
    codes (:class:`_Codes`). Only the window's cells are read."""

    def __init__(self, space: gs.Space, shape: tuple[int, ...], size: int, at: tuple, column: int, row: int):
        super().__init__()
        if len(shape) != 2 or size < 1:
            raise ValueError(f"a crop needs a 2-dim grid and a size of at least 1, got shape {shape}, size {size}")
        self.codes = _Codes(space, shape, window=size)
        self.reads = (at,)
        self.shape = shape
        self.column, self.row = column, row
        self.register_buffer("steps", torch.arange(size) - size // 2, persistent=False)
        self.width = self.codes.width
        where = format_path("obs", at)
        self.text = f"crop {size}x{size} centred at {where}[{column}], {where}[{row}]: {self.codes.text}"

    def forward(self, x: torch.Tensor, dtype: torch.dtype, position: torch.Tensor) -> torch.Tensor:
        batch, (height, width) = x.shape[0], self.shape
        position = position.reshape(batch, -1).to(torch.int64)
        ys = position[:, self.row].clamp(0, height - 1)[:, None] + self.steps
        xs = position[:, self.column].clamp(0, width - 1)[:, None] + self.steps
        inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
        cells = ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None, :]
        window = x.reshape(batch, height * width).gather(1, cells.reshape(batch, -1))
        rows = torch.where(inside, self.codes.index(window), self.codes.outside)
        return self.codes.encode(rows, dtype)


class _Text(nn.Module):
    """Character codes then the length (a string leaf), or bytes ended by a
    0 (``terminated``: a uint8 Box), as the mean of embeddings of its
    character trigrams (hashed into 4,096 buckets; the string is padded
    with two codes 0 in front): word pieces in order, at the cost of one
    gather per character of the batch's longest string."""

    def __init__(self, shape: tuple[int, ...], terminated: bool = False):
        super().__init__()
        self.bag = nn.EmbeddingBag(_TRIGRAM_BUCKETS, 32, mode="sum")
        self.width = 32
        self.terminated = terminated
        longest = shape[0] if terminated else shape[0] - 1
        what = "bytes ended by a 0" if terminated else "characters"
        self.text = f"text of up to {longest} {what}: mean of hashed character-trigram embeddings of 32"

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        chars = x if self.terminated else x[:, :-1]
        # Code 0 is no character: the columns past the batch's longest
        # string are left out (one read of the batch, a sync on a GPU).
        used = chars.ne(0).any(dim=0).nonzero()
        chars = chars[:, : int(used[-1]) + 1 if len(used) else 1]
        chars = nn.functional.pad(chars.to(torch.int64), (2, 0))
        trigrams = (chars[:, :-2] * 65599**2 + chars[:, 1:-1] * 65599 + chars[:, 2:]) % _TRIGRAM_BUCKETS
        present = (chars[:, 2:] != 0).to(torch.float32)
        weights = present / present.sum(dim=1, keepdim=True).clamp(min=1)
        return self.bag(trigrams, per_sample_weights=weights).to(dtype)


class _Values(nn.Module):
    """``flat`` (values as they are) or ``scalars`` (symlog)."""

    def __init__(self, shape: tuple[int, ...], symlog: bool):
        super().__init__()
        self.width = math.prod(shape)
        self.symlog = symlog
        self.text = f"{'scalars, symlog' if symlog else 'flat values'}: {self.width}"

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.width).to(dtype)
        return torch.sign(x) * torch.log1p(x.abs()) if self.symlog else x


def _build(kind: str, space: gs.Space, dtype: np.dtype, shape: tuple[int, ...]) -> nn.Module:
    crop = parse_crop(kind)
    if crop is not None:
        if np.dtype(dtype).kind not in "iu" or not isinstance(space, gs.Box):
            raise ValueError(f"a crop needs a Box of integer codes, got {space}")
        return _Crop(space, shape, *crop)
    if kind == "image":
        if len(shape) not in (2, 3):
            raise ValueError(f"an image encoder needs 2 or 3 dims, got shape {shape}")
        return _Image(space, shape)
    if kind == "codes":
        if np.dtype(dtype).kind not in "iub" or not isinstance(space, (gs.Box, gs.Discrete, gs.MultiDiscrete)):
            raise ValueError(f"a codes encoder needs integers with bounds, got {space}")
        return _Codes(space, shape)
    if kind == "text":
        if is_string_space(space):
            return _Text(shape)
        if isinstance(space, gs.Box) and np.dtype(dtype) == np.uint8 and len(shape) == 1:
            return _Text(shape, terminated=True)
        raise ValueError(f"a text encoder needs a string space or a 1-dim uint8 Box, got {space}")
    return _Values(shape, symlog=kind == "scalars")


def _check_position(leaves: list[tuple], path: tuple[str | int, ...], crop: _Crop) -> None:
    """Refuses a crop's position leaf unless it is an integer leaf of the
    observation with both the column and the row index."""
    found = [(dtype, shape) for leaf_path, _, dtype, shape in leaves if leaf_path == path]
    if not found:
        raise ValueError(f"the crop's position {leaf_key(path)!r} is not a leaf of the observation")
    dtype, shape = found[0]
    if np.dtype(dtype).kind not in "iu" or max(crop.column, crop.row) >= math.prod(shape):
        raise ValueError(
            f"the crop's position {format_path('obs', path)} ({dtype} {shape}) has no integers "
            f"at {crop.column} and {crop.row}"
        )


class Auto(Policy):
    """One encoder per leaf, by the rules of :mod:`pufferrs.encoders`, then
    a trunk chosen from what the encoders give. ``encoders`` maps leaf keys
    (:func:`leaf_key`) to encoder names, overriding the rules.

    The trunk:

    - **vector observations** (every leaf encoded as ``flat`` or
      ``scalars``): two networks of two Tanh layers of ``hidden_size``, one
      for the action heads and one for the value, SB3's ``MlpPolicy``. The
      value's targets (returns) and the policy's (advantages) differ in
      scale by orders of magnitude; through one shared trunk the value
      loss's gradients swamp the policy's, and on MuJoCo and Box2D control
      the policy barely moves;
    - **anything else** (images, codes, text): Linear + ReLU to
      ``hidden_size``, shared by the heads: the encoders' convolutions and
      embeddings are the costly part and are learned once.

    ``separate_value`` True or False chooses the trunk whatever the
    observation (an LSTM between the encoder and the heads needs the shared
    one); None chooses as above.
    ``log_std_init`` is passed to :class:`~pufferrs.models.Policy`.
    """

    def __init__(
        self,
        env: Any,
        hidden_size: int = 128,
        encoders: dict[str, str] | None = None,
        separate_value: bool | None = None,
        log_std_init: float = 0.0,
    ):
        space = env.single_observation_space
        layout = getattr(env, "layout", None)
        if layout is None and not isinstance(space, gs.Box):
            layout = Layout(space)
        layout = None if layout is None or isinstance(layout.space, gs.Box) else layout
        if layout is not None:
            leaves = [(leaf.path, leaf.space, leaf.dtype, leaf.shape) for leaf in layout.leaves]
        else:
            leaves = [((), space, np.dtype(space.dtype), tuple(space.shape))]
        check_encoders(encoders or {})
        overrides = dict(encoders or {})
        kinds = [overrides.get(leaf_key(path), choose_encoder(leaf_space)) for path, leaf_space, *_ in leaves]
        vector = all(kind in ("flat", "scalars", "none") for kind in kinds)
        separate = vector if separate_value is None else separate_value
        super().__init__(env, hidden_size, log_std_init=log_std_init, separate_value=separate)
        self.hidden_size = hidden_size
        self.layout = layout
        known = {leaf_key(path) for path, *_ in leaves}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"encoders name leaves the observation does not have: {unknown} (it has {sorted(known)})")
        chosen = []
        self.summary: list[str] = []
        for (path, leaf_space, dtype, shape), kind in zip(leaves, kinds):
            name = format_path("obs", path)
            if kind == "none" or math.prod(shape) == 0:
                self.summary.append(f"{name}: left out")
                continue
            try:
                encoder = _build(kind, leaf_space, dtype, shape)
                for read in getattr(encoder, "reads", ()):
                    _check_position(leaves, read, encoder)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            chosen.append((path, encoder))
            self.summary.append(f"{name} {dtype} {shape}: {encoder.text}")
        if not chosen:
            raise ValueError(f"observation space {space} holds no values to encode")
        self.leaf_paths = tuple(path for path, _ in chosen)
        self.leaf_encoders = nn.ModuleList(encoder for _, encoder in chosen)
        # The other leaves each encoder reads (a crop's position).
        self.leaf_reads = tuple(getattr(encoder, "reads", ()) for _, encoder in chosen)
        width = sum(encoder.width for encoder in self.leaf_encoders)
        if separate:
            self.encoder = _tanh_mlp(width, hidden_size)
            self.value_encoder = _tanh_mlp(width, hidden_size)
            self.summary.append(
                f"then two Tanh MLPs {width}-{hidden_size}-{hidden_size}, for the actions and the value"
            )
        else:
            self.encoder = nn.Sequential(layer_init(nn.Linear(width, hidden_size)), nn.ReLU())
            self.value_encoder = None
            self.summary.append(f"then Linear {width}-{hidden_size} + ReLU, shared by the action and value heads")

    def encode_observations(self, observations: torch.Tensor, state: State | None = None) -> torch.Tensor:
        dtype = self.encoder[0].weight.dtype
        tree = unflatten(observations, self.layout) if self.layout is not None else observations
        features = []
        for path, encoder, reads in zip(self.leaf_paths, self.leaf_encoders, self.leaf_reads):
            features.append(encoder(at_path(tree, path), dtype, *(at_path(tree, read) for read in reads)))
        x = features[0] if len(features) == 1 else torch.cat(features, dim=-1)
        if self.value_encoder is None:
            return self.encoder(x)
        return torch.cat([self.encoder(x), self.value_encoder(x)], dim=-1)


def _tanh_mlp(width: int, hidden_size: int) -> nn.Sequential:
    """Two Linear + Tanh layers, orthogonally initialised with gain sqrt(2)
    as in SB3 and CleanRL."""
    return nn.Sequential(
        layer_init(nn.Linear(width, hidden_size)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden_size, hidden_size)),
        nn.Tanh(),
    )
