"""Every exception the extension raises is a pufferrs exception that is also
the matching builtin, and every path it shows reads like Python indexing."""

from __future__ import annotations

import gymnasium.spaces as gs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pufferrs import BuffersError, Layout, PufferError, RowError, UnsupportedSpaceError
from pufferrs._native import RolloutBuffers
from pufferrs.spaces import format_path

keys = st.one_of(st.text(max_size=6), st.integers(0, 99))


@given(st.lists(keys, max_size=4))
def test_paths_read_like_python_indexing(path: list[str | int]) -> None:
    # Python's repr escapes a few rare non-printable code points that the
    # Rust formatter leaves as they are; keys of printable text, controls
    # and the usual separators are written exactly as repr writes them.
    printable = [k for k in path if isinstance(k, int) or all(c.isprintable() or ord(c) < 0xA1 for c in k)]
    assert format_path("obs", tuple(printable)) == "obs" + "".join(f"[{k!r}]" for k in printable)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gs.Dict(a=gs.Dict(b=gs.Sequence(gs.Discrete(2)))), "obs['a']['b']: Sequence has no fixed size"),
        (gs.Tuple((gs.Discrete(2), gs.Graph(gs.Box(0, 1, (2,)), None))), "obs[1]: Graph has no fixed size"),
        (gs.Dict({"a\nb": gs.Text(5)}), "obs['a\\nb']: Text spaces are not supported"),
        (gs.Dict({3: gs.Discrete(2)}), "obs: Dict keys must be str, got 3"),
        (gs.Dict(c=gs.Box(0, 1, (2,), np.float128)), "obs['c']: Box of dtype float128 is not a numeric dtype"),
        (gs.Box(0, 1, (2,), np.dtype(">f4")), "obs: Box of dtype >f4 is not a numeric dtype"),
    ],
)
def test_unsupported_spaces_are_refused_with_their_path(space: gs.Space, message: str) -> None:
    with pytest.raises(UnsupportedSpaceError) as info:
        Layout(space)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, TypeError)


def test_misusing_a_layout_raises_puffer_errors() -> None:
    layout = Layout(gs.Dict(a=gs.Box(0, 1, (3,), np.float32), b=gs.Discrete(4)))
    read_only = np.zeros(layout.row_shape, layout.flat_dtype)
    read_only.flags.writeable = False
    misuses = [
        (lambda: layout.unflatten([1, 2, 3]), "expected a numpy array of rows, got list"),
        (lambda: layout.unflatten(np.zeros(7, np.uint8)), "expected rows of 24 bytes"),
        (lambda: layout.unflatten(np.zeros((), np.uint8)), "expected rows with at least one axis"),
        (lambda: layout.flatten_into({"a": np.zeros(3), "b": 1}, read_only), "out is read-only"),
        (
            lambda: layout.flatten_batch([{"a": np.zeros(3), "b": 1}], out=np.zeros((2, 24), np.uint8)),
            "obs: expected a batch of 2, got 1",
        ),
        (lambda: Layout.__base__({"kind": "Box"}), "malformed space description"),
    ]
    for misuse, message in misuses:
        with pytest.raises(PufferError, match=message) as info:
            misuse()
        assert isinstance(info.value, ValueError | TypeError)
    with pytest.raises(RowError, match=r"row_shape \(5,\) does not hold the 6 items of a row"):
        Layout.__base__({"kind": "Box", "dtype": "float32", "shape": [6], "low": [0] * 6, "high": [1] * 6}, "x", (5,))


def test_misusing_rollout_buffers_raises_puffer_errors() -> None:
    buffers = RolloutBuffers(4, 2, 8, 8, 2)
    misuses = [
        (lambda: RolloutBuffers(4, 3, 8, 8), "num_workers (3) must be a positive divisor of num_envs (4)"),
        (lambda: RolloutBuffers("4", 2, 8, 8), "num_envs must be a positive int, got '4'"),
        (lambda: RolloutBuffers(4, True, 8, 8), "num_workers must be a positive int, got True"),
        (lambda: buffers.status(7), "worker 7 is out of range for 2 workers"),
        (lambda: buffers.gather([0, 1, 0]), "3 workers do not fit the gather area of 2 envs"),
        (lambda: RolloutBuffers.attach(-1, 4, 2, 8, 8, 2), "invalid file descriptor -1"),
        (
            lambda: RolloutBuffers.attach(buffers.fd, 4, 2, 8, 8, None),
            f"fd {buffers.fd} does not hold buffers made for these arguments",
        ),
        (lambda: RolloutBuffers.attach(buffers.fd, 4, 2, 8, 8, 2).fd, "attached buffers do not hold the region's fd"),
    ]
    for misuse, message in misuses:
        with pytest.raises(BuffersError) as info:
            misuse()
        assert str(info.value) == message or str(info.value).startswith(message)
        assert isinstance(info.value, ValueError)
