"""The DQN Replay Dataset import: files written here exactly as Dopamine's OutOfGraphReplayBuffer.save writes them
(np.save into a GzipFile, the padding of 3 zero entries before each episode, a buffer that wrapped) read into a
compact dataset step for step; a corrupt or truncated file is one line and writes nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from src.dataset import import_dqn_replay
from src.dataset.schema import DQN_REPLAY, FRAMES
from src.dataset.shards import ShardedDataset
from tests.conftest import error_line, run_main

ZERO = np.zeros((84, 84), np.uint8)


def save(path: Path, array: np.ndarray) -> None:
    """As Dopamine saves a buffer's array: np.save into a GzipFile."""
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb") as out:
        np.save(out, array, allow_pickle=False)


def dopamine_buffer(episodes: list[int], capacity: int, rng: np.random.Generator) -> tuple[dict, list[list[tuple]]]:
    """The entries that Dopamine's add() makes of these episodes (lengths), in a buffer of `capacity` entries (the
    oldest overwritten past it), and each episode's (frame, action, reward, terminal) entries."""
    entries, truth = [], []
    for length in episodes:
        entries += [(ZERO, 0, 0.0, 0)] * 3  # _add_zero_transition x (stack_size - 1)
        episode = [
            (rng.integers(1, 256, (84, 84), dtype=np.uint8), int(rng.integers(6)), float(i % 7 == 3), i == length - 1)
            for i in range(length)
        ]
        entries += episode
        truth.append(episode)
    store = {
        "observation": np.zeros((capacity, 84, 84), np.uint8),
        "action": np.zeros(capacity, np.int32),
        "reward": np.zeros(capacity, np.float32),
        "terminal": np.zeros(capacity, np.uint8),
    }
    for i, (frame, action, reward, terminal) in enumerate(entries):
        at = i % capacity
        store["observation"][at], store["action"][at], store["reward"][at], store["terminal"][at] = (
            frame,
            action,
            reward,
            terminal,
        )
    return {**store, "add_count": np.array(len(entries))}, truth


def write_checkpoint(replay: Path, n: int, buffer: dict) -> None:
    replay.mkdir(parents=True, exist_ok=True)
    for name in ("observation", "action", "reward", "terminal"):
        save(replay / f"$store$_{name}_ckpt.{n}.gz", buffer[name])
    save(replay / f"add_count_ckpt.{n}.gz", buffer["add_count"])


def expected_steps(episode: list[tuple]) -> list[tuple]:
    """What the import makes of one episode: every entry but the last (which has no next frame), the one before it
    ending the episode; stacks padded with zeros at the start."""
    frames = [e[0] for e in episode]
    out = []
    for i in range(len(episode) - 1):
        stack = [ZERO] * max(0, 3 - i) + frames[max(0, i - 3) : i + 1]
        out.append((np.stack(stack), episode[i][1], frames[i + 1], i == len(episode) - 2, episode[i][2]))
    return out


def test_a_replay_imports_step_for_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    replay = tmp_path / "replay_logs"
    first, truth0 = dopamine_buffer([12, 9, 20], capacity=60, rng=rng)  # 53 entries: not wrapped, 7 unused
    wrapped, truth1 = dopamine_buffer([15, 10, 14, 11], capacity=40, rng=rng)  # 62 entries: wrapped, the oldest lost
    write_checkpoint(replay, 0, first)
    write_checkpoint(replay, 1, wrapped)
    out = tmp_path / "pong"
    result = run_main(import_dqn_replay.main, [str(replay), str(out), "--game", "Pong", "--shard_size", "17"])
    assert result.returncode == 0, result.stderr
    # the wrapped buffer keeps entries 22..61: episode 2 (14 steps from entry 31) and episode 3 whole; the rest of
    # episode 1 (entries 22..30) began before the buffer did
    expected = [s for ep in truth0 for s in expected_steps(ep)] + [s for ep in truth1[2:] for s in expected_steps(ep)]
    with ShardedDataset(out) as data:
        assert (data.layout, data.manifest.policy, len(data)) == (FRAMES, DQN_REPLAY, len(expected))
        assert data.manifest.env.repeat_action_probability == 0.25 and "atari-py" in data.manifest.versions
        assert [s["from"].rsplit("/", 1)[1] for s in data.manifest.sessions] == [
            "$store$_observation_ckpt.0.gz",
            "$store$_observation_ckpt.1.gz",
        ]
        for row, (obs, action, next_frame, done, reward) in enumerate(expected):
            step = data.steps(row)
            assert step.obs[0].tobytes() == obs.tobytes(), row
            assert step.next_obs[0, 0].tobytes() == next_frame.tobytes(), row
            assert (step.action[0], bool(step.done[0]), step.reward[0]) == (action, done, reward), row
        assert len(np.unique(data.column("episode"))) == 5
    again = run_main(import_dqn_replay.main, [str(replay), str(out), "--game", "Pong", "--resume"])
    assert again.returncode == 0, again.stderr  # both checkpoints are there: nothing to add
    with ShardedDataset(out) as data:
        assert len(data) == len(expected)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_corrupt_file_is_one_line_and_writes_nothing(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(1)
    replay = tmp_path / "replay_logs"
    write_checkpoint(replay, 0, dopamine_buffer([30, 30], capacity=70, rng=rng)[0])
    path = replay / "$store$_observation_ckpt.0.gz"
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    out = tmp_path / "pong"
    line = error_line(run_main(import_dqn_replay.main, [str(replay), str(out), "--game", "Pong"]))
    assert str(path) in line and "download it again" in line
    assert not out.exists()


def test_a_wrong_game_or_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    replay = tmp_path / "replay_logs"
    buffer = dopamine_buffer([10], capacity=20, rng=rng)[0]
    buffer["action"][5] = 17  # an action of the full set: not Pong's 6
    write_checkpoint(replay, 0, buffer)
    line = error_line(run_main(import_dqn_replay.main, [str(replay), str(tmp_path / "a"), "--game", "Pong"]))
    assert "is --game right?" in line
    line = error_line(
        run_main(import_dqn_replay.main, [str(replay), str(tmp_path / "b"), "--game", "Pong", "--checkpoints", "3"])
    )
    assert "ckpt.3.gz" in line and "checkpoints there: 0" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
