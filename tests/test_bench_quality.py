"""The quality benchmark end to end on its tiny budget: dataset, training, held-out evaluation, merged results."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, error_line, run

BENCH = [sys.executable, str(ROOT / "benchmarks" / "bench_quality.py")]


@pytest.mark.slow
def test_tiny_budget_writes_a_scored_row(tmp_path: Path) -> None:
    """Catches a broken link in the chain (generator flags, config overrides, checkpoint path, eval windows) and
    results that are not merged: a second run of the same variant must replace its row, reusing the dataset."""
    out = run([*BENCH, "--budget", "tiny", "--variants", "unet_film", "--out_dir", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["budget"] == "tiny" and set(results["games"]) == {"Pong"}
    pong = results["games"]["Pong"]
    row = pong["variants"]["unet_film"]
    assert 1 <= row["steps"] <= 4 and row["checkpoint_step"] == row["steps"]  # last.pt is the model at the end
    assert set(row["mse_ratio_to_copy"]) == {"1", "10", "50"}
    assert all(math.isfinite(v) and v > 0 for v in row["mse_ratio_to_copy"].values())
    assert row["mse_ratio_to_copy"]["1"] == pytest.approx(row["model_mse"]["1"] / pong["copy_last_mse"]["1"])
    assert pong["test"]["windows"] == 2 and pong["test"]["seed"] != results["seed"]  # held-out episodes, another seed
    table = (tmp_path / "results.md").read_text()
    assert "| variant | params | steps | train min | ratio h1 | ratio h10 | ratio h50 | PSNR h1 | SSIM h1 | gap h1 | gap h10 |" in table
    assert "| unet_film |" in table and "Copy-last MSE" in table

    again = run([*BENCH, "--budget", "tiny", "--variants", "unet_film", "--out_dir", str(tmp_path)])
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "results.json").read_text())["games"]["Pong"]
    assert list(rerun["variants"]) == ["unet_film"] and rerun["variants"]["unet_film"]["run_dir"] != row["run_dir"]
    assert rerun["copy_last_mse"] == pong["copy_last_mse"]  # the same test windows: the rows stay comparable
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_bad_names_exit_2(tmp_path: Path) -> None:
    assert "unknown variant 'unet_flim'. Did you mean 'unet_film'?" in error_line(
        run([*BENCH, "--budget", "tiny", "--variants", "unet_flim", "--out_dir", str(tmp_path)]))
    assert "unknown game 'Pongg'" in error_line(run([*BENCH, "--budget", "tiny", "--games", "Pongg", "--out_dir", str(tmp_path)]))
    assert "--budget: invalid choice" in error_line(run([*BENCH, "--budget", "huge", "--out_dir", str(tmp_path)]))
    assert not list(tmp_path.iterdir())  # refused before anything was written
