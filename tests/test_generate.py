"""The generator command: bad input, resume after SIGKILL, overwrite, locking and determinism."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from src.dataset import generate_dataset
from src.dataset.generate_dataset import split
from src.dataset.manifest import DatasetError
from src.dataset.shard_writer import ShardWriter, tmp_shard_path
from src.dataset.shards import ShardedDataset, lock_readers
from tests.conftest import GENERATE, INSPECT, ROOT, SMALL, check_consecutive, error_line, generate, run, run_main
from tests.test_merge import record_by_hand


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def checksums(root: Path) -> dict[int, dict[str, str]]:
    """Shard index -> field -> checksum."""
    return {s["index"]: {f: v["xxh3_128"] for f, v in s["files"].items()} for s in manifest(root)["shards"]}


def content(root: Path) -> list[tuple[str, ...]]:
    """The dataset's bytes, as checksums, independent of the order in which shards were named."""
    return sorted(tuple(v["xxh3_128"] for v in s["files"].values()) for s in manifest(root)["shards"])


def test_split_is_exact() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 2) == [1, 1]
    assert sum(split(300_001, 8)) == 300_001


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--game", "Pongg", "--steps", "10"], "unknown game 'Pongg'. Did you mean: Pong?"),
        (["--game", "Breakot", "--steps", "10"], "Did you mean: Breakout?"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--steps", "-5"], "--steps must be >= 1, got -5"),
        (["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
        ([], "--steps is required"),
        (["--steps", "10", "--shard_size", "0"], "--shard_size must be >= 1"),
        (["--steps", "10", "--num_envs", "0"], "--num_envs must be >= 1"),
        (["--steps", "10", "--repeat_action_probability", "1.5"], "--repeat_action_probability must be in [0, 1]"),
        (["--steps", "10", "--frame_skip", "0"], "--frame_skip must be >= 1"),
        (["--steps", "10", "--resume", "--overwrite"], "exclude each other"),
        (["--steps", str(10**9)], "not enough disk space"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "data"
    assert expected in error_line(run_main(generate_dataset.main, ["--out_dir", str(out), *args]))
    assert not out.exists(), "nothing is created before the input is known to be good"


def test_non_empty_out_dir_is_refused_and_kept(tmp_path: Path) -> None:
    """Catches a generator that writes into (or wipes) a directory holding the user's files."""
    (tmp_path / "notes.txt").write_text("mine")
    assert "is not empty" in error_line(generate(tmp_path, steps=10))
    assert "not part of a dataset" in error_line(generate(tmp_path, "--overwrite", steps=10))
    assert "not part of a dataset" in error_line(generate(tmp_path, "--resume", steps=10))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_unwritable_out_dir(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "cannot write to --out_dir" in error_line(generate(a_file / "sub", steps=10))
    assert "is a file" in error_line(generate(a_file, steps=10))
    assert a_file.read_text() == "x"
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot write to --out_dir" in error_line(generate(locked / "data", steps=10))


def test_resume_refuses_other_settings(dataset_copy: Path) -> None:
    before = checksums(dataset_copy)
    assert "--game Breakout differs from the dataset's Pong" in error_line(
        generate(dataset_copy, "--resume", game="Breakout")
    )
    assert "less than the 1200 steps" in error_line(generate(dataset_copy, "--resume", steps=100))
    assert checksums(dataset_copy) == before


def test_second_generation_on_a_locked_dir_is_refused(dataset_copy: Path) -> None:
    with open(dataset_copy / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "another generation" in error_line(generate(dataset_copy, "--resume", steps=1500))
    assert manifest(dataset_copy)["totals"]["steps"] == SMALL["steps"]


def test_resume_clears_a_manifest_write_that_a_kill_cut_short(dataset_copy: Path) -> None:
    """Catches a resume that refuses the temporary manifest a SIGKILL left mid-write (a flaky kill-then-resume)."""
    leftover = dataset_copy / ".manifest.9932.tmp.json"  # the name utils.io.replaced_atomically gives it
    leftover.write_text("{")
    result = generate(dataset_copy, "--resume", steps=1350)
    assert result.returncode == 0, result.stderr
    assert not leftover.exists() and len(ShardedDataset(dataset_copy, verify="full")) == 1350


def test_resume_adds_exactly_the_missing_steps(dataset_copy: Path) -> None:
    """Catches a resume that rewrites finished shards or over/under-shoots the requested total."""
    before = checksums(dataset_copy)
    result = generate(dataset_copy, "--resume", steps=1500)
    assert result.returncode == 0, result.stderr
    after = checksums(dataset_copy)
    assert {k: after[k] for k in before} == before
    data = ShardedDataset(dataset_copy, verify="full")
    assert len(data) == 1500 and manifest(dataset_copy)["complete"]
    check_consecutive(dataset_copy)
    again = generate(dataset_copy, "--resume")  # already complete: records nothing, changes nothing
    assert again.returncode == 0 and "nothing left to record" in again.stdout
    assert checksums(dataset_copy) == after


def test_overwrite_replaces_the_dataset(dataset_copy: Path) -> None:
    result = generate(dataset_copy, "--overwrite", steps=200, seed=1, num_envs=1, shard_size=150, max_episode_steps=60)
    assert result.returncode == 0, result.stderr
    assert manifest(dataset_copy)["totals"] == {**manifest(dataset_copy)["totals"], "steps": 200, "shards": 2}
    assert len(list(dataset_copy.glob("shard_*.npy"))) == 2 * 6


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """Catches hidden nondeterminism (unseeded RNG, thread timing) in the recorded data."""
    options = {"steps": 300, "num_envs": 2, "shard_size": 100, "seed": 3, "max_episode_steps": 60}
    for name in ("a", "b"):
        assert generate(tmp_path / name, **options).returncode == 0
    assert content(tmp_path / "a") == content(tmp_path / "b")
    assert generate(tmp_path / "c", **{**options, "seed": 4}).returncode == 0
    assert content(tmp_path / "c") != content(tmp_path / "a")


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def listed_shards(root: Path) -> int:
    try:
        return len(manifest(root)["shards"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_sigkill_then_resume_gives_exactly_the_requested_steps(tmp_path: Path, trial: int) -> None:
    """Kills the generator at a random moment (mid-shard, mid-manifest write...), resumes, and checks the result."""
    steps, out = 3000, tmp_path / "data"
    cmd = [
        *GENERATE,
        "--out_dir",
        str(out),
        "--steps",
        str(steps),
        "--num_envs",
        "2",
        "--shard_size",
        "250",
        "--max_episode_steps",
        "80",
        "--seed",
        str(trial),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if trial % 2 == 0:
        wait_for(lambda: listed_shards(out) >= 1 + trial)  # right after a shard was listed
        time.sleep(random.Random(trial).uniform(0, 0.2))
    else:
        wait_for(lambda: (out / "manifest.json").exists())
        time.sleep(random.Random(trial).uniform(0.2, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = listed_shards(out)
    ShardedDataset(out, verify="full") if killed_at else None  # whatever is listed is complete and intact
    result = generate(out, "--resume")
    assert result.returncode == 0, result.stderr
    data = ShardedDataset(out, verify="full")
    assert len(data) == steps and manifest(out)["complete"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("shard_")) == [
        ".lock",
        ".readers",
        "manifest.json",
    ]
    assert len(list(out.glob("shard_*.npy"))) == 6 * len(data.shards)
    check_consecutive(out)
    assert error_line(run([*INSPECT, str(tmp_path / "nowhere")]))  # and the reader still refuses nonsense


def files(root: Path) -> dict[str, bytes]:
    """Every file of a dataset, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def main_in_process(argv: list[str]) -> tuple[int, str]:
    """generate_dataset as `python -m` runs it, in this process: exit code and stderr."""
    result = run_main(generate_dataset.main, argv)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--seed", str(2**63)], "--seed must be <= 9223372036854775807"),
        (
            ["--max_episode_steps", str(10**30)],
            "--max_episode_steps must be in [1, 10000000], got 1000000000000000000000000000000",
        ),
        (["--max_episode_steps", str(2**63)], "--max_episode_steps must be in [1, 10000000]"),
        (["--frame_skip", "1000"], "--frame_skip must be in [1, 64], got 1000"),
        (["--noop_max", str(10**9)], "--noop_max must be in [0, 10000]"),
        (["--repeat_action_probability", "nan"], "--repeat_action_probability must be in [0, 1], got nan"),
        (["--part", "8388608/8388608"], "--part: at most 4096 parts"),
        (["--part", "1/" + "9" * 5000], "--part must be K/N with 1 <= K <= N"),
        (["--num_envs", "100000"], "--num_envs must be <= 1024, got 100000"),
        (["--shard_size", str(10**7)], "--shard_size must be <= 1000000"),
        (["--steps", str(2**40)], "--steps must be <= 1099511627775"),
        (["--game", "../../x"], "unknown game '../../x'"),
    ],
)
def test_overwrite_checks_everything_before_deleting(dataset_copy: Path, args: list[str], expected: str) -> None:
    """Catches --overwrite deleting the dataset and only then finding an argument it cannot use (a traceback, data
    lost)."""
    before = files(dataset_copy)
    code, err = main_in_process(["--out_dir", str(dataset_copy), "--overwrite", "--steps", "100", *args])
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert files(dataset_copy) == before


def test_overwrite_refuses_a_dataset_that_is_being_read(dataset_copy: Path) -> None:
    """Catches --overwrite deleting the shards under a training that reads them."""
    reader = ShardedDataset(dataset_copy, verify="none")  # as a training (or its DataLoader workers) holds it
    before = files(dataset_copy)
    code, err = main_in_process(["--out_dir", str(dataset_copy), "--overwrite", "--steps", "100"])
    assert code == 2 and err == (
        f"error: a training, evaluation or play is reading '{dataset_copy}'; wait for it to end, or choose another "
        "--out_dir\n"
    )
    assert files(dataset_copy) == before  # the .lock too: refused before it was taken
    second = ShardedDataset(dataset_copy, verify="none")  # readers share
    reader.close()
    assert "is reading" in error_line(generate(dataset_copy, "--overwrite", steps=100))
    second.close()
    with lock_readers(dataset_copy, exclusive=True):  # as --overwrite holds it while it records
        with pytest.raises(DatasetError, match="is being replaced"):
            ShardedDataset(dataset_copy, verify="none")
    result = generate(dataset_copy, "--overwrite", steps=100, num_envs=1, shard_size=100)
    assert result.returncode == 0, result.stderr
    assert len(ShardedDataset(dataset_copy, verify="full")) == 100


def test_a_recording_by_hand_is_not_resumed(small_dataset: Path, tmp_path: Path) -> None:
    """Catches --resume of a play recording (policy human) marking it incomplete, then dying with KeyError: 'human'."""
    recording = record_by_hand(tmp_path / "rec", small_dataset, 0)
    before = files(recording)
    line = error_line(generate(recording, "--resume", steps=500))
    assert "is a game recorded by hand in src.play (policy human): a policy cannot continue it" in line
    assert files(recording) == before


def test_resume_with_another_emulator_version_is_refused(dataset_copy: Path) -> None:
    manifest = json.loads((dataset_copy / "manifest.json").read_text())
    manifest["versions"]["ale-py"] = "0.6.0"
    (dataset_copy / "manifest.json").write_text(json.dumps(manifest))
    before = files(dataset_copy)
    line = error_line(generate(dataset_copy, "--resume", steps=1500))
    assert (
        f"'{dataset_copy}' was recorded with ale-py 0.6.0, this is ale-py {version('ale-py')}: frames of two emulator"
        in line
    )
    assert files(dataset_copy) == before


def test_a_generation_that_finished_meanwhile_is_not_deleted(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the emptiness check made only before the lock: a generation into the same fresh --out_dir that
    finished in between (here, during the disk check) would be deleted as 'the old dataset'."""
    out = tmp_path / "data"

    def another_generation_meanwhile(root: Path, needed: int) -> None:
        shutil.copytree(small_dataset, out)

    monkeypatch.setattr(generate_dataset, "check_disk", another_generation_meanwhile)
    code, err = main_in_process(["--out_dir", str(out), "--steps", "100"])
    assert code == 2 and "is not empty" in err and len(err.strip().splitlines()) == 1, err
    assert {k: v for k, v in files(out).items() if k != ".lock"} == {
        k: v for k, v in files(small_dataset).items() if k != ".lock"
    }


@pytest.mark.slow
def test_two_generations_into_one_fresh_directory(tmp_path: Path) -> None:
    """Catches the loser of two generations racing for one new --out_dir giving a traceback or deleting the winner's
    shards: one records, the other gets one line."""
    out = tmp_path / "data"
    cmd = [*GENERATE, "--out_dir", str(out), "--steps", "300", "--num_envs", "1", "--shard_size", "100"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    (line,) = [err.strip().splitlines() for code, err in results if code == 2][0]
    assert "another generation (pid" in line or "is not empty" in line or "meanwhile" in line, line
    assert len(ShardedDataset(out, verify="full")) == 300


def test_a_link_planted_as_a_temporary_shard_file_is_not_written_through(tmp_path: Path) -> None:
    """Catches ShardWriter opening its predictable temporary names with a plain open(), which follows a symlink."""
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    root = tmp_path / "data"
    root.mkdir()
    planted = tmp_shard_path(root, "s0_e0_0", "obs")
    planted.symlink_to(victim)
    writer = ShardWriter(root, "s0_e0_0", 1, context_frames=4, screen_size=84)
    writer.append(np.zeros((4, 84, 84), np.uint8), 0, np.zeros((1, 84, 84), np.uint8), False, 0.0, 0)
    writer.finish()
    assert victim.read_text() == "mine"
    assert not planted.is_symlink() and np.load(planted).shape == (1, 4, 84, 84)


def test_a_disk_that_fills_up_mid_recording_is_one_line_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-space check passed, then the disk filled up (another process): one line and exit 2, the complete
    shards kept, and --resume records the rest once there is room again."""
    import errno

    out = tmp_path / "data"
    real_write = ShardWriter._write

    def write_until_full(self: ShardWriter, field: str, data: bytes) -> None:
        if self.tag.endswith("_2"):  # each game's third shard: its first two were written whole (and are listed)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, field, data)

    monkeypatch.setattr(ShardWriter, "_write", write_until_full)
    args = [
        "--out_dir",
        str(out),
        "--steps",
        "600",
        "--num_envs",
        "2",
        "--shard_size",
        "100",
        "--max_episode_steps",
        "60",
    ]
    code, err = main_in_process(args)
    lines = err.strip().splitlines()  # after tqdm's progress bar
    assert code == 2 and "Traceback" not in err and sum(line.startswith("error:") for line in lines) == 1
    assert lines[-1].startswith("error: no space left on device; free some space and run the command again")
    monkeypatch.setattr(ShardWriter, "_write", real_write)
    assert (
        0 < len(json.loads((out / "manifest.json").read_text())["shards"]) < 6
    )  # some shards were complete and are kept
    resumed = generate(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(ShardedDataset(out, verify="full")) == 600
