"""What a training step computes: the loss of the model's predictions on a batch, and every term and trick in it.

    objective = Objective.of(cfg, fast, events)        # once, from cfg.model and cfg.train
    loss, metrics, predicted, batch = objective.loss(model, batch, Stage(rollout_steps=3, pushforward=0.25))

A k-step unroll of the model's own predictions (Oh et al. 2015) scored per pixel (`PixelLoss`, with the flow's guide
for model.output=warp), or by cross-entropy over the palette's levels (model.output=palette), or EDM's denoising
loss (model.name=edm); the context corrupted by noise (model.context_noise) and moved on by the model itself
(pushforward); the event head's loss beside the frames'.
A new loss term or training trick is a change to this file.

B batch, T context frames, k unrolled steps, H/W pixels, L palette levels
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.config import Config, TrainConfig
from src.dataset.offline_dataset import Batch
from src.models.diffusion import DiffusionConfig, Preconditioning, anchor
from src.models.events import ZERO, reward_class
from src.models.rollout import Feedback, corrupt, nearest_level, unroll
from src.models.unet import warp
from src.training.fast_path import FastPath
from src.training.schedule import Stage
from src.utils.device import constant
from src.utils.metrics import changed


@dataclass(frozen=True)
class PixelLoss:
    """The loss of predicted frames against true ones, per pixel (train.loss, train.huber_delta), and what to log
    about it (0-d tensors, detached: reading them is the caller's choice, since on a GPU each read waits for the
    device).

    With changed_weight w > 0, a pixel whose target differs from the previous true frame counts 1 + w times: on Atari
    under 1% of pixels change per step, and they are the ball, the paddles and the score that the model is judged on.
    With worst_weight w > 0, w times the mean loss of each frame's worst `worst_share` of pixels is added: a pull
    towards the small objects a blurred prediction loses, bounded by w times the largest pixel loss (changed_weight
    instead grows with whatever changes). With cutoff c > 0 a pixel's loss counts max(0, loss - c), as SimPLe's
    (Kaiser et al. 2020): the pixels already within about sqrt(2c) of the truth stop pulling the whole frame towards
    a blur, and the gradient goes to the ones still wrong (the ball, the paddles)."""

    kind: str = "huber"  # or "mse"
    huber_delta: float = 1.0
    changed_weight: float = 0.0
    worst_weight: float = 0.0
    worst_share: float = 0.01
    cutoff: float = 0.0

    @classmethod
    def of(cls, t: TrainConfig) -> PixelLoss:
        return cls(
            t.loss,
            t.huber_delta,
            t.changed_pixel_weight,
            t.worst_pixel_weight,
            t.worst_pixel_share,
            t.pixel_loss_cutoff,
        )

    def __call__(
        self, prediction: Tensor, target: Tensor, previous: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prediction, target, previous (the true frame before each target, for changed_weight): (B, k, H, W)."""
        error = prediction - target
        if self.kind == "huber":
            per_pixel = F.huber_loss(prediction, target, delta=self.huber_delta, reduction="none")
        else:
            per_pixel = error.pow(2)
        if self.cutoff > 0:
            per_pixel = (per_pixel - self.cutoff).clamp_min(0)
        loss = per_pixel.mean()
        if self.changed_weight > 0:
            assert previous is not None, "changed_weight needs the previous frames"
            moved = changed(target, previous)  # (B, k, H, W) bool: as the evaluation's changed-pixel metrics count
            loss = loss + self.changed_weight * (per_pixel * moved).mean()
        if self.worst_weight > 0:
            flat = per_pixel.flatten(2)  # (B, k, H*W)
            worst = flat.topk(max(1, round(self.worst_share * flat.shape[-1])), dim=-1).values  # (B, k, n)
            loss = loss + self.worst_weight * worst.mean()
        return loss, {"loss": loss.detach(), "mse": error.detach().pow(2).mean()}


def palette_loss(scores: Tensor, targets: Tensor, palette: tuple[int, ...]) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the logits (B, k, L, H, W) against each target pixel's nearest palette level (B, k, H, W)."""
    levels = constant(palette, targets.device, torch.float32) / 255
    classes = nearest_level(targets, levels)  # (B, k, H, W)
    loss = F.cross_entropy(scores.flatten(0, 1).float(), classes.flatten(0, 1))
    return loss, {"loss": loss.detach()}


GUIDE_SIGMAS = (1.0, 2.0, 4.0)  # the flow guide's blurs, in pixels: a ball up to about 3 sigma away pulls the flow


def blur(frames: Tensor, sigma: float) -> Tensor:
    """A Gaussian blur of (N, 1, H, W), separable, 3 sigma wide each side, the edges repeated."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, device=frames.device, dtype=frames.dtype)
    kernel = (-(x**2) / (2 * sigma**2)).exp()
    kernel = kernel / kernel.sum()
    padded = F.pad(frames, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))


def flow_guide_loss(previous: Tensor, flow: Tensor, target: Tensor) -> Tensor:
    """model.output=warp: the frame each prediction copied from (N, 1, H, W), blurred at each of GUIDE_SIGMAS and
    moved by its flow (N, 2, H, W), against the blurred target (N, 1, H, W); the squared error times sigma squared,
    so every blur pulls alike (a blurred ball's contrast falls as 1/sigma^2). A bilinear copy gives its flow a
    gradient only from neighbouring pixels; blurred frames reach the flow from a ball several pixels away."""
    total = previous.new_zeros(())
    for sigma in GUIDE_SIGMAS:
        moved = warp(blur(previous, sigma), flow)
        total = total + sigma**2 * (moved - blur(target, sigma)).pow(2).mean()
    return total


def denoising_loss(
    model: nn.Module, frames: Tensor, actions: Tensor, targets: Tensor, d: DiffusionConfig
) -> tuple[Tensor, Tensor]:
    """EDM's training loss on one step: a noise level per sample, log σ ~ N(d.train_log_sigma_mean, std²) clipped to
    [sigma_min, train_sigma_max], and the network's output F regressed onto (x0 - c_skip x) / c_out: the loss
    λ(σ) ||D(x; σ) - x0||² with EDM's weighting λ = 1 / c_out². `model` is called (it may be the DDP or compiled
    wrapper); targets: (B, 1, H, W) in [0, 1]. Returns (the loss, D's estimate of the targets in [0, 1], detached)."""
    x0 = 2 * targets.float() - 1 - anchor(frames, d)
    log_sigma = torch.randn(len(x0), device=x0.device) * d.train_log_sigma_std + d.train_log_sigma_mean
    sigma = log_sigma.exp().clamp(d.sigma_min, d.train_sigma_max)
    noisy = x0 + torch.randn_like(x0) * sigma.view(-1, 1, 1, 1)
    out = model(torch.cat([frames, noisy], dim=1), actions, noise_level=sigma).float()  # (B, 1, H, W)
    c = Preconditioning.at(sigma, d.sigma_data)
    loss = F.mse_loss(out, (x0 - c.c_skip * noisy) / c.c_out)
    estimate = (c.c_skip * noisy + c.c_out * out.detach() + anchor(frames, d) + 1) / 2
    return loss, estimate


@dataclass(frozen=True)
class EventWeights:
    """How much each reward class and a true end count in the loss: the rare ones up by (rate of the common one /
    their rate) ** balance (0: plain cross-entropy; 1: every class counts as much in total, which buys recall with
    false alarms; 0.5, the default, between).

    Weighting and the event batches' over-sampling of rare steps teach a head that a reward is dozens of times more
    likely than it is: its probabilities are the training's, not the game's (on Boxing's random-play data they
    multiply a reward's odds by about 49 and an end's by about 220: the weighted loss is best served by a reward on
    more than half the steps where the data has one in 35, and an agent's expected rewards are mostly that bias).
    The shifts undo it (logit adjustment): the loss adds to each logit the log of how much training multiplies its
    class, so the head's own outputs are the game's probabilities while the rare classes keep their weight in the
    gradient. Zero shifts: the head learns the weighted probabilities."""

    reward: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per class of REWARD_SIGNS
    end: float = 1.0  # a true end's weight against a step that goes on
    reward_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to the reward logits in the loss
    end_shift: float = 0.0  # added to the end logit in the loss

    @classmethod
    def from_counts(
        cls,
        reward_counts: np.ndarray,
        ends: int,
        steps: int,
        balance: float,
        sampling: EventSampling | None = None,
    ) -> EventWeights:
        """reward_counts: (3,) training steps per class of REWARD_SIGNS; ends: training steps where the episode ends.
        sampling: how the event batches draw (None: no shifts, the head learns the weighted probabilities)."""
        counts = np.maximum(np.asarray(reward_counts, dtype=np.float64), 1)
        reward = (counts[ZERO] / counts) ** balance
        end = (max(steps - ends, 1) / max(ends, 1)) ** balance
        if sampling is None:
            return cls(tuple(float(w) for w in reward), float(end))
        boost = sampling.boosts()
        reward_shift = np.log(reward * boost[:3])
        end_shift = np.log(end * boost[3] / boost[4])
        return cls(
            tuple(float(w) for w in reward),
            float(end),
            tuple(float(x) for x in reward_shift - reward_shift[ZERO]),
            float(end_shift),
        )


@dataclass(frozen=True)
class EventSampling:
    """What the event head's loss sees of each class, for EventWeights' shifts: the training steps' counts, and the
    event batches (train.event_batch_size > 0: `share` of each batch drawn from the steps with a reward or an end,
    the rest from all steps; their loss is a mean added to the unrolled steps' mean)."""

    steps: int
    reward_counts: tuple[int, int, int]  # steps per class of REWARD_SIGNS
    quiet_ends: int  # steps without a reward where the episode ends
    ends: int
    rewarded_going_on: int  # steps with a reward where the episode goes on
    event_batches: bool
    share: float

    @classmethod
    def of(cls, rewards: np.ndarray, dones: np.ndarray, event_batches: bool, share: float) -> EventSampling:
        """The training steps' rewards (raw) and dones, (N,) each."""
        signs, dones = np.sign(rewards).astype(np.int64) + 1, dones.astype(bool)
        return cls(
            steps=len(signs),
            reward_counts=tuple(int(n) for n in np.bincount(signs, minlength=3)),
            quiet_ends=int((dones & (signs == ZERO)).sum()),
            ends=int(dones.sum()),
            rewarded_going_on=int((~dones & (signs != ZERO)).sum()),
            event_batches=event_batches,
            share=share,
        )

    def weights(self, balance: float, calibrate: bool) -> EventWeights:
        """The loss's weights for these steps (train.event_balance), with the shifts that undo them and the event
        batches' over-sampling when `calibrate` (train.event_calibrate)."""
        return EventWeights.from_counts(
            np.array(self.reward_counts), self.ends, self.steps, balance, self if calibrate else None
        )

    def rates(self) -> tuple[np.ndarray, float]:
        """The data's rates: (3,) per class of REWARD_SIGNS, and the end's."""
        steps = max(self.steps, 1)
        return np.array(self.reward_counts) / steps, self.ends / steps

    def boosts(self) -> np.ndarray:
        """(5,): how much the loss multiplies each reward class over its rate in the data, then a true end's and a
        step that goes on: 1 from the unrolled steps, plus (1 - share) + share x (its steps' chance to be an event)
        / (the events' rate) from the event batches (an average over the class's steps)."""
        if not self.event_batches:
            return np.ones(5)
        steps = max(self.steps, 1)
        events = sum(self.reward_counts) - self.reward_counts[ZERO] + self.quiet_ends
        rate = events / steps
        if rate == 0:  # no events: the event batches draw from all steps
            return np.full(5, 2.0)
        eventful = np.array(
            [
                1.0,
                self.quiet_ends / max(self.reward_counts[ZERO], 1),
                1.0,
                1.0,
                self.rewarded_going_on / max(steps - self.ends, 1),
            ]
        )  # the share of each class's steps that are events
        return 1 + (1 - self.share) + self.share * eventful / rate


def event_loss(
    reward_logits: Tensor, end_logits: Tensor, rewards: Tensor, ends: Tensor, weights: EventWeights = EventWeights()
) -> tuple[Tensor, Tensor]:
    """Weighted cross-entropy of the reward sign and binary cross-entropy of the end, each a mean over the steps, of
    the logits shifted by `weights`' shifts. reward_logits: (N, 3); end_logits: (N,); rewards: (N,) raw; ends: (N,)
    bool. Returns (reward loss, end loss)."""
    classes = reward_class(rewards)
    w = constant(weights.reward, reward_logits.device, torch.float32)
    shifted = reward_logits.float() + constant(weights.reward_shift, reward_logits.device, torch.float32)
    reward = (F.cross_entropy(shifted, classes, reduction="none") * w[classes]).mean()
    end_logits = end_logits.float() + weights.end_shift
    end = F.binary_cross_entropy_with_logits(end_logits, ends.float(), reduction="none")
    end = (end * torch.where(ends, weights.end, 1.0)).mean()
    return reward, end


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
        total = self.reward_weight * reward + self.end_weight * end
        return total, {"reward_loss": reward.detach(), "end_loss": end.detach()}


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
        own = torch.cat([batch.frames[picked], imagined.to(frames.dtype)], dim=1)[:, -t:]
        frames = frames.index_copy(0, picked, own)
    return replace(batch.steps_from(n), frames=frames)


@dataclass(frozen=True)
class Objective:
    """What a training step computes, as cfg.model and cfg.train say; `loss` is the one call."""

    feedback: Feedback = Feedback("uint8")  # how a prediction re-enters the context (model.feedback)
    pixels: PixelLoss = PixelLoss()  # the frames' loss (train.loss and its weights)
    context_noise: float = 0.0  # model.context_noise: the context corrupted, its level told to the model
    palette: tuple[int, ...] | None = None  # model.output=palette: a cross-entropy over these grey levels
    flow_guide: float = 0.0  # model.output=warp: the weight of flow_guide_loss (train.flow_guide_weight)
    change_sparsity: float = 0.0  # model.output=warp: the weight of the drawn change's mean absolute value
    diffusion: DiffusionConfig | None = None  # model.name=edm: EDM's denoising loss on one step
    pushforward_steps: int = 1  # train.pushforward_steps
    events: EventLoss | None = None  # the event head's loss, for a model with one
    fast: FastPath | None = None  # how the step runs: precision, memory format, compilation (None: fp32 eager)
    grad_clip: float = 0.0  # train.grad_clip: each parameter group's gradient norm clipped to this (0: off)

    @classmethod
    def of(cls, cfg: Config, fast: FastPath | None = None, events: EventLoss | None = None) -> Objective:
        m, t = cfg.model, cfg.train
        return cls(
            feedback=Feedback.of(m),
            pixels=PixelLoss.of(t),
            context_noise=m.context_noise,
            palette=tuple(m.palette) if m.output == "palette" else None,
            flow_guide=t.flow_guide_weight if m.output == "warp" else 0.0,
            change_sparsity=t.change_sparsity if m.output == "warp" else 0.0,
            diffusion=m.diffusion if m.name == "edm" else None,
            pushforward_steps=t.pushforward_steps,
            events=events,
            fast=fast,
            grad_clip=t.grad_clip,
        )

    def loss(
        self, model: nn.Module, batch: Batch, stage: Stage, event_batch: Batch | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor, Batch]:
        """The loss of one batch at a curriculum `stage` (its unroll length, its pushforward share), with the event
        head's on the same steps and on `event_batch` (EventBatches) added; metrics["loss"] stays the frames'.
        Returns (loss, metrics as 0-d tensors, predictions (B, k, H, W), the batch they predict: moved on by
        pushforward)."""
        fast = self.fast
        if stage.pushforward > 0:
            static = fast is not None and (fast.compile or fast.device.type != "cpu")
            batch = pushed_forward(model, batch, self.pushforward_steps, stage.pushforward, self.feedback, static)
        if fast is not None and fast.channels_last:
            batch = replace(batch, frames=batch.frames.contiguous(memory_format=torch.channels_last))
        if self.diffusion is not None:
            loss, metrics, predicted = self.denoising(model, batch)
        else:
            loss, metrics, predicted = self.unrolled(model, batch, stage.rollout_steps)
        if self.events is not None:
            # A diffusion model's event head sees the real next frames, which a sample resembles more than the
            # denoiser's estimate at a random noise level does.
            seen = batch.targets[:, :1] if self.diffusion is not None else predicted
            event_total, event_metrics = self.events(batch, seen, self.feedback, event_batch)
            loss, metrics = loss + event_total, {**metrics, **event_metrics}
        return loss, metrics, predicted, batch

    def unrolled(self, model: nn.Module, batch: Batch, k: int) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The loss of k predictions in a row, each made from the model's own previous ones, with gradients through
        the whole unroll; k=1 is plain one-step training. With context_noise > 0 the context is first corrupted
        (rollout.corrupt) and its level told to the model: training only, validation and rollouts see clean frames."""
        context, levels = corrupt(batch.frames, self.context_noise) if self.context_noise > 0 else (batch.frames, None)
        targets = batch.targets[:, :k]  # (B, k, H, W)
        if self.palette is not None:
            predicted, scores = unroll(model, context, batch.actions[:, :k], self.feedback, levels, logits=True)
            loss, metrics = palette_loss(scores, targets, self.palette)
            return loss, {**metrics, "mse": (predicted.detach().float() - targets).pow(2).mean()}, predicted
        previous = torch.cat([batch.frames[:, -1:], targets[:, :-1]], dim=1)  # the true frame before each target
        if self.flow_guide > 0 or self.change_sparsity > 0:
            predicted, flows = unroll(model, context, batch.actions[:, :k], self.feedback, levels, logits=True)
            predicted = predicted.float()
            # What each step copied from: the context's last frame, then the model's own fed-back predictions; every
            # step as one frame of its own (B * k, 1 or 2, H, W), as warp takes them.
            seen = torch.cat([context[:, -1:], self.feedback(predicted[:, :-1]).detach()], dim=1).flatten(0, 1)
            seen, flows = seen.unsqueeze(1).float(), flows.flatten(0, 1).float()
            loss, metrics = self.pixels(predicted, targets, previous)
            if self.flow_guide > 0:
                guide = flow_guide_loss(seen, flows, targets.flatten(0, 1).unsqueeze(1).float())
                loss, metrics = loss + self.flow_guide * guide, {**metrics, "flow_guide": guide.detach()}
            if self.change_sparsity > 0:
                drawn = predicted.flatten(0, 1).unsqueeze(1) - warp(seen, flows)  # what the head drew after its copy
                loss = loss + self.change_sparsity * drawn.abs().mean()
            return loss, metrics, predicted
        predicted = unroll(model, context, batch.actions[:, :k], self.feedback, levels).float()  # (B, k, H, W)
        loss, metrics = self.pixels(predicted, targets, previous)
        return loss, metrics, predicted

    def denoising(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """EDM's denoising loss on the batch's first step; metrics["mse"] is the denoiser's estimate against the true
        frame, at the drawn noise levels. Returns (loss, metrics, the estimates (B, 1, H, W))."""
        targets = batch.targets[:, :1]
        loss, estimate = denoising_loss(model, batch.frames, batch.actions[:, 0], targets, self.diffusion)
        return loss, {"loss": loss.detach(), "mse": (estimate - targets.float()).pow(2).mean()}, estimate

    def validation_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """What validation reports as its loss: the per-pixel loss without the training-only weights."""
        return PixelLoss(self.pixels.kind, self.pixels.huber_delta)(prediction, target)[0]
