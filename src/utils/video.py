"""Rollout videos: truth | model | |error| frames, and writing them as .mp4 (H.264) or .gif.

K frames (horizon steps), H/W pixels of one frame, s the upscale factor.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np

from src.utils.frames import frames_to_float
from src.utils.images import error_panel, gray_panel, side_by_side, text_band
from src.utils.io import replaced_atomically

VIDEO_LABEL_HEIGHT = 20  # pixels of the label band above and of the step-counter band below


def rollout_frame(truth: np.ndarray, prediction: np.ndarray, scale: int, counter: str) -> np.ndarray:
    """One (H, W) pair -> (VIDEO_LABEL_HEIGHT + H*s + VIDEO_LABEL_HEIGHT, 3*W*s + 2*SEPARATOR, 3) uint8."""
    panels = [gray_panel(truth, scale), gray_panel(prediction, scale), error_panel(prediction, truth, scale)]
    top = side_by_side(panels, ["truth", "model", "|error|"], VIDEO_LABEL_HEIGHT)
    footer = text_band([counter], top.shape[1], VIDEO_LABEL_HEIGHT, [top.shape[1] // 2])
    return np.concatenate([top, footer], axis=0)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """(K, H, W, 3) -> (K, H + H%2, W + W%2, 3), black padding: yuv420p needs even sides."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def rollout_frames(truth: np.ndarray, prediction: np.ndarray, scale: int = 3, start_step: int = 1) -> np.ndarray:
    """truth, prediction: (K, H, W) float in [0, 1]. Returns (K, H', W', 3) uint8, H' and W' even.

    Each frame shows truth, model and the amplified |error| side by side, labelled, with a counter
    "step k/N" where k runs from start_step to N = start_step + K - 1.
    """
    assert truth.ndim == 3 and truth.shape == prediction.shape, (truth.shape, prediction.shape)
    last = start_step + len(truth) - 1
    frames = [
        rollout_frame(t, p, scale, f"step {start_step + k}/{last}") for k, (t, p) in enumerate(zip(truth, prediction))
    ]
    return pad_to_even(np.stack(frames))  # (K, H', W', 3)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """frames (K, H, W, 3) uint8 -> .mp4 (H.264, yuv420p, plays in browsers) or .gif (loops forever).

    Written to a temporary name in the same folder, then renamed, so a crash never leaves half a video.
    """
    path = Path(path)
    assert frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8, (frames.shape, frames.dtype)
    writers = {".mp4": write_mp4, ".gif": write_gif}
    if path.suffix not in writers:
        raise ValueError(f"video path must end in .mp4 or .gif, got '{path}'")
    with replaced_atomically(path) as tmp:  # the temporary name keeps the suffix, which tells ffmpeg the container
        writers[path.suffix](tmp, frames, fps)
    return path


def write_rollout_videos(truth: np.ndarray, predicted: np.ndarray, stems: list[Path], suffixes: tuple[str, ...] = ("mp4",)) -> list[dict[str, Path]]:
    """Open-loop rollouts as videos of truth | model | |error|: truth (V, K, H, W) uint8 as stored, predicted
    (V, K, H, W) float in [0, 1]; rollout v is written to stems[v] + each suffix. Returns {suffix: path} per rollout."""
    written = []
    for v, stem in enumerate(stems):
        frames = rollout_frames(frames_to_float(truth[v]), predicted[v])
        written.append({suffix: write_video(stem.with_name(f"{stem.name}.{suffix}"), frames) for suffix in suffixes})
    return written


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    _, h, w, _ = frames.shape
    assert h % 2 == 0 and w % 2 == 0, f"H.264 with yuv420p needs even sides, got {h}x{w}"
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (w, h),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",  # the chroma layout browsers can decode
        macro_block_size=1,  # keep our size; the default 16 would rescale the frames
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"],  # index first: playback starts before the download ends
    )
    writer.send(None)  # start the ffmpeg process
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def write_gif(path: Path, frames: np.ndarray, fps: int) -> None:
    # Pillow: duration per frame in ms, loop=0 repeats forever.
    iio.imwrite(path, frames, extension=".gif", duration=round(1000 / fps), loop=0)
