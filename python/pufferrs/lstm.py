"""LSTMWrapper: a recurrent policy from a feed-forward one, PufferLib's way.

Of pufferrs it needs only :class:`~pufferrs.spaces.Layout` (for the shape
of structured observations), so :mod:`pufferrs.pytorch` and
:mod:`pufferrs.models` can both import it without importing each other:
PufferLib users find it under either name, and it is one class.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import gymnasium.spaces as gs
import torch
from torch import nn

from pufferrs.spaces import Layout

__all__ = ["LSTMWrapper", "State"]

State = MutableMapping[str, Any]
"""The dict a policy reads and writes its recurrent state in (PufferLib's
``lstm_h``, ``lstm_c``, ``episode_start``, ``hidden``)."""


def _observation_shape(env: Any) -> tuple[int, ...]:
    """Shape of one observation as the policy receives it: a Box's own,
    else a flat row of the space's layout."""
    space = env.single_observation_space
    if isinstance(space, gs.Box):
        return tuple(space.shape)
    layout = getattr(env, "layout", None)
    return tuple((layout if layout is not None else Layout(space)).observation_space.shape)


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        backend = getattr(torch, device.type, None)
        if backend is not None and hasattr(backend, "synchronize"):
            backend.synchronize(device)


def _autocast_key(device: torch.device) -> tuple[bool, torch.dtype | None]:
    if torch.is_autocast_enabled(device.type):
        return True, torch.get_autocast_dtype(device.type)
    return False, None


class LSTMWrapper(nn.Module):
    """Puts a one-layer LSTM between a policy's encoder and decoder.

    ``policy`` must have ``encode_observations`` (to ``(B, input_size)``)
    and ``decode_actions`` (from ``(B, hidden_size)``); for the built-in
    policies that means ``policy.hidden_size == input_size`` and
    ``policy.output_size == hidden_size``.

    **One set of weights.** The parameters are ``lstm``'s
    (``lstm.weight_ih_l0``, ``lstm.weight_hh_l0``, ``lstm.bias_ih_l0``,
    ``lstm.bias_hh_l0``): :meth:`forward` runs them as an ``nn.LSTM`` over
    whole sequences (cuDNN on a GPU), :meth:`forward_eval` runs them one
    step at a time, and :attr:`cell` is an ``nn.LSTMCell`` whose parameters
    are these same tensors. So ``parameters()`` and ``state_dict()`` hold
    each tensor once, and an optimizer step is seen by both paths.
    Checkpoints of PufferLib's wrapper, which also store ``cell.*`` copies,
    load too. The LSTM is initialised here (orthogonal weights, zero
    biases); the wrapped policy is left as it was built.

    **State** is a dict: ``lstm_h`` and ``lstm_c``, each ``(B, hidden_size)``
    or absent/None for zeros (``(1, B, hidden_size)`` is accepted too), and
    optionally ``episode_start``: a bool (or 0/1) mask, ``(B,)`` for
    :meth:`forward_eval` and ``(B, T)`` for :meth:`forward`, true where the
    observation is the first of a new episode. Those rows start from zero
    state, so no memory leaks from one episode into the next. The wrapper
    writes ``lstm_h``, ``lstm_c`` and ``hidden`` (the LSTM output) back into
    the dict.

    **Rollout speed.** A single step can run through ``nn.LSTM`` (a
    length-1 sequence; cuDNN on a GPU) or through the ``LSTMCell`` kernel,
    and which is faster depends on the device, batch, width and precision:
    on one GPU the cell wins at small widths and ``nn.LSTM`` at large ones
    (``benches/bench_policy.py`` measures both). With ``eval_path="auto"``
    :meth:`forward_eval` times both the first time it sees a (device,
    dtype, batch size, grad mode, autocast) combination and keeps the faster
    (a few dozen extra steps with device syncs, once; the choices are in
    :attr:`eval_path_choices`). Under
    ``torch.compile`` it uses the cell, which compiles without a graph
    break and whose gates inductor fuses. While a CUDA graph is being
    captured it cannot time, so it uses the choice already made for those
    inputs (warm-up runs before capture make one), else the cell.
    ``eval_path="cell"`` or ``"lstm"`` fixes the path. Both compute the
    same function.
    """

    EVAL_PATHS = ("auto", "cell", "lstm")

    def __init__(
        self, env: Any, policy: nn.Module, input_size: int = 128, hidden_size: int = 128, *, eval_path: str = "auto"
    ):
        super().__init__()
        for name, expected in (("hidden_size", input_size), ("output_size", hidden_size)):
            found = getattr(policy, name, None)
            if isinstance(found, int) and found != expected:
                arg = "input_size" if name == "hidden_size" else "hidden_size"
                raise ValueError(f"{type(policy).__name__}.{name} is {found}, but LSTMWrapper got {arg}={expected}")
        self.policy = policy
        self.obs_shape = _observation_shape(env)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.eval_path = eval_path
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                # Orthogonal per gate block: each of the four gates gets a
                # well-conditioned map of its own.
                for block in param.data.chunk(4, dim=0):
                    nn.init.orthogonal_(block, 1.0)
            else:
                nn.init.zeros_(param)
        # Kept out of the module tree (object.__setattr__) so that its
        # parameters, which are the LSTM's, are not listed or saved twice.
        object.__setattr__(self, "_cell", nn.LSTMCell(input_size, hidden_size))
        self._tie_cell()
        self.register_load_state_dict_post_hook(LSTMWrapper._tie_cell)
        self._paths: dict[tuple, str] = {}

    # -- the shared cell ----------------------------------------------------

    def _lstm_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lstm = self.lstm
        return lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0

    def _tie_cell(self, *_: Any) -> None:
        # Straight into _parameters: torch.func.functional_call swaps plain
        # tensors in for the LSTM's parameters, and the cell must follow.
        cell = self._cell
        for name, param in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), self._lstm_weights()):
            cell._parameters[name] = param

    def _apply(self, fn: Callable, recurse: bool = True) -> LSTMWrapper:
        # .to()/.cuda()/.half() may create new parameter objects for the
        # LSTM (torch.__future__ conversion settings); keep the cell on them.
        result = super()._apply(fn, recurse)
        self._tie_cell()
        return result

    def _ensure_tied(self) -> nn.LSTMCell:
        # Ties are also restored after .to() and load_state_dict (whose
        # assign=True replaces parameter objects); this catches anything
        # else, e.g. a parameter assigned by hand, with four identity checks
        # (on the _parameters dicts: this runs on every rollout step).
        cell = self._cell
        ours, theirs = cell._parameters, self._modules["lstm"]._parameters
        if (
            ours["weight_ih"] is not theirs["weight_ih_l0"]
            or ours["weight_hh"] is not theirs["weight_hh_l0"]
            or ours["bias_ih"] is not theirs["bias_ih_l0"]
            or ours["bias_hh"] is not theirs["bias_hh_l0"]
        ):
            self._tie_cell()
        return cell

    @property
    def cell(self) -> nn.LSTMCell:
        """An ``nn.LSTMCell`` whose parameters are ``lstm``'s own tensors
        (re-tied on access if the LSTM's parameters were replaced)."""
        return self._ensure_tied()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # PufferLib's wrapper registers its cell, so its checkpoints hold
        # cell.* duplicates of lstm.*; they carry nothing new.
        for key in [k for k in state_dict if k.startswith(prefix + "cell.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def eval_path_choices(self) -> dict[tuple, str]:
        """The one-step path ``"auto"`` chose, per (device, dtype, batch
        size, grad enabled, autocast state) measured so far."""
        return dict(self._paths)

    # -- properties of the wrapped policy -----------------------------------

    @property
    def is_multidiscrete(self) -> bool:
        return bool(getattr(self.policy, "is_multidiscrete", False))

    @property
    def is_continuous(self) -> bool:
        return bool(getattr(self.policy, "is_continuous", False))

    # -- one step -----------------------------------------------------------

    def _cell_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The weights are read from the cell, not from self.lstm: dynamo
        # refuses to trace into RNN modules even for an attribute read, and
        # the cell holds the very same tensors (see _ensure_tied).
        weights = self._cell._parameters
        return torch.lstm_cell(
            x, (h, c), weights["weight_ih"], weights["weight_hh"], weights["bias_ih"], weights["bias_hh"]
        )

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, c) = self.lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        return h[0], c[0]

    def _step_function(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Callable:
        if not torch.compiler.is_compiling():
            self._ensure_tied()
        path = self.eval_path
        if path == "auto":
            # Measured, not a fixed rule: which path is faster flips with
            # width, batch, GPU and precision settings (benches/bench_policy.py
            # measures both), and measuring once per key (about 20 ms) costs less
            # than a wrong guess on every rollout step.
            if torch.compiler.is_compiling():
                # Inductor fuses the cell's pointwise gates; nn.LSTM would
                # break the graph. (The batch size may also be symbolic
                # here, not a key to look up.)
                return self._cell_step
            key = (x.device, x.dtype, x.shape[0], torch.is_grad_enabled(), _autocast_key(x.device))
            path = self._paths.get(key)
            if path is None:
                if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                    return self._cell_step  # timing would need a sync, which capture forbids
                path = self._paths[key] = self._measure(x, h, c)
        elif path not in self.EVAL_PATHS:
            raise ValueError(f"eval_path must be one of {self.EVAL_PATHS}, got {path!r}")
        return self._cell_step if path == "cell" else self._lstm_step

    def _measure(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> str:
        """The faster one-step path for inputs like these.

        Each candidate is timed as a rollout uses it, one call followed by
        a device sync, and keeps its best time. Rounds alternate the
        candidates, so a burst of load on the machine hits both alike, and
        go on for at least 3 and at most 25 rounds, until about 20 ms have
        been spent (cheap steps get many samples, costly ones few).
        """
        steps = {"cell": self._cell_step, "lstm": self._lstm_step}
        best = dict.fromkeys(steps, math.inf)
        with torch.no_grad():
            for step in steps.values():  # warm-up: lazy init, cuDNN plans
                step(x, h, c)
            _synchronize(x.device)
            begin = time.perf_counter()
            for rounds in range(1, 26):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step(x, h, c)
                    _synchronize(x.device)
                    best[name] = min(best[name], time.perf_counter() - start)
                if rounds >= 3 and time.perf_counter() - begin > 0.02:
                    break
        return min(best, key=best.get)

    # -- state --------------------------------------------------------------

    def _initial_state(
        self, state: State, like: torch.Tensor, batch: int, starts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, c)`` from the state dict, zeros where absent, and zeroed for
        rows whose ``starts`` is true."""
        h, c = state.get("lstm_h"), state.get("lstm_c")
        if h is None or c is None:
            zeros = like.new_zeros(batch, self.hidden_size)
            h = zeros if h is None else h
            c = zeros if c is None else c
        # PufferLib's training forward stores (num_layers, B, H).
        if h.dim() != 2:
            h = h.reshape(batch, self.hidden_size)
        if c.dim() != 2:
            c = c.reshape(batch, self.hidden_size)
        if starts is not None:
            h, c = h.masked_fill(starts.unsqueeze(-1), 0), c.masked_fill(starts.unsqueeze(-1), 0)
        return h, c

    @staticmethod
    def _episode_starts(state: State, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
        starts = state.get("episode_start")
        if starts is None:
            return None
        if not isinstance(starts, torch.Tensor):
            starts = torch.as_tensor(starts)
        if starts.shape != shape:
            if starts.numel() != math.prod(shape):
                raise ValueError(f"state['episode_start'] has shape {tuple(starts.shape)}, expected {shape}")
            starts = starts.reshape(shape)
        if starts.dtype != torch.bool:
            starts = starts != 0
        # A mask straight from the envs may still be on the host. The copy is
        # blocking on purpose: the envs may overwrite that buffer as soon as
        # this step returns.
        return starts.to(device)

    # -- the two entry points -----------------------------------------------

    def forward_eval(self, observations: torch.Tensor, state: State | None = None) -> tuple[Any, torch.Tensor]:
        """One rollout step for a batch ``(B, *obs_shape)``.

        Reads ``lstm_h``/``lstm_c`` (None for zeros) and ``episode_start``
        ``(B,)`` from ``state`` and writes the new ``lstm_h``, ``lstm_c``
        and ``hidden`` (all ``(B, hidden_size)``) back into it. The new state
        is not detached, so stepping with gradients enabled backpropagates
        through time. Returns ``(logits, values (B,))``.
        """
        if state is None:
            state = {}
        hidden = self.policy.encode_observations(observations, state=state)
        batch = hidden.shape[0]
        starts = self._episode_starts(state, (batch,), hidden.device)
        h, c = self._initial_state(state, hidden, batch, starts)
        h, c = self._step_function(hidden, h, c)(hidden, h, c)
        state["lstm_h"], state["lstm_c"], state["hidden"] = h, c, h
        return self._decode(h, observations)

    def forward(self, observations: torch.Tensor, state: State | None = None) -> tuple[Any, torch.Tensor]:
        """Training on sequences: observations ``(B, T, *obs_shape)``, or
        ``(B, *obs_shape)`` for ``T = 1``.

        Starts from ``state``'s ``lstm_h``/``lstm_c`` (None for zeros),
        zeroes rows at ``episode_start`` ``(B, T)`` and stores the detached
        final ``lstm_h``/``lstm_c`` ``(B, hidden_size)`` and the LSTM output
        ``hidden`` ``(B, T, hidden_size)``. Returns logits for the ``B * T``
        rows in batch-major order and values ``(B, T)``.

        Without resets the whole sequence is one ``nn.LSTM`` call. With an
        ``episode_start`` mask it reads which time steps hold any reset
        (one small read to the host; none when the mask is already on the
        CPU) and runs ``nn.LSTM`` over the stretches between them, zeroing
        the reset rows at each boundary. Under ``torch.compile`` it steps
        the cell through every time step instead, which needs no host read.
        """
        if state is None:
            state = {}
        x = observations
        space_dims = len(self.obs_shape)
        if x.dim() == space_dims + 1:
            batch, steps = x.shape[0], 1
        elif x.dim() == space_dims + 2:
            batch, steps = x.shape[0], x.shape[1]
        else:
            raise ValueError(
                f"observations of shape {tuple(x.shape)} are neither (B, *obs_shape) nor (B, T, *obs_shape) "
                f"for obs_shape {self.obs_shape}"
            )
        x = x.reshape(batch * steps, *x.shape[x.dim() - space_dims :])
        hidden = self.policy.encode_observations(x, state=state)
        hidden = hidden.reshape(batch, steps, self.input_size)

        mask = state.get("episode_start")
        starts = self._episode_starts(state, (batch, steps), hidden.device)
        h, c = self._initial_state(state, hidden, batch, None if starts is None else starts[:, 0])
        if starts is None or steps == 1:
            output, (h, c) = self.lstm(hidden, (h.unsqueeze(0), c.unsqueeze(0)))
            h, c = h[0], c[0]
        elif torch.compiler.is_compiling():
            outputs = []
            for t in range(steps):
                if t > 0:
                    h, c = h.masked_fill(starts[:, t, None], 0), c.masked_fill(starts[:, t, None], 0)
                h, c = self._cell_step(hidden[:, t], h, c)
                outputs.append(h)
            output = torch.stack(outputs, dim=1)
        else:
            # Time steps where any row begins an episode cut the sequence.
            host_mask = torch.as_tensor(mask).reshape(batch, steps)
            cuts = (host_mask[:, 1:] != 0).any(dim=0).nonzero().flatten().add(1).tolist()
            outputs = []
            for begin, end in zip([0, *cuts], [*cuts, steps]):
                if begin > 0:
                    reset = starts[:, begin, None]
                    h, c = h.masked_fill(reset, 0), c.masked_fill(reset, 0)
                segment, (h, c) = self.lstm(hidden[:, begin:end], (h.unsqueeze(0), c.unsqueeze(0)))
                h, c = h[0], c[0]
                outputs.append(segment)
            output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

        state["lstm_h"], state["lstm_c"], state["hidden"] = h.detach(), c.detach(), output
        logits, values = self._decode(output.reshape(batch * steps, self.hidden_size), x)
        return logits, values.reshape(batch, steps)

    def _decode(self, hidden: torch.Tensor, observations: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The wrapped policy's ``decode_actions``, given the observations'
        action mask when the policy reads one (the built-in policies'
        ``action_mask``); other policies are called as PufferLib's are."""
        read_mask = getattr(self.policy, "action_mask", None)
        mask = read_mask(observations) if callable(read_mask) else None
        if mask is None:
            return self.policy.decode_actions(hidden)
        return self.policy.decode_actions(hidden, action_mask=mask)
