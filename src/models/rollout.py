"""Open-loop rollouts: the model feeds its own predictions back into its context."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def unroll(model: nn.Module, context: Tensor, actions: Tensor) -> Tensor:
    """context: (B, T, H, W) float in [0, 1], oldest first; actions: (B, K) int64.
    Returns the K raw predictions (B, K, H, W); each re-enters the context clamped to [0, 1]. Keeps gradients:
    training unrolls with it, evaluation through `rollout`."""
    frames, predictions = context, []
    for k in range(actions.shape[1]):
        next_frame = model(frames, actions[:, k])  # (B, 1, H, W)
        predictions.append(next_frame)
        frames = torch.cat([frames[:, 1:], next_frame.clamp(0, 1)], dim=1)  # (B, T, H, W)
    return torch.cat(predictions, dim=1)  # (B, K, H, W)


@torch.inference_mode()
def rollout(model: nn.Module, context: Tensor, actions: Tensor) -> Tensor:
    """`unroll` without gradients; the K predicted frames (B, K, H, W) clamped to [0, 1]."""
    return unroll(model, context, actions).clamp(0, 1)
