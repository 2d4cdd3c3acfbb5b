"""The ball: its RAM position recorded by play_episodes, find_ball / ball_scores on real frames against it, and the
evaluation's ball block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.envs.atari import EnvSettings
from src.envs.ball import GAMES, ball_scores, find_ball, ram_ball, search_area, searched
from src.envs.game import Steps, play_episodes
from src.evaluation.ball import ball_at, ball_block, ball_parts
from src.utils.errors import UserError

STEPS = 160  # per episode, two episodes a game: a few hundred steps with the ball served, missed and served again


@pytest.fixture(scope="module", params=["Pong", "Breakout"])
def played(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    """(game, real frames (N, 84, 84) float in [0, 1], RAM positions (N, 2)) of two short random-play episodes."""
    episodes = play_episodes(EnvSettings(request.param, max_episode_steps=STEPS), 2, seed=3, ball=True)
    frames = np.concatenate([e.next_obs[:, 0] for e in episodes]) / 255.0
    return request.param, frames, np.concatenate([e.ball for e in episodes]).astype(np.float64)


def test_find_ball_agrees_with_the_ram(played: tuple[str, np.ndarray, np.ndarray]) -> None:
    game, frames, real = played
    distance = np.hypot(*(find_ball(frames, game) - real).T)
    on_screen, seen = ~np.isnan(real[:, 0]), searched(real, game)
    # Measured: every frame with the ball in the searched area within 1.5 px; of all frames with the ball on the
    # screen, 97% in both games: the rest are in Pong's paddle columns or Breakout's bricks and paddle rows.
    assert seen.sum() > 150 and on_screen.sum() > 180
    assert np.mean(distance[seen] <= 1.5) == 1.0
    assert np.mean(distance[on_screen] <= 1.5) >= 0.9


def test_no_ball_recorded_where_none_is_annotated_or_asked_for() -> None:
    settings = EnvSettings("MsPacman", max_episode_steps=20)
    assert np.isnan(play_episodes(settings, 1, seed=0, ball=True)[0].ball).all()
    assert play_episodes(settings, 1, seed=0)[0].ball is None
    assert ram_ball(np.zeros(128, dtype=np.uint8), "Pong") is None  # RAM 0: between points
    assert Steps(*(np.zeros(1) for _ in range(6))).ball is None  # Steps built as before


def with_ball_moved(frame: np.ndarray, centre: np.ndarray, game: str, shift: int) -> np.ndarray:
    """`frame` with the pixels within 3 px of the ball's centre set to the court's grey level, and, unless shift is 0,
    the ball's pixels drawn again `shift` columns to the right."""
    area = search_area(game)
    background = np.median(frame[area])
    r, c = np.round(centre).astype(int)
    window = np.s_[r - 3 : r + 4, c - 3 : c + 4]
    ball = frame[window].copy()
    moved = frame.copy()
    moved[window] = np.where(area[window], background, frame[window])
    if shift:
        target = np.s_[r - 3 : r + 4, c - 3 + shift : c + 4 + shift]
        moved[target] = np.where(area[window] & (ball != background), ball, moved[target])
    return moved


def away_from_the_edges(centres: np.ndarray, game: str) -> np.ndarray:
    """Indices of the balls (N, 2) whose 7x7 window, and that window moved 5 px right, lie in the searched area."""
    ok = searched(centres, game)
    for dr in range(-3, 4):
        for dc in range(-3, 9):
            ok &= searched(centres + [dr, dc], game)
    return np.flatnonzero(ok)


def test_a_ball_erased_is_absent_and_a_ball_moved_is_that_far(played: tuple[str, np.ndarray, np.ndarray]) -> None:
    game, frames, real = played
    chosen = away_from_the_edges(find_ball(frames, game), game)
    chosen = chosen[searched(real[chosen], game)][:40]
    found = find_ball(frames[chosen], game)
    assert len(chosen) == 40
    erased = np.stack([with_ball_moved(frames[i], p, game, 0) for i, p in zip(chosen, found)])
    assert np.isnan(find_ball(erased, game)).all()
    moved = np.stack([with_ball_moved(frames[i], p, game, 5) for i, p in zip(chosen, found)])
    np.testing.assert_allclose(find_ball(moved, game) - found, np.tile([0.0, 5.0], (len(chosen), 1)), atol=1e-9)
    scores = ball_scores(moved.reshape(4, 10, 84, 84), real[chosen].reshape(4, 10, 2), game)
    assert scores["present"].all() and scores["real_present"].all()
    assert np.abs(scores["distance"] - 5).max() <= 1.5 and abs(np.median(scores["distance"]) - 5) <= 0.5
    scores = ball_scores(erased.reshape(4, 10, 84, 84), real[chosen].reshape(4, 10, 2), game)
    assert not scores["present"].any() and np.isnan(scores["distance"]).all()


def test_ball_scores_on_real_frames(played: tuple[str, np.ndarray, np.ndarray]) -> None:
    game, frames, real = played
    n = len(frames) // 10 * 10
    scores = ball_scores(frames[:n].reshape(-1, 10, 84, 84), real[:n].reshape(-1, 10, 2), game)
    real_present = scores["real_present"]
    assert (scores["present"] >= real_present).all()  # a ball wherever the real one is in the searched area
    assert np.nanmax(scores["distance"]) <= 1.5 and np.isnan(scores["distance"][~real_present]).all()


def test_searched_area_and_bad_input() -> None:
    assert not searched(np.array([[np.nan, np.nan], [40.0, 9.0], [5.0, 40.0], [40.0, 40.0]]), "Pong")[:3].any()
    assert searched(np.array([40.0, 40.0]), "Pong") and not searched(np.array([30.0, 40.0]), "Breakout")  # bricks
    assert set(GAMES) == {"Pong", "Breakout"}
    with pytest.raises(UserError, match="no ball is annotated for MsPacman"):
        find_ball(np.zeros((1, 84, 84)), "MsPacman")
    with pytest.raises(UserError, match=r"\(N, 84, 84\) frames"):
        find_ball(np.zeros((1, 64, 64)), "Pong")


def court(balls: list[tuple[int, int] | None]) -> np.ndarray:
    """(len(balls), 84, 84) frames of an empty Pong court, each with a 2x2 ball whose top-left pixel is given (None: no
    ball); such a ball's centre is (row + 0.5, col + 0.5)."""
    frames = np.full((len(balls), 84, 84), 144 / 255, dtype=np.float32)
    for frame, ball in zip(frames, balls):
        if ball is not None:
            frame[ball[0] : ball[0] + 2, ball[1] : ball[1] + 2] = 236 / 255
    return frames


def test_the_ball_block_counts_shown_balls_and_their_distance() -> None:
    """Known numbers: a predicted ball on the real one (0 px), 3 px to its right, 4 px below it, erased; a ball
    predicted where the real one is absent counts for nothing."""
    real = np.array(
        [[[40.5, 40.5], [40.5, 40.5], [40.5, 40.5]], [[40.5, 30.5], [np.nan, np.nan], [20.5, 50.5]]]
    )  # (N=2 cases, K=3 steps, 2)
    model = np.stack([court([(40, 40), (40, 43), None]), court([(40, 30), (60, 60), (24, 50)])])  # (2, 3, 84, 84)
    blank = np.stack([court([None] * 3)] * 2)
    parts = {
        "model": ball_parts([torch.from_numpy(model)], real, "Pong"),
        "copy_last": ball_parts([torch.from_numpy(blank)], real, "Pong"),
        "model_shuffled_actions": ball_parts([torch.from_numpy(model), torch.from_numpy(blank)], real, "Pong"),
    }
    assert parts["model"]["present"].shape == (2, 3, 2)
    block = ball_block(parts)
    assert block["present"]["model"] == [1.0, 1.0, 0.5] and block["distance"]["model"] == [0.0, 3.0, 4.0]
    assert block["counted"] == [2, 1, 1] and block["real"] == [2, 1, 2]
    assert block["present"]["copy_last"] == [0.0, 0.0, 0.0] and block["distance"]["copy_last"] == [None] * 3
    # Two samples, one of them blank: half the balls shown, at the distances of the other.
    assert block["present"]["model_shuffled_actions"] == [0.5, 0.5, 0.25]
    assert block["distance"]["model_shuffled_actions"] == [0.0, 3.0, 4.0]
    assert ball_at(block, [1, 3]) == {
        "ball_present": {"1": 1.0, "3": 0.5},
        "ball_distance": {"1": 0.0, "3": 4.0},
    }
