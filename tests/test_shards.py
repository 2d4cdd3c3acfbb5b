"""The on-disk dataset: layout, row order, windows, round trips and validation against the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xxhash

from src.dataset import inspect_dataset, shards
from src.dataset.manifest import DatasetError, Manifest
from src.dataset.shard_writer import ShardWriter, promote_shard
from src.dataset.shards import ShardedDataset, shard_path, valid_starts
from src.envs.atari import EnvSettings
from src.utils.io import checksum_file, replaced_atomically
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
        assert (
            entry["files"][field]["xxh3_128"]
            == xxhash.xxh3_128(shard_path(tmp_path, 0, field).read_bytes()).hexdigest()
        )
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


# ---------------------------------------------------------------------------------------------- the verification record

FILES = 9 * len(SPEC)  # 3 games of 400 steps in shards of 150, 150 and 100 rows


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files that the reader hashes, in order; every file counts as settled (just copied or not)."""
    calls: list[str] = []

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return checksum_file(path, *args, **kwargs)

    monkeypatch.setattr(shards, "checksum_file", counting)
    monkeypatch.setattr(shards, "SETTLED_NS", 0)
    return calls


def test_small_dataset_has_nine_shards(small_dataset: Path) -> None:
    assert len(Manifest.read(small_dataset).shards) * len(SPEC) == FILES


def verified_once(root: Path) -> None:
    """A full verification of every file, recorded as a command does once its input is good."""
    data = ShardedDataset(root)
    assert data.save_verification() and (root / shards.VERIFIED_FILE).is_file()


def test_a_second_full_open_hashes_nothing_unchanged(dataset_copy: Path, hashes: list[str]) -> None:
    """Catches re-hashing every file at every start (~2 s per GB), and a record written by merely opening."""
    (dataset_copy / shards.VERIFIED_FILE).unlink(missing_ok=True)
    first = ShardedDataset(dataset_copy)
    assert len(hashes) == first.hashed == FILES and first.unchanged == 0
    assert not (dataset_copy / shards.VERIFIED_FILE).exists()  # opening writes nothing: the command saves it
    assert first.save_verification() and not first.save_verification()  # nothing new the second time
    hashes.clear()
    second = ShardedDataset(dataset_copy)
    assert hashes == [] and second.unchanged == FILES and not second.save_verification()
    assert f"{FILES} taken from .verified.json" in second.describe_verification()
    ShardedDataset(dataset_copy, rehash=True)
    assert len(hashes) == FILES  # rehash ignores the record
    hashes.clear()
    ShardedDataset(dataset_copy, verify="quick")
    assert hashes == []


def test_a_same_size_write_with_its_mtime_set_back_is_caught(dataset_copy: Path, hashes: list[str]) -> None:
    """Catches a record that trusts size and mtime alone: a write in place, its mtime restored with os.utime (as
    touch -d or rsync -t do), keeps size, mtime and inode; only ctime, which no user call sets, shows it."""
    verified_once(dataset_copy)
    path = shard_path(dataset_copy, 2, "obs")
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(before.st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    hashes.clear()
    with pytest.raises(DatasetError, match=f"{path}: checksum differs"):
        ShardedDataset(dataset_copy)
    assert hashes == [path.name]  # the one changed file, and none of those before it
    line = error_line(run([*INSPECT, str(dataset_copy)]))
    assert str(path) in line and "checksum" in line


def test_a_truncated_or_replaced_file_is_caught(dataset_copy: Path, hashes: list[str]) -> None:
    """Catches a record keyed by name alone: a file replaced by another of the same size and mtime (a new inode) is
    hashed; one restored byte for byte passes; a truncated one fails on its size, before any hash."""
    verified_once(dataset_copy)
    path = shard_path(dataset_copy, 5, "reward")
    good, st = path.read_bytes(), path.stat()
    replacement = dataset_copy / "replacement"
    replacement.write_bytes(good[:-4] + b"\x00\x00\x80\x7f")  # the last reward becomes inf
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, path)
    hashes.clear()
    with pytest.raises(DatasetError, match=f"{path}: checksum differs"):
        ShardedDataset(dataset_copy)
    assert hashes == [path.name]
    path.write_bytes(good)  # restored from a backup
    hashes.clear()
    assert ShardedDataset(dataset_copy).hashed == 1 and hashes == [path.name]
    path.write_bytes(good[:-4])
    with pytest.raises(DatasetError, match=f"{path}: {len(good) - 4} bytes"):
        ShardedDataset(dataset_copy)


def test_a_read_only_dataset_is_hashed_in_full_and_left_as_it_is(
    dataset_copy: Path, hashes: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (dataset_copy / shards.VERIFIED_FILE).unlink(missing_ok=True)
    if os.geteuid() == 0:  # root writes through permission bits: the write fails as it would for anyone else
        monkeypatch.setattr(
            shards, "atomic_write_json", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        )
    dataset_copy.chmod(0o555)
    try:
        before = sorted(p.name for p in dataset_copy.iterdir())
        for _ in range(2):
            hashes.clear()
            assert inspect_dataset.main([str(dataset_copy)]) == 0
            assert len(hashes) == FILES and f"checksums of all {FILES} files computed" in capsys.readouterr().out
        assert sorted(p.name for p in dataset_copy.iterdir()) == before
    finally:
        dataset_copy.chmod(0o755)


def test_inspect_says_what_it_hashed(dataset_copy: Path, hashes: list[str], capsys: pytest.CaptureFixture) -> None:
    """The default takes unchanged files from the record and says so; --rehash hashes them all; --rehash --verify
    quick contradicts itself: one line, exit 2."""
    (dataset_copy / shards.VERIFIED_FILE).unlink(missing_ok=True)
    outputs = []
    for argv in ([], [], ["--rehash"]):
        assert inspect_dataset.main([str(dataset_copy), *argv]) == 0
        outputs.append(capsys.readouterr().out.splitlines()[-1])
    assert f"checksums of all {FILES} files computed" in outputs[0]
    assert f"checksums of 0 files computed, {FILES} taken from .verified.json" in outputs[1]
    assert f"checksums of all {FILES} files computed" in outputs[2]
    assert "--rehash" in error_line(run([*INSPECT, str(dataset_copy), "--rehash", "--verify", "quick"]))


def test_rehash_finds_decay_that_the_record_vouches_for(dataset_copy: Path, hashes: list[str]) -> None:
    """Bytes that change on the disk itself change no timestamp, so the record vouches for them (here: a record
    rewritten after the damage); --rehash finds them, and removes the record so that the next start does too."""
    verified_once(dataset_copy)
    path = shard_path(dataset_copy, 0, "next_obs")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(raw)
    record = json.loads((dataset_copy / shards.VERIFIED_FILE).read_text())
    record["files"][path.name] = shards.record_entry(path.stat(), record["files"][path.name]["xxh3_128"])
    (dataset_copy / shards.VERIFIED_FILE).write_text(json.dumps(record))
    ShardedDataset(dataset_copy)  # trusted: what the record is for
    with pytest.raises(DatasetError, match=f"{path}: checksum differs"):
        ShardedDataset(dataset_copy, rehash=True)
    assert not (dataset_copy / shards.VERIFIED_FILE).exists()
    with pytest.raises(DatasetError, match=f"{path}: checksum differs"):
        ShardedDataset(dataset_copy)


@pytest.mark.parametrize("record", ["garbage", "list", "other version", "link", "directory", "fifo"])
def test_a_record_that_is_not_ours_only_means_hashing(dataset_copy: Path, hashes: list[str], record: str) -> None:
    """Catches an odd .verified.json giving a traceback, a hang (a pipe, a link to /dev/zero) or skipped hashes."""
    path = dataset_copy / shards.VERIFIED_FILE
    path.unlink(missing_ok=True)
    make = {
        "garbage": lambda: path.write_bytes(b"\xff{"),
        "list": lambda: path.write_text("[]"),
        "other version": lambda: path.write_text(json.dumps({"version": 99, "files": {}})),
        "link": lambda: path.symlink_to("/dev/zero"),
        "directory": path.mkdir,
        "fifo": lambda: os.mkfifo(path),
    }
    make[record]()
    assert ShardedDataset(dataset_copy).hashed == FILES


def test_a_file_changed_just_now_is_not_recorded(dataset_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches racy-clean entries: on a filesystem with coarse timestamps a write within the same tick as the
    recorded one would look unchanged, so files that changed within SETTLED_NS are hashed again next time."""
    monkeypatch.setattr(shards, "SETTLED_NS", 10**18)  # every file is recent
    ShardedDataset(dataset_copy).save_verification()
    assert ShardedDataset(dataset_copy).hashed == FILES


def test_the_record_and_its_temporary_file_are_dataset_files(tmp_path: Path) -> None:
    """The names that generate_dataset and the play recorder must accept as a dataset's own (not the user's)."""
    with replaced_atomically(tmp_path / shards.VERIFIED_FILE) as tmp:
        assert shards.is_verification_file(tmp.name)
    assert shards.is_verification_file(".verified.json")
    assert not shards.is_verification_file("verified.json") and not shards.is_verification_file(".verified.json.bak")
