"""What a step does besides the next frame: the sign of its reward and whether the episode ends there.

    head = EventHead(num_actions=6)
    reward_logits, end_logits = head(context, next_frame, actions)   # (B, 3) over REWARD_SIGNS, (B,)

A small network of its own beside the frame predictor (as DIAMOND's reward/end model is), so that its loss cannot
pull the frames' features: it sees the context, the next frame (the predicted one in training and in imagination,
so that it reads what the predictor draws) and the action. Agents that learn in imagination use the reward's sign
(-1, 0, +1), as DQN clips rewards; the raw value stays in the data.

Rewards and ends are rare (Pong with a random policy: a reward every ~40 steps, an end every ~850), so the final
layer starts at the data's rates (`prior`) and the losses weight the rare classes up (`event_loss` in
src/training/objective.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.utils.device import constant

REWARD_SIGNS = (-1.0, 0.0, 1.0)  # the reward head's classes, in this order
ZERO = 1  # the index of "no reward"


def reward_class(rewards: Tensor) -> Tensor:
    """Raw rewards (any shape) -> the index of their sign in REWARD_SIGNS (int64, same shape)."""
    return (torch.sign(rewards) + 1).long()


class EventHead(nn.Module):
    """(context (B, T, H, W), next frame (B, 1, H, W), action (B,)) -> (reward logits (B, 3), end logit (B,)).

    The T + 1 frames and the next frame's change from the last one are folded into 2x2-pixel patches, then three
    stride-2 convolutions (42 -> 21 -> 11 -> 6 pixels for 84x84 frames) and a fully connected layer that sees where
    things are (the score digits sit at fixed places) and the action's embedding. About 5% of unet_film's compute.
    """

    def __init__(
        self,
        num_actions: int,
        context_frames: int = 4,
        frame_size: int = 84,
        channels: tuple[int, ...] = (32, 64, 64),
        hidden: int = 256,
        action_dim: int = 32,
    ) -> None:
        super().__init__()
        self.context_frames = context_frames
        widths = [(2 * context_frames + 1) * 4, *channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        size = (frame_size + 1) // 2
        for _ in channels:
            size = (size + 1) // 2
        self.action = nn.Embedding(num_actions, action_dim)
        self.fc = nn.Linear(channels[-1] * size * size + action_dim, hidden)
        self.out = nn.Linear(hidden, len(REWARD_SIGNS) + 1)
        with torch.no_grad():
            self.out.weight.mul_(0.1)  # the outputs start near the prior's rates
        self.prior(np.array([0.01, 0.98, 0.01]), 0.001)  # until training sets the data's

    def prior(
        self,
        reward_rates: np.ndarray,
        end_rate: float,
        reward_shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
        end_shift: float = 0.0,
    ) -> None:
        """Start the outputs at the data's rates (reward_rates: (3,) over REWARD_SIGNS, summing to 1; end_rate in
        (0, 1)): an untrained head predicts no reward and no end, as the data mostly has, instead of a coin flip that
        would flood the first validations with false rewards (and end every imagined game at once). The shifts are
        the ones the loss adds to the logits (EventWeights in src/training/objective.py): the shifted logits start
        at the rates, so that a calibrated head learns as an uncalibrated one does (from the inflated rates down, it
        learned slower, measured)."""
        with torch.no_grad():
            rates = np.clip(np.asarray(reward_rates, dtype=np.float64), 1e-6, 1)
            end = min(max(end_rate, 1e-6), 1 - 1e-6)
            self.out.bias.copy_(
                torch.tensor(
                    [*(np.log(rates / rates[ZERO]) - np.asarray(reward_shift)), np.log(end / (1 - end)) - end_shift],
                    dtype=torch.float32,
                )
            )

    def forward(self, context: Tensor, next_frame: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """context: (B, T, H, W) float in [0, 1]; next_frame: (B, 1, H, W), as fed back; actions: (B,) int64."""
        frames = torch.cat([context, next_frame], dim=1)  # (B, T + 1, H, W)
        x = torch.cat([frames, frames[:, 1:] - frames[:, :-1]], dim=1)  # (B, 2T + 1, H, W): the frames and what moved
        x = F.pixel_unshuffle(x, 2)  # (B, (2T + 1) * 4, H/2, W/2)
        for conv in self.convs:
            x = F.silu(conv(x))  # (B, C_i, h_i, w_i)
        x = F.silu(self.fc(torch.cat([x.flatten(1), self.action(actions)], dim=1)))  # (B, hidden)
        out = self.out(x)  # (B, 4)
        return out[:, :3], out[:, 3]


def expected_signs(reward_logits: Tensor) -> Tensor:
    """The expected reward sign p(+1) - p(-1), (B,): what an agent's returns take (agent.reward=expected)."""
    return torch.softmax(reward_logits.float(), -1) @ constant(REWARD_SIGNS, reward_logits.device, torch.float32)


def predicted_events(reward_logits: Tensor, end_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The most likely reward sign (float, -1, 0 or +1) and the end's probability, each (B,)."""
    signs = constant(REWARD_SIGNS, reward_logits.device, torch.float32)
    return signs[reward_logits.argmax(-1)], torch.sigmoid(end_logits.float())


def has_events(model: nn.Module) -> bool:
    """Whether the model has an event head (model.events); checkpoints from before it predict frames only."""
    return getattr(model, "events", None) is not None


@dataclass
class EventCounts:
    """Predicted against real events, tallied over steps, and the rates they give (validation and evaluation)."""

    reward_steps: float = 0  # steps with a non-zero real reward
    reward_right: float = 0  # ... whose sign was predicted
    quiet_steps: float = 0  # steps without a reward
    false_rewards: float = 0  # ... where one was predicted
    real_ends: float = 0  # steps where the episode ends
    predicted_ends: float = 0  # steps where the head says it ends
    true_ends: float = 0  # both
    expected_steps: float = 0  # steps with the expected sign p(+1) - p(-1) given, and its sums with the real sign:
    expected_sum: float = 0
    expected_sq: float = 0
    real_sum: float = 0
    real_sq: float = 0
    product_sum: float = 0

    def add(
        self, rewards: Tensor, ends: Tensor, real_rewards: Tensor, real_ends: Tensor, expected: Tensor | None = None
    ) -> None:
        """rewards: predicted signs; ends: predicted ends (bool); real_rewards: raw; real_ends: bool; expected: the
        expected signs (what an agent learns from), if given; all one shape."""
        real_signs, real_ends, ends = torch.sign(real_rewards.float()), real_ends.bool(), ends.bool()
        if expected is not None:
            e = expected.double()
            r = real_signs.double()
            self.expected_steps += e.numel()
            self.expected_sum += float(e.sum())
            self.expected_sq += float((e * e).sum())
            self.real_sum += float(r.sum())
            self.real_sq += float((r * r).sum())
            self.product_sum += float((e * r).sum())
        scored = real_signs != 0
        self.reward_steps += int(scored.sum())
        self.reward_right += int((scored & (rewards.float() == real_signs)).sum())
        self.quiet_steps += int((~scored).sum())
        self.false_rewards += int((~scored & (rewards != 0)).sum())
        self.real_ends += int(real_ends.sum())
        self.predicted_ends += int(ends.sum())
        self.true_ends += int((ends & real_ends).sum())

    def as_tuple(self) -> tuple[float, ...]:
        return (
            self.reward_steps,
            self.reward_right,
            self.quiet_steps,
            self.false_rewards,
            self.real_ends,
            self.predicted_ends,
            self.true_ends,
            self.expected_steps,
            self.expected_sum,
            self.expected_sq,
            self.real_sum,
            self.real_sq,
            self.product_sum,
        )

    def rates(self) -> dict[str, float]:
        """reward_sign_accuracy (on the steps with a real reward), false_reward_rate (on those without), end_precision
        and end_recall; with expected signs, reward_expected_bias (their mean minus the real signs' mean: 0 for a
        calibrated head) and reward_expected_corr (their correlation with the real signs); NaN where there was nothing
        to count."""
        rate = lambda a, b: a / b if b else math.nan  # noqa: E731
        n = self.expected_steps
        bias, corr = math.nan, math.nan
        if n:
            bias = (self.expected_sum - self.real_sum) / n
            var_e = self.expected_sq / n - (self.expected_sum / n) ** 2
            var_r = self.real_sq / n - (self.real_sum / n) ** 2
            cov = self.product_sum / n - (self.expected_sum / n) * (self.real_sum / n)
            corr = cov / math.sqrt(var_e * var_r) if var_e > 1e-12 and var_r > 1e-12 else math.nan
        return {
            "reward_sign_accuracy": rate(self.reward_right, self.reward_steps),
            "false_reward_rate": rate(self.false_rewards, self.quiet_steps),
            "end_precision": rate(self.true_ends, self.predicted_ends),
            "end_recall": rate(self.true_ends, self.real_ends),
            "reward_expected_bias": bias,
            "reward_expected_corr": corr,
        }
