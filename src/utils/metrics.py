"""Metrics on frames in [0, 1] (training's losses are in src/training/objective.py). Pure functions of tensors: easy
to test, easy to add to.

A new per-step metric of open-loop rollouts is one entry in STEP_METRICS (at the end of this file): evaluation,
summary.json, its metrics.csv and its plots pick it up from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def mse_per_sample(prediction: Tensor, target: Tensor) -> Tensor:
    """(B, ...) -> (B,) mean squared error per sample."""
    return (prediction - target).pow(2).flatten(1).mean(1)


def psnr(mse: Tensor | np.ndarray, max_value: float = 1.0) -> Tensor | np.ndarray:
    """Peak signal-to-noise ratio in dB from an MSE of frames in [0, max_value], floored at 1e-12 (120 dB for
    frames in [0, 1]): a tensor in its dtype, or an array in float64 (float32 gave 120.0000076 for a zero MSE)."""
    if isinstance(mse, Tensor):
        return 10 * torch.log10(max_value**2 / mse.clamp_min(1e-12))
    return 10 * np.log10(max_value**2 / np.maximum(np.asarray(mse, dtype=np.float64), 1e-12))


# N images, C channels, H/W pixels
SSIM_WINDOW = 11  # Gaussian window side, sigma 1.5, K1 0.01, K2 0.03: Wang et al. 2004
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(size,) normalized 1-D Gaussian centred on the middle tap."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def gaussian_blur_valid(x: Tensor, window: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H-s+1, W-s+1): separable per-channel blur, no padding."""
    c, s = x.size(1), window.numel()
    rows = window.view(1, 1, 1, s).expand(c, 1, 1, s)
    cols = window.view(1, 1, s, 1).expand(c, 1, s, 1)
    return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)


def ssim(prediction: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image: (N, C, H, W) or (N, H, W) -> (N,), mean over channels and pixels.

    Matches scikit-image (gaussian_weights=True, sigma=1.5, use_sample_covariance=False) and torchmetrics'
    default: statistics only where the whole window fits, so the border is left out.
    """
    assert prediction.shape == target.shape, (prediction.shape, target.shape)
    assert prediction.dim() in (3, 4), prediction.shape
    assert min(prediction.shape[-2:]) >= SSIM_WINDOW, f"images must be at least {SSIM_WINDOW} pixels a side"
    dtype = torch.promote_types(prediction.dtype, torch.float32)  # half precision loses sigma^2 to cancellation
    x = prediction.to(dtype).reshape(prediction.size(0), -1, *prediction.shape[-2:])  # (N, C, H, W)
    y = target.to(dtype).reshape(x.shape)  # (N, C, H, W)
    c = x.size(1)
    window = gaussian_window(SSIM_WINDOW, SSIM_SIGMA, dtype, x.device)
    moments = gaussian_blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)  # (N, 5C, H', W')
    mu_x, mu_y, xx, yy, xy = moments.split(c, dim=1)  # (N, C, H', W') each
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(1)  # (N,)


# ------------------------------------------------------------------------------------------ per-step metrics


def mean_over_cases(values: np.ndarray) -> np.ndarray:
    """(N, K) per case and step -> (K,)."""
    return values.mean(0)


def psnr_of_mean(mse: np.ndarray) -> np.ndarray:
    """(N, K) MSEs -> (K,) PSNR of the mean MSE (a per-case PSNR is infinite where a frame is copied exactly)."""
    return psnr(mse.mean(0))


def gradient_magnitude(frames: Tensor) -> Tensor:
    """(N, H, W) -> (N,): the mean absolute difference between neighbouring pixels, across and down."""
    dx = (frames[..., :, 1:] - frames[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (frames[..., 1:, :] - frames[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def sharpness(prediction: Tensor, truth: Tensor) -> Tensor:
    """(N, H, W) x2 -> (N,): the prediction's gradient magnitude over the true frame's. 1 is right, below 1 is blur,
    above 1 is noise or texture that is not there: what tells the two apart when the MSE alone cannot."""
    return gradient_magnitude(prediction) / gradient_magnitude(truth).clamp_min(1e-12)


@dataclass(frozen=True)
class StepMetric:
    """A metric of open-loop predictions, reported per step ahead."""

    label: str  # the y axis of its plot
    per_frame: Callable[[Tensor, Tensor], Tensor]  # prediction, truth: (N, H, W) in [0, 1] -> (N,)
    over_cases: Callable[[np.ndarray], np.ndarray] = mean_over_cases  # (N, K) per case and step -> (K,) per step
    log_y: bool = False  # plot on a log scale


STEP_METRICS: dict[str, StepMetric] = {
    "mse": StepMetric("MSE per pixel (frames in [0, 1])", mse_per_sample, log_y=True),
    "psnr": StepMetric("PSNR (dB)", mse_per_sample, over_cases=psnr_of_mean),
    "ssim": StepMetric("SSIM", ssim),
    "sharpness": StepMetric("sharpness: gradient magnitude / the truth's (1 right, < 1 blur, > 1 noise)", sharpness),
}
