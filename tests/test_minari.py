"""Minari interchange: a dataset exported with Minari's own API (lossless frames, one per observation) reads back
through minari.load_dataset and imports back sample for sample; a Minari dataset of RGB screens made here with
Minari's API imports preprocessed; a damaged one is one line and writes nothing."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from src.dataset import export_minari, import_minari
from src.dataset.schema import FRAMES, MINARI, STEPS
from src.dataset.shards import ShardedDataset
from tests.conftest import error_line, run_main

minari = pytest.importorskip("minari")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Minari's notes on unset optional metadata


@pytest.fixture
def minari_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(folder))
    return folder


def steps_by_episode(data: ShardedDataset) -> list[list[int]]:
    """Each episode's rows in recorded order, episodes in the order export_minari writes them."""
    rows = collections.defaultdict(list)
    for pos in range(len(data.shards)):
        for local, episode in enumerate(np.asarray(data.array(pos, "episode")).tolist()):
            rows[episode].append(int(data.offsets[pos]) + local)
    return [rows[e] for e, _ in export_minari.episode_rows(data)]


def test_round_trip_through_minari(small_dataset: Path, tmp_path: Path, minari_dir: Path) -> None:
    result = run_main(export_minari.main, [str(small_dataset), "ale/pong/test-v0", "--minari_dir", str(minari_dir)])
    assert result.returncode == 0, result.stderr
    loaded = minari.load_dataset("ale/pong/test-v0")
    assert loaded.storage.metadata["jpeg_encoding"] is False
    assert loaded.total_steps == 1200 and loaded.observation_space.shape == (84, 84)
    with ShardedDataset(small_dataset) as source:
        episodes = steps_by_episode(source)
        assert loaded.total_episodes == len(episodes)
        first = next(loaded.iterate_episodes([0]))
        rows = episodes[0]
        assert first.observations.shape == (len(rows) + 1, 84, 84)  # one frame each, never the stack
        assert first.observations[0].tobytes() == source.steps(rows[0]).obs[0, -1].tobytes()
        assert all(
            first.observations[i + 1].tobytes() == source.steps(r).next_obs[0, 0].tobytes() for i, r in enumerate(rows)
        )
        for layout in (FRAMES, STEPS):
            out = tmp_path / layout
            result = run_main(import_minari.main, ["ale/pong/test-v0", str(out), "--layout", layout])
            assert result.returncode == 0, result.stderr
            with ShardedDataset(out) as back:
                assert (back.layout, back.manifest.policy, len(back)) == (layout, MINARI, 1200)
                assert back.manifest.env == source.manifest.env  # the settings came with the description
                order = [r for episode in episodes for r in episode]
                for row, original in enumerate(order):
                    x, y = back.steps(row), source.steps(original)
                    for field in ("obs", "action", "next_obs", "done", "reward"):
                        assert getattr(x, field).tobytes() == getattr(y, field).tobytes(), (layout, row, field)
    line = error_line(run_main(export_minari.main, [str(small_dataset), "ale/pong/test-v0"]))
    assert "exists" in line


def test_rgb_screens_are_preprocessed_and_a_damaged_dataset_writes_nothing(tmp_path: Path, minari_dir: Path) -> None:
    import cv2
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    screens = rng.integers(0, 256, (31, 210, 160, 3), dtype=np.uint8)
    buffer = EpisodeBuffer(
        id=0,
        observations=list(screens),
        actions=list(rng.integers(0, 6, 30)),
        rewards=[0.0] * 29 + [1.0],
        terminations=[False] * 30,
        truncations=[False] * 29 + [True],  # a time limit: an end
    )
    minari.create_dataset_from_buffers(
        "ale/pong/rgb-v0",
        [buffer],
        observation_space=gym.spaces.Box(0, 255, (210, 160, 3), np.uint8),
        action_space=gym.spaces.Discrete(6),
        jpeg_encoding=False,
    )
    out = tmp_path / "rgb"
    line = error_line(run_main(import_minari.main, ["ale/pong/rgb-v0", str(out)]))
    assert "pass --game" in line and not out.exists()
    result = run_main(import_minari.main, ["ale/pong/rgb-v0", str(out), "--game", "Pong"])
    assert result.returncode == 0, result.stderr
    with ShardedDataset(out) as data:
        grey = cv2.resize(cv2.cvtColor(screens[5], cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)
        assert data.steps(4).next_obs[0, 0].tobytes() == grey.tobytes()
        assert not data.steps(0).obs[0, :3].any() and data.steps(29).done[0] and data.steps(29).reward[0] == 1.0
        assert "RGB screens" in data.manifest.sessions[0]["from"]
    data_file = next((minari_dir / "ale" / "pong" / "rgb-v0" / "data").glob("main_data.*"))
    data_file.write_bytes(data_file.read_bytes()[:200])  # truncated
    line = error_line(run_main(import_minari.main, ["ale/pong/rgb-v0", str(tmp_path / "x"), "--game", "Pong"]))
    assert "cannot be read" in line and not (tmp_path / "x").exists()
