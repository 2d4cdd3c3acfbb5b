"""The checkpoint under evaluation: read, checked against the EvalConfig, its model built, and the settings it
decides (its game, the seed of the episodes, the feedback, which events are scored, where W&B logs) resolved.

    subject = load_subject(cfg)
    subject.model, subject.seed, subject.feedback
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.envs.atari import resolve_game
from src.evaluation.config import EvalConfig
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint
from src.models.diffusion import is_stochastic
from src.models.events import has_events
from src.models.rollout import Feedback
from src.models.run import TrainedOn, find_checkpoint
from src.utils.device import choose_device
from src.utils.errors import UserError
from src.utils.logging import WandbConfig, check_wandb


@dataclass
class Subject:
    """A checkpoint made ready to evaluate, with the settings it decided (the Nones of EvalConfig resolved)."""

    checkpoint: Path  # the file (a run folder's best.pt, else its last.pt)
    state: dict[str, Any]  # what read_checkpoint returned
    game: str
    model: nn.Module  # on `device`, its diffusion.steps set from --sampling_steps
    device: torch.device
    feedback: Feedback
    seed: int  # of the played episodes, and of the shuffled actions and the sampling
    event_episodes: int  # episodes whose rewards and ends are scored: 0 without an event head
    sampling: dict[str, int]  # a diffusion model's samples and sampling_steps; {} for a model that draws none
    wandb: WandbConfig

    def decided(self) -> dict[str, Any]:
        """The settings it decided, by EvalConfig's names: what EvalConfig.to_dict puts over the given ones."""
        return {
            "checkpoint": str(self.checkpoint),
            "game": self.game,
            "seed": self.seed,
            "feedback": self.feedback.kind,
            "event_episodes": self.event_episodes,
            "wandb_project": self.wandb.project,
            "wandb_entity": self.wandb.entity,
            "samples": None,
            "sampling_steps": None,
            **self.sampling,
        }


def load_subject(cfg: EvalConfig) -> Subject:
    """The checkpoint of `cfg`, read, checked against `cfg` and its model built; its W&B set-up checked too."""
    checkpoint = find_checkpoint(cfg.checkpoint, "weights")
    state = read_checkpoint(checkpoint)
    trained_on = TrainedOn.of(state)
    game = trained_on.game
    if cfg.game is not None and resolve_game(cfg.game) != game:
        raise UserError(f"--game {cfg.game} differs from the checkpoint's game {game}; evaluate it on {game}")
    wandb_cfg = saved_wandb(state, cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity)
    check_wandb(wandb_cfg, "--wandb_mode")
    device = choose_device(cfg.device)
    model = model_from_checkpoint(state).to(device)
    if cfg.sampling_steps is not None:
        if not is_stochastic(model):
            raise UserError(
                f"--sampling_steps is for a diffusion model (model.name=edm); this checkpoint's model is "
                f"{model_config(state).name}, which predicts in one call: leave it out"
            )
        model.diffusion.steps = cfg.sampling_steps
    feedback = checkpoint_feedback(state, cfg.feedback)
    seed = cfg.seed if cfg.seed is not None else trained_on.seed + 1
    events = (cfg.event_episodes if cfg.event_episodes is not None else cfg.episodes) if has_events(model) else 0
    sampling = {"samples": cfg.samples, "sampling_steps": model.diffusion.steps} if is_stochastic(model) else {}
    return Subject(checkpoint, state, game, model, device, feedback, seed, events, sampling, wandb_cfg)


def checkpoint_feedback(state: dict[str, Any], kind: str | None = None) -> Feedback:
    """How the checkpoint's rollouts feed predictions back: its model.feedback, or `kind` (--feedback) instead."""
    saved = model_config(state)
    if kind == "palette" and not saved.palette:
        raise UserError(
            "--feedback palette: the checkpoint has no palette (it was trained before palette feedback existed); "
            "use --feedback uint8 or float"
        )
    return Feedback.of(replace(saved, feedback=kind or saved.feedback))


def saved_wandb(state: dict[str, Any], mode: str, project: str | None = None, entity: str | None = None) -> WandbConfig:
    """The W&B project, entity and init timeout of the checkpoint's run (this version's defaults where it names none),
    `project` and `entity` instead when given: an evaluation logs beside the run it scores."""
    saved = state["config"].get("experiment", {})
    saved = saved.get("wandb", {}) if isinstance(saved, dict) else {}
    saved = saved if isinstance(saved, dict) else {}
    default = WandbConfig()
    text = lambda key: saved.get(key) if isinstance(saved.get(key), str) else getattr(default, key)  # noqa: E731
    timeout = saved.get("init_timeout")
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 3600):
        timeout = default.init_timeout  # a checkpoint from before the setting, or one altered
    return WandbConfig(mode, project or text("project"), entity or text("entity"), float(timeout))
