"""flatten / unflatten with numpy: bit-exact round trips, every accepted
input form, and a clear SpaceError (with the row untouched) for bad input."""

from __future__ import annotations

import threading
from typing import Any

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_tree_equal, spaces_with_samples, stack
from pufferrs import Layout, RowError, SpaceError


def padding_bytes(layout: Layout, row: np.ndarray) -> bytes:
    """The bytes of `row` that no leaf covers."""
    covered = np.zeros(layout.row_bytes, bool)
    for leaf in layout.leaves:
        covered[leaf.offset : leaf.offset + leaf.nbytes] = True
    return row.reshape(-1).view(np.uint8)[~covered].tobytes()


@given(spaces_with_samples())
def test_round_trip_is_bit_exact(case: tuple[gs.Space, list[Any]]) -> None:
    space, [obs] = case
    layout = Layout(space)
    row = layout.flatten(obs)
    assert row.shape == layout.observation_space.shape and row.dtype == layout.flat_dtype
    assert set(padding_bytes(layout, row)) <= {0}
    back = layout.unflatten(row)
    assert_tree_equal(back, obs)
    # What gymnasium decodes from our views is what it decodes from the sample.
    assert space.contains(back)
    if not has_empty_composite(space):  # gymnasium cannot flatten those
        np.testing.assert_array_equal(gs.flatten(space, back), gs.flatten(space, obs))


def has_empty_composite(space: gs.Space) -> bool:
    if isinstance(space, (gs.Dict, gs.Tuple)):
        children = list(space.spaces.values() if isinstance(space, gs.Dict) else space.spaces)
        return not children or any(map(has_empty_composite, children))
    return False


@given(spaces_with_samples(count=3), st.binary(min_size=1, max_size=1))
def test_flatten_into_writes_exactly_its_row(case: tuple[gs.Space, list[Any]], fill: bytes) -> None:
    space, samples = case
    layout = Layout(space)
    buffer = np.full((len(samples), layout.row_bytes), fill[0], np.uint8)
    for i, obs in enumerate(samples):
        layout.flatten_into(obs, buffer, i)
    for i, obs in enumerate(samples):
        assert buffer[i].tobytes() == layout.flatten(obs).tobytes()


@given(spaces_with_samples(count=4))
def test_batch_paths_agree_with_single(case: tuple[gs.Space, list[Any]]) -> None:
    space, samples = case
    layout = Layout(space)
    singles = np.stack([layout.flatten(obs) for obs in samples])
    from_list = layout.flatten_batch(samples)
    assert from_list.tobytes() == singles.tobytes()
    if layout.leaves:  # a batched structure needs a leaf to carry the batch axis
        from_structure = layout.flatten_batch(stack(samples))
        assert from_structure.tobytes() == singles.tobytes()
    batch = layout.unflatten(from_list)
    assert_tree_equal(batch, stack(samples))
    time_major = layout.unflatten(from_list.reshape(2, 2, *from_list.shape[1:]))
    assert_tree_equal(time_major, stack([stack(samples[:2]), stack(samples[2:])]))


def test_unflatten_returns_views_that_keep_the_rows_alive(reference_space: gs.Dict) -> None:
    layout = Layout(reference_space)
    rows = layout.flatten_batch([reference_space.sample() for _ in range(3)])
    views = layout.unflatten(rows)
    assert np.shares_memory(views["inv"]["hp"], rows)
    views["inv"]["hp"][1] = 42  # writes land in the row
    assert layout.unflatten(rows[1])["inv"]["hp"] == 42
    image = views["image"]
    del rows, views
    assert image.sum() >= 0  # the base is still mapped
    frozen = layout.flatten(reference_space.sample())
    frozen.flags.writeable = False
    assert not layout.unflatten(frozen)["vector"].flags.writeable


def test_rows_of_the_flat_dtype_unflatten_too() -> None:
    space = gs.Dict(a=gs.Box(-1, 1, (2,), np.float32), b=gs.Box(-1, 1, (), np.float32))
    layout = Layout(space)
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    views = layout.unflatten(rows)
    assert views["a"].tolist() == [[0, 1], [3, 4], [6, 7], [9, 10]]
    assert views["b"].tolist() == [2, 5, 8, 11]
    assert_tree_equal(layout.unflatten(rows.view(np.uint8)), views)


# Accepted input forms -----------------------------------------------------


def test_python_numbers_lists_and_numpy_scalars() -> None:
    space = gs.Dict(
        d=gs.Discrete(5, start=-2),
        md=gs.MultiDiscrete([3, 4], dtype=np.uint8),
        f=gs.Box(-1, 1, (), np.float16),
        b=gs.Box(0, 1, (2,), np.bool_),
        mb=gs.MultiBinary(3),
    )
    layout = Layout(space)
    obs = {"d": -2, "md": [2, 3], "f": 0.5, "b": [True, False], "mb": (1, 0, 1)}
    back = layout.unflatten(layout.flatten(obs))
    assert back["d"] == -2 and back["d"].dtype == np.int64
    assert back["md"].tolist() == [2, 3] and back["md"].dtype == np.uint8
    assert back["f"] == np.float16(0.5)
    assert back["b"].tolist() == [True, False]
    assert back["mb"].tolist() == [1, 0, 1] and back["mb"].dtype == np.int8
    numpy_scalars = {
        "d": np.int8(1),
        "md": np.array([0, 1], np.uint8),
        "f": np.float32(-1),
        "b": np.ones(2, bool),
        "mb": np.zeros(3, np.int8),
    }
    assert layout.unflatten(layout.flatten(numpy_scalars))["d"] == 1
    # Lists and tuples are both accepted for a Tuple, and dict subclasses for a Dict.
    pair = Layout(gs.Tuple((gs.Discrete(2), gs.Discrete(3))))
    assert pair.flatten([1, 2]).tolist() == pair.flatten((1, 2)).tolist() == [1, 2]


def test_same_kind_casts_are_applied() -> None:
    layout = Layout(gs.Dict(f=gs.Box(-10, 10, (3,), np.float32), i=gs.Box(-10, 10, (2,), np.int64)))
    obs = {"f": np.array([0.1, 2.5, -3.0]), "i": np.array([-3, 7], np.int8)}
    back = layout.unflatten(layout.flatten(obs))
    assert back["f"].tolist() == np.array([0.1, 2.5, -3.0], np.float32).tolist()
    assert back["i"].tolist() == [-3, 7]
    # unsigned into signed is same_kind
    assert layout.unflatten(layout.flatten({"f": np.zeros(3, np.uint16), "i": np.array([1, 2], np.uint32)}))[
        "i"
    ].tolist() == [1, 2]


def test_non_contiguous_sources() -> None:
    layout = Layout(gs.Dict(m=gs.Box(-100, 100, (2, 3), np.int32), v=gs.Box(-100, 100, (4,), np.float64)))
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    m = base[::2, ::2]  # strided
    v = np.arange(8.0)[::-2]  # reversed
    back = layout.unflatten(layout.flatten({"m": m, "v": v}))
    assert back["m"].tolist() == m.tolist()
    assert back["v"].tolist() == v.tolist()
    t = np.arange(6, dtype=np.int32).reshape(3, 2).T  # transposed
    assert layout.unflatten(layout.flatten({"m": t, "v": v}))["m"].tolist() == t.tolist()
    cast = layout.unflatten(layout.flatten({"m": t.astype(np.int8), "v": v.astype(np.float32)}))
    assert cast["m"].tolist() == t.tolist() and cast["v"].tolist() == v.tolist()


def test_large_leaves_flatten_correctly_from_threads() -> None:
    """Big copies release the GIL; concurrent calls must still be exact."""
    space = gs.Box(0, 255, (4, 256, 256), np.uint8)
    layout = Layout(space)
    inputs = [np.full(space.shape, i, np.uint8) for i in range(4)]
    out = np.zeros((4, layout.row_bytes), np.uint8)
    threads = [
        threading.Thread(target=lambda i=i: [layout.flatten_into(inputs[i], out, i) for _ in range(20)])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [set(np.unique(row)) for row in out] == [{0}, {1}, {2}, {3}]


# Bad input --------------------------------------------------------------

REFERENCE_BAD_INPUTS = [
    (lambda o: o.pop("vector"), r"obs: missing key 'vector'"),
    (lambda o: o.update(extra=1), r"obs: unexpected keys \['extra'\]"),
    (lambda o: o.update(inv=[1, 2]), r"obs\['inv'\]: expected a dict with keys \['items', 'hp'\], got list"),
    (lambda o: o.update(tuple=(o["tuple"][0],)), r"obs\['tuple'\]: expected a tuple of 2 items, got 1"),
    (
        lambda o: o["inv"].update(items=np.zeros(7, np.int64)),
        r"obs\['inv'\]\['items'\]: expected shape \(8,\), got \(7,\)",
    ),
    (lambda o: o.update(image=o["image"][0]), r"obs\['image'\]: expected shape \(3, 64, 64\), got \(64, 64\)"),
    (lambda o: o["inv"].update(hp=1.0), r"obs\['inv'\]\['hp'\]: expected int64 values, got float64"),
    (
        lambda o: o.update(vector=np.zeros(32, np.complex64)),
        r"obs\['vector'\]: got an array of unsupported dtype complex64",
    ),
    (lambda o: o.update(vector=None), r"obs\['vector'\]: expected numbers, got NoneType"),
    (lambda o: o.update(vector="abc"), r"obs\['vector'\]: expected numbers, got str"),
    (lambda o: o["inv"].update(hp=100), r"obs\['inv'\]\['hp'\]: expected a value in \[0, 100\), got 100"),
    (
        lambda o: o["inv"]["items"].__setitem__(3, -1),
        r"obs\['inv'\]\['items'\]\[3\]: expected a value in \[0, 10\), got -1",
    ),
    (
        lambda o: o.update(tuple=(o["tuple"][0], 2**70)),
        r"obs\['tuple'\]\[1\]: 1180591620717411303424 does not fit int64",
    ),
    (lambda o: o.update(tuple=(o["tuple"][0], 2**200)), r"obs\['tuple'\]\[1\]: 16069\d+ is too large"),
    (lambda o: o.update(image=o["image"].astype(np.int64)), r"obs\['image'\]: expected uint8 values, got int64"),
]


@pytest.mark.parametrize(("mutate", "message"), REFERENCE_BAD_INPUTS)
def test_bad_input_names_the_path_and_leaves_the_row(reference_space: gs.Dict, mutate: Any, message: str) -> None:
    layout = Layout(reference_space)
    obs = reference_space.sample()
    mutate(obs)
    rows = np.random.default_rng(0).integers(0, 256, (2, layout.row_bytes), dtype=np.uint8)
    before = rows.copy()
    with pytest.raises(SpaceError, match=message) as err:
        layout.flatten_into(obs, rows, 1)
    assert isinstance(err.value, ValueError)
    assert rows.tobytes() == before.tobytes()
    with pytest.raises(SpaceError, match=message):
        layout.flatten(obs)


def test_values_that_would_wrap_are_refused() -> None:
    layout = Layout(gs.Dict(small=gs.Box(-100, 100, (2,), np.int8), bits=gs.MultiBinary(2)))
    with pytest.raises(SpaceError, match=r"obs\['small'\]\[1\]: 300 does not fit int8"):
        layout.flatten({"small": [1, 300], "bits": [0, 1]})
    with pytest.raises(SpaceError, match=r"obs\['bits'\]\[0\]: expected 0 or 1, got 2"):
        layout.flatten({"small": [1, 3], "bits": [2, 1]})
    with pytest.raises(SpaceError, match=r"obs\['small'\]: expected int8 values, got float64"):
        layout.flatten({"small": [1.0, 3.0], "bits": [0, 1]})


def test_check_bounds_is_opt_in() -> None:
    layout = Layout(gs.Dict(x=gs.Box(-1, 1, (2, 2), np.float32), n=gs.Box(0, 5, (), np.int16)))
    outside = {"x": np.array([[0, 0], [0, 1.5]], np.float32), "n": 3}
    layout.flatten(outside)  # bounds are not checked by default
    with pytest.raises(SpaceError, match=r"obs\['x'\]\[1, 1\]: expected a value in \[-1, 1\], got 1.5"):
        layout.flatten(outside, check_bounds=True)
    with pytest.raises(SpaceError, match=r"obs\['x'\]\[0, 1\]: expected a finite value, got NaN"):
        layout.flatten({"x": np.array([[0, np.nan], [0, 0]], np.float32), "n": 3}, check_bounds=True)
    with pytest.raises(SpaceError, match=r"obs\['n'\]: expected a value in \[0, 5\], got 6"):
        layout.flatten({"x": np.zeros((2, 2), np.float32), "n": 6}, check_bounds=True)


def test_batch_errors_name_the_observation() -> None:
    layout = Layout(gs.Dict(d=gs.Discrete(3), v=gs.Box(-1, 1, (2,), np.float32)))
    good = {"d": 1, "v": np.zeros(2, np.float32)}
    with pytest.raises(SpaceError, match=r"obs\[2\]\['d'\]: expected a value in \[0, 3\), got 5"):
        layout.flatten_batch([good, good, {"d": 5, "v": np.zeros(2, np.float32)}])
    with pytest.raises(SpaceError, match=r"obs\['d'\]\[1\]: expected a value in \[0, 3\), got 7"):
        layout.flatten_batch({"d": np.array([0, 7]), "v": np.zeros((2, 2), np.float32)})
    with pytest.raises(SpaceError, match=r"obs\['v'\]: expected a batch of 3 \(the batch size of obs\['d'\]\), got 2"):
        layout.flatten_batch({"d": np.array([0, 1, 2]), "v": np.zeros((2, 2), np.float32)})
    with pytest.raises(SpaceError, match=r"obs\['v'\]: expected shape \(3, 2\), got \(3, 3\)"):
        layout.flatten_batch({"d": np.array([0, 1, 2]), "v": np.zeros((3, 3), np.float32)})
    out = np.full((3, layout.row_bytes), 7, np.uint8)
    with pytest.raises(SpaceError):
        layout.flatten_batch([good, good, {"d": 1}], out=out)
    assert (out == 7).all()


@given(spaces_with_samples(), st.data())
def test_broken_observations_raise_and_never_write(case: tuple[gs.Space, list[Any]], data: st.DataObject) -> None:
    """Replace any node of a random observation by something that cannot
    fit: always a SpaceError, never a crash, the row untouched."""
    space, [obs] = case
    layout = Layout(space)
    paths = [()]
    stack_ = [((), space)]
    while stack_:
        path, sub = stack_.pop()
        children = (
            sub.spaces.items()
            if isinstance(sub, gs.Dict)
            else enumerate(sub.spaces)
            if isinstance(sub, gs.Tuple)
            else []
        )
        for key, child in children:
            paths.append((*path, key))
            stack_.append(((*path, key), child))
    path = data.draw(st.sampled_from(paths))
    junk = data.draw(st.sampled_from([None, "text", object(), np.zeros((5, 5, 5, 5)), 1.5j]))

    def replace(value: Any, rest: tuple) -> Any:
        if not rest:
            return junk
        key, *tail = rest
        if isinstance(value, dict):
            return {**value, key: replace(value[key], tuple(tail))}
        return tuple(replace(v, tuple(tail)) if i == key else v for i, v in enumerate(value))

    row = np.full(layout.row_bytes, 0xAB, np.uint8)
    with pytest.raises(SpaceError):
        layout.flatten_into(replace(obs, path), row)
    assert set(row.tobytes()) <= {0xAB}


# Buffers ----------------------------------------------------------------


def test_out_buffer_problems_are_row_errors() -> None:
    layout = Layout(gs.Dict(a=gs.Discrete(3), b=gs.Box(-1, 1, (2,), np.float32)))
    obs = {"a": 1, "b": np.zeros(2, np.float32)}
    assert layout.row_bytes == 16
    read_only = np.zeros(16, np.uint8)
    read_only.flags.writeable = False
    cases = [
        (read_only, None, "out is read-only"),
        (np.zeros(15, np.uint8), None, "holds 15 bytes"),
        (np.zeros((2, 16), np.uint8), 2, "index 2 is out of range for 2 rows"),
        (np.zeros((2, 32), np.uint8)[:, ::2], 0, "must be C-contiguous"),
        (np.zeros((), np.uint8), 0, "index given but out is 0-d"),
    ]
    for out, index, message in cases:
        with pytest.raises(RowError, match=message):
            layout.flatten_into(obs, out, index)
    out = np.zeros((2, 4), np.float32)  # rows may be any dtype of the right width
    layout.flatten_into(obs, out, -1)
    assert layout.unflatten(out)["a"].tolist() == [0, 1]
    # A batch that does not fill out is the value's fault, named as such.
    with pytest.raises(SpaceError, match="obs: expected a batch of 2, got 3"):
        layout.flatten_batch([obs] * 3, out=out)


def test_unflatten_refuses_rows_that_do_not_fit() -> None:
    layout = Layout(gs.Dict(a=gs.Discrete(3), b=gs.Box(-1, 1, (2,), np.float32)))
    with pytest.raises(RowError, match="expected rows of 16 bytes"):
        layout.unflatten(np.zeros((4, 15), np.uint8))
    with pytest.raises(RowError, match="last axis of rows must be contiguous"):
        layout.unflatten(np.zeros((4, 32), np.uint8)[:, ::2])
    with pytest.raises(RowError, match="expected a numpy array of rows, got list"):
        layout.unflatten([0] * 16)
    with pytest.raises(RowError, match="0-d"):
        layout.unflatten(np.zeros((), np.uint8))
