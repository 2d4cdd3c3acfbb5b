"""Behaviour policies that choose the recorded actions. Add one: a class with `act`, then a line in POLICIES.

Games come back from the vector environment in batches whose make-up depends on thread timing, so a
policy keeps per-game state (here, one RNG per game): what game i records then depends only on the seed.
"""

from __future__ import annotations

import numpy as np


class RandomPolicy:
    """Uniformly random actions, independent of the observation."""

    def __init__(self, num_actions: int, num_envs: int, seed: np.random.SeedSequence) -> None:
        self.num_actions = num_actions
        self.rngs = [np.random.default_rng(s) for s in seed.spawn(num_envs)]

    def act(self, obs: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        """obs: (B, context_frames, H, W) uint8 of games env_ids (B,) -> actions (B,) int64."""
        return np.array([self.rngs[i].integers(self.num_actions) for i in env_ids], dtype=np.int64)


POLICIES = {"random": RandomPolicy}


def make_policy(name: str, num_actions: int, num_envs: int, seed: np.random.SeedSequence) -> RandomPolicy:
    return POLICIES[name](num_actions, num_envs, seed)
