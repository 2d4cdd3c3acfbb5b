"""Rollout videos: truth | model | |error| frames, and writing them as .mp4 (H.264) or .gif.

K frames (horizon steps), H/W pixels of one frame, s the upscale factor.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from src.utils.frames import frames_to_float
from src.utils.images import error_panel, gray_panel, side_by_side, text_band
from src.utils.io import replaced_atomically

VIDEO_LABEL_HEIGHT = 20  # pixels of the label band above and of the step-counter band below
GIF_MAX_FRAMES = (
    1000  # a .gif's frames wait in memory (0.6 GB of them at src.play's default size, side by side): longer, .mp4
)
GIF_FPS = (
    100 / 65535,
    50.0,
)  # a GIF frame waits 2 to 65535 hundredths of a second (browsers show a shorter delay as 10)


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


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8) -> Path:
    """frames (K, H, W, 3) uint8 -> .mp4 (H.264, yuv420p, plays in browsers) or .gif (loops forever).

    Written to a temporary name in the same folder, then renamed, so a crash never leaves half a video.
    """
    assert frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8, (frames.shape, frames.dtype)
    with VideoWriter(path, fps) as video:
        for frame in frames:
            video.append(frame)
    return video.path


class VideoWriter:
    """A video written frame by frame as the frames are made, so that memory holds one frame, not the video:

        with VideoWriter("out.mp4", fps=15) as video:
            for ...:
                video.append(frame)          # (H, W, 3) uint8, H and W even for .mp4

    .mp4 frames go straight to ffmpeg's H.264 encoder. A .gif is encoded when the block ends (Pillow writes a GIF in
    one go), its frames kept palettised until then: a byte a pixel, a third of the RGB frames; keep it short (at most
    GIF_MAX_FRAMES frames). The video is written under a temporary name beside `path` and renamed into place when the
    block ends without an error and with at least one frame; otherwise the temporary file is removed and `path` keeps
    what it held (`written` is None).
    """

    def __init__(self, path: str | Path, fps: float = 8) -> None:
        self.path, self.fps = Path(path), fps
        if self.path.suffix not in (".mp4", ".gif"):
            raise ValueError(f"video path must end in .mp4 or .gif, got '{path}'")
        if self.path.suffix == ".gif" and not GIF_FPS[0] <= fps <= GIF_FPS[1]:
            raise ValueError(
                f"a .gif plays {GIF_FPS[0]:.4f} to {GIF_FPS[1]:g} frames per second, got {fps:g}; write an .mp4"
            )
        self.frames = 0
        self.written: Path | None = None
        self._encoder: Generator | None = None  # ffmpeg, fed one frame at a time (.mp4)
        self._palettised: list[Image.Image] = []  # the frames of a .gif

    def __enter__(self) -> VideoWriter:
        self._target = replaced_atomically(self.path)
        self._tmp = self._target.__enter__()  # keeps the suffix, which tells ffmpeg the container
        return self

    def append(self, frame: np.ndarray) -> None:
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8, (frame.shape, frame.dtype)
        if self.path.suffix == ".gif":
            if self.frames >= GIF_MAX_FRAMES:
                raise ValueError(f"a .gif holds at most {GIF_MAX_FRAMES} frames; write an .mp4 for longer videos")
            # Pillow's own conversion of an RGB frame for a GIF, done now, so that only the palettised frame is kept
            self._palettised.append(Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE))
        else:
            if self._encoder is None:
                self._encoder = mp4_encoder(self._tmp, frame.shape[1], frame.shape[0], self.fps)
            self._encoder.send(np.ascontiguousarray(frame))
        self.frames += 1

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        keep = exc_type is None and self.frames > 0
        try:
            if self._encoder is not None:
                self._encoder.close()  # ffmpeg encodes what it has and writes the file's index
            if keep and self._palettised:
                first, *rest = self._palettised  # duration per frame in ms, loop=0 repeats forever
                first.save(
                    self._tmp, format="GIF", save_all=True, append_images=rest, duration=round(1000 / self.fps), loop=0
                )
        except BaseException:
            keep = False
            raise
        finally:
            self._palettised = []
            self._end(keep)

    def _end(self, keep: bool) -> None:
        """Rename the temporary file into place, or remove it."""
        if keep:
            self._target.__exit__(None, None, None)
            self.written = self.path
        else:  # an error thrown into replaced_atomically removes the file; its __exit__ returns, the error stays here
            self._target.__exit__(RuntimeError, RuntimeError("video discarded"), None)


def mp4_encoder(path: Path, width: int, height: int, fps: float) -> Generator:
    """ffmpeg's H.264 encoder writing `path`, started and waiting for frames: send() one (H, W, 3) uint8 frame at a
    time; close() finishes the file."""
    assert height % 2 == 0 and width % 2 == 0, f"H.264 with yuv420p needs even sides, got {height}x{width}"
    encoder = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",  # the chroma layout browsers can decode
        macro_block_size=1,  # keep our size; the default 16 would rescale the frames
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"],  # index first: playback starts before the download ends
    )
    encoder.send(None)  # start the ffmpeg process
    return encoder


def write_rollout_videos(
    truth: np.ndarray, predicted: np.ndarray, stems: list[Path], suffixes: tuple[str, ...] = ("mp4",)
) -> list[dict[str, Path]]:
    """Open-loop rollouts as videos of truth | model | |error|: truth (V, K, H, W) uint8 as stored, predicted
    (V, K, H, W) float in [0, 1]; rollout v is written to stems[v] + each suffix. Returns {suffix: path} per rollout."""
    written = []
    for v, stem in enumerate(stems):
        frames = rollout_frames(frames_to_float(truth[v]), predicted[v])
        written.append({suffix: write_video(stem.with_name(f"{stem.name}.{suffix}"), frames) for suffix in suffixes})
    return written
