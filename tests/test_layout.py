"""The Layout: offsets, alignment, the emulated space, equality, pickling."""

from __future__ import annotations

import pickle

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import spaces
from pufferrs import Layout, RowError, UnsupportedSpaceError


def aligned_struct(space: gs.Space) -> np.dtype:
    """The space as a numpy structured dtype with ``align=True``: numpy's
    C-struct layout, nested padding included."""
    if isinstance(space, gs.Dict):
        return np.dtype([(k, aligned_struct(s)) for k, s in space.spaces.items()], align=True)
    if isinstance(space, gs.Tuple):
        return np.dtype([(f"f{i}", aligned_struct(s)) for i, s in enumerate(space.spaces)], align=True)
    return np.dtype((space.dtype, space.shape))


def struct_offsets(dtype: np.dtype, base: int = 0) -> list[int]:
    """Leaf offsets of a nested numpy structured dtype, in field order."""
    if dtype.fields is None:
        return [base]
    offsets = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        offsets += struct_offsets(sub.base if sub.subdtype else sub, base + offset)
    return offsets


@given(spaces())
def test_layout_is_numpys_aligned_struct(space: gs.Space) -> None:
    """Offsets and row size agree with numpy's align=True structured dtype,
    the reference for C-struct layout with nested padding."""
    layout = Layout(space)
    struct = aligned_struct(space)
    assert layout.row_bytes == struct.itemsize
    if isinstance(space, (gs.Dict, gs.Tuple)):
        assert [leaf.offset for leaf in layout.leaves] == struct_offsets(struct)


@given(spaces())
def test_every_leaf_is_aligned_and_inside_the_row(space: gs.Space) -> None:
    layout = Layout(space)
    largest = max((leaf.dtype.itemsize for leaf in layout.leaves), default=1)
    assert layout.row_bytes % largest == 0
    end = 0
    for leaf in layout.leaves:
        assert leaf.offset % leaf.dtype.itemsize == 0
        assert leaf.offset >= end, "leaves overlap"
        assert leaf.nbytes == leaf.dtype.itemsize * int(np.prod(leaf.shape))
        end = leaf.offset + leaf.nbytes
        assert leaf.space.shape == leaf.shape
    assert end <= layout.row_bytes


@given(spaces())
def test_layouts_pickle_and_compare(space: gs.Space) -> None:
    layout = Layout(space)
    clone = pickle.loads(pickle.dumps(layout))
    assert type(clone) is Layout
    assert clone == layout
    assert clone.leaves == layout.leaves
    assert Layout(space, name="action") != layout


def test_reference_layout(reference_space: gs.Dict) -> None:
    layout = Layout(reference_space)
    assert layout.row_bytes == 12512
    assert layout.flat_dtype == np.uint8
    assert [(leaf.path, leaf.offset) for leaf in layout.leaves] == [
        (("image",), 0),
        (("vector",), 12288),
        (("inv", "items"), 12416),
        (("inv", "hp"), 12480),
        (("tuple", 0), 12488),
        (("tuple", 1), 12504),
    ]
    assert layout.observation_space == gs.Box(0, 255, (12512,), np.uint8)
    table = repr(layout).splitlines()
    assert table[0] == "Layout(row_bytes=12512, flat_dtype=uint8, leaves=6)"
    assert table[4].split() == ["obs['inv']['items']", "int64", "(8,)", "12416", "64"]


def test_nested_record_pads_its_end() -> None:
    # {a: int64, b: uint8} occupies 16 bytes, so c lands at 16, not 9.
    space = gs.Dict(inner=gs.Dict(a=gs.Discrete(3), b=gs.Box(0, 1, (), np.uint8)), c=gs.Box(0, 1, (), np.uint8))
    layout = Layout(space)
    assert [leaf.offset for leaf in layout.leaves] == [0, 8, 16]
    assert layout.row_bytes == 24


def test_dict_of_only_discretes_is_a_bounded_int_row() -> None:
    space = gs.Dict(a=gs.Discrete(3), b=gs.Discrete(4, start=-2), c=gs.MultiDiscrete([2, 5]))
    layout = Layout(space)
    assert layout.flat_dtype == np.int64
    box = layout.observation_space
    assert box.shape == (4,) and box.dtype == np.int64
    assert box.low.tolist() == [0, -2, 0, 0]
    assert box.high.tolist() == [2, 1, 1, 4]


def test_common_float_dtype_keeps_bounds() -> None:
    space = gs.Tuple((gs.Box(-1, 1, (2,), np.float32), gs.Box(0, np.inf, (), np.float32)))
    box = Layout(space).observation_space
    assert box.dtype == np.float32
    assert box.low.tolist() == [-1, -1, 0] and box.high.tolist() == [1, 1, np.inf]


def test_plain_box_stays_itself() -> None:
    space = gs.Box(-1, 1, (3, 4), np.float32)
    layout = Layout(space)
    assert layout.observation_space is space
    assert layout.row_bytes == 48 and layout.flat_dtype == np.float32


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            gs.Dict(a=gs.Tuple((gs.Discrete(2), gs.Sequence(gs.Discrete(2))))),
            r"obs\['a'\]\[1\]: Sequence has no fixed size",
        ),
        (gs.Dict(g=gs.Graph(gs.Box(0, 1, (2,)), None)), r"obs\['g'\]: Graph has no fixed size"),
        (object(), r"obs: builtins.object \(not a gymnasium space; convert it to gymnasium.spaces in a wrapper\)"),
        (gs.OneOf((gs.Discrete(2), gs.Discrete(3))), r"obs: OneOf spaces are not supported"),
        (gs.Box(0, 1, (2,), np.longdouble), r"obs: Box of dtype float128 is not a numeric dtype"),
        (gs.Dict({1: gs.Discrete(2)}), r"obs: Dict keys must be str"),
    ],
)
def test_unsupported_spaces_name_their_path(space: gs.Space, message: str) -> None:
    with pytest.raises(UnsupportedSpaceError, match=message) as err:
        Layout(space)
    assert isinstance(err.value, TypeError)


@st.composite
def texts(draw: st.DrawFn) -> tuple[gs.Text, str]:
    """A Text space (any charset, lengths up to 300, which takes uint16
    codes past 255) and a string it allows."""
    charset = draw(st.text(min_size=1, max_size=20))
    max_length = draw(st.integers(0, 300))
    min_length = draw(st.integers(0, min(max_length, 5)))
    space = gs.Text(max_length, min_length=min_length, charset=charset)
    chars = sorted(set(charset))
    text = "".join(draw(st.lists(st.sampled_from(chars), min_size=min_length, max_size=min(max_length, 40))))
    return space, text


@given(texts(), st.data())
def test_decode_text_round_trips_and_refuses_corrupted_rows(case: tuple[gs.Text, str], data: st.DataObject) -> None:
    space, text = case
    layout = Layout(space)
    codes = layout.unflatten(layout.flatten(text))
    assert layout.decode_text((), codes) == text
    length = len(text)
    if space.min_length > 0:
        # A stored length below min_length: a string the space does not allow.
        short = codes.copy()
        short[:] = 0
        short[-1] = data.draw(st.integers(0, space.min_length - 1))
        with pytest.raises(RowError, match=rf"^obs: length {short[-1]} is not in \[{space.min_length}, "):
            layout.decode_text((), short)
    if length < space.max_length:
        # A non-zero code after the length: a row encode never writes.
        stray = codes.copy()
        at = data.draw(st.integers(length, space.max_length - 1))
        stray[at] = data.draw(st.integers(1, len(space.character_set)))
        with pytest.raises(RowError, match=f"^obs: code {stray[at]} at position {at} follows the string's length"):
            layout.decode_text((), stray)
