"""Experiment tracking: one Logger interface, a W&B implementation and a do-nothing one.

    check_wandb(cfg.experiment.wandb)            # before the run folder exists: fail fast
    logger = make_logger(cfg.experiment.wandb, run_dir, run_name, to_dict(cfg))
    logger.log({"train/loss": 0.01}, step=100)
    logger.close()

The training loop never asks whether W&B is on: with mode=disabled it gets a NullLogger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import wandb
from wandb.sdk import wandb_setup
from wandb.sdk.lib import wbauth

from src.utils.errors import UserError


@dataclass
class WandbConfig:
    """The config's `experiment.wandb` section."""

    mode: str = "disabled"  # online (after `wandb login`), offline (written under the run folder) or disabled
    project: str = "atari-world-model"
    entity: Optional[str] = None


class Logger(Protocol):
    run_id: str | None  # what make_logger needs to continue this run after a resume

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        """image: (H, W, 3) RGB uint8."""

    def log_video(self, key: str, path: Path, step: int) -> None:
        """path: an .mp4 or .gif already written."""

    def close(self) -> None: ...


class NullLogger:
    """W&B is disabled: accept everything, write nothing."""

    run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        pass

    def log_video(self, key: str, path: Path, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class WandbLogger:
    """A W&B run (online or offline) whose files go under run_dir/wandb/."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, run_name: str, config: dict, run_id: str | None = None) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        # silent: wandb's banners are replaced by the one line below (warnings still show);
        # console="off": stdout stays ours, not captured and re-uploaded.
        settings = wandb.Settings(silent=True, console="off")
        try:
            self.run = wandb.init(
                mode=cfg.mode,
                project=cfg.project,
                entity=cfg.entity,
                dir=str(run_dir),
                name=run_name,
                config=config,
                settings=settings,
                id=run_id,
                resume="allow" if run_id else None,  # a resumed training run logs on into the same W&B run
            )
        except wandb.errors.Error as e:  # bad credentials, no network in online mode, init timeout
            raise UserError(
                f"wandb.init failed (experiment.wandb.mode={cfg.mode}): {e}; "
                "fix the cause or set experiment.wandb.mode=offline or disabled"
            ) from e
        self.run_id = self.run.id
        print(describe_run(self.run, cfg.mode))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        self.run.log({key: wandb.Image(image)}, step=step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        self.run.log({key: wandb.Video(str(path), format=Path(path).suffix.lstrip("."))}, step=step)

    def close(self) -> None:
        self.run.finish()


def describe_run(run: wandb.Run, mode: str) -> str:
    if mode == "online":
        return f"wandb: {run.url}"
    return f"wandb: offline run in {run.settings.sync_dir} (upload later: wandb sync {run.settings.sync_dir})"


def has_wandb_login() -> bool:
    """Whether W&B finds credentials (WANDB_API_KEY, an identity token file, .netrc or its settings file).

    Uses wandb's own lookup with prompt=False and verify=False: no prompt, no network, nothing saved.
    """
    settings = wandb_setup.singleton().settings
    host = wbauth.HostUrl(settings.base_url, app_url=settings.app_url)
    try:
        auth = wbauth.authenticate_session(host=host, source="check_wandb", prompt=False, update_session=False)
    except wandb.errors.AuthenticationError as e:  # a key was found but is malformed
        raise UserError(f"experiment.wandb.mode=online: the W&B credentials are invalid: {e}") from None
    return auth is not None


def check_wandb(cfg: WandbConfig) -> None:
    """Fail before anything is created if online logging cannot log in."""
    if cfg.mode == "online" and not has_wandb_login():
        raise UserError(
            "experiment.wandb.mode=online needs a W&B login: run `wandb login`, or set "
            "experiment.wandb.mode=offline (logs under the run folder, sync later) or disabled"
        )


def make_logger(cfg: WandbConfig, run_dir: Path, run_name: str, config: dict, run_id: str | None = None) -> Logger:
    """disabled -> NullLogger; offline/online -> WandbLogger writing under run_dir/wandb/ (continuing W&B run
    `run_id` if given)."""
    if cfg.mode == "disabled":
        return NullLogger()
    return WandbLogger(cfg, run_dir, run_name, config, run_id)
