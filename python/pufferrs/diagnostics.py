"""Signs that a training run is not learning, said once, in one line.

A PPO run that does not learn usually shows it in its losses within a few
updates, long before its returns would convince anyone:

- **the policy does not move**: the approximate KL divergence between the
  policy that collected a rollout and the one trained on it stays near 0,
  no ratio is clipped, and the entropy stays where it started. The
  gradient steps are too few or too small for the loss's scale (a learning
  rate too low, gradients shrunk by the norm clip because a large value
  loss shares them);
- **the value loss dwarfs everything**: returns in the hundreds give value
  losses in the thousands, and when the value and the policy share
  gradients (one trunk, one norm clip) the policy's part is lost: the
  policy moves, but barely (a small KL), while the weighted value loss is
  a thousand times the policy's.

:class:`LearningCheck` is fed every update's metrics row and returns the
warning the first time one of these holds, naming the likely cause and the
options to try; the trainer puts it in the row (``warning``) for the
display and ``metrics.jsonl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pufferrs.config import Config

__all__ = ["LearningCheck"]

#: Below these, over the updates watched, the policy has not moved.
STILL_KL = 1e-5
STILL_CLIPFRAC = 1e-3
#: Entropy that changed by less than this fraction of its first value is flat.
FLAT_ENTROPY = 0.01
#: A weighted value loss this many times the policy's loss swamps it,
#: when the policy moves this little (KL) at the same time.
DWARFING = 1000.0
SLOW_KL = 1e-4


class LearningCheck:
    """Watches updates ``after`` onwards (the first few are noisy); returns
    at most one warning in a run."""

    def __init__(self, config: Config, after: int = 5):
        self.config = config
        self.after = after
        self.first_entropy: float | None = None
        self.warned = False

    def __call__(self, row: dict[str, Any]) -> str | None:
        losses = {k.removeprefix("losses/"): v for k, v in row.items() if k.startswith("losses/")}
        if self.first_entropy is None:
            self.first_entropy = losses.get("entropy")
        if self.warned or row["update"] < self.after or not losses:
            return None
        message = self._still(losses) or self._dwarfed(losses)
        self.warned = message is not None
        return message

    def _still(self, losses: dict[str, float]) -> str | None:
        kl, clipfrac, entropy = losses["approx_kl"], losses["clipfrac"], losses["entropy"]
        first = self.first_entropy if self.first_entropy is not None else entropy
        flat = abs(entropy - first) <= FLAT_ENTROPY * max(abs(first), 1e-8)
        if not (abs(kl) < STILL_KL and clipfrac < STILL_CLIPFRAC and flat):
            return None
        config = self.config
        tries = [f"a higher --learning-rate (now {config.learning_rate:g})"]
        if config.minibatch_size > 64:
            tries.append(f"a smaller --minibatch-size (now {config.minibatch_size}: more gradient steps)")
        if not config.normalize_rewards:
            tries.append("--normalize-rewards")
        if not config.normalize_observations:
            tries.append("--normalize-observations (float observations)")
        return (
            f"the policy is not moving after {self.after} updates (approx_kl {kl:.1e}, clipfrac {clipfrac:.3f}, "
            f"entropy flat at {entropy:.3g}): try {', '.join(tries)}"
        )

    def _dwarfed(self, losses: dict[str, float]) -> str | None:
        config = self.config
        value = config.vf_coef * losses["value_loss"]
        policy = abs(losses["policy_loss"]) + config.ent_coef * abs(losses["entropy"])
        if config.normalize_rewards or losses["approx_kl"] >= SLOW_KL or value <= DWARFING * max(policy, 1e-8):
            return None
        return (
            f"the value loss ({losses['value_loss']:.3g}) dwarfs the policy loss ({losses['policy_loss']:.2g}): "
            "rewards of this scale swamp the gradients the policy shares with the value; "
            "try --normalize-rewards (or a lower --vf-coef)"
        )
