"""How long does opening a dataset take, with and without the verification record (<data_dir>/.verified.json)?

    python benchmarks/bench_open.py [--steps 20000] [--repeats 3] [--data_dir DIR] [--work_dir DIR]

The dataset is recorded into a temporary directory (--steps Pong steps, about 35 KB each; deleted afterwards), or
--data_dir names one to use (its .verified.json is then written, as training would). Rows, each the median of
--repeats opens of ShardedDataset in this process:
  full, rehash       verify="full", rehash=True: every file hashed, as every start did before the record (reference)
  full, record       verify="full" once the record is saved: only sizes, headers and the small columns are read
  quick              verify="quick": no checksums at all (what the record brings a start close to)
"warm": the files are in the page cache (a start soon after the last); "cold": each file's cached pages are
dropped first with posix_fadvise(DONTNEED), only for this dataset's files, so the disk is read again (the first
start after a reboot, or a dataset larger than memory). Ratio = the reference's seconds / the row's seconds, same
cache state.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.dataset import shards  # noqa: E402
from src.dataset.shards import ShardedDataset  # noqa: E402
from src.utils.io import human_bytes  # noqa: E402


def record(out: Path, steps: int) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.dataset.generate_dataset",
            *f"--game Pong --steps {steps} --seed 0".split(),
            "--out_dir",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"generator failed: {result.stderr[-2000:]}")


def files(root: Path) -> list[Path]:
    return sorted(root.glob("shard_*.npy"))


def wait_until_settled(root: Path) -> None:
    """Files changed within shards.SETTLED_NS are left out of the record (hashed again next time): wait that out,
    so that the record row measures a record that covers every file."""
    newest = max(p.stat().st_ctime_ns for p in files(root))
    time.sleep(max(0.0, (newest + shards.SETTLED_NS - time.time_ns()) / 1e9 + 0.1))


def drop_cache(root: Path) -> None:
    """Evict this dataset's pages from the page cache (clean pages only: the generator fsynced every shard)."""
    for path in files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_open(root: Path, repeats: int, cold: bool, **options) -> tuple[float, int]:
    """(median seconds of one open, files hashed by the last one)."""
    seconds = []
    for _ in range(repeats):
        if cold:
            drop_cache(root)
        start = time.perf_counter()
        with ShardedDataset(root, **options) as data:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), data.hashed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="steps of the dataset recorded for the benchmark")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data_dir", help="an existing dataset to open instead (kept; its .verified.json is written)")
    p.add_argument("--work_dir", default=None, help="where the recorded dataset goes (deleted afterwards)")
    args = p.parse_args()
    work = None if args.data_dir else Path(tempfile.mkdtemp(prefix="bench_open_", dir=args.work_dir))
    try:
        root = Path(args.data_dir) if args.data_dir else work / "pong"
        if work is not None:
            record(root, args.steps)
        wait_until_settled(root)
        with ShardedDataset(root, rehash=True) as data:
            data.save_verification()
            steps, size, count = (
                len(data),
                sum(f["bytes"] for s in data.shards for f in s["files"].values()),
                len(files(root)),
            )
        rows = []
        for cold in (False, True):
            for name, options in (
                ("full, rehash", {"rehash": True}),
                ("full, record", {}),
                ("quick", {"verify": "quick"}),
            ):
                rows.append((name, "cold" if cold else "warm", *time_open(root, args.repeats, cold, **options)))
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{steps:,} steps, {human_bytes(size)} in {count} files, {os.cpu_count()} cores, median of {args.repeats}\n"
    )
    print(f"| {'open':14} | {'cache':5} | {'files hashed':>12} | {'seconds':>8} | {'ratio':>7} |")
    print(f"| {'-' * 14} | {'-' * 5} | {'-' * 12}:| {'-' * 8}:| {'-' * 7}:|")
    reference = {cache: s for name, cache, s, _ in rows if name == "full, rehash"}
    for name, cache, seconds, hashed in rows:
        print(f"| {name:14} | {cache:5} | {hashed:>12} | {seconds:>8.3f} | {reference[cache] / seconds:>6.1f}x |")


if __name__ == "__main__":
    main()
