"""The settings ``pufferrs train ENV`` starts from: :data:`PRESETS` by env
id and :data:`FAMILY_PRESETS` by id prefix, applied by
:meth:`pufferrs.config.Config.for_env` (the defaults, then the family's
preset, then the env's, then the options given), and the lines that say at
the start of a run which applied and why (:func:`describe_presets`)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "FAMILY_PRESETS",
    "HIGHWAY_PREFIXES",
    "PRESETS",
    "VECTOR_CONTROL",
    "describe_presets",
    "family_preset",
]


#: Per-env settings that :meth:`Config.for_env` (and ``pufferrs train ENV``)
#: starts from, tuned on a 2-core CPU. Command-line options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The built-in envs' settings were tuned with the Default MLP, and keep it.
    # Solved (return 500 of 500, greedy and sampled) in 100k steps for
    # seeds 0-5. The policy's one hidden layer is shared by the action and
    # value heads: a lighter value loss (and returns kept short by gamma)
    # stop the value gradients from drowning the policy's. Returns in the
    # tens would take hundreds of updates to reach through a 0.2 value clip.
    "CartPole-v1": dict(
        policy="default",
        num_envs=8,
        total_steps=100_000,
        batch_size=1024,
        minibatch_size=256,
        update_epochs=8,
        learning_rate=2e-3,
        gamma=0.98,
        vf_coef=0.25,
        vf_clip_coef=0.0,
        ent_coef=0.0,
        hidden_size=128,
    ),
    # The cue must survive 5 blank steps: only the LSTM solves it, in
    # about 40k steps.
    "pufferrs/Memory-v0": dict(
        policy="default",
        lstm=True,
        num_envs=16,
        total_steps=100_000,
        batch_size=2048,
        minibatch_size=512,
        bptt_horizon=16,
        learning_rate=1e-3,
        ent_coef=0.01,
        hidden_size=64,
    ),
    # Every step is an independent question: no future reward to discount.
    # Reaches a score of 0.95 in about 60k steps.
    "pufferrs/Nested-v0": dict(
        policy="default",
        num_envs=16,
        total_steps=120_000,
        batch_size=2048,
        minibatch_size=512,
        update_epochs=8,
        learning_rate=3e-3,
        gamma=0.0,
        gae_lambda=0.0,
        ent_coef=0.01,
        hidden_size=128,
    ),
    # Three agents score only together, each reading its own cue. Reaches
    # a score of 0.75 to 1.0 in 100k env steps (seeds 0-3; random play
    # scores 0.016, and a team that always picks one target 0.25). With the
    # Default MLP it settles at 0.25-0.5 more often, and with separate Tanh
    # networks for the actions and the value at about 0.5 (seed 0).
    "pufferrs.multiagent_envs.Rendezvous": dict(
        separate_value=False,
        num_envs=8,
        total_steps=100_000,
        batch_size=1024,
        minibatch_size=512,
        learning_rate=3e-3,
        gamma=0.5,
        ent_coef=0.01,
        hidden_size=128,
    ),
}


#: highway-env's id prefixes (its envs spend tens of milliseconds a step in Python).
HIGHWAY_PREFIXES = (
    "highway-",
    "merge-",
    "roundabout-",
    "parking-",
    "intersection-",
    "racetrack-",
    "two-way-",
    "u-turn-",
    "exit-",
    "lane-keeping-",
)

#: gymnasium's control envs with vector observations, by id prefix (CartPole-v1
#: keeps its own preset, PRESETS).
CLASSIC_CONTROL_PREFIXES = ("Acrobot-", "MountainCar-", "MountainCarContinuous-", "Pendulum-")
BOX2D_PREFIXES = ("LunarLander-", "LunarLanderContinuous-", "BipedalWalker-", "BipedalWalkerHardcore-")
MUJOCO_PREFIXES = (
    "Ant-",
    "HalfCheetah-",
    "Hopper-",
    "Humanoid-",
    "HumanoidStandup-",
    "InvertedDoublePendulum-",
    "InvertedPendulum-",
    "Pusher-",
    "Reacher-",
    "Swimmer-",
    "Walker2d-",
)

#: PPO for vector observations, discrete or continuous actions: SB3's
#: defaults (2048 steps an update, 10 epochs of minibatches of 64, learning
#: rate 3e-4, no entropy bonus, no value clipping) with CleanRL's
#: normalisation of observations and rewards (each clipped to +-10). With
#: the automatic policy these envs get separate 64x64 Tanh networks for the
#: actions and the value (pufferrs.encoders.Auto). 320 gradient steps an
#: update against 16 before: the policy moves.
VECTOR_CONTROL: dict[str, Any] = dict(
    num_envs=8,
    batch_size=2048,
    minibatch_size=64,
    update_epochs=10,
    learning_rate=3e-4,
    ent_coef=0.0,
    vf_clip_coef=0.0,
    gamma=0.99,
    gae_lambda=0.95,
    hidden_size=64,
    normalize_observations=True,
    normalize_rewards=True,
)

#: Presets by env id prefix, applied before :data:`PRESETS`: what the
#: spaces of a family of envs cannot say, and settings that train them.
FAMILY_PRESETS: tuple[tuple[str, dict[str, Any]], ...] = (
    *(
        (prefix, dict(VECTOR_CONTROL, total_steps=total))
        for prefixes, total in (
            (CLASSIC_CONTROL_PREFIXES, 200_000),
            (BOX2D_PREFIXES, 1_000_000),
            (MUJOCO_PREFIXES, 1_000_000),
        )
        for prefix in prefixes
    ),
    # MiniGrid declares its grid of object, colour and state codes as a
    # Box(0, 255, uint8) image.
    (
        "MiniGrid-",
        dict(
            encoders={"image": "codes"},
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=1e-3,
            ent_coef=0.01,
            gae_lambda=0.95,
            gamma=0.99,
            hidden_size=128,
            total_steps=300_000,
        ),
    ),
    # BabyAI's longest mission (its grammar, minigrid's verifier.py): two
    # "and"s of two "put the <colour> <type> <location> next to ..." joined
    # by " after you ", 321 characters ("the purple ball in front of you" is
    # 31: put 31 next to 31 = 75; 75 and 75 = 155; 155 after you 155 =
    # 321). Sampled, BossLevel's missions exceed the default 128 in 322 of
    # 20,000 resets (longest 218; SynthSeq, BossLevelNoUnlock, MiniBossLevel
    # alike, every other level under 100). The text encoder costs what the
    # batch's longest string does, so the room costs only row bytes.
    (
        "BabyAI-",
        dict(
            encoders={"image": "codes"},
            max_string_length=321,
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=1e-3,
            hidden_size=128,
            total_steps=1_000_000,
        ),
    ),
    # CleanRL's Atari PPO.
    (
        "ALE/",
        dict(
            num_envs=8,
            batch_size=1024,
            minibatch_size=256,
            learning_rate=2.5e-4,
            clip_coef=0.1,
            vf_clip_coef=0.1,
            ent_coef=0.01,
            hidden_size=512,
            total_steps=10_000_000,
        ),
    ),
    # NetHack's glyph ids (up to 5,976) are categories; of the many views
    # of the screen, the glyphs, the bottom-line stats and the message are
    # enough to learn from. The glyphs are seen through the crop of NLE's
    # baselines, 9x9 around the agent (blstats holds its x and y); the
    # baselines add the whole 21x79 map, left out here: embedding and
    # convolving it cost four fifths of an update on a CPU. The message is
    # a string of bytes ended by a 0. A first layer of 64, as SB3's MLP:
    # its matmuls were the largest share of an update left at 128 (the
    # measurements are in docs/benchmarks.md).
    (
        "NetHack",
        dict(
            env_kwargs={"observation_keys": ["glyphs", "blstats", "message"]},
            encoders={"glyphs": "crop 9 at blstats[0,1]", "blstats": "scalars", "message": "text"},
            num_envs=16,
            batch_size=2048,
            minibatch_size=512,
            learning_rate=3e-4,
            hidden_size=64,
            total_steps=1_000_000,
        ),
    ),
    # A highway-env step costs tens of milliseconds of Python (its vehicles'
    # behaviour), a thousand times the policy's share: worker processes, one
    # per core, are the only lever.
    *((prefix, dict(backend="multiprocessing")) for prefix in HIGHWAY_PREFIXES),
)


def family_preset(env: str) -> tuple[str | None, dict[str, Any]]:
    """``(prefix, preset)`` of the first family of :data:`FAMILY_PRESETS`
    whose prefix ``env`` (less a ``module:``) starts with; ``(None, {})``."""
    name = env.split(":")[-1]
    return next(((prefix, preset) for prefix, preset in FAMILY_PRESETS if name.startswith(prefix)), (None, {}))


def describe_presets(env: str) -> list[str]:
    """Lines that say which presets :meth:`Config.for_env` applies to
    ``env`` and why, for the start of a run."""
    lines = []
    prefix, family = family_preset(env)
    if family and all(family.get(k) == v for k, v in VECTOR_CONTROL.items()):
        lines.append(
            f"settings: the vector-control preset ({prefix}*): SB3's PPO settings (10 epochs of minibatches of "
            "64, learning rate 3e-4, no entropy bonus) with observations and rewards normalised"
        )
    elif family:
        lines.append(f"settings: the preset of {prefix}* envs")
    if env in PRESETS:
        lines.append(f"settings: the preset of {env}")
    return lines or ["settings: the defaults (no preset for this env)"]
