"""Gymnasium environments inside the world model: an agent acts, the model imagines the next frame, the reward's sign
and whether the episode ends (docs/imagination.md).

    env = WorldModelEnv.from_checkpoint("runs/<run>", horizon=500)            # one game
    obs, info = env.reset(seed=0)                                              # (T, H, W) uint8, oldest first
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    envs = WorldModelVectorEnv.from_checkpoint("runs/<run>", num_envs=64)     # 64 games, one forward pass a step
    obs, infos = envs.reset(seed=0)                                            # (64, T, H, W) uint8

reward is the event head's most likely reward sign (-1.0, 0.0 or 1.0); terminated is its end probability above
`end_threshold`; truncated is `horizon` steps since the start. Starts are real frames: a random window of `dataset`,
else a fresh episode of the real game (`env_settings`) played a few random steps in; `reset_to(frames)` starts from
frames of your own (a planner's current real frames).

Misuse is refused as gymnasium does (docs/imagination.md, "Misuse"): step or render before a reset raise
gymnasium.error.ResetNeeded; an action, seed, option or reset_mask of the wrong type a TypeError, of the wrong shape
or value a ValueError (a bad seed value gymnasium's own error), frames of the wrong shape or dtype a ValueError, each
naming the argument and what it takes (checks.py). The checks are on the Python/numpy values, before any tensor is
built or any game changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import nn

from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.imagination.checks import check_action, check_actions, check_frames, check_options, check_reset_mask, is_int
from src.imagination.games import CheckpointWorld, ImaginedGames, Starts
from src.models.diffusion import seed_sampling
from src.models.rollout import Feedback
from src.utils.errors import UserError

AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)
UINT8 = Feedback("uint8")  # the feedback of a model given without its checkpoint
RESET_MASK = "reset_mask"  # the vector env's only reset option (gymnasium's name for it)
# gymnasium's OrderEnforcing wrapper (gym.make adds it) says this; these envs are also built without gym.make
STEP_BEFORE_RESET = "Cannot call env.step() before calling env.reset() (or env.reset_to(frames))"
RENDER_BEFORE_RESET = (
    "Cannot call `env.render()` before calling `env.reset()` (or `env.reset_to(frames)`): there is no "
    "frame to render yet"
)


class _Imagined:
    """What both environments share: the games, where starts come from, the step counts and the end rules."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 15}

    def _setup(
        self,
        model: nn.Module,
        num_actions: int,
        num_envs: int,
        env_settings: EnvSettings | None,
        dataset: ShardedDataset | None,
        feedback: Feedback,
        action_meanings: list[str] | None,
        device: str | torch.device | None,
        horizon: int,
        end_threshold: float,
        render_mode: str | None,
    ) -> None:
        settings = dataset.manifest.env if dataset is not None else env_settings
        if settings is None:
            raise UserError(
                "a world model env needs env_settings= (starts from real resets of the game) or dataset= "
                "(starts from recorded frames)"
            )
        if env_settings is not None and dataset is not None:
            mine, theirs = (
                (env_settings.context_frames, env_settings.screen_size),
                (settings.context_frames, settings.screen_size),
            )
            if mine != theirs:
                raise UserError(
                    f"the dataset's frames (context_frames, screen_size) {theirs} differ from the model's {mine}"
                )
        if not is_int(num_actions) or num_actions < 1:
            raise UserError(f"num_actions must be an int >= 1, got {num_actions!r}")
        if dataset is not None and dataset.num_actions != num_actions:
            raise UserError(f"the dataset's game has {dataset.num_actions} actions, the model {num_actions}")
        if not is_int(num_envs) or num_envs < 1:
            raise UserError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if not is_int(horizon) or horizon < 1:
            raise UserError(f"horizon must be an int >= 1 step, got {horizon!r}")
        if not 0.0 <= end_threshold <= 1.0:
            raise UserError(f"end_threshold must be a probability in [0, 1], got {end_threshold}")
        if render_mode not in (None, "rgb_array"):
            raise UserError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        device = torch.device(device) if device is not None else next(model.parameters()).device
        shape = (settings.context_frames, settings.screen_size, settings.screen_size)
        self.games = ImaginedGames(model, num_actions, num_envs, shape, feedback, device)
        self.starts = Starts(dataset, settings)
        self.env_settings = settings  # the game's preprocessing: what its frames look like, what real resets play
        self.action_meanings = list(action_meanings) if action_meanings is not None else None
        self.horizon, self.end_threshold, self.render_mode = horizon, end_threshold, render_mode
        self.steps = np.zeros(num_envs, dtype=np.int64)  # (B,) since each game's start
        self.started = np.zeros(
            num_envs, dtype=bool
        )  # (B,) started by a reset: step before it refused, as gymnasium does
        self.frame_space = spaces.Box(0, 255, shape, np.uint8)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None, **kwargs: Any):  # noqa: ANN206 (an instance of cls)
        """The env of a checkpoint file or a run folder (its best.pt, else last.pt): its model, feedback, actions and
        game (real resets start the games unless dataset= is given); kwargs: the constructor's other arguments.
        device None: a GPU if there is one, else the CPU."""
        return cls(**CheckpointWorld.load(path, device).kwargs(), **kwargs)

    def _start(self, rows: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Start games `rows` from real starts, game i drawing from rngs[i]."""
        frames = np.stack([self.starts.draw(rngs[i], self.games.num_actions) for i in rows])  # (n, T, H, W)
        self._start_from(rows, frames)

    def _start_from(self, rows: np.ndarray, frames: np.ndarray) -> None:
        self.games.set(rows, frames)
        self.steps[rows] = 0
        self.started[rows] = True

    def _check_started(self, message: str) -> None:
        """ResetNeeded unless every game has been started: before it, the context is black frames, no real game."""
        if not self.started.all():
            never = np.flatnonzero(~self.started)
            detail = (
                ""
                if len(never) == len(self.started)
                else (
                    f": games {never.tolist()} were never started (a reset with options['reset_mask'] starts only "
                    "those it marks)"
                )
            )
            raise ResetNeeded(message + detail)

    def _advance(self, actions: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """One imagined step of games `rows` (all when None): (rewards, end probabilities, terminated, truncated),
        (n,)."""
        rewards, end_probs = self.games.step(actions, rows)
        self.steps[slice(None) if rows is None else rows] += 1
        steps = self.steps if rows is None else self.steps[rows]
        return rewards, end_probs, end_probs > self.end_threshold, steps >= self.horizon

    def get_action_meanings(self) -> list[str] | None:
        return self.action_meanings

    def _close_starts(self) -> None:
        self.starts.close()


def _rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey -> (H, W, 3) uint8."""
    return np.repeat(frame[:, :, None], 3, axis=2)


class WorldModelEnv(_Imagined, gym.Env):
    """One game inside the world model. observation: the frame stack (T, H, W) uint8, oldest first; action: one of
    the game's num_actions. The model (it must have an event head) is put in eval mode and moved to `device` (None:
    where its parameters are)."""

    def __init__(
        self,
        model: nn.Module,
        num_actions: int,
        *,
        env_settings: EnvSettings | None = None,
        dataset: ShardedDataset | None = None,
        feedback: Feedback = UINT8,
        action_meanings: list[str] | None = None,
        device: str | torch.device | None = None,
        horizon: int = 1000,
        end_threshold: float = 0.5,
        render_mode: str | None = None,
    ) -> None:
        self._setup(
            model,
            num_actions,
            1,
            env_settings,
            dataset,
            feedback,
            action_meanings,
            device,
            horizon,
            end_threshold,
            render_mode,
        )
        self.observation_space = self.frame_space
        self.action_space = spaces.Discrete(num_actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """seed: a Python int >= 0 (gymnasium's rule: else gymnasium.error.Error), or None (the generator goes on).
        No options are taken (a SyncVectorEnv of these envs passes {} once it took its reset_mask)."""
        check_options(options, ())
        super().reset(seed=seed)
        if seed is not None:
            seed_sampling(self.games.model, seed)  # a diffusion model's samples: the same game for the same seed
        self._start(np.zeros(1, dtype=np.int64), [self.np_random])
        return self.games.observations()[0], {}

    def reset_to(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        """Start from real frames of your own: (T, H, W) uint8."""
        self._start_from(np.zeros(1, dtype=np.int64), check_frames(frames, self.frame_space.shape)[None])
        return self.games.observations()[0], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._check_started(STEP_BEFORE_RESET)
        action = check_action(action, self.games.num_actions)
        rewards, end_probs, terminated, truncated = self._advance(np.array([action]), None)
        info = {"end_probability": float(end_probs[0]), "steps": int(self.steps[0])}
        return self.games.observations()[0], float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        """The last frame as (H, W, 3) uint8 (render_mode "rgb_array"), else None."""
        if self.render_mode != "rgb_array":
            return None
        self._check_started(RENDER_BEFORE_RESET)
        return _rgb(self.games.observations()[0, -1])

    def close(self) -> None:
        self._close_starts()


class WorldModelVectorEnv(_Imagined, VectorEnv):
    """`num_envs` games inside the world model, stepped by one forward pass of the model and one of its event head.
    observation: (B, T, H, W) uint8; action: (B,) ints. reset(seed=s) seeds game i with s + i, as gymnasium's
    SyncVectorEnv does: game i then starts where WorldModelEnv.reset(seed=s + i) does.

    autoreset_mode "NextStep" (gymnasium's default): the step after a game's terminated or truncated starts it anew
    from a real start and ignores its action (reward 0, both flags false, info["_end_probability"] false for it).
    "Disabled": games are never restarted by step (a planner's lookahead); restart them with
    reset(options={"reset_mask": mask}) or reset_to."""

    def __init__(
        self,
        model: nn.Module,
        num_actions: int,
        num_envs: int = 1,
        *,
        env_settings: EnvSettings | None = None,
        dataset: ShardedDataset | None = None,
        feedback: Feedback = UINT8,
        action_meanings: list[str] | None = None,
        device: str | torch.device | None = None,
        horizon: int = 1000,
        end_threshold: float = 0.5,
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    ) -> None:
        self._setup(
            model,
            num_actions,
            num_envs,
            env_settings,
            dataset,
            feedback,
            action_meanings,
            device,
            horizon,
            end_threshold,
            render_mode,
        )
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in AUTORESET_MODES:
            raise UserError(
                f"autoreset_mode must be one of {', '.join(m.value for m in AUTORESET_MODES)}, got {autoreset_mode!r}"
            )
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.num_envs = num_envs
        self.single_observation_space = self.frame_space
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.rngs = [seeding.np_random()[0] for _ in range(num_envs)]  # game i's starts
        self.restart = np.zeros(num_envs, dtype=bool)  # (B,) games that the next step starts anew (NextStep)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """seed: s (game i gets s + i), a list of num_envs seeds (None for a game: its generator goes on), or None
        (the games' generators go on); each a Python int >= 0 (gymnasium's rule: else gymnasium.error.Error).
        options["reset_mask"]: (B,) bool numpy array, restart only those games (at least one), reseeding only them,
        as gymnasium's SyncVectorEnv does. Everything is checked before any game or generator changes."""
        options = check_options(options, (RESET_MASK,))
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):  # a bool too, as gymnasium takes it; a numpy int not, as its seeding refuses one
            seeds = [seed + i for i in range(self.num_envs)]
        elif isinstance(seed, (list, tuple)):
            seeds = list(seed)
        else:
            raise TypeError(
                f"seed must be a Python int, a list of {self.num_envs} ints (one per game) or None, "
                f"got {type(seed).__name__}"
            )
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed as a list must have {self.num_envs} seeds (one per game), got {len(seeds)}")
        mask = check_reset_mask(options[RESET_MASK], self.num_envs) if RESET_MASK in options else None
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        # every seed checked (gymnasium's seeding raises for a bad one), only the restarted games' generators replaced
        rngs = {i: seeding.np_random(s)[0] for i, s in enumerate(seeds) if s is not None}
        super().reset(seed=seed if isinstance(seed, int) else None)
        self.rngs = [rngs[i] if i in rngs and (mask is None or mask[i]) else rng for i, rng in enumerate(self.rngs)]
        if seeds[0] is not None:
            seed_sampling(self.games.model, seeds[0])  # a diffusion model's samples: the same games for the same seed
        self._start(rows, self.rngs)
        self.restart[rows] = False
        return self.games.observations(), {}

    def reset_to(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        """Start every game from real frames of your own: (T, H, W) uint8 for all games alike, or (B, T, H, W)."""
        frames = check_frames(frames, self.frame_space.shape, self.num_envs)
        frames = np.broadcast_to(frames, (self.num_envs, *frames.shape)) if frames.ndim == 3 else frames
        self._start_from(np.arange(self.num_envs), np.ascontiguousarray(frames))
        self.restart[:] = False
        return self.games.observations(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self._check_started(STEP_BEFORE_RESET)
        actions = check_actions(actions, self.games.num_actions, self.num_envs)
        stepped = np.flatnonzero(~self.restart)
        rewards, end_probs = np.zeros(self.num_envs), np.zeros(self.num_envs)
        terminated, truncated = np.zeros(self.num_envs, dtype=bool), np.zeros(self.num_envs, dtype=bool)
        if len(stepped):
            out = self._advance(actions[stepped], stepped)
            rewards[stepped], end_probs[stepped], terminated[stepped], truncated[stepped] = out
        restarted = np.flatnonzero(self.restart)
        if len(restarted):
            self._start(restarted, self.rngs)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self.restart = terminated | truncated
        info = {"end_probability": end_probs, "_end_probability": np.isin(np.arange(self.num_envs), stepped)}
        return self.games.observations(), rewards, terminated, truncated, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each game's last frame as (H, W, 3) uint8 (render_mode "rgb_array"), else None."""
        if self.render_mode != "rgb_array":
            return None
        self._check_started(RENDER_BEFORE_RESET)
        return tuple(_rgb(frame) for frame in self.games.observations()[:, -1])

    def close_extras(self, **kwargs: Any) -> None:
        self._close_starts()
