"""benchmarks/bench_train.py end to end on the small dataset with a tiny model: every row of its table is there."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import run


@pytest.mark.slow
def test_bench_train_prints_every_row(small_dataset: Path) -> None:
    result = run([sys.executable, "benchmarks/bench_train.py", "--data_dir", str(small_dataset), "--steps", "2", "--rounds", "1",
                  "--batch_sizes", "8", "--workers", "0,1", "--profile", "model.channels=[8,16]", "model.action_embed_dim=8"])
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (.+?) \| (\d+) \| ([\d-]) \| ([\d,.]+)", result.stdout, flags=re.M)
    assert [(name, workers) for name, _, workers, _ in rows] == [
        ("model, synthetic", "-"), ("model, synthetic, contiguous", "-"), ("model, synthetic, 1 thread", "-"),
        ("train, loader", "0"), ("loader only", "0"), ("train, loader", "1"), ("loader only", "1"), ("rollout (eval)", "-")]
    assert all(float(value.replace(",", "")) > 0 for *_, value in rows)
    assert "convolution" in result.stdout  # the profile's table
