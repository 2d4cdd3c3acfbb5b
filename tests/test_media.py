"""Image strips and rollout videos: layout, pixel placement, and files that decode."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from src.utils.images import LABEL_HEIGHT, SEPARATOR, prediction_strip, save_png
from src.utils.video import VIDEO_LABEL_HEIGHT, VideoWriter, rollout_frames, write_video

H, W = 84, 84


def square(top: int, left: int, size: int = 10, shape: tuple[int, ...] = (H, W)) -> np.ndarray:
    """A black frame with a white square: easy to find again after upscaling."""
    frame = np.zeros(shape, dtype=np.float32)
    frame[..., top : top + size, left : left + size] = 1.0
    return frame


def panel(image: np.ndarray, index: int, scale: int, band: int) -> np.ndarray:
    """The index-th panel of a side-by-side image, label band cut off: (H*s, W*s, 3)."""
    x0 = index * (W * scale + SEPARATOR)
    return image[band : band + H * scale, x0 : x0 + W * scale]


def test_prediction_strip_layout_and_pixels():
    """Catches a wrong panel order/size or separator width: the white square must land in the 'pred' panel."""
    t, scale = 4, 2
    inputs = np.zeros((t, H, W), dtype=np.float32)
    prediction, target = square(10, 30), np.zeros((H, W), dtype=np.float32)
    strip = prediction_strip(inputs, prediction, target, scale=scale)
    assert strip.dtype == np.uint8
    assert strip.shape == (LABEL_HEIGHT + H * scale, (t + 3) * W * scale + (t + 2) * SEPARATOR, 3)
    pred = panel(strip, t, scale, LABEL_HEIGHT)
    assert (pred[20:40, 60:80] == 255).all()  # the square, upscaled 2x
    assert (pred[:20] == 0).all() and (pred[40:] == 0).all()
    assert (panel(strip, t + 1, scale, LABEL_HEIGHT) == 0).all()  # target: all black
    error = panel(strip, t + 2, scale, LABEL_HEIGHT)
    assert error[30, 70].sum() > error[0, 0].sum() + 300  # error shows up bright where pred != target


def test_prediction_strip_clips_out_of_range_values():
    """Catches uint8 wrap-around: 1.2 must become white (255) and -0.1 black (0), not 50 and 230."""
    inputs = np.full((4, H, W), -0.1, dtype=np.float32)
    strip = prediction_strip(inputs, np.full((H, W), 1.2), np.zeros((H, W)), scale=1)
    assert (panel(strip, 0, 1, LABEL_HEIGHT) == 0).all()
    assert (panel(strip, 4, 1, LABEL_HEIGHT) == 255).all()


def test_save_png_round_trip(tmp_path):
    """Catches a PNG that does not decode or changes pixels, and a temporary file left behind."""
    strip = prediction_strip(np.random.default_rng(0).random((4, H, W)), square(5, 5), square(6, 6))
    path = tmp_path / "strip.png"
    save_png(path, strip)
    assert np.array_equal(iio.imread(path), strip)
    assert [p.name for p in tmp_path.iterdir()] == ["strip.png"]


def test_rollout_frames_shape_and_panels():
    """Catches odd frame sides (H.264 rejects them) and truth/model panels swapped."""
    k, scale = 5, 3
    truth, prediction = square(0, 0, shape=(k, H, W)), square(50, 50, shape=(k, H, W))
    frames = rollout_frames(truth, prediction, scale=scale)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and len(frames) == k
    _, h, w, c = frames.shape
    assert h % 2 == 0 and w % 2 == 0 and c == 3
    assert h >= H * scale + 2 * VIDEO_LABEL_HEIGHT and w >= 3 * W * scale + 2 * SEPARATOR
    left, middle = panel(frames[2], 0, scale, VIDEO_LABEL_HEIGHT), panel(frames[2], 1, scale, VIDEO_LABEL_HEIGHT)
    assert (left[:30, :30] == 255).all() and (left[150:180, 150:180] == 0).all()  # truth: square at (0, 0)
    assert (middle[:30, :30] == 0).all() and (middle[150:180, 150:180] == 255).all()  # model: at (50, 50)


def test_rollout_frames_step_counter_changes():
    """Catches a missing step counter: frames with identical panels must still differ (the 'step k/N' text)."""
    frames = rollout_frames(np.zeros((3, H, W)), np.zeros((3, H, W)), scale=1, start_step=7)
    assert not np.array_equal(frames[0], frames[1])
    assert np.array_equal(
        frames[0, VIDEO_LABEL_HEIGHT:-VIDEO_LABEL_HEIGHT], frames[1, VIDEO_LABEL_HEIGHT:-VIDEO_LABEL_HEIGHT]
    )


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_video_decodes_to_all_frames(tmp_path, suffix):
    """Catches dropped/merged frames, ffmpeg's macro-block resize (sizes not multiples of 16) and leftover temp
    files."""
    k = 6
    frames = rollout_frames(square(0, 0, shape=(k, H, W)), np.random.default_rng(1).random((k, H, W)), scale=1)
    path = write_video(tmp_path / f"rollout{suffix}", frames, fps=8)
    assert path == tmp_path / f"rollout{suffix}"
    decoded = iio.imread(path, plugin="FFMPEG" if suffix == ".mp4" else None)
    assert decoded.shape[:3] == frames.shape[:3]  # (K, H', W')
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    if suffix == ".mp4":  # lossy, but the white square in the truth panel survives
        truth = panel(decoded[0], 0, 1, VIDEO_LABEL_HEIGHT)
        assert truth[2:8, 2:8].mean() > 200 and truth[40:80, 40:80].mean() < 30


def test_write_video_rejects_unknown_suffix(tmp_path):
    """Catches a silently ignored suffix (e.g. writing an mp4 into a file named .avi)."""
    with pytest.raises(ValueError, match="mp4 or .gif"):
        write_video(tmp_path / "rollout.avi", np.zeros((2, 4, 4, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_writer_streams_and_renames_into_place(tmp_path, suffix):
    """Catches a streamed video that drops frames, or a half-written one visible under the final name."""
    frames = rollout_frames(square(0, 0, shape=(7, H, W)), np.random.default_rng(2).random((7, H, W)), scale=1)
    path = tmp_path / f"stream{suffix}"
    with VideoWriter(path, fps=15) as video:
        for frame in frames:
            video.append(frame)
        assert not path.exists() and all(p.name.startswith(".stream.") for p in tmp_path.iterdir())  # a temporary name
    assert video.written == path and video.frames == 7
    assert iio.imread(path, plugin="FFMPEG" if suffix == ".mp4" else None).shape[:3] == frames.shape[:3]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_video_writer_leaves_the_old_file_on_an_error_and_writes_nothing_without_frames(tmp_path):
    """Catches a failed or empty video replacing a good one, and temporary files left behind."""
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"the old video")
    frame = np.zeros((4, 6, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path) as video:
        video.append(frame)
        raise RuntimeError("boom")
    with VideoWriter(path) as empty:
        pass
    assert video.written is None and empty.written is None
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"] and path.read_bytes() == b"the old video"


def test_video_writer_bounds_a_gif(tmp_path, monkeypatch):
    """Catches a .gif growing without bound in memory (its frames wait for the end)."""
    monkeypatch.setattr("src.utils.video.GIF_MAX_FRAMES", 3)
    with pytest.raises(ValueError, match="at most 3 frames"), VideoWriter(tmp_path / "long.gif") as video:
        for _ in range(4):
            video.append(np.zeros((4, 4, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_gif_is_refused_at_a_rate_its_delays_cannot_hold(tmp_path: Path) -> None:
    """Catches a .gif written at 60 fps: its 1.7-hundredths delay rounds to 1, which browsers show at 10 fps."""
    from src.utils.video import VideoWriter

    for fps in (60, 0.001):
        with pytest.raises(ValueError, match="a .gif plays 0.0015 to 50 frames per second"):
            VideoWriter(tmp_path / "play.gif", fps)
    assert VideoWriter(tmp_path / "play.gif", 50).fps == 50 and VideoWriter(tmp_path / "play.mp4", 240).fps == 240
    assert not list(tmp_path.iterdir())
