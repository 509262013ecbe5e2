"""Type stubs for the Rust extension ``pufferrs._native``."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

#: How deep Dicts and Tuples may nest in a space that has a layout.
MAX_DEPTH: int

def fold_outcomes_into(
    rewards: npt.NDArray[np.float32],
    terminals: npt.NDArray[np.bool_],
    truncations: npt.NDArray[np.bool_],
    rows: npt.NDArray[np.int64],
    steps: npt.NDArray[np.int64],
    later_rewards: npt.NDArray[np.float32],
    later_terminals: npt.NDArray[np.bool_],
    later_truncations: npt.NDArray[np.bool_],
) -> None: ...
def format_path(root: str, path: tuple[str | int, ...]) -> str: ...
def gae(
    values: npt.NDArray[np.float32],
    bootstrap: npt.NDArray[np.float32],
    rewards: npt.NDArray[np.float32],
    terminals: npt.NDArray[np.bool_],
    truncations: npt.NDArray[np.bool_],
    gamma: float,
    gae_lambda: float,
    final_values: npt.NDArray[np.float32] | None = None,
    out: npt.NDArray[np.float32] | None = None,
    masks: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float32]: ...

class Layout:
    """Where every leaf of a space lives in a flat row of bytes.

    Built from the description that ``pufferrs.spaces.describe`` makes of a
    gymnasium space; ``pufferrs.Layout`` is the subclass users construct.
    """

    def __new__(cls, spec: dict[str, Any], name: str = "obs", row_shape: tuple[int, ...] | None = None) -> Layout: ...
    @property
    def row_bytes(self) -> int: ...
    @property
    def flat_dtype(self) -> np.dtype[Any]: ...
    @property
    def row_shape(self) -> tuple[int, ...]: ...
    @property
    def name(self) -> str: ...
    def leaf_tuples(self) -> list[tuple[tuple[str | int, ...], np.dtype[Any], tuple[int, ...], int, int]]: ...
    def flatten(self, obs: Any, *, check_bounds: bool = False) -> npt.NDArray[Any]: ...
    def flatten_into(
        self, obs: Any, out: npt.NDArray[Any], index: int | None = None, *, check_bounds: bool = False
    ) -> None: ...
    def flatten_batch(
        self, obs: Any, out: npt.NDArray[Any] | None = None, *, check_bounds: bool = False
    ) -> npt.NDArray[Any]: ...
    def unflatten(self, rows: npt.NDArray[Any]) -> Any: ...
    def decode_text(self, leaf: int, codes: list[int]) -> str: ...
    def __eq__(self, other: object) -> bool: ...

class RolloutBuffers:
    """A vector env's shared-memory buffers (a memfd) and the control words
    its parent and workers signal each other with; see ``pufferrs.vector``."""

    STEP: int
    RESET: int
    CLOSE: int
    CALL: int
    OK: int
    INFOS: int
    ERROR: int
    ENDED: int

    def __new__(
        cls,
        num_envs: int,
        num_workers: int | None,
        obs_row_bytes: int,
        action_row_bytes: int,
        batch_size: int | None = None,
        agents_per_env: int | None = None,
    ) -> RolloutBuffers: ...
    @staticmethod
    def check_counts(num_envs: int, num_workers: int | None = None, batch_size: int | None = None) -> None: ...
    @staticmethod
    def default_workers(num_envs: int, cpus: int) -> int: ...
    @staticmethod
    def attach(
        fd: int,
        num_envs: int,
        num_workers: int | None,
        obs_row_bytes: int,
        action_row_bytes: int,
        batch_size: int | None = None,
        agents_per_env: int | None = None,
    ) -> RolloutBuffers: ...
    @property
    def fd(self) -> int: ...
    @property
    def num_envs(self) -> int: ...
    @property
    def agents_per_env(self) -> int: ...
    @property
    def num_workers(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def gathers(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...
    def array(self, name: str) -> npt.NDArray[Any]: ...
    def request(self, workers: list[int], command: int) -> None: ...
    def wait_completed(self, max: int, timeout: float | None = None) -> list[int]: ...
    def status(self, worker: int) -> int: ...
    def gather(self, workers: list[int]) -> None: ...
    def scatter_actions(self, workers: list[int]) -> None: ...
    def wait_request(self, worker: int, timeout: float | None = None) -> int | None: ...
    def complete(self, worker: int, status: int) -> None: ...

class EnvBlock:
    """Envs ``first_env, first_env + 1, ...`` stepped into their rows of a
    vector env's buffers, one call per batch; see ``pufferrs.vector.runner``."""

    def __new__(
        cls,
        envs: list[Any],
        first_env: int,
        arrays: dict[str, npt.NDArray[Any]],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool = False,
    ) -> EnvBlock: ...
    def reset(self, seed: int | None = None) -> list[tuple[int, dict[str, Any]]]: ...
    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """``(i, info)`` for the non-empty infos; with ``dense``, every env's
        info and ``ended``."""
    @property
    def ended(self) -> tuple[int, ...]: ...
    @property
    def current_env(self) -> int | None: ...

class NativeEnv:
    """One env written in Rust (``pufferrs-envs``) of the built-in kind
    ``id``, until a :class:`NativeBlock` takes it; see ``pufferrs.native``."""

    def __new__(cls, id: str) -> NativeEnv: ...
    @property
    def id(self) -> str: ...
    @property
    def possible_agents(self) -> list[str] | None: ...
    def observation_description(self) -> dict[str, Any]:
        """One agent's observation space, as ``pufferrs.spaces.describe``
        describes a gymnasium space."""
    def action_description(self) -> dict[str, Any]: ...
    @property
    def available(self) -> bool:
        """Whether the env is still here, not taken by a block."""

class NativeBlock:
    """Native envs of one kind stepped into rows ``first_env * agents ..``
    of a vector env's buffers in one call, with the GIL released, over
    ``threads`` threads; the interface of :class:`EnvBlock`."""

    def __new__(
        cls,
        envs: list[NativeEnv],
        first_env: int,
        arrays: dict[str, npt.NDArray[Any]],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool = False,
        threads: int | None = None,
    ) -> NativeBlock: ...
    @property
    def threads(self) -> int: ...
    def reset(self, seed: int | None = None) -> list[tuple[int, dict[str, Any]]]: ...
    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """``(row, info)`` for the non-empty infos (the summaries of
        multi-agent envs whose episode ended); with ``dense``, those infos
        as a dict by row and ``ended`` (``VectorEnv.recv``'s ``Infos`` makes
        the empty ones when read)."""
    @property
    def ended(self) -> tuple[int, ...]: ...
    @property
    def current_env(self) -> int | None: ...

def native_env_ids() -> list[str]:
    """The ids of the built-in envs written in Rust."""

ENV_ABI_VERSION: int

def load_envs(capsule: Any, parse: Any) -> list[str]:
    """Loads a crate's envs from its ``pufferrs_envs`` capsule (checking
    ABI version, sizes and layouts); ``parse`` reads their spaces' JSON."""

def cartpole_dynamics(state: list[float], action: int) -> tuple[list[float], bool]:
    """The built-in CartPole's transition (gymnasium ``CartPole-v1``'s):
    ``(next state, terminated)``."""

class EpisodeRows:
    """The episode bookkeeping (``rust/core/src/episodes.rs``) of a block
    of PettingZoo envs, ``agents`` rows per env, from env ``first_env`` of
    the buffers' arrays; see ``pufferrs.vector.agents``. Rows are positions
    in the block."""

    def __new__(
        cls,
        num_envs: int,
        agents: int,
        first_env: int,
        arrays: dict[str, npt.NDArray[Any]],
        layout: Layout,
        check_bounds: bool = False,
    ) -> EpisodeRows: ...
    def begin_reset(self) -> None: ...
    def end_reset(self) -> None: ...
    def start(self, env: int) -> None: ...
    def join(self, rows: list[int]) -> list[int]:
        """The rows that play, in order, after those out of the episode joined."""
    def act(self, env: int, rows: list[int]) -> None: ...
    def set_acting(self, row: int, acting: bool) -> None: ...
    def begin_step(self) -> None: ...
    def rewards(self, rows: list[int], rewards: Iterable[Any]) -> None: ...
    def end(self, row: int, terminal: bool, truncated: bool, last_obs: Any = None) -> None: ...
    def has_ended(self, row: int) -> bool: ...
    def playing(self, env: int) -> list[int]: ...
    def summary(self, env: int) -> tuple[float, int]: ...
    @property
    def ended(self) -> tuple[int, ...]: ...

def store_exact(layout: Layout, values: Any, out: npt.NDArray[np.uint8], check_bounds: bool = False) -> bool:
    """Stores ``values`` into the rows of ``out`` when it is exactly the
    array of ``layout``'s one leaf, batched, and passes the leaf's checks;
    False, having written nothing, otherwise (``flatten_batch`` then)."""

class InplaceRows:
    """The episode bookkeeping (``rust/core/src/episodes.rs``) of ``rows``
    rows from ``first_row`` of the buffers' arrays, stepped all at once by
    one env object whose observations are already in the rows; each row is
    an episode of its own. ``next_step``: ended rows are masked for one
    step and restart at the next (gymnasium's NEXT_STEP autoreset), else
    they restart in the step. See ``pufferrs.vector.inplace``."""

    def __new__(
        cls,
        rows: int,
        first_row: int,
        arrays: dict[str, npt.NDArray[Any]],
        layout: Layout,
        next_step: bool,
        check_bounds: bool = False,
    ) -> InplaceRows: ...
    def reset(self, masks: npt.NDArray[np.bool_] | None = None) -> None: ...
    def step(
        self,
        rewards: npt.NDArray[Any],
        terminals: npt.NDArray[np.bool_],
        truncations: npt.NDArray[np.bool_],
        masks: npt.NDArray[np.bool_] | None = None,
        final_observations: Any = None,
    ) -> None: ...
    @property
    def ended(self) -> tuple[int, ...]: ...
    @property
    def waiting(self) -> list[int]: ...
    @property
    def row_bytes(self) -> int: ...
