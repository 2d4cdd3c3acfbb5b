"""What an agent passes to the world model envs (env.py), checked as gymnasium's spaces take it: a TypeError or a
ValueError that names the argument and what it takes (docs/imagination.md, "Misuse").
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (True as an action or a count is a mistake, not 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_action(action: Any, n: int) -> int:
    """An action as gymnasium's Discrete(n) takes it: a Python or numpy int (a 0-d int array too) in [0, n). A float
    (1.7) or a bool is refused rather than cast: cast to int64, 1.7 would silently play action 1."""
    if isinstance(action, np.ndarray):
        if not np.issubdtype(action.dtype, np.integer):
            raise TypeError(f"action must be an int in [0, {n}), got an array of dtype {action.dtype}")
        if action.shape != ():
            raise ValueError(
                f"action must be one int in [0, {n}) (a 0-d array at most), got an array of shape "
                f"{action.shape}; the vector env takes one action per game"
            )
        action = action[()]
    if not is_int(action):
        raise TypeError(f"action must be an int in [0, {n}), got {action!r} ({type(action).__name__})")
    if not 0 <= action < n:
        raise ValueError(f"action must be in [0, {n}) (the action space Discrete({n})), got {action}")
    return int(action)


def check_actions(actions: Any, n: int, num_envs: int) -> np.ndarray:
    """The vector env's actions as its MultiDiscrete space takes them: (num_envs,) ints in [0, n), an int array or a
    list of ints. Floats, bools and strings are refused rather than cast, as a wrong shape is rather than reshaped."""
    actions = np.asarray(actions)
    if not np.issubdtype(actions.dtype, np.integer):
        raise TypeError(f"actions must be ints in [0, {n}), one per game ({num_envs},), got dtype {actions.dtype}")
    if actions.shape != (num_envs,):
        raise ValueError(f"actions must have shape ({num_envs},) (one action per game), got {actions.shape}")
    bad = np.flatnonzero((actions < 0) | (actions >= n))
    if len(bad):
        raise ValueError(
            f"actions must be in [0, {n}) (the single action space Discrete({n})), got "
            f"{actions[bad].tolist()} for games {bad.tolist()}"
        )
    return actions.astype(np.int64, copy=False)


def check_frames(frames: Any, shape: tuple[int, ...], num_envs: int | None = None) -> np.ndarray:
    """reset_to's frames: one (T, H, W) uint8 frame stack, or for a vector env (num_envs, T, H, W) one per game.
    Checked here because a wrong count of stacks would otherwise fail deep in torch's indexing."""
    frames = np.asarray(frames)
    dims = ", ".join(map(str, shape))
    expected = f"({dims}) uint8"
    if num_envs is not None:
        expected += f" (every game alike) or ({num_envs}, {dims}) uint8 (one per game)"
    if frames.dtype != np.uint8 or frames.shape not in (shape, (num_envs, *shape)):
        raise ValueError(f"frames must be {expected}, got {frames.shape} {frames.dtype}")
    return frames


def check_options(options: Any, known: tuple[str, ...]) -> dict[str, Any]:
    """reset's options: a dict of the keys the env knows. An unknown key (a typo of reset_mask) is refused: ignored,
    it would silently restart every game."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = f"only {', '.join(map(repr, known))}" if known else "none"
        raise ValueError(f"options has unknown keys {unknown}: this env's reset takes {takes}")
    return options


def check_reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """options["reset_mask"] as gymnasium's SyncVectorEnv takes it: a (num_envs,) bool numpy array with a True."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(
            f"options['reset_mask'] must be a numpy array of shape ({num_envs},) and dtype bool, "
            f"got {type(mask).__name__}"
        )
    if mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must have shape ({num_envs},) (one flag per game), got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"options['reset_mask'] must have dtype bool, got {mask.dtype}")
    if not mask.any():
        raise ValueError(f"options['reset_mask'] must mark at least one game to restart (a True), got {mask}")
    return mask
