"""Losses and metrics on frames in [0, 1]. Pure functions of tensors: easy to test, easy to add to."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def frame_loss(prediction: Tensor, target: Tensor, kind: str, huber_delta: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """The training loss and what to log about it. prediction, target: (B, 1, H, W)."""
    mse = F.mse_loss(prediction, target)
    loss = F.huber_loss(prediction, target, delta=huber_delta) if kind == "huber" else mse
    return loss, {"loss": loss.item(), "mse": mse.item()}


def mse_per_sample(prediction: Tensor, target: Tensor) -> Tensor:
    """(B, ...) -> (B,) mean squared error per sample."""
    return (prediction - target).pow(2).flatten(1).mean(1)


def psnr(mse: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB from an MSE of frames in [0, max_value]."""
    return 10 * torch.log10(max_value**2 / mse.clamp_min(1e-12))
