"""Kill generation, training, checkpoint saves, merges and play's recording at random moments, resume them, and check
what they left.

    python scripts/kill_drill.py --trials 20          # 20 kills of each section, about 40 minutes
    python scripts/kill_drill.py --trials 6 --only play
    python scripts/kill_drill.py --trials 5 --only save merge

Generation: a kill anywhere (mid-shard, mid-manifest write), then --resume, must give a dataset that passes a full
checksum check with exactly the requested steps; the same in the compact layout (compact). Convert: a conversion
between the layouts killed at a random moment, then --resume, must give every sample of the source. Training: a kill
anywhere after the first checkpoint, then train.resume, must end with last.pt and best.pt bit-identical to an
uninterrupted run's and the CSVs holding each step once with the same values. Branch: a resume from a best.pt older
than the run's last.pt goes to a new run folder; killed anywhere after its first checkpoint and resumed, it must end
bit-identical to a branch never killed, with every CSV row once (0 lost), and the parent run byte for byte as it was.
Play (headless, --record): SIGKILL, SIGINT and SIGTERM in turn at a random moment; what the recording holds must pass
a full checksum check and be consecutive steps; SIGINT and SIGTERM must lose no row (rows = steps played = video
frames), SIGKILL fewer than a shard's 256 (counted against the frames of the video the kill left under its temporary
name); the same command again must continue the recording.
Save: a training SIGKILLed the moment the temporary file of one of its checkpoint saves appears (polled without a
pause), and a child looping save_checkpoint over a 32 MB state SIGKILLed at a random moment: the checkpoint must be
the old complete file or the new complete one (bit for bit the old one when the kill left the temporary file, i.e.
landed inside the save), and the training, resumed, must end bit-identical to an uninterrupted run with the stale
temporary files removed; the totals say how many kills landed inside a save. Merge: a merge of three parts of 360
shards each SIGKILLed at a random moment (even trials) or once a random number of its files are linked (odd ones):
--out_dir must be absent or the complete merge, the same command again must exit 0 with a merge that passes a full
checksum check with the parts' steps, and the parts must be byte for byte as they were.
The same checks as tests/test_generate.py, tests/test_resume.py, tests/test_play.py and tests/test_merge.py, more
times than CI can afford. Prints one line per trial and the totals; exits 1 if any trial failed.

A section is a trial function in SECTIONS: (its work folder, the Shared inputs, an RNG, the trial's number) -> the
line to print; what several sections need (a dataset, a reference run) is a cached property of Shared.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.dataset.manifest import DatasetError  # noqa: E402
from src.dataset.merge_datasets import staging_dir  # noqa: E402
from src.dataset.recorder import SHARD_ROWS  # noqa: E402
from src.dataset.shards import READERS_FILE, ShardedDataset  # noqa: E402
from src.models.checkpoint import read_checkpoint  # noqa: E402
from src.utils.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from src.utils.io import checksum_file  # noqa: E402

GENERATE = [sys.executable, "-m", "src.dataset.generate_dataset"]
CONVERT = [sys.executable, "-m", "src.dataset.convert_dataset"]
TRAIN = [sys.executable, "-m", "src.train"]
PLAY = [sys.executable, "-m", "src.play"]
MERGE = [sys.executable, "-m", "src.dataset.merge_datasets"]
PLAY_STEPS = 20_000  # more than a headless play gets through in the 20 s before the signal: it always lands mid-play
DATA = ["--steps", "3000", "--num_envs", "2", "--shard_size", "250", "--max_episode_steps", "80"]
RUN = [
    "model.channels=[8,16]",
    "model.action_embed_dim=8",
    "train.batch_size=8",
    "train.val_batches=2",
    "train.warmup_steps=2",
    "train.max_steps=60",
    "train.log_every=5",
    "train.val_every_steps=5",
    "train.val_rollout_horizon=5",
    "train.val_rollout_every=2",
]


def call(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed: {result.stderr.strip()[-300:]}")


def kill_after(cmd: list[str], ready, delay: float) -> None:
    """Start `cmd`, wait until ready() (at most 2 minutes), then `delay` seconds more, then SIGKILL its group."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def generation_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    out = tmp / "data"
    kill_after(
        [*GENERATE, "--out_dir", str(out), *DATA, "--seed", str(rng.randrange(1000))],
        lambda: (out / "manifest.json").exists(),
        rng.uniform(0, 1.5),
    )
    listed = listed_shards(out)
    if listed:
        ShardedDataset(out, verify="full")  # what the killed run listed is complete and intact
    call([*GENERATE, "--out_dir", str(out), "--resume"])
    data = ShardedDataset(out, verify="full")
    assert len(data) == 3000, f"{len(data)} steps"
    return f"killed with {listed} shards listed; resumed to {len(data)} steps, checksums verified"


def compact_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """generation_trial in the compact layout (--layout frames): each shard's compressed store written at its end."""
    out = tmp / "data"
    kill_after(
        [*GENERATE, "--out_dir", str(out), *DATA, "--layout", "frames", "--seed", str(rng.randrange(1000))],
        lambda: (out / "manifest.json").exists(),
        rng.uniform(0, 1.5),
    )
    listed = listed_shards(out)
    if listed:
        ShardedDataset(out, verify="full")
    call([*GENERATE, "--out_dir", str(out), "--resume"])
    data = ShardedDataset(out, verify="full")
    assert len(data) == 3000 and data.layout == "frames", f"{len(data)} steps, layout {data.layout}"
    return f"killed with {listed} shards listed; resumed to {len(data)} steps in the frames layout, checksums verified"


def convert_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """A conversion of Shared.data into the compact layout (odd trials) or of its compact copy back (even ones),
    SIGKILLed at a random moment, then --resume: every sample must equal the source's."""
    source = shared.data if trial % 2 else shared.compact
    layout = "frames" if trial % 2 else "steps"
    out = tmp / "converted"
    kill_after(
        [*CONVERT, str(source), str(out), "--layout", layout],
        lambda: (out / "manifest.json").exists(),
        rng.uniform(0, 0.3),  # 9 shards convert in about half a second
    )
    listed = listed_shards(out)
    call([*CONVERT, str(source), str(out), "--layout", layout, "--resume"])
    converted, original = ShardedDataset(out, verify="full"), ShardedDataset(source, verify="none")
    assert len(converted) == len(original) and converted.layout == layout
    for row in range(len(original)):
        a, b = converted.steps(row), original.steps(row)
        for field in ("obs", "action", "next_obs", "done", "reward", "episode"):
            assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), (row, field)
    return f"killed with {listed} of {len(original.shards)} shards listed; resumed to {layout}, every sample equal"


def listed_shards(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [[r["step"], r["loss"], r["mse"]] for r in csv.DictReader(f)]


def training_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    runs, reference = tmp / "runs", shared.reference
    kill_after(
        [*TRAIN, *RUN, f"data.dir={shared.data}", f"experiment.runs_dir={runs}"],
        lambda: bool(list(runs.glob("*/checkpoints/last.pt"))),
        rng.uniform(0, 2.0),
    )
    (run_dir,) = runs.iterdir()
    killed_at = resume_like(run_dir, reference)
    return f"killed after the checkpoint of step {killed_at}; resumed: weights bit-identical, CSVs identical"


def resume_like(run_dir: Path, reference: Path) -> int:
    """train.resume a killed run of RUN (unless its last checkpoint is the final one): it must end with last.pt and
    best.pt bit-identical to `reference`'s, and the CSVs the same. Returns the step the run was killed after."""
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    if killed_at < 60:
        call([*TRAIN, f"train.resume={run_dir}"])
    for name in ("last.pt", "best.pt"):
        got, want = (load_checkpoint(d / "checkpoints" / name)["model"] for d in (run_dir, reference))
        assert all((got[k] == want[k]).all() for k in want), f"{name} differs"
    for name in ("metrics.csv", "val_metrics.csv"):
        assert rows(run_dir / name) == rows(reference / name), f"{name} differs"
    return killed_at


def branch_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """A resume from best.pt (step 30) of a run whose last.pt is at step 60 branches into a new folder; killed at a
    random moment after its first checkpoint and resumed, the branch must end as one never killed, and the parent
    must be left byte for byte as it was."""
    parent, runs = tmp / "parent", tmp / "runs"
    shutil.copytree(shared.parent, parent)
    before = folder_bytes(parent)
    branch_cmd = [
        *TRAIN,
        f"train.resume={parent / 'checkpoints' / 'best.pt'}",
        "train.max_steps=90",
        f"experiment.runs_dir={runs}",
    ]
    kill_after(branch_cmd, lambda: bool(list(runs.glob("*/checkpoints/last.pt"))), rng.uniform(0, 2.0))
    assert folder_bytes(parent) == before, "the parent run was changed"
    (branch,) = runs.iterdir()
    killed_at = load_checkpoint(branch / "checkpoints" / "last.pt")["step"]
    if killed_at < 90:
        call([*TRAIN, f"train.resume={branch}"])
    assert folder_bytes(parent) == before, "the parent run was changed"
    reference = shared.branch_reference
    for name in ("last.pt", "best.pt"):
        got, want = (load_checkpoint(d / "checkpoints" / name)["model"] for d in (branch, reference))
        assert all((got[k] == want[k]).all() for k in want), f"{name} differs"
    lost = 0
    for name in ("metrics.csv", "val_metrics.csv"):
        got, want = rows(branch / name), rows(reference / name)
        lost += sum(row not in got for row in want)
        assert got == want, f"{name} differs ({lost} rows lost)"
    return (
        f"branch killed after the checkpoint of step {killed_at}; resumed: weights bit-identical, 0 rows lost, "
        "parent unchanged"
    )


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def play_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """SIGKILL, SIGINT, SIGTERM in turn at a random moment of a headless play recording PLAY_STEPS steps."""
    signum = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)[trial % 3]
    record, video = tmp / "rec", tmp / "play.mp4"
    cmd = [
        *PLAY,
        "--checkpoint",
        str(shared.play_checkpoint),
        "--headless",
        "--keys",
        f"NOOP*{PLAY_STEPS}",
        "--video",
        str(video),
        "--record",
        str(record),
        "--scale",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for(lambda: (record / "manifest.json").exists() or proc.poll() is not None, 120)  # recording has begun
    time.sleep(rng.uniform(0, 20))
    if signum == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    elif proc.poll() is None:
        os.kill(proc.pid, signum)
    out, err = proc.communicate()
    rows = len(ShardedDataset(record, verify="full")) if listed_shards(record) else 0  # checksums of all that is listed
    assert rows < PLAY_STEPS, "play had finished before the signal; the trial proves nothing"
    check_consecutive(record)
    name = signal.Signals(signum).name
    if signum == signal.SIGKILL:  # ffmpeg, in a process group of its own, finishes the video the kill left
        frames = video_frames(tmp / f".play.{proc.pid}.tmp.mp4")
        lost = frames - rows if frames is not None else None
        assert lost is None or -1 <= lost < SHARD_ROWS, (
            f"{lost} rows lost"
        )  # -1: a step recorded, its frame not yet sent
        continued = resume_play(cmd, record, rows)
        return (
            f"{name} after {rows + (lost or 0)} steps: {rows} rows kept, {lost} lost, checksums verified; {continued}"
        )
    played = re.search(r"played (\d+) steps", out)
    assert played, f"exit {proc.returncode}: {err.strip()[-300:]}"
    played_steps = int(played[1])
    assert proc.returncode in (0, 128 + signum), f"exit {proc.returncode}"
    lost, frames = played_steps - rows, video_frames(video)
    assert lost == 0 and frames == played_steps, f"{played_steps} steps played, {rows} rows recorded, {frames} frames"
    return (
        f"{name} after {played_steps} steps (exit {proc.returncode}): {rows} rows kept, 0 lost, {frames} frames, "
        "checksums verified"
    )


def wait_for(ready: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.01)


def video_frames(path: Path) -> int | None:
    """Frames of an .mp4 once it can be read (a killed play's ffmpeg may still be finishing it), None if never."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            return int(iio.imread(path, plugin="FFMPEG").shape[0])
        except Exception:  # noqa: BLE001 - not complete yet
            time.sleep(0.2)
    return None


def resume_play(cmd: list[str], record: Path, rows: int) -> str:
    """The killed command again, shorter: it must continue the recording (a new session, later episodes)."""
    keys = cmd.index("--keys") + 1
    call([*cmd[:keys], "NOOP*50", *cmd[keys + 1 :]])
    data = ShardedDataset(record, verify="full")
    assert len(data) == rows + 50, f"{len(data)} rows after continuing from {rows}"
    last = [s for s in data.shards if s["session"] == data.shards[-1]["session"]]
    assert not rows or min(last[0]["episodes"]) > max(e for s in data.shards[: -len(last)] for e in s["episodes"])
    check_consecutive(record)
    return f"continued: {len(data)} rows in {len(data.manifest.sessions)} sessions"


def check_consecutive(record: Path) -> None:
    """Each session of a headless recording is one run of consecutive steps, across its shards: row i+1 follows row i
    (its frames shifted by one, the same episode) unless done[i]."""
    if not listed_shards(record):
        return
    data = ShardedDataset(record, verify="none")
    for session in sorted({s["session"] for s in data.shards}):
        pos = [p for p, s in enumerate(data.shards) if s["session"] == session]
        obs, next_obs, done, episode = (
            np.concatenate([data.array(p, f) for p in pos]) for f in ("obs", "next_obs", "done", "episode")
        )
        go_on = ~done[:-1]
        assert (episode[1:][go_on] == episode[:-1][go_on]).all(), (
            f"session {session}: an episode id changes without done"
        )
        assert (obs[1:, :-1][go_on] == obs[:-1, 1:][go_on]).all(), (
            f"session {session}: frame stacks do not shift by one"
        )
        assert (obs[1:, -1][go_on] == next_obs[:-1, 0][go_on]).all(), (
            f"session {session}: next_obs is not the next frame"
        )


TMP_CHECKPOINT = re.compile(r"\.(\w+)\.\d+\.tmp\.pt")  # io.replaced_atomically's name for a checkpoint being saved
SAVER = """
import sys, torch
from src.utils.checkpoint import save_checkpoint
# made once: the loop does little but save
bigs = [torch.arange(int(sys.argv[2]), dtype=torch.int64) * k for k in (1, 2)]
for i in range(1_000_000):
    save_checkpoint(sys.argv[1], {"step": i, "big": bigs[i % 2]})
    print(i, flush=True)
"""
BIG = 4_000_000  # int64s: a 32 MB checkpoint, about 0.1 s to save with its fsync


def save_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """A training killed inside one of its checkpoint saves, then resumed; a loop of big saves killed at random."""
    return f"{training_save_kill(tmp / 'runs', shared, rng)}; {standalone_save_kill(tmp / 'big.pt', rng)}"


def training_save_kill(runs: Path, shared: Shared, rng: random.Random) -> str:
    """SIGKILL a training of RUN the moment a temporary checkpoint file appears: that of a random one of the saves
    after its first last.pt (11 of last.pt, up to 11 of best.pt). The file being saved must be the old one, bit for bit,
    where the kill left the temporary file (it landed inside the save), else the new one, complete; train.resume must
    remove the temporary file and end as the uninterrupted run."""
    proc = subprocess.Popen(
        [*TRAIN, *RUN, f"data.dir={shared.data}", f"experiment.runs_dir={runs}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    skip, saves, seen, held = (
        rng.randrange(12),
        0,
        None,
        {},
    )  # held: each checkpoint as it was, open before a save replaces it
    wait_for(lambda: bool(list(runs.glob("*/checkpoints"))) or proc.poll() is not None, 120)
    (folder,) = runs.glob("*/checkpoints")
    saving = False
    while seen is None and proc.poll() is None:
        names = os.listdir(folder)
        tmps = [n for n in names if TMP_CHECKPOINT.fullmatch(n)]
        if tmps and "last.pt" in held and not saving:
            if saves == skip:
                os.killpg(proc.pid, signal.SIGKILL)
                seen = tmps[0]
            saves += 1
        saving = bool(tmps)
        if not tmps:
            for name in set(names) & {"last.pt", "best.pt"}:
                with contextlib.suppress(FileNotFoundError):
                    if name not in held or not os.path.samestat(os.fstat(held[name].fileno()), os.stat(folder / name)):
                        if name in held:
                            held[name].close()
                        held[name] = open(folder / name, "rb")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(
            proc.pid, signal.SIGKILL
        )  # a run that ended before its chosen save: the kill proves nothing, checks still run
    proc.wait()
    how = "the run ended first"
    if seen is not None:
        saved = folder / f"{TMP_CHECKPOINT.fullmatch(seen)[1]}.pt"
        old, landed = held[saved.name].read(), (folder / seen).exists()
        state = read_checkpoint(saved)  # complete: it loads, every field checked
        if landed:  # the rename had not happened: the old file, bit for bit
            assert saved.read_bytes() == old, f"{saved.name} is not the old file though the save did not finish"
        else:
            assert state["step"] > torch.load(io.BytesIO(old), weights_only=True)["step"], (
                f"{saved.name} is neither the old nor a new one"
            )
        how = (
            f"SIGKILL inside the save of {saved.name} (its {seen} left): the old file kept"
            if landed
            else f"SIGKILL after the save of {saved.name} (renamed): the new file, complete"
        )
    for file in held.values():
        file.close()
    (run_dir,) = runs.iterdir()
    killed_at = resume_like(run_dir, shared.reference)
    assert not list((run_dir / "checkpoints").glob(".*.tmp*")), "train.resume left a temporary checkpoint file"
    return (
        f"training: {how}; resumed from step {killed_at}: weights bit-identical, CSVs identical, no temporary file left"
    )


def standalone_save_kill(path: Path, rng: random.Random) -> str:
    """SIGKILL a child that saves a 32 MB checkpoint over and over at a random moment after its first save: the file
    must be the last save it finished (bit for bit, where the kill left the temporary file) or the one it was in."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path), str(BIG)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: path.exists() or proc.poll() is not None, 120)
    time.sleep(rng.uniform(0, 2.0))
    os.killpg(proc.pid, signal.SIGKILL)
    finished = [int(line) for line in proc.communicate()[0].split()]
    done = finished[-1] if finished else -1  # the last save that returned
    landed = bool(list(path.parent.glob(f".{path.stem}.*.tmp.pt")))
    state = load_checkpoint(path)
    step = state["step"]
    assert torch.equal(state["big"], torch.arange(BIG, dtype=torch.int64) * (step % 2 + 1)), (
        f"save {step} was not written whole"
    )
    assert step == done if landed else step in (done, done + 1), (
        f"the file holds save {step}, the last finished is {done}"
    )
    where = (
        f"inside save {done + 1} (its temporary file left)"
        if landed
        else f"between saves (save {done} the last finished)"
    )
    return f"standalone: SIGKILL {where} of a {BIG * 8 // 10**6} MB checkpoint: the file is save {step}, complete"


def merge_trial(tmp: Path, shared: Shared, rng: random.Random, trial: int) -> str:
    """SIGKILL a merge of Shared.merge_parts at a random moment (even trials) or once a random number of its files are
    linked (odd ones); the same command again must give the whole merged dataset, the parts untouched."""
    out = tmp / "merged"
    staging, cmd = staging_dir(out), [*MERGE, "--out_dir", str(out), *map(str, shared.merge_parts)]
    seconds, steps, files = shared.merge_reference
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if trial % 2 == 0:
        wait_for(lambda: proc.poll() is not None, rng.uniform(0, seconds))
    else:
        target = rng.randrange(files + 1)
        wait_for(lambda: proc.poll() is not None or linked(staging) >= target, 120)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    finished = proc.wait() == 0
    left = linked(staging)
    if (out / "manifest.json").exists():
        with ShardedDataset(out, verify="full") as data:
            assert len(data) == steps, f"{len(data)} steps merged, the parts hold {steps}"
        how = "not killed: the merge had finished" if finished else "killed after the rename: the merge complete"
    else:
        try:
            ShardedDataset(out, verify="none")
            raise AssertionError(f"'{out}' reads as a dataset without a manifest")
        except DatasetError as e:
            assert "does not exist" in str(e), str(e)
        how = (
            (
                f"killed with {left} of {files} files linked"
                if not (staging / "manifest.json").exists()
                else f"killed with all {files} files linked and the manifest written, before the rename"
            )
            if staging.exists()
            else "killed before it wrote a file"
        )
    call(cmd)
    with ShardedDataset(out, verify="full") as data:
        assert len(data) == steps, f"{len(data)} steps after the same command again, the parts hold {steps}"
    assert not staging.exists(), f"'{staging}' was left"
    assert part_checksums(shared.merge_parts) == shared.merge_part_checksums, "a part was changed"
    return f"{how}; the same command again: {steps} steps, checksums verified, parts unchanged"


def linked(staging: Path) -> int:
    """Shard files in a merge's folder (0 while there is none)."""
    try:
        return sum(name.startswith("shard_") for name in os.listdir(staging))
    except FileNotFoundError:
        return 0


def part_checksums(parts: list[Path]) -> dict[str, tuple[int, str]]:
    """Size and xxh3-128 of every file of the parts (.readers aside: every reader creates it)."""
    return {
        str(p): (p.stat().st_size, checksum_file(p))
        for part in parts
        for p in sorted(part.iterdir())
        if p.name != READERS_FILE
    }


class Shared:
    """What the sections need, made once, on first use: a small dataset, an uninterrupted training run on it, and
    that run's checkpoint with 27,000-step episodes for play (the dataset's 60-step ones would cut every shard
    short)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    @cached_property
    def data(self) -> Path:
        data = self.tmp / "train_data"
        call(
            [
                *GENERATE,
                "--out_dir",
                str(data),
                "--steps",
                "1200",
                "--num_envs",
                "3",
                "--shard_size",
                "150",
                "--max_episode_steps",
                "60",
                "--seed",
                "7",
            ]
        )
        return data

    @cached_property
    def compact(self) -> Path:
        """`data` in the compact layout."""
        call([*CONVERT, str(self.data), str(self.tmp / "train_data_frames"), "--layout", "frames"])
        return self.tmp / "train_data_frames"

    @cached_property
    def reference(self) -> Path:
        call([*TRAIN, *RUN, f"data.dir={self.data}", f"experiment.runs_dir={self.tmp / 'reference'}"])
        (reference,) = (self.tmp / "reference").iterdir()
        return reference

    @cached_property
    def parent(self) -> Path:
        """A run whose best.pt (step 30) is older than its last.pt (step 60): trained to 30, then on to 60, its
        step-30 checkpoint put back as best.pt (as when no later validation beat it)."""
        runs = self.tmp / "parent_runs"
        call([*TRAIN, *RUN, "train.max_steps=30", f"data.dir={self.data}", f"experiment.runs_dir={runs}"])
        (parent,) = runs.iterdir()
        older = (parent / "checkpoints" / "last.pt").read_bytes()
        call([*TRAIN, f"train.resume={parent}", "train.max_steps=60"])
        (parent / "checkpoints" / "best.pt").write_bytes(older)
        return parent

    @cached_property
    def branch_reference(self) -> Path:
        """The branch from the parent's best.pt to step 90, never killed."""
        parent, runs = self.tmp / "reference_parent", self.tmp / "reference_branch"
        shutil.copytree(self.parent, parent)
        call(
            [
                *TRAIN,
                f"train.resume={parent / 'checkpoints' / 'best.pt'}",
                "train.max_steps=90",
                f"experiment.runs_dir={runs}",
            ]
        )
        (branch,) = runs.iterdir()
        return branch

    @cached_property
    def merge_parts(self) -> list[Path]:
        """Parts 1/3, 2/3 and 3/3 of 1200 steps in shards of 10 rows: 2160 files for a merge to link."""
        parts = [self.tmp / f"merge_part{k}" for k in (1, 2, 3)]
        for k, part in enumerate(parts, 1):
            call(
                [
                    *GENERATE,
                    "--out_dir",
                    str(part),
                    "--steps",
                    "1200",
                    "--num_envs",
                    "2",
                    "--shard_size",
                    "10",
                    "--max_episode_steps",
                    "80",
                    "--part",
                    f"{k}/3",
                    "--seed",
                    "5",
                ]
            )
        return parts

    @cached_property
    def merge_part_checksums(self) -> dict[str, tuple[int, str]]:
        return part_checksums(self.merge_parts)

    @cached_property
    def merge_reference(self) -> tuple[float, int, int]:
        """An uninterrupted merge of the parts: (its seconds, the steps and the files it merged)."""
        self.merge_part_checksums  # noqa: B018 - before any merge
        out, start = self.tmp / "merge_reference", time.monotonic()
        call([*MERGE, "--out_dir", str(out), *map(str, self.merge_parts)])
        seconds = time.monotonic() - start
        with ShardedDataset(out, verify="full") as data:
            return seconds, len(data), sum(len(s["files"]) for s in data.shards)

    @cached_property
    def play_checkpoint(self) -> Path:
        state = read_checkpoint(self.reference / "checkpoints" / "last.pt")
        state["dataset"]["env_settings"]["max_episode_steps"] = 27_000
        save_checkpoint(self.tmp / "play.pt", state)
        return self.tmp / "play.pt"


Trial = Callable[[Path, Shared, random.Random, int], str]  # (work folder, shared inputs, RNG, trial number) -> the line
SECTIONS: dict[str, Trial] = {
    "generate": generation_trial,
    "compact": compact_trial,
    "convert": convert_trial,
    "train": training_trial,
    "branch": branch_trial,
    "play": play_trial,
    "save": save_trial,
    "merge": merge_trial,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="kills of each section (default 10)")
    p.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="the sections to run (default: all)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    failures, figures = 0, []
    with tempfile.TemporaryDirectory() as tmp_name:
        shared = Shared(Path(tmp_name))
        for section in args.only:
            for i in range(args.trials):
                work = Path(tmp_name) / f"{section}_{i}"
                work.mkdir()
                try:
                    line = SECTIONS[section](work, shared, rng, i)
                    figures.append(line)
                    print(f"{section} {i + 1}/{args.trials}: ok, {line}", flush=True)
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    failures += 1
                    print(f"{section} {i + 1}/{args.trials}: FAILED, {e}", flush=True)
    total = len(args.only) * args.trials
    print(f"{total - failures} of {total} kills survived")
    if "play" in args.only:
        print(play_totals(figures))
    if "save" in args.only:
        print(save_totals(figures))
    if "merge" in args.only:
        print(merge_totals(figures))
    return 1 if failures else 0


def play_totals(lines: list[str]) -> str:
    """Rows lost over the play trials that passed, by signal."""
    lost: dict[str, list[int]] = {}
    for line in lines:
        match = re.match(r"(SIG\w+) after .*?(-?\d+|None) lost", line)
        if match and match[2] != "None":
            lost.setdefault(match[1], []).append(int(match[2]))
    return "play rows lost: " + ", ".join(
        f"{name} {sum(v)} in {len(v)} trials (at most {max(v)})" for name, v in sorted(lost.items())
    )


def save_totals(lines: list[str]) -> str:
    """How many of the save trials' kills (that passed) landed inside a save: its temporary file was left."""
    counts = {
        kind: [m[1] for line in lines for m in re.finditer(rf"{kind}: SIGKILL (\w+)", line)]
        for kind in ("training", "standalone")
    }
    return "save kills inside a save (its temporary file left): " + ", ".join(
        f"{kind} {found.count('inside')} of {len(found)}" for kind, found in counts.items()
    )


def merge_totals(lines: list[str]) -> str:
    """Where the merge trials' kills (that passed) landed."""
    phases = {
        "killed before it wrote": "before a file was linked",
        "killed with all": "before the rename",
        "killed with ": "while linking",
        "killed after": "after the rename",
        "not killed": "not killed (finished first)",
    }
    where = [
        next(name for key, name in phases.items() if line.startswith(key))  # "killed with all" before "killed with "
        for line in lines
        if "the same command again" in line
    ]
    return "merge kills: " + ", ".join(f"{where.count(name)} {name}" for name in phases.values())


if __name__ == "__main__":
    sys.exit(main())
