"""A training checkpoint: what it holds (built in one place), read back (older layouts upgraded), and the model
rebuilt from it alone, not from today's config.yaml.

    state = read_checkpoint("runs/<run>/checkpoints/best.pt")
    model = model_from_checkpoint(state)

What a checkpoint holds (`checkpoint_contents` writes exactly these keys):
    model       the model's state_dict
    optimizer   the optimizer's state_dict
    step        optimizer steps taken
    elapsed_s   seconds of training so far: the clock that a resumed run continues
    config      the run's whole config as a dict; the model is rebuilt from its `model` section
    dataset     what the model was trained on: dir, game, num_actions, action_meanings, env_settings (the game's
                preprocessing, src.envs.atari.EnvSettings as a dict), seed, train_rows, val_rows, processes, global_batch
    val         the validation metrics at `step`
    best_mse    the lowest validation MSE so far (best.pt holds the weights that reached it)
    rng         every RNG's state (src.utils.seed.rng_state)
    wandb_id    the W&B run a resume continues, or None
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.models.world_model import ModelConfig, build_model
from src.utils.checkpoint import load_checkpoint
from src.utils.errors import UserError

REQUIRED = ("model", "config", "dataset", "step")


def checkpoint_contents(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, elapsed_s: float, config: dict,
                        dataset: dict, val: dict[str, float], best_mse: float, rng: dict, wandb_id: str | None) -> dict[str, Any]:
    """The dict that a checkpoint file holds (see the module's docstring)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed_s": elapsed_s,
            "config": config, "dataset": dataset, "val": val, "best_mse": best_mse, "rng": rng, "wandb_id": wandb_id}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """load_checkpoint (safe: tensors and plain containers only), then a check that it is one of ours; a checkpoint
    of the first layout (its dataset under "env", the settings under "env"."env") is upgraded in memory."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and "env" in state and "dataset" not in state and isinstance(state["env"], dict):
        dataset = dict(state.pop("env"))
        if "env" in dataset:
            dataset["env_settings"] = dataset.pop("env")
        state["dataset"] = dataset
    missing = [k for k in REQUIRED if k not in state] if isinstance(state, dict) else ["all"]
    if missing:
        raise UserError(f"'{path}' is not a checkpoint of this project (missing {', '.join(missing)})")
    nested = {"config.model": state["config"].get("model") if isinstance(state["config"], dict) else None,
              "dataset.env_settings": state["dataset"].get("env_settings") if isinstance(state["dataset"], dict) else None}
    for key, value in nested.items():
        if not isinstance(value, dict):
            raise UserError(f"'{path}' is not a checkpoint of this project ({key} is missing or not a mapping)")
    return state


def model_config(state: dict[str, Any]) -> ModelConfig:
    """The checkpoint's `model` section, this version's defaults for what it does not name. A checkpoint saved before
    palette feedback existed names no feedback or uint8, and has no palette: it feeds back uint8."""
    saved = dict(state["config"]["model"])
    saved.setdefault("feedback", "uint8")
    return ModelConfig(**saved)


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes, weights loaded, rebuilt from its saved config."""
    dataset = state["dataset"]
    try:
        model = build_model(model_config(state), dataset["num_actions"],
                            dataset["env_settings"]["context_frames"], dataset["env_settings"]["screen_size"])
    except (UserError, TypeError, KeyError) as e:  # a model name, setting or env key this version does not know
        raise UserError(f"the checkpoint's model cannot be built by this version of the code ({e}); "
                        "evaluate it with the version that trained it") from None
    load_weights(model, state)
    return model


def load_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """model.load_state_dict(state["model"]), with one line instead of PyTorch's list when they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1][:200]  # the first line is a title
        raise UserError(f"the checkpoint's weights do not fit its model '{state['config']['model']['name']}' ({detail}); "
                        "the checkpoint was altered or made by another version") from None
