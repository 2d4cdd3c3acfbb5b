"""The run folder and everything a run writes into it: CSVs, image strips, videos, checkpoints and the logger."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from src.config import Config, ConfigError
from src.utils.checkpoint import save_checkpoint
from src.utils.images import save_png
from src.utils.io import atomic_write_bytes, check_free_space, create_timestamped_dir, hold_lock
from src.utils.logging import NullLogger


def create_run_dir(cfg: Config, game: str) -> Path:
    """runs_dir/<YYYYmmdd-HHMMSS>_<game>[_<name>]/ with images/, videos/ and checkpoints/."""
    suffix = game + (f"_{cfg.experiment.name}" if cfg.experiment.name else "")
    return create_timestamped_dir(cfg.experiment.runs_dir, suffix, ("images", "videos", "checkpoints"), "experiment.runs_dir")


MIN_FREE_BYTES = 200 * 1000**2  # besides two checkpoints: strips, videos, CSVs and W&B files of a run


def check_run_space(runs_dir: str, checkpoint_bytes: int) -> None:
    """ConfigError when the disk under runs_dir cannot hold two checkpoints and a run's other files."""
    check_free_space(runs_dir, 2 * checkpoint_bytes + MIN_FREE_BYTES,
                     "experiment.runs_dir: {free} free at '{folder}', a run needs about {needed}; "
                     "free some space or choose another experiment.runs_dir", ConfigError)


def trim_csv(path: Path, last_step: int) -> None:
    """Keep the header and the complete rows up to `last_step`: the rows after the checkpoint are logged again."""
    if not path.is_file():
        return
    header, *rows = path.read_text().splitlines(keepends=True) or [""]
    fields = header.count(",")

    def kept(row: str) -> bool:
        step = row.split(",", 1)[0]
        return row.endswith("\n") and row.count(",") == fields and step.isdigit() and int(step) <= last_step

    atomic_write_bytes(path, (header + "".join(filter(kept, rows))).encode())


class CsvLog:
    """Rows appended to a CSV file with a fixed header, flushed at every row."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.columns = columns
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns, extrasaction="ignore")
        if self.file.tell() == 0:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class RunOutputs:
    """Everything a run writes besides resolved_config.yaml: CSVs, strips, videos, checkpoints, the logger.

    It holds run_dir/.lock from the start, so that a run folder never has two writers (a resume of a run that
    is still going is refused). A resumed run (`resumed_at` its checkpoint's step) first drops what the killed
    process wrote after that checkpoint: CSV rows, and temporary files of writes it did not finish.
    """

    def __init__(self, run_dir: Path, resumed_at: int | None = None, best_mse: float = math.inf) -> None:
        self.run_dir, self.best_mse, self.logger = run_dir, best_mse, None
        self.lock = hold_lock(run_dir / ".lock", "train.resume: another training (pid {pid}) is writing to '{folder}'; "
                              "wait for it to end or stop it", "cannot write to the run folder '{folder}' ({error}); fix its permissions",
                              ConfigError)
        if resumed_at is not None:
            for name in ("metrics.csv", "val_metrics.csv"):
                trim_csv(run_dir / name, resumed_at)
            for folder in (run_dir, *(run_dir / sub for sub in ("checkpoints", "images", "videos"))):
                for tmp in folder.glob(".*.tmp*"):
                    tmp.unlink()
        self.train_csv = CsvLog(run_dir / "metrics.csv",
                                ["step", "loss", "mse", "lr", "grad_norm", "rollout_steps", "samples_per_s", "elapsed_s"])
        self.val_csv = CsvLog(run_dir / "val_metrics.csv", ["step", "loss", "mse", "copy_last_mse", "ratio_to_copy", "elapsed_s"])

    def log_train_row(self, step: int, row: dict[str, float], strip: np.ndarray) -> None:
        self.train_csv.write({"step": step, **row})
        self.logger.log({f"train/{k}": v for k, v in row.items()}, step)
        save_png(self.run_dir / "images" / f"step_{step:06d}.png", strip)
        self.logger.log_image("train/prediction", strip, step)

    def log_validation(self, step: int, metrics: dict[str, float], elapsed: float) -> None:
        self.val_csv.write({"step": step, **{k.removeprefix("val/"): v for k, v in metrics.items()}, "elapsed_s": elapsed})
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
