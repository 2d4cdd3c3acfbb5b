"""The on-disk dataset: layout, row order, windows, round trips and validation against the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xxhash

from src.dataset.manifest import DatasetError, Manifest
from src.dataset.shards import ShardedDataset, ShardWriter, promote_shard, shard_path, valid_starts
from src.envs.atari import EnvSettings
from tests.conftest import INSPECT, SMALL, check_consecutive, error_line, run

SPEC = {  # the arrays of the README's "On disk" (the contract's four, plus reward and episode)
    "obs": (np.uint8, (4, 84, 84)),
    "next_obs": (np.uint8, (1, 84, 84)),
    "action": (np.int64, ()),
    "done": (np.bool_, ()),
    "reward": (np.float32, ()),
    "episode": (np.int64, ()),
}


def test_files_dtypes_shapes_and_manifest(small_dataset: Path) -> None:
    """Catches a field written with the wrong dtype/shape, or a manifest that misses what the contract lists."""
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    assert manifest["game"] == "Pong" and manifest["env_id"] == "ALE/Pong-v5"
    assert manifest["num_actions"] == 6 and manifest["action_meanings"][0] == "NOOP"
    assert {"ale-py", "gymnasium"} <= set(manifest["versions"])
    assert manifest["env"]["repeat_action_probability"] == 0.0 and manifest["env"]["frame_skip"] == 4
    assert manifest["seed"] == SMALL["seed"] and manifest["policy"] == "random"
    assert manifest["complete"] and manifest["totals"]["steps"] == SMALL["steps"]
    assert sum(s["rows"] for s in manifest["shards"]) == SMALL["steps"]
    assert all(s["rows"] <= SMALL["shard_size"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        for field, (dtype, shape) in SPEC.items():
            array = np.load(shard_path(small_dataset, shard["index"], field), mmap_mode="r")
            assert array.dtype == dtype and array.shape == (shard["rows"], *shape), field
            assert len(shard["files"][field]["xxh3_128"]) == 32
    assert not [p for p in small_dataset.iterdir() if p.name.startswith(".tmp")]


def test_rows_are_consecutive_steps(small_dataset: Path) -> None:
    """Catches interleaved environments or off-by-one next frames: next_obs[i] is obs[i+1]'s newest frame."""
    assert check_consecutive(small_dataset) >= 10  # episodes of 60 steps: many ends were crossed


def test_actions_are_valid_and_varied(small_dataset: Path) -> None:
    data = ShardedDataset(small_dataset, verify="none")
    counts = np.bincount(data.column("action"), minlength=data.num_actions)
    assert len(counts) == 6 and counts.min() > 100  # uniform random over 6 actions, 1200 steps


def brute_force_starts(done: np.ndarray, k: int) -> list[int]:
    return [s for s in range(len(done) - k + 1) if not done[s : s + k - 1].any()]


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_valid_starts_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    for n in [0, 1, 5, 40, 200]:
        done = rng.random(n) < 0.15
        assert valid_starts(done, k).tolist() == brute_force_starts(done, k)


def test_windows_never_cross_an_episode_end(small_dataset: Path) -> None:
    """Catches windows that span two episodes (or two shards), which would teach impossible transitions."""
    data = ShardedDataset(small_dataset, verify="none")
    for k in (1, 4, 12):
        starts = data.window_starts(k)
        expected = [
            s + int(data.offsets[pos])
            for pos in range(len(data.shards))
            for s in brute_force_starts(np.asarray(data.array(pos, "done")), k)
        ]
        assert starts.tolist() == expected
        for start in starts[:: max(1, len(starts) // 50)]:
            window = data.steps(int(start), k)
            assert len(np.unique(window.episode)) == 1 and not window.done[:-1].any()
            assert window.frames.shape == (4 + k, 84, 84)
            np.testing.assert_array_equal(window.frames[4:], window.next_obs[:, 0])


def test_random_access_reads_the_right_row(small_dataset: Path) -> None:
    data = ShardedDataset(small_dataset, verify="none")
    for row in [0, 149, 150, 777, len(data) - 1]:
        pos, local = data.locate(row)
        step = data.steps(row)
        for field in SPEC:
            direct = np.load(shard_path(small_dataset, data.shards[pos]["index"], field))[local]
            np.testing.assert_array_equal(getattr(step, field)[0], direct)
    with pytest.raises(IndexError):
        data.steps(len(data))


def test_writer_round_trip_is_byte_equal(tmp_path: Path) -> None:
    """A shard written row by row (across chunk boundaries) reads back byte-equal, with the right checksum."""
    rng = np.random.default_rng(0)
    rows = 150  # > the writer's 64-row chunk
    data = {field: (rng.random((rows, *shape)) * 200).astype(dtype) for field, (dtype, shape) in SPEC.items()}
    data["action"] = rng.integers(6, size=rows)  # Pong's 6 actions: the reader checks them against num_actions
    writer = ShardWriter(tmp_path, "t", rows, context_frames=4, screen_size=84)
    for i in range(rows):
        writer.append(**{field: data[field][i] for field in SPEC})
    entry = writer.finish()
    promote_shard(tmp_path, "t", 0, list(SPEC))
    manifest = Manifest.create(EnvSettings("Pong"), seed=0, policy="random", shard_size=rows, target=rows)
    manifest.add_shard(entry, session=0)
    manifest.write(tmp_path)
    loaded = ShardedDataset(tmp_path, verify="full")
    for field in SPEC:
        on_disk = np.load(shard_path(tmp_path, 0, field))
        np.testing.assert_array_equal(on_disk, data[field])
        assert on_disk.tobytes() == data[field].tobytes()
        assert entry["files"][field]["xxh3_128"] == xxhash.xxh3_128(shard_path(tmp_path, 0, field).read_bytes()).hexdigest()
    assert len(loaded) == rows


def test_flipped_byte_is_caught_by_checksum(dataset_copy: Path) -> None:
    """Catches silent corruption: one flipped byte changes the checksum, and the error names the file."""
    path = shard_path(dataset_copy, 2, "obs")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(raw)
    ShardedDataset(dataset_copy, verify="quick")  # same size and header: only the checksum can tell
    with pytest.raises(DatasetError, match=str(path)):
        ShardedDataset(dataset_copy, verify="full")
    line = error_line(run([*INSPECT, str(dataset_copy)]))
    assert str(path) in line and "checksum" in line


def test_truncated_and_missing_files_are_named(dataset_copy: Path) -> None:
    truncated = shard_path(dataset_copy, 1, "next_obs")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=f"{truncated}.*bytes"):
        ShardedDataset(dataset_copy, verify="quick")
    missing = shard_path(dataset_copy, 0, "action")
    missing.unlink()
    with pytest.raises(DatasetError, match=f"{missing}: missing"):
        ShardedDataset(dataset_copy, verify="quick")


def test_bad_manifest_and_missing_directory(tmp_path: Path, dataset_copy: Path) -> None:
    (dataset_copy / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        ShardedDataset(dataset_copy)
    with pytest.raises(DatasetError, match="does not exist"):
        ShardedDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no manifest"):
        ShardedDataset(tmp_path / "empty")
