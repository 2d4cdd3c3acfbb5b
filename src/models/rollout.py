"""Open-loop rollouts: the model feeds its own predictions back into its context."""

from __future__ import annotations

import torch
from torch import Tensor, nn

FEEDBACK = ("uint8", "float")  # how a prediction re-enters the context (model.feedback)
DEFAULT_FEEDBACK = "uint8"  # measured against float: README, "Evaluation"


def feed_back(frame: Tensor, feedback: str) -> Tensor:
    """A predicted frame as it re-enters the context: clamped to [0, 1] and, with "uint8", rounded to the 256 grey
    levels that real frames have (as DIAMOND does at every step), so that errors below half a level cannot pile
    up. The rounding passes the gradient straight through (an unroll trained with back-propagation still learns)."""
    frame = frame.clamp(0, 1)
    if feedback == "uint8":
        frame = frame + ((frame * 255).round() / 255 - frame).detach()
    return frame


def unroll(model: nn.Module, context: Tensor, actions: Tensor, feedback: str = DEFAULT_FEEDBACK,
           noise_level: Tensor | None = None) -> Tensor:
    """context: (B, T, H, W) float in [0, 1], oldest first; actions: (B, K) int64; noise_level: (B,) the level of
    the noise put on the context in training (told to the model at every step), None for a clean context.
    Returns the K raw predictions (B, K, H, W); each re-enters the context through `feed_back`. Keeps gradients:
    training unrolls with it, evaluation through `rollout`."""
    frames, predictions = context, []
    told = {} if noise_level is None else {"noise_level": noise_level}
    for k in range(actions.shape[1]):
        next_frame = model(frames, actions[:, k], **told)  # (B, 1, H, W)
        predictions.append(next_frame)
        frames = torch.cat([frames[:, 1:], feed_back(next_frame, feedback)], dim=1)  # (B, T, H, W)
    return torch.cat(predictions, dim=1)  # (B, K, H, W)


def corrupt(context: Tensor, max_level: float) -> tuple[Tensor, Tensor]:
    """Training's context corruption: Gaussian noise of a level drawn per sample uniformly in [0, max_level] on
    every context frame. Returns (the noisy context, the levels (B,)), for unroll's noise_level."""
    levels = torch.rand(len(context), device=context.device) * max_level
    return context + torch.randn_like(context) * levels.view(-1, 1, 1, 1), levels


@torch.inference_mode()
def rollout(model: nn.Module, context: Tensor, actions: Tensor, feedback: str = DEFAULT_FEEDBACK) -> Tensor:
    """`unroll` without gradients; the K predicted frames (B, K, H, W) as they were fed back (what is scored)."""
    return feed_back(unroll(model, context, actions, feedback), feedback)
