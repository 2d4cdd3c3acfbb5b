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
    assert (
        "| variant | seeds | steps | ratio h1 | ratio h10 | ratio h50 | ratio h100 | gap h1 | gap h10 | sharp h100 "
        "| vs default |" in table
    )
    assert "| unet_film | 1 |" in table and "| unet_film, uint8 feedback | 1 |" in table and "Copy-last MSE" in table
    alive = row["alive"]  # the imagined game's changed pixels, motion and objects at each headline step
    assert set(alive) == {"changed_recall", "changed_precision", "motion", "objects", "ball_present", "ball_distance"}
    assert all(set(at) == {"1", "10", "50", "100"} for at in alive.values())
    assert 0 <= alive["changed_recall"]["10"] <= 1 and alive["motion"]["100"] >= 0 and alive["objects"]["50"] > 0
    assert alive["ball_present"]["1"] is None or 0 <= alive["ball_present"]["1"] <= 1  # Pong's ball, from the RAM
    assert set(row["ball_counted"]) == {"1", "10", "50", "100"}
    assert 0 <= row["val_changed_recall"] <= 1
    assert (
        "| variant | recall h10 | recall h50 | precision h10 | motion h100 | objects h50 | ball present h10 | "
        "ball present h50 | ball dist h10 |" in table
    )

    again = run([*BENCH, "--budget", "tiny", "--variants", "unet_film", "--seeds", "0,1", "--out_dir", str(tmp_path)])
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "results.json").read_text())["games"]["Pong"]
    seeds = rerun["variants"]["unet_film"]["seeds"]
    assert list(seeds) == ["0", "1"] and seeds["0"]["run_dir"] != row["run_dir"]  # seed 0 replaced, seed 1 added
    assert rerun["copy_last_mse"] == pong["copy_last_mse"]  # the same test windows: the rows stay comparable
    assert len(list((tmp_path / "runs").iterdir())) == 3
    assert (
        "| unet_film | 2 |" in (tmp_path / "results.md").read_text() and " ± " in (tmp_path / "results.md").read_text()
    )


@pytest.mark.slow  # starts the benchmark as a process, 3 times
def test_bad_names_exit_2(tmp_path: Path) -> None:
    assert "unknown variant 'unet_flim'. Did you mean 'unet_film'?" in error_line(
        run([*BENCH, "--budget", "tiny", "--variants", "unet_flim", "--out_dir", str(tmp_path)])
    )
    assert "unknown game 'Pongg'" in error_line(
        run([*BENCH, "--budget", "tiny", "--games", "Pongg", "--out_dir", str(tmp_path)])
    )
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


def test_the_alive_table_averages_what_was_counted() -> None:
    """Catches a null (nothing counted) or a result from before the block breaking the table, or taken as a 0."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_quality import alive_row

    alive = lambda recall, precision, motion, objects, ball=None: {  # noqa: E731
        "alive": {
            "changed_recall": {"10": recall, "50": recall / 2},
            "changed_precision": {"10": precision},
            "motion": {"100": motion},
            "objects": {"50": objects},
        }
        | ({"ball_present": {"10": ball[0], "50": ball[1]}, "ball_distance": {"10": ball[2]}} if ball else {})
    }
    # The last seed: a result from before the block. A None (no real ball at h50) is left out of the mean.
    seeds = [alive(0.5, None, 0.1, 1.5, (1.0, 0.5, 2.0)), alive(0.7, 0.9, 0.3, 2.5, (0.8, None, 4.0)), {}]
    living = ["0.600 ± 0.141", "0.300 ± 0.071", "0.900", "0.200 ± 0.141", "2.000 ± 0.707"]
    assert alive_row("v", seeds) == ["v", *living, "0.900 ± 0.141", "0.500", "3.000 ± 1.414"]
    assert alive_row("old", [{}]) == ["old", *["-"] * 8]
    no_ball = alive_row("Boxing", [alive(0.5, 0.5, 0.5, 0.5)])  # a game whose ball is not tracked
    assert no_ball == ["Boxing", "0.500", "0.250", "0.500", "0.500", "0.500", "-", "-", "-"]


@pytest.mark.slow
def test_tiny_budget_scores_edm_by_sample_and_by_mean_and_shows_frames_side_by_side(tmp_path: Path) -> None:
    """A stochastic variant's row: one sample's figures, the mean of 4 samples' as a row of its own, SSIM and sharpness
    at every step, imagined frames/s at 1, 3 and 10 denoising steps; then side_by_side.py draws its frames beside the
    default's on the same test windows."""
    out = run([*BENCH, "--budget", "tiny", "--variants", "unet_film,edm", "--out_dir", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    variants = json.loads((tmp_path / "results.json").read_text())["games"]["Pong"]["variants"]
    edm, film = variants["edm"]["seeds"]["0"], variants["unet_film"]["seeds"]["0"]
    assert set(edm["imagined_frames_per_s"]) == {"1", "3", "10"} and set(film["imagined_frames_per_s"]) == {"-"}
    assert edm["imagined_frames_per_s"]["1"] > edm["imagined_frames_per_s"]["10"]  # 10 network calls per frame, not 1
    assert edm["sample_mean"]["samples"] == 4 and set(edm["sample_mean"]["mse_ratio_to_copy"]) == {
        "1",
        "10",
        "50",
        "100",
    }
    assert "sample_mean" not in film and set(edm["ssim"]) == set(edm["sharpness"]) == {"1", "10", "50", "100"}
    table = (tmp_path / "results.md").read_text()
    assert "| edm | 1 |" in table and "| edm, mean of 4 samples | 1 |" in table
    assert "| variant | ssim h1 | ssim h10 | ssim h50 | ssim h100 | sharp h1 |" in table

    picture = tmp_path / "frames.png"
    shown = run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "side_by_side.py"),
            "--budget",
            "tiny",
            "--out_dir",
            str(tmp_path),
            "--checkpoints",
            f"{film['run_dir']},{edm['run_dir']}",
            "--steps",
            "1,50",
            "--windows",
            "2",
            "--out",
            str(picture),
        ]
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "| unet_film |" in shown.stdout and "| edm |" in shown.stdout and picture.stat().st_size > 1000
