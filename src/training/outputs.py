"""The run folder and everything a run writes into it: CSVs, image strips, videos, checkpoints and the logger."""

from __future__ import annotations

import csv
import io
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from src.config import Config, ConfigError
from src.utils.checkpoint import save_checkpoint
from src.utils.console import Tee
from src.utils.images import save_png
from src.utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    check_apart,
    check_free_space,
    check_outside_datasets,
    check_writable,
    create_timestamped_dir,
    hold_lock,
    replaced_atomically,
)
from src.utils.logging import NullLogger


class Console:
    """What a run says (rank 0 only): printed above the progress bar (drawn only on a terminal), and kept in
    train.log in the run folder once it exists (what was said before goes in first: src.utils.console's Tee)."""

    def __init__(self, main: bool = True) -> None:
        self.main, self.bar = main, None
        self.tee: Tee | None = None  # stdout teed into train.log (run_teed)

    def say(self, message: str, stderr: bool = False) -> None:
        if self.main:
            stream = sys.stderr if stderr else sys.stdout
            tqdm.write(message, file=stream)
            stream.flush()

    def open(self, run_dir: Path) -> None:
        """Start run_dir/train.log (appended to by a resumed run) with what was printed so far."""
        if self.tee is not None:
            self.tee.open(run_dir / "train.log")

    def progress(self, total: int, done: int) -> tqdm:
        """The steps' progress bar, on stderr; none when stderr is not a terminal (logs, CI) or off rank 0."""
        self.bar = tqdm(
            total=total, initial=done, unit="step", dynamic_ncols=True, disable=None if self.main else True, leave=False
        )
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def create_run_dir(cfg: Config, game: str) -> Path:
    """runs_dir/<YYYYmmdd-HHMMSS>_<game>[_<name>]/ with images/, videos/ and checkpoints/."""
    suffix = game + (f"_{cfg.experiment.name}" if cfg.experiment.name else "")
    return create_timestamped_dir(
        cfg.experiment.runs_dir, suffix, ("images", "videos", "checkpoints"), "experiment.runs_dir"
    )


# What a run writes besides its checkpoints, measured on runs of the default model with a margin: a strip (5 frames
# of 84x84, PNG) 5.6 KB, a rollout video 0.5 KB a frame (MP4, truth | model | error); W&B keeps its own copies of the
# media and a few MB of logs.
STRIP_BYTES = 20_000
VIDEO_FRAME_BYTES = 4_000
ROW_BYTES = 400  # a row of metrics.csv, val_metrics.csv or train.log
WANDB_BYTES = 10 * 1000**2
SLACK_BYTES = 5 * 1000**2  # resolved_config.yaml, parent.json, a branch's copied CSVs


def run_bytes(cfg: Config, checkpoint_bytes: int) -> int:
    """About the most a run of `cfg` has on disk at once: best.pt, last.pt and the temporary file of a save in flight,
    a strip and a CSV row per log step, the videos of its validations, and with W&B its copies and logs."""
    t = cfg.train
    logs = t.max_steps // t.log_every + 1
    validations = t.max_steps // t.val_every_steps + 1
    videos = (
        (validations // t.val_rollout_every + 1) * t.val_rollout_videos * t.val_rollout_horizon
        if t.val_rollout_enabled
        else 0
    )
    media = logs * STRIP_BYTES + videos * VIDEO_FRAME_BYTES
    wandb = media + WANDB_BYTES if cfg.experiment.wandb.mode != "disabled" else 0
    return 3 * checkpoint_bytes + media + (logs + validations) * ROW_BYTES + wandb + SLACK_BYTES


def check_run_space(cfg: Config, checkpoint_bytes: int) -> None:
    """ConfigError when the disk under experiment.runs_dir cannot hold what the run will write (run_bytes)."""
    check_free_space(
        cfg.experiment.runs_dir,
        run_bytes(cfg, checkpoint_bytes),
        "experiment.runs_dir: {free} free at '{folder}', a run needs about {needed}; "
        "free some space or choose another experiment.runs_dir",
        ConfigError,
    )


def check_run_location(cfg: Config) -> None:
    """ConfigError unless experiment.runs_dir can be written to and lies outside the dataset the run reads."""
    check_writable(cfg.experiment.runs_dir, "experiment.runs_dir", ConfigError)
    check_apart(
        cfg.experiment.runs_dir, "experiment.runs_dir", {"data.dir": cfg.data.dir}, both_ways=False, error=ConfigError
    )
    check_outside_datasets(cfg.experiment.runs_dir, "experiment.runs_dir", ConfigError)


def read_csv_rows(path: Path, last_step: int) -> tuple[str, list[str], list[str]]:
    """(header, the complete rows up to `last_step`, the complete rows after it) of a run's CSV; a row that a kill
    cut short is neither."""
    if not path.is_file():
        return "", [], []
    header, *rows = path.read_bytes().decode(errors="replace").splitlines(keepends=True) or [""]
    fields = header.count(",")
    complete = [r for r in rows if r.endswith("\n") and r.count(",") == fields and r.split(",", 1)[0].isdigit()]
    return header, [r for r in complete if row_step(r) <= last_step], [r for r in complete if row_step(r) > last_step]


def row_step(row: str) -> int:
    return int(row.split(",", 1)[0])


class CsvLog:
    """Rows appended to a CSV file with a fixed header, flushed at every row.

    Continuing a run at step `resumed_at`, the file may hold rows that the killed process logged after its
    checkpoint, and a row it cut short. They are not deleted up front: until the resumed run has logged past
    them, each new row rewrites the file atomically with the rows it replaces (the same steps, logged again)
    left out, so a kill at any moment loses no row.
    """

    def __init__(self, path: Path, columns: list[str], resumed_at: int | None = None) -> None:
        self.path, self.columns = path, columns
        self.rewrite: tuple[str, list[str]] | None = None  # (the file's text so far, the later rows still to replace)
        if resumed_at is not None and path.is_file():
            header, kept, later = read_csv_rows(path, resumed_at)
            self.columns = next(csv.reader([header])) or columns  # a run from before a column was added keeps its own
            if later or path.stat().st_size != len((header + "".join(kept)).encode()):
                self.rewrite = (header + "".join(kept), later)
        self.file = open(path, "a", newline="")
        if self.file.tell() == 0:
            self.file.write(self.line(dict(zip(columns, columns))))
            self.file.flush()

    def line(self, row: dict[str, Any]) -> str:
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore").writerow(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        )
        return text.getvalue()

    def write(self, row: dict[str, Any]) -> None:
        if self.rewrite is None:
            self.file.write(self.line(row))
            self.file.flush()
            return
        done, later = self.rewrite
        done += self.line(row)
        later = [r for r in later if row_step(r) > row["step"]]
        atomic_write_bytes(self.path, (done + "".join(later)).encode())
        self.file.close()
        self.file = open(self.path, "a", newline="")
        self.rewrite = (done, later) if later else None

    def close(self) -> None:
        self.file.close()


def branch_run_dir(cfg: Config, game: str, parent: Path, checkpoint: Path, state: dict, newest: int | None) -> Path:
    """A new run folder for a run continued from an older checkpoint of `parent` than its newest (`newest`, the
    step of its last.pt; `state`, the checkpoint's contents): the parent is left as it is. The new folder starts with
    the parent's CSV rows up to the checkpoint's step, parent.json, which names where it branched off, and the
    checkpoint as its best.pt when it holds the best weights at its step (as best.pt does)."""
    run_dir, step = create_run_dir(cfg, game), state["step"]
    for name in ("metrics.csv", "val_metrics.csv"):
        header, kept, _ = read_csv_rows(parent / name, step)
        if header:
            atomic_write_bytes(run_dir / name, (header + "".join(kept)).encode())
    if state.get("val", {}).get("val/mse") == state.get(
        "best_mse"
    ):  # the best weights at that step: the branch's best.pt so far
        with replaced_atomically(run_dir / "checkpoints" / "best.pt") as tmp:
            shutil.copyfile(checkpoint, tmp)
    atomic_write_json(
        run_dir / "parent.json",
        {
            "run": str(parent.resolve()),
            "checkpoint": str(checkpoint.resolve()),
            "step": step,
            "parent_last_step": newest,
        },
    )
    return run_dir


class RunOutputs:
    """Everything a run writes besides resolved_config.yaml: CSVs, strips, videos, checkpoints, the logger.

    It holds run_dir/.lock from the start, so that a run folder never has two writers (a resume of a run that
    is still going is refused). A resumed run (`resumed_at` its checkpoint's step) replaces the CSV rows that the
    killed process logged after that checkpoint as it logs the same steps again (CsvLog), and removes the
    temporary files of writes the killed process did not finish.
    """

    def __init__(self, run_dir: Path, resumed_at: int | None = None, best_mse: float = math.inf) -> None:
        self.run_dir, self.best_mse, self.logger = run_dir, best_mse, None
        self.lock = hold_lock(
            run_dir / ".lock",
            "train.resume: another training (pid {pid}) is writing to '{folder}'; wait for it to end or stop it",
            "cannot write to the run folder '{folder}' ({error}); fix its permissions",
            ConfigError,
        )
        if resumed_at is not None:  # temporary files of writes the killed process did not finish
            for folder in (run_dir, *(run_dir / sub for sub in ("checkpoints", "images", "videos"))):
                for tmp in folder.glob(".*.tmp*"):
                    tmp.unlink()
        self.train_csv = CsvLog(
            run_dir / "metrics.csv",
            [
                "step",
                "loss",
                "mse",
                "lr",
                "grad_norm",
                "rollout_steps",
                "samples_per_s",
                "elapsed_s",
                "reward_loss",
                "end_loss",
            ],
            resumed_at,
        )
        self.val_csv = CsvLog(
            run_dir / "val_metrics.csv",
            [
                "step",
                "loss",
                "mse",
                "copy_last_mse",
                "ratio_to_copy",
                "changed_recall",
                "rollout_recall",
                "rollout_recall_all",
                "rollout_ratio",
                "elapsed_s",
                "reward_sign_accuracy",
                "false_reward_rate",
                "end_precision",
                "end_recall",
                "reward_expected_bias",
                "reward_expected_corr",
            ],
            resumed_at,
        )

    def log_train_row(self, step: int, row: dict[str, float], strip: np.ndarray) -> None:
        self.train_csv.write({"step": step, **row})
        self.logger.log({f"train/{k}": v for k, v in row.items()}, step)
        save_png(self.run_dir / "images" / f"step_{step:06d}.png", strip)
        self.logger.log_image("train/prediction", strip, step)

    def log_validation(self, step: int, metrics: dict[str, float], elapsed: float) -> None:
        self.val_csv.write(
            {"step": step, **{k.removeprefix("val/"): v for k, v in metrics.items()}, "elapsed_s": elapsed}
        )
        self.logger.log(metrics, step)

    def log_videos(self, step: int, paths: list[Path]) -> None:
        for v, path in enumerate(paths):
            self.logger.log_video(f"val/rollout_{v}", path, step)

    def save_checkpoints(self, state: dict[str, Any], val_mse: float) -> None:
        """best.pt when val_mse is the lowest so far, then last.pt. In this order, a kill between the two leaves a
        last.pt whose best_mse does not yet count this step, so a resume writes best.pt again."""
        if val_mse < self.best_mse:
            self.best_mse = val_mse
            save_checkpoint(self.run_dir / "checkpoints" / "best.pt", state)
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", state)

    def close(self) -> None:
        self.train_csv.close()
        self.val_csv.close()
        if self.logger is not None:
            self.logger.close()
        self.lock.close()


class QuietOutputs:
    """What the processes other than rank 0 write under torchrun: nothing."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.logger = run_dir, NullLogger()

    def log_train_row(self, *args: Any) -> None:
        pass

    def log_validation(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass
