"""Checkpoint files: a dict of tensors and plain containers, written atomically and loaded safely.

What a training checkpoint holds, and rebuilding its model, is src/models/checkpoint.py's business."""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from src.utils.errors import UserError
from src.utils.io import replaced_atomically

# What to do about the commonest reasons a save fails; other errors show their own text.
SAVE_HINTS = {
    errno.ENOSPC: "no space left on device: free some space",
    errno.EDQUOT: "disk quota exceeded: free some space",
}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a kill or a full disk leaves the old
    file or the new one, never a torn one, and no temporary file behind."""
    path = Path(path)
    try:
        with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    except OSError as e:
        cause = SAVE_HINTS.get(e.errno) or (e.strerror or str(e)).lower()
        kept = "; the previous checkpoint is kept" if path.exists() else ""
        raise UserError(f"cannot save checkpoint '{path}': {cause}{kept}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
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
    return state


def load_failure(path: Path, e: Exception) -> UserError:
    """Why torch.load(weights_only=True) refused `path`: a pickled object that could run code, or damage.

    torch 2.x names the refused global as "GLOBAL posix.system whose module ..." (a blocked module) or
    "GLOBAL mod.Class was not an allowed global ..." (anything else outside its allowlist).
    """
    text = str(e)
    found = re.search(r"GLOBAL (\S+) (?:whose module|was not an allowed)", text)
    if found:
        return UserError(
            f"checkpoint '{path}' was refused: it holds a pickled object ({found[1]}) that could run code "
            "when loaded; load only checkpoints you trust, or train a new one with src.train"
        )
    operand = re.search(r"Unsupported operand \d+", text)  # bytes that are no pickle opcode torch accepts
    lines = text.strip().splitlines()
    if operand:
        reason = operand[0]
    elif lines:
        reason = lines[0].split(". ")[0][:160]  # torch's first sentence, e.g. "... failed finding central directory"
    else:
        reason = f"{type(e).__name__}: the file ends early"  # an empty or cut-off pickle
    return UserError(
        f"checkpoint '{path}' cannot be loaded: it is corrupt or not a PyTorch checkpoint ({reason}); "
        "restore it or train a new one"
    )
