"""PPO on pufferrs vector envs: the algorithm, top to bottom.

The loop, per update (``batch_size`` env steps)::

    rollout:  vecenv.recv() -> rows to the device -> policy.forward_eval
              (LSTM state kept per row, zeroed where an episode starts)
              -> sample_logits -> vecenv.send(), storing every step into
              the experience buffer, until each row has stored ``horizon``
              steps (``horizon = batch_size / num_envs``)
    learn:    GAE over each row's steps, then ``update_epochs`` passes of
              minibatches of ``bptt_horizon``-step segments: clipped policy
              and value losses, entropy bonus, Adam with gradient clipping

Rows are agent slots (``vecenv.num_agents``, one per env for one agent);
multi-agent envs mask the rows whose agent does not act (see
:mod:`pufferrs.experience` for what masks change).

Choices worth knowing:

- **Experience** (:mod:`pufferrs.experience`) lives on the training
  device, observations as the flat rows the vector env returns (the policy
  unflattens them in its ``forward``); rewards and flags stay on the host.
  Training unrolls every segment from the LSTM state it had in the
  rollout, not from zeros.
- **Asynchronous rollouts** (``env_batch_size < num_envs``): each ``recv``
  returns the envs that are ready; an env that has stored its ``horizon``
  steps keeps being stepped (``send`` must answer every ``recv``) without
  storing, until the others catch up. Its LSTM state keeps following it, so
  its next stored step starts from the right state. In synchronous mode no
  step is wasted: the batch that completes the rollout is held (received,
  not yet answered) across the update and acted on by the new policy.
- **Truncation** (a time limit) bootstraps from the value of the
  episode's final observation: the target is ``r + gamma * V(s_final)``.
  The vector env resets an env in the step that ends its episode and hands
  out the ended episode's last observation as ``final_obs``; the trainer
  keeps those of truncated steps (and, for an LSTM, the env's state after
  the step) and evaluates them all in one extra forward at the end of the
  rollout, with the policy that chose the steps. A vector env without
  ``final_obs`` gets a warning, and ``V(s_t)`` stands in.
- **GAE** runs in Rust (:mod:`pufferrs.advantages`) on the host, where
  rewards and flags arrive; on a GPU the values go down to page-locked
  memory and the advantages come back up, once per update.
- **Episode statistics**: an ended episode's info is averaged per update
  under ``env/<key>`` by the rules of :class:`pufferrs.episodes.EpisodeStats`.

The run's plumbing lives elsewhere: settings in :mod:`pufferrs.config`, the
env and policy in :mod:`pufferrs.factories`, where each row stands in the
rollout in :mod:`pufferrs.rollout`, drawing actions (and who masks them) in
:mod:`pufferrs.acting`, the run's files in :mod:`pufferrs.run_directory`
(which feeds the trackers of :mod:`pufferrs.tracking`), checkpoints in
:mod:`pufferrs.checkpoints` and what resuming needs besides in
:mod:`pufferrs.resume` (:meth:`Trainer.state_dict` and
:meth:`Trainer.load_state_dict`). Evaluation (:mod:`pufferrs.evaluation`,
also every ``eval_interval`` updates), sweeps (:mod:`pufferrs.sweep`) and
the command line sit on top.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pufferrs import distributed
from pufferrs.acting import Actor
from pufferrs.actions import ActionAdapter
from pufferrs.advantages import compute_advantages
from pufferrs.checkpoints import save_checkpoint
from pufferrs.compiling import CompiledOrEager, LossGradients, compile_choice
from pufferrs.config import Config, resolve_device
from pufferrs.device import HostToDevice
from pufferrs.diagnostics import LearningCheck
from pufferrs.episodes import EpisodeStats
from pufferrs.errors import CheckpointError, ConfigError
from pufferrs.evaluation import PeriodicEvaluation
from pufferrs.experience import (
    Experience,
    FinalObservations,
    ReceivedBatch,
    StepWeights,
    row_index,
)
from pufferrs.factories import check_env, is_recurrent, make_policy, make_vecenv
from pufferrs.normalize import RewardNormalizer
from pufferrs.resume import (
    check_policy_fits,
    check_spaces_fit,
    describe_spaces,
    resumed_env_seed,
    rng_state,
    set_rng_state,
)
from pufferrs.rollout import RowProgress
from pufferrs.run_directory import RunDirectory, summarize
from pufferrs.vector.vector_envs import on_pufferrs

__all__ = ["Experience", "Trainer", "compute_advantages"]

# Adam's own step without Optimizer.step's wrapper (see Trainer.clip_and_step).
_ADAM_STEP = inspect.unwrap(torch.optim.Adam.step)


class Trainer:
    """PPO on a pufferrs vector env; see the module docstring.

    ``vecenv`` and ``policy`` default to :func:`~pufferrs.factories.make_vecenv`
    and :func:`~pufferrs.factories.make_policy` of ``config``. With
    ``config.run_dir`` set, :meth:`train` fills a
    :class:`~pufferrs.run_directory.RunDirectory` there.

    The trainer leaves process-wide state alone (torch's threads, global
    seeds, cuDNN flags): call :func:`~pufferrs.config.apply_process_settings`
    first for those, as ``pufferrs train`` does.
    """

    def __init__(self, config: Config, vecenv: Any = None, policy: nn.Module | None = None):
        config.validate()
        self.config = config
        # Before any env is made: it checks config.info_metrics.
        self.episode_stats = EpisodeStats(config.env, config.info_metrics)
        # Under torchrun, this rank's share of the envs, seeds and batches
        # (pufferrs.distributed); in one process, the config itself.
        self.ranks = distributed.current()
        share = self.ranks.share(config)
        self.ranks.check_same(config)
        self.env_offset = share.seed - config.seed  # this rank's first env among the run's
        self.device = self.ranks.device(resolve_device(config.device))
        if vecenv is None:
            check_env(config)
            vecenv = make_vecenv(share, env_batch_size=share.env_batch_size)
        # A gymnasium vector env (EnvPool's) or PufferLib-style env made
        # elsewhere runs as the one env of a Serial vector env.
        vecenv = self.vecenv = on_pufferrs(vecenv, share.seed)
        try:
            # Rows that are not agents (a vector env's sub-envs) count as envs.
            envs = vecenv.num_agents if getattr(vecenv, "possible_agents", ()) is None else vecenv.num_envs
            if envs != share.num_envs:
                raise ConfigError(f"the vector env has {envs} envs, the config {share.num_envs}")
            self.actions = ActionAdapter(vecenv.single_action_space)
            self.policy = (policy if policy is not None else make_policy(vecenv, config)).to(self.device)
            self.recurrent = is_recurrent(self.policy)
            if self.recurrent != config.lstm:
                raise ConfigError(f"config.lstm is {config.lstm}, but the policy is a {type(self.policy).__name__}")
            # With the option on, the trainer merges each rollout into the
            # policy's statistics; a NormalizedPolicy passed in with it off
            # is the caller's to update.
            self.normalizer = getattr(self.policy, "normalizer", None) if config.normalize_observations else None
            if config.normalize_observations and self.normalizer is None:
                raise ConfigError("normalize_observations needs a policy with a normalizer (pufferrs.normalize)")
            self.actor = Actor(self.policy, vecenv)
            self.ranks.broadcast_module(self.policy)
        except BaseException:
            vecenv.close()
            raise
        # Listed once: the norm clip walks them at every gradient step.
        self.parameters = list(self.policy.parameters())
        obs_space = vecenv.single_observation_space
        self.compiles, self.compile_reason = compile_choice(
            config, self.device, self.recurrent, self.ranks.size, obs_space
        )
        fused = self.compiles and not self.recurrent and self.ranks.size == 1
        # Compiled, Adam's step is traced into the gradient step's graph;
        # torch's fused kernel would be called eagerly between graphs.
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.learning_rate, eps=1e-5, fused=not fused)
        self.set_learning_rate(config.learning_rate)
        if fused:  # the buffers fused_gradient_step writes the gradients into
            for p in self.parameters:
                p.grad = torch.zeros_like(p)
        # The calls the loop makes, compiled separately: compiling the module
        # would compile only its `forward`, and the module stays plain for
        # the optimizer, state_dict and checkpoints. A feed-forward policy's
        # gradient step compiles whole (fused_gradient_step): small networks
        # are bound by torch's cost per operation, which this removes (the
        # control presets' update takes a third of the time). Under torchrun
        # the loss and the clip with Adam's step compile apart, around the
        # collective. An LSTM's training forward compiles alone: dynamo
        # cannot trace the weights its nn.LSTM shares with its cell. In the
        # rollout, on a CPU the policy's call with the sampling compiles as
        # one graph beside the fused step (HalfCheetah-v5's inference at
        # 200k steps 8.8 s instead of 10.5-11.8), and the forward of the
        # final observations stays eager: their count varies, and each count
        # would be a graph of its own (a compiled forward that served both
        # made the rollout slower than eager). On a GPU the rollout's
        # forward compiles.
        self.forward_eval = self.policy.forward_eval
        self.forward = self.policy.forward
        self.loss_gradients = LossGradients(self.policy, self.minibatch_loss)
        if self.compiles:
            # The rollout's call, then the update's.
            if self.device.type != "cpu":
                self.forward_eval = CompiledOrEager(self.policy.forward_eval)
            elif fused:
                self.policy_step = CompiledOrEager(self.policy_step)
            if self.recurrent:
                self.forward = CompiledOrEager(self.policy.forward)
            elif fused:
                self.gradient_step = CompiledOrEager(self.fused_gradient_step, eager=self.gradient_step)
            else:
                self.minibatch_loss = CompiledOrEager(self.minibatch_loss)
                self.clip_and_step = CompiledOrEager(self.clip_and_step)

        n = getattr(vecenv, "num_agents", vecenv.num_envs)
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.from_numpy(np.zeros(0, obs_space.dtype)).dtype
        lstm_size = self.policy.hidden_size if self.recurrent else None
        self.experience = Experience(
            n, config.horizon, config.bptt_horizon, self.obs_shape, self.obs_dtype, self.actions, lstm_size, self.device
        )
        if self.recurrent:
            # The LSTM state of every row, between its steps.
            self.lstm_h = torch.zeros(n, lstm_size, device=self.device)
            self.lstm_c = torch.zeros(n, lstm_size, device=self.device)
        self.to_device = HostToDevice(self.device, vecenv)

        self.progress = RowProgress(n, config.horizon)
        self.reward_normalizer = (
            RewardNormalizer(n, config.gamma, clip=config.reward_clip) if config.normalize_rewards else None
        )
        self.held: ReceivedBatch | None = None  # a received batch not yet acted on
        # Truncated steps of this rollout, to bootstrap from their final observations.
        self.finals = FinalObservations(self.to_device)

        self.learning_check = LearningCheck(config)
        # The minibatch shuffle's generator: torch's own in one process.
        self.shuffle = self.ranks.shuffle(config.seed)
        self.update = 0
        self.global_step = 0
        self.elapsed = 0.0  # seconds of training, across resumptions
        self.env_seed = share.seed  # what the envs are reset with when the first rollout starts
        evaluates = config.eval_interval and self.ranks.is_main  # under torchrun, rank 0's job
        self.evaluation = PeriodicEvaluation(config, self.device) if evaluates else None
        self.timers = dict.fromkeys(("env", "inference", "learn"), 0.0)
        self.metrics: list[dict[str, Any]] = []
        self.run_dir = Path(config.run_dir) if config.run_dir else None
        self._started = False

    # -- rollout ------------------------------------------------------------

    def _receive(self) -> ReceivedBatch:
        """The next batch from the vector env; records the outcomes (reward,
        terminal, truncation) of the steps its rows were taking."""
        start = time.perf_counter()
        obs, rewards, terminals, truncations, infos, row_ids, masks = self.vecenv.recv()
        self.timers["env"] += time.perf_counter() - start
        row_ids = np.asarray(row_ids, np.int64)
        masks = np.asarray(masks, bool)
        ended = terminals | truncations
        if self.reward_normalizer is not None:
            rewards = self.reward_normalizer(row_ids, rewards, ended, self.progress.acting[row_ids] | ended)

        positions, rows, steps, fold = self.progress.outcomes(row_ids)
        if positions is not None:
            rewards, terminals, truncations = rewards[positions], terminals[positions], truncations[positions]
        self.experience.record(rows, steps, rewards, terminals, truncations, fold)
        cut = truncations & ~terminals
        if cut.any():
            chosen = np.flatnonzero(cut)
            cut_rows, at = rows[chosen], steps[chosen]
            state = None
            if self.recurrent:  # each row's state after the step
                index = torch.from_numpy(cut_rows).to(self.device)
                state = (self.lstm_h[index], self.lstm_c[index])
            self.finals.keep(infos, chosen if positions is None else positions[chosen], cut_rows, at, state)

        self.episode_stats.add(infos, row_ids, ended, masks)
        starts = self.progress.observe(row_ids, ended, masks)
        # `obs` is a view that the next recv overwrites; the copy to the
        # device (or the clone a held CPU batch gets) keeps it.
        return ReceivedBatch(row_ids, self.to_device(obs, rows=True), starts, self.to_device(starts), masks)

    def _act(self, batch: ReceivedBatch) -> bool:
        """Runs the policy on ``batch``, stores the steps of rows still
        filling the experience, and sends the actions. Returns True, without
        sending, when this batch completes the rollout: it is then held
        and acted on by the next rollout's (updated) policy."""
        start = time.perf_counter()
        exp, row_ids = self.experience, batch.row_ids
        steps, store, finishing = self.progress.plan(row_ids, batch.masks)

        state: dict[str, Any] | None = None
        if self.recurrent:
            index = row_index(row_ids, self.device)
            h_in, c_in = self.lstm_h[index], self.lstm_c[index]
            state = {"lstm_h": h_in, "lstm_c": c_in, "episode_start": batch.starts_device}
        values, actions, logprobs = self.policy_step(batch.obs, state)

        if finishing.any():
            # The observation after the row's last stored step: its value
            # bootstraps GAE, computed by the policy that chose the steps.
            chosen = np.flatnonzero(finishing)
            exp.bootstrap[torch.from_numpy(row_ids[chosen]).to(self.device)] = values[
                torch.from_numpy(chosen).to(self.device)
            ].float()
            if self.progress.finish(row_ids[chosen]):
                if self.device.type == "cpu":  # still a view of the rows the next recv overwrites
                    batch.obs = batch.obs.clone()
                self.held = batch
                self.timers["inference"] += time.perf_counter() - start
                return True

        if self.recurrent:
            exp.keep_segment_starts(row_ids, steps, store, h_in, c_in, batch.starts_device)
            h, c = state["lstm_h"], state["lstm_c"]
            if not batch.masks.all():  # an agent's memory moves on its own steps only
                acting = torch.from_numpy(batch.masks).to(self.device).unsqueeze(-1)
                h, c = torch.where(acting, h, h_in), torch.where(acting, c, c_in)
            self.lstm_h[index], self.lstm_c[index] = h, c

        if store.any():
            rows, at = exp.store(batch, steps, store, actions, logprobs, values)
            self.progress.stored_steps(rows, at, batch.masks[store])
        env_actions = self.actions(actions)
        self.timers["inference"] += time.perf_counter() - start

        start = time.perf_counter()
        self.vecenv.send(env_actions)
        self.timers["env"] += time.perf_counter() - start
        return False

    def policy_step(
        self, observations: torch.Tensor, state: dict[str, Any] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values, actions, logprobs)`` of the rollout's rows
        ``observations``: the policy's forward and the draw of the actions."""
        logits, values = self.forward_eval(observations, state)
        actions, logprobs, _ = self.actor.sample(logits, observations)
        return values, actions, logprobs

    @torch.no_grad()
    def rollout(self) -> None:
        """Fills the experience buffer: ``horizon`` steps of every env."""
        if not self._started:
            self.vecenv.async_reset(self.env_seed)
            self._started = True
        self.progress.start()
        # The final observations of a rollout that stopped half-way are not this one's.
        self.finals.clear()
        self.policy.eval()
        while True:
            batch, self.held = (self.held, None) if self.held is not None else (self._receive(), None)
            if self._act(batch):
                break
        start = time.perf_counter()
        self.finals.value(self.experience, self.forward_eval)
        self.timers["inference"] += time.perf_counter() - start
        self.global_step += self.ranks.total(int(self.experience.host_masks.sum()))  # agent steps, every rank's

    # -- learning -----------------------------------------------------------

    def segments(self) -> tuple[int, int]:
        """``(count, length)`` of the training segments: ``bptt_horizon``
        steps for an LSTM, single steps (shuffled freely) otherwise."""
        length = self.config.bptt_horizon if self.recurrent else 1
        exp = self.experience
        return exp.rows * exp.horizon // length, length

    def evaluate_segments(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprobs, entropy, values)`` of the stored actions of the
        segments ``index`` under the current policy, flat over
        ``len(index) * length`` steps. An LSTM unrolls every segment from its
        stored start state, zeroing at the stored episode starts, through the
        steps where the row's agent acted: the rollout kept a masked row's
        memory as it was, so the masked steps (no loss) go after them."""
        exp = self.experience
        count, length = self.segments()
        obs = exp.obs.reshape(count, length, *self.obs_shape)[index]
        actions = exp.actions.reshape(count, length, *self.actions.shape)[index]
        order = None
        if self.recurrent:
            host_index = index.cpu()
            starts = exp.episode_starts.reshape(count, length)[host_index]
            order = exp.acting_first(length, host_index)
            if order is not None:
                starts, order = starts.gather(1, order), order.to(self.device)
                rows = torch.arange(len(index), device=self.device).unsqueeze(-1)
                obs, actions = obs[rows, order], actions[rows, order]
            h, c = exp.lstm_h.reshape(count, -1)[index], exp.lstm_c.reshape(count, -1)[index]
            logits, values = self.forward(obs, {"lstm_h": h, "lstm_c": c, "episode_start": starts})
        else:
            logits, values = self.forward(obs.reshape(-1, *self.obs_shape))
        _, logprobs, entropy = self.actor.sample(
            logits, obs.reshape(-1, *self.obs_shape), actions.reshape(-1, *self.actions.shape)
        )
        outputs = [x.reshape(len(index), length) for x in (logprobs, entropy, values)]
        if order is not None:  # back to time order
            outputs = [x.gather(1, order.argsort(dim=1)) for x in outputs]
        logprobs, entropy, values = (x.flatten() for x in outputs)
        return logprobs, entropy, values

    def minibatch_loss(
        self,
        index: torch.Tensor,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        adv: torch.Tensor,
        ret: torch.Tensor,
        steps_of: StepWeights,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss of one minibatch of segments, and its statistics
        (detached): clipped policy loss, value loss (clipped when
        ``vf_clip_coef`` is set), entropy bonus."""
        config = self.config
        logprobs, entropy, values = self.evaluate_segments(index)
        logratio = logprobs - old_logprobs
        ratio = logratio.exp()
        if config.norm_adv:
            adv = steps_of.normalize(adv)
        clipped_ratio = ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)
        pg_loss = steps_of.mean(torch.max(-adv * ratio, -adv * clipped_ratio))
        values = values.float()
        if config.vf_clip_coef > 0:
            clipped = old_values + (values - old_values).clamp(-config.vf_clip_coef, config.vf_clip_coef)
            v_loss = 0.5 * steps_of.mean(torch.max((values - ret) ** 2, (clipped - ret) ** 2))
        else:
            v_loss = 0.5 * steps_of.mean((values - ret) ** 2)
        entropy_loss = steps_of.mean(entropy)
        loss = pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss
        with torch.no_grad():
            stats = {
                "policy_loss": pg_loss.detach(),
                "value_loss": v_loss.detach(),
                "entropy": entropy_loss.detach(),
                "approx_kl": steps_of.mean((ratio - 1) - logratio),
                "clipfrac": steps_of.mean(((ratio - 1).abs() > config.clip_coef).float()),
            }
        return loss, stats

    def set_learning_rate(self, value: float) -> None:
        """Sets the optimizer's learning rate. Compiled, it is a tensor
        changed in place: dynamo specialises a compiled step on a float
        rate, so the first annealed rate compiled Adam's step a second time
        (two more graphs, about 0.6 s on Pendulum-v1)."""
        group = self.optimizer.param_groups[0]
        lr = group["lr"]
        if not self.compiles:
            group["lr"] = value
        elif isinstance(lr, torch.Tensor) and lr.device == self.device:
            lr.fill_(value)
        else:
            group["lr"] = torch.tensor(value, device=self.device)

    def clip_and_step(self) -> None:
        """The gradient-norm clip and Adam's step, under ``no_grad``.

        Adam's ``step`` is called unwrapped: ``Optimizer.step``'s wrapper
        breaks a compiled graph around the step (so that the step alone
        traces as an inference graph, which ``no_grad`` already gives) and
        runs step hooks, which the trainer registers none of. With the
        breaks, dynamo traced the fused gradient step twice in every process
        (InvertedPendulum-v5: 5.2 s of a filled cache's compile, now 2.7;
        an update 0.14 s, now 0.12)."""
        with torch.no_grad():
            nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
            _ADAM_STEP(self.optimizer)

    def gradient_step(
        self, index: torch.Tensor, flat: dict[str, torch.Tensor], steps_of: StepWeights
    ) -> dict[str, torch.Tensor]:
        """One gradient step on the minibatch of segments ``index`` (``flat``:
        the update's per-step tensors, shaped ``(segments, length)``), by
        autograd's backward; returns the loss statistics."""
        loss, stats = self.minibatch_loss(index, *self.minibatch_of(flat, index), steps_of)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.ranks.average_gradients(self.parameters)
        self.clip_and_step()
        return stats

    def fused_gradient_step(
        self, index: torch.Tensor, flat: dict[str, torch.Tensor], steps_of: StepWeights
    ) -> dict[str, torch.Tensor]:
        """:meth:`gradient_step` with the gradients from ``torch.func.grad``
        (:class:`~pufferrs.compiling.LossGradients`), without autograd's
        engine, so that torch.compile takes the minibatch's gathers, the
        loss, its gradients, the clip and Adam's step as one graph. One
        process only: no collective averages the gradients. The gradients
        are copied into the ``.grad`` buffers the trainer made, not bound to
        them: dynamo breaks the graph before Adam makes its state when a
        parameter's attribute changed in it."""
        grads, stats = self.loss_gradients(index, *self.minibatch_of(flat, index), steps_of)
        with torch.no_grad():
            for p, grad in zip(self.parameters, grads, strict=True):
                p.grad.copy_(grad)
        self.clip_and_step()
        return stats

    @staticmethod
    def minibatch_of(flat: dict[str, torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
        """The stored ``logprobs, values, advantages, returns`` of the
        segments ``index``, flat over their steps."""
        return [flat[k][index].reshape(-1) for k in ("logprobs", "values", "advantages", "returns")]

    def learn(self) -> dict[str, float]:
        """One PPO update on the experience buffer; returns the losses."""
        start = time.perf_counter()
        config, exp = self.config, self.experience
        self.policy.train()
        # Where agents acted, as loss weights; None when every step acted
        # (single-agent envs), which computes exactly the plain means.
        acted = None if exp.host_masks.all() else exp.masks.to(self.device, torch.float32)
        with torch.no_grad():
            advantages = compute_advantages(
                exp.values,
                exp.bootstrap,
                exp.rewards,
                exp.terminals,
                exp.truncations,
                config.gamma,
                config.gae_lambda,
                final_values=exp.final_values,
                masks=None if acted is None else exp.masks,
            )
            returns = advantages + exp.values
        count, length = self.segments()
        stored = {"logprobs": exp.logprobs, "values": exp.values, "advantages": advantages, "returns": returns}
        flat = {k: v.reshape(count, length) for k, v in stored.items()}
        weights = None if acted is None else acted.reshape(count, length)
        # A minibatch's StepWeights (statistics across ranks under torchrun).
        minibatch = self.ranks.minibatches(flat["advantages"], weights)
        # As many minibatches as for one agent, each holding every row's steps.
        per_minibatch = count // (config.batch_size // config.minibatch_size)
        totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        steps = 0
        for _ in range(config.update_epochs):
            order = torch.randperm(count, generator=self.shuffle).to(self.device)
            for index in order.split(per_minibatch):
                stats = self.gradient_step(index, flat, minibatch(index))
                for key, value in stats.items():
                    totals[key] += value
                steps += 1
        if self.normalizer is not None:
            # After the epochs that learn from this rollout, so that the
            # rollout and its training passes normalised alike.
            obs = exp.obs if acted is None else exp.obs[exp.masks.to(self.device)]
            self.ranks.update_normalizer(self.normalizer, obs)
        # One read back to the host per update, not one per minibatch.
        losses = {k: v.item() / steps for k, v in totals.items()}
        with torch.no_grad():
            ret, val = (returns, exp.values) if acted is None else (returns[acted > 0], exp.values[acted > 0])
            var = ret.var()
            losses["explained_variance"] = float("nan") if var == 0 else (1 - (ret - val).var() / var).item()
        self.timers["learn"] += time.perf_counter() - start
        return self.ranks.mean_metrics(losses)

    # -- the loop -------------------------------------------------------------

    def train(self, on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Runs ``config.num_updates`` updates, calling ``on_update(metrics)``
        after each; returns a summary. Writes the run directory if set."""
        config = self.config
        run = None
        if self.run_dir is not None and self.ranks.is_main:
            # A trainer that has updates behind it (load_state_dict) continues its run's files.
            run = RunDirectory(self.run_dir, config, self.save_checkpoint, continue_at=self.update)
            self.metrics = run.metrics
        started = time.perf_counter() - self.elapsed
        try:
            while self.update < config.num_updates:
                self.update += 1
                if config.anneal_lr:
                    frac = 1.0 - (self.update - 1) / config.num_updates
                    self.set_learning_rate(frac * config.learning_rate)
                self.rollout()
                losses = self.learn()
                self.elapsed = time.perf_counter() - started
                row = self._metrics(losses, self.elapsed)
                if self.evaluation is not None:
                    row.update(self.evaluation(self.policy, self.update))
                warning = self.learning_check(row)
                if warning is not None:
                    row["warning"] = warning
                self.metrics.append(row)
                if run is not None:
                    run.record(row)
                if on_update is not None:
                    on_update(row)
                self.ranks.check_stop()  # a signal to any rank stops every rank here
        except KeyboardInterrupt:
            # Stopped by hand: what was learned so far is still saved, counted
            # in the updates that finished (the one under way did not).
            self.update = self.metrics[-1]["update"] if self.metrics else 0
            self._finish(run, time.perf_counter() - started)
            raise
        else:
            return self._finish(run, time.perf_counter() - started)
        finally:
            if run is not None:
                run.close()

    def _metrics(self, losses: dict[str, float], elapsed: float) -> dict[str, Any]:
        """The update's row of ``metrics.jsonl``."""
        row: dict[str, Any] = {
            "update": self.update,
            "global_step": self.global_step,
            "time": round(elapsed, 3),
            "sps": self.global_step / elapsed if elapsed > 0 else 0.0,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
        }
        row.update(self.ranks.episode_metrics(self.episode_stats))
        row.update({f"losses/{k}": v for k, v in losses.items()})
        row.update({f"perf/{k}": round(v, 4) for k, v in self.timers.items()})
        return row

    def _finish(self, run: RunDirectory | None, elapsed: float) -> dict[str, Any]:
        summary = summarize(self.config.env, self.metrics, self.update, self.global_step, self.timers, elapsed)
        return run.finish(summary, self.metrics) if run is not None else summary

    def save_checkpoint(self, path: str | Path) -> Path:
        """Writes :meth:`state_dict` with the config
        (:func:`~pufferrs.checkpoints.save_checkpoint`)."""
        return save_checkpoint(path, self.state_dict(), self.config)

    # -- resuming (pufferrs.resume) -----------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What continuing this run needs, as tensors and plain data: the
        policy (``state_dict``), the optimizer, the reward normaliser's
        statistics, the progress (which places the learning-rate
        schedule), the random generators' states and the env's spaces."""
        return {
            "state_dict": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
            "update": self.update,
            "global_step": self.global_step,
            "elapsed": self.elapsed,
            "timers": dict(self.timers),
            "rng": rng_state(),
            "spaces": describe_spaces(self.vecenv),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state_dict` (a checkpoint): the next
        :meth:`train` runs the updates after ``state["update"]`` and appends
        to the run directory. The envs are reset when the next rollout
        starts, with seeds past the ones used so far
        (:func:`~pufferrs.resume.resumed_env_seed`). Call it before
        training; the random generators are set last, so that nothing in
        between draws from them. Raises :class:`CheckpointError` when the
        checkpoint's env or policy differ from this trainer's."""
        if self._started:
            raise ConfigError("load_state_dict continues a run: call it before the trainer has stepped its envs")
        check_spaces_fit(state.get("spaces"), self.vecenv)
        check_policy_fits(state["state_dict"], self.policy)
        stored_rewards = state.get("reward_normalizer")
        if (stored_rewards is None) != (self.reward_normalizer is None):
            had = "normalised" if stored_rewards is not None else "did not normalise"
            raise CheckpointError(f"the checkpoint's run {had} rewards: resume with the same normalize_rewards")
        self.policy.load_state_dict(state["state_dict"])
        if "optimizer" in state:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"the checkpoint's optimizer state does not fit this policy: {exc}") from None
            # In this trainer's form (the checkpoint may come from a run
            # compiled or not).
            self.set_learning_rate(float(self.optimizer.param_groups[0]["lr"]))
        if self.reward_normalizer is not None:
            self.reward_normalizer.load_state_dict(stored_rewards)
        self.update, self.global_step = int(state["update"]), int(state["global_step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.timers.update(state.get("timers", {}))
        self.env_seed = resumed_env_seed(self.config.seed, self.update, self.config.num_envs) + self.env_offset
        if "rng" in state:
            set_rng_state(state["rng"])
        # Under torchrun, the checkpoint holds rank 0's generators: the others draw anew.
        self.shuffle = self.ranks.resumed(self.config.seed, self.update)

    def close(self) -> None:
        self.vecenv.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
