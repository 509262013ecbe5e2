"""Built-in environments: small, fast gymnasium envs that test a trainer.

Importing this module registers them with gymnasium:

- ``pufferrs/Memory-v0`` (:class:`Memory`): a cue shown at the first step
  must be recalled several steps later. Only a policy with memory (an LSTM)
  solves it; a feed-forward policy is left at chance.
- ``pufferrs/Nested-v0`` (:class:`Nested`): a nested ``Dict``/``Tuple``
  observation (a uint8 image, float vectors, ``Discrete`` and
  ``MultiDiscrete`` leaves) with a ``MultiDiscrete`` action whose reward
  needs several leaves read correctly. A policy that unflattens rows wrong
  cannot learn it.

And envs written in Rust (:mod:`pufferrs.native`), which pufferrs's
vector envs step natively, with no Python per env:

- ``pufferrs/CartPole-rs``: gymnasium ``CartPole-v1``'s dynamics (500
  steps at most).
- ``pufferrs/Nested-rs``: four questions about the leaves of a nested
  observation (an image, a grid of codes, a ``Tuple`` and a string).
- ``pufferrs/Rendezvous-rs``: the multi-agent :class:`Rendezvous
  <pufferrs.multiagent_envs.Rendezvous>` game with action masks; agents
  leave early.

``Memory`` and ``Nested`` put ``success`` (and ``Nested`` also ``score``) into the info of an
episode's last step, which the trainer (:mod:`pufferrs.ppo`) reports per update.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np

from pufferrs.native import NATIVE_ENVS, register_ids

__all__ = ["Memory", "Nested"]


class Memory(gym.Env):
    """Remember a cue: one of ``num_cues`` symbols is shown at step 0, then
    ``delay`` steps of blank observations follow, the last of which raises
    a query flag. The action taken at the query step must name the cue.

    Observation: ``Box(0, 1, (num_cues + 1,), float32)``: the cue one-hot at
    step 0, zeros in between, and the query flag (last element) at the
    final step. Action: ``Discrete(num_cues)``; only the one at the query
    step matters. Reward: 1 for the right cue at the query step, else 0.
    The episode terminates after the query, ``delay + 1`` steps in all.

    Nothing in the query observation depends on the cue, so a policy
    without memory succeeds with probability ``1 / num_cues`` at best.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, num_cues: int = 2, delay: int = 5):
        if num_cues < 2:
            raise ValueError(f"num_cues must be at least 2, got {num_cues}")
        if delay < 1:
            raise ValueError(f"delay must be at least 1, got {delay}")
        self.num_cues = num_cues
        self.delay = delay
        self.observation_space = gs.Box(0.0, 1.0, (num_cues + 1,), np.float32)
        self.action_space = gs.Discrete(num_cues)
        self._cue = 0
        self._step = 0

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.num_cues + 1, np.float32)
        if self._step == 0:
            obs[self._cue] = 1.0
        if self._step == self.delay:
            obs[-1] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.num_cues))
        self._step = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._step < self.delay:
            self._step += 1
            return self._observation(), 0.0, False, False, {}
        correct = int(action) == self._cue
        # The episode is over; the observation returned is never acted on.
        return self._observation(), float(correct), True, False, {"success": float(correct)}


class Nested(gym.Env):
    """Answer three questions, each about different leaves of a nested
    observation, with one ``MultiDiscrete([4, 4, 2])`` action per step.

    Observation (new and independent at every step)::

        Dict(
            image=Box(0, 255, (3, 8, 8), uint8),  # noise below 64, one bright 4x4 quadrant
            vector=Box(-1, 1, (6,), float32),
            inventory=Dict(items=MultiDiscrete([4, 4, 4, 4]), gold=Discrete(10)),
            query=Tuple((Discrete(4), Box(-1, 1, (2,), float32))),
        )

    The right action is ``[quadrant, items[slot], vector.sum() > 0]``:
    which quadrant of the image is bright (uint8 leaf), the item in the
    slot that ``query[0]`` names (a ``Discrete`` indexing a
    ``MultiDiscrete``, across two branches of the tree), and the sign of
    the float vector. ``gold`` and ``query[1]`` are distractors. The
    reward is the fraction of the three answers that are right, so a
    random policy scores about 1/3 per step and a perfect one 1. An
    episode is ``length`` steps; its last info holds ``score`` (mean reward
    per step) and ``success`` (fraction of steps with all three right).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 16):
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        self.length = length
        self.observation_space = gs.Dict(
            image=gs.Box(0, 255, (3, 8, 8), np.uint8),
            vector=gs.Box(-1.0, 1.0, (6,), np.float32),
            inventory=gs.Dict(items=gs.MultiDiscrete([4, 4, 4, 4]), gold=gs.Discrete(10)),
            query=gs.Tuple((gs.Discrete(4), gs.Box(-1.0, 1.0, (2,), np.float32))),
        )
        self.action_space = gs.MultiDiscrete([4, 4, 2])
        self._answer = np.zeros(3, np.int64)
        self._obs: dict[str, Any] = {}
        self._step = 0
        self._reward = 0.0
        self._solved = 0

    def _new_observation(self) -> dict[str, Any]:
        rng = self.np_random
        image = rng.integers(0, 64, (3, 8, 8), dtype=np.uint8)
        quadrant = int(rng.integers(4))
        row, col = divmod(quadrant, 2)
        image[int(rng.integers(3)), 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 255
        vector = rng.uniform(-1, 1, 6).astype(np.float32)
        items = rng.integers(0, 4, 4, dtype=np.int64)
        slot = int(rng.integers(4))
        self._answer = np.array([quadrant, items[slot], int(vector.sum() > 0)], np.int64)
        return {
            "image": image,
            "vector": vector,
            "inventory": {"items": items, "gold": np.int64(rng.integers(10))},
            "query": (np.int64(slot), rng.uniform(-1, 1, 2).astype(np.float32)),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._step, self._reward, self._solved = 0, 0.0, 0
        self._obs = self._new_observation()
        return self._obs, {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        right = np.asarray(action).reshape(3) == self._answer
        reward = float(right.mean())
        self._step += 1
        self._reward += reward
        self._solved += int(right.all())
        done = self._step >= self.length
        info = {"score": self._reward / self._step, "success": self._solved / self._step} if done else {}
        self._obs = self._new_observation()
        return self._obs, reward, done, False, info


def _register() -> None:
    for env_id, entry_point in (("pufferrs/Memory-v0", Memory), ("pufferrs/Nested-v0", Nested)):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point)
    register_ids(NATIVE_ENVS)


_register()
