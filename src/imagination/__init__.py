"""Gymnasium environments inside the world model (docs/imagination.md): env.py has WorldModelEnv (one game) and
WorldModelVectorEnv (B games, one forward pass a step); games.py the stepping and the real starts they share;
checks.py the checks of what an agent passes them."""

from src.imagination.env import WorldModelEnv, WorldModelVectorEnv

__all__ = ["WorldModelEnv", "WorldModelVectorEnv"]
