"""Whether a trainer compiles (:func:`compile_choice`: ``compile`` set, or the
rule when it is unset), the loss's gradients as a function of tensors
that one graph can take (:class:`LossGradients`), and how a compiled call
falls back to eager when compiling fails (:class:`CompiledOrEager`). Which
calls compile is the trainer's choice (:class:`pufferrs.ppo.Trainer`)."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pufferrs.config import Config

__all__ = ["AUTO_COMPILE_STEPS", "CompiledOrEager", "LossGradients", "compile_choice"]

#: Gradient steps from which a run with ``compile`` unset compiles its
#: update. Compiling costs seconds once per network shape (on a 2-core CPU
#: about 28 s with an empty inductor cache, mostly gcc: 7 s probing the
#: CPU's vector instructions and 6 s building a precompiled header, both
#: once per cache, then 0.7-0.9 s for each of the two graphs' 16 kernels;
#: 3 s once the cache holds them) and saves about 1 ms per gradient step of
#: the control presets' 64x64 MLPs (1.37 ms eager, 0.35 ms compiled): from
#: an env's second run on it pays from a few thousand steps, its first run
#: from about 28,000. The vector-control presets' runs take 31,360
#: (classic control) to 156,480 (MuJoCo, Box2D), issue 20's runs of
#: 100,000 env steps 15,680; CartPole-v1's preset takes 3,136.
AUTO_COMPILE_STEPS = 10_000


def compile_choice(
    config: Config, device: torch.device, recurrent: bool, ranks: int, observations: gym.spaces.Space
) -> tuple[bool, str]:
    """``(compiles, why)``: ``config.compile`` where set; unset, a run
    compiles where it pays and is measured: on a CPU, a feed-forward policy
    on vector observations (floats, one axis: a small MLP, bound by torch's
    cost per operation) in one process, for at least
    :data:`AUTO_COMPILE_STEPS` gradient steps. Elsewhere it stays eager:
    images and nested observations spend their time computing, not calling,
    an LSTM compiles only its forward, and no GPU was measured.
    ``observations`` is the vector env's (flat) observation space."""
    if config.compile is not None:
        return config.compile, "--compile" if config.compile else "--no-compile"
    steps = config.num_updates * config.update_epochs * (config.batch_size // config.minibatch_size)
    if device.type != "cpu":
        return False, "unset: eager on a GPU (--compile to compile)"
    vector = len(observations.shape or ()) == 1 and np.issubdtype(observations.dtype, np.floating)
    if recurrent or ranks > 1 or not vector:
        return False, "unset: eager except for an MLP on vector observations in one process"
    if steps < AUTO_COMPILE_STEPS:
        return False, f"unset: {steps:,} gradient steps, fewer than the {AUTO_COMPILE_STEPS:,} that pay for compiling"
    return True, f"unset: {steps:,} gradient steps of an MLP on a CPU pay for compiling"


class LossGradients:
    """Called with a batch, ``(gradients, stats)`` of ``loss(*batch) ->
    (loss, stats)``, a loss that runs ``policy``: the gradients with respect
    to the policy's parameters (in ``policy.parameters()`` order) by
    ``torch.func.grad``. The loss runs with the parameters swapped for
    tensors that alias them (``torch.func.functional_call``; an optimizer
    updates them in place), so the gradients are a function of tensors, not
    autograd's engine walking a graph, and torch.compile takes them in the
    same graph as the loss."""

    def __init__(self, policy: nn.Module, loss: Callable[..., Any]):
        self.module = _Runs(policy, loss)

    def __call__(self, *batch: Any) -> tuple[list[torch.Tensor], Any]:
        # Detached here, in the call, not once in __init__: held from
        # __init__, the aliases reach a compiled graph as inputs besides the
        # parameters they alias, whose rebuilding at every call cost 20% of
        # a compiled update.
        parameters = {k: p.detach() for k, p in self.module.named_parameters()}

        def loss(parameters: dict[str, torch.Tensor]) -> Any:
            return torch.func.functional_call(self.module, parameters, batch)

        grads, stats = torch.func.grad(loss, has_aux=True)(parameters)
        return list(grads.values()), stats


class _Runs(nn.Module):
    """A loss as a module whose one submodule is the policy it runs, for
    ``functional_call`` to swap that policy's parameters."""

    def __init__(self, policy: nn.Module, loss: Callable[..., Any]):
        super().__init__()
        self.policy = policy
        self.loss = loss

    def forward(self, *batch: Any) -> Any:
        return self.loss(*batch)


class CompiledOrEager:
    """``torch.compile(fn)``, falling back with a warning to ``eager``
    (``fn`` itself by default) when compiling fails on the first call (no
    compiler, unsupported Python). Errors after a successful first call are
    the model's and propagate.

    Each instance compiles a copy of ``fn`` with a code object of its own
    (:func:`_own_code`). Dynamo caches graphs per code object, at most 8
    (``recompile_limit``), counting those of trainers already gone: with
    one code object for all, the ninth trainer of a process (a sweep's
    trial, a bench's round) ran its update eagerly, 8x slower. Shapes are
    static (``dynamic=False``): a trainer calls with the same few shapes for
    its whole run, and a dynamic graph of these small networks is slower
    than eager."""

    def __init__(self, fn: Callable[..., Any], eager: Callable[..., Any] | None = None):
        self.fn = eager or fn
        self.compiled: Callable[..., Any] | None = torch.compile(_own_code(fn), dynamic=False)
        self.worked = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.fn(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:
            if self.worked:
                raise
            warnings.warn(
                f"torch.compile failed, running eagerly: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2
            )
            self.compiled = None
            return self.fn(*args, **kwargs)
        self.worked = True
        return out


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a function or a bound method) with a copy of its code object,
    the same bytecode under another identity."""
    func = getattr(fn, "__func__", fn)
    copy = types.FunctionType(
        func.__code__.replace(), func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__qualname__ = func.__qualname__
    bound_to = getattr(fn, "__self__", None)
    return copy if bound_to is None else types.MethodType(copy, bound_to)
