"""The learner on several processes with ``torch.distributed``: one policy
trained by N ranks that ``torchrun`` starts, each with its own vector env.

    torchrun --nproc-per-node 2 -m pufferrs train CartPole-v1

Everything a rank shares with the others goes through this module; the
trainer (:mod:`pufferrs.ppo`) calls it at a few points and, in a single
process, gets back exactly what it computed before (:data:`SINGLE` does
no communication at all).

What each rank owns and what is synchronised:

- **The config's counts are the run's totals.** ``num_envs``,
  ``batch_size``, ``minibatch_size``, ``env_batch_size`` and
  ``num_workers`` are split evenly over the ranks (:meth:`Ranks.share`;
  a count that does not divide is a :class:`~pufferrs.errors.ConfigError`),
  so a run takes the same number of env steps per update, the same number
  of gradient steps and the same number of updates whatever the number of
  ranks.
- **Seeds.** Rank ``r``'s env ``i`` gets ``seed + r * envs_per_rank + i``:
  together the ranks' envs have exactly the seeds of a one-process run of
  ``num_envs`` envs, none twice. Torch, numpy and Python's generators get
  ``seed + r`` (:func:`start`), so that ranks sample different actions.
- **Weights.** Rank 0's parameters and buffers are broadcast when the
  trainer is built; after that every rank applies the same averaged
  gradients with the same optimizer, so the weights stay bit-for-bit equal.
- **Gradients** are summed across ranks in one flattened collective per
  minibatch step and divided by the number of ranks, before the gradient
  norm is clipped (so every rank clips the same global norm). NCCL
  all-reduces them; gloo gathers every rank's gradients and each rank sums
  them in rank order, which on two CPU ranks of one machine took 0.55-0.75x
  the time of gloo's all-reduce of the same ~17k floats (gloo's all-reduce
  is latency-bound there: several messages where a gather needs one round).
  A hand-written all-reduce rather than ``DistributedDataParallel``: the
  trainer calls ``forward`` and ``forward_eval`` as methods (DDP hooks only
  ``__call__``), and an LSTM's masked steps may leave a parameter without a
  gradient on one rank, which here simply counts as zero.
- **Loss statistics over steps.** Advantage normalisation uses the mean and
  standard deviation of the whole minibatch across ranks, and the losses'
  means over the steps where an agent acted are divided by the number of
  such steps on all ranks (:class:`RankStepWeights`), so that the averaged
  gradient is that of one process holding every rank's steps.
- **Observation normalisation**: each update's observations are merged
  into the running statistics with their global count, mean and sum of
  squared deviations (float64 sums across ranks), so that every rank holds
  the same statistics. Reward normalisation keeps one return per row, and
  its statistics stay per rank (merging them would cost a collective per
  env step); rank 0's are the ones checkpoints hold.
- **Metrics.** Episode statistics are gathered from every rank before they
  are averaged; ``global_step`` (and so ``sps``) counts every rank's steps;
  losses are averaged over the ranks (exact for the losses, the mean of the
  ranks' values for ``explained_variance``); ``perf/`` timers are rank 0's.
- **Files.** Rank 0 alone writes the run directory (config, metrics, plots,
  checkpoints); :func:`session` gives every rank rank 0's ``run_dir``.
- **Stopping.** SIGTERM or Ctrl-C on any rank is held until the end of the
  update under way, when the ranks agree to stop together (one small
  all-reduce per update): rank 0 saves ``model.pt`` and the summary, the
  ranks meet at a barrier and all exit as a stopped run does.
- **Failures.** A collective that fails (another rank died, or did not
  answer within ``Config.dist_timeout`` seconds) raises
  :class:`~pufferrs.errors.DistributedError`, which ``pufferrs train`` reports in one line;
  ``torchrun`` also stops the remaining ranks when one exits with an error.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import signal
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from pufferrs.errors import ConfigError, DistributedError
from pufferrs.experience import StepWeights

if TYPE_CHECKING:
    from pufferrs.config import Config
    from pufferrs.episodes import EpisodeStats
    from pufferrs.normalize import ObservationNormalizer

__all__ = [
    "SINGLE",
    "RankStepWeights",
    "Ranks",
    "current",
    "launched",
    "session",
    "start",
    "stop",
]

#: The config fields that are the run's totals, split evenly over the ranks.
SPLIT_FIELDS = ("num_envs", "batch_size", "minibatch_size", "env_batch_size", "num_workers")


class Ranks:
    """This process's place in a distributed run (``rank`` of ``size``,
    ``local_rank`` on its node) and the operations the trainer needs from
    the others. With ``size`` 1 (:data:`SINGLE`) every operation is the
    one-process computation and nothing is communicated."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, timeout: float | None = None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.timeout = timeout
        # A failed collective leaves the group unusable: the barrier at the
        # end is skipped rather than waited on.
        self.broken = False
        # The signal this rank received and holds until the ranks agree to
        # stop, and whether they did (then they meet at the barrier).
        self.pending = 0
        self.stopping = False
        self._handlers: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"Ranks(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # -- what each rank owns ------------------------------------------------

    def share(self, config: Config) -> Config:
        """This rank's share of ``config``: the counts of
        :data:`SPLIT_FIELDS` divided by the number of ranks, and the seed of
        its first env (``seed + rank * envs_per_rank``). Raises
        :class:`ConfigError` for a count that does not divide, or a share
        that :meth:`Config.validate` refuses."""
        if self.size == 1:
            return config
        changes: dict[str, Any] = {}
        for name in SPLIT_FIELDS:
            value = getattr(config, name)
            if value is None:
                continue
            if not isinstance(value, int) or value % self.size:
                raise ConfigError(f"{name} ({value!r}) must be a multiple of the number of ranks ({self.size})")
            changes[name] = value // self.size
        changes["total_steps"] = config.num_updates * changes["batch_size"]
        changes["seed"] = config.seed + self.rank * changes["num_envs"]
        shared = dataclasses.replace(config, **changes)
        try:
            shared.validate()
        except ConfigError as exc:
            raise ConfigError(f"each of the {self.size} ranks' share of the config: {exc}") from None
        return shared

    def device(self, device: torch.device) -> torch.device:
        """The rank's training device: ``cuda`` without an index is the
        GPU of its ``LOCAL_RANK``."""
        if device.type == "cuda" and device.index is None and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    # -- collectives ----------------------------------------------------------

    def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as exc:  # torch.distributed.DistBackendError and its kin
            self.broken = True
            raise DistributedError(
                f"rank {self.rank} of {self.size}: {what} failed, so another rank has stopped or is stuck "
                f"(its own output says why; ranks wait {self.timeout:g} s for each other): {exc}"
            ) from exc

    def _tensor(self, values: Any, dtype: torch.dtype) -> torch.Tensor:
        # NCCL reduces only tensors on the rank's GPU; gloo takes host tensors.
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        return torch.as_tensor(values, dtype=dtype, device=device)

    def all_sum(self, tensor: torch.Tensor, what: str = "a sum") -> torch.Tensor:
        """``tensor`` summed over the ranks (a new tensor; ``tensor`` is left
        alone). Differentiable for nothing: use it on detached values."""
        if self.size == 1:
            return tensor
        total = tensor.detach().clone()
        self._collective(what, lambda: dist.all_reduce(total))
        return total

    def total(self, count: int, what: str = "the step count") -> int:
        """An integer summed over the ranks."""
        if self.size == 1:
            return count
        return int(self.all_sum(self._tensor(count, torch.int64), what).item())

    def broadcast_module(self, module: nn.Module) -> None:
        """Copies rank 0's parameters and buffers into every rank's
        ``module`` (in place), so that training starts from one set of
        weights. Derived buffers (the normaliser's) are broadcast too."""
        if self.size == 1:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                self._collective("broadcasting rank 0's weights", lambda t=tensor: dist.broadcast(t.data, src=0))

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replaces every parameter's gradient by its mean over the ranks:
        one collective over all gradients of a dtype, flattened. A parameter
        without a gradient on this rank counts as zero (and gets one)."""
        if self.size == 1:
            return
        by_dtype: dict[torch.dtype, list[nn.Parameter]] = defaultdict(list)
        for p in parameters:
            if p.requires_grad:
                by_dtype[p.dtype].append(p)
        gather = dist.get_backend() == "gloo"
        for params in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
            if gather:  # see the module's docstring: one round instead of several
                every = flat.new_empty(self.size * flat.numel())
                self._collective(
                    "the gradient all-reduce", lambda every=every, flat=flat: dist.all_gather_into_tensor(every, flat)
                )
                flat = every.view(self.size, -1).sum(0)
            else:
                self._collective("the gradient all-reduce", lambda flat=flat: dist.all_reduce(flat))
            flat /= self.size
            offset = 0
            for p in params:
                n = p.numel()
                mean = flat[offset : offset + n].view_as(p)
                if p.grad is None:
                    p.grad = mean.clone()
                else:
                    p.grad.copy_(mean)
                offset += n

    def shuffle(self, seed: int) -> torch.Generator | None:
        """A generator for the minibatch shuffle: seeded alike on every
        rank, so that each minibatch holds the same step positions of every
        rank's steps (whose statistics :meth:`minibatches` then knows
        without asking); None (torch's global one) in one process."""
        return None if self.size == 1 else torch.Generator().manual_seed(seed)

    def resumed(self, seed: int, update: int) -> torch.Generator | None:
        """After a checkpoint (rank 0's random generators) is loaded on
        every rank: ranks other than 0 seed theirs with ``seed + rank +
        update * size``, a seed no rank used before, so that they do not
        draw rank 0's numbers; returns the minibatch shuffle's generator,
        seeded alike on every rank with ``seed + update``."""
        from pufferrs.config import seed_everything

        if self.size == 1:
            return None
        if self.rank:
            seed_everything((seed + self.rank + update * self.size) % 2**63)
        return self.shuffle((seed + update) % 2**63)

    def minibatches(
        self, advantages: torch.Tensor, weights: torch.Tensor | None
    ) -> Callable[[torch.Tensor], StepWeights]:
        """For one update's ``(segments, length)`` ``advantages`` and step
        ``weights`` (None: every step counts), the
        :class:`~pufferrs.experience.StepWeights` of a minibatch's segment
        ``index``. Across ranks, the advantages and weights of every rank
        are gathered here, once per update, and each minibatch's are those
        at the same positions on every rank (:meth:`shuffle`), so that the
        minibatches' statistics cost no further collective."""
        if self.size == 1:
            return lambda index: StepWeights(None if weights is None else weights[index].reshape(-1))
        mine = advantages if weights is None else torch.stack([advantages, weights.to(advantages.dtype)])
        every = [torch.empty_like(mine) for _ in range(self.size)]
        self._collective("gathering the advantages", lambda: dist.all_gather(every, mine))
        gathered = torch.stack(every)  # (ranks, [advantages, weights,] segments, length)
        if weights is None:
            return lambda index: RankStepWeights(gathered[:, index].reshape(self.size, -1), None, None, self)
        return lambda index: RankStepWeights(
            gathered[:, 0, index].reshape(self.size, -1),
            gathered[:, 1, index].reshape(self.size, -1),
            weights[index].reshape(-1),
            self,
        )

    def update_normalizer(self, normalizer: ObservationNormalizer, observations: torch.Tensor) -> None:
        """Merges every rank's ``observations`` into ``normalizer`` (each
        rank's copy ends up the same); in one process, ``normalizer.update``."""
        normalizer.update(observations, across=None if self.size == 1 else self._sum_moments)

    def _sum_moments(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.all_sum(tensor, "merging the observation statistics")

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank reports the same keys)."""
        if self.size == 1:
            return metrics
        keys = sorted(metrics)
        values = self.all_sum(self._tensor([metrics[k] for k in keys], torch.float64), "averaging the losses")
        return {k: v / self.size for k, v in zip(keys, values.tolist())}

    def episode_metrics(self, stats: EpisodeStats) -> dict[str, float | int]:
        """``stats.take()`` over the episodes that ended on every rank in
        this update (each rank's lists, gathered in rank order)."""
        if self.size == 1:
            return stats.take()
        gathered: list[Any] = [None] * self.size
        mine = {key: list(values) for key, values in stats.values.items()}
        self._collective("gathering the episode statistics", lambda: dist.all_gather_object(gathered, mine))
        stats.values.clear()
        for values in gathered:
            for key, numbers in values.items():
                stats.values[key].extend(numbers)
        return stats.take()

    def check_same(self, config: Config) -> None:
        """Raises :class:`ConfigError` on every rank unless all ranks have
        the same config (``run_dir`` aside: rank 0's is the one written)."""
        if self.size == 1:
            return
        fields = dataclasses.asdict(config)
        fields.pop("run_dir", None)
        text = json.dumps(fields, sort_keys=True, default=repr)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")
        digests = [None] * self.size
        self._collective("comparing the ranks' configs", lambda: dist.all_gather_object(digests, digest))
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise ConfigError(
                f"ranks {differ} were started with a config other than rank 0's: give every rank the same"
            )

    # -- stopping together ----------------------------------------------------

    def hold_signals(self) -> None:
        """Holds SIGTERM and SIGINT until :meth:`check_stop`, so that a
        signal to one rank stops every rank at the same update."""
        if self.size == 1 or self._handlers:
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._handlers[signum] = signal.signal(signum, self._hold)

    def _hold(self, signum: int, frame: Any) -> None:
        self.pending = max(self.pending, signum)

    def release_signals(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers.clear()

    def check_stop(self) -> None:
        """Called by every rank at the end of each update: when any rank
        holds a signal, every rank raises what that signal's own handler
        raises (``pufferrs train``'s SIGTERM handler, KeyboardInterrupt for
        Ctrl-C), at the same update."""
        if self.size == 1 or not self._handlers:
            return
        signum = int(
            self._collective(
                "agreeing whether to stop",
                lambda: self._reduce_max(self._tensor(self.pending, torch.int64)),
            ).item()
        )
        if signum:
            self.stopping = True
            handler = self._handlers.get(signum)
            self.release_signals()
            if callable(handler):
                handler(signum, None)
            raise KeyboardInterrupt

    @staticmethod
    def _reduce_max(tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def barrier(self) -> None:
        """Waits for every rank (skipped once a collective failed)."""
        if self.size > 1 and not self.broken:
            self._collective("the barrier at the end of the run", dist.barrier)


class RankStepWeights(StepWeights):
    """:class:`~pufferrs.experience.StepWeights` of this rank's share of a
    minibatch, whose statistics are those of the whole minibatch: every
    rank's ``advantages`` ``(ranks, steps)`` and ``weights`` (the same, or
    None when every step counts) at the minibatch's positions, gathered.
    :meth:`normalize` normalises the whole minibatch by StepWeights' own
    rule and keeps this rank's part; :meth:`mean` is this rank's share of
    the global mean, scaled so that the average over the ranks (the
    gradient all-reduce) is the global mean."""

    def __init__(self, advantages: torch.Tensor, weights: torch.Tensor | None, mine: torch.Tensor | None, ranks: Ranks):
        self.ranks = ranks
        self.every = StepWeights(None if weights is None else weights.reshape(-1))
        self.advantages = advantages
        self.weights = mine
        # Equal step counts on every rank: the mean of the ranks' plain
        # means is the global mean. Weighted, divide by every rank's count.
        self.count = None if weights is None else self.every.count

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        rank, n = self.ranks.rank, x.numel()
        parts = [x.reshape(-1) if r == rank else self.advantages[r] for r in range(self.ranks.size)]
        return self.every.normalize(torch.cat(parts))[rank * n : (rank + 1) * n].view_as(x)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        mean = super().mean(x)
        return mean if self.weights is None else mean * self.ranks.size


SINGLE = Ranks()

_current: Ranks = SINGLE


def current() -> Ranks:
    """The ranks of the run this process belongs to: what :func:`start`
    made, else :data:`SINGLE` (with a warning when torchrun started this
    process as one of several ranks: each would train alone)."""
    if _current is SINGLE and launched() and not (dist.is_available() and dist.is_initialized()):
        warnings.warn(
            f"torchrun started this process as rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}, "
            "but it has not joined the others: call pufferrs.distributed.start(config) (or session) before "
            "building the Trainer, or each rank trains a policy of its own",
            RuntimeWarning,
            stacklevel=2,
        )
    return _current


def launched() -> bool:
    """Whether ``torchrun`` (or anything that sets its variables) started
    this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(config: Config) -> Ranks:
    """Joins the run's process group when ``torchrun`` started this process
    as one of several ranks (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT`` from its environment); else returns
    :data:`SINGLE` and changes nothing. The group uses NCCL when the
    config's device is CUDA (each rank on the GPU of its ``LOCAL_RANK``),
    gloo otherwise, and gives up on a collective after
    ``config.dist_timeout`` seconds. Then seeds Python, numpy and torch
    with ``config.seed + rank``: call it after
    :func:`~pufferrs.config.apply_process_settings`. A process group
    initialised by the caller is used as it is."""
    global _current
    from pufferrs.config import resolve_device, seed_everything

    if not launched() and not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    if not dist.is_available():
        raise ConfigError("this torch has no torch.distributed: a torchrun run needs it")
    timeout = float(config.dist_timeout)
    if not dist.is_initialized():
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        device = resolve_device(config.device)
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"rank {rank} has LOCAL_RANK {local_rank}, but this node has {torch.cuda.device_count()} GPU(s): "
                    "start at most one rank per GPU"
                )
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout),
        )
    else:
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), local_rank, timeout)
    if ranks.size == 1:
        return SINGLE
    _current = ranks
    seed_everything(config.seed + ranks.rank)
    return ranks


def stop(ranks: Ranks) -> None:
    """Meets the other ranks at a barrier (so that none exits while rank 0
    still writes the run's last files), then leaves the process group."""
    global _current
    try:
        ranks.barrier()
    finally:
        ranks.release_signals()
        _current = SINGLE
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def session(config: Config) -> Iterator[Ranks]:
    """What ``pufferrs train`` runs inside: :func:`start`, rank 0's
    ``run_dir`` given to every rank, signals held until the ranks agree to
    stop, and :func:`stop` on the way out. Without ``torchrun``, yields
    :data:`SINGLE` and does nothing."""
    ranks = start(config)
    if not ranks.distributed:
        yield ranks
        return
    try:
        run_dir = [config.run_dir]
        ranks._collective("sharing rank 0's run directory", lambda: dist.broadcast_object_list(run_dir, src=0))
        config.run_dir = run_dir[0]
        ranks.hold_signals()
        yield ranks
    except BaseException:
        if not ranks.stopping:
            # This rank alone failed: the others are in (or on their way to)
            # a collective that is not the barrier, and learn of it when
            # this process leaves the group.
            ranks.broken = True
        raise
    finally:
        stop(ranks)
