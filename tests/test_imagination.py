"""The gymnasium environments inside the model (src/imagination): real starts, seeding, the event head's rewards and
ends, truncation, the batched vector env against single envs, misuse refused as gymnasium does, checkpoints, and the
planning example."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.error import Error as GymnasiumError
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from examples.plan_in_imagination import main as plan_main
from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import WARMUP_STEPS, Game
from src.imagination import WorldModelEnv, WorldModelVectorEnv
from src.models.checkpoint import read_checkpoint
from src.models.rollout import Feedback
from src.models.world_model import ModelConfig, build_model
from src.utils.checkpoint import save_checkpoint
from src.utils.errors import UserError
from tests.conftest import run

PONG = EnvSettings("Pong")


def tiny_model(events: bool = True, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, feedback="uint8", events=events), 6)


def set_events(model: torch.nn.Module, reward: tuple[float, float, float] = (0.0, 0.0, 0.0), end: float = 0.0) -> None:
    """Make the event head's output its bias alone: reward logits over (-1, 0, +1) and the end logit."""
    with torch.no_grad():
        model.events.out.weight.zero_()
        model.events.out.bias.copy_(torch.tensor([*reward, end]))


def env(model: torch.nn.Module | None = None, **kwargs) -> WorldModelEnv:
    return WorldModelEnv(model if model is not None else tiny_model(), 6, env_settings=PONG, **kwargs)


def test_check_env_passes_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env(), skip_render_check=True)  # the render check needs a registered spec; render is tested below


def test_spaces_and_render() -> None:
    e = env(render_mode="rgb_array")
    assert e.observation_space.shape == (4, 84, 84) and e.observation_space.dtype == np.uint8 and e.action_space.n == 6
    obs, _ = e.reset(seed=0)
    frame = e.render()
    assert frame.shape == (84, 84, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[:, :, 1], obs[-1])


def test_a_reset_is_the_real_game_reset_and_played_in() -> None:
    obs, _ = env().reset(seed=11)
    rng = seeding.np_random(11)[0]  # what reset draws from, in the same order
    game = Game(PONG)
    expected = game.reset(seed=int(rng.integers(2**31 - 1)))
    for _ in range(WARMUP_STEPS):
        expected = game.step(int(rng.integers(6))).next_obs
    np.testing.assert_array_equal(obs, expected)
    assert obs[0].any()  # a full context: no zero padding left


def test_a_reset_from_a_dataset_is_a_recorded_window(small_dataset: Path) -> None:
    data = ShardedDataset(small_dataset, verify="none")
    e = env(dataset=data)
    rows, rng = data.window_starts(1), seeding.np_random(4)[0]
    first, _ = e.reset(seed=4)
    second, _ = e.reset()
    np.testing.assert_array_equal(first, data.steps(int(rows[rng.integers(len(rows))])).obs[0])
    np.testing.assert_array_equal(second, data.steps(int(rows[rng.integers(len(rows))])).obs[0])
    assert not np.array_equal(first, second)


def trajectory(e: WorldModelEnv, seed: int, actions: list[int]) -> tuple[list[np.ndarray], list[float], list[float]]:
    obs, _ = e.reset(seed=seed)
    frames, rewards, ends = [obs], [], []
    for action in actions:
        obs, reward, _, _, info = e.step(action)
        frames.append(obs)
        rewards.append(reward)
        ends.append(info["end_probability"])
    return frames, rewards, ends


def test_same_seed_same_trajectory_other_seed_another() -> None:
    e, actions = env(), [2, 3, 3, 0, 5, 1]
    a, b, c = trajectory(e, 3, actions), trajectory(e, 3, actions), trajectory(e, 4, actions)
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    assert a[1:] == b[1:]
    assert not np.array_equal(a[0][0], c[0][0])  # another start
    assert a[2] != c[2]  # and other end probabilities from it
    assert any(not np.array_equal(x, y) for x, y in zip(a[0][1:], a[0][:-1]))  # the model does move the frames


def test_terminated_follows_the_end_head_and_its_threshold() -> None:
    model = tiny_model()
    set_events(model, end=30.0)
    e = env(model)
    e.reset(seed=0)
    _, _, terminated, truncated, info = e.step(0)
    assert terminated and not truncated and info["end_probability"] > 0.999
    set_events(model, end=-30.0)
    e.reset(seed=0)
    assert not any(e.step(a % 6)[2] for a in range(20))
    set_events(model, end=0.0)  # probability 0.5 exactly
    for threshold, expected in ((0.4, True), (0.6, False)):
        e = env(model, end_threshold=threshold)
        e.reset(seed=0)
        _, _, terminated, _, info = e.step(1)
        assert info["end_probability"] == 0.5 and terminated is expected


@pytest.mark.parametrize(
    "logits, sign", [((-30.0, 0.0, 30.0), 1.0), ((30.0, 0.0, -30.0), -1.0), ((0.0, 30.0, 0.0), 0.0)]
)
def test_reward_is_the_reward_heads_sign(logits: tuple[float, float, float], sign: float) -> None:
    model = tiny_model()
    set_events(model, reward=logits, end=-30.0)
    e = env(model)
    e.reset(seed=0)
    rewards = [e.step(a)[1] for a in (0, 2, 3)]
    assert rewards == [sign] * 3 and all(type(r) is float for r in rewards)


def test_truncated_at_the_horizon() -> None:
    model = tiny_model()
    set_events(model, end=-30.0)
    e = env(model, horizon=3)
    e.reset(seed=0)
    assert [e.step(0)[3] for _ in range(3)] == [False, False, True]
    e.reset(seed=0)  # a reset starts the count again
    assert e.step(0)[3] is False


def test_the_vector_env_steps_like_single_envs_from_the_same_starts() -> None:
    model, actions = tiny_model(), np.array([1, 2, 3, 5])
    envs = WorldModelVectorEnv(model, 6, 4, env_settings=PONG, end_threshold=1.0)  # no ends: no autoreset
    assert envs.observation_space.shape == (4, 4, 84, 84) and list(envs.action_space.nvec) == [6] * 4
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    starts, _ = envs.reset(seed=20)  # game i: seed 20 + i
    batched = [envs.step(actions) for _ in range(3)]
    assert not np.array_equal(starts[0], starts[1])  # different games: a mix-up in the batch would show
    for i in range(4):
        single = env(model, end_threshold=1.0)
        obs, _ = single.reset(seed=20 + i)
        np.testing.assert_array_equal(obs, starts[i])
        for obs_b, rewards, terminated, truncated, info in batched:
            obs, reward, term, trunc, single_info = single.step(int(actions[i]))
            assert np.abs(obs.astype(int) - obs_b[i]).max() <= 1  # batched convolutions may round differently
            assert (obs != obs_b[i]).mean() < 1e-3
            assert reward == rewards[i] and term == terminated[i] and trunc == truncated[i]
            assert single_info["end_probability"] == pytest.approx(info["end_probability"][i], abs=1e-5)


def test_next_step_autoreset_starts_a_game_anew_after_its_end() -> None:
    model = tiny_model()
    set_events(model, end=30.0)
    envs = WorldModelVectorEnv(model, 6, 2, env_settings=PONG)
    envs.reset(seed=5)
    _, _, terminated, _, info = envs.step(np.array([0, 1]))
    assert terminated.tolist() == [True, True] and info["_end_probability"].all()
    obs, rewards, terminated, truncated, info = envs.step(np.array([0, 1]))  # ignored: both games start anew
    assert (
        rewards.tolist() == [0.0, 0.0]
        and not terminated.any()
        and not truncated.any()
        and not info["_end_probability"].any()
    )
    single = env(model)
    single.reset(seed=5)
    np.testing.assert_array_equal(obs[0], single.reset()[0])  # game 0's second start, from its own generator
    assert envs.steps.tolist() == [0, 0]
    assert envs.step(np.array([0, 1]))[2].tolist() == [True, True]  # and plays on


def test_disabled_autoreset_plays_on_and_reset_mask_restarts_some() -> None:
    model = tiny_model()
    set_events(model, end=30.0)
    envs = WorldModelVectorEnv(model, 6, 3, env_settings=PONG, autoreset_mode="Disabled")
    assert envs.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    starts, _ = envs.reset(seed=1)
    for _ in range(3):
        _, _, terminated, _, info = envs.step(np.zeros(3, dtype=int))
        assert terminated.all() and info["_end_probability"].all()
    assert envs.steps.tolist() == [3, 3, 3]
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True, False])})
    assert envs.steps.tolist() == [3, 0, 3] and not np.array_equal(obs[1], starts[1])  # a new draw of game 1
    with pytest.raises(UserError, match="autoreset_mode must be one of NextStep, Disabled"):
        WorldModelVectorEnv(model, 6, 2, env_settings=PONG, autoreset_mode="SameStep")


def test_reset_to_starts_every_game_from_the_frames_given() -> None:
    frames = Game(PONG).reset(seed=0)
    envs = WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG)
    obs, _ = envs.reset_to(frames)
    assert all(np.array_equal(o, frames) for o in obs)
    obs, _, _, _, info = envs.step(np.array([4, 4, 2]))
    np.testing.assert_array_equal(obs[0], obs[1])  # same frames, same action: the same step
    assert info["end_probability"][0] == info["end_probability"][1]
    single = env(tiny_model())
    np.testing.assert_array_equal(single.reset_to(frames)[0], frames)
    with pytest.raises(
        ValueError, match=r"frames must be \(4, 84, 84\) uint8 \(every game alike\) or \(3, 4, 84, 84\)"
    ):
        envs.reset_to(frames[:2])


def test_a_frames_only_model_is_refused() -> None:
    with pytest.raises(UserError, match="predicts frames only .*retrain it with model.events=true"):
        env(tiny_model(events=False))
    with pytest.raises(UserError, match="needs env_settings= .* or dataset="):
        WorldModelEnv(tiny_model(), 6)


BLACK = np.zeros((4, 84, 84), dtype=np.uint8)  # a start of one's own: reset_to needs no emulator


def test_step_and_render_before_a_reset_need_one_as_gymnasium_says() -> None:
    """Before a reset the context is black frames, no game: step and render (when it draws) raise ResetNeeded, with
    the message of gymnasium's OrderEnforcing; reset_to is a reset too."""
    single, envs = (
        env(render_mode="rgb_array"),
        WorldModelVectorEnv(tiny_model(), 6, 2, env_settings=PONG, render_mode="rgb_array"),
    )
    for e, action in ((single, 0), (envs, np.zeros(2, dtype=int))):
        with pytest.raises(ResetNeeded, match=re.escape("Cannot call env.step() before calling env.reset()")):
            e.step(action)
        with pytest.raises(ResetNeeded, match=re.escape("Cannot call `env.render()` before calling `env.reset()`")):
            e.render()
        assert e.steps.tolist() == [0] * len(e.steps)  # nothing was stepped
        e.reset_to(BLACK)
        assert e.step(action)[0].shape == e.observation_space.shape and e.render() is not None
    assert env().render() is None  # render_mode None draws nothing, so it needs no reset


def test_a_partial_first_reset_leaves_the_other_games_unstarted() -> None:
    envs = WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG)
    envs.reset(seed=0, options={"reset_mask": np.array([True, False, True])})
    with pytest.raises(ResetNeeded, match=r"env.reset\(\).*: games \[1\] were never started"):
        envs.step(np.zeros(3, dtype=int))
    envs.reset(options={"reset_mask": np.array([False, True, False])})
    assert envs.step(np.zeros(3, dtype=int))[0].shape == (3, 4, 84, 84)


@pytest.mark.parametrize("action", [1.7, 2.0, True, np.bool_(False), np.float32(1), np.array(1.5), "1", None, [1]])
def test_an_action_not_an_int_is_refused_not_cast(action: object) -> None:
    e = env()
    e.reset_to(BLACK)
    with pytest.raises(TypeError, match=r"action must be an int in \[0, 6\), got"):
        e.step(action)
    assert e.steps.tolist() == [0]


def test_an_action_out_of_range_or_of_the_wrong_shape_is_refused_and_numpy_ints_are_taken() -> None:
    e = env()
    e.reset_to(BLACK)
    for action in (6, -1, np.int64(6), np.array(-2)):
        with pytest.raises(
            ValueError, match=r"action must be in \[0, 6\) \(the action space Discrete\(6\)\), got -?\d"
        ):
            e.step(action)
    with pytest.raises(
        ValueError, match=r"action must be one int in \[0, 6\) \(a 0-d array at most\), got an array of shape \(1,\)"
    ):
        e.step(np.array([1]))
    assert e.steps.tolist() == [0]
    for action in (
        np.int64(5),
        np.uint8(2),
        np.array(3, dtype=np.int32),
        0,
    ):  # the action space's own samples are int64
        e.step(action)
    assert e.steps.tolist() == [4]
    a, b = env(e.games.model), env(e.games.model)
    a.reset_to(BLACK), b.reset_to(BLACK)
    np.testing.assert_array_equal(a.step(np.int64(1))[0], b.step(1)[0])  # a numpy int plays that action


def test_vector_actions_of_the_wrong_type_shape_or_range_are_refused() -> None:
    envs = WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG)
    envs.reset_to(BLACK)
    for actions in (
        np.array([1.0, 2.0, 3.0]),
        np.array([1.7, 0.2, 3.0]),
        np.ones(3, dtype=bool),
        ["1", "2", "3"],
        [1, 2.5, 3],
    ):
        with pytest.raises(TypeError, match=r"actions must be ints in \[0, 6\), one per game \(3,\), got dtype"):
            envs.step(actions)
    for actions in (np.array([1, 2]), np.ones((3, 1), dtype=int), np.ones((1, 3), dtype=int), 1):
        with pytest.raises(ValueError, match=r"actions must have shape \(3,\) \(one action per game\), got"):
            envs.step(actions)
    out_of_range = "actions must be in [0, 6) (the single action space Discrete(6)), got [6, -1] for games [1, 2]"
    with pytest.raises(ValueError, match=re.escape(out_of_range)):
        envs.step(np.array([0, 6, -1]))
    assert envs.steps.tolist() == [0, 0, 0]  # nothing was stepped
    for actions in (np.array([5, 0, 1], dtype=np.uint8), [1, 2, 3], envs.action_space.sample()):
        envs.step(actions)
    assert envs.steps.tolist() == [3, 3, 3]


def test_reset_to_refuses_frames_of_the_wrong_shape_or_dtype() -> None:
    single, envs = env(), WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG)
    for frames in (BLACK[:3], BLACK[None], BLACK.astype(np.float32), BLACK[:, :80], BLACK.tolist()[:2]):
        with pytest.raises(ValueError, match=r"^frames must be \(4, 84, 84\) uint8, got \("):
            single.reset_to(frames)
    for frames in (
        np.stack([BLACK] * 2),
        np.stack([BLACK] * 4),
        BLACK[:3],
        BLACK.astype(np.int64),
        np.stack([BLACK] * 3) / 255,
    ):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "frames must be (4, 84, 84) uint8 (every game alike) or (3, 4, 84, 84) uint8 (one per game), got"
            ),
        ):
            envs.reset_to(frames)
    assert not single.started.any() and not envs.started.any()
    assert envs.reset_to(np.stack([BLACK] * 3))[0].shape == (3, 4, 84, 84)


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (
            np.zeros(3, dtype=bool),
            ValueError,
            r"must mark at least one game to restart \(a True\), got \[False False False\]",
        ),
        (np.ones(2, dtype=bool), ValueError, r"must have shape \(3,\) \(one flag per game\), got \(2,\)"),
        (np.ones((3, 1), dtype=bool), ValueError, r"must have shape \(3,\) \(one flag per game\), got \(3, 1\)"),
        (np.ones(3, dtype=int), TypeError, "must have dtype bool, got int64"),
        ([True, False, True], TypeError, r"must be a numpy array of shape \(3,\) and dtype bool, got list"),
    ],
)
def test_a_bad_reset_mask_is_refused_as_sync_vector_env_refuses_it(mask: object, error: type, match: str) -> None:
    model = tiny_model()
    envs = WorldModelVectorEnv(model, 6, 3, env_settings=PONG)
    envs.reset_to(BLACK)
    rngs = list(envs.rngs)
    with pytest.raises(error, match=r"^options\['reset_mask'\] " + match):
        envs.reset(seed=1, options={"reset_mask": mask})
    assert envs.rngs == rngs  # refused before any generator was reseeded
    with pytest.raises(error):  # gymnasium's own vector env of the single envs: the same exception
        SyncVectorEnv([lambda: env(model)] * 3).reset(seed=1, options={"reset_mask": mask})


def test_a_reset_mask_reseeds_only_the_games_it_restarts_as_sync_vector_env_does() -> None:
    envs = WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG)
    envs.reset_to(BLACK)
    kept = list(envs.rngs)
    obs, _ = envs.reset(seed=7, options={"reset_mask": np.array([False, True, False])})
    assert envs.rngs[0] is kept[0] and envs.rngs[2] is kept[2] and envs.steps.tolist() == [0, 0, 0]
    single = env(envs.games.model)
    np.testing.assert_array_equal(obs[1], single.reset(seed=8)[0])  # game 1 started as seed 7 + 1 starts it
    np.testing.assert_array_equal(obs[0], BLACK)


def test_bad_reset_options_and_seeds_are_refused_before_anything_changes() -> None:
    envs, single = WorldModelVectorEnv(tiny_model(), 6, 3, env_settings=PONG), env()
    envs.reset_to(BLACK)
    rngs = list(envs.rngs)
    with pytest.raises(
        ValueError, match=re.escape("options has unknown keys ['reset_maks']: this env's reset takes only 'reset_mask'")
    ):
        envs.reset(options={"reset_maks": np.array([True, False, False])})  # a typo would otherwise restart every game
    with pytest.raises(ValueError, match=re.escape("options has unknown keys ['mask']: this env's reset takes none")):
        single.reset(options={"mask": 1})
    for e in (envs, single):
        with pytest.raises(TypeError, match="options must be a dict or None, got list"):
            e.reset(options=[("reset_mask", None)])
    with pytest.raises(ValueError, match=r"seed as a list must have 3 seeds \(one per game\), got 2"):
        envs.reset(seed=[1, 2])
    for seed in (np.int64(3), 1.5, "012"):
        with pytest.raises(
            TypeError, match=r"seed must be a Python int, a list of 3 ints \(one per game\) or None, got"
        ):
            envs.reset(seed=seed)
    for seed in (-1, [0, -1, 2], [0, np.int64(1), 2]):  # gymnasium's own seeding rules, its own error
        with pytest.raises(GymnasiumError, match="Seed must be"):
            envs.reset(seed=seed)
        with pytest.raises(GymnasiumError, match="Seed must be"):
            single.reset(seed=seed if isinstance(seed, int) else seed[1])
    assert envs.rngs == rngs and envs.started.all() and not single.started.any()
    single.reset(options={})  # as a SyncVectorEnv passes them once it took its reset_mask
    envs.reset(seed=[4, None, 6])  # None: that game's generator goes on, as in SyncVectorEnv
    assert envs.rngs[1] is rngs[1] and envs.rngs[0] is not rngs[0]


def test_constructor_arguments_of_the_wrong_type_or_for_another_model_are_refused() -> None:
    with pytest.raises(UserError, match="num_actions is 7, but the world model was built for 6 actions"):
        WorldModelEnv(tiny_model(), 7, env_settings=PONG)  # action 6 would fail deep in torch
    with pytest.raises(UserError, match="num_envs must be an int >= 1, got 2.0"):
        WorldModelVectorEnv(tiny_model(), 6, 2.0, env_settings=PONG)
    with pytest.raises(UserError, match="horizon must be an int >= 1 step, got 2.5"):
        env(horizon=2.5)


@pytest.fixture(scope="module")
def checkpoint_run(short_run) -> Path:
    return Path(short_run[1]["run_dir"])


@pytest.mark.slow
def test_from_checkpoint_takes_a_file_or_a_run_folder(checkpoint_run: Path) -> None:
    from_folder = WorldModelEnv.from_checkpoint(checkpoint_run, device="cpu", horizon=7)
    from_file = WorldModelEnv.from_checkpoint(checkpoint_run / "checkpoints" / "best.pt", device="cpu")
    state = read_checkpoint(checkpoint_run / "checkpoints" / "best.pt")
    assert from_folder.horizon == 7 and from_folder.action_space.n == state["dataset"]["num_actions"]
    assert from_folder.get_action_meanings() == state["dataset"]["action_meanings"]
    assert from_folder.games.feedback == Feedback("palette", tuple(state["config"]["model"]["palette"]))
    a, b = trajectory(from_folder, 2, [1, 2, 3]), trajectory(from_file, 2, [1, 2, 3])
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    assert a[1:] == b[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(from_folder, skip_render_check=True)


@pytest.mark.slow
def test_a_frames_only_checkpoint_is_refused_in_one_line(checkpoint_run: Path, tmp_path: Path) -> None:
    state = read_checkpoint(checkpoint_run / "checkpoints" / "last.pt")
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("events.")}
    state["config"]["model"]["events"] = False
    save_checkpoint(tmp_path / "frames_only.pt", state)
    with pytest.raises(UserError, match=r"checkpoint '.*frames_only.pt' predicts frames only") as caught:
        WorldModelVectorEnv.from_checkpoint(tmp_path / "frames_only.pt", device="cpu", num_envs=2)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_the_planning_example_runs_and_reports_both_policies(
    checkpoint_run: Path, capsys: pytest.CaptureFixture
) -> None:
    results = plan_main(
        [
            "--checkpoint",
            str(checkpoint_run),
            "--episodes",
            "2",
            "--max_steps",
            "3",
            "--population",
            "4",
            "--decisions",
            "2",
            "--iterations",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert set(results) == {"random", "planner"}
    for r in results.values():
        assert set(r) == {"mean_return", "standard_error", "steps", "steps_per_s"}
        assert r["steps"] == 6 and r["steps_per_s"] > 0 and np.isfinite(r["mean_return"])
    out = capsys.readouterr().out
    assert "random: return" in out and "planner: return" in out


@pytest.mark.slow
def test_the_env_benchmark_prints_a_row_per_batch() -> None:
    result = run([sys.executable, "benchmarks/bench_env.py", "--batches", "1,2", "--steps", "1", "--rounds", "1"])
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (\d+) \| ([\d,.]+) \| ([\d,.]+) \| ([\d,.]+) \| ([\d.]+) \|$", result.stdout, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2]
    assert all(float(v.replace(",", "")) > 0 for r in rows for v in r[1:])


def test_gymnasium_episode_statistics_read_the_imagined_games(small_dataset: Path) -> None:
    """What CleanRL's Atari scripts read on gymnasium 1.x: RecordEpisodeStatistics's infos["episode"] and "_episode"
    for the games that ended, here cut by the horizon (3 steps of +1 each)."""
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    model = tiny_model()
    set_events(model, reward=(0.0, 0.0, 9.0), end=-20.0)  # +1 at every step, never an end
    data = ShardedDataset(small_dataset, verify="none")
    envs = RecordEpisodeStatistics(WorldModelVectorEnv(model, 6, 2, dataset=data, horizon=3))
    envs.reset(seed=0)
    for _ in range(2):
        _, _, _, truncated, infos = envs.step(np.zeros(2, dtype=np.int64))
        assert not truncated.any() and "episode" not in infos
    _, _, _, truncated, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and infos["_episode"].all()
    np.testing.assert_array_equal(infos["episode"]["r"], [3.0, 3.0])
    np.testing.assert_array_equal(infos["episode"]["l"], [3, 3])
