"""Generation on several machines: parts with their own seeds and episode ids, merged without copying a byte."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from src.dataset.shards import ShardedDataset
from tests.conftest import check_consecutive, error_line, generate, run

MERGE = [sys.executable, "-m", "src.dataset.merge_datasets"]
PART = {"steps": 400, "num_envs": 2, "shard_size": 100, "max_episode_steps": 60, "seed": 3}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Parts 1/2 and 2/2 of a Pong dataset, same --seed, as two machines would record them."""
    root = tmp_path_factory.mktemp("parts")
    for k in (1, 2):
        result = generate(root / f"part{k}", "--part", f"{k}/2", game="Pong", **PART)
        assert result.returncode == 0, result.stderr
    return [root / "part1", root / "part2"]


def test_parts_merge_into_one_dataset_by_hard_links(parts: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    result = run([*MERGE, "--out_dir", str(out), *map(str, parts)])
    assert result.returncode == 0, result.stderr
    assert "48 of 48 files hard-linked (no bytes copied)" in result.stdout
    merged, pieces = ShardedDataset(out, verify="full"), [ShardedDataset(p, verify="none") for p in parts]
    assert len(merged) == 800 and merged.manifest.complete
    assert [m["part"] for m in merged.manifest.merged_from] == [[1, 2], [2, 2]]
    episodes = [set(p.column("episode").tolist()) for p in pieces]
    assert not episodes[0] & episodes[1]  # each part its own episode ids
    np.testing.assert_array_equal(merged.column("episode"), np.concatenate([p.column("episode") for p in pieces]))
    first, linked = merged.manifest.shards[4], pieces[1].shards[0]  # part 2's first shard, after part 1's four
    a, b = out / f"shard_{first['index']:05d}_obs.npy", parts[1] / f"shard_{linked['index']:05d}_obs.npy"
    assert os.stat(a).st_ino == os.stat(b).st_ino  # the same file, not a copy
    check_consecutive(out)
    assert not np.array_equal(pieces[0].column("action"), pieces[1].column("action"))  # own seeds per part


def test_merge_refuses_what_would_not_be_one_dataset(parts: list[Path], small_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    assert "both hold episode" in error_line(run([*MERGE, "--out_dir", str(tmp_path / "a"), str(small_dataset), str(copy)]))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shard_size"] = 150
    manifest["complete"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "is incomplete" in error_line(run([*MERGE, "--out_dir", str(tmp_path / "b"), str(parts[0]), str(copy)]))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    assert "is not empty" in error_line(run([*MERGE, "--out_dir", str(tmp_path / "c"), *map(str, parts)]))
    assert (tmp_path / "c" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
