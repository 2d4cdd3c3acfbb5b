"""Checkpoints: one dict (model, optimizer, scheduler, step, config, env), written atomically, loaded safely."""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from src.utils.errors import UserError
from src.utils.io import fsync_dir

# What to do about the commonest reasons a save fails; other errors show their own text.
SAVE_HINTS = {errno.ENOSPC: "no space left on device: free some space", errno.EDQUOT: "disk quota exceeded: free some space"}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a kill or a full disk leaves the old
    file or the new one, never a torn one, and no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except OSError as e:
        cause = SAVE_HINTS.get(e.errno) or (e.strerror or str(e)).lower()
        kept = "; the previous checkpoint is kept" if path.exists() else ""
        raise UserError(f"cannot save checkpoint '{path}': {cause}{kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """weights_only=True: tensors and plain containers only, so a tampered file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' not found")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it better
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:  # other OSErrors come from damage too (a cut-off zip seeks before its start)
        raise UserError(f"checkpoint '{path}' cannot be read (permission denied)") from None
    except Exception as e:
        raise load_failure(path, e) from None
    missing = [k for k in ("model", "config", "env", "step") if k not in state] if isinstance(state, dict) else ["all"]
    if missing:
        raise UserError(f"'{path}' is not a checkpoint of this project (missing {', '.join(missing)})")
    nested = {"config.model": state["config"].get("model") if isinstance(state["config"], dict) else None,
              "env.env": state["env"].get("env") if isinstance(state["env"], dict) else None}
    for key, value in nested.items():
        if not isinstance(value, dict):
            raise UserError(f"'{path}' is not a checkpoint of this project ({key} is missing or not a mapping)")
    return state


def load_failure(path: Path, e: Exception) -> UserError:
    """Why torch.load(weights_only=True) refused `path`: a pickled object that could run code, or damage.

    torch 2.x names the refused global as "GLOBAL posix.system whose module ..." (a blocked module) or
    "GLOBAL mod.Class was not an allowed global ..." (anything else outside its allowlist).
    """
    text = str(e)
    found = re.search(r"GLOBAL (\S+) (?:whose module|was not an allowed)", text)
    if found:
        return UserError(f"checkpoint '{path}' was refused: it holds a pickled object ({found[1]}) that could run code "
                         "when loaded; load only checkpoints you trust, or train a new one with src.train")
    operand = re.search(r"Unsupported operand \d+", text)  # bytes that are no pickle opcode torch accepts
    lines = text.strip().splitlines()
    if operand:
        reason = operand[0]
    elif lines:
        reason = lines[0].split(". ")[0][:160]  # torch's first sentence, e.g. "... failed finding central directory"
    else:
        reason = f"{type(e).__name__}: the file ends early"  # an empty or cut-off pickle
    return UserError(f"checkpoint '{path}' cannot be loaded: it is corrupt or not a PyTorch checkpoint ({reason}); "
                     "restore it or train a new one")


def model_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """The model a checkpoint describes, weights loaded, rebuilt from its saved config (not today's config.yaml)."""
    from src.config import ModelConfig
    from src.models.world_model import build_model

    env = state["env"]
    try:
        model = build_model(ModelConfig(**state["config"]["model"]), env["num_actions"], env["env"]["context_frames"],
                            env["env"]["screen_size"])
    except (UserError, TypeError, KeyError) as e:  # a model name, setting or env key this version does not know
        raise UserError(f"the checkpoint's model cannot be built by this version of the code ({e}); "
                        "evaluate it with the version that trained it") from None
    load_weights(model, state)
    return model


def load_weights(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """model.load_state_dict(state["model"]), with one line instead of PyTorch's list when they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1][:200]  # the first line is a title
        raise UserError(f"the checkpoint's weights do not fit its model '{state['config']['model']['name']}' ({detail}); "
                        "the checkpoint was altered or made by another version") from None
