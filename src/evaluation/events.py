"""The rewards and ends an evaluation scores: the event head's rates per step ahead of open-loop rollouts against the
real game, and the returns it imagines against the real ones.

    events = event_curves(model, event_cases(episodes, horizon=10), episodes, batch_size, device, feedback)
    fidelity = return_fidelity(imagined_rewards, windows.rewards)
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from src.evaluation.cases import EVENT_RATES, Windows
from src.models.events import EventCounts
from src.models.rollout import Feedback, imagine
from src.utils.frames import frames_to_float


def return_fidelity(imagined: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Returns over each rollout's steps, imagined (the expected reward signs p(+1) - p(-1), what an agent learning in
    the model takes) against real (the real rewards' signs), under the same actions from the same starts. imagined,
    real: (N, K)."""
    steps = imagined.shape[1]
    imagined, real = imagined.sum(1), np.sign(real).sum(1)
    diff = imagined - real
    both_vary = imagined.std() > 0 and real.std() > 0
    return {
        "rollouts": len(diff),
        "steps": steps,
        "real_mean": float(real.mean()),
        "real_std": float(real.std()),
        "imagined_mean": float(imagined.mean()),
        "imagined_std": float(imagined.std()),
        "difference_mean": float(diff.mean()),
        "difference_std": float(diff.std()),
        "difference_abs_mean": float(np.abs(diff).mean()),
        "correlation": float(np.corrcoef(imagined, real)[0, 1]) if both_vary else None,
    }


def event_curves(
    model: nn.Module,
    cases: tuple[Windows, np.ndarray, np.ndarray],
    episodes: int,
    batch_size: int,
    device: torch.device,
    feedback: Feedback,
    progress: bool = False,
) -> dict[str, Any]:
    """Per step ahead 1..horizon of open-loop rollouts against the real game: the reward sign accuracy on the steps
    with a real reward, the false-reward rate on those without, the end's precision and recall, and what they were
    counted on. `cases` are `event_cases` of `episodes` episodes: every reward and every end at every step ahead;
    `progress`: a bar on stderr, in rollouts."""
    windows, real_ends, valid = cases
    horizon = real_ends.shape[1]
    counts = [EventCounts() for _ in range(horizon)]
    model.eval()
    bar = tqdm(
        total=len(windows.actions),
        unit="rollout",
        desc="rewards and ends",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for start in range(0, len(windows.actions), batch_size):
        sl = slice(start, start + batch_size)
        context = frames_to_float(torch.from_numpy(windows.context[sl]).to(device))
        imagined = imagine(model, context, torch.from_numpy(windows.actions[sl]).to(device), feedback)
        rewards, ends = imagined.rewards.cpu(), imagined.end_probs.cpu() > 0.5  # (B, horizon), once per batch
        for h in range(horizon):
            keep = torch.from_numpy(valid[sl, h])
            counts[h].add(
                rewards[keep, h],
                ends[keep, h],
                torch.from_numpy(windows.rewards[sl, h])[keep],
                torch.from_numpy(real_ends[sl, h])[keep],
            )
        bar.update(len(rewards))
    bar.close()
    rates = [c.rates() for c in counts]
    curves = {
        key: [None if math.isnan(r[key]) else r[key] for r in rates] for key in EVENT_RATES
    }  # null: nothing to count
    return {
        "horizon": horizon,
        "episodes": episodes,
        "rollouts": len(windows.actions),
        **curves,
        "reward_steps": [int(c.reward_steps) for c in counts],
        "quiet_steps": [int(c.quiet_steps) for c in counts],
        "real_ends": [int(c.real_ends) for c in counts],
        "predicted_ends": [int(c.predicted_ends) for c in counts],
    }
