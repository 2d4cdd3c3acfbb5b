"""How fast do training windows read from each dataset layout, from the page cache and from the disk, and how many
bytes does a step take?

    python benchmarks/bench_read.py [--games Pong,Breakout,Boxing] [--steps 100000] [--reads 3000] [--work_dir DIR]

For each game, a dataset of --steps steps is recorded in the compact layout (`generate_dataset --layout frames`,
seed 0, 4 games at once) into --work_dir (kept and reused: a re-run reads the same data) and converted into the
contract's layout with `src.dataset.convert_dataset` (skipped with --no_steps_layout: the contract layout's copy
takes 35 KB a step). Rows, per game and layout:
  bytes/step      the manifest's bytes over its steps, every file included
  warm reads/s    random training samples (one step: its 4-frame stack, action, next frame, reward, end), as the
                  DataLoader's WindowDataset reads them, --reads of them in one process, after a first pass that put
                  the files in the page cache (and, in the compact layout, its decoded chunks in the reader's cache)
  cold reads/s    the same after each file's cached pages were dropped (posix_fadvise DONTNEED: the disk is read
                  again, as for a dataset larger than memory) and in a new reader (no decoded chunk cached)
  ratio           reads/s over the contract layout's warm reads/s of the same game, measured in the same run
  decode frames/s the compact layout only: whole chunks decoded one after another (what a sampler that draws many
                  windows from each decoded chunk, or a GPU's on-device copy, is bounded by), in frames a second
One core (torch is not used); the work directory needs about 36 KB x --steps x games of disk for the contract layout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.dataset.offline_dataset import WindowDataset  # noqa: E402
from src.dataset.shards import ShardedDataset  # noqa: E402
from src.utils.io import human_bytes  # noqa: E402


def command(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed: {result.stderr.decode()[-2000:]}")


def prepare(game: str, steps: int, work: Path, with_steps_layout: bool) -> dict[str, Path]:
    compact, contract = work / f"{game}_frames_{steps}", work / f"{game}_steps_{steps}"
    if not (compact / "manifest.json").is_file():
        command(
            "src.dataset.generate_dataset",
            *f"--game {game} --steps {steps} --seed 0 --num_envs 4 --layout frames --resume".split(),
            "--out_dir",
            str(compact),
        )
    found = {"frames": compact}
    if with_steps_layout:
        if not (contract / "manifest.json").is_file() or not ShardedDataset(contract, verify="none").manifest.complete:
            command("src.dataset.convert_dataset", str(compact), str(contract), "--layout", "steps", "--resume")
        found["steps"] = contract
    return found


def drop_cache(root: Path) -> None:
    for path in sorted(root.glob("shard_*.npy")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def reads_per_second(samples: WindowDataset, rows: np.ndarray) -> float:
    start = time.perf_counter()
    for row in rows.tolist():
        samples[row]
    return len(rows) / (time.perf_counter() - start)


def decode_rate(root: Path) -> float:
    data = ShardedDataset(root, verify="none")
    frames, start = 0, time.perf_counter()
    for pos in range(len(data.shards)):
        store = data.store(pos)
        for j in range(len(store.offsets) - 1):
            frames += len(store.chunk(j))
    return frames / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="Pong,Breakout,Boxing")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--reads", type=int, default=3000)
    p.add_argument("--work_dir", default=str(ROOT / "runs" / "bench_read"))
    p.add_argument("--no_steps_layout", action="store_true", help="measure the compact layout only")
    args = p.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.steps:,} steps a game, {args.reads:,} random samples a row, one process; data in {work}\n")
    print("| game | layout | bytes/step | size | warm reads/s | cold reads/s | ratio warm / cold | decode frames/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for game in args.games.split(","):
        datasets = prepare(game, args.steps, work, not args.no_steps_layout)
        rows = np.random.default_rng(0).integers(0, args.steps, args.reads)
        results = {}
        for layout, root in datasets.items():
            manifest = ShardedDataset(root, verify="none").manifest
            samples = WindowDataset(root, np.arange(manifest.steps))
            reads_per_second(samples, rows)  # the first pass: the pages (and the decoded chunks) in memory
            warm = reads_per_second(samples, rows)
            drop_cache(root)
            cold = reads_per_second(WindowDataset(root, np.arange(manifest.steps)), rows)  # no chunk cached either
            decode = decode_rate(root) if layout == "frames" else None
            results[layout] = (manifest.totals["bytes"] / manifest.steps, manifest.totals["bytes"], warm, cold, decode)
        reference = results.get("steps", results["frames"])[2]
        for layout, (per_step, size, warm, cold, decode) in results.items():
            print(
                f"| {game} | {layout} | {per_step:,.0f} | {human_bytes(size)} | {warm:,.0f} | {cold:,.0f} | "
                f"{warm / reference:.2f} / {cold / reference:.2f} | {'-' if decode is None else f'{decode:,.0f}'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
