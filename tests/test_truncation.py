"""Episode ends: the vector envs hand out the ended episode's last
observation (``final_obs``) and info (``final_info``) for every backend and
for asynchronous batches; ``FlattenObservation`` keeps them right under
gymnasium's own vector env; and the trainer bootstraps truncated steps from
the value of their final observation, so that a time-limited env's learned
values are the right ones."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch

import pufferrs.vector as pv
from pufferrs import Layout
from pufferrs.emulation import FlattenObservation
from pufferrs.train import Config, Trainer, apply_process_settings

# One torch thread for every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EndsBoth(gym.Env):
    """Nested observations from the env's seeded RNG; an episode terminates
    at random and is truncated by its own time limit of 5 steps (both at
    once sometimes). The info of an ending step names the step."""

    def __init__(self) -> None:
        self.observation_space = gs.Dict(
            pos=gs.Box(-1, 1, (3,), np.float32), tag=gs.Tuple((gs.Discrete(50), gs.MultiBinary(2)))
        )
        self.action_space = gs.Discrete(3)

    def _obs(self) -> dict:
        rng = self.np_random
        return {"pos": rng.uniform(-1, 1, 3).astype(np.float32), "tag": (int(rng.integers(50)), rng.integers(0, 2, 2))}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        terminated = bool(self.np_random.random() < 0.2)
        truncated = self.t >= 5
        info = {"ended_at": self.t} if terminated or truncated else {}
        return self._obs(), float(action), terminated, truncated, info


def action_of(env: int, k: int) -> int:
    return (3 * env + k) % 3


def reference_ends(env: int, seed: int, steps: int) -> list[tuple[int, bytes, dict, bool, bool]]:
    """``(step, final row, info, terminated, truncated)`` of every episode
    end of a standalone env, reset after each end as the vector envs do."""
    instance, layout = EndsBoth(), Layout(EndsBoth().observation_space)
    instance.reset(seed=seed + env)
    ends = []
    for k in range(steps):
        obs, _, terminated, truncated, info = instance.step(action_of(env, k))
        if terminated or truncated:
            ends.append((k, layout.flatten(obs).tobytes(), info, terminated, truncated))
            instance.reset()
    return ends


@pytest.mark.parametrize(
    "backend, num_workers, batch_size",
    [
        ("serial", None, None),
        ("serial", None, 2),
        ("multiprocessing", 2, None),
        ("multiprocessing", 4, 2),  # asynchronous batches, gathered from any two workers
    ],
    ids=["serial", "serial-batches", "multiprocessing", "multiprocessing-async"],
)
def test_final_obs_and_info_are_those_of_the_ended_episode(
    backend: str, num_workers: int | None, batch_size: int | None
) -> None:
    seed, steps = 7, 24
    seen: dict[int, list] = {e: [] for e in range(4)}
    taken = dict.fromkeys(range(4), 0)
    with pv.make(EndsBoth, 4, backend, num_workers=num_workers, batch_size=batch_size, seed=seed) as envs:
        envs.async_reset()
        *_, env_ids, _ = envs.recv()
        in_flight: dict[int, int] = {}  # env -> the step it is taking
        while min(taken.values()) < steps:
            envs.send(np.array([action_of(e, taken[e]) for e in env_ids]))
            in_flight.update((e, taken[e]) for e in env_ids)
            obs, _, terminals, truncations, infos, env_ids, _ = envs.recv()
            for k, env in enumerate(env_ids.tolist()):
                if env not in in_flight:
                    continue  # its first observation, from the reset
                step = in_flight.pop(env)
                taken[env] = step + 1
                info = infos[k]
                assert ("final_obs" in info) == bool(terminals[k] or truncations[k])
                if "final_obs" in info:
                    assert info["final_obs"].shape == obs[k].shape and info["final_obs"].dtype == obs[k].dtype
                    final = (step, info["final_obs"].tobytes(), info["final_info"], terminals[k], truncations[k])
                    seen[env].append(final)
    for env, ends in seen.items():
        expected = reference_ends(env, seed, taken[env])
        assert len(expected) > 3 and any(e[3] for e in expected) and any(e[4] for e in expected)
        assert ends == expected


def test_backends_hand_out_the_same_final_rows() -> None:
    rows = {}
    for backend in ("serial", "multiprocessing"):
        with pv.make(EndsBoth, 4, backend, num_workers=2, seed=3) as envs:
            envs.reset()
            got = []
            for k in range(12):
                infos = envs.step(np.array([action_of(e, k) for e in range(4)]))[4]
                got.append([info["final_obs"].tobytes() if "final_obs" in info else None for info in infos])
            rows[backend] = got
    assert rows["serial"] == rows["multiprocessing"]
    assert any(row is not None for step in rows["serial"] for row in step)


def test_flatten_observation_under_gymnasiums_same_step_autoreset() -> None:
    """gymnasium's SyncVectorEnv resets an env right after the step that
    ended its episode and keeps the observation it returned as final_obs:
    a row the reset reused would hold the next episode's first one."""
    seed, steps = 5, 30
    mode = gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv([lambda: FlattenObservation(EndsBoth())] * 4, autoreset_mode=mode)
    envs.reset(seed=seed)
    seen: dict[int, list] = {e: [] for e in range(4)}
    for k in range(steps):
        _, _, terminals, truncations, infos = envs.step(np.array([action_of(e, k) for e in range(4)]))
        for env in np.flatnonzero(terminals | truncations).tolist():
            assert infos["_final_obs"][env]
            # gymnasium batches the final infos too: one array per key.
            info = {"ended_at": int(infos["final_info"]["ended_at"][env])}
            seen[env].append((k, infos["final_obs"][env].tobytes(), info, terminals[env], truncations[env]))
    envs.close()
    for env, ends in seen.items():
        assert ends == reference_ends(env, seed, steps)


# ---------------------------------------------------------------------------
# The trainer


T = 8  # the time limit


class Clock(gym.Env):
    """Observes the time since reset modulo the time limit, one-hot; the
    reward is 1 per step, or 0 at the step taken in the last state when
    ``zero_at_limit``. With a time limit of ``T`` the final observation of
    every episode is the first one's, state 0."""

    def __init__(self, zero_at_limit: bool = False) -> None:
        self.observation_space = gs.Box(0, 1, (T,), np.float32)
        self.action_space = gs.Discrete(2)
        self.zero_at_limit = zero_at_limit

    def _obs(self) -> np.ndarray:
        obs = np.zeros(T, np.float32)
        obs[self.t % T] = 1
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = 0.0 if self.zero_at_limit and self.t % T == T - 1 else 1.0
        self.t += 1
        return self._obs(), reward, False, False, {}


def time_limited(zero_at_limit: bool = False) -> gym.Env:
    return gym.wrappers.TimeLimit(Clock(zero_at_limit), T)


class WithoutFinalObs:
    """A vector env that gives no final observations, as before them: the
    trainer then bootstraps a truncated step from its own value."""

    def __init__(self, vecenv: Any) -> None:
        self.vecenv = vecenv

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vecenv, name)

    def recv(self) -> tuple:
        *head, infos, env_ids, masks = self.vecenv.recv()
        return (*head, [{k: v for k, v in info.items() if k != "final_obs"} for info in infos], env_ids, masks)


def clock_config(updates: int = 1, **overrides: Any) -> Config:
    values = dict(
        env="CartPole-v1",  # unused: the tests pass their vector env
        num_envs=4,
        batch_size=4 * 4 * T,
        minibatch_size=32,
        total_steps=4 * 4 * T * updates,
        gamma=0.9,
        gae_lambda=1.0,
        vf_clip_coef=0.0,
        learning_rate=0.01,
        anneal_lr=False,
        hidden_size=16,
        seed=0,
        device="cpu",
        checkpoint_interval=0,
        torch_threads=1,
    )
    values.update(overrides)
    return Config(**values)


@pytest.mark.parametrize(
    "backend, env_batch_size",
    [("serial", None), ("multiprocessing", None), ("multiprocessing", 2)],
    ids=["serial", "multiprocessing", "multiprocessing-async"],
)
def test_truncated_steps_bootstrap_from_the_value_of_their_final_observation(
    backend: str, env_batch_size: int | None
) -> None:
    config = clock_config(backend=backend, env_batch_size=env_batch_size)
    vecenv = pv.make(
        time_limited, 4, backend, num_workers=4 if backend != "serial" else None, batch_size=env_batch_size
    )
    with Trainer(config, vecenv=vecenv) as trainer:
        trainer.rollout()
        exp = trainer.experience
        truncated = exp.truncations.numpy()
        assert truncated.sum() >= 4 * 3
        with torch.no_grad():
            _, values = trainer.policy.forward_eval(torch.eye(T))
        # Every final observation is state 0; elsewhere final_values are the
        # steps' own values.
        np.testing.assert_array_equal(exp.final_values[truncated].numpy(), np.full(truncated.sum(), values[0].item()))
        np.testing.assert_array_equal(exp.final_values[~truncated].numpy(), exp.values[~truncated].numpy())


def test_a_recurrent_policy_values_final_observations_from_the_state_after_the_step() -> None:
    config = clock_config(lstm=True, bptt_horizon=T)
    with Trainer(config, vecenv=pv.make(time_limited, 4, seed=0)) as trainer:
        trainer.rollout()
        exp = trainer.experience
        policy = trainer.policy
        checked = 0
        with torch.no_grad():
            for i in range(4):
                # Replay env i's rollout through the LSTM from its first
                # segment's stored state, step by step.
                state = {"lstm_h": exp.lstm_h[i, :1], "lstm_c": exp.lstm_c[i, :1]}
                for t in range(exp.horizon):
                    state["episode_start"] = exp.episode_starts[i, t : t + 1]
                    policy.forward_eval(exp.obs[i, t : t + 1], state)
                    if exp.truncations[i, t]:
                        after = {"lstm_h": state["lstm_h"], "lstm_c": state["lstm_c"]}
                        _, value = policy.forward_eval(torch.eye(T)[:1], after)
                        torch.testing.assert_close(exp.final_values[i, t], value[0].float())
                        # Not the value a fresh state would give: the state matters.
                        _, fresh = policy.forward_eval(torch.eye(T)[:1])
                        assert not torch.isclose(value[0], fresh[0])
                        checked += 1
        assert checked >= 4 * 3


def test_a_vector_env_without_final_obs_gets_a_warning_and_the_old_bootstrap() -> None:
    with Trainer(clock_config(), vecenv=WithoutFinalObs(pv.make(time_limited, 4))) as trainer:
        with pytest.warns(UserWarning, match="no 'final_obs'"):
            trainer.rollout()
        exp = trainer.experience
        np.testing.assert_array_equal(exp.final_values.numpy(), exp.values.numpy())


def learned_values(zero_at_limit: bool, final_obs: bool, updates: int = 20) -> np.ndarray:
    config = clock_config(updates)
    apply_process_settings(config)
    vecenv = pv.make(time_limited, 4, env_kwargs={"zero_at_limit": zero_at_limit})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning of WithoutFinalObs
        with Trainer(config, vecenv=vecenv if final_obs else WithoutFinalObs(vecenv)) as trainer:
            trainer.train()
            with torch.no_grad():
                return trainer.policy.forward_eval(torch.eye(T))[1].reshape(-1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("zero_at_limit", [False, True], ids=["constant-reward", "no-reward-at-the-limit"])
def test_learned_values_of_a_time_limited_env_are_the_true_ones(zero_at_limit: bool) -> None:
    """The time limit is not part of the task: the true value of state k is
    the discounted sum of the rewards of k, k + 1, ... forever, r / (1 -
    gamma) = 10 for a constant reward of 1.

    Tolerance: with lambda = 1 a state's target is the discounted rewards
    to the end of its episode plus gamma^(T - k) times the value of state 0
    (the final observation), so the targets' error shrinks by gamma^T = 0.43
    per update: after 20 updates it is 1e-6 of the values, and what is left
    is the network's fit of the targets, within 0.15 here. 0.3 is twice
    that, and a fifth of what bootstrapping from V(s_t) leaves behind.

    With a constant reward that older bootstrap has the same fixed point
    (V(s_t) = V(s_final) there), but the last state learns only through its
    own value, by a factor of gamma per update instead of gamma^T: after the
    same 20 updates it is off by more than 1. Where the last step's reward
    differs, its fixed point is wrong: V(last) -> r_last / (1 - gamma) = 0
    instead of 8.2.
    """
    gamma = 0.9
    rewards = np.array([0.0 if zero_at_limit and k == T - 1 else 1.0 for k in range(T)])
    true = np.array([sum(gamma**j * rewards[(k + j) % T] for j in range(400)) for k in range(T)])
    learned = learned_values(zero_at_limit, final_obs=True)
    np.testing.assert_allclose(learned, true, atol=0.3)
    old = learned_values(zero_at_limit, final_obs=False)
    assert abs(old[T - 1] - true[T - 1]) > 1.0
