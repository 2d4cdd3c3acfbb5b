"""Atari environments with the standard agent preprocessing, built from gymnasium + ale-py.

Preprocessing follows Machado et al. (2018) as gymnasium's AtariPreprocessing implements it: frame skip 4
with max-pooling of the last two emulator frames, grayscale, 84x84 (cv2 INTER_AREA), up to 30 no-op
actions at reset; then the last `context_frames` preprocessed frames are stacked, oldest first.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from functools import cache

import gymnasium as gym

from src.utils.errors import UserError


@dataclass(frozen=True)
class EnvSettings:
    """Everything that decides what a recorded frame looks like; saved in the dataset manifest."""

    game: str  # canonical ALE name as in the env id, e.g. "Pong", "MsPacman"
    frame_skip: int = 4
    noop_max: int = 30
    repeat_action_probability: float = 0.0  # sticky actions; 0 keeps the next frame a function of frames + action
    max_episode_steps: int = 27_000  # agent steps (= 108k emulator frames, the usual cap)
    screen_size: int = 84
    context_frames: int = 4
    grayscale: bool = True
    full_action_space: bool = False
    terminal_on_life_loss: bool = False

    @property
    def env_id(self) -> str:
        return f"ALE/{self.game}-v5"

    def to_dict(self) -> dict:
        return {"env_id": self.env_id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> EnvSettings:
        return cls(**{k: v for k, v in d.items() if k != "env_id"})

    def check(self) -> None:
        """Raise UserError naming the first setting that is out of range."""
        if self.frame_skip < 1:
            raise UserError(f"frame_skip must be >= 1, got {self.frame_skip}")
        if self.noop_max < 0:
            raise UserError(f"noop_max must be >= 0, got {self.noop_max}")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise UserError(f"repeat_action_probability must be in [0, 1], got {self.repeat_action_probability}")
        if self.max_episode_steps < 1:
            raise UserError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")


def _register() -> None:
    import ale_py

    gym.register_envs(ale_py)
    # The emulator prints a banner on every env creation; keep the console for our own output.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


@cache
def available_games() -> dict[str, str]:
    """Normalised key ('mspacman') -> canonical ALE name ('MsPacman') for every registered v5 game."""
    _register()
    names = [env_id[len("ALE/") : -len("-v5")] for env_id in gym.registry if re.fullmatch(r"ALE/\w+-v5", env_id)]
    return {_normalise(name): name for name in sorted(names)}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_game(name: str) -> str:
    """'Pong', 'pong', 'ALE/Pong-v5', 'PongNoFrameskip-v4', 'ms_pacman' -> canonical name, or UserError."""
    stem = re.sub(r"^ALE/", "", name.strip())
    stem = re.sub(r"(NoFrameskip)?(-v\d+)?$", "", stem)
    games = available_games()
    if (key := _normalise(stem)) in games:
        return games[key]
    close = difflib.get_close_matches(key, list(games), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(games[c] for c in close)}?" if close else ""
    raise UserError(f"unknown game '{name}'.{hint} (--list_games shows all {len(games)})")


def make_env(settings: EnvSettings) -> gym.Env:
    """One environment whose observations are (context_frames, screen_size, screen_size) uint8."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit

    _register()
    env = gym.make(
        settings.env_id,
        frameskip=1,  # AtariPreprocessing skips frames itself (and max-pools the last two)
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        max_num_frames_per_episode=None,  # episode length is capped below, in agent steps
        disable_env_checker=True,
    )
    env = AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        terminal_on_life_loss=settings.terminal_on_life_loss,
        grayscale_obs=settings.grayscale,
    )
    env = TimeLimit(env, max_episode_steps=settings.max_episode_steps)
    return FrameStackObservation(env, settings.context_frames)  # pads a new episode with its first frame


def action_meanings(env: gym.Env) -> list[str]:
    return list(env.unwrapped.get_action_meanings())
