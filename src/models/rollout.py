"""Open-loop rollouts: the model feeds its own predictions back into its context."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.inference_mode()
def rollout(model: nn.Module, context: Tensor, actions: Tensor) -> Tensor:
    """context: (B, T, H, W) float in [0, 1], oldest first; actions: (B, K) int64.
    Returns the K predicted frames (B, K, H, W), each clamped to [0, 1] before it re-enters the context."""
    frames, predictions = context, []
    for k in range(actions.shape[1]):
        next_frame = model(frames, actions[:, k]).clamp(0, 1)  # (B, 1, H, W)
        predictions.append(next_frame)
        frames = torch.cat([frames[:, 1:], next_frame], dim=1)  # (B, T, H, W)
    return torch.cat(predictions, dim=1)  # (B, K, H, W)
