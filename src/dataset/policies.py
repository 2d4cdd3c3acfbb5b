"""Behaviour policies that choose the recorded actions. Add one: a class with `act`, then a line in POLICIES."""

from __future__ import annotations

import numpy as np


class RandomPolicy:
    """Uniformly random actions, independent of the observation."""

    def __init__(self, num_actions: int, rng: np.random.Generator) -> None:
        self.num_actions = num_actions
        self.rng = rng

    def act(self, obs: np.ndarray) -> int:
        """obs: (context_frames, H, W) uint8 -> an action index."""
        return int(self.rng.integers(self.num_actions))


POLICIES = {"random": RandomPolicy}


def make_policy(name: str, num_actions: int, rng: np.random.Generator) -> RandomPolicy:
    return POLICIES[name](num_actions, rng)
