"""The games: Atari environments with the agents' preprocessing (atari.py), behaviour policies (policies.py) and
one way to step a single game and keep what it did (game.py)."""
