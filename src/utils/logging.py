"""Experiment tracking: one Logger interface, a W&B implementation and a do-nothing one.

    check_wandb(cfg.experiment.wandb)            # before the run folder exists: fail fast
    logger = make_logger(cfg.experiment.wandb, run_dir, run_name, to_dict(cfg))
    logger.log({"train/loss": 0.01}, step=100)
    logger.close()

The training loop never asks whether W&B is on: when nothing is to be logged it gets a NullLogger.

Which mode a run logs in (`resolve_mode`):
    auto      the default: WANDB_MODE if it is set; else online when W&B finds a login (`wandb login`, WANDB_API_KEY,
              ...), else not logged, said in one line
    online    needs a login (else one line, exit 2)
    offline   written under the run folder, uploaded later with `wandb sync`
    disabled  nothing
An explicit online, offline or disabled wins over WANDB_MODE, as `wandb.init(mode=...)` does in wandb itself. An
online run that W&B cannot start within `init_timeout` seconds (no network, a key the server refuses) logs offline
instead, said in one line: a training run is never stopped, nor held for long, by its logging.

Only wandb's public API is used (wandb.setup, wandb.login, wandb.init, wandb.Settings, wandb.errors).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import wandb

from src.utils.errors import ConfigError, UserError

WANDB_MODES = ("auto", "online", "offline", "disabled")
# WANDB_MODE values that wandb accepts, and what they mean (run and dryrun are its old names).
ENV_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "run": "online", "dryrun": "offline"}
NO_LOGIN = (
    "W&B: no login found (wandb login, or WANDB_API_KEY): not logging to W&B; {setting}=offline keeps a local copy"
)


@dataclass
class WandbConfig:
    """The config's `experiment.wandb` section."""

    mode: str = "auto"  # auto (online after `wandb login`, else off; WANDB_MODE wins), online, offline or disabled
    project: str = "atari-world-model"
    entity: str | None = None
    init_timeout: float = 15.0  # seconds an online run may take to start before it logs offline instead

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ConfigError(
                f"experiment.wandb.mode must be online, offline or disabled, or auto (online after `wandb "
                f"login`, else not logged), got {self.mode!r}"
            )
        if not 0 < self.init_timeout <= 3600:
            raise ConfigError(f"experiment.wandb.init_timeout must be in (0, 3600] seconds, got {self.init_timeout}")


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


@dataclass
class RunInfo:
    """How a W&B run is named and linked: an evaluation joins the group of the training run it scores."""

    name: str
    config: dict
    run_id: str | None = None  # a resumed training run logs on into the same W&B run
    group: str | None = None
    job_type: str = "train"


class WandbLogger:
    """A W&B run (online or offline) whose files go under run_dir/wandb/. An online run that cannot start within
    cfg.init_timeout seconds continues offline, said in one line."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, info: RunInfo, say: Callable[[str], None] = print) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        before = set((run_dir / "wandb").glob("run-*"))
        try:
            self.run = start_run(cfg, cfg.mode, run_dir, info)
            line = describe_run(self.run, cfg.mode)
        except wandb.errors.Error as e:  # no network, a key the server refuses, init timeout
            if cfg.mode != "online":
                raise UserError(
                    f"wandb.init failed (mode {cfg.mode}): {first_line(e)}; fix the cause or log offline or disabled"
                ) from e
            for leftover in (
                set((run_dir / "wandb").glob("run-*")) - before
            ):  # the online attempt's folder: never synced
                shutil.rmtree(leftover, ignore_errors=True)
            self.run = start_run(cfg, "offline", run_dir, info)
            sync_dir = self.run.settings.sync_dir
            line = (
                f"W&B: the online run did not start within {cfg.init_timeout:g} s ({first_line(e)[:160]}): logging "
                f"offline in {sync_dir} instead (upload later: wandb sync {sync_dir})"
            )
        self.run_id = self.run.id
        say(line)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        self.run.log({key: wandb.Image(image)}, step=step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        self.run.log({key: wandb.Video(str(path), format=Path(path).suffix.lstrip("."))}, step=step)

    def close(self) -> None:
        self.run.finish()


def start_run(cfg: WandbConfig, mode: str, run_dir: Path, info: RunInfo) -> wandb.Run:
    """wandb.init in `mode` (online or offline), its files under run_dir/wandb/."""
    # silent: wandb's banners are replaced by one line of ours (warnings still show); console="off": stdout stays ours,
    # not captured and re-uploaded; init_timeout: an unreachable server costs seconds, not wandb's default 90.
    settings = wandb.Settings(silent=True, console="off", init_timeout=cfg.init_timeout)
    return wandb.init(
        mode=mode,
        project=cfg.project,
        entity=cfg.entity,
        dir=str(run_dir),
        name=info.name,
        config=info.config,
        settings=settings,
        id=info.run_id,
        resume="allow" if info.run_id else None,
        group=info.group,
        job_type=info.job_type,
    )


def first_line(error: BaseException) -> str:
    """The first line of wandb's message (the rest is advice about wandb.init arguments), to go inside one of ours."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def describe_run(run: wandb.Run, mode: str) -> str:
    if mode == "online":
        return f"wandb: {run.url}"
    return f"wandb: offline run in {run.settings.sync_dir} (upload later: wandb sync {run.settings.sync_dir})"


def has_wandb_login(setting: str = "experiment.wandb.mode") -> bool:
    """Whether W&B finds credentials where it looks for them itself: WANDB_API_KEY, an identity token file, the api_key
    of its settings file, or a .netrc entry for its host (written by `wandb login`).

    wandb.login with prompt=False and verify=False: no prompt, no network, nothing saved. wandb.setup first: silent,
    else login greets the user by name (a request to the server, 5 s to fail without a network); online, else a
    WANDB_MODE=offline or disabled in the environment makes login answer False whatever the credentials (each run
    passes its own mode to wandb.init)."""
    wandb.setup(wandb.Settings(silent=True, mode="online"))
    try:
        return wandb.login(prompt=False, verify=False)
    except wandb.errors.AuthenticationError as e:  # a key was found but is malformed
        raise UserError(
            f"{setting}: the W&B credentials are invalid: {first_line(e)}; fix them (wandb login --relogin) "
            f"or set {setting}=disabled"
        ) from None


def env_mode() -> str | None:
    """The mode WANDB_MODE asks for (online, offline or disabled), or None when it is not set."""
    value = os.environ.get("WANDB_MODE", "").strip()
    if not value:
        return None
    if value not in ENV_MODES:
        raise UserError(f"WANDB_MODE must be online, offline or disabled, got {value!r}; fix or unset it")
    return ENV_MODES[value]


def resolve_mode(cfg: WandbConfig, setting: str = "experiment.wandb.mode") -> tuple[str, str | None]:
    """(online, offline or disabled: the mode the run logs in; the line that says why, when it is not the one asked
    for). UserError when online is asked for (by `setting` or WANDB_MODE) and W&B finds no login."""
    mode, source = cfg.mode, f"{setting}={cfg.mode}"
    if mode == "auto" and env_mode():
        mode, source = env_mode(), f"WANDB_MODE={os.environ['WANDB_MODE'].strip()}"
    if mode == "auto":
        return ("online", None) if has_wandb_login(setting) else ("disabled", NO_LOGIN.format(setting=setting))
    if mode == "online" and not has_wandb_login(setting):
        raise UserError(
            f"{source} needs a W&B login: run `wandb login`, or set {setting}=offline (logs under the run "
            "folder, sync later) or disabled"
        )
    return mode, None


def check_wandb(cfg: WandbConfig, setting: str = "experiment.wandb.mode") -> None:
    """Fail before anything is created if the run cannot log as asked (online without a login, a bad WANDB_MODE)."""
    resolve_mode(cfg, setting)


def make_logger(
    cfg: WandbConfig,
    run_dir: Path,
    run_name: str,
    config: dict,
    run_id: str | None = None,
    group: str | None = None,
    job_type: str = "train",
    setting: str = "experiment.wandb.mode",
    say: Callable[[str], None] = print,
) -> Logger:
    """The logger of the mode that resolve_mode picks: NullLogger when disabled, else a WandbLogger writing under
    run_dir/wandb/ (continuing W&B run `run_id` if given). A training run is the group of its own name (`group`
    None), so that the evaluations of it, which name it as their group, show beside it. Its one line about W&B goes
    to `say` (the run's console, which keeps it in the run's log too)."""
    mode, note = resolve_mode(cfg, setting)
    if note:
        say(note)
    if mode == "disabled":
        return NullLogger()
    info = RunInfo(run_name, config, run_id, group or run_name, job_type)
    return WandbLogger(WandbConfig(mode, cfg.project, cfg.entity, cfg.init_timeout), run_dir, info, say)
