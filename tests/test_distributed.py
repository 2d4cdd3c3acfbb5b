"""Training under torchrun: 2 CPU processes (gloo) with a per-process batch of 4 train like 1 process with 8."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from src.config import TrainConfig
from src.models.checkpoint import read_checkpoint
from tests.conftest import TINY, run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# lr 3e-4, not the default 1e-3: Adam moves a weight whose gradient is near 0 by about lr in the direction of that
# gradient's sign, which the other order of the sums can flip; at 1e-3 that exceeds the tolerance below.
LR, STEPS = 3e-4, 6
RUN = [*TINY, f"optimizer.lr={LR}", f"train.max_steps={STEPS}", "train.log_every=1", "train.val_every_steps=3"]
RUN += ["train.val_rollout_horizon=5"]
TOLERANCE = 1e-4  # relative: the same sums, added up in another order (per process, then averaged)


def rows(path: Path, columns: tuple[str, ...]) -> list[float]:
    """The columns of every row, one flat list."""
    with open(path, newline="") as f:
        return [float(r[c]) for r in csv.DictReader(f) for c in columns]


def train(launcher: list[str], runs: Path, dataset: Path, *overrides: str) -> Path:
    result = run([*launcher, "-m", "src.train", f"data.dir={dataset}", f"experiment.runs_dir={runs}", *RUN, *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = runs.iterdir()  # one run folder, whatever the number of processes
    return run_dir


@pytest.mark.slow
def test_two_processes_match_one_with_the_global_batch_and_resume(small_dataset: Path, tmp_path: Path) -> None:
    ddp = train(TORCHRUN, tmp_path / "ddp", small_dataset, "train.batch_size=4", "train.event_batch_size=4")
    one = train([sys.executable], tmp_path / "one", small_dataset, "train.batch_size=8", "train.event_batch_size=8")
    for name, columns in (
        ("metrics.csv", ("step", "loss", "mse", "grad_norm", "reward_loss", "end_loss")),
        ("val_metrics.csv", ("step", "loss", "mse")),
    ):
        got, want = rows(ddp / name, columns), rows(one / name, columns)
        assert (
            got[:: len(columns)] == want[:: len(columns)] == ([1, 2, 3, 4, 5, 6] if name == "metrics.csv" else [3, 6])
        )
        assert got == pytest.approx(want, rel=TOLERANCE)
    state = read_checkpoint(ddp / "checkpoints" / "last.pt")
    assert state["dataset"]["processes"] == 2 and state["dataset"]["global_batch"] == 8
    reference = read_checkpoint(one / "checkpoints" / "last.pt")["model"]
    assert reference.keys() == state["model"].keys()
    # Adam moves a weight whose gradient is about 0 by about lr in the sign of that gradient, and the other order of
    # the sums can flip the sign (the comment at RUN): such weights may differ by up to 2 lr a step. Every weight must
    # stay within that, and all but one in 1,000 within the tolerance (a wrong average would move most of them; the
    # grad_norm column above catches a sum in place of the mean, which Adam's steps alone would hide).
    lr = LR * TrainConfig().event_lr_scale  # the event head's learning rate, the largest of the groups
    off = total = 0
    for k, v in reference.items():
        got = state["model"][k]
        assert (got - v).abs().max() <= 2 * lr * STEPS, k
        off += int((~torch.isclose(got, v, rtol=TOLERANCE, atol=1e-7)).sum())
        total += v.numel()
    assert off <= 1e-3 * total, f"{off} of {total} weights differ"

    # Resumed under torchrun, it goes on as the one-process run resumed.
    for launcher, run_dir in ((TORCHRUN, ddp), ([sys.executable], one)):
        result = run([*launcher, "-m", "src.train", f"train.resume={run_dir}", "train.max_steps=9"])
        assert result.returncode == 0, result.stderr[-3000:]
    got, want = rows(ddp / "metrics.csv", ("step", "loss")), rows(one / "metrics.csv", ("step", "loss"))
    assert got[::2] == list(range(1, 10)) and got == pytest.approx(want, rel=TOLERANCE)
