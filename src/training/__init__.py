"""Training a world model, one room per concern (`python -m src.train` is the entry point):

loop.py       train(cfg): the set-up, top to bottom, then the loop's phases: step, log, validate and save
setup.py      what the loop needs before its first step, each made by a named function
objective.py  what a step computes: the unroll and its loss terms, pushforward, context noise, the event head's loss
step.py       one optimizer step (the objective's loss, backward, clipping), validation, rollout videos
data.py       the dataset and its split, what a checkpoint recognises them by, the palette and sigma statistics
batches.py    the training batch stream (memory maps or the device), event batches, the fixed validation batches
schedule.py   the budget (steps or minutes) and what follows it: learning rate, curriculum stage
fast_path.py  the device's fast path (precision, memory format, compile, pinned memory) and the finite-step guard
optimizer.py  the optimizer, and its state across a resume
outputs.py    the run folder and what is written into it: CSVs, strips, videos, checkpoints, the logger
resume.py     continuing a run: its config, what may not change
"""
