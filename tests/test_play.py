"""Playing inside the model: keys become the game's actions, the model answers them, and what is played records."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from src.dataset.recorder import Recorder
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.playing.dream import Dream
from src.playing.keys import action_for, parse_keys
from src.playing.window import run_headless, run_window
from src.utils.checkpoint import save_checkpoint
from src.utils.errors import UserError
from tests.conftest import check_consecutive, run

PONG = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
FULL = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE", "RIGHTFIRE",
        "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]


def ignore(frame: np.ndarray) -> None:
    """A run_headless `show` that drops the frames."""


def test_keys_map_to_the_games_action_names() -> None:
    assert action_for(set(), PONG) == 0
    assert action_for({"RIGHT"}, PONG) == 2 and action_for({"LEFT", "FIRE"}, PONG) == 5
    assert action_for({"UP"}, PONG) == 0  # Pong has no UP: nothing
    assert action_for({"UP", "RIGHT", "FIRE"}, PONG) == 4  # falls back to the part the game has
    assert FULL[action_for({"UP", "RIGHT", "FIRE"}, FULL)] == "UPRIGHTFIRE"
    assert FULL[action_for({"DOWN", "LEFT"}, FULL)] == "DOWNLEFT"
    assert FULL[action_for({"UP", "DOWN", "FIRE"}, FULL)] == "FIRE"  # opposite keys cancel
    assert ["NOOP", "FIRE", "RIGHT", "LEFT"][action_for({"RIGHT", "FIRE"}, ["NOOP", "FIRE", "RIGHT", "LEFT"])] == "FIRE"


def test_key_sequences_parse_to_one_action_per_step() -> None:
    assert parse_keys("RIGHT*3, left+space*2,NOOP,RIGHTFIRE", PONG) == [2, 2, 2, 5, 5, 0, 4]
    for bad, message in (("RIHGT*3", "unknown key 'RIHGT'"), ("RIGHT*x", "cannot read 'RIGHT*x'"), (",", "--keys is empty")):
        with pytest.raises(UserError, match=re.escape(message)):
            parse_keys(bad, PONG)


@pytest.fixture(scope="module")
def lively_checkpoint(short_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short run's checkpoint with its output layer moved off zero, so that every action changes the picture
    (a 6-step model still nearly copies the last frame whatever the action)."""
    state = read_checkpoint(Path(short_run[1]["run_dir"]) / "checkpoints" / "last.pt")
    torch.manual_seed(0)
    state["model"]["head.conv.weight"] = torch.randn_like(state["model"]["head.conv.weight"]) * 0.05
    path = tmp_path_factory.mktemp("play") / "lively.pt"
    save_checkpoint(path, state)
    return path


def dream_frames(checkpoint: Path, keys: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(the dream's frames, the real game's frames) of a headless session, (K, H, W) each."""
    state = read_checkpoint(checkpoint)
    dream = Dream(model_from_checkpoint(state).eval(), state["dataset"], torch.device("cpu"), seed)
    imagined, real = [], []
    for action in parse_keys(keys, state["dataset"]["action_meanings"]):
        dream.step(action)
        imagined.append(dream.context[0, -1].numpy().copy())
        real.append(dream.real_obs[-1].copy())
    return np.stack(imagined), np.stack(real)


def test_the_model_answers_the_keys(lively_checkpoint: Path) -> None:
    right, real_right = dream_frames(lively_checkpoint, "RIGHT*12")
    left, real_left = dream_frames(lively_checkpoint, "LEFT*12")
    again, _ = dream_frames(lively_checkpoint, "RIGHT*12")
    np.testing.assert_array_equal(right, again)  # same seed, same keys: the same dream
    assert np.abs(right - left).max() > 0.01  # other keys: another dream
    assert not np.array_equal(real_right, real_left)  # and the real game beside it answers too


def test_headless_command_writes_the_video_and_records_a_dataset(lively_checkpoint: Path, tmp_path: Path) -> None:
    video, record = tmp_path / "play.mp4", tmp_path / "recorded"
    result = run([sys.executable, "-m", "src.play", "--checkpoint", str(lively_checkpoint), "--headless", "--keys",
                  "RIGHT*20,LEFT+FIRE*15,NOOP*5", "--video", str(video), "--seed", "3", "--record", str(record), "--side_by_side"])
    assert result.returncode == 0, result.stderr
    assert "played 40 steps headless" in result.stdout
    frames = iio.imread(video)
    assert frames.shape[0] == 40 and frames.shape[2] > 2 * 84 * 6  # side by side, upscaled
    data = ShardedDataset(record, verify="full")  # checksums, sizes, manifest: a valid dataset
    assert len(data) == 40 and data.manifest.policy == "human" and data.manifest.complete
    assert data.column("action").tolist() == [2] * 20 + [5] * 15 + [0] * 5
    check_consecutive(record)  # row i+1 is the step after row i


def test_recording_keeps_each_stretch_in_its_own_shard(lively_checkpoint: Path, tmp_path: Path) -> None:
    state = read_checkpoint(lively_checkpoint)
    recorder = Recorder(tmp_path / "rec", state["dataset"], seed=0)
    dream = Dream(model_from_checkpoint(state).eval(), state["dataset"], torch.device("cpu"), 0, recorder=recorder)
    dream.toggle_recording()
    run_headless(dream, [2] * 7, scale=1, both=False, show=ignore)
    dream.toggle_recording()  # off: the stretch becomes a shard
    run_headless(dream, [3] * 5, scale=1, both=False, show=ignore)  # not recorded
    dream.toggle_recording()
    run_headless(dream, [1] * 4, scale=1, both=False, show=ignore)
    dream.new_start()  # N while recording: the stretch ends there too (a shard holds consecutive steps)
    run_headless(dream, [2] * 3, scale=1, both=False, show=ignore)
    recorder.cut()
    recorder.close()
    data = ShardedDataset(tmp_path / "rec", verify="full")
    assert [s["rows"] for s in data.shards] == [7, 4, 3] and data.column("action").tolist() == [2] * 7 + [1] * 4 + [2] * 3
    check_consecutive(tmp_path / "rec")


def test_window_opens_and_renders_under_the_dummy_driver(lively_checkpoint: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    state = read_checkpoint(lively_checkpoint)
    recorder = Recorder(tmp_path / "rec", state["dataset"], seed=0)
    dream = Dream(model_from_checkpoint(state).eval(), state["dataset"], torch.device("cpu"), 0, recorder=recorder)
    pygame.display.init()  # the display only: no audio device is needed
    pygame.display.set_mode((10, 10))
    for key in (pygame.K_r, pygame.K_RIGHT, pygame.K_TAB):  # record, hold RIGHT, then the dream alone
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
    result = run_window(dream, fps=200, scale=2, max_frames=12)
    assert result["frames"] == 12 and dream.steps == 12 and dream.recording
    recorder.cut()
    recorder.close()
    assert ShardedDataset(tmp_path / "rec").column("action").tolist() == [2] * 12  # RIGHT was held throughout
    assert not pygame.display.get_init()  # the window closed



def test_start_from_a_dataset(lively_checkpoint: Path, small_dataset: Path) -> None:
    """With --data_dir the dream starts from recorded frames; there is no real game to show beside it."""
    state = read_checkpoint(lively_checkpoint)
    dream = Dream(model_from_checkpoint(state).eval(), state["dataset"], torch.device("cpu"), 5,
                  dataset=ShardedDataset(small_dataset, verify="none"))
    first = dream.context.clone()
    assert first.shape == (1, 4, 84, 84) and first.max() > 0 and dream.real_obs is None
    frames: list[np.ndarray] = []
    run_headless(dream, [2] * 3, scale=2, both=True, show=frames.append)
    assert dream.steps == 3 and len(frames) == 3
    dream.new_start()
    assert dream.steps == 0 and not torch.equal(dream.context, first)  # another recorded start
