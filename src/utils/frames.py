"""Stored frames (uint8, 0-255) and model frames (float32 in [0, 1]): the one place where one becomes the other."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Frames = TypeVar("Frames", torch.Tensor, np.ndarray)


def frames_to_float(frames: Frames) -> Frames:
    """uint8 frames -> float32 in [0, 1], a tensor or an array as given (a tensor stays on its device)."""
    if isinstance(frames, torch.Tensor):
        return frames.float().div_(255.0)
    return frames.astype(np.float32) / np.float32(255.0)
