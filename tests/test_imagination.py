"""The gymnasium environments inside the model (src/imagination): real starts, seeding, the event head's rewards and
ends, truncation, the batched vector env against single envs, checkpoints, and the planning example."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

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


@pytest.mark.parametrize("logits, sign", [((-30.0, 0.0, 30.0), 1.0), ((30.0, 0.0, -30.0), -1.0), ((0.0, 30.0, 0.0), 0.0)])
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
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any() and not truncated.any() and not info["_end_probability"].any()
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
    with pytest.raises(UserError, match=r"frames must be \(n, 4, 84, 84\) uint8"):
        envs.reset_to(frames[:2])


def test_a_frames_only_model_is_refused() -> None:
    with pytest.raises(UserError, match="predicts frames only .*retrain it with model.events=true"):
        env(tiny_model(events=False))
    with pytest.raises(UserError, match="needs env_settings= .* or dataset="):
        WorldModelEnv(tiny_model(), 6)


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
def test_the_planning_example_runs_and_reports_both_policies(checkpoint_run: Path, capsys: pytest.CaptureFixture) -> None:
    results = plan_main(["--checkpoint", str(checkpoint_run), "--episodes", "2", "--max_steps", "3", "--candidates", "4",
                         "--depth", "2", "--device", "cpu"])
    assert set(results) == {"random", "planner"}
    for r in results.values():
        assert set(r) == {"mean_return", "std_return", "steps", "steps_per_s"}
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
