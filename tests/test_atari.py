"""Game names, and the two preprocessing paths (ale-py vector env, gymnasium wrappers) agreeing frame for frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings, make_env, make_vector_env, resolve_game
from src.utils.errors import UserError
from tests.conftest import GENERATE, generate, run


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("Pong", "Pong"),
        ("pong", "Pong"),
        ("ALE/Pong-v5", "Pong"),
        ("PongNoFrameskip-v4", "Pong"),
        ("MsPacman", "MsPacman"),
        ("ms_pacman", "MsPacman"),
        ("ALE/MsPacman-v5", "MsPacman"),
        ("breakout", "Breakout"),
    ],
)
def test_game_names_as_users_write_them(name: str, canonical: str) -> None:
    assert resolve_game(name) == canonical


def test_unknown_game_suggests_close_names() -> None:
    with pytest.raises(UserError, match=r"Did you mean: MsPacman"):
        resolve_game("MsPacmann")
    with pytest.raises(UserError, match="unknown game 'Zzzzz'"):
        resolve_game("Zzzzz")


def test_list_games() -> None:
    result = run([*GENERATE, "--list_games"])
    games = result.stdout.split()
    assert result.returncode == 0 and {"Pong", "Breakout", "MsPacman", "Boxing", "Freeway"} <= set(games)


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_vector_env_gives_the_same_frames_as_gymnasium_preprocessing(game: str) -> None:
    """The recorder (ale-py's C++ vector env) and the reference (gymnasium AtariPreprocessing + FrameStack)
    must produce identical observations, rewards and episode ends for the same seed and actions.
    No-ops at reset are drawn by different RNGs in the two, so they are off here (noop_max=0)."""
    settings = EnvSettings(game, noop_max=0, max_episode_steps=150)  # short episodes: the reset path is compared too
    vector = make_vector_env(settings, num_envs=1)
    single = make_env(settings)
    v_obs, _ = vector.reset(seed=0)
    s_obs, _ = single.reset(seed=0)
    np.testing.assert_array_equal(v_obs[0], s_obs)
    rng = np.random.default_rng(0)
    ends, autoreset = 0, False
    for _ in range(400):
        action = int(rng.integers(single.action_space.n))
        v_obs, v_reward, v_term, v_trunc, _ = vector.step(np.array([action]))
        if autoreset:  # the vector env's NextStep autoreset: this step only reset the game
            s_obs, _ = single.reset()
            s_reward, s_term, s_trunc = 0.0, False, False
        else:
            s_obs, s_reward, s_term, s_trunc, _ = single.step(action)
        np.testing.assert_array_equal(v_obs[0], s_obs)
        assert (v_reward[0], v_term[0], v_trunc[0]) == (s_reward, s_term, s_trunc)
        autoreset = bool(v_term[0] or v_trunc[0])
        ends += autoreset
    assert ends >= 2
    vector.close()
    single.close()


def test_recorded_episode_replays_in_the_reference_env(tmp_path: Path) -> None:
    """Replaying the recorded actions in gymnasium's preprocessed env reproduces the recorded frames:
    the dataset is exactly what the standard preprocessing makes of those actions."""
    out = tmp_path / "pong"
    result = generate(out, steps=300, num_envs=1, noop_max=0, max_episode_steps=120, shard_size=300)
    assert result.returncode == 0, result.stderr
    data = ShardedDataset(out)
    env = make_env(EnvSettings("Pong", noop_max=0, max_episode_steps=120))
    obs, _ = env.reset(seed=0)
    for row in range(len(data)):
        step = data.steps(row)
        np.testing.assert_array_equal(step.obs[0], obs)
        obs, reward, terminated, truncated, _ = env.step(int(step.action[0]))
        np.testing.assert_array_equal(step.next_obs[0, 0], obs[-1])
        assert (step.reward[0], step.done[0]) == (reward, terminated or truncated)
        if step.done[0]:
            obs, _ = env.reset()
    assert data.column("done").sum() >= 2
