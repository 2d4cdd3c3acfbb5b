"""Open-loop rollouts: the model feeds its own predictions back into its context."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from src.models.events import REWARD_SIGNS, has_events
from src.utils.device import constant

FEEDBACK = ("palette", "uint8", "float")  # how a prediction re-enters the context (model.feedback)
DEFAULT_FEEDBACK = "palette"  # measured against uint8 and float: docs/evaluation.md


def nearest_level(frames: Tensor, levels: Tensor) -> Tensor:
    """The index of the nearest of `levels` (K,) increasing, in [0, 1], for every pixel of `frames`: int64, the
    shape of `frames`. No gradient: palette feedback, the palette head and its loss share it."""
    return torch.bucketize(frames.detach().to(levels.dtype).contiguous(), (levels[1:] + levels[:-1]) / 2)


@dataclass(frozen=True)
class Feedback:
    """How a predicted frame re-enters the context, as model.feedback and model.palette say:

        float    clamped to [0, 1]
        uint8    clamped and rounded to the 256 grey levels that real frames have (as DIAMOND does at every step),
                 so that errors below half a level cannot pile up
        palette  clamped and moved to the nearest of the palette's grey levels (the commonest levels of the training
                 frames), so that errors below half the gap between two levels of the game cannot pile up

    Rounding passes the gradient straight through: an unroll trained with back-propagation still learns.
    """

    kind: str = DEFAULT_FEEDBACK
    palette: tuple[int, ...] | None = None  # grey levels 0-255, increasing; needed by "palette"

    def __post_init__(self) -> None:
        if self.kind not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}, got {self.kind!r}")
        if self.kind == "palette" and not self.palette:
            raise ValueError("palette feedback needs the palette's grey levels")

    @classmethod
    def of(cls, model_cfg) -> Feedback:  # noqa: ANN001 (a ModelConfig: models.model_config imports this module)
        return cls(model_cfg.feedback, tuple(int(v) for v in model_cfg.palette) if model_cfg.palette else None)

    def __call__(self, frame: Tensor) -> Tensor:
        frame = frame.clamp(0, 1)
        if self.kind == "uint8":
            return frame + ((frame * 255).round() / 255 - frame).detach()
        if self.kind == "palette":
            levels = constant(self.palette, frame.device, frame.dtype) / 255  # (K,)
            return frame + (levels[nearest_level(frame, levels)] - frame).detach()
        return frame


def unroll(
    model: nn.Module,
    context: Tensor,
    actions: Tensor,
    feedback: Feedback = Feedback("uint8"),
    noise_level: Tensor | None = None,
    logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """context: (B, T, H, W) float in [0, 1], oldest first; actions: (B, K) int64; noise_level: (B,) the level of
    the noise put on the context in training (told to the model at every step), None for a clean context. Every
    model is called alike, with noise_level and logits: the call that src/models/world_model.py describes.
    Returns the K raw predictions (B, K, H, W); each re-enters the context through `feedback`. Keeps gradients:
    training unrolls with it, evaluation through `rollout`. With logits=True, also what the head gives training's
    loss at every step: model.output=palette, the logits (B, K, L, H, W) for L palette levels; model.output=warp,
    the flow (B, K, 2, H, W)."""
    frames, predictions, scores = context, [], []
    # The context keeps its memory layout as predictions enter it: a compiled model sees the same strides at every step.
    layout = (
        torch.channels_last
        if context.dim() == 4
        and not context.is_contiguous()
        and context.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    for k in range(actions.shape[1]):
        # (B, 1, H, W), or with logits (that, (B, L, H, W))
        next_frame = model(frames, actions[:, k], noise_level=noise_level, logits=logits)
        if logits:
            next_frame, step_scores = next_frame
            scores.append(step_scores)
        predictions.append(next_frame)
        frames = torch.cat([frames[:, 1:], feedback(next_frame)], dim=1).contiguous(
            memory_format=layout
        )  # (B, T, H, W)
    predicted = torch.cat(predictions, dim=1)  # (B, K, H, W)
    return (predicted, torch.stack(scores, dim=1)) if logits else predicted


def corrupt(context: Tensor, max_level: float) -> tuple[Tensor, Tensor]:
    """Training's context corruption: Gaussian noise of a level drawn per sample uniformly in [0, max_level] on
    every context frame. Returns (the noisy context, the levels (B,)), for unroll's noise_level."""
    levels = torch.rand(len(context), device=context.device) * max_level
    return context + torch.randn_like(context) * levels.view(-1, 1, 1, 1), levels


@torch.inference_mode()
def rollout(model: nn.Module, context: Tensor, actions: Tensor, feedback: Feedback = Feedback("uint8")) -> Tensor:
    """`unroll` without gradients; the K predicted frames (B, K, H, W) as they were fed back (what is scored)."""
    return feedback(unroll(model, context, actions, feedback))


@dataclass
class Imagined:
    """K imagined steps: the frames as fed back, and what the event head made of each step (None without one)."""

    frames: Tensor  # (B, K, H, W) float in [0, 1]
    rewards: Tensor | None  # (B, K) float: the predicted reward sign, -1, 0 or +1
    end_probs: Tensor | None  # (B, K) float: the probability that the episode ends at that step
    expected_rewards: Tensor | None = None  # (B, K) float: the expected sign p(+1) - p(-1), what an agent takes


@torch.inference_mode()
def imagine_step(
    model: nn.Module, context: Tensor, actions: Tensor, feedback: Feedback = Feedback("uint8")
) -> tuple[Tensor, Tensor, Tensor]:
    """One imagined step of a model with an event head, with its event probabilities rather than its most likely
    events (what an agent's returns and a planner's scores take). context: (B, T, H, W); actions: (B,). Returns the
    fed-back frame (B, 1, H, W), the reward probabilities (B, 3) over REWARD_SIGNS and the end probability (B,)."""
    next_frame = feedback(model(context, actions))
    reward_logits, end_logits = model.events(context, next_frame, actions)
    return next_frame, torch.softmax(reward_logits.float(), dim=-1), torch.sigmoid(end_logits.float())


@torch.inference_mode()
def imagine(model: nn.Module, context: Tensor, actions: Tensor, feedback: Feedback = Feedback("uint8")) -> Imagined:
    """`rollout` that also asks the model's event head (model.events, if it has one) about every step: from the
    context before the step, the step's fed-back frame and its action. context: (B, T, H, W); actions: (B, K)."""
    frames, predicted, rewards, ends, expected = context, [], [], [], []
    for k in range(actions.shape[1]):
        if has_events(model):
            next_frame, reward_probs, end = imagine_step(model, frames, actions[:, k], feedback)
            signs = constant(REWARD_SIGNS, frames.device, torch.float32)
            rewards.append(signs[reward_probs.argmax(-1)])
            expected.append(reward_probs @ signs)
            ends.append(end)
        else:
            next_frame = feedback(model(frames, actions[:, k]))  # (B, 1, H, W)
        predicted.append(next_frame)
        frames = torch.cat([frames[:, 1:], next_frame], dim=1)
    stack = lambda xs: torch.stack(xs, dim=1) if xs else None  # noqa: E731
    return Imagined(torch.cat(predicted, dim=1), stack(rewards), stack(ends), stack(expected))
