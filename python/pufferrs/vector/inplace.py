"""Stepping envs that step all their rows at once into the shared rows:
gymnasium vector envs (``gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")``, such as CartPole's numpy
``CartPoleVectorEnv``; EnvPool's envs, which are gymnasium vector envs
stepped by EnvPool's own threads) and envs of PufferLib's in-place
contract. The same interface as :class:`~pufferrs._native.EnvBlock` and
the PettingZoo blocks (``reset(seed)``; ``step(actions=None, *,
dense=False)``; ``ended``; ``current_env``), so that every backend that
runs a :class:`~pufferrs.vector.runner.Runner` runs them.

Such an env is one env of the vector env that takes several rows, as a
PettingZoo env takes one per agent: env ``e`` of ``k`` sub-envs (or
agents) owns rows ``e * k ..``. Python runs once per env object and batch,
never per row: actions reach the env as views of its action rows; a
PufferLib-style env writes its observations straight into its rows, and a
gymnasium vector env's batch of observations is copied into them in one
call; one call of :class:`~pufferrs._native.InplaceRows` then hands the
step's rewards and flags to the core's episode bookkeeping
(``episodes.rs``: returns, lengths, final rows, masks).

How an env's autoreset maps onto pufferrs's same-step contract:

- gymnasium's ``SAME_STEP`` vector envs: as pufferrs's own. The ended
  row's final row is ``infos["final_obs"]``'s.
- ``NEXT_STEP`` (the default of gymnasium's vector entry points, and
  EnvPool's): the step that ends a row's episode returns its last
  observation, which pufferrs puts in the row's final row; the row is
  then masked (zero, ``masks`` False) for one step, the step at which the
  env resets it and ignores its action, and plays again from the
  observation that step returns. This is what pufferrs already does for an
  agent that ended and waits for its env (multi-agent envs), so the trainer
  handles it: the masked step stores no advantage and counts no agent step.
- PufferLib's envs reset their agents inside ``step`` and keep no last
  observation: their final rows are zeros.
- ``DISABLED`` (the caller resets) is refused.

Infos: a vector env's infos (arrays over its sub-envs) are split per row
for the rows whose episode ended at that step only, into their info (and
``final_info``): splitting every key of every step per row would be Python
per row. A PufferLib-style env's list of info dicts goes to the info of its
first row. Reset infos are dropped."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from pufferrs._native import InplaceRows
from pufferrs.errors import EnvProtocolError, UnsupportedSpaceError
from pufferrs.spaces import Layout
from pufferrs.vector.kinds import inplace_kind, rows_per_env


def _autoreset_mode(env: Any) -> str:
    """The vector env's autoreset mode, by the name gymnasium gives it."""
    mode = getattr(env, "metadata", {}).get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    return mode.name if isinstance(mode, gym.vector.AutoresetMode) else str(mode).upper()


#: Keys a vector env's infos carry that are not the step's: gymnasium's
#: final observations and infos (pufferrs's own ``final_obs`` and
#: ``final_info`` hold them), and which env a row is (EnvPool's ``env_id``
#: and ``players``), which the row says already.
_NOT_INFO = frozenset({"final_obs", "final_info", "env_id", "players"})


def _row_info(info: dict, row: int) -> dict:
    """Row ``row``'s part of a vector env's ``info`` (arrays over its
    sub-envs, a key present where its ``_key`` mask says)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or key in _NOT_INFO:
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[row]:
            continue
        if isinstance(value, dict):
            part = _row_info(value, row)
            if part:
                out[key] = part
            continue
        try:
            item = value[row]
        except (TypeError, IndexError, KeyError):
            continue  # not one value per sub-env: nothing of this row's
        out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def puffer_buffers(
    arrays: dict[str, np.ndarray], first_row: int, rows: int, layout: Layout, action_layout: Layout
) -> dict:
    """The ``buf`` a PufferLib-style env of ``rows`` agents is made with:
    views of its observation and action rows of the shared buffers, and
    arrays of its own for its rewards, flags and masks, which the core's
    bookkeeping reads after each step and writes into the shared rows."""
    span = slice(first_row, first_row + rows)
    return {
        "observations": layout.unflatten(arrays["observations"][span]),
        "actions": action_layout.unflatten(arrays["actions"][span]),
        "rewards": np.zeros(rows, np.float32),
        "terminals": np.zeros(rows, bool),
        "truncations": np.zeros(rows, bool),
        "masks": np.ones(rows, bool),
    }


def made_on_rows(
    envs: list[Any],
    creators: list[Any],
    env_args: tuple,
    env_kwargs: dict,
    first_env: int,
    arrays: dict[str, np.ndarray],
    layout: Layout,
    action_layout: Layout,
) -> list[Any]:
    """``envs`` as they are, unless they are of PufferLib's in-place
    contract: those are closed and made again by their creators with
    ``buf=`` (:func:`puffer_buffers`), as PufferLib's vector envs make
    them, so that an env that hands its arrays to native code when it is
    made (a C binding) steps straight in the shared rows. Backends call
    this once the buffers exist, with the envs they made to learn the
    spaces."""
    if not envs or inplace_kind(envs[0]) != "puffer":
        return envs
    A = rows_per_env(envs[0])
    made = []
    for e, (env, creator) in enumerate(zip(envs, creators)):
        buf = puffer_buffers(arrays, (first_env + e) * A, A, layout, action_layout)
        made.append(creator(*env_args, buf=buf, **env_kwargs))
        if made[-1] is not env:  # (the trainer's own env comes back as it was)
            env.close()
    return made


class _Rows:
    """What both kinds of block share: each env's span of rows, its
    :class:`~pufferrs._native.InplaceRows`, and the block's interface."""

    def __init__(
        self,
        envs: list[Any],
        first_env: int,
        arrays: dict[str, np.ndarray],
        layout: Layout,
        action_layout: Layout,
        check_bounds: bool,
        next_step: bool,
    ) -> None:
        self.envs = envs
        self.first_env = first_env
        A = self.A = rows_per_env(envs[0])
        for i, env in enumerate(envs):
            if rows_per_env(env) != A:
                raise UnsupportedSpaceError(
                    f"env {first_env + i} has {rows_per_env(env)} rows (sub-envs or agents), env {first_env} has "
                    f"{A}: every env of a vector env must have the same number"
                )
        self.layout, self.action_layout, self.check_bounds = layout, action_layout, check_bounds
        spans = [slice((first_env + e) * A, (first_env + e + 1) * A) for e in range(len(envs))]
        self.obs_rows = [arrays["observations"][span] for span in spans]
        self.action_rows = arrays["actions"][first_env * A : (first_env + len(envs)) * A]
        #: Each env's actions: views of its action rows, in the structure
        #: of its batched action space.
        self.actions = [action_layout.unflatten(arrays["actions"][span]) for span in spans]
        self.rows = [InplaceRows(A, span.start, arrays, layout, next_step, check_bounds) for span in spans]
        self.current_env: int | None = None
        self._ended: tuple[int, ...] = ()

    @property
    def ended(self) -> tuple[int, ...]:
        """The rows (positions in the block) whose episode ended in the last
        step; empty, and false, when none did."""
        return self._ended

    def _stage(self, actions: Any) -> None:
        """Writes a batch of actions (one per row, as ``send`` takes them)
        into the block's action rows, all or nothing: a batch that does
        not fit raises before any env steps, with ``current_env`` None."""
        self.current_env = None
        self.action_layout.flatten_batch(actions, out=self.action_rows, check_bounds=self.check_bounds)

    def _finish(self, infos: dict[int, dict], ended: list[int] | tuple[int, ...], dense: bool) -> Any:
        """What ``step`` returns: ``(row, info)`` for the non-empty infos,
        or with ``dense`` those infos by row and the rows that ended (what
        ``VectorEnv._step_all`` returns: its :class:`Infos` makes the empty
        ones when they are read)."""
        self.current_env = None
        self._ended = tuple(ended)  # (a tuple already is itself)
        if dense:
            return infos, self._ended
        return sorted(infos.items()) if infos else []


class VectorBlock(_Rows):
    """A block of gymnasium vector envs (EnvPool's included): each env's
    ``step`` gets views of its action rows and its batch of observations is
    copied into its rows in one call."""

    def __init__(self, envs: list[Any], *args: Any) -> None:
        mode = _autoreset_mode(envs[0])
        if mode not in ("NEXT_STEP", "SAME_STEP"):
            raise UnsupportedSpaceError(
                f"{type(envs[0]).__name__} resets with autoreset mode {mode}: pufferrs resets ended episodes in the "
                f"step, so it runs vector envs that reset them themselves (NEXT_STEP or SAME_STEP)"
            )
        for i, env in enumerate(envs):
            if getattr(env, "is_async", False):
                raise UnsupportedSpaceError(
                    f"env {args[0] + i} is an asynchronous EnvPool (batch_size {env.config['batch_size']} of "
                    f"{env.num_envs} envs): make it with batch_size equal to num_envs, and ask pufferrs for "
                    f"asynchronous batches instead (batch_size of pufferrs.vector.make)"
                )
        self.same_step = mode == "SAME_STEP"
        self.seeded_at_make = [any(c.__module__.startswith("envpool.") for c in type(env).__mro__) for env in envs]
        super().__init__(envs, *args, next_step=not self.same_step)
        #: What ``step`` needs of each env, in one tuple: its id, the env,
        #: its actions, its observation rows, its bookkeeping, its first
        #: position in the block.
        self._per_env = [
            (self.first_env + e, env, self.actions[e], self.obs_rows[e], self.rows[e], e * self.A)
            for e, env in enumerate(envs)
        ]

    def reset(self, seed: int | None = None) -> list[tuple[int, dict]]:
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            # Sub-env j of env e seeded with seed + its row, where the env
            # seeds its sub-envs one apart (SyncVectorEnv). EnvPool seeds
            # its envs when it is made and warns that a reset's seed does
            # nothing: it gets none.
            if seed is None or self.seeded_at_make[e]:
                obs, _ = env.reset()
            else:
                obs, _ = env.reset(seed=seed + (self.first_env + e) * self.A)
            self.layout.flatten_batch(obs, out=self.obs_rows[e], check_bounds=self.check_bounds)
            self.rows[e].reset()
        self._ended = ()
        self.current_env = None
        return []

    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """Steps every env on its action rows (``actions`` first written
        there, all or nothing, when given); see the module docstring."""
        if actions is not None:
            self._stage(actions)
        infos: dict[int, dict] = {}
        ended: tuple[int, ...] = ()
        layout, check_bounds, same_step = self.layout, self.check_bounds, self.same_step
        # (Each env's parts unpacked from one tuple: with a thousand rows
        # stepped in 80 us, every lookup here is a share of pufferrs's cost.)
        for env_id, env, env_actions, obs_rows, rows, base in self._per_env:
            self.current_env = env_id
            result = env.step(env_actions)
            if not isinstance(result, tuple) or len(result) != 5:
                raise EnvProtocolError(
                    f"{type(env).__name__}.step() must return (obs, rewards, terminations, truncations, infos), "
                    f"got {type(result).__name__}"
                )
            obs, rewards, terminals, truncations, info = result
            layout.flatten_batch(obs, out=obs_rows, check_bounds=check_bounds)
            final = info.get("final_obs") if same_step else None
            rows.step(np.asarray(rewards), np.asarray(terminals, bool), np.asarray(truncations, bool), None, final)
            done = rows.ended
            if done:
                ended += tuple(base + row for row in done) if base else done
                step_info = info.get("final_info", info) if same_step else info
                if step_info:
                    for row in done:
                        row_info = _row_info(step_info, row)
                        if row_info:
                            infos[base + row] = row_info
        return self._finish(infos, ended, dense)


class PufferBlock(_Rows):
    """A block of envs of PufferLib's in-place contract, made with ``buf=``
    (:func:`made_on_rows`): each env's ``observations`` and ``actions`` are
    views of its rows of the shared buffers, so that it reads its actions
    and writes its observations there; its ``rewards``, ``terminals``,
    ``truncations`` and ``masks`` are arrays of its own, which the core's
    bookkeeping reads after each step and writes into the shared rows (with
    returns, lengths and the zeros of masked rows). An env made without
    ``buf`` (one handed to the trainer) has its arrays rebound to the same,
    as PufferLib's ``set_buffers`` binds ``buf``: that serves an env that
    writes through its attributes, not one that handed its first arrays'
    addresses to native code when it was made (a C binding), which only
    pufferrs's own ``buf=`` reaches (give pufferrs its creator). A reset
    that returns observations that are not in the env's rows is refused."""

    def __init__(self, envs: list[Any], *args: Any) -> None:
        super().__init__(envs, *args, next_step=False)
        layout, A = self.layout, self.A
        space = envs[0].single_observation_space
        if not isinstance(space, gym.spaces.Box) or layout.row_bytes != space.dtype.itemsize * int(
            np.prod(space.shape)
        ):
            raise UnsupportedSpaceError(
                f"{type(envs[0]).__name__}: an env that writes its observations in place needs a Box observation "
                f"space (as PufferLib's do), got {space}"
            )
        for e, env in enumerate(envs):
            if np.shares_memory(np.asarray(env.observations), self.obs_rows[e]):
                continue  # made with buf= (made_on_rows): its arrays are the rows' and its own
            # Made without buf: rebound, as PufferLib's set_buffers binds buf.
            for name, array in puffer_buffers(
                {"observations": self.obs_rows[e], "actions": self.action_rows[e * A : (e + 1) * A]},
                0,
                A,
                layout,
                self.action_layout,
            ).items():
                setattr(env, name, array)

    def reset(self, seed: int | None = None) -> list[tuple[int, dict]]:
        infos: dict[int, dict] = {}
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            # The rows are zeroed first: an env that wrote elsewhere leaves
            # them zero, which is then told apart from its observations.
            self.obs_rows[e].fill(0)
            obs, info = env.reset(seed=None if seed is None else seed + (self.first_env + e) * self.A)
            if obs is not env.observations and not np.array_equal(np.asarray(obs), env.observations):
                raise EnvProtocolError(
                    f"{type(env).__name__}.reset() returned observations that are not in the arrays it was given "
                    f"(env.observations): it must write them in place, as PufferLib's envs do; an env that took "
                    f"its buffers' addresses when it was made cannot be run on pufferrs's rows"
                )
            self.rows[e].reset(np.asarray(env.masks, bool))
            self._info(infos, e, info)
        self._ended = ()
        self.current_env = None
        return sorted(infos.items())

    def step(self, actions: Any = None, *, dense: bool = False) -> Any:
        """Steps every env on its action rows (``actions`` first written
        there, all or nothing, when given)."""
        if actions is not None:
            self._stage(actions)
        infos: dict[int, dict] = {}
        ended: list[int] = []
        A = self.A
        for e, env in enumerate(self.envs):
            self.current_env = self.first_env + e
            result = env.step(env.actions)
            rows = self.rows[e]
            rows.step(env.rewards, env.terminals, env.truncations, env.masks, None)
            done = rows.ended
            if done:
                ended += [e * A + row for row in done] if e else done
            self._info(infos, e, result[4] if isinstance(result, tuple) and len(result) == 5 else None)
        return self._finish(infos, ended, dense)

    def _info(self, infos: dict[int, dict], e: int, info: Any) -> None:
        """A PufferLib env's infos (a list of dicts, or one dict) into the
        info of its first row."""
        if not info:
            return
        merged: dict[str, Any] = {}
        for part in [info] if isinstance(info, dict) else info:
            if isinstance(part, dict):
                merged.update(part)
        if merged:
            infos[e * self.A] = {**infos.get(e * self.A, {}), **merged}
