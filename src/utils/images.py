"""Side-by-side image strips of inputs, prediction, target and error, as RGB uint8 arrays.

T context frames, H/W pixels of one frame, s the upscale factor.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

from src.utils.io import atomic_write_bytes

LABEL_HEIGHT = 16  # pixels of the text band above the panels
SEPARATOR = 2  # pixels of gray between panels
SEPARATOR_GRAY = 96  # distinct from the black Atari background
ERROR_GAIN = 4.0  # an absolute error of 0.25 (64 gray levels) saturates the colormap
FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (values outside are clipped) -> uint8 in [0, 255], same shape."""
    return np.round(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8)


def gray_panel(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) float -> (H*s, W*s, 3) uint8, nearest-neighbour upscaled."""
    gray = np.kron(to_uint8(frame), np.ones((scale, scale), dtype=np.uint8))  # (H*s, W*s)
    return np.repeat(gray[:, :, None], 3, axis=2)


def error_panel(prediction: np.ndarray, target: np.ndarray, scale: int) -> np.ndarray:
    """|prediction - target| through a fixed gain and the inferno colormap: (H*s, W*s, 3) uint8.

    The gain is fixed, not normalized per image, so colors mean the same error at every step.
    """
    error = np.abs(np.clip(prediction, 0, 1) - np.clip(target, 0, 1)) * ERROR_GAIN  # (H, W)
    bgr = cv2.applyColorMap(to_uint8(error), cv2.COLORMAP_INFERNO)  # (H, W, 3), OpenCV's BGR order
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))  # (H*s, W*s, 3)


def text_band(texts: list[str], width: int, height: int, centers: list[int]) -> np.ndarray:
    """A black (height, width, 3) band with each text centered at its x position."""
    band = np.zeros((height, width, 3), dtype=np.uint8)
    font_scale = 0.4 * height / LABEL_HEIGHT
    for text, center in zip(texts, centers):
        (text_w, text_h), _ = cv2.getTextSize(text, FONT, font_scale, 1)
        origin = (max(0, center - text_w // 2), (height + text_h) // 2)
        cv2.putText(band, text, origin, FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return band


def side_by_side(panels: list[np.ndarray], labels: list[str], label_height: int = LABEL_HEIGHT) -> np.ndarray:
    """Equal-sized (h, w, 3) panels -> (label_height + h, n*w + (n-1)*SEPARATOR, 3) with a label over each."""
    h, w, _ = panels[0].shape
    gap = np.full((h, SEPARATOR, 3), SEPARATOR_GRAY, dtype=np.uint8)
    row = [part for panel in panels for part in (gap, panel)][1:]
    body = np.concatenate(row, axis=1)  # (h, n*w + (n-1)*SEPARATOR, 3)
    centers = [i * (w + SEPARATOR) + w // 2 for i in range(len(panels))]
    return np.concatenate([text_band(labels, body.shape[1], label_height, centers), body], axis=0)


def prediction_strip(inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray, scale: int = 2) -> np.ndarray:
    """inputs (T, H, W), prediction (H, W), target (H, W), float in [0, 1] (values outside are clipped).

    Returns (LABEL_HEIGHT + H*s, (T+3)*W*s + (T+2)*SEPARATOR, 3) uint8 RGB: the T inputs ("t-3".."t"),
    "pred", "target" and "|error|" (colormapped, amplified by ERROR_GAIN).
    """
    assert inputs.ndim == 3, f"inputs must be (T, H, W), got {inputs.shape}"
    assert prediction.shape == target.shape == inputs.shape[1:], (inputs.shape, prediction.shape, target.shape)
    t = inputs.shape[0]
    panels = [gray_panel(frame, scale) for frame in (*inputs, prediction, target)]
    panels.append(error_panel(prediction, target, scale))
    labels = [f"t-{t - 1 - i}" if i < t - 1 else "t" for i in range(t)] + ["pred", "target", "|error|"]
    return side_by_side(panels, labels)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 image as PNG, atomically (a crash never leaves half a file)."""
    assert image.dtype == np.uint8, f"expected uint8, got {image.dtype}"
    atomic_write_bytes(path, iio.imwrite("<bytes>", image, extension=".png"))
