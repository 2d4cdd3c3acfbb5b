"""The open-loop test cases an evaluation scores, and what it scores on them.

    windows = windows_from_episodes(episodes, horizon=50, starts_per_episode=16)   # or windows_from_dataset
    cases = event_cases(episodes, horizon=10)       # every reward and end of the episodes, at each step ahead

A case is a context of real frames, the actions really taken after it and the frames that really followed; the
model predicts those frames open loop (src.eval) and each method of METHODS is scored against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.dataset.shards import ShardedDataset
from src.envs.game import Steps
from src.models.run import TrainedOn
from src.utils.errors import UserError

METHODS = {
    "model": "model",
    "copy_last": "copy last frame",
    "model_shuffled_actions": "model, shuffled actions",
    "model_mean": "model, mean of its samples",
}  # name: label; model_mean only for a stochastic model (edm)
EVENT_RATES = ("reward_sign_accuracy", "false_reward_rate", "end_precision", "end_recall")  # EventCounts.rates()

# The settings that decide what follows a frame and an action; noop_max and max_episode_steps only pick where episodes
# start and end.
DYNAMICS = (
    "frame_skip",
    "repeat_action_probability",
    "screen_size",
    "context_frames",
    "full_action_space",
    "terminal_on_life_loss",
)


@dataclass
class Windows:
    """N open-loop test cases: context (N, T, H, W) uint8, actions (N, K) int64, truth (N, K, H, W) uint8."""

    context: np.ndarray
    actions: np.ndarray
    truth: np.ndarray
    rewards: np.ndarray  # (N, K) float32: the real rewards
    # (N, K, 2) float32: the real ball in each truth frame (Steps.ball), nan where absent; None: not tracked (a game
    # without an annotated ball, or windows of a recorded dataset, which has no RAM)
    ball: np.ndarray | None = None

    @classmethod
    def from_steps(cls, windows: list[Steps]) -> Windows:
        tracked = all(w.ball is not None for w in windows)
        return cls(
            np.stack([w.obs[0] for w in windows]),
            np.stack([w.action for w in windows]),
            np.stack([w.next_obs[:, 0] for w in windows]),
            np.stack([w.reward for w in windows]),
            np.stack([w.ball for w in windows]) if tracked else None,
        )


def spread(n: int, count: int) -> np.ndarray:
    """`count` indices over range(n), the middles of equal segments (all of them if count >= n).

    Middles rather than both ends: an episode's first step (a reset) is rare in play but would be in every
    episode's sample, and dominated the mean (one reset transition weighed 4x the copy-last MSE of 63 others)."""
    count = min(count, n)
    return ((np.arange(count) + 0.5) * n / count).astype(int) if count > 0 else np.zeros(0, dtype=int)


def windows_from_episodes(episodes: list[Steps], horizon: int, starts_per_episode: int) -> Windows:
    """`starts_per_episode` windows of `horizon` steps spread over each episode (with the ball where the episodes
    recorded it)."""
    cases = []
    for ep in episodes:
        for s in spread(len(ep.action) - horizon + 1, starts_per_episode):
            cut = lambda x: None if x is None else x[s : s + horizon]  # noqa: E731
            cases.append(
                Steps(
                    *(cut(getattr(ep, f)) for f in ("obs", "action", "next_obs", "done", "reward", "episode", "ball"))
                )
            )
    if not cases:
        raise UserError(f"no episode lasted the {horizon} steps of --horizon; lower it or play more --episodes")
    return Windows.from_steps(cases)


def windows_from_dataset(dataset: ShardedDataset, horizon: int, count: int) -> Windows:
    starts = dataset.window_starts(horizon)
    if len(starts) == 0:
        raise UserError(f"'{dataset.root}' has no window of {horizon} consecutive steps; lower --horizon")
    return Windows.from_steps([dataset.steps(int(starts[i]), horizon) for i in spread(len(starts), count)])


def episodes_from_dataset(dataset: ShardedDataset, count: int) -> list[Steps]:
    """`count` whole recorded episodes that end in the data (spread over the dataset), as Steps."""
    done, episode = dataset.column("done"), dataset.column("episode")
    ends = np.flatnonzero(done)
    chosen = []
    for i in spread(len(ends), count):
        end = int(ends[i])
        others = np.flatnonzero(episode[: end + 1] != episode[end])
        first = max(
            int(ends[i - 1]) + 1 if i > 0 else 0,
            int(dataset.offsets[dataset.locate(end)[0]]),
            int(others[-1]) + 1 if len(others) else 0,
        )  # after the last end, in the end's shard and episode
        chosen.append(dataset.steps(first, end - first + 1))
    return chosen


def check_same_frames(dataset: ShardedDataset, trained_on: TrainedOn) -> None:
    """UserError unless `dataset` was recorded with the settings of the checkpoint's training data (`trained_on`): a
    model scored on frames of another frame skip or sticky-action rate would be scored on a game it never saw."""
    recorded, trained = dataset.manifest.env.to_dict(), trained_on.settings.to_dict()
    for key in DYNAMICS:
        if recorded[key] != trained[key]:
            raise UserError(
                f"--data_dir was recorded with {key}={recorded[key]}, the checkpoint's training data with "
                f"{key}={trained[key]}; evaluate on data recorded with the same settings, or on fresh episodes "
                "(no --data_dir)"
            )


def event_cases(episodes: list[Steps], horizon: int) -> tuple[Windows, np.ndarray, np.ndarray] | None:
    """Open-loop cases that reach every reward and every end of `episodes` at each step ahead 1..horizon: for an
    event at step i, the cases starting at i - h + 1 for h = 1..horizon (each start once). Cases that run past their
    episode's end are padded. Returns (the windows, the real ends (N, horizon) bool, which steps are real (N, horizon)),
    or None when the episodes hold no reward and no end."""
    context, actions, rewards, ends, valid = [], [], [], [], []
    for ep in episodes:
        n = len(ep.action)
        events = np.flatnonzero((ep.reward != 0) | ep.done)
        starts = np.unique(np.clip((events[:, None] - np.arange(horizon)[None, :]).ravel(), 0, None))
        for s in starts:
            length = min(horizon, n - s)
            pad = lambda x: np.concatenate([x[s : s + length], np.zeros(horizon - length, dtype=x.dtype)])  # noqa: E731
            context.append(ep.obs[s])
            actions.append(pad(ep.action))
            rewards.append(pad(ep.reward))
            ends.append(pad(ep.done))
            valid.append(np.arange(horizon) < length)
    if not context:
        return None
    frames = np.zeros(
        (len(context), horizon, *context[0].shape[1:]), dtype=np.uint8
    )  # truth frames are not scored here
    return Windows(np.stack(context), np.stack(actions), frames, np.stack(rewards)), np.stack(ends), np.stack(valid)
