"""Real environments: MiniGrid and BabyAI, Atari, highway-env, and NetHack
where it is installed. Layouts and round trips on their real observations,
the policy each gets, short command-line runs, and MiniGrid learning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import gymnasium.spaces as gs
import numpy as np
import pytest
import torch

import pufferrs.vector
from pufferrs import Layout
from pufferrs.__main__ import main
from pufferrs.config import Config
from pufferrs.encoders import Auto, choose_encoder
from pufferrs.episodes import EpisodeStats
from pufferrs.errors import ConfigError, SpaceError, WorkerError
from pufferrs.evaluation import evaluate, record_video
from pufferrs.factories import EnvCreator, check_env, describe_policy, env_modules, make_policy, make_vecenv
from pufferrs.ppo import Trainer
from pufferrs.wrappers import DropObservations, StringObservations

pytest.importorskip("minigrid")
pytest.importorskip("ale_py")
pytest.importorskip("highway_env")


def make(env_id: str, **overrides: object) -> gym.Env:
    return EnvCreator.from_config(Config.for_env(env_id, **overrides))()


def assert_round_trip(layout: Layout, obs: object) -> None:
    back = layout.unflatten(layout.flatten(obs))
    for leaf in layout.leaves:
        value, got = obs, back
        for key in leaf.path:
            value, got = value[key], got[key]
        if isinstance(value, str):
            assert layout.decode_text(leaf.path, got) == value
        else:
            np.testing.assert_array_equal(got, np.asarray(value), strict=False)


@pytest.mark.parametrize(
    "env_id",
    ["MiniGrid-Empty-5x5-v0", "MiniGrid-DoorKey-5x5-v0", "BabyAI-GoToLocal-v0", "ALE/Breakout-v5", "highway-fast-v0"],
)
def test_real_observations_round_trip(env_id: str) -> None:
    env = make(env_id)
    layout = Layout(env.observation_space)
    obs, _ = env.reset(seed=1)
    for step in range(20):
        assert_round_trip(layout, obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset(seed=step)
    env.close()


def test_nethack_round_trip_and_policy() -> None:
    pytest.importorskip("nle")
    env = make("NetHackScore-v0")
    layout = Layout(env.observation_space)
    obs, _ = env.reset(seed=1)
    assert_round_trip(layout, obs)
    config = Config.for_env("NetHackScore-v0", num_envs=1)
    vecenv = make_vecenv(config, backend="serial")
    try:
        lines = describe_policy(make_policy(vecenv, config))
    finally:
        vecenv.close()
        env.close()
    assert any(
        "obs['glyphs']" in line and "crop 9x9 centred at obs['blstats'][0], obs['blstats'][1]" in line for line in lines
    )
    assert any("obs['blstats']" in line and "symlog" in line for line in lines)
    assert any("obs['message']" in line and "bytes ended by a 0" in line for line in lines)


def test_mission_strings_are_codes_then_length() -> None:
    env = make("MiniGrid-Empty-5x5-v0")
    layout = Layout(env.observation_space)
    obs, _ = env.reset(seed=0)
    codes = layout.unflatten(layout.flatten(obs))["mission"]
    assert codes.shape == (129,) and codes[-1] == len(obs["mission"]) == len("get to the green goal square")
    assert (codes[len(obs["mission"]) : -1] == 0).all()
    short = Layout(StringObservations(env, 10).observation_space)
    with pytest.raises(SpaceError, match=r"obs\['mission'\]: expected at most 10 characters, got 28"):
        short.flatten(obs)
    text = Layout(gs.Dict(t=gs.Text(4, charset="ba")))
    # Codes follow the charset sorted by code point, whatever order it came in.
    assert text.flatten({"t": "ab"}).tolist() == [1, 2, 0, 0, 2]
    batch = text.flatten_batch({"t": ("a", "bbb")})
    assert [text.decode_text(("t",), row) for row in text.unflatten(batch)["t"]] == ["a", "bbb"]
    env.close()


def test_babyai_preset_holds_the_longest_mission_of_the_grammar() -> None:
    # Every BabyAI mission is a verifier instruction's surface: the longest
    # is two "and"s of two PutNext instructions joined by " after you ",
    # each object described by its longest colour, type and location.
    from minigrid.core.constants import COLOR_NAMES
    from minigrid.envs.babyai.core.verifier import LOC_NAMES, OBJ_TYPES

    locations = {
        "front": " in front of you",
        "behind": " behind you",
        "left": " on your left",
        "right": " on your right",
    }
    assert set(LOC_NAMES) == set(locations)
    desc = len("the ") + max(map(len, COLOR_NAMES)) + 1 + max(map(len, OBJ_TYPES)) + max(map(len, locations.values()))
    put_next = len("put ") + desc + len(" next to ") + desc
    both = put_next + len(" and ") + put_next
    longest = both + max(len(", then "), len(" after you ")) + both
    assert longest == 321
    assert Config.for_env("BabyAI-BossLevel-v0").max_string_length == longest
    assert Config.for_env("BabyAI-GoToLocal-v0").max_string_length == longest


def test_long_babyai_missions_fit_and_the_default_names_its_option() -> None:
    # Seed 152 of BossLevel gives a mission of 144 characters: past the
    # default of 128, which ended training runs mid-run.
    env = make("BabyAI-BossLevel-v0")
    obs, _ = env.reset(seed=152)
    assert len(obs["mission"]) == 144
    assert_round_trip(Layout(env.observation_space), obs)
    env.close()
    creator = EnvCreator.from_config(Config.for_env("BabyAI-BossLevel-v0", max_string_length=128))
    with pufferrs.vector.make(creator, num_envs=1, seed=152) as envs:
        with pytest.raises(WorkerError, match="expected at most 128 characters, got 144") as raised:
            envs.reset()
    assert "--max-string-length or pufferrs.wrappers.StringObservations(env, max_length)" in str(raised.value)


def test_dropped_leaves_leave_the_row() -> None:
    env = DropObservations(make("MiniGrid-Empty-5x5-v0"), "mission,direction")
    assert list(env.observation_space.spaces) == ["image"]
    obs, _ = env.reset(seed=0)
    assert list(obs) == ["image"]
    with pytest.raises(ConfigError, match="no key 'nope'"):
        DropObservations(env, "nope")


def test_env_ids_import_their_packages() -> None:
    assert env_modules("ALE/Pong-v5") == ("ALE/Pong-v5", [("ale_py", "ale-py")])
    assert env_modules("minigrid:MiniGrid-Empty-5x5-v0", "a, b")[1] == [
        ("a", "a"),
        ("b", "b"),
        ("minigrid", "minigrid"),
        ("minigrid", "minigrid"),
    ]
    assert env_modules("highway-fast-v0")[1] == [("highway_env", "highway-env")]
    check_env(Config.for_env("minigrid:MiniGrid-Empty-5x5-v0"))
    with pytest.raises(ConfigError, match="which was not found"):
        check_env(Config.for_env("no_such_env_package:Thing-v0"))


def test_encoders_follow_the_space() -> None:
    assert choose_encoder(gs.Box(0, 255, (4, 84, 84), np.uint8)) == "image"
    assert choose_encoder(gs.Box(0, 5976, (21, 79), np.int16)) == "codes"
    assert choose_encoder(gs.Box(-(2**31), 2**31 - 1, (27,), np.int64)) == "scalars"
    assert choose_encoder(gs.Box(-np.inf, np.inf, (5, 5), np.float32)) == "flat"
    assert choose_encoder(gs.MultiDiscrete([3, 4])) == "codes"
    assert choose_encoder(gs.Text(8)) == "text"


def _auto(space: gs.Space, encoders: dict[str, str]) -> Auto:
    layout = Layout(space)
    env = SimpleNamespace(
        single_observation_space=layout.observation_space, single_action_space=gs.Discrete(2), layout=layout
    )
    return Auto(env, 16, encoders)


def test_crop_reads_the_window_around_the_position() -> None:
    space = gs.Dict(grid=gs.Box(0, 9, (6, 8), np.int16), pos=gs.Box(0, 99, (3,), np.int64))
    policy = _auto(space, {"grid": "crop 3 at pos[1,2]"})
    crop = policy.leaf_encoders[0]
    seen = []
    crop.codes.embedding.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    grid = np.arange(48, dtype=np.int16).reshape(6, 8) % 10
    # Columns then rows: pos[1] is x, pos[2] is y. A corner gets the code
    # past the grid's 10 values (10) where the window leaves it.
    observations = [{"grid": grid, "pos": np.array([0, 5, 2])}, {"grid": grid, "pos": np.array([0, 0, 0])}]
    rows = Layout(space).flatten_batch({k: np.stack([o[k] for o in observations]) for k in ("grid", "pos")})
    policy(torch.from_numpy(rows))
    np.testing.assert_array_equal(seen[0][0].numpy(), grid[1:4, 4:7])
    corner = np.full((3, 3), 10)
    corner[1:, 1:] = grid[:2, :2]
    np.testing.assert_array_equal(seen[0][1].numpy(), corner)
    assert "crop 3x3 centred at obs['pos'][1], obs['pos'][2]" in policy.summary[0]
    with pytest.raises(ValueError, match=r"obs\['grid'\]: the crop's position obs\['pos'\] \(int64 \(3,\)\) has no"):
        _auto(space, {"grid": "crop 3 at pos[1,3]"})
    with pytest.raises(ValueError, match=r"the crop's position 'nope' is not a leaf"):
        _auto(space, {"grid": "crop 3 at nope[0,1]"})
    with pytest.raises(ValueError, match=r"unknown encoders \['crop 3 at pos'\]: use .* or crop N at LEAF\[i,j\]"):
        _auto(space, {"grid": "crop 3 at pos"})


def test_text_reads_the_longest_string_of_the_batch() -> None:
    space = gs.Dict(m=gs.Box(0, 255, (16,), np.uint8))
    policy = _auto(space, {"m": "text"})
    short = np.zeros(16, np.uint8)
    short[:2] = [104, 105]
    # Trailing zeros are no characters: a row alone and in a batch with a
    # longer string encodes the same.
    longer = np.frombuffer(b"hello there.\0\0\0\0", np.uint8)
    alone = policy.leaf_encoders[0](torch.from_numpy(short[None]), torch.float32)
    both = policy.leaf_encoders[0](torch.from_numpy(np.stack([short, longer])), torch.float32)
    torch.testing.assert_close(alone[0], both[0])
    assert not torch.allclose(both[0], both[1])


@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        (
            "MiniGrid-Empty-5x5-v0",
            ["obs['image'] uint8 (7, 7, 3): codes grid 7x7", "obs['mission'] uint8 (129,): text"],
        ),
        ("ALE/Breakout-v5", ["obs uint8 (4, 84, 84): image 4x84x84: Nature CNN"]),
        ("highway-fast-v0", ["obs float32 (5, 5): flat values: 25"]),
    ],
)
def test_short_cli_run_picks_the_policy(
    env_id: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", env_id, "--total-steps", "64", "--num-envs", "2", "--batch-size", "32", "--minibatch-size", "16"]
    args += ["--update-epochs", "1", "--run-dir", str(tmp_path), "--plain", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in expected:
        assert line in out
    assert (tmp_path / "model.pt").exists() and (tmp_path / "learning_curve.png").exists()


def test_atari_preprocessing_reports_unclipped_games() -> None:
    env = make("ALE/Breakout-v5")
    assert env.observation_space.shape == (4, 84, 84)
    env.reset(seed=0)
    life_lost = game_over = False
    for _ in range(3000):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward in (-1.0, 0.0, 1.0)
        if terminated and "game_return" not in info:
            life_lost = True
            env.reset()
        elif "game_return" in info:
            game_over = True
            break
    assert life_lost and game_over
    raw = make("ALE/Breakout-v5", atari_preprocessing=False)
    assert raw.observation_space.shape == (210, 160, 3)
    env.close()
    raw.close()


def test_info_metrics_rules() -> None:
    info = {
        "crashed": True,
        "speed": np.float32(20.0),
        "rewards": {"collision": 0.5, "lane": np.array(1.0)},
        "frame_number": 1234,
        "lives": 3,
        "action": np.array([1, 2]),
        "name": "x",
        # What the vector env adds at an episode's end: not counted twice.
        "final_obs": np.zeros(4, np.float32),
        "final_info": {"crashed": True, "speed": 20.0},
    }
    [(_, numbers)] = EpisodeStats("highway-fast-v0").add([info], np.array([0]), np.array([True]), np.array([True]))
    assert numbers == {"crashed": 1.0, "speed": 20.0, "rewards/collision": 0.5, "rewards/lane": 1.0}


def test_minigrid_learns_with_its_mission(tmp_path: Path) -> None:
    """MiniGrid-Empty-5x5-v0 raw (image codes, direction and the mission
    string): a success rate of 0.9 within 30k steps."""
    torch.manual_seed(0)
    config = Config.for_env("MiniGrid-Empty-5x5-v0", total_steps=30_720, device="cpu", seed=0)
    with Trainer(config) as trainer:
        summary = trainer.train()
    assert summary["env/success"] >= 0.9
    assert np.mean([m["env/success"] for m in trainer.metrics[-3:]]) >= 0.9
    result = evaluate(trainer.policy, config, episodes=8, greedy=False)
    assert result["mean_success"] >= 0.9
    moviepy = pytest.importorskip("moviepy")
    del moviepy
    videos = record_video(trainer.policy, config, tmp_path / "video")
    assert len(videos) == 1 and videos[0].stat().st_size > 0


def test_videos_refused_with_the_reason(tmp_path: Path) -> None:
    config = Config.for_env("pufferrs/Memory-v0", num_envs=1)
    vecenv = make_vecenv(config, backend="serial")
    policy = make_policy(vecenv, config)
    vecenv.close()
    with pytest.raises(ConfigError, match="cannot be filmed: it renders nothing, not rgb_array frames"):
        record_video(policy, config, tmp_path)


def test_auto_policy_rejects_unknown_leaves() -> None:
    env = make("MiniGrid-Empty-5x5-v0")
    layout = Layout(env.observation_space)
    ns = type("E", (), {"single_observation_space": layout.observation_space, "single_action_space": env.action_space})
    ns.layout = layout
    with pytest.raises(ValueError, match=r"encoders name leaves the observation does not have: \['imag'\]"):
        Auto(ns, 16, {"imag": "codes"})
    with pytest.raises(ValueError, match=r"obs\['mission'\]: a codes encoder needs integers"):
        Auto(ns, 16, {"mission": "codes"})
    env.close()


def test_sigterm_saves_the_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "pufferrs", "train", "MiniGrid-Empty-5x5-v0", "--total-steps", "10000000"]
    cmd += ["--run-dir", str(run_dir), "--plain", "--device", "cpu", "--batch-size", "256", "--minibatch-size", "128"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert (run_dir / "model.pt").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("name", "cls"), [("Convolutional", "Convolutional"), ("default", "Default"), ("auto", "Auto")]
)
def test_policies_by_name(name: str, cls: str) -> None:
    config = Config.for_env("ALE/Breakout-v5", num_envs=1, policy=name)
    vecenv = make_vecenv(config, backend="serial")
    try:
        policy = make_policy(vecenv, config)
        obs, _ = vecenv.reset(seed=0)
        logits, values = policy(torch.from_numpy(obs))
    finally:
        vecenv.close()
    assert type(policy).__name__ == cls and logits.shape == (1, 4) and values.shape == (1,)
    with pytest.raises(ConfigError, match="policy must be one of auto, default, convolutional, procgen"):
        Config.for_env("ALE/Breakout-v5", policy="mlp").validate()
