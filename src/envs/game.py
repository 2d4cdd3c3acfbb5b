"""One game stepped one action at a time, and what it did as Steps: the one way evaluation and play step a game.

(Recording steps many games at once in ale-py's C++ vector environment instead: src/dataset/collect.py.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from src.envs.atari import EnvSettings, make_env
from src.envs.ball import ball_positions, tracks_ball
from src.envs.policies import RandomPolicy

# The Python state that gymnasium's wrappers keep between steps (FrameStackObservation's frames, AtariPreprocessing's
# max-pool buffer and lives, TimeLimit's count): a snapshot copies it beside the emulator's own state.
WRAPPER_STATE = ("obs_queue", "obs_buffer", "lives", "game_over", "_elapsed_steps", "_has_reset")
WARMUP_STEPS = 8  # random steps after a reset in Game.reset_in_motion: a full 4-frame context, the game in motion


@dataclass
class Steps:
    """k consecutive steps (k=1 for a single sample). Leading axis K is the step."""

    obs: np.ndarray  # (K, T, H, W) uint8, T context frames oldest first
    action: np.ndarray  # (K,) int64
    next_obs: np.ndarray  # (K, 1, H, W) uint8
    done: np.ndarray  # (K,) bool
    reward: np.ndarray  # (K,) float32
    episode: np.ndarray  # (K,) int64
    # (K, 2) float32 (row, col) of the ball in next_obs, nan where absent (src.envs.ball); None: not tracked
    ball: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        """(T + K, H, W): the first step's context followed by each step's next frame."""
        return np.concatenate([self.obs[0], self.next_obs[:, 0]], axis=0)


@dataclass
class Transition:
    """What one step of a game did: from `obs`, `action` led to `next_obs` (the stacked frames after it)."""

    obs: np.ndarray  # (T, H, W) uint8
    action: int
    next_obs: np.ndarray  # (T, H, W) uint8
    done: bool  # terminated or truncated
    reward: float


class Game:
    """One preprocessed game (src.envs.atari.make_env): reset with a seed, then step an action at a time."""

    def __init__(self, settings: EnvSettings) -> None:
        self.env = make_env(settings)
        self.num_actions = int(self.env.action_space.n)
        self.obs: np.ndarray | None = None  # (T, H, W) uint8, the current stacked frames

    def reset(self, seed: int) -> np.ndarray:
        self.obs, _ = self.env.reset(seed=seed)
        return self.obs

    def reset_in_motion(self, seed: int, rng: np.random.Generator) -> np.ndarray:
        """reset(seed), then WARMUP_STEPS actions drawn uniformly from `rng`: a start with a full context and the game
        in motion (play's and the imagination envs' real starts). Returns the stacked frames (T, H, W) uint8."""
        obs = self.reset(seed)
        for _ in range(WARMUP_STEPS):
            obs = self.step(int(rng.integers(self.num_actions))).next_obs
        return obs

    def step(self, action: int) -> Transition:
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        transition = Transition(self.obs, action, next_obs, bool(terminated or truncated), float(reward))
        self.obs = next_obs
        return transition

    def snapshot(self) -> dict[str, Any]:
        """Everything the next steps depend on: the emulator's state (its RNG too, for sticky actions) and the
        wrappers'. restore(snapshot) returns the game to this moment, so that the same actions give the same frames
        and rewards again (what the imagined-vs-real comparison replays)."""
        layers, env = [], self.env
        while env is not None:
            layers.append({k: copy.deepcopy(getattr(env, k)) for k in WRAPPER_STATE if k in vars(env)})
            env = getattr(env, "env", None)
        return {"ale": self.env.unwrapped.ale.cloneState(include_rng=True), "layers": layers, "obs": self.obs.copy()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.env.unwrapped.ale.restoreState(snapshot["ale"])
        env = self.env
        for layer in snapshot["layers"]:
            for key, value in layer.items():
                setattr(env, key, copy.deepcopy(value))
            env = getattr(env, "env", None)
        self.obs = snapshot["obs"].copy()

    def close(self) -> None:
        self.env.close()


def play_episodes(
    settings: EnvSettings,
    episodes: int,
    seed: int,
    on_step: Callable[[], object] | None = None,
    ball: bool = False,
) -> list[Steps]:
    """Fresh episodes of the real game with uniformly random actions, one Steps per episode (episode e is seeded
    with seed + e); `on_step` is called after every step (a progress bar's update). With `ball`, each Steps has the
    ball's position from the RAM after every step, nan where absent, at the episode's last step and throughout a game
    without an annotated ball."""
    game = Game(settings)
    policy = RandomPolicy(game.num_actions, 1, np.random.SeedSequence(seed))
    tracked = ball and tracks_ball(settings)
    played = []
    for e in range(episodes):
        game.reset(seed + e)
        steps: list[Transition] = []
        positions: list[tuple[float, float]] = []
        while not steps or not steps[-1].done:
            steps.append(game.step(int(policy.act(game.obs[None], np.zeros(1, dtype=int))[0])))
            # An episode's last step shows frames from before its last emulator frame (AtariPreprocessing stops before
            # reading the screen), so its RAM is ahead of next_obs: no ball there.
            position = ball_positions(game.env) if tracked and not steps[-1].done else None
            positions.append(position or (np.nan, np.nan))
            if on_step is not None:
                on_step()
        played.append(
            Steps(
                obs=np.stack([s.obs for s in steps]),
                action=np.array([s.action for s in steps], dtype=np.int64),
                next_obs=np.stack([s.next_obs[-1:] for s in steps]),
                done=np.array([s.done for s in steps]),
                reward=np.array([s.reward for s in steps], dtype=np.float32),
                episode=np.full(len(steps), e),
                ball=np.array(positions, dtype=np.float32) if ball else None,
            )
        )
    game.close()
    return played
