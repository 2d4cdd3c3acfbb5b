"""Continuing a run: which checkpoint train.resume names, the config it continues with, and what may not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.config import Config, ConfigError, config_from_dict, load_config, to_dict
from src.models.checkpoint import read_checkpoint
from src.models.run import TrainedOn, find_checkpoint

# A resumed run keeps these: they define its weights' shapes, its data split and its data order.
# (train.pushforward and pushforward_steps set the length of the training windows, as train.rollout_steps does.)
RESUME_FIXED = (
    "model.",
    "train.seed",
    "train.batch_size",
    "train.rollout_steps",
    "train.pushforward",
    "data.val_ratio",
)


def resume_config(config_path: str | None, overrides: list[str]) -> tuple[Config, dict | None]:
    """The config of `python -m src.train ... train.resume=X` and the checkpoint it continues: the checkpoint's own
    config with the command line's overrides on top (not config.yaml, which may have changed since), and
    train.resume set to the checkpoint's path. Without train.resume: config.yaml with the overrides, and None."""
    cfg = load_config(config_path, overrides)
    if cfg.train.resume is None:
        return cfg, None
    checkpoint = find_checkpoint(cfg.train.resume, "resume", "train.resume", cfg.experiment.runs_dir)
    state = read_checkpoint(checkpoint)
    return config_from_dict(state["config"], [*overrides, f"train.resume={checkpoint}"]), state


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def check_resumable(state: dict, cfg: Config, checkpoint: Path, world: int = 1) -> None:
    """ConfigError unless `cfg`, with `world` processes, can continue the run saved in `state` (its dataset is
    checked where it is opened: training.data.check_same_data)."""
    saved, now = flatten(state["config"]), flatten(to_dict(cfg))
    for key in sorted(saved):
        if key.startswith(RESUME_FIXED) and key in now and saved[key] != now[key]:
            raise ConfigError(
                f"train.resume: {key} is {saved[key]} in {checkpoint} but {now[key]} now; a resumed run keeps "
                "its model, seed, batch size, unroll lengths and split (start a new run to change them)"
            )
    processes = TrainedOn.of(state).processes
    if processes != world:
        raise ConfigError(
            f"train.resume: {checkpoint} was trained by {processes} process(es), this is {world}; a resumed run keeps "
            f"its global batch and data order: resume it with {processes} (torchrun --nproc_per_node {processes})"
        )
    if state["step"] >= cfg.train.max_steps:
        raise ConfigError(
            f"train.resume: {checkpoint} is at step {state['step']}, train.max_steps is {cfg.train.max_steps}; "
            "raise train.max_steps to train on"
        )
    if cfg.train.max_minutes is not None and state["elapsed_s"] >= 60 * cfg.train.max_minutes:
        raise ConfigError(
            f"train.resume: {checkpoint} has trained {state['elapsed_s'] / 60:.1f} minutes, train.max_minutes is "
            f"{cfg.train.max_minutes}; raise train.max_minutes to train on"
        )
