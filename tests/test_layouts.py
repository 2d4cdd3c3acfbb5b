"""The compact layout (--layout frames): each frame stored once, zstd-compressed in chunks, every sample read back
byte-equal to the contract's layout; the converter between the two, resumable and checked; bad stores refused with
one line."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xxhash

from src.dataset import convert_dataset, merge_datasets
from src.dataset.frames import default_layout
from src.dataset.manifest import DatasetError, Manifest
from src.dataset.schema import FRAMES, STEPS
from src.dataset.shard_writer import FramesShardWriter, promote_shard
from src.dataset.shards import ShardedDataset, shard_path
from src.envs.atari import EnvSettings
from src.training.batches import DeviceBatches, train_batches
from src.training.data import open_data, starts_within
from tests.conftest import SMALL, error_line, generate, run_main, tiny_config
from tests.test_device_data import CPU, assert_same_batches

STEP_FIELDS = ("obs", "action", "next_obs", "done", "reward", "episode")


@pytest.fixture(scope="session")
def compact_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_dataset's recording (same game, seed and settings) in the compact layout."""
    out = tmp_path_factory.mktemp("data") / "pong_frames"
    result = generate(out, game="Pong", layout=FRAMES, **SMALL)
    assert result.returncode == 0, result.stderr
    return out


def assert_same_samples(a: ShardedDataset, b: ShardedDataset) -> None:
    """Every step of the two datasets, field by field: the same dtype, shape and bytes. Shards are paired by their
    episodes: the recorder's games finish their shards in an order that depends on thread timing, not the seed."""
    assert len(a) == len(b) and len(a.shards) == len(b.shards)
    where = {(tuple(s["episodes"]), s["rows"]): pos for pos, s in enumerate(b.shards)}
    for pos, shard in enumerate(a.shards):
        other = where[(tuple(shard["episodes"]), shard["rows"])]
        for local in range(shard["rows"]):
            x, y = a.steps(int(a.offsets[pos]) + local), b.steps(int(b.offsets[other]) + local)
            for field in STEP_FIELDS:
                u, v = getattr(x, field), getattr(y, field)
                assert (u.dtype, u.shape) == (v.dtype, v.shape) and u.tobytes() == v.tobytes(), (pos, local, field)


def dataset_bytes(root: Path) -> int:
    return Manifest.read(root).totals["bytes"]


def test_both_layouts_hold_the_same_samples(small_dataset: Path, compact_dataset: Path) -> None:
    """The same recording in both layouts: every sample byte-equal (the zero padding of episode starts included),
    the compact one over 50x smaller on disk (about 36 bytes a Pong frame, 26 of columns a step)."""
    with ShardedDataset(small_dataset) as steps, ShardedDataset(compact_dataset) as frames:
        assert (steps.layout, frames.layout) == (STEPS, FRAMES)
        assert frames.manifest.layout == default_layout()
        assert_same_samples(steps, frames)
        starts = np.flatnonzero(np.r_[True, frames.column("done")[:-1]])  # episode starts
        assert not frames.steps(int(starts[1])).obs[0, :3].any()  # padded with zeros, as the contract's layout
    assert dataset_bytes(small_dataset) > 50 * dataset_bytes(compact_dataset)


def test_the_loader_and_the_device_give_the_same_batches_from_either_layout(
    small_dataset: Path, tmp_path: Path
) -> None:
    """Training reads the same batches, byte for byte, from either layout: through the DataLoader and with the dataset
    held in the device's memory (the CPU's here). The compact dataset is the converter's, in the same row order."""
    compact = tmp_path / "compact"
    assert run_main(convert_dataset.main, [str(small_dataset), str(compact), "--layout", FRAMES]).returncode == 0
    batches = {}
    for name, root in (("steps", small_dataset), ("frames", compact)):
        cfg = tiny_config(root, tmp_path, "train.batch_size=16")
        dataset, train_rows, _ = open_data(cfg)
        starts = starts_within(dataset, train_rows, 3)
        batches[name] = list(itertools.islice(train_batches(dataset, starts, 3, cfg, 5), 6))
        batches[f"{name} on device"] = list(itertools.islice(DeviceBatches(dataset, starts, 3, cfg, 5, CPU), 6))
    for name in ("frames", "frames on device", "steps on device"):
        assert_same_batches(batches[name], batches["steps"])


def written(tmp_path: Path, rows: list[tuple]) -> ShardedDataset:
    """A one-shard compact dataset of `rows` (obs, action, next_obs, done, reward, episode), as a writer stores them."""
    writer = FramesShardWriter(tmp_path, "t", len(rows), 4, 84, {**default_layout(), "chunk_frames": 8})
    for row in rows:
        writer.append(*row)
    entry = writer.finish()
    promote_shard(tmp_path, "t", 0, list(entry["files"]))
    manifest = Manifest.create(
        EnvSettings("Pong"), 0, "random", len(rows), len(rows), layout={**default_layout(), "chunk_frames": 8}
    )
    manifest.add_shard(entry, session=0)
    manifest.write(tmp_path)
    return ShardedDataset(tmp_path)


def test_any_rows_read_back_as_they_were_written(tmp_path: Path) -> None:
    """Rows that do not continue each other (foreign data), stacks with one to four real frames, a real frame that is
    all zeros and chunks of 8 frames that a stack straddles: each sample reads back byte-equal; the rows that do
    continue their predecessor store one frame each."""
    rng = np.random.default_rng(0)
    frame = lambda: rng.integers(0, 256, (84, 84), dtype=np.uint8)  # noqa: E731
    zero = np.zeros((84, 84), np.uint8)
    rows, stack = [], [zero, zero, zero, frame()]  # an episode start: three frames of padding
    for i in range(30):
        nxt = zero if i == 7 else frame()  # a real black frame in the middle of an episode
        rows.append((np.stack(stack), i % 6, nxt[None], i == 19, float(i == 3), i // 20))
        stack = [zero, zero, zero, frame()] if i == 19 else [*stack[1:], nxt]
    rows += [(rng.integers(0, 256, (4, 84, 84), dtype=np.uint8), 1, frame()[None], False, 0.0, 2) for _ in range(5)]
    data = written(tmp_path, rows)
    for i, (obs, action, next_obs, done, reward, episode) in enumerate(rows):
        got = data.steps(i)
        assert got.obs[0].tobytes() == obs.tobytes() and got.next_obs[0].tobytes() == next_obs.tobytes(), i
        assert (got.action[0], got.done[0], got.reward[0], got.episode[0]) == (action, done, reward, episode)
    # 2 episodes of 20 and 10 steps: 1 + 20 and 1 + 10 frames; 5 foreign rows: 4 + 1 frames each
    assert data.shards[0]["frames"] == 21 + 11 + 25


def corrupt(root: Path, field: str, data: bytes | None = None) -> Path:
    """Flip a byte in a shard file (or replace its bytes), keeping the manifest's size and checksum true of it when
    `data` is given: only the reader's own checks can then tell."""
    path = shard_path(root, 0, field)
    if data is None:
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        return path
    path.write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][0]["files"][field] = {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_a_corrupt_store_is_one_line_naming_its_file(compact_dataset: Path, tmp_path: Path) -> None:
    from src.dataset import inspect_dataset

    copy = tmp_path / "copy"
    shutil.copytree(compact_dataset, copy)
    path = corrupt(copy, "frames")  # the checksum catches it; a reader that skips it, the chunk's own
    assert str(path) in error_line(run_main(inspect_dataset.main, [str(copy)]))
    with ShardedDataset(copy, verify="none") as data, pytest.raises(DatasetError, match=f"{path}.*(decode|chunk)"):
        for row in range(data.shards[0]["rows"]):
            data.steps(row)
    shutil.rmtree(copy)
    shutil.copytree(compact_dataset, copy)
    bounds = np.load(shard_path(copy, 0, "chunks"))
    bounds[-1] += 7  # past the end of the store
    buffer = __import__("io").BytesIO()
    np.save(buffer, bounds)
    path = corrupt(copy, "chunks", buffer.getvalue())
    line = error_line(run_main(inspect_dataset.main, [str(copy)]))
    assert str(path) in line and "chunks" in line


def test_a_manifest_with_a_bad_layout_is_refused(compact_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(compact_dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["layout"]["level"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="layout must be"):
        ShardedDataset(copy)


def test_resume_keeps_the_layout(tmp_path: Path) -> None:
    out = tmp_path / "d"
    options = {"game": "Pong", "num_envs": 2, "shard_size": 100, "max_episode_steps": 60}
    assert generate(out, layout=FRAMES, steps=200, **options).returncode == 0
    assert generate(out, "--resume", steps=300, **options).returncode == 0
    with ShardedDataset(out) as data:
        assert (data.layout, len(data)) == (FRAMES, 300)
    line = error_line(generate(out, "--resume", layout=STEPS, steps=400, **options))
    assert "--layout steps differs from the dataset's frames" in line


def test_convert_both_ways_byte_for_byte_and_resume(small_dataset: Path, tmp_path: Path) -> None:
    """steps -> frames -> steps gives the original shard files back byte for byte; a conversion killed after its
    first shards continues with --resume; a DST in use and a conversion into the same layout are refused."""
    compact, back = tmp_path / "compact", tmp_path / "back"
    result = run_main(convert_dataset.main, [str(small_dataset), str(compact), "--layout", FRAMES])
    assert result.returncode == 0, result.stderr
    assert "every sample read back equal" in result.stdout
    # a kill after 4 of the 9 shards: the manifest lists 4, the 5th's files lie in place unlisted
    manifest = json.loads((compact / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:4]
    (compact / "manifest.json").write_text(json.dumps(manifest))
    line = error_line(run_main(convert_dataset.main, [str(small_dataset), str(compact), "--layout", FRAMES]))
    assert "not empty; pass --resume" in line
    result = run_main(convert_dataset.main, [str(small_dataset), str(compact), "--layout", FRAMES, "--resume"])
    assert result.returncode == 0, result.stderr
    result = run_main(convert_dataset.main, [str(compact), str(back), "--layout", STEPS])
    assert result.returncode == 0, result.stderr
    original = sorted(p.name for p in small_dataset.glob("shard_*.npy"))
    assert original == sorted(p.name for p in back.glob("shard_*.npy"))
    for name in original:
        assert (small_dataset / name).read_bytes() == (back / name).read_bytes(), name
    with ShardedDataset(compact) as data, ShardedDataset(small_dataset) as source:
        assert_same_samples(data, source)
        assert data.manifest.sessions == source.manifest.sessions
    line = error_line(run_main(convert_dataset.main, [str(compact), str(tmp_path / "x"), "--layout", FRAMES]))
    assert "already in the frames layout" in line
    line = error_line(run_main(convert_dataset.main, [str(small_dataset), str(compact / "in"), "--layout", FRAMES]))
    assert "inside the dataset" in line


def test_compact_parts_merge_and_layouts_do_not_mix(tmp_path: Path, small_dataset: Path) -> None:
    options = {"game": "Pong", "num_envs": 2, "shard_size": 100, "max_episode_steps": 60, "steps": 200}
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for k, part in enumerate(parts, 1):
        assert generate(part, layout=FRAMES, part=f"{k}/2", **options).returncode == 0
    merged = tmp_path / "merged"
    result = run_main(merge_datasets.main, ["--out_dir", str(merged), *map(str, parts)])
    assert result.returncode == 0, result.stderr
    with ShardedDataset(merged) as data, ShardedDataset(parts[1]) as second:
        assert (data.layout, len(data)) == (FRAMES, 400)
        assert data.steps(300).obs.tobytes() == second.steps(100).obs.tobytes()
    line = error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "m2"), str(parts[0]), str(small_dataset)])
    )
    assert "layout" in line and "convert_dataset" in line
