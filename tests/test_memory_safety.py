"""No input a Python user can build crashes pufferrs or gives wrong data
silently: every reproducer of a crash or a silent corruption that was
found, and fuzzing over what rows, sources and buffers can be. A
reproducer that could crash runs in a subprocess, so that a regression
fails one test rather than the run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_tree_equal, spaces_with_samples
from pufferrs import (
    BuffersError,
    Layout,
    RowError,
    SharedMemoryError,
    SpaceError,
    UnsupportedSpaceError,
    _native,
)
from pufferrs._native import RolloutBuffers


def run_isolated(code: str) -> str:
    """Runs `code` in a fresh interpreter; a crash (a signal) or an uncaught
    exception fails the test with its output. Returns stdout."""
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# Rows of a dtype that holds references, or is not plain data -------------


def test_object_and_string_rows_are_refused() -> None:
    out = run_isolated("""
        import numpy as np, gymnasium.spaces as gs
        from pufferrs import Layout, RowError
        layout = Layout(gs.Box(-1e9, 1e9, (4,), np.int64))
        objects = np.array([object(), "x", 3, None], dtype=object)
        attempts = [
            lambda: layout.unflatten(objects),
            lambda: layout.flatten_into(np.zeros(4, np.int64), np.empty(1, object)),
            lambda: layout.flatten_into(np.zeros(4, np.int64), np.empty((2, 4), object), 1),
            lambda: layout.flatten_batch([np.zeros(4, np.int64)], out=np.empty((1, 4), object)),
            lambda: layout.unflatten(np.zeros(2, "U4")),
            lambda: layout.unflatten(np.zeros(4, "S8")),
            lambda: layout.unflatten(np.zeros(4, "datetime64[s]")),
            lambda: layout.unflatten(np.zeros(1, [("a", "O"), ("b", "V24")])),
            lambda: layout.unflatten(np.zeros(1, [("a", "i8", (4,))])),
        ]
        for attempt in attempts:
            try:
                attempt()
            except RowError as err:
                print(err)
            else:
                raise AssertionError("accepted")
        print(objects[1], objects[2], objects[3])  # the objects are intact
    """)
    assert "rows: dtype object cannot hold rows" in out
    assert "out: dtype object cannot hold rows" in out
    assert out.splitlines()[-1] == "x 3 None"


def test_plain_rows_of_any_width_are_accepted() -> None:
    layout = Layout(gs.Box(-10, 10, (4,), np.int64))
    obs = np.arange(4)
    for dtype in ["uint8", "int16", "float32", "complex128", "bool", "V8", "V32"]:
        rows = np.zeros((2, 32 // np.dtype(dtype).itemsize), dtype)
        layout.flatten_into(obs, rows, 1)
        assert layout.unflatten(rows)[1].tolist() == [0, 1, 2, 3], dtype


# A source that overlaps its destination ---------------------------------


def test_a_row_flattened_into_itself_with_leaves_swapped() -> None:
    layout = Layout(gs.Dict(a=gs.Box(-10, 10, (2,), np.int64), b=gs.Box(-10, 10, (2,), np.int64)))
    row = layout.flatten({"a": [1, 2], "b": [3, 4]})
    views = layout.unflatten(row)
    layout.flatten_into({"a": views["b"], "b": views["a"]}, row)
    assert layout.unflatten(row)["a"].tolist() == [3, 4]
    assert layout.unflatten(row)["b"].tolist() == [1, 2]
    # Checked leaves (a Discrete range) and casts go the same way.
    checked = Layout(gs.Dict(a=gs.MultiDiscrete([9, 9]), b=gs.MultiDiscrete([9, 9])))
    row = checked.flatten({"a": [1, 2], "b": [3, 4]})
    views = checked.unflatten(row)
    checked.flatten_into({"a": views["b"][::-1], "b": views["a"]}, row)
    assert checked.unflatten(row)["a"].tolist() == [4, 3]
    assert checked.unflatten(row)["b"].tolist() == [1, 2]


def test_flatten_batch_into_its_own_rows() -> None:
    layout = Layout(gs.Dict(a=gs.Discrete(10), b=gs.Box(-10, 10, (3,), np.float32)))
    rows = layout.flatten_batch([{"a": i, "b": np.full(3, i, np.float32)} for i in range(4)])
    views = layout.unflatten(rows)
    order = [3, 0, 2, 1]
    shuffled = [{"a": views["a"][i], "b": views["b"][i]} for i in order]
    layout.flatten_batch(shuffled, out=rows)
    assert layout.unflatten(rows)["a"].tolist() == order
    assert layout.unflatten(rows)["b"][:, 0].tolist() == order
    # A batched structure that is the rows' own leaves, reversed.
    layout.flatten_batch({"a": views["a"][::-1], "b": views["b"][::-1]}, out=rows)
    assert layout.unflatten(rows)["a"].tolist() == order[::-1]


OVERLAP_SPACE = gs.Dict(
    a=gs.Box(-(2**40), 2**40, (3,), np.int64),
    b=gs.Box(-1e9, 1e9, (2, 2), np.float32),
    c=gs.MultiBinary(5),
    d=gs.Box(0, 1, (4,), np.bool_),
)


@st.composite
def views_into(draw: st.DrawFn, buffer: np.ndarray, count: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A view of `count` elements of `buffer` (bytes) as `dtype`, at any
    offset, stride and direction, shaped `shape`."""
    itemsize = np.dtype(dtype).itemsize
    step = draw(st.integers(1, 2)) * itemsize * draw(st.sampled_from([1, -1]))
    span = (count - 1) * abs(step) + itemsize
    start = draw(st.integers(0, buffer.nbytes - span))
    if step < 0:
        start += span - itemsize
    flat = np.lib.stride_tricks.as_strided(
        buffer[start:].view(np.uint8)[:itemsize].view(dtype), (count,), (step,), writeable=False
    )
    return flat.reshape(shape)


@given(st.data())
def test_sources_anywhere_in_the_destination_copy_as_if_copied_first(data: st.DataObject) -> None:
    """Every leaf's source is a view at a random offset and stride into the
    very row being written: the result is what a copy of the sources gives."""
    layout = Layout(OVERLAP_SPACE)
    row = np.random.default_rng(data.draw(st.integers(0, 99))).integers(0, 256, layout.row_bytes, np.uint8)
    obs = {
        "a": data.draw(views_into(row, 3, (3,), data.draw(st.sampled_from(["int8", "int16", "uint32"])))),
        "b": data.draw(views_into(row, 4, (2, 2), "uint8")),
        "c": data.draw(views_into(row, 5, (5,), "bool")),
        "d": data.draw(views_into(row, 4, (4,), "bool")),
    }
    expected = layout.flatten({k: np.array(v) for k, v in obs.items()})
    layout.flatten_into(obs, row)
    assert row.tobytes() == expected.tobytes()


# Deep nesting -------------------------------------------------------------


def test_deep_nesting_is_refused_not_a_stack_overflow() -> None:
    out = run_isolated("""
        import sys
        import gymnasium.spaces as gs
        from pufferrs import Layout, UnsupportedSpaceError, _native
        sys.setrecursionlimit(100_000)
        space = gs.Discrete(2)
        for _ in range(8_000):
            space = gs.Tuple((space,))
        try:
            Layout(space)
        except UnsupportedSpaceError as err:
            print(err)
        spec = {"kind": "Discrete", "dtype": "int64", "n": 2, "start": 0}
        for _ in range(10_000):
            spec = {"kind": "Tuple", "items": [spec]}
        try:
            _native.Layout(spec)
        except UnsupportedSpaceError as err:
            print(err)
    """)
    refusal = "obs" + "[0]" * (_native.MAX_DEPTH + 1) + f": Dicts and Tuples nest at most {_native.MAX_DEPTH} deep"
    assert out.splitlines() == [refusal] * 2


def test_nesting_up_to_max_depth_works_and_one_more_is_refused() -> None:
    def nest(depth: int) -> gs.Space:
        space: gs.Space = gs.Discrete(3)
        for i in range(depth):
            space = gs.Dict(k=space) if i % 2 else gs.Tuple((space,))
        return space

    layout = Layout(nest(_native.MAX_DEPTH))
    assert len(layout.leaves[0].path) == _native.MAX_DEPTH
    sample = nest(_native.MAX_DEPTH).sample()
    assert_tree_equal(layout.unflatten(layout.flatten(sample)), sample)
    with pytest.raises(UnsupportedSpaceError, match="nest at most"):
        Layout(nest(_native.MAX_DEPTH + 1))
    with pytest.raises(UnsupportedSpaceError, match="nest at most"):
        Layout(nest(900))  # past it, and still inside Python's default recursion limit


# Rollout buffers: sizes, views and panics -----------------------------------


def test_buffer_sizes_that_would_wrap_are_refused() -> None:
    out = run_isolated("""
        from pufferrs import BuffersError
        from pufferrs._native import RolloutBuffers
        for args in [(2, 2, 4611686018426339328, 1537228672810181973, 1), (4, 2, 2**62, 8)]:
            try:
                RolloutBuffers(*args)
            except BuffersError as err:
                print(str(err)[-20:])
        buffers = RolloutBuffers(4, 2, 8, 8)
        print(buffers.wait_completed(2**62, timeout=0.01), buffers.wait_completed(0, timeout=1e300))
    """)
    assert out.splitlines() == ["do not fit in memory"] * 2 + ["[] []"]


def test_bad_buffer_arguments_are_buffers_errors() -> None:
    buffers = RolloutBuffers(4, 2, 8, 8)
    for misuse, message in [
        (lambda: RolloutBuffers(4, 2, -1, 8), "obs_row_bytes must be a non-negative int, got -1"),
        (
            lambda: RolloutBuffers(4, 2, 8, 2**64),
            "action_row_bytes must be a non-negative int, got 18446744073709551616",
        ),
        (lambda: RolloutBuffers(4, 2, 8.0, 8), "obs_row_bytes must be a non-negative int, got 8.0"),
        (lambda: buffers.wait_completed(-1), "max must be a non-negative int, got -1"),
        (lambda: buffers.wait_completed(True), "max must be a non-negative int, got True"),
    ]:
        with pytest.raises(BuffersError) as info:
            misuse()
        assert str(info.value) == message


SIZES = st.one_of(st.integers(0, 300), st.integers(2**61, 2**64 - 1), st.sampled_from([-1, 2**64, True, 1.5]))


@given(st.integers(1, 8), st.sampled_from([None, 1, 2, 4, 8]), SIZES, SIZES, st.sampled_from([None, 1, 2, 4, 8]))
def test_buffers_are_made_right_or_refused(
    num_envs: int, num_workers: int | None, obs: Any, action: Any, batch: int | None
) -> None:
    """Any arguments: a pufferrs error, or buffers whose every array lies
    inside the region and can be written end to end."""
    try:
        buffers = RolloutBuffers(num_envs, num_workers, obs, action, batch)
    except (BuffersError, SharedMemoryError):
        return
    names = ["observations", "actions", "rewards", "terminals", "truncations", "masks"]
    names += ["episode_returns", "episode_lengths"]
    names += ["batch_" + n for n in names[:6]] if buffers.gathers else []
    total = 0
    for name in names:
        array = buffers.array(name)
        assert array.base is buffers
        if array.size:
            flat = array.reshape(-1)
            flat[0], flat[-1] = 1, 1
        total += array.nbytes
    assert total <= buffers.nbytes
    assert buffers.array("observations").shape == (num_envs, obs)


# Values checked are values copied -------------------------------------------


def test_a_source_rewritten_during_the_copy_never_stores_a_bad_value() -> None:
    """Leaves over 64 KiB are stored with the GIL released; a thread that
    rewrites the source meanwhile gets an error or a valid row, never an
    out-of-range value in the row."""
    layout = Layout(gs.MultiDiscrete([10] * 2**18, dtype=np.int8))
    source = np.ones(2**18, np.int64)
    row = np.zeros(layout.row_bytes, np.uint8)
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            source[2**17] = 1000
            source[2**17] = 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    stored = refused = 0
    start = time.monotonic()  # bounds the run; nothing is timed
    try:
        # Long enough for both outcomes to happen many times, and bounded.
        while time.monotonic() < start + 1.5 or (not (stored and refused) and time.monotonic() < start + 10):
            try:
                layout.flatten_into(source, row)
            except SpaceError as err:
                assert str(err) == "obs[131072]: 1000 does not fit int8"
                refused += 1
            else:
                stored += 1
                assert ((row.view(np.int8) >= 0) & (row.view(np.int8) < 10)).all()
    finally:
        stop.set()
        writer.join()


# Empty batches ---------------------------------------------------------------


def test_an_empty_batch_round_trips_to_empty_leaves(reference_space: gs.Dict) -> None:
    layout = Layout(reference_space)
    rows = layout.flatten_batch([])
    assert rows.shape == (0, layout.row_bytes)
    views = layout.unflatten(rows)
    assert views["image"].shape == (0, 3, 64, 64) and views["inv"]["hp"].shape == (0,)
    assert layout.unflatten(rows.reshape(0, 5, layout.row_bytes))["vector"].shape == (0, 5, 32)
    box = Layout(gs.Box(-1, 1, (2, 3), np.float32))
    assert box.unflatten(box.flatten_batch([])).shape == (0, 2, 3)
    empty = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (0, layout.row_bytes), (0, 0))
    assert layout.unflatten(empty)["tuple"][0].shape == (0, 4)


# Batch sizes in messages ------------------------------------------------------


def test_batch_size_errors_name_the_value_that_disagrees() -> None:
    action = Layout(gs.Dict(a=gs.Discrete(3), b=gs.Discrete(3)), "action")
    with pytest.raises(SpaceError) as info:
        action.flatten_batch({"a": np.zeros(4, np.int64), "b": np.zeros(3, np.int64)})
    assert str(info.value) == "action['b']: expected a batch of 4 (the batch size of action['a']), got 3"
    out = np.zeros((4, action.row_bytes), np.uint8)
    with pytest.raises(SpaceError) as info:
        action.flatten_batch([{"a": 0, "b": 0}] * 3, out=out)
    assert str(info.value) == "action: expected a batch of 4, got 3"
    with pytest.raises(SpaceError) as info:
        action.flatten_batch({"a": np.zeros(3, np.int64), "b": np.zeros(3, np.int64)}, out=out)
    assert str(info.value) == "action['a']: expected a batch of 4, got 3"
    discrete = Layout(gs.Discrete(3), "action")
    with pytest.raises(SpaceError) as info:
        discrete.flatten_batch(0, out=np.zeros((4, 8), np.uint8))
    assert str(info.value) == "action: expected shape (4,), got ()"
    with pytest.raises(SpaceError) as info:
        discrete.flatten_batch(np.int64(0))
    assert str(info.value) == "action: expected shape (B,), got ()"
    with pytest.raises(RowError, match="out must have a leading batch axis"):
        discrete.flatten_batch([0], out=np.zeros((), np.uint8))


# Small ones -----------------------------------------------------------------


def test_row_indices_are_ints() -> None:
    layout = Layout(gs.Discrete(3))
    out = np.zeros((2, 8), np.uint8)
    for index, message in [
        (True, "index must be an int, got True"),
        (np.True_, "index must be an int, got np.True_"),
        (1.0, "index must be an int, got 1.0"),
        (2**63, "index 9223372036854775808 is out of range for 2 rows"),
        (2**200, f"index {2**200} is out of range"),
        (-3, "index -3 is out of range for 2 rows"),
    ]:
        with pytest.raises(RowError) as info:
            layout.flatten_into(1, out, index)
        assert str(info.value) == message
    layout.flatten_into(2, out, np.int64(-1))
    assert layout.unflatten(out).tolist() == [0, 2]


def test_discrete_ranges_past_their_dtype_need_no_numpy_arithmetic() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = Layout(gs.Discrete(2**63 - 1, start=1)).observation_space
        assert (space.low[0], space.high[0]) == (1, 2**63 - 1)
        wide = Layout(gs.MultiDiscrete([2**62, 2**62], start=[2**62, 0])).observation_space
        assert wide.high.tolist() == [2**63 - 1, 2**62 - 1]


def test_bools_are_stored_as_zero_or_one() -> None:
    layout = Layout(gs.Dict(b=gs.Box(0, 1, (3,), np.bool_), n=gs.Box(0, 9, (3,), np.uint8)))
    twos = np.array([2, 0, 255], np.uint8).view(np.bool_)
    row = layout.flatten({"b": twos, "n": twos})
    assert row.tobytes() == layout.flatten({"b": [True, False, True], "n": [1, 0, 1]}).tobytes()
    assert layout.unflatten(row)["b"].view(np.uint8).tolist() == [1, 0, 1]


# Fuzzing rows and destinations ------------------------------------------------

ROW_DTYPES = ["uint8", "int8", "int16", "uint32", "float32", "float64", "complex64", "bool", "V4", "V16"]
ALL_DTYPES = [*ROW_DTYPES, "object", "U2", "S4", "datetime64[ms]", [("x", "i4"), ("y", "O")]]


@st.composite
def strided_arrays(draw: st.DrawFn, width: int) -> np.ndarray:
    """A view of any dtype, leading shape and strides, at an offset into a
    larger buffer, whose last axis is `width` bytes wide when it can be."""
    dtype = np.dtype(draw(st.sampled_from(ALL_DTYPES)))
    fits = width % dtype.itemsize == 0 and width > 0
    items = width // dtype.itemsize if fits and draw(st.booleans()) else draw(st.integers(1, 9))
    lead = draw(st.lists(st.integers(0, 3), max_size=2))
    steps = [draw(st.sampled_from([1, 2, -1])) for _ in lead]
    last_step = draw(st.sampled_from([1, 1, 1, 2]))
    start = draw(st.integers(0, 2))
    big = np.zeros((*[2 * d + 1 for d in lead], start + items * last_step), dtype)

    def pick(dim: int, step: int) -> slice:
        if step < 0:
            return slice(dim - 1, None, -1) if dim else slice(0, 0)
        return slice(0, dim * step, step)

    return big[(*map(pick, lead, steps), slice(start, None, last_step))]


def plain(dtype: np.dtype) -> bool:
    return dtype.kind not in "OUSMm" and dtype.fields is None


@given(st.data())
def test_unflatten_fuzz_refuses_or_views_exactly_the_row_bytes(data: st.DataObject) -> None:
    layout = Layout(gs.Dict(a=gs.Box(-9, 9, (2,), np.int16), b=gs.Discrete(5), c=gs.Box(0, 1, (), np.bool_)))
    rows = data.draw(strided_arrays(layout.row_bytes))
    if plain(rows.dtype):
        raw = rows.base.view(np.uint8)
        raw[...] = np.random.default_rng(0).integers(0, 256, raw.shape, np.uint8)
    one_row = rows.shape[-1] * rows.itemsize == layout.row_bytes
    contiguous = rows.size == 0 or rows.shape[-1] == 1 or rows.strides[-1] == rows.itemsize
    try:
        views = layout.unflatten(rows)
    except RowError:
        assert not (plain(rows.dtype) and one_row and contiguous)
        return
    assert plain(rows.dtype) and one_row and contiguous
    for index in np.ndindex(rows.shape[:-1]):
        raw = rows[index].tobytes()
        for leaf in layout.leaves:
            view = views
            for key in leaf.path:
                view = view[key]
            element = view[(*index, ...)]  # a view even for a scalar leaf
            assert element.tobytes() == raw[leaf.offset : leaf.offset + leaf.nbytes]
            assert np.shares_memory(element, rows[index])


@given(spaces_with_samples(), st.data())
def test_flatten_into_fuzz_writes_its_row_or_refuses_and_touches_nothing_else(
    case: tuple[gs.Space, list[Any]], data: st.DataObject
) -> None:
    space, [obs] = case
    layout = Layout(space)
    out = data.draw(strided_arrays(layout.row_bytes))
    index = data.draw(st.one_of(st.none(), st.integers(-4, 4)))
    base = out.base
    if plain(base.dtype):
        base.view(np.uint8)[...] = 0xA5
    before = base.copy()
    if index is None:
        row = out
    elif out.ndim and -len(out) <= index < len(out):
        row = out[index, ...]  # a view even of a 1-d out
    else:
        row = None
    fits = row is not None and row.nbytes == layout.row_bytes and row.flags.c_contiguous
    try:
        layout.flatten_into(obs, out, index)
    except RowError:
        assert not (plain(base.dtype) and fits)
        assert base.tobytes() == before.tobytes()
        return
    assert plain(base.dtype) and fits and row is not None
    assert row.tobytes() == layout.flatten(obs).tobytes()
    start = row.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    end = start + layout.row_bytes
    after, before_bytes = base.tobytes(), before.tobytes()
    assert after[:start] == before_bytes[:start] and after[end:] == before_bytes[end:]
