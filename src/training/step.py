"""One training step (its loss, from the objective, and backward), validation (one step ahead, and open loop over
train.val_rollout_horizon steps), and the validation rollout videos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from src.dataset.offline_dataset import Batch
from src.dataset.shards import ShardedDataset
from src.models.diffusion import seed_sampling
from src.models.events import EventCounts, expected_signs, has_events, predicted_events
from src.models.rollout import Feedback, rollout
from src.training.objective import Objective
from src.training.schedule import Stage
from src.utils import distributed
from src.utils.distributed import Ranks
from src.utils.frames import frames_to_float
from src.utils.metrics import changed_recall, mse_per_sample, step_frames
from src.utils.video import write_rollout_videos


def train_step(
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    batch: Batch,
    stage: Stage,
    event_batch: Batch | None = None,
) -> tuple[dict[str, Tensor], Tensor, Batch]:
    """Forward (autocast per the objective's fast path) and backward of one batch at the curriculum `stage`, gradients
    clipped. Returns (metrics as 0-d tensors, predictions, the batch they predict: moved on by pushforward); the caller
    checks the metrics, then calls optimizer.step(). metrics["finite"] is a 0-d bool tensor: the loss and every
    parameter group's gradient norm are finite (a step that may update the weights)."""
    fast = objective.fast
    autocast = fast is not None and fast.autocast is not None
    device = fast.device.type if fast is not None else batch.frames.device.type
    with torch.autocast(device, dtype=fast.autocast if autocast else torch.float32, enabled=autocast):
        loss, metrics, predicted, batch = objective.loss(forward, batch, stage, event_batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Each parameter group clipped on its own: the event head's gradient jumps when a rare reward is in the batch, and
    # must not scale the frame model's step down. grad_norm is the frame model's.
    clip = objective.grad_clip if objective.grad_clip > 0 else math.inf
    norms = [nn.utils.clip_grad_norm_(group["params"], clip) for group in optimizer.param_groups]
    metrics["grad_norm"] = norms[0]
    metrics["finite"] = torch.isfinite(torch.stack([loss.detach().float(), *(n.float() for n in norms)])).all()
    return metrics, predicted, batch


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: list[Batch],
    objective: Objective,
    ranks: Ranks = Ranks(),
    rollouts: Batch | None = None,
) -> dict[str, float]:
    """Loss and MSE on the held-out samples, and the copy-last-frame baseline's MSE on the same samples; the changed-
    pixel recall of the predictions as fed back: of the pixels that change from the last context frame to the target
    (by more than 2/255), the share the prediction changes too, a ratio of sums over the samples (0 for a model that
    copies the last frame, NaN when nothing changed). One step ahead: each validation sample holds one. Summed over
    the processes' shares under torchrun. With `rollouts` (fixed_val_rollouts), also rollout_scores on them, which
    every process computes whole. A diffusion model's predictions are samples, the same ones at every validation (its
    sampling seeded with 0)."""
    model.eval()
    seed_sampling(model, 0)
    device = next(model.parameters()).device
    totals = {"loss": 0.0, "mse": 0.0, "copy_last_mse": 0.0}
    changed = torch.zeros(2, dtype=torch.float64)  # pixels changed in both, in the target
    counts = EventCounts()
    count = 0
    for batch in batches:
        b = batch.to(device)
        prediction = model(b.frames, b.actions[:, 0])
        totals["loss"] += objective.validation_loss(prediction, b.targets).item() * len(b)
        totals["mse"] += mse_per_sample(prediction, b.targets).sum().item()
        totals["copy_last_mse"] += mse_per_sample(b.frames[:, -1:], b.targets).sum().item()
        fed, last = objective.feedback(prediction), b.frames[:, -1:]  # (B, 1, H, W); last: the previous frame of both
        changed += changed_recall(fed, b.targets, last, last).double().sum(0).cpu()
        if has_events(model):
            logits = model.events(b.frames, fed, b.actions[:, 0])
            rewards, end_probs = predicted_events(*logits)
            counts.add(rewards, end_probs > 0.5, b.rewards[:, 0], b.dones[:, 0], expected_signs(logits[0]))
        count += len(b)
    rolled = rollout_scores(model, rollouts.to(device), objective.feedback) if rollouts is not None else {}
    model.train()
    *sums, both, real, count = distributed.total([*totals.values(), *changed.tolist(), count], ranks)
    metrics = {f"val/{k}": v / count for k, v in zip(totals, sums)}
    metrics["val/ratio_to_copy"] = metrics["val/mse"] / max(metrics["val/copy_last_mse"], 1e-12)
    metrics["val/changed_recall"] = both / real if real else math.nan
    if has_events(model):
        counts = EventCounts(*distributed.total(list(counts.as_tuple()), ranks))
        metrics |= {f"val/{k}": v for k, v in counts.rates().items()}
    return metrics | rolled


def rollout_scores(model: nn.Module, windows: Batch, feedback: Feedback) -> dict[str, float]:
    """Open-loop rollouts of the K steps of `windows` (float, on the model's device), the predictions fed back:

        val/rollout_recall      the changed-pixel recall at step K (each frame against its own previous frame, as in
                                src.eval), a ratio of sums over the windows; 0: the imagined game has stopped
        val/rollout_recall_all  the same over steps 1..K
        val/rollout_ratio       the MSE at step K over the copy-last-frame baseline's (the last context frame)

    NaN where nothing changed."""
    predicted = rollout(model, windows.frames, windows.actions, feedback)  # (R, K, H, W)
    truth, last = windows.targets, windows.frames[:, -1:]  # (R, K, H, W), (R, 1, H, W)
    r, k = truth.shape[:2]
    frames = step_frames(predicted, truth, last[:, 0])  # (R*K, H, W) each: the frames and their previous ones
    parts = changed_recall(*frames).double().view(r, k, 2).sum(0).cpu()  # (K, 2) pixels changed in both, in the truth
    ratio = lambda both, real: (both / real).item() if real > 0 else math.nan  # noqa: E731
    copy = mse_per_sample(last[:, 0], truth[:, -1]).sum().item()
    return {
        "val/rollout_recall": ratio(*parts[-1]),
        "val/rollout_recall_all": ratio(*parts.sum(0)),
        "val/rollout_ratio": mse_per_sample(predicted[:, -1], truth[:, -1]).sum().item() / max(copy, 1e-12),
    }


def rollout_videos(
    model: nn.Module,
    dataset: ShardedDataset,
    starts: np.ndarray,
    horizon: int,
    out: Path,
    feedback: Feedback = Feedback("uint8"),
) -> list[Path]:
    """Open-loop rollouts from held-out windows, written as MP4: ground truth | prediction | error."""
    windows = [dataset.steps(int(s), horizon) for s in starts]
    device = next(model.parameters()).device
    context = frames_to_float(torch.from_numpy(np.stack([w.obs[0] for w in windows]))).to(device)  # (V, T, H, W)
    actions = torch.from_numpy(np.stack([w.action for w in windows])).to(device)  # (V, K)
    model.eval()
    seed_sampling(model, 0)
    predicted = rollout(model, context, actions, feedback).cpu().numpy()  # (V, K, H, W)
    model.train()
    truth = np.stack([w.next_obs[:, 0] for w in windows])  # (V, K, H, W) uint8
    stems = [out.with_name(f"{out.name}_{v}") for v in range(len(windows))]
    return [video["mp4"] for video in write_rollout_videos(truth, predicted, stems)]
