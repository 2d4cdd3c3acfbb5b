"""One training step (a k-step unroll, its loss and backward), validation, and the validation rollout videos."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.config import Config, TrainConfig
from src.dataset.offline_dataset import Batch
from src.dataset.shards import ShardedDataset
from src.models.diffusion import DiffusionConfig, denoising_loss, seed_sampling
from src.models.events import EventCounts, EventWeights, event_loss, has_events, predicted_events
from src.models.rollout import Feedback, corrupt, nearest_level, rollout, unroll
from src.training.fast_path import FastPath
from src.utils import distributed
from src.utils.device import constant
from src.utils.distributed import Ranks
from src.utils.frames import frames_to_float
from src.utils.metrics import frame_loss, mse_per_sample
from src.utils.video import write_rollout_videos


def pushed_forward(
    model: nn.Module, batch: Batch, n: int, share: float, feedback: Feedback, static: bool = False
) -> Batch:
    """The pushforward trick: the batch moved n steps on, where for a random `share` of the samples the n newest
    context frames are the model's own predictions, made and fed back without gradients (the others get the true
    frames). The model learns to correct the errors it makes, and no gradient flows into the steps that made them.

    With `static` (a compiled model, or a GPU) the model predicts for the whole batch and a mask picks: the same shapes
    at every step (one compiled graph whatever the share) and no host sync, for a pass over the samples not picked.
    Otherwise it predicts for the picked samples alone (measured on the CPU at share 0.25-0.5: 8-20% faster steps)."""
    t = batch.frames.shape[1]
    frames = torch.cat([batch.frames, batch.targets[:, :n]], dim=1)[:, -t:]  # true, n steps on
    chosen = torch.rand(len(batch), device=frames.device) < share  # (B,)
    if static:
        with torch.no_grad():
            imagined = feedback(unroll(model, batch.frames, batch.actions[:, :n], feedback))  # (B, n, H, W)
        own = torch.cat([batch.frames, imagined.to(frames.dtype)], dim=1)[:, -t:]
        return replace(batch.steps_from(n), frames=torch.where(chosen.view(-1, 1, 1, 1), own, frames))
    picked = chosen.nonzero().squeeze(1)
    if len(picked):
        with torch.no_grad():
            imagined = feedback(
                unroll(model, batch.frames[picked], batch.actions[picked, :n], feedback)
            )  # (P, n, H, W)
        frames = frames.index_copy(
            0, picked, torch.cat([batch.frames[picked], imagined.to(frames.dtype)], dim=1)[:, -t:]
        )
    return replace(batch.steps_from(n), frames=frames)


def palette_loss(scores: Tensor, targets: Tensor, palette: tuple[int, ...]) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the logits (B, K, L, H, W) against each target pixel's nearest palette level (B, K, H, W)."""
    levels = constant(palette, targets.device, torch.float32) / 255
    classes = nearest_level(targets, levels)  # (B, K, H, W)
    loss = F.cross_entropy(scores.flatten(0, 1).float(), classes.flatten(0, 1))
    return loss, {"loss": loss.detach()}


@dataclass(frozen=True)
class EventLoss:
    """How training scores the event head (model.events) beside the frames: the rare classes' weights, from the
    training data's counts, and each loss's weight in the total (train.reward_loss_weight, train.end_loss_weight)."""

    head: nn.Module
    weights: EventWeights
    reward_weight: float = 1.0
    end_weight: float = 1.0

    def __call__(
        self, batch: Batch, predicted: Tensor, feedback: Feedback, events: Batch | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Two parts. The head asked about every step of the unroll as imagination asks it: the clean context before
        the step, the step's prediction as fed back (no gradient into the frame model) and its action, the rare
        classes weighted up. And, when given, `events` (EventBatches: steps rich in rewards and ends, one step each),
        with their real next frames. batch: clean frames, with rewards and dones; predicted: (B, k, H, W) raw.
        Returns (the weighted loss, its parts as metrics)."""
        k, t = predicted.shape[1], batch.frames.shape[1]
        fed = feedback(predicted.detach().float())  # (B, k, H, W)
        frames = torch.cat([batch.frames.float(), fed], dim=1)  # (B, T + k, H, W)
        contexts = torch.stack([frames[:, i : i + t] for i in range(k)], dim=1).flatten(0, 1)  # (B * k, T, H, W)
        reward_logits, end_logits = self.head(contexts, fed.flatten(0, 1).unsqueeze(1), batch.actions[:, :k].flatten())
        reward, end = event_loss(
            reward_logits, end_logits, batch.rewards[:, :k].flatten(), batch.dones[:, :k].flatten(), self.weights
        )
        if events is not None:
            rich = event_loss(
                *self.head(events.frames, events.targets[:, :1], events.actions[:, 0]),
                events.rewards[:, 0],
                events.dones[:, 0],
            )
            reward, end = reward + rich[0], end + rich[1]
        return self.reward_weight * reward + self.end_weight * end, {
            "reward_loss": reward.detach(),
            "end_loss": end.detach(),
        }


def unrolled_loss(
    model: nn.Module,
    batch: Batch,
    k: int,
    t: TrainConfig,
    feedback: Feedback = Feedback("uint8"),
    context_noise: float = 0.0,
    output_palette: tuple[int, ...] | None = None,
    events: EventLoss | None = None,
    event_batch: Batch | None = None,
    diffusion: DiffusionConfig | None = None,
) -> tuple[Tensor, dict[str, float], Tensor]:
    """With `events`, the event head's loss on the same steps (and on `event_batch`) is added (EventLoss);
    metrics["loss"] stays the frames'. With `diffusion` (model.name=edm), the frames' loss is EDM's denoising loss on
    one step (`diffusion_loss`), and the event head sees the real next frames, which a sample resembles more than
    the denoiser's estimate at a random noise level does."""
    if diffusion is not None:
        loss, metrics, predicted = diffusion_loss(model, batch, diffusion)
    else:
        loss, metrics, predicted = frames_loss(model, batch, k, t, feedback, context_noise, output_palette)
    if events is not None:
        event_total, event_metrics = events(
            batch, batch.targets[:, :1] if diffusion is not None else predicted, feedback, event_batch
        )
        loss = loss + event_total
        metrics = {**metrics, **event_metrics}
    return loss, metrics, predicted


def diffusion_loss(model: nn.Module, batch: Batch, d: DiffusionConfig) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """EDM's denoising loss on the batch's first step (src/models/diffusion.py); metrics["mse"] is the denoiser's
    estimate against the true frame, at the drawn noise levels. Returns (loss, metrics, the estimates (B, 1, H, W))."""
    targets = batch.targets[:, :1]
    loss, estimate = denoising_loss(model, batch.frames, batch.actions[:, 0], targets, d)
    return loss, {"loss": loss.detach(), "mse": (estimate - targets.float()).pow(2).mean()}, estimate


def frames_loss(
    model: nn.Module,
    batch: Batch,
    k: int,
    t: TrainConfig,
    feedback: Feedback = Feedback("uint8"),
    context_noise: float = 0.0,
    output_palette: tuple[int, ...] | None = None,
) -> tuple[Tensor, dict[str, float], Tensor]:
    """The loss of k predictions in a row, each made from the model's own previous ones (Oh et al. 2015), with
    gradients through the whole unroll; k=1 is plain one-step training. With context_noise > 0 the context is first
    corrupted (rollout.corrupt) and its level told to the model: training only, validation and rollouts see clean
    frames. With output_palette (model.output=palette), the loss is the cross-entropy of the model's logits over
    those levels (`palette_loss`). Returns (loss, metrics, predictions (B, k, H, W)).
    """
    context, levels = corrupt(batch.frames, context_noise) if context_noise > 0 else (batch.frames, None)
    targets = batch.targets[:, :k]  # (B, k, H, W)
    if output_palette is not None:
        predicted, scores = unroll(model, context, batch.actions[:, :k], feedback, levels, logits=True)
        loss, metrics = palette_loss(scores, targets, output_palette)
        return loss, {**metrics, "mse": (predicted.detach().float() - targets).pow(2).mean()}, predicted
    predicted = unroll(model, context, batch.actions[:, :k], feedback, levels).float()  # (B, k, H, W)
    previous = torch.cat([batch.frames[:, -1:], targets[:, :-1]], dim=1)  # the true frame before each target
    loss, metrics = frame_loss(
        predicted,
        targets,
        t.loss,
        t.huber_delta,
        previous,
        t.changed_pixel_weight,
        t.worst_pixel_weight,
        t.worst_pixel_share,
    )
    return loss, metrics, predicted


def train_step(
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    k: int,
    t: TrainConfig,
    fast: FastPath,
    feedback: Feedback = Feedback("uint8"),
    context_noise: float = 0.0,
    pushforward: float = 0.0,
    output_palette: tuple[int, ...] | None = None,
    events: EventLoss | None = None,
    event_batch: Batch | None = None,
    diffusion: DiffusionConfig | None = None,
) -> tuple[dict[str, Tensor], Tensor, Batch]:
    """Forward (autocast per `fast`) and backward of one batch with a k-step unroll, gradients clipped; with
    pushforward > 0, that share of the samples first moved on t.pushforward_steps steps by the model itself
    (`pushed_forward`). Returns (metrics as 0-d tensors, predictions, the batch they predict: moved on by
    pushforward); the caller checks the metrics, then calls optimizer.step(). metrics["finite"] is a 0-d bool tensor: the
    loss and every parameter group's gradient norm are finite (a step that may update the weights)."""
    with torch.autocast(fast.device.type, dtype=fast.autocast or torch.float32, enabled=fast.autocast is not None):
        if pushforward > 0:
            batch = pushed_forward(
                forward,
                batch,
                t.pushforward_steps,
                pushforward,
                feedback,
                static=fast.compile or fast.device.type != "cpu",
            )
        if fast.channels_last:
            batch = replace(batch, frames=batch.frames.contiguous(memory_format=torch.channels_last))
        loss, metrics, predicted = unrolled_loss(
            forward, batch, k, t, feedback, context_noise, output_palette, events, event_batch, diffusion
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Each parameter group clipped on its own: the event head's gradient jumps when a rare reward is in the batch, and
    # must not scale the frame model's step down. grad_norm is the frame model's.
    norms = [
        nn.utils.clip_grad_norm_(group["params"], t.grad_clip if t.grad_clip > 0 else math.inf)
        for group in optimizer.param_groups
    ]
    metrics["grad_norm"] = norms[0]
    metrics["finite"] = torch.isfinite(torch.stack([loss.detach().float(), *(n.float() for n in norms)])).all()
    return metrics, predicted, batch


@torch.no_grad()
def validate(
    model: nn.Module, batches: list[Batch], cfg: Config, device: torch.device, ranks: Ranks = Ranks()
) -> dict[str, float]:
    """Loss and MSE on the held-out samples, and the copy-last-frame baseline's MSE on the same samples (summed over
    the processes' shares under torchrun). A diffusion model's predictions are samples, the same ones at every
    validation (its sampling seeded with 0)."""
    model.eval()
    seed_sampling(model, 0)
    totals = {"loss": 0.0, "mse": 0.0, "copy_last_mse": 0.0}
    counts = EventCounts()
    count = 0
    feedback = Feedback.of(cfg.model)
    for batch in batches:
        b = batch.to(device)
        prediction = model(b.frames, b.actions[:, 0])
        loss, _ = frame_loss(prediction, b.targets, cfg.train.loss, cfg.train.huber_delta)
        totals["loss"] += loss.item() * len(b)
        totals["mse"] += mse_per_sample(prediction, b.targets).sum().item()
        totals["copy_last_mse"] += mse_per_sample(b.frames[:, -1:], b.targets).sum().item()
        if has_events(model):
            rewards, end_probs = predicted_events(*model.events(b.frames, feedback(prediction), b.actions[:, 0]))
            counts.add(rewards, end_probs > 0.5, b.rewards[:, 0], b.dones[:, 0])
        count += len(b)
    model.train()
    *sums, count = distributed.total([*totals.values(), count], ranks)
    metrics = {f"val/{k}": v / count for k, v in zip(totals, sums)}
    metrics["val/ratio_to_copy"] = metrics["val/mse"] / max(metrics["val/copy_last_mse"], 1e-12)
    if has_events(model):
        counts = EventCounts(*distributed.total(list(counts.as_tuple()), ranks))
        metrics |= {f"val/{k}": v for k, v in counts.rates().items()}
    return metrics


def rollout_videos(
    model: nn.Module,
    dataset: ShardedDataset,
    starts: np.ndarray,
    horizon: int,
    device: torch.device,
    out: Path,
    feedback: Feedback = Feedback("uint8"),
) -> list[Path]:
    """Open-loop rollouts from held-out windows, written as MP4: ground truth | prediction | error."""
    windows = [dataset.steps(int(s), horizon) for s in starts]
    context = frames_to_float(torch.from_numpy(np.stack([w.obs[0] for w in windows]))).to(device)  # (V, T, H, W)
    actions = torch.from_numpy(np.stack([w.action for w in windows])).to(device)  # (V, K)
    model.eval()
    seed_sampling(model, 0)
    predicted = rollout(model, context, actions, feedback).cpu().numpy()  # (V, K, H, W)
    model.train()
    truth = np.stack([w.next_obs[:, 0] for w in windows])  # (V, K, H, W) uint8
    stems = [out.with_name(f"{out.name}_{v}") for v in range(len(windows))]
    return [video["mp4"] for video in write_rollout_videos(truth, predicted, stems)]
