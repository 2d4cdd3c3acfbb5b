"""Generation on several machines: parts with their own seeds and episode ids, merged without copying a byte."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.dataset import merge_datasets
from src.dataset.manifest import Manifest
from src.dataset.shards import ShardedDataset, ShardWriter, promote_shard
from src.utils.errors import run_cli
from tests.conftest import ROOT, check_consecutive, error_line, generate, run

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


def record_by_hand(root: Path, source: Path, shard: int, seed: int = 0) -> Path:
    """A dataset as src.play --record writes one (policy human, shard_size 0, episodes from 0): the rows of one
    shard of `source`, written the way dataset/recorder.py writes them."""
    data = ShardedDataset(source, verify="none")
    root.mkdir(parents=True)
    manifest = Manifest.create(data.manifest.env, seed, policy="human", shard_size=0, target=0)
    manifest.add_session(num_envs=1, started=manifest.created)
    columns = {field: np.asarray(data.array(shard, field)) for field in data.specs}
    columns["episode"] = columns["episode"] - columns["episode"].min()
    writer = ShardWriter(root, "play0", len(columns["done"]), manifest.env.context_frames, manifest.env.screen_size)
    for i in range(len(columns["done"])):
        writer.append(**{field: values[i] for field, values in columns.items()})
    entry = writer.finish()
    promote_shard(root, "play0", 0, list(manifest.fields))
    manifest.add_shard(entry, session=0)
    manifest.target_steps = manifest.steps
    manifest.write(root)
    data.close()
    return root


def test_recordings_by_hand_merge_with_each_other_with_new_episode_ids(small_dataset: Path, tmp_path: Path) -> None:
    """Catches two play recordings refused as overlapping (each numbers its episodes from 0), or merged with
    their ids colliding."""
    first, second = record_by_hand(tmp_path / "rec1", small_dataset, 0), record_by_hand(tmp_path / "rec2", small_dataset, 1)
    before = {p: p.read_bytes() for p in sorted(second.iterdir()) if p.is_file()}
    out = tmp_path / "merged"
    result = run([*MERGE, "--out_dir", str(out), str(first), str(second)])
    assert result.returncode == 0, result.stderr
    assert "11 of 12 files hard-linked" in result.stdout  # the second recording's episode file is rewritten
    merged, pieces = ShardedDataset(out, verify="full"), [ShardedDataset(p, verify="full") for p in (first, second)]
    assert merged.manifest.policy == "human" and len(merged) == len(pieces[0]) + len(pieces[1])
    ids = [p.column("episode") for p in pieces]
    assert ids[0].min() == 0 and ids[1].min() == 0  # the recordings' own ids collide...
    np.testing.assert_array_equal(merged.column("episode"), np.concatenate([ids[0], ids[1] + ids[0].max() + 1]))  # ...merged, not
    np.testing.assert_array_equal(merged.column("action"), np.concatenate([p.column("action") for p in pieces]))
    assert {p: p.read_bytes() for p in sorted(second.iterdir()) if p.is_file() and p.name != ".readers"} == {
        p: b for p, b in before.items() if p.name != ".readers"}  # the part itself is left as it was
    check_consecutive(out)
    again = tmp_path / "again"
    shutil.copytree(first, again)
    assert "hold the same recorded steps" in error_line(run([*MERGE, "--out_dir", str(tmp_path / "x"), str(first), str(again)]))
    assert "differs from" in error_line(run([*MERGE, "--out_dir", str(tmp_path / "y"), str(small_dataset), str(first)]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_parts_of_two_emulator_versions_do_not_merge(parts: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "part2"
    shutil.copytree(parts[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["versions"]["ale-py"] = "0.6.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    line = error_line(run([*MERGE, "--out_dir", str(tmp_path / "out"), str(parts[0]), str(copy)]))
    assert "was recorded with ale-py 0.6.0" in line and "frames of two emulator versions would mix" in line
    assert not (tmp_path / "out").exists()


def test_a_merge_that_finished_meanwhile_is_not_merged_into(parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches the emptiness check made only before the parts are read: a merge that wrote to out_dir meanwhile (here,
    between the two looks) is refused, its files kept."""
    out = tmp_path / "merged"
    checked = merge_datasets.check_parts

    def another_merge_meanwhile(found: list) -> None:
        checked(found)
        out.mkdir()
        (out / "shard_00000_obs.npy").write_bytes(b"theirs")

    monkeypatch.setattr(merge_datasets, "check_parts", another_merge_meanwhile)
    monkeypatch.delenv("AWM_DEBUG", raising=False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_:
        run_cli(merge_datasets.main, ["--out_dir", str(out), *map(str, parts)])
    assert exit_.value.code == 2 and err.getvalue() == f"error: --out_dir '{out}' is not empty; choose a new directory for the merged dataset\n"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "shard_00000_obs.npy"]
    assert (out / "shard_00000_obs.npy").read_bytes() == b"theirs"


@pytest.mark.slow
def test_concurrent_merges_into_one_directory(parts: list[Path], tmp_path: Path) -> None:
    """Catches two merges into one new directory that both link files (a FileExistsError traceback, or a mix)."""
    for trial in range(3):
        out = tmp_path / f"merged{trial}"
        procs = [subprocess.Popen([*MERGE, "--out_dir", str(out), *map(str, parts)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert sorted(code for code, _ in results) == [0, 2], results
        (line,) = [err.strip().splitlines() for code, err in results if code == 2][0]
        assert "is not empty" in line or "another merge or generation (pid" in line, line
        assert len(ShardedDataset(out, verify="full")) == 800
