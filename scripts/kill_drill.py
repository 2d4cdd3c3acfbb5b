"""Kill generation and training with SIGKILL at random moments, resume them, and check what they left.

    python scripts/kill_drill.py --trials 20          # 20 generation and 20 training kills, about 10 minutes

Generation: a kill anywhere (mid-shard, mid-manifest write), then --resume, must give a dataset that passes a
full checksum check with exactly the requested steps. Training: a kill anywhere after the first checkpoint,
then train.resume, must end with last.pt and best.pt bit-identical to an uninterrupted run's and the CSVs
holding each step once with the same values. The same checks as tests/test_generate.py and tests/test_resume.py,
more times than CI can afford. Prints one line per trial and the totals; exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.dataset.shards import ShardedDataset  # noqa: E402
from src.utils.checkpoint import load_checkpoint  # noqa: E402

GENERATE = [sys.executable, "-m", "src.dataset.generate_dataset"]
TRAIN = [sys.executable, "-m", "src.train"]
DATA = ["--steps", "3000", "--num_envs", "2", "--shard_size", "250", "--max_episode_steps", "80"]
RUN = ["model.channels=[8,16]", "model.action_embed_dim=8", "train.batch_size=8", "train.val_batches=2", "train.warmup_steps=2",
       "train.max_steps=60", "train.log_every=5", "train.val_every_steps=5", "train.val_rollout_horizon=5",
       "train.val_rollout_every=2"]


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


def generation_trial(tmp: Path, rng: random.Random) -> str:
    out = tmp / "data"
    kill_after([*GENERATE, "--out_dir", str(out), *DATA, "--seed", str(rng.randrange(1000))],
               lambda: (out / "manifest.json").exists(), rng.uniform(0, 1.5))
    listed = listed_shards(out)
    if listed:
        ShardedDataset(out, verify="full")  # what the killed run listed is complete and intact
    call([*GENERATE, "--out_dir", str(out), "--resume"])
    data = ShardedDataset(out, verify="full")
    assert len(data) == 3000, f"{len(data)} steps"
    return f"killed with {listed} shards listed; resumed to {len(data)} steps, checksums verified"


def listed_shards(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [[r["step"], r["loss"], r["mse"]] for r in csv.DictReader(f)]


def training_trial(tmp: Path, data: Path, reference: Path, rng: random.Random) -> str:
    runs = tmp / "runs"
    kill_after([*TRAIN, *RUN, f"data.dir={data}", f"experiment.runs_dir={runs}"],
               lambda: bool(list(runs.glob("*/checkpoints/last.pt"))), rng.uniform(0, 2.0))
    (run_dir,) = runs.iterdir()
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    if killed_at < 60:
        call([*TRAIN, f"train.resume={run_dir}"])
    for name in ("last.pt", "best.pt"):
        got, want = (load_checkpoint(d / "checkpoints" / name)["model"] for d in (run_dir, reference))
        assert all((got[k] == want[k]).all() for k in want), f"{name} differs"
    for name in ("metrics.csv", "val_metrics.csv"):
        assert rows(run_dir / name) == rows(reference / name), f"{name} differs"
    return f"killed after the checkpoint of step {killed_at}; resumed: weights bit-identical, CSVs identical"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="kills of each kind (default 10)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "train_data"
        call([*GENERATE, "--out_dir", str(data), "--steps", "1200", "--num_envs", "3", "--shard_size", "150",
              "--max_episode_steps", "60", "--seed", "7"])
        call([*TRAIN, *RUN, f"data.dir={data}", f"experiment.runs_dir={tmp / 'reference'}"])
        (reference,) = (tmp / "reference").iterdir()
        for kind, trial in [("generation", generation_trial), ("training", training_trial)]:
            for i in range(args.trials):
                work = tmp / f"{kind}_{i}"
                work.mkdir()
                try:
                    line = trial(work, rng) if kind == "generation" else trial(work, data, reference, rng)
                    print(f"{kind} {i + 1}/{args.trials}: ok, {line}", flush=True)
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    failures += 1
                    print(f"{kind} {i + 1}/{args.trials}: FAILED, {e}", flush=True)
    print(f"{2 * args.trials - failures} of {2 * args.trials} kills survived")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
