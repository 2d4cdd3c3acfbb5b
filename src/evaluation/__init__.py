"""Evaluating a checkpoint, beside its command (`python -m src.eval`, which holds the rollouts and their scores):

config.py   EvalConfig: every setting, its default, valid values and help; the command line is built from it
cases.py    the open-loop test cases (from played episodes or a recorded dataset) and what is scored on them
subject.py  the checkpoint under evaluation: read, checked against the config, its model built, its settings resolved
ball.py     the ball in the rollouts: shown or not where the real game has it, and how far off (Pong, Breakout)
events.py   the rewards and ends: the event head's rates per step ahead, and the imagined returns against the real ones
outputs.py  what an evaluation writes and logs: summary.json, metrics.csv, plots, videos, W&B, the closing report
"""
