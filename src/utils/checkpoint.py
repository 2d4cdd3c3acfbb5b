"""Checkpoints: one dict (model, optimizer, scheduler, step, config, env), written atomically, loaded safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from src.utils.errors import UserError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename: a kill leaves the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """weights_only=True: tensors and plain containers only, so a tampered file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint '{path}' cannot be loaded safely ({first[:200]})") from None
    missing = [k for k in ("model", "config", "env", "step") if k not in state] if isinstance(state, dict) else ["all"]
    if missing:
        raise UserError(f"'{path}' is not a checkpoint of this project (missing {', '.join(missing)})")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """The model a checkpoint describes, weights loaded, rebuilt from its saved config (not today's config.yaml)."""
    from src.config import ModelConfig
    from src.models.world_model import build_model

    env = state["env"]
    model = build_model(ModelConfig(**state["config"]["model"]), env["num_actions"], env["env"]["context_frames"],
                        env["env"]["screen_size"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"the checkpoint's weights do not fit its model '{state['config']['model']['name']}' ({str(e).splitlines()[0]})") from None
    return model
