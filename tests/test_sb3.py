"""Stable-Baselines3 in the model (src/imagination/sb3.py): SB3's own env checker passes, a terminal observation and
a truncation reach SB3 as its DummyVecEnv gives them, and PPO with CnnPolicy trains a few hundred imagined steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from src.dataset.shards import ShardedDataset
from src.imagination import WorldModelEnv, WorldModelVectorEnv
from tests.test_imagination import PONG, set_events, tiny_model

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_checker import check_env  # noqa: E402

from src.imagination.sb3 import ImaginedVecEnv  # noqa: E402


def imagined(small_dataset: Path, num_envs: int = 4, end: float = -20.0, **kwargs) -> ImaginedVecEnv:
    model = tiny_model()
    set_events(model, reward=(0.0, 5.0, 0.0), end=end)
    data = ShardedDataset(small_dataset, verify="none")
    return ImaginedVecEnv(WorldModelVectorEnv(model, 6, num_envs, dataset=data, env_settings=PONG, **kwargs))


def test_sb3_env_checker_passes() -> None:
    check_env(WorldModelEnv(tiny_model(), 6, env_settings=PONG), warn=True, skip_render_check=True)


def test_a_truncation_and_a_termination_reach_sb3(small_dataset: Path) -> None:
    venv = imagined(small_dataset, horizon=3)
    venv.seed(5)
    first = venv.reset()
    assert first.shape == (4, 4, 84, 84) and first.dtype == np.uint8
    for _ in range(2):
        obs, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))
        assert not dones.any() and rewards.dtype == np.float32
    last_frames = venv.envs.games.observations().copy()
    obs, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))  # the 3rd step: the horizon cuts every game
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        terminal = info["terminal_observation"]
        np.testing.assert_array_equal(terminal[:-1], last_frames[i, 1:])  # the imagined step's stack, shifted by one
        assert not np.array_equal(obs[i], terminal)  # the returned observation is the new game's start
    # the model ends every game at once: a termination, not a truncation
    ending = imagined(small_dataset, end=20.0)
    ending.reset()
    _, _, dones, infos = ending.step(np.zeros(4, dtype=np.int64))
    assert dones.all() and all(info["TimeLimit.truncated"] is False for info in infos)


def test_the_same_seed_gives_the_same_games(small_dataset: Path) -> None:
    a, b = imagined(small_dataset), imagined(small_dataset)
    a.seed(3)
    b.seed(3)
    np.testing.assert_array_equal(a.reset(), b.reset())


@pytest.mark.slow  # PPO's rollouts and updates: seconds
def test_ppo_trains_in_the_model(small_dataset: Path) -> None:
    from stable_baselines3 import PPO

    venv = imagined(small_dataset, horizon=20)
    agent = PPO(
        "CnnPolicy",
        venv,
        n_steps=32,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}},
    )
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps >= 256
    assert any(not torch.equal(p, q) for p, q in zip(before, agent.policy.parameters()))
    action, _ = agent.predict(venv.reset(), deterministic=True)
    assert action.shape == (4,) and ((0 <= action) & (action < 6)).all()
