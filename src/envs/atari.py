"""Atari environments with the standard agent preprocessing, built from gymnasium + ale-py.

Preprocessing follows Machado et al. (2018): frame skip 4 with max-pooling of the last two emulator
frames, grayscale, 84x84 (OpenCV INTER_AREA), up to 30 no-op actions at reset; the last `context_frames`
frames are stacked oldest first, zero-padded at the start of an episode. Two implementations give the
same frames (tests/test_atari.py): ale-py's native vector environment, which records datasets because
it steps many games in C++ threads, and gymnasium's AtariPreprocessing + FrameStackObservation, one game
per Python object, for evaluation and as the reference.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass
from functools import cache

import gymnasium as gym

from src.utils.errors import UserError

MAX_ACTIONS = 18  # the full ALE action set
MAX_FRAME_SKIP = 64
MAX_NOOP = 10_000
MAX_EPISODE_STEPS = 10_000_000  # x MAX_FRAME_SKIP stays below 2**31 emulator frames (ALE's C int)
MAX_SCREEN_SIZE = 1024
MAX_CONTEXT_FRAMES = 64


@dataclass(frozen=True)
class EnvSettings:
    """Everything that decides what a recorded frame looks like; saved in the dataset manifest."""

    game: str  # canonical ALE name as in the env id, e.g. "Pong", "MsPacman"
    frame_skip: int = 4
    noop_max: int = 30
    repeat_action_probability: float = 0.0  # sticky actions; 0 keeps the next frame a function of frames + action
    max_episode_steps: int = 27_000  # truncate after this many steps' worth of emulator frames (108k, the usual cap)
    screen_size: int = 84
    context_frames: int = 4
    full_action_space: bool = False
    terminal_on_life_loss: bool = False

    @property
    def env_id(self) -> str:
        return f"ALE/{self.game}-v5"

    @property
    def max_frames(self) -> int:
        """Emulator frames per episode (no-ops included) after which ALE truncates it, in both implementations."""
        return self.max_episode_steps * self.frame_skip

    def to_dict(self) -> dict:
        return {"env_id": self.env_id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> EnvSettings:
        return cls(**{k: v for k, v in d.items() if k != "env_id"})

    def check(self) -> None:
        """Raise UserError naming the first setting that is out of range. The upper bounds keep what the
        emulator is given inside its C ints (max_frames) and what a shard allocates per row reasonable."""
        ranges = (
            ("frame_skip", 1, MAX_FRAME_SKIP),
            ("noop_max", 0, MAX_NOOP),
            ("max_episode_steps", 1, MAX_EPISODE_STEPS),
            ("screen_size", 1, MAX_SCREEN_SIZE),
            ("context_frames", 1, MAX_CONTEXT_FRAMES),
        )
        for name, low, high in ranges:
            value = getattr(self, name)
            if not low <= value <= high:
                raise UserError(
                    f"{name} must be in [{low}, {high}], got {value}"
                    if value >= low
                    else f"{name} must be >= {low}, got {value}"
                )
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise UserError(f"repeat_action_probability must be in [0, 1], got {self.repeat_action_probability}")


GAME_NAME = re.compile(r"[A-Za-z0-9]{1,64}")  # a canonical ALE name: run folders and env ids are built from it
SETTING_TYPES = {
    "game": str,
    "frame_skip": int,
    "noop_max": int,
    "repeat_action_probability": float,
    "max_episode_steps": int,
    "screen_size": int,
    "context_frames": int,
    "full_action_space": bool,
    "terminal_on_life_loss": bool,
}


def settings_problem(d: object, prefix: str) -> str | None:
    """What is wrong with EnvSettings as a dict read from a file (a manifest's `env`, a checkpoint's `env_settings`,
    named `prefix` in the message), or None when EnvSettings.from_dict(d) is safe to build and use: exactly the known
    settings (env_id aside), each of its JSON type (True is no int), the game a plain ALE name, and check()'s ranges."""
    if not isinstance(d, dict):
        return f"{prefix} must be a mapping, got {type(d).__name__}"
    unknown = sorted(set(d) - set(SETTING_TYPES) - {"env_id"}, key=str)
    if unknown:
        return f"{prefix} has a setting this version does not know ({str(repr(unknown[0]))[:80]})"
    for key, kind in SETTING_TYPES.items():
        value = d.get(key)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            return f"{prefix}.{key} must be a {kind.__name__}, got {str(repr(value)).replace(chr(10), ' ')[:80]}"
    if not GAME_NAME.fullmatch(d["game"]):
        return f"{prefix}.game must be an ALE game name (letters and digits, e.g. Pong), got {d['game']!r:.80}"
    try:
        EnvSettings.from_dict(d).check()
    except UserError as e:
        return f"{prefix}.{e}"
    return None


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
    raise UserError(
        f"unknown game '{name}'.{hint} (python -m src.dataset.generate_dataset --list_games shows all {len(games)})"
    )


def make_env(settings: EnvSettings) -> gym.Env:
    """One environment whose observations are (context_frames, screen_size, screen_size) uint8."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    _register()
    env = gym.make(
        settings.env_id,
        frameskip=1,  # AtariPreprocessing skips frames itself (and max-pools the last two)
        obs_type="grayscale",  # AtariPreprocessing reads the screen itself; the unused obs is cheaper
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        max_num_frames_per_episode=settings.max_frames,
        disable_env_checker=True,
    )
    env = AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        terminal_on_life_loss=settings.terminal_on_life_loss,
    )
    return FrameStackObservation(env, settings.context_frames, padding_type="zero")


def make_vector_env(
    settings: EnvSettings, num_envs: int, batch_size: int = 0, num_threads: int | None = None
) -> gym.vector.VectorEnv:
    """`num_envs` games stepped in C++ threads; observations (batch, context_frames, H, W) uint8.

    batch_size 0 steps all games together. A smaller batch makes it asynchronous: `recv` returns the
    first `batch_size` games to finish (their ids in info["env_id"]) while the others keep running, and
    a game's first appearance may be its reset. Autoreset is NextStep (gymnasium's default): the step
    after a `done` returns the new episode's first observation and ignores its action.
    """
    from ale_py.vector_env import AtariVectorEnv

    _register()
    return AtariVectorEnv(
        game=gym.spec(settings.env_id).kwargs["game"],  # the ROM id, e.g. "ms_pacman"
        num_envs=num_envs,
        batch_size=batch_size,
        # One thread per core: measured ~35% faster than ale-py's own default (0) on 2 cores.
        num_threads=num_threads or available_cores(),
        max_num_frames_per_episode=settings.max_frames,
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
        img_height=settings.screen_size,
        img_width=settings.screen_size,
        grayscale=True,
        stack_num=settings.context_frames,
        frameskip=settings.frame_skip,
        maxpool=True,
        noop_max=settings.noop_max,
        episodic_life=settings.terminal_on_life_loss,
        reward_clipping=False,  # record the game's own score change
        use_fire_reset=False,  # as AtariPreprocessing: an episode starts with no-ops only
        autoreset_mode="NextStep",
    )


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def action_meanings(settings: EnvSettings) -> list[str]:
    env = make_env(settings)
    meanings = list(env.unwrapped.get_action_meanings())
    env.close()
    return meanings
