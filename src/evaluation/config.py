"""An evaluation's settings: one frozen EvalConfig whose fields carry their default, their valid values and their
help, written once; the command line of src.eval is built from it.

    evaluate_checkpoint(EvalConfig("runs/<run>", horizon=100, videos=0))     # from Python
    python -m src.eval --checkpoint runs/<run> --horizon 100 --videos 0      # the same, from the shell

A None default means "decided from the checkpoint" (its game, its data's seed + 1, its model.feedback...); what it
decided is in the W&B config (`EvalConfig.to_dict`).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from src.models.rollout import FEEDBACK
from src.utils.errors import ArgumentParser, UserError
from src.utils.logging import WANDB_MODES


def setting(default: Any, help: str, low: int | None = None, high: int | None = None, choices: tuple = ()) -> Any:
    """A field of EvalConfig: its default, its flag's help (the parser adds "(default X)" to a default other than
    None) and its valid values: an integer in [low, high] (the flag then takes an int), or one of `choices`."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class EvalConfig:
    """What `python -m src.eval` and `evaluate_checkpoint` evaluate, and how; checked when made (UserError)."""

    checkpoint: str | Path = setting(
        MISSING, "a run folder written by src.train (its checkpoints/best.pt, else last.pt) or a .pt file"
    )
    game: str | None = setting(
        None, "a check: the game the checkpoint was trained on, e.g. Pong (default: the checkpoint's)"
    )
    _: KW_ONLY
    episodes: int = setting(4, "fresh episodes to play", 1, 10_000)
    starts_per_episode: int = setting(16, "rollout start points per episode, spread evenly", 1, 100_000)
    horizon: int = setting(50, "steps predicted open loop from each start", 1, 100_000)
    seed: int | None = setting(
        None, "seed of the played episodes (default: the training data's seed + 1)", 0, 2**31 - 1
    )
    data_dir: str | Path | None = setting(None, "evaluate on windows of a recorded dataset instead of fresh episodes")
    out_dir: str | Path = setting("runs", "where <timestamp>_<game>_eval/ goes")
    device: str | None = setting(None, "cpu, cuda, cuda:1 ... (default: cuda if available)")
    batch_size: int = setting(64, "rollouts computed together", 1, 65_536)
    videos: int = setting(4, "rollouts written as MP4 and GIF", 0, 1_000)
    # auto, as train's experiment.wandb.mode: tests stay offline through WANDB_MODE=disabled (tests/conftest.py)
    wandb_mode: str = setting(
        "auto",
        "auto: online when W&B finds a login, else not logged (WANDB_MODE, if set, decides); "
        "online, offline (under the eval folder) or disabled",
        choices=WANDB_MODES,
    )
    wandb_project: str | None = setting(None, "W&B project (default: the training run's)")
    wandb_entity: str | None = setting(None, "W&B entity (default: the training run's)")
    event_episodes: int | None = setting(
        None,
        "episodes whose every reward and end is scored, for a model with an event head (default: --episodes, the "
        "same episodes; more are played; 0: none)",
        0,
        10_000,
    )
    event_horizon: int = setting(10, "steps ahead the rewards and ends are scored at", 1, 1_000)
    samples: int = setting(
        4, "a diffusion model's rollouts per start: scored one at a time and as their mean frame", 1, 1_000
    )
    sampling_steps: int | None = setting(
        None,
        "a diffusion model's denoising steps per frame (default: the checkpoint's model.diffusion.steps)",
        1,
        1_000,
    )
    feedback: str | None = setting(
        None,
        "how predictions re-enter the context: palette (the checkpoint's grey levels), uint8 (any grey level) "
        "or float (default: the checkpoint's)",
        choices=FEEDBACK,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            check(f, getattr(self, f.name))

    def to_dict(self, **resolved: Any) -> dict[str, Any]:
        """The settings as JSON values, with `resolved` (what the checkpoint decided: game, seed...) over them."""
        return {key: str(v) if isinstance(v, Path) else v for key, v in asdict(self).items()} | resolved


def check(f: Field, value: Any) -> None:
    """UserError, naming the flag, unless `value` is one that field `f` of EvalConfig takes."""
    low, high, choices = f.metadata["low"], f.metadata["high"], f.metadata["choices"]
    if value is None and f.default is None:
        return
    if choices and value not in choices:
        raise UserError(f"--{f.name} must be one of {', '.join(choices)}, got {value!r}")
    if low is not None and value < low:
        raise UserError(f"--{f.name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise UserError(f"--{f.name} must be <= {high:,}, got {value:,}")


def parse_args(argv: list[str] | None, prog: str, description: str) -> EvalConfig:
    """An EvalConfig from the command line: a --flag per field, with the field's default, choices and help."""
    parser = ArgumentParser(prog=prog, description=description)
    for f in fields(EvalConfig):
        meta, default = f.metadata, None if f.default is MISSING else f.default
        parser.add_argument(
            f"--{f.name}",
            required=f.default is MISSING,
            default=default,
            type=int if meta["low"] is not None else str,
            choices=meta["choices"] or None,
            help=meta["help"] + (f" (default {default})" if default is not None else ""),
        )
    return EvalConfig(**vars(parser.parse_args(argv)))
