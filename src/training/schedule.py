"""The training budget and what follows it: the learning rate and the unroll length at each step.

The budget is train.max_steps, or train.max_minutes of wall clock if that runs out first; both schedules
follow the fraction of it that is spent, so a run on the clock decays its learning rate in time.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass

from src.config import TrainConfig
from src.utils import distributed
from src.utils.distributed import Ranks

CLOCK_EVERY = 20  # under torchrun with train.max_minutes, the processes agree on the clock every this many steps


class RunClock:
    """The run's wall clock, from its start (a resumed run's goes on from its checkpoint's elapsed_s).

    Under torchrun with train.max_minutes, the learning rate and the stop follow the clock, so every process must read
    the same time: they agree on the latest (one all-reduce of one number) every CLOCK_EVERY steps and read that
    between, so that no step waits on a collective and a host read. The stop comes at most CLOCK_EVERY steps late.
    """

    def __init__(self, elapsed_s: float, ranks: Ranks = Ranks(), agree: bool = True) -> None:
        self.start, self.ranks, self.agree = time.perf_counter() - elapsed_s, ranks, agree and ranks.world > 1
        self.elapsed = elapsed_s

    def tick(self, step: int, agree: bool = True) -> float:
        """The elapsed seconds after optimizer step `step`: this process's own, or, when processes must agree, the
        latest of theirs as of the last multiple of CLOCK_EVERY."""
        now = time.perf_counter() - self.start
        if not (agree and self.agree):
            return now
        if step % CLOCK_EVERY == 0:
            self.elapsed = distributed.latest(now, self.ranks)
        return self.elapsed


def budget_used(step: int, elapsed_s: float, t: TrainConfig) -> float:
    """The fraction of the training budget spent: of train.max_steps, or of train.max_minutes if that runs out first."""
    used = step / t.max_steps
    if t.max_minutes is not None:
        used = max(used, elapsed_s / (60 * t.max_minutes))
    return min(used, 1.0)


def lr_factor(step: int, used: float, t: TrainConfig) -> float:
    """Multiplier of optimizer.lr at optimizer step `step` (0-based) with `used` of the budget spent:
    a linear warm-up over train.warmup_steps times a cosine from 1 to min_lr_ratio over the budget."""
    warmup = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else 1.0
    return warmup * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * used)))


def pushforward_share(used: float, t: TrainConfig) -> float:
    """The share of samples trained on a context of the model's own predictions at `used` of the budget: 0 until
    train.pushforward_start, then rising linearly to train.pushforward at the end of the budget."""
    if t.pushforward <= 0 or used < t.pushforward_start:
        return 0.0
    return t.pushforward * (used - t.pushforward_start) / (1 - t.pushforward_start)


@dataclass(frozen=True)
class Stage:
    """Where the curriculum stands: what a training step unrolls and how much of it pushforward moves on."""

    rollout_steps: int = 1  # the unroll length (train.rollout_steps)
    pushforward: float = 0.0  # the share of samples whose context is the model's own (train.pushforward)

    @classmethod
    def at(cls, used: float, t: TrainConfig) -> Stage:
        """The stage at `used` of the budget."""
        return cls(rollout_length(used, t), pushforward_share(used, t))


def rollout_length(used: float, t: TrainConfig) -> int:
    """The unroll length of the curriculum stage at `used` of the budget (train.rollout_steps, rollout_stage_ends)."""
    return t.rollout_steps[bisect.bisect_right(t.rollout_stage_ends, used)]
