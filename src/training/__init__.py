"""Training a world model, one room per concern (`python -m src.train` is the entry point):

loop.py       train(cfg): set-up, then the loop of steps, logging, validation and checkpoints
step.py       one optimizer step's forward and backward (a k-step unroll), validation, rollout videos
data.py       the dataset's split, the training batch stream, the fixed validation batches
schedule.py   the budget (steps or minutes) and what follows it: learning rate, unroll length
fast_path.py  the device's fast path (precision, memory format, compile, pinned memory) and the optimizer
outputs.py    the run folder and what is written into it: CSVs, strips, videos, checkpoints, the logger
resume.py     continuing a run: which checkpoint, which config, what may not change
"""
