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
    results that are not merged: a run of another seed must join the variant's seeds, reusing the dataset, and a
    re-run of a seed must replace it."""
    out = run([*BENCH, "--budget", "tiny", "--variants", "unet_film", "--out_dir", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["budget"] == "tiny" and set(results["games"]) == {"Pong"}
    pong = results["games"]["Pong"]
    row = pong["variants"]["unet_film"]["seeds"]["0"]
    assert 1 <= row["steps"] <= 4 and row["checkpoint_step"] == row["steps"]  # last.pt is the model at the end
    assert set(row["mse_ratio_to_copy"]) == {"1", "10", "50", "100"} and row["feedback"] == "palette"
    assert all(math.isfinite(v) and v > 0 for v in row["mse_ratio_to_copy"].values())
    assert row["mse_ratio_to_copy"]["1"] == pytest.approx(row["model_mse"]["1"] / pong["copy_last_mse"]["1"])
    assert set(row["other_feedback"]) == {"uint8", "float"} and len(row["ratio_halves"]) == 2  # one window per episode
    assert pong["test"]["windows"] == 2 and pong["test"]["seed"] != results["seed"]  # held-out episodes, another seed
    table = (tmp_path / "results.md").read_text()
    assert "| variant | seeds | steps | ratio h1 | ratio h10 | ratio h50 | ratio h100 | gap h1 | gap h10 | sharp h100 | vs default |" in table
    assert "| unet_film | 1 |" in table and "| unet_film, uint8 feedback | 1 |" in table and "Copy-last MSE" in table

    again = run([*BENCH, "--budget", "tiny", "--variants", "unet_film", "--seeds", "0,1", "--out_dir", str(tmp_path)])
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "results.json").read_text())["games"]["Pong"]
    seeds = rerun["variants"]["unet_film"]["seeds"]
    assert list(seeds) == ["0", "1"] and seeds["0"]["run_dir"] != row["run_dir"]  # seed 0 replaced, seed 1 added
    assert rerun["copy_last_mse"] == pong["copy_last_mse"]  # the same test windows: the rows stay comparable
    assert len(list((tmp_path / "runs").iterdir())) == 3
    assert "| unet_film | 2 |" in (tmp_path / "results.md").read_text() and " ± " in (tmp_path / "results.md").read_text()


def test_bad_names_exit_2(tmp_path: Path) -> None:
    assert "unknown variant 'unet_flim'. Did you mean 'unet_film'?" in error_line(
        run([*BENCH, "--budget", "tiny", "--variants", "unet_flim", "--out_dir", str(tmp_path)]))
    assert "unknown game 'Pongg'" in error_line(run([*BENCH, "--budget", "tiny", "--games", "Pongg", "--out_dir", str(tmp_path)]))
    assert "--budget: invalid choice" in error_line(run([*BENCH, "--budget", "huge", "--out_dir", str(tmp_path)]))
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_only_differences_beyond_the_seed_spread_are_called() -> None:
    """Catches a table that calls a difference real when the seeds of the two rows overlap."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_quality import beyond_noise

    row = lambda h1, h50: {"mse_ratio_to_copy": {"1": h1, "50": h50}}  # noqa: E731
    default = [row(0.14, 1.00), row(0.15, 1.10), row(0.16, 1.05)]
    better_at_50 = [row(0.13, 0.80), row(0.15, 0.85), row(0.17, 0.90)]  # h1 overlaps, h50 lies below every default seed
    assert beyond_noise(better_at_50, default) == "h50 better"
    assert beyond_noise([row(0.20, 1.2), row(0.21, 1.3)], default) == "h1 worse, h50 worse"
    assert beyond_noise([row(0.10, 0.5)], default) == "-"  # one seed has no spread: nothing is called
