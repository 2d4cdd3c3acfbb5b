"""Resuming training: a run killed at any moment continues in its own folder to the same weights, bit for bit."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from src.config import ConfigError
from src.dataset.manifest import Manifest
from src.models.checkpoint import read_checkpoint
from src.training.batches import SampleStream
from src.training.loop import train
from src.training.outputs import CsvLog, create_run_dir
from src.training.resume import check_resumable
from src.utils.errors import UserError
from tests.conftest import ROOT, TINY, run, tiny_config

# 40 steps, a checkpoint every 5: long enough that a kill lands mid-run, short enough for CI.
RUN = [*TINY, "train.max_steps=40", "train.log_every=5", "train.val_every_steps=5", "train.val_rollout_enabled=false"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_weights(a: Path, b: Path) -> bool:
    x, y = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def uninterrupted(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of the 40 steps without a break."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return Path(train(tiny_config(small_dataset, tmp, *RUN))["run_dir"])


def test_sample_stream_is_a_function_of_the_position() -> None:
    full = SampleStream(10, seed=3)
    stream = [i for _, i in zip(range(35), full)]
    assert all(
        sorted(stream[e * 10 : (e + 1) * 10]) == list(range(10)) for e in range(3)
    )  # each epoch: every index once
    assert stream[:10] != stream[10:20]  # reshuffled each epoch
    for start in (0, 7, 10, 23):
        assert [i for _, i in zip(range(35 - start), SampleStream(10, seed=3, start=start))] == stream[start:]
    assert [i for _, i in zip(range(10), SampleStream(10, seed=4))] != stream[:10]


def test_a_resumed_csv_replaces_the_later_rows_only_as_it_logs_them_again(tmp_path: Path) -> None:
    """The killed run logged steps 15 and 20 after its checkpoint at 10 and was killed writing 25: those rows stay
    until the resumed run logs the same steps, so a kill of the resumed run at any moment loses no row."""
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"step,loss\r\n5,0.1\r\n10,0.2\r\n15,0.3\r\n20,0.4\r\n25,0.")
    before = path.read_bytes()
    log = CsvLog(path, ["step", "loss"], resumed_at=10)
    assert path.read_bytes() == before  # opening removes nothing
    log.write({"step": 15, "loss": 0.35})
    assert [(r["step"], r["loss"]) for r in rows(path)] == [("5", "0.1"), ("10", "0.2"), ("15", "0.35"), ("20", "0.4")]
    log.write({"step": 20, "loss": 0.45})
    log.write({"step": 25, "loss": 0.55})  # past the killed run's rows: appended
    log.close()
    assert [(r["step"], r["loss"]) for r in rows(path)] == [
        ("5", "0.1"),
        ("10", "0.2"),
        ("15", "0.35"),
        ("20", "0.45"),
        ("25", "0.55"),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # rewritten in place, no temporary left


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))  # each kills at another moment (2 of 3 kept: 21 s each)
def test_sigkill_then_resume_matches_the_uninterrupted_run(
    small_dataset: Path, tmp_path: Path, uninterrupted: Path, trial: int
) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "src.train", *RUN, f"data.dir={small_dataset}", f"experiment.runs_dir={runs}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/checkpoints/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.01)
    time.sleep(random.Random(trial).uniform(0, 0.6))  # anywhere: mid-step, mid-validation, mid-checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = runs.iterdir()
    killed_at = read_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert killed_at < 40, "the kill came after the run had finished; the test proves nothing"

    # The killed run's folder can be evaluated from its last checkpoint as it is.
    evaluated = run(
        [
            sys.executable,
            "-m",
            "src.eval",
            "--checkpoint",
            str(run_dir / "checkpoints" / "last.pt"),
            "--game",
            "Pong",
            "--data_dir",
            str(small_dataset),
            "--horizon",
            "5",
            "--episodes",
            "1",
            "--starts_per_episode",
            "4",
            "--videos",
            "0",
            "--out_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr

    resumed = run([sys.executable, "-m", "src.train", f"train.resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} from last.pt at step {killed_at}" in resumed.stdout
    assert list(runs.iterdir()) == [run_dir]  # the same folder, no new one
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 40
    assert same_weights(run_dir / "checkpoints" / "last.pt", uninterrupted / "checkpoints" / "last.pt")  # bitwise
    assert same_weights(run_dir / "checkpoints" / "best.pt", uninterrupted / "checkpoints" / "best.pt")
    for name, columns in (
        ("metrics.csv", ("step", "loss", "mse", "lr", "grad_norm")),
        ("val_metrics.csv", ("step", "loss", "mse")),
    ):
        got, want = rows(run_dir / name), rows(uninterrupted / name)
        assert [r["step"] for r in got] == [r["step"] for r in want]  # every step once, in order
        assert [[r[c] for c in columns] for r in got] == [[r[c] for c in columns] for r in want]
    assert not [p for p in run_dir.rglob(".*.tmp*")], "a temporary file of the killed run is left"


@pytest.mark.slow  # three trainings
def test_resume_extends_a_finished_run_and_auto_finds_the_newest(small_dataset: Path, tmp_path: Path) -> None:
    first = train(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.max_steps=4",
            "train.log_every=2",
            "train.val_every_steps=2",
            "train.val_rollout_enabled=false",
        )
    )
    run_dir = Path(first["run_dir"])
    with pytest.raises(ConfigError, match="is at step 4, train.max_steps is 4; raise train.max_steps"):
        train(
            tiny_config(
                small_dataset,
                tmp_path,
                "train.max_steps=4",
                f"train.resume={run_dir}",
                "train.val_rollout_enabled=false",
            )
        )
    again = train(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.max_steps=6",
            "train.log_every=2",
            "train.val_every_steps=2",
            "train.val_rollout_enabled=false",
            "train.resume=auto",
        )
    )
    assert again["run_dir"] == str(run_dir) and again["step"] == 6
    assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["2", "4", "6"]
    assert [r["step"] for r in rows(run_dir / "val_metrics.csv")] == ["2", "4", "6"]


@pytest.mark.slow  # starts train as a process
def test_resume_from_the_command_line_takes_the_checkpoints_config(short_run, tmp_path: Path) -> None:
    """Only the overrides given change: config.yaml's defaults (a bigger model) do not replace the run's own config."""
    cfg, result = short_run
    run_dir = tmp_path / "run"
    shutil.copytree(result["run_dir"], run_dir)  # the session's run stays as other tests expect it
    resumed = run(
        [
            sys.executable,
            "-m",
            "src.train",
            f"train.resume={run_dir}",
            "train.max_steps=8",
            "train.val_rollout_enabled=false",
            f"experiment.runs_dir={tmp_path / 'runs'}",
        ]
    )
    assert resumed.returncode == 0, resumed.stderr
    state = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 8 and state["config"]["model"]["channels"] == cfg.model.channels == [8, 16]
    assert state["config"]["train"]["max_steps"] == 8 and state["config"]["train"]["resume"] == str(
        run_dir / "checkpoints" / "last.pt"
    )
    assert not (tmp_path / "runs").exists()  # no new run folder


@pytest.mark.slow  # trains until it diverges
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(small_dataset: Path, tmp_path: Path) -> None:
    base = [*TINY, "train.log_every=2", "train.val_every_steps=2", "train.val_rollout_enabled=false"]
    run_dir = Path(train(tiny_config(small_dataset, tmp_path, *base, "train.max_steps=4"))["run_dir"])
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(
        UserError, match=r"training diverged at step \d+ .*last good checkpoint is .*last.pt \(step 4\)"
    ):
        train(
            tiny_config(
                small_dataset,
                tmp_path,
                *base,
                "train.max_steps=50",
                "optimizer.lr=1e30",
                "train.grad_clip=0",
                f"train.resume={run_dir}",
            )
        )
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == good
    state = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert all(torch.isfinite(w).all() for w in state["model"].values())
    assert math.isfinite(state["val"]["val/mse"])


@pytest.mark.slow  # trains until it diverges
def test_divergence_before_the_first_checkpoint_does_not_advise_a_resume(small_dataset: Path, tmp_path: Path) -> None:
    """Catches the advice to resume from a checkpoint that does not exist ("the last good checkpoint is none yet")."""
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.max_steps=50",
        "train.val_every_steps=50",
        "optimizer.lr=1e30",
        "train.grad_clip=0",
        "train.warmup_steps=0",
        "train.val_rollout_enabled=false",
    )
    with pytest.raises(UserError) as error:
        train(cfg)
    assert re.fullmatch(
        r"training diverged at step \d+ .*before its first checkpoint; start again with a lower learning "
        r"rate, e\.g\. optimizer\.lr=3\.3e\+29",
        str(error.value),
    ), str(error.value)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_resume_restores_every_rng(short_run) -> None:
    """The checkpoint carries Python's, NumPy's and torch's RNG states, and they load with weights_only=True."""
    from src.utils.seed import rng_state, set_rng_state

    state = read_checkpoint(Path(short_run[1]["run_dir"]) / "checkpoints" / "last.pt")
    set_rng_state(state["rng"])
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == drawn
    assert rng_state()["torch"].dtype == torch.uint8


def test_two_runs_in_the_same_second_get_their_own_folders(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr("src.utils.io.datetime", Frozen)
    cfg = tiny_config(small_dataset, tmp_path)
    folders = [create_run_dir(cfg, "Pong") for _ in range(3)]
    assert [f.name for f in folders] == ["20260102-030405_Pong", "20260102-030405_Pong-2", "20260102-030405_Pong-3"]
    assert all(sorted(p.name for p in f.iterdir()) == ["checkpoints", "images", "videos"] for f in folders)


@pytest.mark.slow  # two trainings logged to W&B offline
def test_offline_wandb_run_continues_under_the_same_id(small_dataset: Path, tmp_path: Path, wandb_env: Path) -> None:
    base = [
        *TINY,
        "train.log_every=2",
        "train.val_every_steps=2",
        "train.val_rollout_enabled=false",
        "experiment.wandb.mode=offline",
    ]
    run_dir = Path(train(tiny_config(small_dataset, tmp_path, *base, "train.max_steps=2"))["run_dir"])
    first_id = read_checkpoint(run_dir / "checkpoints" / "last.pt")["wandb_id"]
    train(tiny_config(small_dataset, tmp_path, *base, "train.max_steps=4", f"train.resume={run_dir}"))
    assert first_id and read_checkpoint(run_dir / "checkpoints" / "last.pt")["wandb_id"] == first_id
    offline_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(
        f"-{first_id}" in name for name in offline_runs
    )  # W&B adds -1 within a second


BASE = [*TINY, "train.log_every=2", "train.val_every_steps=2", "train.val_rollout_enabled=false"]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # three trainings
def test_resume_from_an_older_best_pt_branches_and_leaves_the_run_as_it_is(small_dataset: Path, tmp_path: Path) -> None:
    run_dir = Path(train(tiny_config(small_dataset, tmp_path, *BASE, "train.max_steps=2"))["run_dir"])
    older = (run_dir / "checkpoints" / "best.pt").read_bytes()  # step 2
    train(tiny_config(small_dataset, tmp_path, *BASE, "train.max_steps=4", f"train.resume={run_dir}"))
    (run_dir / "checkpoints" / "best.pt").write_bytes(older)  # as when step 4 validated worse than step 2
    before = files(run_dir)

    result = train(
        tiny_config(
            small_dataset, tmp_path, *BASE, "train.max_steps=6", f"train.resume={run_dir / 'checkpoints' / 'best.pt'}"
        )
    )
    branch = Path(result["run_dir"])
    assert branch != run_dir and files(run_dir) == before  # nothing of the run is changed: its later steps are kept
    assert json.loads((branch / "parent.json").read_text()) == {
        "run": str(run_dir.resolve()),
        "checkpoint": str((run_dir / "checkpoints" / "best.pt").resolve()),
        "step": 2,
        "parent_last_step": 4,
    }
    assert [r["step"] for r in rows(branch / "metrics.csv")] == ["2", "4", "6"]  # the parent's step 2, then its own
    assert [r["step"] for r in rows(branch / "val_metrics.csv")] == ["2", "4", "6"]
    assert rows(branch / "metrics.csv")[0] == rows(run_dir / "metrics.csv")[0]
    assert read_checkpoint(branch / "checkpoints" / "last.pt")["step"] == 6
    assert (branch / "checkpoints" / "best.pt").is_file()


def test_resume_from_best_pt_at_the_same_step_as_last_pt_continues_in_place(short_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run[1]["run_dir"], run_dir)
    # best.pt as the last validation's: the short run's best may be its step-3 validation, by a hair (lr 1e-3)
    shutil.copy(run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt")
    assert (
        read_checkpoint(run_dir / "checkpoints" / "best.pt")["step"]
        == read_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
        == 6
    )
    result = train(
        tiny_config(
            short_run[0].data.dir,
            tmp_path,
            *BASE,
            "train.max_steps=8",
            f"train.resume={run_dir / 'checkpoints' / 'best.pt'}",
        )
    )
    assert result["run_dir"] == str(run_dir) and not (tmp_path / "runs").exists()


def shrunk_copy(small_dataset: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the small dataset whose manifest lists all but its last two shards (as before a generation went on),
    and the full manifest's text."""
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    full = (data / "manifest.json").read_text()
    manifest = Manifest.read(data)
    manifest.shards = manifest.shards[:-2]
    manifest.target_steps = manifest.steps
    manifest.write(data)
    return data, full


@pytest.mark.slow  # two trainings and a generation
def test_resume_refuses_a_grown_dataset_unless_allowed_and_then_keeps_the_split(
    small_dataset: Path, tmp_path: Path
) -> None:
    data, full = shrunk_copy(small_dataset, tmp_path)
    run_dir = Path(train(tiny_config(data, tmp_path, *BASE, "train.max_steps=2"))["run_dir"])
    before = read_checkpoint(run_dir / "checkpoints" / "last.pt")["dataset"]
    (data / "manifest.json").write_text(full)  # generate_dataset --resume --steps more: two shards added
    shards = len(json.loads(full)["shards"])
    with pytest.raises(
        ConfigError,
        match=rf"has grown since the checkpoint \({shards - 2} shards then, {shards} now\); set data.allow_grown=true",
    ):
        train(tiny_config(data, tmp_path, *BASE, "train.max_steps=4", f"train.resume={run_dir}"))

    train(tiny_config(data, tmp_path, *BASE, "train.max_steps=4", f"train.resume={run_dir}", "data.allow_grown=true"))
    after = read_checkpoint(run_dir / "checkpoints" / "last.pt")["dataset"]
    assert (
        after["val_episodes"] == before["val_episodes"] and after["val_rows"] == before["val_rows"]
    )  # validation as before
    assert (
        after["train_rows"] > before["train_rows"]
        and after["shards"][:-2] == before["shards"]
        and len(after["shards"]) == shards
    )
    assert [r["step"] for r in rows(run_dir / "val_metrics.csv")] == ["2", "4"]
    # The grown dataset is now the run's own: the next resume needs no key.
    assert train(tiny_config(data, tmp_path, *BASE, "train.max_steps=6", f"train.resume={run_dir}"))["step"] == 6


def test_optimizer_overrides_apply_on_resume(short_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run[1]["run_dir"], run_dir)
    train(
        tiny_config(
            short_run[0].data.dir,
            tmp_path,
            *BASE,
            "train.max_steps=8",
            f"train.resume={run_dir}",
            "optimizer.name=adam",
            "optimizer.weight_decay=0.5",
            "optimizer.betas=[0.8,0.95]",
        )
    )
    group = read_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.5 and tuple(group["betas"]) == (0.8, 0.95)
    assert not group.get("decoupled_weight_decay", False)  # Adam's L2 penalty, not AdamW's decoupled decay
    assert (
        "optimizer: name adamw -> adam, weight_decay 0.01 -> 0.5, betas [0.9, 0.999] -> [0.8, 0.95]"
        in capsys.readouterr().out
    )


def test_resume_with_another_process_count_is_refused(short_run) -> None:
    cfg, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    cfg = tiny_config(cfg.data.dir, Path(result["run_dir"]), "train.max_steps=8")
    cfg.model.palette = state["config"]["model"]["palette"]  # as train() takes the run's own
    with pytest.raises(
        ConfigError, match=r"was trained by 1 process\(es\), this is 2; .* \(torchrun --nproc_per_node 1\)"
    ):
        check_resumable(state, cfg, Path("last.pt"), world=2)


def test_a_resume_under_other_package_versions_says_so(
    short_run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run[1]["run_dir"], run_dir)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(state["versions"]) == {"torch", "numpy", "atari-world-model"}
    state["versions"]["torch"] = "1.0.0"
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    train(tiny_config(short_run[0].data.dir, tmp_path, *BASE, "train.max_steps=8", f"train.resume={run_dir}"))
    assert (
        f"note: the checkpoint was computed with other versions (torch 1.0.0 -> {torch.__version__})"
        in capsys.readouterr().out
    )


def test_a_run_folder_means_last_pt_to_a_resume_and_best_pt_to_evaluation(tmp_path: Path) -> None:
    """Catches the two purposes' rules crossed: a resume must continue where the run stopped (last.pt) even when an
    older best.pt exists, must refuse a .pt outside a run folder, and `auto` takes the newest run's last.pt."""
    from src.models.run import find_checkpoint
    from src.utils.errors import ConfigError

    runs = tmp_path / "runs"
    for name in ("old", "new"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "resolved_config.yaml").write_text("{}\n")
        for file in ("best.pt", "last.pt"):
            (runs / name / "checkpoints" / file).write_bytes(b"")
    os.utime(runs / "old" / "checkpoints" / "last.pt", (1, 1))
    run = runs / "new"
    assert find_checkpoint(run, "resume", "train.resume") == run / "checkpoints" / "last.pt"
    assert find_checkpoint(run / "checkpoints", "resume", "train.resume") == run / "checkpoints" / "last.pt"
    assert find_checkpoint(run, "weights") == run / "checkpoints" / "best.pt"
    assert find_checkpoint("auto", "resume", "train.resume", runs) == run / "checkpoints" / "last.pt"
    loose = tmp_path / "loose.pt"
    loose.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^train.resume: '.*loose.pt' is not in a run folder"):
        find_checkpoint(loose, "resume", "train.resume")
    assert find_checkpoint(loose, "weights") == loose  # evaluation and play take any .pt
