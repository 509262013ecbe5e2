"""``Infos``, the infos a vector env's ``recv`` returns: one dict per row,
made when read, that behaves as the list of the same dicts (see
``pufferrs/vector/infos.py``)."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pufferrs.vector as pv
from pufferrs.vector.infos import Infos


@st.composite
def batches(draw: st.DrawFn) -> tuple:
    """An Infos and the list it stands for, built eagerly as recv built it."""
    n = draw(st.integers(0, 12))
    positions = st.integers(0, n - 1) if n else st.nothing()
    given_infos = draw(st.dictionaries(positions, st.dictionaries(st.sampled_from("abc"), st.integers(0, 3))))
    ended = sorted(draw(st.sets(positions))) if n else []
    dense = draw(st.booleans())
    returns = np.arange(n, dtype=np.float64) * 1.5
    lengths = np.arange(n, dtype=np.int64) + 7
    finals = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    rows = draw(st.one_of(st.none(), st.permutations(range(n)).map(np.array))) if n else None
    expected = [dict(given_infos.get(k, {})) for k in range(n)]
    for k in ended:
        info = expected[k]
        row = k if rows is None else int(rows[k])
        expected[k] = {
            **info,
            "episode_return": float(returns[k]),
            "episode_length": int(lengths[k]),
            "final_obs": finals[row],
            "final_info": info,
        }
    items = [dict(given_infos.get(k, {})) for k in range(n)] if dense else {k: dict(v) for k, v in given_infos.items()}
    infos = Infos(n, items, ended, returns.copy(), lengths.copy(), finals, rows) if ended else Infos(n, items)
    return infos, expected


def same(a: object, b: object) -> bool:
    """Equal, with arrays compared by value (``final_obs`` is a view)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@settings(max_examples=150, deadline=None)
@given(batches(), st.integers(-14, 14), st.integers(-14, 14), st.sampled_from(["index", "iter", "count", "slice"]))
def test_infos_read_as_the_list_they_stand_for(batch: tuple, i: int, j: int, first: str) -> None:
    infos, expected = batch
    n = len(expected)
    assert len(infos) == n
    # Whatever is read first (rows are made on the first read), the rest agree.
    if first == "index" and -n <= i < n:
        assert same(infos[i], expected[i])
    elif first == "count":
        assert infos.count({}) == expected.count({})
    elif first == "slice":
        assert all(same(a, b) for a, b in zip(infos[i:j], expected[i:j], strict=True))
    assert all(same(a, b) for a, b in zip(infos, expected, strict=True))
    assert infos.count({}) == expected.count({}) and ({} in infos) == ({} in expected)
    for k in range(-n, n):
        assert same(infos[k], expected[k])
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            infos[bad]
    assert all(same(a, b) for a, b in zip(reversed(infos), reversed(expected), strict=True))
    # A row is the same dict every time it is read: what is written into it stays.
    if n:
        infos[i % n]["mine"] = 1
        assert infos[i % n]["mine"] == 1 and list(infos)[i % n] is infos[i % n]
        infos[j % n] = {"set": True}
        assert infos[j % n] == {"set": True}
        assert infos.index({"set": True}) == j % n


def test_infos_compare_pickle_and_print_as_a_list() -> None:
    infos = Infos(3, {1: {"a": 1}})
    assert infos == [{}, {"a": 1}, {}] and [{}, {"a": 1}, {}] == infos
    assert infos != [{}, {"a": 1}] and infos != ({}, {"a": 1}, {})
    assert infos == Infos(3, [{}, {"a": 1}, {}])
    assert repr(infos) == repr([{}, {"a": 1}, {}])
    assert infos + [{"b": 2}] == [{}, {"a": 1}, {}, {"b": 2}] and [{"b": 2}] + infos == [{"b": 2}, {}, {"a": 1}, {}]
    for copied in (pickle.loads(pickle.dumps(infos)), copy.copy(infos), copy.deepcopy(infos)):
        assert type(copied) is list and copied == [{}, {"a": 1}, {}]
    with pytest.raises(TypeError):
        hash(infos)
    with pytest.raises(TypeError):
        infos[1.0]  # type: ignore[index]  # as a list refuses it
    assert infos[np.int64(1)] == {"a": 1}
    copied = infos.copy()
    assert type(copied) is list and copied == infos and copied[1] is infos[1]


def test_ended_rows_keep_the_values_of_their_step_when_read_later() -> None:
    """An ended row's return and length are those of its step, however many
    steps later the infos are read (the rows change at every step)."""

    def creator() -> gym.vector.VectorEnv:
        return gym.make_vec("CartPole-v1", 16, vectorization_mode="vector_entry_point")

    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, 16) for _ in range(60)]
    with pv.make(creator, num_envs=1, seed=3) as now, pv.make(creator, num_envs=1, seed=3) as later:
        now.reset()
        later.reset()
        held, read, finals = [], [], []
        for a in actions:
            _, _, terminals, truncations, infos = now.step(a)
            ended = (terminals | truncations).nonzero()[0].tolist()
            read.append([(k, infos[k]["episode_return"], infos[k]["episode_length"]) for k in ended])
            finals.append([infos[k]["final_obs"].copy() for k in ended])
            held.append((ended, later.step(a)[4]))
        assert sum(map(len, read)) > 10
        for (ended, infos), expected in zip(held, read, strict=True):
            assert [(k, infos[k]["episode_return"], infos[k]["episode_length"]) for k in ended] == expected
            assert all("final_info" in infos[k] for k in ended)
            assert infos.count({}) == len(infos) - len(ended)
        # final_obs stays a view of the row that the env's next ended episode rewrites, as documented.
        last_ended, last_infos = held[-1]
        for k, final in zip(last_ended, finals[-1], strict=True):
            np.testing.assert_array_equal(last_infos[k]["final_obs"], final)
