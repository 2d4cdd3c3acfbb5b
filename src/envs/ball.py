"""The ball: where the game's RAM says it is, and where a real or predicted frame shows it.

The RAM addresses are AtariARI's annotations (Anand et al. 2019, atariari/benchmark/ram_annotations.py), checked
against the emulator's 210x160 screen: the ball's pixels there are exactly columns ram[x] - 49 and ram[x] - 48 in
both games, rows ram[y] - 14 ... ram[y] - 11 in Pong and ram[y] + 9 ... ram[y] + 12 in Breakout (3,000 random-play
steps each, every frame with the ball on screen). Positions are (row, col) in the 84x84 frames of src.envs.atari,
where the ball covers 2-4 rows and 1-4 columns (two emulator frames max-pooled, then resized with INTER_AREA).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from src.envs.atari import EnvSettings
from src.utils.errors import UserError

# N frames, K steps, H/W pixels
FRAME_SIZE = 84  # the maps and search areas below are in pixels of 84x84 frames
CONTRAST = 0.1  # a pixel is part of a blob when it differs from the court's grey level (its median) by more than this
MAX_BLOB = (5, 5)  # the largest blob (rows, cols) taken for a ball: real ones measure at most 4x4, plus a pixel of blur


@dataclass(frozen=True)
class Ball:
    """One game's ball: where its RAM keeps it, and where find_ball looks for it."""

    ram: tuple[int, int]  # the RAM addresses of its vertical and horizontal position (AtariARI's ball_y, ball_x)
    on_screen: tuple[int, int]  # [first, last) values of ram[ball_y] with the ball drawn
    fit: tuple[float, float, float, float]  # row = a * ram[ball_y] + b, col = c * ram[ball_x] + d (84x84 pixel centres)
    rows: tuple[int, int]  # [first, last) rows find_ball searches: the court below the score, between the walls...
    cols: tuple[int, int]  # ... and columns
    skip_rows: tuple[tuple[int, int], ...] = ()  # [first, last) bands of rows left out of the search
    skip_cols: tuple[tuple[int, int], ...] = ()  # ... and of columns


# on_screen: 0 is no ball in both games (Pong between points, Breakout before a serve); Breakout's screen draws no row
# below raw row 194, which the ball's top passes at ram[ball_y] = 186.
# fit: least squares of find_ball's centre in the real frames of 3,000 random-play steps (seed 1) against the RAM, over
# every step with the ball in the searched area (Pong 1,766, Breakout 2,057); residual rms / max in pixels: Pong row
# 0.26 / 0.94, col 0.26 / 1.07; Breakout row 0.20 / 0.66, col 0.32 / 0.74. On 3,000 other steps (seed 2) find_ball is
# within 1.5 px of the fitted position in every frame with the ball in the searched area (Pong 1,887, Breakout 2,123;
# distance rms 0.35 / 0.39, max 1.40 / 0.90). The resize alone would give row = 0.4 * y - 5.3, col = 0.525 * x - 25.74
# in Pong: the fit differs from it by at most 0.3 px over the court.
# rows, skip: left out are Pong's paddle columns and Breakout's paddle rows (75-77), where a paddle half hidden by a
# wall looks like a ball, and Breakout's rows of bricks.
GAMES = {
    "Pong": Ball(
        ram=(54, 49),
        on_screen=(1, 256),
        fit=(0.3974, -5.014, 0.5226, -25.51),
        rows=(14, 77),
        cols=(0, 84),
        skip_cols=((8, 11), (73, 76)),
    ),
    "Breakout": Ball(
        ram=(101, 99),
        on_screen=(1, 186),
        fit=(0.3975, 4.134, 0.5254, -25.72),
        rows=(13, 75),
        cols=(5, 79),
        skip_rows=((22, 38),),
    ),
}


def tracks_ball(settings: EnvSettings) -> bool:
    """Whether ball_positions knows this game's ball and the frames are the 84x84 its map is for."""
    return settings.game in GAMES and settings.screen_size == FRAME_SIZE


def ram_ball(ram: np.ndarray, game: str) -> tuple[float, float] | None:
    """(row, col) of the ball in the 84x84 frame, from the game's RAM (128 bytes); None when it is not on the screen
    or the game has no annotated ball."""
    if game not in GAMES:
        return None
    g = GAMES[game]
    y, x = (int(ram[a]) for a in g.ram)
    if not g.on_screen[0] <= y < g.on_screen[1]:
        return None
    a, b, c, d = g.fit
    return a * y + b, c * x + d


def ball_positions(env) -> tuple[float, float] | None:  # noqa: ANN001 (a gymnasium env from src.envs.atari.make_env)
    """(row, col) of the ball in the frame `env` showed last, from its RAM; None when the ball is not on the screen
    or the game has no annotated ball."""
    game = env.unwrapped.spec.id.removeprefix("ALE/").rsplit("-v", 1)[0]
    return ram_ball(env.unwrapped.ale.getRAM(), game)


def search_area(game: str) -> np.ndarray:
    """(84, 84) bool: the pixels find_ball looks at."""
    if game not in GAMES:
        raise UserError(f"no ball is annotated for {game}; games with one: {', '.join(GAMES)}")
    g = GAMES[game]
    area = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=bool)
    area[slice(*g.rows), slice(*g.cols)] = True
    for band in g.skip_rows:
        area[slice(*band)] = False
    for band in g.skip_cols:
        area[:, slice(*band)] = False
    return area


def searched(positions: np.ndarray, game: str) -> np.ndarray:
    """positions: (..., 2) (row, col), nan where absent. Returns (...) bool: the position is in find_ball's area."""
    positions = np.asarray(positions, dtype=np.float64)
    inside = np.all((positions > -0.5) & (positions < FRAME_SIZE - 0.5), axis=-1)  # nan compares False
    pixel = np.where(inside[..., None], np.round(positions), 0).astype(np.int64)
    return inside & search_area(game)[pixel[..., 0], pixel[..., 1]]


def find_ball(frames: np.ndarray, game: str, near: np.ndarray | None = None) -> np.ndarray:
    """frames: (N, 84, 84) float in [0, 1], real or predicted. Returns (N, 2) float64: the (row, col) centre of the
    ball in each frame, nan where there is none.

    A ball is a blob (8-connected) of pixels in the game's search area that differ from the area's median grey level
    by more than CONTRAST, at most MAX_BLOB in size; its centre is the mean of its pixels weighted by that
    difference. Of several blobs, the one whose centre is nearest `near` (N, 2) (rows of nan: no preference), or else
    the one with the most total difference."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or frames.shape[1:] != (FRAME_SIZE, FRAME_SIZE):
        raise UserError(f"find_ball takes (N, {FRAME_SIZE}, {FRAME_SIZE}) frames, got shape {frames.shape}")
    area = search_area(game)
    found = np.full((len(frames), 2), np.nan)
    for i, frame in enumerate(frames):
        diff = np.abs(frame - np.median(frame[area])) * area  # (H, W)
        count, labels, stats, _ = cv2.connectedComponentsWithStats((diff > CONTRAST).astype(np.uint8), connectivity=8)
        best = np.inf
        for blob in range(1, count):
            if stats[blob, cv2.CC_STAT_HEIGHT] > MAX_BLOB[0] or stats[blob, cv2.CC_STAT_WIDTH] > MAX_BLOB[1]:
                continue
            ys, xs = np.nonzero(labels == blob)
            weight = diff[ys, xs]
            centre = np.array([ys @ weight, xs @ weight]) / weight.sum()
            prefer = near is not None and not np.isnan(near[i]).any()
            rank = np.hypot(*(centre - near[i])) if prefer else -weight.sum()
            if rank < best:
                best, found[i] = rank, centre
    return found


def ball_scores(predicted: np.ndarray, real_positions: np.ndarray, game: str) -> dict[str, np.ndarray]:
    """predicted: (N, K, 84, 84) float in [0, 1]; real_positions: (N, K, 2) the real ball (Steps.ball), nan where
    absent. Returns (N, K) arrays:

        present       bool: find_ball sees a ball in the prediction
        real_present  bool: the real ball is where find_ball looks (in play, outside the skipped bands), so that a
                      perfect prediction is `present` exactly there
        distance      float: pixels from the predicted ball to the real one; nan unless both are present. Of several
                      blobs in a prediction, the one nearest the real ball counts.
    """
    n, k = predicted.shape[:2]
    real = np.asarray(real_positions, dtype=np.float64).reshape(n * k, 2)
    real_present = searched(real, game)
    real[~real_present] = np.nan
    found = find_ball(np.asarray(predicted).reshape(n * k, *predicted.shape[2:]), game, near=real)
    distance = np.hypot(*(found - real).T)  # nan unless both are present
    return {
        "present": ~np.isnan(found[:, 0]).reshape(n, k),
        "real_present": real_present.reshape(n, k),
        "distance": distance.reshape(n, k),
    }
