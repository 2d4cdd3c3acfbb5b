"""Playing inside the model: keys become the game's actions, the model answers them, and what is played records."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from src.dataset.recorder import SHARD_ROWS, Recorder
from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import WARMUP_STEPS, Transition
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.models.run import TrainedOn
from src.models.world_model import ModelConfig, build_model
from src.playing.dream import Dream
from src.playing.keys import MAX_STEPS, action_for, parse_keys
from src.playing.window import INTERRUPTS, run_headless, run_window
from src.utils.checkpoint import save_checkpoint
from src.utils.device import choose_device
from src.utils.errors import UserError, run_cli
from src.utils.io import try_lock
from src.utils.video import VideoWriter
from tests.conftest import ROOT, check_consecutive, run

PONG = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
FULL = [
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
]


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
    for bad, message in (
        ("RIHGT*3", "unknown key 'RIHGT'"),
        ("RIGHT*x", "cannot read 'RIGHT*x'"),
        (",", "--keys is empty"),
    ):
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
    dream = Dream(model_from_checkpoint(state).eval(), TrainedOn.of(state), torch.device("cpu"), seed)
    imagined, real = [], []
    for action in parse_keys(keys, state["dataset"]["action_meanings"]):
        dream.step(action)
        imagined.append(dream.context[0, -1].numpy().copy())
        real.append(dream.real_obs[-1].copy())
    return np.stack(imagined), np.stack(real)


@pytest.mark.slow  # three dreams of 12 steps beside the real game
def test_the_model_answers_the_keys(lively_checkpoint: Path) -> None:
    right, real_right = dream_frames(lively_checkpoint, "RIGHT*12")
    left, real_left = dream_frames(lively_checkpoint, "LEFT*12")
    again, _ = dream_frames(lively_checkpoint, "RIGHT*12")
    np.testing.assert_array_equal(right, again)  # same seed, same keys: the same dream
    assert np.abs(right - left).max() > 0.01  # other keys: another dream
    assert not np.array_equal(real_right, real_left)  # and the real game beside it answers too


@pytest.mark.slow  # starts play as a process
def test_headless_command_writes_the_video_and_records_a_dataset(lively_checkpoint: Path, tmp_path: Path) -> None:
    video, record = tmp_path / "play.mp4", tmp_path / "recorded"
    result = run(
        [
            sys.executable,
            "-m",
            "src.play",
            "--checkpoint",
            str(lively_checkpoint),
            "--headless",
            "--keys",
            "RIGHT*20,LEFT+FIRE*15,NOOP*5",
            "--video",
            str(video),
            "--seed",
            "3",
            "--record",
            str(record),
            "--side_by_side",
        ]
    )
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
    recorder = Recorder(tmp_path / "rec", TrainedOn.of(state).settings, seed=0)
    dream = Dream(model_from_checkpoint(state).eval(), TrainedOn.of(state), torch.device("cpu"), 0, recorder=recorder)
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
    assert [s["rows"] for s in data.shards] == [7, 4, 3] and data.column("action").tolist() == [2] * 7 + [1] * 4 + [
        2
    ] * 3
    check_consecutive(tmp_path / "rec")


def test_window_opens_and_renders_under_the_dummy_driver(
    lively_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    state = read_checkpoint(lively_checkpoint)
    recorder = Recorder(tmp_path / "rec", TrainedOn.of(state).settings, seed=0)
    dream = Dream(model_from_checkpoint(state).eval(), TrainedOn.of(state), torch.device("cpu"), 0, recorder=recorder)
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


# ---------------------------------------------------------------------------------------------- scores and episode ends


def scoring_dream(checkpoint: Path, reward_sign: int, end_logit: float, **kwargs) -> Dream:
    """A Dream of the checkpoint whose event head always says `reward_sign` and, through `end_logit`, ends or not: its
    last layer's weights zero, its biases (reward logits in the order -1, 0, +1, then the end logit) set."""
    state = read_checkpoint(checkpoint)
    model = model_from_checkpoint(state).eval()
    with torch.no_grad():
        model.events.out.weight.zero_()
        model.events.out.bias.copy_(torch.tensor([-20.0, -20.0, -20.0, end_logit]))
        model.events.out.bias[reward_sign + 1] = 20.0
    return Dream(model, TrainedOn.of(state), torch.device("cpu"), 0, **kwargs)


def real_rewards(dream: Dream, every: int) -> list[float]:
    """Make the real game pay 1 every `every`-th step (Pong pays rarely in a few steps); the rewards it paid, kept."""
    paid, step = [], dream.game.step

    def paying(action: int) -> Transition:
        real = step(action)
        real.reward = float((len(paid) + 1) % every == 0)
        paid.append(real.reward)
        return real

    dream.game.step = paying
    return paid


def test_the_dreams_score_follows_its_reward_head(lively_checkpoint: Path) -> None:
    dream = scoring_dream(lively_checkpoint, reward_sign=1, end_logit=-20.0)
    paid = real_rewards(dream, every=3)
    frames: list[np.ndarray] = []
    run_headless(dream, [2] * 7, scale=2, both=True, show=frames.append)
    assert dream.score == 7 and dream.reward == 1 and dream.real_score == sum(paid) == 2 and dream.starts == 1
    assert dream.end_probability < 1e-8 and dream.score_text() == "dream score 7 (+1)   real score 2"
    assert len(frames) == 7 and frames[0].shape == frames[-1].shape
    dream.new_start()  # N: both scores start again
    assert dream.score == dream.real_score == 0 and dream.score_text() == "dream score 0   real score 0"

    losing = scoring_dream(lively_checkpoint, reward_sign=-1, end_logit=-20.0)
    run_headless(losing, [3] * 4, scale=1, both=False, show=ignore)
    assert losing.score == -4 and losing.score_text().startswith("dream score -4 (-1)   real score ")


def test_the_dream_ends_when_its_end_head_says_so_and_starts_anew(lively_checkpoint: Path, tmp_path: Path) -> None:
    """Each step ends the dream's episode: its score shows in the band and both games start anew, as N does; the real
    steps played are recorded all the same, a stretch (shard) per start."""
    state = read_checkpoint(lively_checkpoint)
    recorder = Recorder(tmp_path / "rec", TrainedOn.of(state).settings, seed=0)
    dream = scoring_dream(lively_checkpoint, reward_sign=1, end_logit=20.0, recorder=recorder)
    dream.toggle_recording()
    frames: list[np.ndarray] = []
    run_headless(dream, [2], scale=2, both=True, show=frames.append)
    assert dream.end_probability == 0 and dream.steps == 0 and dream.starts == 2 and dream.episode == 1  # started anew
    assert dream.score == 0 and dream.played == 1 and len(frames) == 1
    assert dream.notice == dream.score_text() == "dream over: score 1   real score 0   new start"
    run_headless(dream, [3, 2], scale=2, both=True, show=frames.append)
    assert (
        dream.starts == 4
        and dream.played == 3
        and dream.score_text() == "dream over: score 1   real score 0   new start"
    )
    dream.new_start()  # N clears it
    assert dream.score_text() == "dream score 0   real score 0"
    recorder.cut()
    recorder.close()
    data = ShardedDataset(tmp_path / "rec", verify="full")
    assert [s["rows"] for s in data.shards] == [1, 1, 1] and data.column("action").tolist() == [2, 3, 2]
    assert data.column("episode").tolist() == [0, 1, 2]
    check_consecutive(tmp_path / "rec")


def test_a_frames_only_model_plays_without_a_score(lively_checkpoint: Path) -> None:
    """No event head: no dream score and no dream end; the real game's end (it cuts episodes at 60 steps, the no-op
    start and the warm-up among them) still starts both anew and shows the real score."""
    state = read_checkpoint(lively_checkpoint)
    model = build_model(
        ModelConfig(channels=[8, 16], action_embed_dim=8, events=False), state["dataset"]["num_actions"]
    ).eval()
    dream = Dream(model, TrainedOn.of(state), torch.device("cpu"), 0)
    paid = real_rewards(dream, every=10)
    texts, frames = [], []
    while dream.starts == 1 and dream.played < 60:
        texts.append(dream.score_text())
        run_headless(dream, [2], scale=1, both=True, show=frames.append)
    n = dream.played
    assert dream.starts == 2 and dream.steps == 0 and 10 < n < 60 - 8 and len(frames) == n and dream.score == 0
    assert (
        texts[1] == "the model predicts no score   real score 0"
        and texts[-1] == f"the model predicts no score   real score {(n - 1) // 10}"
    )
    assert dream.score_text() == f"real game over: score {n // 10}   new start" and sum(paid[:n]) == n // 10
    run_headless(dream, [2] * 30, scale=1, both=True, show=frames.append)  # the notice is gone after NOTICE_STEPS
    assert len(paid) == n + WARMUP_STEPS + 30  # the new start's warm-up steps do not count
    assert dream.score_text() == f"the model predicts no score   real score {sum(paid[n + WARMUP_STEPS :]):.0f}"


def test_start_from_a_dataset(lively_checkpoint: Path, small_dataset: Path) -> None:
    """With --data_dir the dream starts from recorded frames; there is no real game to show beside it."""
    state = read_checkpoint(lively_checkpoint)
    dream = Dream(
        model_from_checkpoint(state).eval(),
        TrainedOn.of(state),
        torch.device("cpu"),
        5,
        dataset=ShardedDataset(small_dataset, verify="none"),
    )
    first = dream.context.clone()
    assert first.shape == (1, 4, 84, 84) and first.max() > 0 and dream.real_obs is None
    frames: list[np.ndarray] = []
    run_headless(dream, [2] * 3, scale=2, both=True, show=frames.append)
    assert dream.steps == 3 and len(frames) == 3
    dream.new_start()
    assert dream.steps == 0 and not torch.equal(dream.context, first)  # another recorded start


# ---------------------------------------------------------------------------------------------- recording, crash-safe

SETTINGS = EnvSettings(game="Pong", max_episode_steps=60)


def consecutive_steps(n: int, seed: int = 0, first: int = 0) -> list[Transition]:
    """n synthetic transitions of one episode whose frames follow each other, as a game's do (no emulator: fast)."""
    frames = np.random.default_rng(seed).integers(0, 256, (first + n + 4, 84, 84), dtype=np.uint8)
    return [
        Transition(frames[t : t + 4], t % 6, frames[t + 1 : t + 5], False, float(t % 3 == 0))
        for t in range(first, first + n)
    ]


def listed_rows(root: Path) -> list[int]:
    return [s["rows"] for s in json.loads((root / "manifest.json").read_text())["shards"]]


def test_recorder_writes_a_shard_every_256_rows_so_a_kill_loses_less(tmp_path: Path) -> None:
    """Rows reach the disk as they are recorded, not at the end of the stretch: what a kill (no cut, no close) leaves
    is a full, checksummed dataset of consecutive steps, continued by the next recorder with later episode ids."""
    root, info = tmp_path / "rec", SETTINGS
    recorder = Recorder(root, info, seed=0)
    steps = consecutive_steps(600)
    for i, step in enumerate(steps):
        recorder.add(step, episode=0)
        if i == SHARD_ROWS - 1:
            assert listed_rows(root) == [SHARD_ROWS]  # listed as soon as it is full
    assert listed_rows(root) == [SHARD_ROWS, SHARD_ROWS] and len(recorder.rows) == 600 - 2 * SHARD_ROWS
    del recorder  # killed: no cut, and the kernel drops the lock with the process (here: with the file)
    gc.collect()
    (root / ".tmp_play2_obs.npy").write_bytes(b"half a shard")  # what a kill mid-shard leaves
    data = ShardedDataset(root, verify="full")
    assert len(data) == 2 * SHARD_ROWS and data.column("episode").tolist() == [0] * (2 * SHARD_ROWS)
    stream = np.concatenate([data.array(pos, "obs") for pos in range(2)])  # the two shards continue each other
    np.testing.assert_array_equal(stream, np.stack([s.obs for s in steps[: 2 * SHARD_ROWS]]))
    check_consecutive(root)

    with Recorder(root, info, seed=1) as again:  # the same command again: the recording continues
        assert again.continued and again.session == 1 and not (root / ".tmp_play2_obs.npy").exists()
        for step in consecutive_steps(5, seed=1):
            again.add(step, episode=0)
        assert again.cut() == 5
    manifest = ShardedDataset(root, verify="full").manifest
    assert listed_rows(root) == [SHARD_ROWS, SHARD_ROWS, 5] and [s["session"] for s in manifest.shards] == [0, 0, 1]
    assert (
        manifest.shards[-1]["episodes"] == [1]
        and len(manifest.sessions) == 2
        and manifest.sessions[1]["steps_before"] == 512
    )
    assert manifest.complete and manifest.policy == "human"


def test_a_second_recorder_in_the_same_directory_is_refused_while_the_first_records(tmp_path: Path) -> None:
    """Two plays on one fresh directory: both find it empty, the lock decides, and the loser writes nothing."""
    root, info = tmp_path / "rec", SETTINGS
    with Recorder(root, info, seed=0):
        before = {p.name: p.read_bytes() for p in root.iterdir()}
        with pytest.raises(
            UserError, match=rf"another process \(pid {os.getpid()}\) is writing to '{re.escape(str(root))}'"
        ):
            Recorder(root, info, seed=0)
        assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    with Recorder(root, info, seed=0) as later:  # once the first has ended, the next one continues
        assert later.continued and later.session == 1


@pytest.mark.parametrize("case", ["file", "foreign", "shards-no-manifest", "policy", "settings", "ale-py"])
def test_recording_refuses_a_directory_it_cannot_continue(case: str, tmp_path: Path, small_dataset: Path) -> None:
    """One line naming the problem, and nothing in the directory touched (not even a lock file made)."""
    root, info = tmp_path / "rec", SETTINGS
    if case == "file":
        root.write_text("mine")
    elif case == "foreign":
        root.mkdir()
        (root / "notes.txt").write_text("mine")
    elif case == "shards-no-manifest":
        shutil.copytree(small_dataset, root)
        (root / "manifest.json").unlink()
    elif case == "policy":
        shutil.copytree(small_dataset, root)
    else:
        with Recorder(root, info, seed=0) as recorder:
            recorder.add(consecutive_steps(1)[0], 0)
        if case == "ale-py":
            manifest = json.loads((root / "manifest.json").read_text())
            manifest["versions"]["ale-py"] = "0.0.1"
            (root / "manifest.json").write_text(json.dumps(manifest))
        else:
            info = EnvSettings(game="Pong", max_episode_steps=61)
    before = {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    expected = {
        "file": "is a file, not a directory; choose a new directory for the recording",
        "foreign": "is not empty; choose a new directory for the recording ('notes.txt' is not a file of a dataset)",
        "shards-no-manifest": (
            "is not empty; choose a new directory for the recording (it holds shards but no manifest.json)"
        ),
        "policy": (
            "is not empty; choose a new directory for the recording (it holds a dataset of policy 'random', not a play"
        ),
        "settings": (
            "holds a play recording with max_episode_steps 60, the checkpoint's game has 61; choose a new directory"
        ),
        "ale-py": "was recorded with ale-py 0.0.1, this is ale-py",
    }[case]
    with pytest.raises(UserError, match=re.escape(expected)):
        Recorder(root, info, seed=0)
    assert {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


# ---------------------------------------------------------------------------------------------- streaming the video


@pytest.mark.slow  # 14 dreamt steps, and a video encoded
def test_headless_play_streams_each_frame_as_it_is_made(lively_checkpoint: Path, tmp_path: Path) -> None:
    """run_headless holds no (K, H, W, 3) array: each frame goes to `show` at the step that made it, and the video
    written from them has one frame per step."""
    state = read_checkpoint(lively_checkpoint)
    dream = Dream(model_from_checkpoint(state).eval(), TrainedOn.of(state), torch.device("cpu"), 0)
    seen: list[tuple[int, tuple[int, ...]]] = []
    rate = run_headless(dream, [2] * 5, scale=2, both=True, show=lambda frame: seen.append((dream.played, frame.shape)))
    assert isinstance(rate, float) and rate > 0  # a number, not the frames
    assert [played for played, _ in seen] == [1, 2, 3, 4, 5]  # shown at once, one at a time
    assert all(len(shape) == 3 and shape[2] == 3 for _, shape in seen)

    with VideoWriter(tmp_path / "play.mp4", fps=15) as video:
        run_headless(dream, [3] * 9, scale=2, both=False, show=video.append)
        assert not (tmp_path / "play.mp4").exists()  # written under a temporary name until it is complete
    assert video.written == tmp_path / "play.mp4" and video.frames == 9
    assert iio.imread(tmp_path / "play.mp4", plugin="FFMPEG").shape[0] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["play.mp4"]


# ---------------------------------------------------------------------------------------------- signals and kills


@pytest.fixture(scope="module")
def long_checkpoint(lively_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lively checkpoint whose game runs 27,000-step episodes (the short run's data cut them at 60): the real
    game's stretches outlast a shard, so that recording cuts shards at SHARD_ROWS. Its event head never calls an end
    (the end logit's bias far below 0): six steps on 60-step episodes teach it that ends are common, and a dream that
    ends starts anew and cuts the stretch, as the real game's end does."""
    state = read_checkpoint(lively_checkpoint)
    state["dataset"]["env_settings"]["max_episode_steps"] = 27_000
    state["model"]["events.out.bias"][3] = -100.0  # the end's logit (REWARD_SIGNS' three come first)
    path = tmp_path_factory.mktemp("play") / "long.pt"
    save_checkpoint(path, state)
    return path


def start_play(checkpoint: Path, record: Path, video: Path, steps: int) -> subprocess.Popen:
    """A headless play of `steps` NOOPs recording into `record`, once it has listed its first full shard."""
    cmd = [
        sys.executable,
        "-m",
        "src.play",
        "--checkpoint",
        str(checkpoint),
        "--headless",
        "--keys",
        f"NOOP*{steps}",
        "--video",
        str(video),
        "--record",
        str(record),
        "--scale",
        "1",
    ]
    before = len(listed_rows(record)) if (record / "manifest.json").exists() else 0
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if len(listed_rows(record)) > before:
                break
        except (OSError, ValueError):  # not there yet
            pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.slow
def test_ctrl_c_and_sigterm_keep_every_step_played_and_the_next_play_continues(
    long_checkpoint: Path, tmp_path: Path
) -> None:
    record, played = tmp_path / "rec", []
    for i, (signum, code) in enumerate([(signal.SIGINT, 130), (signal.SIGTERM, 143)]):
        proc = start_play(long_checkpoint, record, tmp_path / f"play{i}.mp4", steps=100_000)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, (out, err)
        n = int(re.search(r"^interrupted: played (\d+) steps headless", out, flags=re.M)[1])
        assert f"recorded {n} real steps in {record}" in out and "Traceback" not in err
        assert (
            n >= SHARD_ROWS and iio.imread(tmp_path / f"play{i}.mp4", plugin="FFMPEG").shape[0] == n
        )  # the video so far, kept
        played.append(n)
    data = ShardedDataset(record, verify="full")
    assert len(data) == sum(played)  # not a row lost
    sessions = [s["session"] for s in data.shards]
    assert sessions == sorted(sessions) and set(sessions) == {0, 1}
    assert sum(s["rows"] for s in data.shards if s["session"] == 1) == played[1]
    assert [s["episodes"] for s in data.shards][0] == [0] and [s["episodes"] for s in data.shards][-1] == [1]
    first = [s["rows"] for s in data.shards if s["session"] == 0]
    assert first == [SHARD_ROWS] * (len(first) - 1) + [
        played[0] - SHARD_ROWS * (len(first) - 1)
    ]  # a shard every 256 rows
    check_consecutive(record)


@pytest.mark.slow
def test_a_kill_loses_only_the_shard_being_filled_and_the_next_play_continues(
    long_checkpoint: Path, tmp_path: Path
) -> None:
    record = tmp_path / "rec"
    proc = start_play(long_checkpoint, record, tmp_path / "play.mp4", steps=100_000)
    time.sleep(0.5)
    proc.kill()
    proc.communicate()
    kept = ShardedDataset(record, verify="full")  # every listed shard whole and intact
    assert len(kept) >= SHARD_ROWS and all(s["rows"] == SHARD_ROWS for s in kept.shards)
    check_consecutive(record)
    result = run(
        [
            sys.executable,
            "-m",
            "src.play",
            "--checkpoint",
            str(long_checkpoint),
            "--headless",
            "--keys",
            "RIGHT*7",
            "--video",
            str(tmp_path / "again.mp4"),
            "--record",
            str(record),
            "--scale",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert f"continuing the recording in {record} ({len(kept)} steps so far)" in result.stdout
    data = ShardedDataset(record, verify="full")
    assert (
        len(data) == len(kept) + 7
        and data.shards[-1]["episodes"] == [1]
        and data.column("action")[-7:].tolist() == [2] * 7
    )
    assert not [p.name for p in record.iterdir() if p.name.startswith(".tmp_")]  # what the kill left was cleared


# ---------------------------------------------------------------------------------------------- devices and numbers


def test_a_device_this_machine_lacks_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("cpu") == torch.device("cpu") and choose_device(None) == torch.device("cpu")
    for requested, message in (
        ("cuda", "--device cuda: CUDA is not available on this machine; use --device cpu"),
        ("cuda:1", "--device cuda:1: CUDA is not available"),
        ("gpu", "--device gpu: not a device; use cpu, cuda, cuda:N (the N-th GPU) or mps"),
        ("cuda:x", "--device cuda:x: not a device"),
        ("meta", "--device meta: not a device"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            choose_device(requested)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(
        UserError, match=re.escape("--device cuda:2: this machine has 2 CUDA devices (cuda:0 to cuda:1)")
    ):
        choose_device("cuda:2")
    assert (
        choose_device(None, local_rank=1) == torch.device("cuda", 1)
        and choose_device(None, cpu=True, local_rank=5).type == "cpu"
    )
    with pytest.raises(
        UserError, match=re.escape("this is process 2 of this machine (torchrun LOCAL_RANK), but it has 2 CUDA")
    ):
        choose_device(None, local_rank=2)  # torchrun --nproc_per_node 3 on a machine with 2 GPUs


def test_keys_repeat_and_length_are_bounded() -> None:
    assert len(parse_keys(f"NOOP*{MAX_STEPS - 1},RIGHT", PONG)) == MAX_STEPS
    for bad, message in (
        (f"NOOP*{MAX_STEPS + 1}", f"'NOOP*{MAX_STEPS + 1}' repeats {MAX_STEPS + 1} times; N must be in [1, 1,000,000]"),
        ("NOOP*0", "'NOOP*0' repeats 0 times"),
        ("NOOP*" + "9" * 5000, "'NOOP*9999999999999999...' repeats 999999999999999999999... times"),
        (f"NOOP*{MAX_STEPS},RIGHT", "the sequence is longer than 1,000,000 steps (at 'RIGHT'); play it in parts"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            parse_keys(bad, PONG)


def with_cuda_gone(c: SimpleNamespace) -> None:
    c.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def locked_record_dir(c: SimpleNamespace) -> None:
    (c.tmp / "rec").mkdir()
    lock, _ = try_lock(c.tmp / "rec" / ".lock")
    c.hold.append(lock)


def other_settings_recording(c: SimpleNamespace) -> None:
    """The small dataset, made to look like a play recording of Pong with another frame skip."""
    manifest = json.loads((c.copy / "manifest.json").read_text())
    manifest["policy"], manifest["env"]["frame_skip"] = "human", 3
    (c.copy / "manifest.json").write_text(json.dumps(manifest))


def foreign_file(c: SimpleNamespace) -> None:
    (c.tmp / "mine").mkdir()
    (c.tmp / "mine" / "notes.txt").write_text("mine")


HEADLESS = ["--headless", "--keys", "RIGHT", "--video", "{tmp}/play.mp4"]
BAD_INPUT = {  # id: (argv after --checkpoint, the line's text, setup); the cases of docs/errors.md this file adds
    "play-device-unavailable": (
        [*HEADLESS, "--device", "cuda", "--record", "{tmp}/rec"],
        "--device cuda: CUDA is not available on this machine; use --device cpu",
        with_cuda_gone,
    ),
    "device-unknown": (
        [*HEADLESS, "--device", "gpu"],
        "--device gpu: not a device; use cpu, cuda, cuda:N (the N-th GPU) or mps",
        None,
    ),
    "play-scale-out-of-range": ([*HEADLESS, "--scale", "17"], "--scale must be in [1, 16], got 17", None),
    "play-fps-out-of-range": ([*HEADLESS, "--fps", "1000"], "--fps must be in (0, 240], got 1000", None),
    "play-seed-out-of-range": ([*HEADLESS, "--seed", "-1"], "--seed must be in [0, 2147483647], got -1", None),
    "play-keys-too-long": (
        ["--headless", "--keys", "NOOP*2000000", "--video", "{tmp}/play.mp4"],
        "--keys: 'NOOP*2000000' repeats 2000000 times; N must be in [1, 1,000,000]",
        None,
    ),
    "play-gif-too-long": (
        ["--headless", "--keys", "NOOP*1001", "--video", "{tmp}/play.gif"],
        "--video: a .gif holds at most 1000 frames, --keys plays 1001 steps; write an .mp4",
        None,
    ),
    "play-video-folder-missing": (
        ["--headless", "--keys", "RIGHT", "--video", "{tmp}/nowhere/play.mp4"],
        "--video: the folder of '{tmp}/nowhere/play.mp4' does not exist; create it or choose another path",
        None,
    ),
    "play-record-not-a-recording": (
        [*HEADLESS, "--record", "{copy}"],
        "--record '{copy}' is not empty; choose a new directory for the "
        "recording (it holds a dataset of policy 'random', not a play recording to continue)",
        None,
    ),
    "play-record-foreign": (
        [*HEADLESS, "--record", "{tmp}/mine"],
        "--record '{tmp}/mine' is not empty; choose a new directory for the "
        "recording ('notes.txt' is not a file of a dataset)",
        foreign_file,
    ),
    "play-record-other-settings": (
        [*HEADLESS, "--record", "{copy}"],
        "--record '{copy}' holds a play recording with frame_skip 3, the "
        "checkpoint's game has 4; choose a new directory for the recording, or continue a recording of this "
        "checkpoint's game and settings",
        other_settings_recording,
    ),
    "play-record-locked": (
        [*HEADLESS, "--record", "{tmp}/rec"],
        "another process (pid {pid}) is writing to '{tmp}/rec'; wait for it to "
        "end or choose another --record directory",
        locked_record_dir,
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_to_play_is_one_line_and_touches_nothing(
    name: str, short_run, small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As tests/test_bad_input.py runs every row of docs/errors.md: exit 2, one line, no file made, changed or
    removed."""
    from src import play

    monkeypatch.delenv("AWM_DEBUG", raising=False)
    argv, expected, setup = BAD_INPUT[name]
    copy = tmp_path / "pong"
    shutil.copytree(small_dataset, copy)
    c = SimpleNamespace(tmp=tmp_path, copy=copy, monkeypatch=monkeypatch, hold=[], pid=os.getpid())
    if setup:
        setup(c)
    before = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(tmp_path.rglob("*"))}
    checkpoint = Path(short_run[1]["run_dir"]) / "checkpoints" / "last.pt"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_:
        run_cli(play.main, ["--checkpoint", str(checkpoint), *(a.format(**vars(c)) for a in argv)])
    lines = err.getvalue().strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert expected.format(**vars(c)) in lines[0]
    print(f"\n| `{name}` | play | {lines[0]} |")
    assert {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(tmp_path.rglob("*"))} == before
    for lock in c.hold:
        lock.close()


def test_sigterm_in_the_window_stops_after_the_whole_step_and_keeps_its_row(
    lively_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal that lands inside a step waits for the step's end (its row and picture), then the loop stops as a
    KeyboardInterrupt, after the window is closed; the rows recorded are all there to cut."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    state = read_checkpoint(lively_checkpoint)
    recorder = Recorder(tmp_path / "rec", TrainedOn.of(state).settings, seed=0)
    dream = Dream(model_from_checkpoint(state).eval(), TrainedOn.of(state), torch.device("cpu"), 0, recorder=recorder)
    dream.toggle_recording()
    step = dream.step

    def step_then_signal(action: int) -> None:
        step(action)
        if dream.played == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # mid-step: its row is recorded, its frame not yet shown

    monkeypatch.setattr(dream, "step", step_then_signal)
    with INTERRUPTS.installed(), pytest.raises(KeyboardInterrupt):
        run_window(dream, fps=200, scale=1, max_frames=50)
    assert dream.played == 5 and INTERRUPTS.exit_code == 143 and not pygame.display.get_init()
    assert recorder.cut() == 5
    recorder.close()
    assert len(ShardedDataset(tmp_path / "rec")) == 5


def test_play_takes_a_run_folder_for_its_best_checkpoint(short_run, tmp_path: Path) -> None:
    """Catches --checkpoint refusing the run folder that train printed (`play --checkpoint runs/<run>`), or one line
    missing for a folder that holds no checkpoint (with nothing written)."""
    from src import play

    run_dir = Path(short_run[1]["run_dir"])
    video = tmp_path / "play.mp4"
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit) as exit_:
        run_cli(play.main, ["--checkpoint", str(run_dir), "--headless", "--keys", "RIGHT*3", "--video", str(video)])
    assert exit_.value.code == 0 and "played 3 steps headless" in out.getvalue() and iio.imread(video).shape[0] == 3
    (tmp_path / "empty").mkdir()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        run_cli(
            play.main,
            [
                "--checkpoint",
                str(tmp_path / "empty"),
                "--headless",
                "--keys",
                "RIGHT",
                "--video",
                str(tmp_path / "v.mp4"),
            ],
        )
    assert exit_.value.code == 2 and err.getvalue() == (
        f"error: --checkpoint '{tmp_path / 'empty'}' is a folder without checkpoints/best.pt or checkpoints/last.pt; "
        "pass a run folder written by src.train (runs/<run>) or a .pt file\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "play.mp4"]
