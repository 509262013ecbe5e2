"""What an adversarial or careless user can do to the Python side, and the
pufferrs error (or the right data) each gets: rows torch cannot view,
vector envs inherited by a forked child, infos that do not pickle, batches
of the wrong size, and values outside their Box. Whatever could crash or
hang runs in a subprocess with a timeout."""

from __future__ import annotations

import functools
import inspect
import subprocess
import sys
import textwrap
import threading
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pufferrs.vector as pv
from conftest import assert_tree_equal, spaces
from pufferrs import Layout, RowError, SpaceError, WorkerError
from pufferrs.pytorch import _fill, _plan, unflatten


def run_python(body: str, *helpers: Any, timeout: float = 60) -> str:
    """Runs ``body`` in a fresh interpreter, after the source of
    ``helpers`` (this module imports torch, which would take the script
    seconds), and returns what it printed; a crash or a hang fails the test.
    The helpers live in the script's ``__main__``: vector envs there use the
    fork start method, so that workers need not import them."""
    prelude = f"""
import sys
sys.path[:0] = {sys.path!r}
import threading
from typing import Any
import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
"""
    script = "\n".join([prelude, *(inspect.getsource(h) for h in helpers), textwrap.dedent(body)])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


class CountingEnv(gym.Env):
    """Observes ``(steps since reset, value)``; the reward is the action
    plus the steps since reset, so that lost or foreign steps show up.
    ``info`` (a callable) makes each step's info; ``action_space`` may be
    a Box."""

    def __init__(self, value: float = 0.0, info: Any = None, box_actions: bool = False) -> None:
        self.observation_space = gs.Box(-10, 10, (2,), np.float32)
        self.action_space = gs.Box(-1, 1, (1,), np.float32) if box_actions else gs.Discrete(4)
        self.value, self.info = value, info
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0, self.value], np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        info = self.info() if self.info is not None else {}
        value = action["move"] if isinstance(action, dict) else np.sum(action)
        return np.array([self.t, self.value], np.float32), float(self.t + value), False, False, info


# ---------------------------------------------------------------------------
# torch unflatten: the right bytes or a RowError


def test_torch_rows_with_a_strided_last_axis_are_refused() -> None:
    layout = Layout(gs.Box(0, 255, (8,), np.uint8))
    rows = torch.arange(32, dtype=torch.uint8).reshape(2, 16)[:, ::2]
    with pytest.raises(RowError, match="last axis of rows must be contiguous"):
        unflatten(rows, layout)
    with pytest.raises(RowError, match="last axis of rows must be contiguous"):
        layout.unflatten(rows.numpy())
    # The same values, packed, come back as they are.
    assert torch.equal(unflatten(rows.contiguous(), layout), rows)


@pytest.mark.parametrize(
    "rows",
    [np.zeros((2, 8), np.uint8), [[0] * 8], None, torch.zeros(2, 8, dtype=torch.uint8).to_sparse()],
    ids=["numpy", "list", "None", "sparse"],
)
def test_torch_unflatten_of_what_is_not_a_strided_tensor_is_a_row_error(rows: Any) -> None:
    with pytest.raises(RowError, match="expected a (torch.Tensor|strided tensor) of rows"):
        unflatten(rows, Layout(gs.Box(0, 255, (8,), np.uint8)))


def test_torch_dtype_views_torch_refuses_are_row_errors() -> None:
    """An int16 leaf over bytes that start at an odd storage offset: torch
    cannot view them as int16, and says so as a RowError on both paths."""
    layout = Layout(gs.Dict(a=gs.Discrete(3, dtype=np.int16), b=gs.Box(0, 1, (2,), np.uint8)))
    rows = torch.zeros(9, dtype=torch.uint8)[1:5].reshape(1, 4)
    with pytest.raises(RowError, match="cannot be viewed as the layout's torch.int16 leaves"):
        unflatten(rows, layout)
    plan = _plan(layout)
    with pytest.raises(RowError, match="cannot be viewed"):
        plan.traced_views(rows)


TORCH_DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
TORCH_DTYPES += ["float16", "float32", "float64", "bool"]


@st.composite
def rows_in_odd_places(draw: st.DrawFn) -> tuple[Layout, torch.Tensor, np.ndarray]:
    """A layout, and rows of any dtype, size, lead strides, last-axis step
    and storage offset over random bytes: as a tensor, and as a numpy array
    with the same geometry over the same bytes."""
    layout = Layout(draw(spaces(max_depth=2)))
    dtype = getattr(torch, draw(st.sampled_from(TORCH_DTYPES)))
    item = torch.empty((), dtype=dtype).element_size()
    fit = layout.row_bytes // item
    row = draw(st.sampled_from([fit, fit, fit + 1, max(fit - 1, 0)]))
    step = draw(st.sampled_from([1, 1, 2, 3]))
    lead = draw(st.lists(st.integers(0, 3), max_size=2))
    # Lead strides, innermost first: one row apart (or more), or 0 (one
    # row broadcast). `span` is how many items the view reaches.
    strides, span = [step], max(row - 1, 0) * step + 1
    for n in reversed(lead):
        strides.insert(0, draw(st.sampled_from([0, span, span + 1, span + 3])))
        span += strides[0] * max(n - 1, 0)
    if len(lead) == 2 and draw(st.booleans()):  # time-major and batch-major swapped
        lead, strides = lead[::-1], [strides[1], strides[0], strides[2]]
    offset = draw(st.integers(0, 5))
    count = (offset + span + 8) * item
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, count, dtype=np.uint8)
    if dtype == torch.bool:
        data %= 2
    storage = torch.from_numpy(data).view(dtype)
    shape = (*lead, row)
    x = storage.as_strided(shape, tuple(strides), offset)
    array = np.lib.stride_tricks.as_strided(storage.numpy()[offset:], shape, tuple(s * item for s in strides))
    return layout, x, array


@settings(max_examples=300)
@given(rows_in_odd_places())
def test_torch_unflatten_gives_numpys_bytes_or_a_row_error(case: tuple[Layout, torch.Tensor, np.ndarray]) -> None:
    layout, x, array = case
    plan = _plan(layout)
    for views in (lambda: unflatten(x, layout), lambda: _fill(plan.structure, plan.traced_views(x))):
        try:
            got = views()
        except RowError:
            continue
        assert_tree_equal(got, layout.unflatten(array))


# ---------------------------------------------------------------------------
# A forked child and the parent's vector env


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_forked_child_cannot_touch_the_parents_vector_env(backend: str) -> None:
    """The child's every use raises; its close() and its normal exit (the
    inherited finalizers, multiprocessing's exit handler) leave the
    parent's envs running, with nothing stepped behind the parent's back."""
    out = run_python(
        f"""
        import os
        import pufferrs.vector as pv
        from pufferrs import PufferError

        envs = pv.make(CountingEnv, num_envs=2, backend={backend!r}, num_workers=2, timeout=10, start_method="fork")
        envs.reset(seed=0)
        envs.step(np.array([1, 1]))
        pid = os.fork()
        if pid == 0:
            refused = 0
            for use in (lambda: envs.step(np.array([3, 3])), envs.recv, envs.reset, lambda: envs.send([0, 0])):
                try:
                    use()
                except PufferError as err:
                    refused += "forked child" in str(err)
            envs.close()
            sys.exit(0 if refused == 4 else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        _, rewards, *_ = envs.step(np.array([2, 2]))
        print("rewards", rewards.tolist())
        envs.close()
        print("closed")
        """,
        CountingEnv,
    )
    assert out.split("\n")[:3] == ["child 0", "rewards [4.0, 4.0]", "closed"], out


# ---------------------------------------------------------------------------
# Infos that cannot travel


def lock_info() -> dict:
    return {"lock": threading.Lock()}


class LoadsOnlyInTheWorker:
    """Pickles, but refuses to be unpickled outside a pufferrs worker."""

    def __reduce__(self) -> tuple:
        return (_load_in_worker, ())


def _load_in_worker() -> LoadsOnlyInTheWorker:
    import multiprocessing

    if not multiprocessing.current_process().name.startswith("pufferrs-worker"):
        raise RuntimeError("this object only unpickles in a worker")
    return LoadsOnlyInTheWorker()


def odd_info() -> dict:
    return {"odd": LoadsOnlyInTheWorker()}


def test_an_info_that_does_not_pickle_reports_the_workers_traceback() -> None:
    out = run_python(
        """
        import functools
        import pufferrs.vector as pv
        from pufferrs import WorkerError

        creators = [CountingEnv, functools.partial(CountingEnv, info=lock_info)]
        kwargs = dict(backend="multiprocessing", num_workers=2, timeout=10, start_method="fork")
        with pv.make(creators, num_envs=2, **kwargs) as envs:
            envs.reset(seed=0)
            try:
                envs.step(np.array([0, 0]))
            except WorkerError as err:
                print(err.worker, err.env)
                print(err)
        """,
        CountingEnv,
        lock_info,
    )
    first, message = out.split("\n", 1)
    assert first == "1 1"
    assert message.startswith("worker 1 (env 1): the info of env 1 cannot be pickled to send to the parent:\nTraceback")
    assert "TypeError: cannot pickle '_thread.lock' object" in message


def test_an_info_that_does_not_unpickle_in_the_parent_is_a_worker_error() -> None:
    creators = [CountingEnv, functools.partial(CountingEnv, info=odd_info)]
    with pv.make(creators, num_envs=2, backend="multiprocessing", num_workers=2, timeout=10) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError, match=r"^worker 1 \(env 1\): what it sent cannot be unpickled here") as info:
            envs.step(np.array([0, 0]))
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(WorkerError, match="broken"):
            envs.step(np.array([0, 0]))


# ---------------------------------------------------------------------------
# Batches of actions of the wrong size


def dict_actions_env() -> gym.Env:
    env = CountingEnv()
    env.action_space = gs.Dict(move=gs.Discrete(3), aim=gs.Box(-1, 1, (2,), np.float32))
    return env


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_batch_of_the_wrong_size_names_the_action_and_the_batch(backend: str) -> None:
    expected = "expected a batch of 4 actions, one per env of the batch"
    with pv.make(CountingEnv, num_envs=4, backend=backend, num_workers=2, timeout=10) as envs:
        envs.reset(seed=0)
        for bad, got in [(0, "a single value"), (np.int64(0), "a single value"), ([0, 1, 2], "3")]:
            with pytest.raises(SpaceError, match=f"^action: {expected}, got {got}$"):
                envs.step(bad)
        _, rewards, *_ = envs.step(np.array([0, 1, 2, 3]))
        assert rewards.tolist() == [1.0, 2.0, 3.0, 4.0], "refused batches sent nothing"
    with pv.make(dict_actions_env, num_envs=4, backend=backend, num_workers=2, timeout=10) as envs:
        envs.reset(seed=0)
        three = {"move": np.zeros(3, np.int64), "aim": np.zeros((3, 2), np.float32)}
        with pytest.raises(SpaceError, match=rf"^action\['move'\]: {expected}, got 3$"):
            envs.step(three)
        with pytest.raises(SpaceError, match=f"^action: {expected}, got 3$"):
            envs.step([{"move": 0, "aim": np.zeros(2, np.float32)}] * 3)
        disagree = {"move": np.zeros(4, np.int64), "aim": np.zeros((3, 2), np.float32)}
        with pytest.raises(SpaceError, match=rf"^action\['aim'\]: {expected}, got 3$"):
            envs.step(disagree)
        # A batch of the right size with a bad value keeps flatten's message.
        with pytest.raises(SpaceError, match=r"^action\['move'\]\[2\]: expected a value in \[0, 3\), got 5$"):
            envs.step({"move": np.array([0, 1, 5, 0]), "aim": np.zeros((4, 2), np.float32)})
        envs.step({"move": np.zeros(4, np.int64), "aim": np.zeros((4, 2), np.float32)})


# ---------------------------------------------------------------------------
# Box bounds, checked when asked


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_check_bounds_refuses_observations_outside_their_box(backend: str) -> None:
    creator = functools.partial(CountingEnv, value=11.0)  # above the Box's high of 10
    with pv.make(creator, num_envs=2, backend=backend, num_workers=2, timeout=10) as envs:
        obs, _ = envs.reset(seed=0)
        assert obs[:, 1].tolist() == [11.0, 11.0], "unchecked by default"
    with pv.make(creator, num_envs=2, backend=backend, num_workers=2, timeout=10, check_bounds=True) as envs:
        with pytest.raises(WorkerError, match=r"obs\[1\]: expected a value in \[-10, 10\], got 11"):
            envs.reset(seed=0)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_check_bounds_refuses_actions_outside_their_box(backend: str) -> None:
    creator = functools.partial(CountingEnv, box_actions=True)
    with pv.make(creator, num_envs=2, backend=backend, num_workers=2, timeout=10, check_bounds=True) as envs:
        envs.reset(seed=0)
        for bad, message in [
            (np.array([[0.0], [np.nan]], np.float32), r"^action\[1, 0\]: expected a finite value, got NaN$"),
            (np.array([[2.0], [0.0]], np.float32), r"^action\[0, 0\]: expected a value in \[-1, 1\], got 2$"),
        ]:
            with pytest.raises(SpaceError, match=message):
                envs.step(bad)
        _, rewards, *_ = envs.step(np.array([[0.5], [-0.5]], np.float32))
        assert rewards.tolist() == [1.5, 0.5]
    with pv.make(creator, num_envs=2, backend=backend, num_workers=2, timeout=10) as envs:
        envs.reset(seed=0)
        _, rewards, *_ = envs.step(np.array([[2.0], [0.0]], np.float32))
        assert rewards.tolist() == [3.0, 1.0], "unchecked by default"
