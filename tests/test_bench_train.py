"""benchmarks/bench_train.py end to end on the small dataset with a tiny model: every row of its table is there."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import run


@pytest.mark.slow
def test_bench_train_prints_every_row(small_dataset: Path) -> None:
    """Every row with its samples/s (DDP in a process group of one, the dataset held on the device); the training rows
    with TFLOP/s and MFU against the CPU's estimated peak (a missing FLOP count or peak would print "-"), and "-"
    outside GPU on the CPU."""
    result = run(
        [
            sys.executable,
            "benchmarks/bench_train.py",
            "--data_dir",
            str(small_dataset),
            "--steps",
            "2",
            "--rounds",
            "1",
            "--batch_sizes",
            "8",
            "--workers",
            "0,1",
            "--profile",
            "model.channels=[8,16]",
            "model.action_embed_dim=8",
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(
        r"^\| (.+?) \| (\d+) \| ([\d-]) \| ([\d,.]+)[^|]* \| [^|]+ \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
        result.stdout,
        flags=re.M,
    )
    assert re.search(r"CPU kernels [A-Z0-9_]+ ", result.stdout)  # which instruction set torch runs on (AVX2, AVX512...)
    one_thread = [("model, synthetic, 1 thread", "-")] if int(re.search(r"(\d+) threads", result.stdout)[1]) > 1 else []
    assert [(name, workers) for name, _, workers, *_ in rows] == [
        ("model, synthetic", "-"),
        ("model, synthetic, contiguous", "-"),
        ("model, synthetic, DDP (1 process)", "-"),
        *one_thread,
        ("train, loader", "0"),
        ("loader only", "0"),
        ("train, loader", "1"),
        ("loader only", "1"),
        ("train, on device", "-"),
        ("rollout (eval)", "-"),
    ]
    assert all(float(value.replace(",", "")) > 0 for _, _, _, value, *_ in rows)
    peak = float(re.search(r"^peak ([\d.]+) TFLOP/s float32 \(CPU estimate: ", result.stdout, flags=re.M)[1])
    assert re.search(r"^batch 8: [\d.]+ GFLOP/step", result.stdout, flags=re.M)
    for name, _, _, _, tflops, mfu, outside in rows:
        if name.startswith(("model", "train")):
            assert float(tflops) > 0 and float(tflops) == pytest.approx(
                float(mfu.removesuffix("%")) / 100 * peak, rel=0.01
            ), name
        else:
            assert (tflops, mfu) == ("-", "-"), name  # no FLOPs for the loader alone and the rollouts
        assert outside == "-"  # CUDA only
    assert "convolution" in result.stdout  # the profile's table
