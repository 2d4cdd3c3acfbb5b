"""Metrics on frames in [0, 1] (training's losses are in src/training/objective.py). Pure functions of tensors: easy
to test, easy to add to.

A new per-step metric of open-loop rollouts is one entry in STEP_METRICS (at the end of this file): evaluation,
summary.json, its metrics.csv and its plots pick it up from there.

MSE-style metrics cannot see a stopped game: a frozen or smeared imagined frame can beat copying the last frame. The
changed-pixel recall and precision, the motion ratio and the objects ratio can (1 is right for each).
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


# ------------------------------------------------------------------------------------------ is the game alive

CHANGED = 2 / 255  # a pixel changes when it moves by more than this: more than 2 of the 255 grey levels
ROUNDING = 1e-6  # ... plus this, so that a step of exactly 2 levels (a/255 - b/255 in float32) never counts


def changed(frames: Tensor, reference: Tensor) -> Tensor:
    """(N, ...) bool: where `frames` lie more than CHANGED away from `reference` (broadcast to their shape)."""
    return (frames - reference).abs() > CHANGED + ROUNDING


def ratio_parts(numerator: Tensor, denominator: Tensor) -> Tensor:
    """(N,) x2 -> (N, 2): a ratio's parts per frame, kept apart until `ratio_of_sums` adds them up over the cases."""
    return torch.stack([numerator.float(), denominator.float()], dim=1)


def ratio_of_sums(parts: np.ndarray) -> np.ndarray:
    """(N, K, 2) numerator and denominator per case and step -> (K,): the numerators' sum over the denominators' per
    step, not a mean of per-case ratios (a case can have nothing to count); NaN where the denominators sum to 0."""
    numerator, denominator = parts.astype(np.float64).sum(0).T  # (K,) each
    return np.divide(numerator, denominator, out=np.full_like(numerator, np.nan), where=denominator > 0)


def changed_recall(prediction: Tensor, truth: Tensor, previous_prediction: Tensor, previous_truth: Tensor) -> Tensor:
    """(N, H, W) x4 -> (N, 2): [pixels that change in both the truth and the prediction, pixels that change in the
    truth], each from its own previous frame. 0: the imagined game stands still where the real one moves."""
    real = changed(truth, previous_truth).flatten(1)  # (N, H*W)
    both = real & changed(prediction, previous_prediction).flatten(1)
    return ratio_parts(both.sum(1), real.sum(1))


def changed_precision(prediction: Tensor, truth: Tensor, previous_prediction: Tensor, previous_truth: Tensor) -> Tensor:
    """(N, H, W) x4 -> (N, 2): [pixels that change in both, pixels that change in the prediction]. Low: the
    prediction moves where the game does not (noise, smear)."""
    imagined = changed(prediction, previous_prediction).flatten(1)  # (N, H*W)
    both = imagined & changed(truth, previous_truth).flatten(1)
    return ratio_parts(both.sum(1), imagined.sum(1))


def motion(prediction: Tensor, truth: Tensor, previous_prediction: Tensor, previous_truth: Tensor) -> Tensor:
    """(N, H, W) x4 -> (N, 2): [mean |prediction - its previous frame|, mean |truth - its previous frame|]. 0:
    frozen."""
    step = lambda frames, previous: (frames - previous).abs().flatten(1).mean(1)  # noqa: E731
    return ratio_parts(step(prediction, previous_prediction), step(truth, previous_truth))


def background(frames: Tensor) -> Tensor:
    """(N, H, W) in [0, 1] -> (N,): each frame's commonest grey level (of 256), in [0, 1]."""
    levels = (frames.flatten(1) * 255).round().long().clamp(0, 255)  # (N, H*W)
    offsets = torch.arange(len(levels), device=levels.device).unsqueeze(1) * 256  # (N, 1): a histogram per frame
    counts = torch.bincount((levels + offsets).flatten(), minlength=256 * len(levels)).view(-1, 256)  # (N, 256)
    return counts.argmax(1).float() / 255


def objects(prediction: Tensor, truth: Tensor, previous_prediction: Tensor, previous_truth: Tensor) -> Tensor:
    """(N, H, W) x4 -> (N, 2): [pixels of the prediction, pixels of the truth] more than CHANGED away from the true
    frame's background (its commonest grey level). Above 1: smear; below 1: things vanished. The previous frames are
    not used."""
    level = background(truth).unsqueeze(1)  # (N, 1)
    count = lambda frames: changed(frames.flatten(1), level).sum(1)  # noqa: E731
    return ratio_parts(count(prediction), count(truth))


def step_frames(prediction: Tensor, truth: Tensor, before: Tensor) -> list[Tensor]:
    """prediction, truth: (B, K, H, W) open-loop steps; before: (B, H, W) the last context frame -> [prediction, truth,
    previous prediction, previous truth], each (B*K, H, W): what StepMetric.per_frame takes (before step 1, the last
    context frame for both)."""
    b, k, h, w = truth.shape
    previous = lambda frames: torch.cat([before.unsqueeze(1), frames[:, :-1]], dim=1)  # noqa: E731
    return [x.reshape(b * k, h, w) for x in (prediction, truth, previous(prediction), previous(truth))]


# ------------------------------------------------------------------------------------------ the registry

FrameMetric = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def of_the_step(metric: Callable[[Tensor, Tensor], Tensor]) -> FrameMetric:
    """A metric of the prediction and the truth alone, called as StepMetric.per_frame is (previous frames unused)."""
    return lambda prediction, truth, previous_prediction, previous_truth: metric(prediction, truth)


@dataclass(frozen=True)
class StepMetric:
    """A metric of open-loop predictions, reported per step ahead."""

    label: str  # the y axis of its plot
    # prediction, truth, previous prediction, previous truth: (N, H, W) in [0, 1] (before step 1: the last context
    # frame for both) -> (N,), or (N, 2) for a ratio's numerator and denominator
    per_frame: FrameMetric
    over_cases: Callable[[np.ndarray], np.ndarray] = mean_over_cases  # (N, K) or (N, K, 2) per case and step -> (K,)
    log_y: bool = False  # plot on a log scale


STEP_METRICS: dict[str, StepMetric] = {
    "mse": StepMetric("MSE per pixel (frames in [0, 1])", of_the_step(mse_per_sample), log_y=True),
    "psnr": StepMetric("PSNR (dB)", of_the_step(mse_per_sample), over_cases=psnr_of_mean),
    "ssim": StepMetric("SSIM", of_the_step(ssim)),
    "sharpness": StepMetric(
        "sharpness: gradient magnitude / the truth's (1 right, < 1 blur, > 1 noise)", of_the_step(sharpness)
    ),
    "changed_recall": StepMetric("changed-pixel recall (1 right, 0 frozen)", changed_recall, ratio_of_sums),
    "changed_precision": StepMetric("changed-pixel precision (1 right)", changed_precision, ratio_of_sums),
    "motion": StepMetric("motion / the truth's (1 right, 0 frozen)", motion, ratio_of_sums),
    "objects": StepMetric("objects / the truth's (1 right, > 1 smear)", objects, ratio_of_sums),
}
ALIVE = ("changed_recall", "changed_precision", "motion", "objects")  # summary.json's "alive" block
