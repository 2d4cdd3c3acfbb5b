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
from src.dataset.manifest import DatasetError, Manifest
from src.dataset.shard_writer import ShardWriter, promote_shard
from src.dataset.shards import ShardedDataset
from src.utils.io import try_lock
from tests.conftest import ROOT, check_consecutive, error_line, generate, run, run_main

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
    result = run_main(merge_datasets.main, ["--out_dir", str(out), *map(str, parts)])
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
    assert "both hold episode" in error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "a"), str(small_dataset), str(copy)])
    )
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shard_size"] = 150
    manifest["complete"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "is incomplete" in error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "b"), str(parts[0]), str(copy)])
    )
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    assert "is not empty" in error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "c"), *map(str, parts)])
    )
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
    first, second = (
        record_by_hand(tmp_path / "rec1", small_dataset, 0),
        record_by_hand(tmp_path / "rec2", small_dataset, 1),
    )
    before = {p: p.read_bytes() for p in sorted(second.iterdir()) if p.is_file()}
    out = tmp_path / "merged"
    result = run_main(merge_datasets.main, ["--out_dir", str(out), str(first), str(second)])
    assert result.returncode == 0, result.stderr
    assert "11 of 12 files hard-linked" in result.stdout  # the second recording's episode file is rewritten
    merged, pieces = ShardedDataset(out, verify="full"), [ShardedDataset(p, verify="full") for p in (first, second)]
    assert merged.manifest.policy == "human" and len(merged) == len(pieces[0]) + len(pieces[1])
    ids = [p.column("episode") for p in pieces]
    assert ids[0].min() == 0 and ids[1].min() == 0  # the recordings' own ids collide...
    np.testing.assert_array_equal(
        merged.column("episode"), np.concatenate([ids[0], ids[1] + ids[0].max() + 1])
    )  # ...merged, not
    np.testing.assert_array_equal(merged.column("action"), np.concatenate([p.column("action") for p in pieces]))
    assert {p: p.read_bytes() for p in sorted(second.iterdir()) if p.is_file() and p.name != ".readers"} == {
        p: b for p, b in before.items() if p.name != ".readers"
    }  # the part itself is left as it was
    check_consecutive(out)
    again = tmp_path / "again"
    shutil.copytree(first, again)
    assert "hold the same recorded steps" in error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "x"), str(first), str(again)])
    )
    assert "differs from" in error_line(
        run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "y"), str(small_dataset), str(first)])
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_parts_of_two_emulator_versions_do_not_merge(parts: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "part2"
    shutil.copytree(parts[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["versions"]["ale-py"] = "0.6.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    line = error_line(run_main(merge_datasets.main, ["--out_dir", str(tmp_path / "out"), str(parts[0]), str(copy)]))
    assert "was recorded with ale-py 0.6.0" in line and "frames of two emulator versions would mix" in line
    assert not (tmp_path / "out").exists()


def test_a_merge_that_finished_meanwhile_is_not_merged_into(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the emptiness check made only before the parts are read: a merge that wrote to out_dir meanwhile (here,
    between the two looks) is refused, its files kept (and nothing of ours added: the merge is built beside it)."""
    out = tmp_path / "merged"
    checked = merge_datasets.check_parts

    def another_merge_meanwhile(found: list) -> None:
        checked(found)
        out.mkdir()
        (out / "shard_00000_obs.npy").write_bytes(b"theirs")

    monkeypatch.setattr(merge_datasets, "check_parts", another_merge_meanwhile)
    result = run_main(merge_datasets.main, ["--out_dir", str(out), *map(str, parts)])
    assert (
        result.returncode == 2
        and result.stderr == f"error: --out_dir '{out}' is not empty; choose a new directory for the merged dataset\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["shard_00000_obs.npy"]
    assert (out / "shard_00000_obs.npy").read_bytes() == b"theirs"
    assert not merge_datasets.staging_dir(out).exists()


@pytest.mark.slow
def test_concurrent_merges_into_one_directory(parts: list[Path], tmp_path: Path) -> None:
    """Catches two merges into one new directory that both link files (a FileExistsError traceback, or a mix). The
    second is refused, or, started once the first had finished, finds the merge done."""
    for trial in range(3):
        out = tmp_path / f"merged{trial}"
        procs = [
            subprocess.Popen(
                [*MERGE, "--out_dir", str(out), *map(str, parts)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        assert sorted(code for code, _, _ in results) in ([0, 2], [0, 0]), results
        assert sum("files hard-linked" in stdout for _, stdout, _ in results) == 1, results  # one merge did it
        for code, stdout, err in results:
            if code == 2:
                (line,) = err.strip().splitlines()
                assert "is not empty" in line or "another merge (pid" in line, line
            elif "files hard-linked" not in stdout:
                assert "already holds the merge of these 2 datasets; nothing to do" in stdout, stdout
        assert len(ShardedDataset(out, verify="full")) == 800


# A merge that dies at one point as a SIGKILL would leave it (os._exit: no handler, no `finally`, its lock released by
# the kernel): "links" after 20 of the 48 shard files are linked, "rename" with the merged dataset complete beside
# --out_dir, "done" once it has been renamed onto --out_dir.
KILLED_MERGE = """
import os, sys
from src.dataset import merge_datasets
from src.utils.errors import run_cli
point, argv, linked = sys.argv[1], sys.argv[2:], []
link, rename, fsync_dir = merge_datasets.link_or_copy, os.rename, merge_datasets.fsync_dir

def link_or_copy(source, target):
    if point == "links" and len(linked) == 20:
        os._exit(137)
    linked.append(target)
    return link(source, target)

def dying(call, at):
    def wrapped(*args):
        if point == at:
            os._exit(137)
        return call(*args)
    return wrapped

merge_datasets.link_or_copy, merge_datasets.fsync_dir = link_or_copy, dying(fsync_dir, "done")
os.rename = dying(rename, "rename")
run_cli(merge_datasets.main, argv)
"""


def part_files(parts: list[Path]) -> dict[str, bytes]:
    """Every file of the parts, by path (.readers aside: every reader creates it)."""
    return {str(p): p.read_bytes() for part in parts for p in sorted(part.iterdir()) if p.name != ".readers"}


@pytest.mark.slow  # a kill drill: a merge process dies at each point
@pytest.mark.parametrize("point", ["links", "rename", "done"])
def test_a_killed_merge_is_taken_up_by_the_same_command(parts: list[Path], tmp_path: Path, point: str) -> None:
    """Catches a killed merge that leaves --out_dir holding links but no manifest, where the same command again is
    refused as "not empty" (the user stuck), and a re-run that writes through the parts' linked files."""
    out, before = tmp_path / "merged", part_files(parts)
    command = ["--out_dir", str(out), *map(str, parts)]
    killed = run([sys.executable, "-c", KILLED_MERGE, point, *command])
    assert killed.returncode == 137, killed.stderr
    staging = merge_datasets.staging_dir(out)
    if point == "done":  # killed after the rename: the merge is complete, and the same command says so
        assert len(ShardedDataset(out, verify="full")) == 800 and not staging.exists()
    else:  # --out_dir was never written to; the merge lies beside it, under a lock that nobody holds any more
        with pytest.raises(DatasetError, match="does not exist"):
            ShardedDataset(out)
        left = sorted(p.name for p in staging.iterdir())
        assert len([n for n in left if n.startswith("shard_")]) == (20 if point == "links" else 48), left
        assert ("manifest.json" in left) == (point == "rename")
    again = run_main(merge_datasets.main, command)
    assert again.returncode == 0, again.stderr
    assert ("already holds the merge of these 2 datasets; nothing to do" in again.stdout) == (point == "done"), (
        again.stdout
    )
    merged = ShardedDataset(out, verify="full")
    assert len(merged) == 800 and merged.manifest.complete
    assert not staging.exists()
    assert part_files(parts) == before  # not a byte of the parts written through their links


def test_a_merge_is_refused_while_another_holds_its_lock(parts: list[Path], tmp_path: Path) -> None:
    """Catches a re-run that takes a merge's folder over (clears it) while the merge that holds its lock still writes;
    once the lock is free, the same folder is taken over and the merge done."""
    out = tmp_path / "merged"
    staging = merge_datasets.staging_dir(out)
    staging.mkdir()
    (staging / "shard_00000_obs.npy").write_bytes(b"being linked")
    lock, _ = try_lock(staging / ".lock")  # another merge at work (flock: another open file, even in this process)
    result = run_main(merge_datasets.main, ["--out_dir", str(out), *map(str, parts)])
    assert result.returncode == 2 and result.stderr == (
        f"error: another merge (pid {os.getpid()}) is writing to '{out}'; wait for "
        "it to finish or choose another --out_dir\n"
    )
    assert (staging / "shard_00000_obs.npy").read_bytes() == b"being linked" and not out.exists()
    lock.close()  # that merge died
    with contextlib.redirect_stdout(io.StringIO()):
        assert merge_datasets.main(["--out_dir", str(out), *map(str, parts)]) == 0
    assert len(ShardedDataset(out, verify="full")) == 800 and not staging.exists()
