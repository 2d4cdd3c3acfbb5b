"""The training run: set-up, each part made by a named function (src/training/setup.py), then the loop of steps
with its logging, validation and checkpoints. `train(cfg)` is what `python -m src.train` runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.config import PROFILES, Config, to_dict, to_yaml
from src.dataset.offline_dataset import Batch
from src.models.checkpoint import checkpoint_contents, load_weights, version_changes
from src.models.run import TrainedOn
from src.models.world_model import build_model
from src.training.batches import fixed_val_rollouts
from src.training.data import open_data
from src.training.fast_path import FiniteGuard, prepare_model
from src.training.objective import Objective
from src.training.optimizer import load_optimizer, make_optimizer
from src.training.outputs import Console, QuietOutputs, RunOutputs, check_run_space
from src.training.resume import flatten
from src.training.schedule import RunClock, Stage, budget_used, lr_factor
from src.training.setup import (
    Feeds,
    Resume,
    event_loss_for,
    longest_window,
    open_outputs,
    resolved_config,
    resume_point,
    start_device,
    trained_on_of,
)
from src.training.step import rollout_videos, train_step, validate
from src.utils import distributed
from src.utils.console import teed_stdout
from src.utils.distributed import Ranks
from src.utils.errors import UserError
from src.utils.images import prediction_strip
from src.utils.io import atomic_write_bytes
from src.utils.logging import check_wandb, make_logger
from src.utils.seed import rng_state, set_rng_state


def train(cfg: Config, resumed: dict | None = None) -> dict[str, Any]:
    """Train per `cfg` (continuing the run of cfg.train.resume if set: `resumed` is its checkpoint when the caller
    has read it already); returns the final validation metrics, the step reached and the run folder. Under
    torchrun, this process's part of a distributed run."""
    ranks = distributed.start(cfg.train.cpu)
    console = Console(ranks.main)
    try:
        check_wandb(cfg.experiment.wandb)
        with teed_stdout() if ranks.main else contextlib.nullcontext() as console.tee:  # rank 0's lines go to train.log
            return run(cfg, ranks, console, resumed)
    finally:
        console.close()
        distributed.stop(ranks)


@dataclass
class Session:
    """What the training loop works with, as `run` set it up."""

    cfg: Config  # as resolved: never edited after
    model: nn.Module  # what checkpoints save and validation calls
    forward: nn.Module  # what the training step calls: the model, or its torch.compile'd (or DDP) wrapper
    optimizer: torch.optim.Optimizer
    objective: Objective  # what a step computes
    feeds: Feeds  # the batches
    trained_on: TrainedOn  # saved in checkpoints as "dataset"
    resume: Resume | None  # the checkpoint resumed from
    ranks: Ranks
    console: Console  # prints on rank 0, and into train.log
    val_rollouts: Batch | None = None  # the validation windows rolled out open loop (fixed_val_rollouts)


def run(cfg: Config, ranks: Ranks, console: Console, resumed: dict | None) -> dict[str, Any]:
    """Set up, top to bottom, then the loop."""
    resume = resume_point(cfg, ranks, resumed)
    dataset, train_rows, val_rows = open_data(cfg, TrainedOn.of(resume.state) if resume else None, ranks.main)
    fast = start_device(cfg, ranks)
    cfg = resolved_config(cfg, resume, dataset, train_rows, console)
    settings = dataset.manifest.env
    model = build_model(cfg.model, dataset.num_actions, settings.context_frames, settings.screen_size).to(fast.device)
    forward = prepare_model(model, fast, ranks)
    optimizer = make_optimizer(model, cfg, fast.device, fused=fast.fused)
    if ranks.main:
        check_run_space(cfg, 3 * 4 * sum(p.numel() for p in model.parameters()))  # fp32 weights, two Adam moments
    objective = Objective.of(cfg, fast, event_loss_for(model, dataset, train_rows, cfg.train))
    step, best_mse = 0, math.inf
    if resume is not None:
        load_weights(model, resume.state)
        load_optimizer(optimizer, resume.state, cfg, console)
        step, best_mse = resume.step, resume.state["best_mse"]
    trained_on = trained_on_of(cfg, dataset, train_rows, val_rows, resume, ranks)
    feeds = Feeds.of(cfg, dataset, (train_rows, val_rows), step, fast, objective.events is not None, ranks, console)
    rollouts = fixed_val_rollouts(dataset, val_rows, cfg)
    session = Session(cfg, model, forward, optimizer, objective, feeds, trained_on, resume, ranks, console, rollouts)
    if ranks.main:
        outputs, session.resume = open_outputs(cfg, dataset.game, resume, best_mse, console)
        console.open(outputs.run_dir)
        console.say(f"data {dataset.root} checked: {dataset.describe_verification()}")
        dataset.save_verification()  # every check passed: the next start skips hashing the files that did not change
    run_dir = distributed.from_main(outputs.run_dir if ranks.main else None, ranks)
    if not ranks.main:
        outputs = QuietOutputs(run_dir)  # no videos (none are started) and no checkpoints (rank 0 saves them)
    try:
        return train_loop(session, outputs)
    finally:
        outputs.close()


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def diverged(what: str, last_saved: str | None, run_dir: Path, lr: float) -> UserError:
    """The error that stops a run whose loss or validation went non-finite, with the way back: the last checkpoint
    and a lower learning rate, or, before the first checkpoint, a new run with one."""
    lower = f"optimizer.lr={lr / 3:.2g}"
    if last_saved is None:
        return UserError(
            f"training diverged {what} before its first checkpoint; start again with a lower learning rate, "
            f"e.g. {lower}"
        )
    return UserError(
        f"training diverged {what}; the last good checkpoint is {last_saved}: continue from it with a lower "
        f"learning rate, e.g. train.resume={run_dir} {lower}"
    )


def event_summary(val: dict[str, float]) -> str:
    """The validation's event rates for its console line ('' for a model without the event head)."""
    if "val/reward_sign_accuracy" not in val:
        return ""
    return (
        f"; reward sign right {val['val/reward_sign_accuracy']:.2f}, false rewards {val['val/false_reward_rate']:.3f}, "
        f"expected reward bias {val['val/reward_expected_bias']:+.4f} corr {val['val/reward_expected_corr']:.2f}, "
        f"ends found {val['val/end_recall']:.2f}"
    )


def rollout_summary(val: dict[str, float], horizon: int) -> str:
    """The validation's open-loop figures for its console line ('' when not computed)."""
    if "val/rollout_recall" not in val:
        return ""
    return (
        f"; {horizon} steps open loop: changed recall {val['val/rollout_recall']:.3f} (over steps 1-{horizon} "
        f"{val['val/rollout_recall_all']:.3f}), ratio {val['val/rollout_ratio']:.3f}"
    )


def start_outputs(s: Session, outputs: RunOutputs) -> None:
    """Rank 0: the resolved config and the logger; everyone: the banner (what runs, on what, from where)."""
    cfg, run_dir, say = s.cfg, outputs.run_dir, s.console.say
    if s.ranks.main:
        atomic_write_bytes(run_dir / "resolved_config.yaml", to_yaml(cfg).encode())
        wandb_id = s.resume.state["wandb_id"] if s.resume else None
        config = {**to_dict(cfg), "dataset": s.trained_on.to_dict()}
        outputs.logger = make_logger(cfg.experiment.wandb, run_dir, run_dir.name, config, run_id=wandb_id, say=say)
    data = s.feeds.dataset
    rows = f"{s.trained_on.train_rows:,} train / {s.trained_on.val_rows:,} val transitions"
    say(f"{to_yaml(cfg)}\nrun {run_dir}\ndata {data.root}: {data.game}, {rows}")
    millions = sum(p.numel() for p in s.model.parameters()) / 1e6
    say(f"model {cfg.model.name}: {millions:.2f}M parameters on {s.objective.fast.device} ({s.objective.fast})")
    if PROFILES.get(cfg.profile):
        values = flatten(to_dict(cfg))
        keys = [setting.split("=")[0] for setting in PROFILES[cfg.profile]]
        say(
            f"profile {cfg.profile}: {' '.join(f'{k}={values[k]}' for k in keys)} (its keys as this run has them: over "
            "config.yaml, under the command line)"
        )
    if s.ranks.world > 1:
        b = cfg.train.batch_size
        say(f"{s.ranks.world} processes x train.batch_size {b} = global batch {b * s.ranks.world}")
    if s.resume is not None:
        say(f"resuming {run_dir} from {Path(cfg.train.resume).name} at step {s.resume.step}")
        changes = version_changes(s.resume.state)
        if changes:
            say(
                f"note: the checkpoint was computed with other versions ({', '.join(changes)}): the run goes on, but "
                "not bit for bit as it would have under the old ones"
            )


def compile_ahead(s: Session) -> None:
    """With train.compile, trace every graph the training step will need before the run's clock starts: each unroll
    length of the curriculum and the pushforward's no-gradient pass (a compiled graph is specialised to them), so that
    a curriculum stage or the pushforward's start does not compile inside the time budget. One forward and backward
    per graph on a batch of zeros, then the gradients are dropped; the weights, the optimizer and every RNG are
    untouched."""
    if not s.objective.fast.compile:
        return
    t, env = s.cfg.train, s.feeds.dataset.manifest.env

    def zeros(b: int, k: int) -> Batch:
        h = env.screen_size
        return Batch(
            torch.zeros(b, env.context_frames, h, h, dtype=torch.uint8),
            torch.zeros(b, k, dtype=torch.long),
            torch.zeros(b, k, h, h, dtype=torch.uint8),
            torch.zeros(b, k),
            torch.zeros(b, k, dtype=torch.bool),
        ).to(s.objective.fast.device)

    # The event head takes part as in training: under torchrun, DDP expects a gradient for every parameter.
    events = zeros(t.event_batch_size, 1) if s.feeds.events is not None else None
    saved, started = rng_state(), time.perf_counter()
    for k in sorted(set(t.rollout_steps)):
        for share in (0.0, 1.0) if t.pushforward > 0 else (0.0,):
            train_step(
                s.forward, s.optimizer, s.objective, zeros(t.batch_size, longest_window(t)), Stage(k, share), events
            )
    s.optimizer.zero_grad(set_to_none=True)
    set_rng_state(saved)
    s.console.say(f"compiled the training step in {time.perf_counter() - started:.0f} s (before the clock starts)")


@dataclass
class Progress:
    """Where the run stands: what the loop reads and updates between its phases."""

    step: int
    elapsed: float  # seconds of training, a resumed run's included
    last_val: dict[str, float]  # the latest validation's metrics
    last_saved: str | None  # the last checkpoint written (or resumed from), for the divergence message
    validations: int  # so that val_rollout_every keeps its rhythm across a resume
    window_start: float = 0.0  # the throughput's window: since the last logged step
    window_samples: int = 0


def train_loop(s: Session, outputs: RunOutputs) -> dict[str, Any]:
    """Optimizer steps from the resumed checkpoint's step (or 0) until the budget is spent, with logging, validation
    and checkpoints into `outputs`."""
    cfg, t, state = s.cfg, s.cfg.train, s.resume.state if s.resume else None
    start_outputs(s, outputs)
    if state is not None:
        set_rng_state(state["rng"])  # last: building the model and the loaders drew from the RNGs
    compile_ahead(s)
    step = state["step"] if state else 0
    clock = RunClock(state["elapsed_s"] if state else 0.0, s.ranks, agree=t.max_minutes is not None)
    p = Progress(
        step,
        clock.elapsed,
        dict(state["val"]) if state else {},
        f"{cfg.train.resume} (step {step})" if state else None,
        step // t.val_every_steps,
        time.perf_counter(),
    )
    guard = FiniteGuard(s.objective.fast.fused, s.objective.fast.device)
    bar = s.console.progress(t.max_steps, step)
    try:
        while p.step < t.max_steps:
            stage = Stage.at(budget_used(p.step, p.elapsed, t), t)
            tensors, predicted, batch = one_step(s, p, stage, guard, outputs.run_dir)
            p.step += 1
            bar.update(1)
            p.window_samples += len(batch)
            p.elapsed = clock.tick(p.step)
            out_of_time = t.max_minutes is not None and p.elapsed >= 60 * t.max_minutes
            last_step = p.step == t.max_steps or out_of_time
            if p.step % t.log_every == 0 or last_step:
                log_progress(s, p, stage, tensors, predicted, batch, outputs, bar)
            if p.step % t.val_every_steps == 0 or last_step:
                validate_and_save(s, p, outputs, last_step)
            if out_of_time:
                s.console.say(f"stopping at step {p.step}: train.max_minutes={t.max_minutes} reached")
                break
    except KeyboardInterrupt:
        s.console.say(
            f"stopped at step {p.step}; continue from the last checkpoint with: python -m src.train "
            f"train.resume={outputs.run_dir}",
            stderr=True,
        )
        raise
    val = p.last_val
    s.console.say(
        f"done: {p.step} steps in {format_eta(clock.tick(p.step, agree=False))}; val MSE {val['val/mse']:.3g} = "
        f"{val['val/ratio_to_copy']:.3f} x copy-last; run folder {outputs.run_dir}"
    )
    return {**val, "step": p.step, "run_dir": str(outputs.run_dir)}


def one_step(
    s: Session, p: Progress, stage: Stage, guard: FiniteGuard, run_dir: Path
) -> tuple[dict[str, torch.Tensor], torch.Tensor, Batch]:
    """One optimizer step at `stage`, its learning rate from the schedule; a non-finite loss or gradient stops the run
    before it reaches the weights (FiniteGuard: at once on the CPU, at the next logging step on CUDA)."""
    t, optimizer, device = s.cfg.train, s.optimizer, s.objective.fast.device
    factor = lr_factor(p.step, budget_used(p.step, p.elapsed, t), t)
    for group in optimizer.param_groups:
        group["lr"] = s.cfg.optimizer.lr * group.get("lr_scale", 1.0) * factor
    batch = next(s.feeds.train).to(device, non_blocking=True)
    events = next(s.feeds.events).to(device, non_blocking=True) if s.feeds.events is not None else None
    tensors, predicted, batch = train_step(s.forward, optimizer, s.objective, batch, stage, events)
    guard.before_step(optimizer, tensors.pop("finite"), p.step + 1)
    due = (p.step + 1) % t.log_every == 0 or (p.step + 1) % t.val_every_steps == 0 or p.step + 1 == t.max_steps
    bad_step = guard.first_bad() if not guard.deferred or due else None
    if bad_step is not None:
        metrics = {key: value.item() for key, value in tensors.items()}
        later = f" (the weights were left as they were before it; found at step {p.step + 1})"
        at = f"at step {bad_step}" + ("" if bad_step == p.step + 1 else later)
        loss = f"loss {metrics['loss']:.4g}, gradient norm {metrics['grad_norm']:.4g}"
        raise diverged(f"{at} ({loss})", p.last_saved, run_dir, s.cfg.optimizer.lr)
    optimizer.step()
    return tensors, predicted, batch


def log_progress(
    s: Session,
    p: Progress,
    stage: Stage,
    tensors: dict[str, torch.Tensor],
    predicted: torch.Tensor,
    batch: Batch,
    outputs: RunOutputs,
    bar: Any,
) -> None:
    """The training row (metrics.csv, the logger, a strip of the first sample) and the console's progress line."""
    t, ranks = s.cfg.train, s.ranks
    metrics = distributed.mean({key: value.item() for key, value in tensors.items()}, ranks)  # of the global batch
    now = time.perf_counter()
    rate = ranks.world * p.window_samples / max(now - p.window_start, 1e-9)
    p.window_start, p.window_samples = now, 0
    strip = prediction_strip(
        batch.frames[0].cpu().numpy(), predicted[0, 0].detach().cpu().numpy(), batch.targets[0, 0].cpu().numpy()
    )
    row = {
        **metrics,
        "lr": s.optimizer.param_groups[0]["lr"],
        "rollout_steps": stage.rollout_steps,
        "pushforward": stage.pushforward,
        "samples_per_s": rate,
        "elapsed_s": p.elapsed,
    }
    outputs.log_train_row(p.step, row, strip)
    remaining = (t.max_steps - p.step) * t.batch_size * ranks.world / max(rate, 1e-9)
    if t.max_minutes is not None:
        remaining = min(remaining, 60 * t.max_minutes - p.elapsed)
    ratio = f"{p.last_val['val/ratio_to_copy']:.3f}" if "val/ratio_to_copy" in p.last_val else "-"
    unroll = f" | unroll {stage.rollout_steps}" if max(t.rollout_steps) > 1 else ""
    tail = f"val/copy {ratio} | {rate:.0f} samples/s | ETA {format_eta(remaining)}"
    s.console.say(f"step {p.step}/{t.max_steps} | loss {metrics['loss']:.3g}{unroll} | {tail}")
    bar.set_postfix_str(f"loss {metrics['loss']:.3g} | {tail}")


def validate_and_save(s: Session, p: Progress, outputs: RunOutputs, last_step: bool) -> None:
    """Validation, one step ahead and open loop (val_metrics.csv, the console), the rollout videos every
    train.val_rollout_every validations, and the checkpoints; a non-finite validation stops the run before its weights
    are saved."""
    t, run_dir = s.cfg.train, outputs.run_dir
    val = p.last_val = validate(s.model, s.feeds.val, s.objective, s.ranks, s.val_rollouts)
    p.validations += 1
    outputs.log_validation(p.step, val, p.elapsed)
    s.console.say(
        f"validation at step {p.step}: mse {val['val/mse']:.3g}, copy-last {val['val/copy_last_mse']:.3g}, "
        f"ratio {val['val/ratio_to_copy']:.3f}, changed recall {val['val/changed_recall']:.3f}{event_summary(val)}"
        f"{rollout_summary(val, t.val_rollout_horizon)}"
    )
    if len(s.feeds.video_starts) and (p.validations % t.val_rollout_every == 0 or last_step):
        out = run_dir / "videos" / f"rollout_step_{p.step:06d}"
        videos = rollout_videos(
            s.model, s.feeds.dataset, s.feeds.video_starts, t.val_rollout_horizon, out, s.objective.feedback
        )
        outputs.log_videos(p.step, videos)
    if not math.isfinite(val["val/mse"]):
        raise diverged(
            f"at step {p.step} (the validation MSE is {val['val/mse']})", p.last_saved, run_dir, s.cfg.optimizer.lr
        )
    if s.ranks.main:
        contents = checkpoint_contents(
            s.model,
            s.optimizer,
            p.step,
            p.elapsed,
            to_dict(s.cfg),
            s.trained_on.to_dict(),
            val,
            min(outputs.best_mse, val["val/mse"]),
            rng_state(),
            outputs.logger.run_id,
        )
        outputs.save_checkpoints(contents, val["val/mse"])
    p.last_saved = f"{run_dir / 'checkpoints' / 'last.pt'} (step {p.step})"
