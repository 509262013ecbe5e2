"""Episode statistics (pufferrs.episodes): the rules that turn an episode's
step infos into its numbers, the trainer's use of them, the progress line
and the summary's mean return."""

from __future__ import annotations

import numpy as np
import pytest

from pufferrs.episodes import EpisodeStats, default_rule, family_of, parse_info_metrics
from pufferrs.errors import ConfigError
from pufferrs.progress import PlainProgress
from pufferrs.run_directory import summarize


def ended_info(step: dict, ret: float, length: int) -> dict:
    """The info the vector env gives at an episode's last step."""
    return {**step, "episode_return": ret, "episode_length": length, "final_obs": np.zeros(3), "final_info": step}


def feed(stats: EpisodeStats, rows: list[int], steps: list[list[dict | None]], ends: set[tuple[int, int]]) -> None:
    """Feeds ``steps[t][k]`` (row ``rows[k]``'s info at step t; None: empty),
    ending row k's episode at step t where ``(t, k)`` is in ``ends``."""
    for t, infos in enumerate(steps):
        ended = np.array([(t, k) in ends for k in range(len(rows))])
        filled = [dict(info) if info else {} for info in infos]
        stats.add(filled, np.array(rows), ended, np.ones(len(rows), bool))


def test_default_rules_by_key_name() -> None:
    assert default_rule("reward_ctrl") == "sum"
    assert default_rule("collision_reward") == "sum"
    assert default_rule("rewards/collision_reward") == "sum"  # by the last part
    assert default_rule("episode_reward") == "last"  # an episode's total already
    assert default_rule("x_velocity") == "mean"
    assert default_rule("distance_from_origin") == "mean"
    assert default_rule("episode_frame_number") == "none"
    assert default_rule("frame_number") == "none"
    assert default_rule("lives") == "none"
    assert default_rule("success") == "last"
    assert default_rule("game_return") == "last"
    assert default_rule("episode_return") == "last"


def test_sum_mean_last_none_over_an_episode() -> None:
    stats = EpisodeStats("Custom-v0")
    steps = [
        {"reward_ctrl": -1.0, "x_velocity": 2.0, "success": False, "frame_number": 10},
        {"reward_ctrl": -2.0, "x_velocity": 4.0, "success": False, "frame_number": 11},
    ]
    last = {"reward_ctrl": -3.0, "x_velocity": 6.0, "success": True, "frame_number": 12}
    feed(stats, [0], [[steps[0]], [steps[1]], [ended_info(last, 5.0, 3)]], {(2, 0)})
    row = stats.take()
    assert row["env/reward_ctrl"] == pytest.approx(-6.0)  # sum of the 3 steps
    assert row["env/x_velocity"] == pytest.approx(4.0)  # mean of the 3 steps
    assert row["env/success"] == 1.0  # last
    assert "env/frame_number" not in row  # none
    assert row["env/episode_return"] == 5.0 and row["env/episode_length"] == 3.0
    assert row["env/episodes"] == 1
    assert not any(k.startswith("episodes/") for k in row)
    assert not any("final" in k for k in row)


def test_accumulation_restarts_with_each_episode_and_per_row() -> None:
    stats = EpisodeStats()
    r = {"reward_a": 1.0}
    # Row 7 ends at steps 1 and 3; row 3 runs on, ending at step 3.
    steps = [
        [r, r],
        [ended_info(r, 2.0, 2), r],
        [r, r],
        [ended_info(r, 2.0, 2), ended_info(r, 4.0, 4)],
    ]
    feed(stats, [7, 3], steps, {(1, 0), (3, 0), (3, 1)})
    row = stats.take()
    assert row["env/episodes"] == 3
    # Row 7: 2 and 2; row 3: 4.
    assert row["env/reward_a"] == pytest.approx((2 + 2 + 4) / 3)
    assert stats.running == {}
    assert stats.take() == {"env/episodes": 0}  # the next update starts empty


def test_empty_infos_touch_nothing() -> None:
    """CartPole: every info is empty but at an episode's end."""
    stats = EpisodeStats("CartPole-v1")
    feed(stats, [0, 1], [[None, None], [None, ended_info({}, 9.0, 9)], [None, None]], {(1, 1)})
    assert stats.running == {}
    assert stats.take() == {"env/episode_return": 9.0, "env/episode_length": 9.0, "env/episodes": 1}


def test_nested_infos_by_flattened_key() -> None:
    stats = EpisodeStats()
    step = {"rewards": {"collision_reward": 0.5, "speed": 3.0}}
    feed(stats, [0], [[step], [ended_info(step, 1.0, 2)]], {(1, 0)})
    row = stats.take()
    assert row["env/rewards/collision_reward"] == pytest.approx(1.0)
    assert row["env/rewards/speed"] == 3.0


def test_user_rules_override_family_and_default() -> None:
    stats = EpisodeStats("HalfCheetah-v5", " x_velocity=last, reward_ctrl=none,custom=sum,env/lives=mean ")
    steps = [{"x_velocity": 1.0, "reward_ctrl": -1.0, "custom": 2.0, "lives": 3}]
    last = {"x_velocity": 5.0, "reward_ctrl": -1.0, "custom": 2.0, "lives": 1}
    feed(stats, [0], [steps, [ended_info(last, 0.0, 2)]], {(1, 0)})
    row = stats.take()
    assert row["env/x_velocity"] == 5.0
    assert "env/reward_ctrl" not in row
    assert row["env/custom"] == 4.0
    assert row["env/lives"] == 2.0


def test_families() -> None:
    assert family_of("HalfCheetah-v5").shown == ("reward_forward", "x_velocity")
    assert family_of("gymnasium:Hopper-v5") is family_of("Hopper-v5")
    assert family_of("HumanoidStandup-v5") is not family_of("Humanoid-v5")
    stats = EpisodeStats("InvertedDoublePendulum-v5")
    assert stats.rule("distance_penalty") == "sum" and stats.rule("reward_survive") == "sum"
    atari = EpisodeStats("ALE/Pong-v5")
    assert atari.rule("episode_frame_number") == "none" and atari.rule("game_return") == "last"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("x_velocity", "'x_velocity'"),
        ("x_velocity=avg", "'x_velocity=avg'"),
        ("=sum", "'=sum'"),
        ("a=sum,b=total", "'b=total'"),
        ("episode_return=sum", "episode_return"),
        ("a=sum,a=mean", "a is given two rules"),
    ],
)
def test_bad_info_metrics_are_named(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match="info_metrics") as caught:
        parse_info_metrics(text)
    assert named in str(caught.value)


def test_info_metrics_parse() -> None:
    assert parse_info_metrics(None) == {}
    assert parse_info_metrics("a=sum, b/c=none,") == {"a": "sum", "b/c": "none"}


def test_trainer_refuses_bad_info_metrics() -> None:
    from pufferrs.train import Config, Trainer

    config = Config.for_env("CartPole-v1", num_envs=2, batch_size=64, minibatch_size=32, info_metrics="x=often")
    with pytest.raises(ConfigError, match="'x=often'"):
        Trainer(config)


def test_multi_agent_masks_and_env_summary() -> None:
    """Two agents of one env (rows 0, 1): an absent agent's row counts
    nothing; an agent's episode ends before the env's, whose summary is on
    row 0; the next episode starts from nothing."""
    stats = EpisodeStats()
    r = {"reward_term": 1.0}
    rows = np.array([0, 1])
    both = np.array([True, True])
    stats.add([dict(r), dict(r)], rows, np.array([False, False]), both)
    # Agent 1 ends; agent 0 runs on.
    stats.add([dict(r), ended_info(r, 2.0, 2)], rows, np.array([False, True]), np.array([True, False]))
    # Agent 1 absent (masked): whatever its row holds is not its episode's.
    stats.add([dict(r), dict(r)], rows, np.array([False, False]), np.array([True, False]))
    summary = {"env_episode_return": 6.0, "env_episode_length": 4}
    stats.add([ended_info({**r, **summary}, 4.0, 4), {}], rows, np.array([True, False]), both)
    row = stats.take()
    assert row["env/episodes"] == 2
    assert row["env/reward_term"] == pytest.approx((2 + 4) / 2)
    assert row["env/env_episode_return"] == 6.0 and row["episodes/env_episode_return"] == 1
    assert stats.running == {}
    # A new episode for agent 1 counts from its first step.
    stats.add([{}, dict(r)], rows, np.array([False, False]), both)
    stats.add([{}, ended_info(r, 2.0, 2)], rows, np.array([False, True]), both)
    assert stats.take()["env/reward_term"] == 2.0


def test_env_summary_on_a_row_that_runs_on() -> None:
    stats = EpisodeStats()
    infos = [{"env_episode_return": 3.0, "env_episode_length": 5}, ended_info({}, 1.0, 5)]
    stats.add(infos, np.array([0, 1]), np.array([False, True]), np.array([False, False]))
    row = stats.take()
    assert row["env/env_episode_return"] == 3.0 and row["env/episode_return"] == 1.0


def test_halfcheetah_terms_add_up_to_the_return() -> None:
    """Through the trainer, on the real env: HalfCheetah's reward is
    reward_forward + reward_ctrl at every step, so their episode sums add up
    to the episode's return; reward_forward is x_velocity at every step, so
    x_velocity's episode mean is reward_forward / length."""
    pytest.importorskip("mujoco")
    from pufferrs.train import Config, Trainer, evaluate

    config = Config.for_env(
        "HalfCheetah-v5",
        env_kwargs={"max_episode_steps": 40},
        num_envs=2,
        batch_size=128,
        minibatch_size=64,
        update_epochs=1,
        total_steps=128,
        device="cpu",
    )
    with Trainer(config) as trainer:
        trainer.train()
    rows = [m for m in trainer.metrics if m["env/episodes"]]
    assert rows
    for m in rows:
        assert m["env/episode_length"] == 40
        total = m["env/reward_forward"] + m["env/reward_ctrl"]
        assert total == pytest.approx(m["env/episode_return"], rel=1e-4, abs=1e-3)
        assert m["env/x_velocity"] * 40 == pytest.approx(m["env/reward_forward"], rel=1e-6, abs=1e-6)
        assert "env/x_position" in m
    # Evaluation makes an episode's numbers by the same rules.
    result = evaluate(trainer.policy, config, episodes=3)
    total = result["mean_reward_forward"] + result["mean_reward_ctrl"]
    assert total == pytest.approx(result["mean_return"], rel=1e-4, abs=1e-3)
    assert result["mean_x_velocity"] * 40 == pytest.approx(result["mean_reward_forward"], rel=1e-6, abs=1e-6)


def test_summary_mean_return_counts_every_episode() -> None:
    metrics = [
        {"env/episode_return": 100.0, "env/episodes": 1},  # before the last 5
        {"env/episode_return": 10.0, "env/episodes": 1},
        {"env/episodes": 0},  # no episode ended
        {"env/episode_return": 1.0, "env/episodes": 9},
        {"env/episode_return": 4.0, "env/episodes": 3},
        {"env/episodes": 0},
    ]
    summary = summarize("X-v0", metrics, 6, 600, {}, 1.0)
    assert summary["mean_return_last_5_updates"] == pytest.approx((10 + 9 * 1 + 3 * 4) / 13)
    assert summarize("X-v0", metrics[2:3], 1, 100, {}, 1.0)["mean_return_last_5_updates"] is None


def test_summary_prefers_game_return_weighted_by_games() -> None:
    metrics = [
        {"env/episode_return": 1.0, "env/episodes": 8, "env/game_return": 20.0, "episodes/game_return": 1},
        {"env/episode_return": 2.0, "env/episodes": 6, "env/game_return": 11.0, "episodes/game_return": 2},
        {"env/episode_return": 2.0, "env/episodes": 5},
    ]
    summary = summarize("ALE/Pong-v5", metrics, 3, 300, {}, 1.0)
    assert summary["mean_return_last_5_updates"] == pytest.approx((20 + 2 * 11) / 3)


def row(**env: float) -> dict:
    base = {"update": 1, "global_step": 100, "sps": 50.0}
    losses = {"losses/policy_loss": 0.1, "losses/value_loss": 1.0, "losses/entropy": 0.5}
    return {**base, **{f"env/{k}": v for k, v in env.items()}, **losses}


def test_progress_line_shows_the_family_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    PlainProgress(1, env="HalfCheetah-v5")(
        row(episode_return=5.0, episodes=2, reward_ctrl=-1.0, reward_forward=6.0, x_velocity=0.1, x_position=3.0)
    )
    line = capsys.readouterr().out
    assert "return 5 " in line and "reward_forward 6 " in line and "x_velocity 0.1 " in line
    assert "reward_ctrl" not in line and "x_position" not in line


def test_progress_line_without_episodes(capsys: pytest.CaptureFixture[str]) -> None:
    PlainProgress(1, env="Custom-v0")(row(episodes=0))
    line = capsys.readouterr().out
    assert "return - " in line
    PlainProgress(1)(row(episode_return=1.0, episodes=1, a=1.0, b=2.0, c=3.0, d=4.0))
    line = capsys.readouterr().out
    assert " a 1 b 2 c 3 " in line and " d " not in line
