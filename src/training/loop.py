"""The training loop: set up the data, the model and the run folder, then step until the budget is spent, with
logging, validation and checkpoints. `train(cfg)` is what `python -m src.train` runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.config import PROFILES, Config, ConfigError, TrainConfig, to_dict, to_yaml
from src.dataset.offline_dataset import Batch
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import checkpoint_contents, load_weights, read_checkpoint, version_changes
from src.models.diffusion import DiffusionConfig
from src.models.events import REWARD_SIGNS, EventWeights, has_events
from src.models.rollout import Feedback
from src.models.world_model import build_model
from src.training.data import (
    DeviceBatches,
    EventBatches,
    data_identity,
    diffusion_sigma_data,
    fixed_val_batches,
    frame_palette,
    open_data,
    rollout_starts,
    starts_within,
    training_batches,
)
from src.training.fast_path import (
    FastPath,
    FiniteGuard,
    configure_backends,
    make_optimizer,
    match_layouts,
    prepare_model,
)
from src.training.outputs import (
    Console,
    QuietOutputs,
    RunOutputs,
    branch_run_dir,
    check_run_location,
    check_run_space,
    create_run_dir,
)
from src.training.resume import check_resumable, find_checkpoint, flatten
from src.training.schedule import RunClock, budget_used, lr_factor, pushforward_share, rollout_length
from src.training.step import EventLoss, rollout_videos, train_step, validate
from src.utils import distributed
from src.utils.console import teed_stdout
from src.utils.device import choose_device
from src.utils.distributed import Ranks
from src.utils.errors import UserError
from src.utils.images import prediction_strip
from src.utils.io import atomic_write_bytes
from src.utils.logging import check_wandb, make_logger
from src.utils.seed import rng_state, seed_everything, set_rng_state


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train(cfg: Config, resumed: dict | None = None) -> dict[str, Any]:
    """Train per `cfg` (continuing the run of cfg.train.resume if set: `resumed` is its checkpoint when the caller
    has read it already); returns the final validation metrics, the step reached and the run folder. Under
    torchrun, this process's part of a distributed run."""
    ranks = distributed.start(cfg.train.cpu)
    try:
        return train_ranks(cfg, ranks, resumed)
    finally:
        distributed.stop(ranks)


def train_ranks(cfg: Config, ranks: Ranks, resumed: dict | None = None) -> dict[str, Any]:
    """Set up the data, the model and the run folder (rank 0's), then run the loop."""
    check_wandb(cfg.experiment.wandb)
    console = Console(ranks.main)
    try:
        if not ranks.main:
            return set_up_and_run(cfg, ranks, console, resumed)
        with teed_stdout() as console.tee:  # what rank 0 prints also goes to train.log
            return set_up_and_run(cfg, ranks, console, resumed)
    finally:
        console.close()


def set_up_and_run(cfg: Config, ranks: Ranks, console: Console, resumed: dict | None) -> dict[str, Any]:
    checkpoint, state = None, None
    if ranks.main and cfg.train.resume is None:  # a resumed run writes into its own folder (RunOutputs checks it)
        check_run_location(cfg)  # before the dataset's checksums: seconds a GB
    if cfg.train.resume is not None:
        checkpoint = find_checkpoint(cfg.train.resume, cfg.experiment.runs_dir)
        state = resumed if resumed is not None else read_checkpoint(checkpoint)
        if cfg.model.palette is None:  # not given: the run's own
            cfg.model.palette = state["config"]["model"].get("palette")
        if cfg.model.diffusion.sigma_data is None:  # likewise
            cfg.model.diffusion.sigma_data = state["config"]["model"].get("diffusion", {}).get("sigma_data")
        check_resumable(state, cfg, checkpoint, ranks.world)
        cfg.train.resume = str(checkpoint)  # what `auto` or a run folder meant, for the log and the saved config
    dataset, train_rows, val_rows = open_data(cfg, state["dataset"] if state else None, ranks.main)

    seed_everything(cfg.train.seed)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    device = choose_device(cpu=cfg.train.cpu, local_rank=ranks.local)
    fast = FastPath.choose(cfg, device)
    configure_backends(fast)
    settings = dataset.manifest.env
    if "palette" in (cfg.model.feedback, cfg.model.output) and cfg.model.palette is None:  # a resumed run keeps its own
        cfg.model.palette, coverage = frame_palette(dataset, train_rows, cfg.model.palette_size)
        console.say(
            f"palette: the {len(cfg.model.palette)} commonest grey levels cover {coverage:.2%} of the training "
            "frames' pixels"
        )
    if cfg.model.name == "edm" and cfg.model.diffusion.sigma_data is None:
        cfg.model.diffusion.sigma_data = round(diffusion_sigma_data(dataset, train_rows, cfg.model.diffusion.target), 6)
        console.say(
            f"diffusion: sigma_data {cfg.model.diffusion.sigma_data:.4g}, the standard deviation of the training frames' "
            f"{'change from the last frame' if cfg.model.diffusion.target == 'residual' else 'pixels'} in [-1, 1]"
        )
    model = build_model(cfg.model, dataset.num_actions, settings.context_frames, settings.screen_size).to(device)
    forward = prepare_model(model, fast, ranks)
    optimizer = make_optimizer(model, cfg, device, fused=fast.fused)
    params = sum(p.numel() for p in model.parameters())
    if ranks.main:
        check_run_space(cfg, 3 * 4 * params)  # float32 weights and two Adam moments
    longest = max(cfg.train.rollout_steps) + (cfg.train.pushforward_steps if cfg.train.pushforward > 0 else 0)
    starts = starts_within(dataset, train_rows, longest)
    if len(starts) < cfg.train.batch_size:
        raise ConfigError(
            f"train.rollout_steps: only {len(starts)} training windows of {longest} steps (the longest unroll, "
            "plus train.pushforward_steps when pushforward is on), fewer than "
            f"train.batch_size {cfg.train.batch_size}; shorten the unroll or record longer episodes"
        )
    events = event_loss_for(model, dataset, train_rows, cfg.train)
    step, best_mse = 0, math.inf
    if state is not None:
        load_weights(model, state)
        load_optimizer(optimizer, state, cfg, console)
        step, best_mse = state["step"], state.get("best_mse", math.inf)
    dataset_info = {
        "dir": str(dataset.root),
        "game": dataset.game,
        "num_actions": dataset.num_actions,
        "action_meanings": dataset.manifest.action_meanings,
        "env_settings": settings.to_dict(),
        "seed": dataset.manifest.seed,
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "processes": ranks.world,
        "global_batch": cfg.train.batch_size * ranks.world,
    }
    dataset_info |= {**data_identity(dataset, val_rows), "split_rows": len(dataset)}
    if (
        state is not None and "val_episodes" in state["dataset"]
    ):  # the split is the checkpoint's, on the rows it was made on
        dataset_info.update({k: state["dataset"][k] for k in ("val_episodes", "split_rows") if k in state["dataset"]})
    videos = cfg.train.val_rollout_enabled and ranks.main
    batches = training_batches(dataset, starts, longest, cfg, step, device, fast.pin_memory, ranks, console.say)
    session = Session(
        cfg,
        model,
        forward,
        optimizer,
        fast,
        dataset,
        dataset_info,
        batches=batches,
        val_batches=fixed_val_batches(dataset, val_rows, cfg, ranks),
        video_starts=rollout_starts(dataset, val_rows, cfg) if videos else np.zeros(0, dtype=np.int64),
        state=state,
        ranks=ranks,
        console=console,
        events=events,
        event_batches=EventBatches(
            dataset,
            train_rows,
            cfg.train.event_batch_size,
            cfg.train.event_share,
            cfg.train.seed,
            step,
            ranks,
            batches if isinstance(batches, DeviceBatches) else None,
        )
        if events and cfg.train.event_batch_size
        else None,
    )

    if ranks.main:
        run_dir, resumed_at = run_folder(cfg, dataset.game, checkpoint, state)
        if checkpoint is not None and resumed_at is None:  # a branch
            console.say(
                f"{checkpoint.name} (step {step}) is older than {run_dir_of(checkpoint) / 'checkpoints' / 'last.pt'}: "
                f"continuing in a new run folder {run_dir} (parent.json names its parent, which is left as it is)"
            )
            session.state = {**state, "wandb_id": None}  # a run of its own, in W&B too
            if not (run_dir / "checkpoints" / "best.pt").exists():
                best_mse = math.inf  # its best.pt is the first it validates
        outputs = RunOutputs(run_dir, resumed_at, best_mse)
        console.open(run_dir)
        console.say(f"data {dataset.root} checked: {dataset.describe_verification()}")
        dataset.save_verification()  # every check passed: the next start skips hashing the files that did not change
    run_dir = distributed.from_main(run_dir if ranks.main else None, ranks)
    if not ranks.main:
        outputs = QuietOutputs(run_dir)  # no videos (none are started) and no checkpoints (rank 0 saves them)
    try:
        return train_loop(session, outputs)
    finally:
        outputs.close()


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


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, cfg: Config, console: Console) -> None:
    """The checkpoint's optimizer state (Adam's moments, step counts) under the config's hyperparameters: load_state_dict
    would bring back the checkpoint's betas and weight decay, and an override of them on resume would be ignored."""
    wanted = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(
            f"the checkpoint's optimizer state does not fit the model ({' '.join(str(e).split())[:160]}); "
            "the checkpoint was altered or made by another version"
        ) from None
    match_layouts(
        optimizer
    )  # a checkpoint from another device or train.channels_last has its moments in another layout
    for group, hyper in zip(optimizer.param_groups, wanted):
        group.update(hyper)
    before = state["config"].get("optimizer", {})
    changed = [
        f"{k} {before.get(k)} -> {v}"
        for k, v in to_dict(cfg)["optimizer"].items()
        if k != "lr" and before.get(k, v) != v
    ]
    if changed:
        console.say(f"optimizer: {', '.join(changed)} (from the command line; Adam's moments are kept)")


def run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent


def run_folder(cfg: Config, game: str, checkpoint: Path | None, state: dict | None) -> tuple[Path, int | None]:
    """Where this run writes, and the step it continues its CSVs from: a new run folder; for a resume from the run's
    newest checkpoint, the run's own folder; for a resume from an older one (best.pt behind last.pt), a new folder
    branched from it, so that nothing the run wrote after that checkpoint is lost."""
    if checkpoint is None:
        return create_run_dir(cfg, game), None
    parent, step = run_dir_of(checkpoint), state["step"]
    last = parent / "checkpoints" / "last.pt"
    if checkpoint.resolve() == last.resolve():
        return parent, step
    try:
        newest = read_checkpoint(last)["step"]
    except UserError:  # missing or damaged: nothing newer is known, and nothing in the parent is touched
        newest = None
    if newest == step:
        return parent, step
    return branch_run_dir(cfg, game, parent, checkpoint, state, newest), None


def event_summary(val: dict[str, float]) -> str:
    """The validation's event rates for its console line ('' for a model without the event head)."""
    if "val/reward_sign_accuracy" not in val:
        return ""
    return (
        f"; reward sign right {val['val/reward_sign_accuracy']:.2f}, false rewards {val['val/false_reward_rate']:.3f}, "
        f"ends found {val['val/end_recall']:.2f}"
    )


def event_loss_for(
    model: nn.Module, dataset: ShardedDataset, train_rows: np.ndarray, t: TrainConfig
) -> EventLoss | None:
    """The event head's loss, its class weights from the training rows' rewards and ends; a fresh head starts at their
    rates (a resumed one's weights are loaded over it). None for a model without the head (model.events=false)."""
    if not has_events(model):
        return None
    signs = np.sign(dataset.column("reward")[train_rows]).astype(np.int64) + 1
    reward_counts = np.bincount(signs, minlength=len(REWARD_SIGNS))
    ends = int(dataset.column("done")[train_rows].sum())
    model.events.prior(reward_counts / max(len(train_rows), 1), ends / max(len(train_rows), 1))
    weights = EventWeights.from_counts(reward_counts, ends, len(train_rows), t.event_balance)
    return EventLoss(model.events, weights, t.reward_loss_weight, t.end_loss_weight)


@dataclass
class Session:
    """What the training loop works with, as train() set it up."""

    cfg: Config
    model: nn.Module  # what checkpoints save and validation calls
    forward: nn.Module  # what the training step calls: the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    fast: FastPath
    dataset: ShardedDataset
    dataset_info: dict  # what the model is trained on, saved in checkpoints as "dataset"
    batches: Iterator[Batch]
    val_batches: list[Batch]
    video_starts: np.ndarray  # rows where the validation rollout videos start
    state: dict | None  # the checkpoint resumed from
    ranks: Ranks = Ranks()
    console: Console = field(default_factory=Console)  # prints on rank 0, and into train.log
    events: EventLoss | None = None  # the event head's loss, for a model with one
    event_batches: Iterator[Batch] | None = None  # steps rich in rewards and ends for it (train.event_batch_size)

    def say(self, message: str) -> None:
        self.console.say(message)


def compile_ahead(
    s: Session, feedback: Feedback, output_palette: tuple[int, ...] | None, diffusion: DiffusionConfig | None
) -> None:
    """With train.compile, trace every graph the training step will need before the run's clock starts: each unroll
    length of the curriculum and the pushforward's no-gradient pass (a compiled graph is specialised to them), so that
    a curriculum stage or the pushforward's start does not compile inside the time budget. One forward and backward per
    graph on a batch of zeros, then the gradients are dropped; the weights, the optimizer and every RNG are untouched."""
    if not s.fast.compile:
        return
    t, env = s.cfg.train, s.dataset.manifest.env
    longest = max(t.rollout_steps) + (t.pushforward_steps if t.pushforward > 0 else 0)

    def zeros(b: int, k: int) -> Batch:
        h = env.screen_size
        return Batch(
            torch.zeros(b, env.context_frames, h, h, dtype=torch.uint8),
            torch.zeros(b, k, dtype=torch.long),
            torch.zeros(b, k, h, h, dtype=torch.uint8),
            torch.zeros(b, k),
            torch.zeros(b, k, dtype=torch.bool),
        ).to(s.fast.device)

    # The event head takes part as in training: under torchrun, DDP expects a gradient for every parameter.
    events = zeros(t.event_batch_size, 1) if s.event_batches is not None else None
    saved, started = rng_state(), time.perf_counter()
    for k in sorted(set(t.rollout_steps)):
        for share in (0.0, 1.0) if t.pushforward > 0 else (0.0,):
            train_step(
                s.forward,
                s.optimizer,
                zeros(t.batch_size, longest),
                k,
                t,
                s.fast,
                feedback,
                s.cfg.model.context_noise,
                share,
                output_palette,
                s.events,
                events,
                diffusion,
            )
    s.optimizer.zero_grad(set_to_none=True)
    set_rng_state(saved)
    s.say(f"compiled the training step in {time.perf_counter() - started:.0f} s (before the clock starts)")


def train_loop(s: Session, outputs: RunOutputs) -> dict[str, Any]:
    """Optimizer steps from the resumed checkpoint's step (or 0) until the budget is spent, with logging, validation
    and checkpoints into `outputs`."""
    cfg, model, optimizer, state, device, ranks, say = (
        s.cfg,
        s.model,
        s.optimizer,
        s.state,
        s.fast.device,
        s.ranks,
        s.say,
    )
    run_dir = outputs.run_dir
    if ranks.main:
        atomic_write_bytes(run_dir / "resolved_config.yaml", to_yaml(cfg).encode())
        outputs.logger = make_logger(
            cfg.experiment.wandb,
            run_dir,
            run_dir.name,
            {**to_dict(cfg), "dataset": s.dataset_info},
            run_id=state.get("wandb_id") if state else None,
            say=s.console.say,
        )
    logger = outputs.logger
    say(
        f"{to_yaml(cfg)}\nrun {run_dir}\ndata {s.dataset.root}: {s.dataset.game}, {s.dataset_info['train_rows']:,} train / "
        f"{s.dataset_info['val_rows']:,} val transitions"
    )
    say(
        f"model {cfg.model.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {device} ({s.fast})"
    )
    if PROFILES.get(cfg.profile):
        values = flatten(to_dict(cfg))
        keys = [setting.split("=")[0] for setting in PROFILES[cfg.profile]]
        say(
            f"profile {cfg.profile}: {' '.join(f'{k}={values[k]}' for k in keys)} (its keys as this run has them: over "
            "config.yaml, under the command line)"
        )
    if ranks.world > 1:
        say(
            f"{ranks.world} processes x train.batch_size {cfg.train.batch_size} = global batch {cfg.train.batch_size * ranks.world}"
        )
    if state is not None:
        say(f"resuming {run_dir} from {Path(cfg.train.resume).name} at step {state['step']}")
        changes = version_changes(state)
        if changes:
            say(
                f"note: the checkpoint was computed with other versions ({', '.join(changes)}): the run goes on, but not bit "
                "for bit as it would have under the old ones"
            )
        set_rng_state(state["rng"])  # last: building the model and the loaders drew from the RNGs

    t = cfg.train
    feedback = Feedback.of(cfg.model)
    output_palette = tuple(cfg.model.palette) if cfg.model.output == "palette" else None
    diffusion = cfg.model.diffusion if cfg.model.name == "edm" else None
    compile_ahead(s, feedback, output_palette, diffusion)
    step = state["step"] if state else 0
    clock = RunClock(state.get("elapsed_s", 0.0) if state else 0.0, ranks, agree=t.max_minutes is not None)
    elapsed = clock.elapsed
    window_start, window_samples = time.perf_counter(), 0
    last_val: dict[str, float] = dict(state["val"]) if state else {}
    validations = step // t.val_every_steps  # so that val_rollout_every keeps its rhythm across a resume
    last_saved = f"{cfg.train.resume} (step {step})" if state else None
    guard = FiniteGuard(s.fast.fused, device)
    bar = s.console.progress(t.max_steps, step)
    try:
        while step < t.max_steps:
            used = budget_used(step, elapsed, t)
            k, share = rollout_length(used, t), pushforward_share(used, t)
            for group in optimizer.param_groups:
                group["lr"] = cfg.optimizer.lr * group.get("lr_scale", 1.0) * lr_factor(step, used, t)
            batch = next(s.batches).to(device, non_blocking=True)
            event_batch = next(s.event_batches).to(device, non_blocking=True) if s.event_batches is not None else None
            tensors, predicted, batch = train_step(
                s.forward,
                optimizer,
                batch,
                k,
                t,
                s.fast,
                feedback,
                cfg.model.context_noise,
                share,
                output_palette,
                s.events,
                event_batch,
                diffusion,
            )
            guard.before_step(optimizer, tensors.pop("finite"), step + 1)
            logging = (step + 1) % t.log_every == 0 or (step + 1) % t.val_every_steps == 0 or step + 1 == t.max_steps
            if not guard.deferred or logging:
                bad_step = guard.first_bad()
                if bad_step is not None:
                    metrics = {key: value.item() for key, value in tensors.items()}
                    at = f"at step {bad_step}" + (
                        ""
                        if bad_step == step + 1
                        else f" (the weights were left as they were before it; found at step {step + 1})"
                    )
                    raise diverged(
                        f"{at} (loss {metrics['loss']:.4g}, gradient norm {metrics['grad_norm']:.4g})",
                        last_saved,
                        run_dir,
                        cfg.optimizer.lr,
                    )
            optimizer.step()
            step += 1
            bar.update(1)
            window_samples += len(batch)
            elapsed = clock.tick(step)
            out_of_time = t.max_minutes is not None and elapsed >= 60 * t.max_minutes
            last_step = step == t.max_steps or out_of_time

            if step % t.log_every == 0 or last_step:
                metrics = distributed.mean(
                    {key: value.item() for key, value in tensors.items()}, ranks
                )  # of the global batch
                now = time.perf_counter()
                rate = ranks.world * window_samples / max(now - window_start, 1e-9)
                window_start, window_samples = now, 0
                strip = prediction_strip(
                    batch.frames[0].cpu().numpy(),
                    predicted[0, 0].detach().cpu().numpy(),
                    batch.targets[0, 0].cpu().numpy(),
                )
                outputs.log_train_row(
                    step,
                    {
                        **metrics,
                        "lr": optimizer.param_groups[0]["lr"],
                        "rollout_steps": k,
                        "pushforward": share,
                        "samples_per_s": rate,
                        "elapsed_s": elapsed,
                    },
                    strip,
                )
                remaining = (t.max_steps - step) * t.batch_size * ranks.world / max(rate, 1e-9)
                if t.max_minutes is not None:
                    remaining = min(remaining, 60 * t.max_minutes - elapsed)
                ratio = f"{last_val['val/ratio_to_copy']:.3f}" if "val/ratio_to_copy" in last_val else "-"
                unroll = f" | unroll {k}" if max(t.rollout_steps) > 1 else ""
                say(
                    f"step {step}/{t.max_steps} | loss {metrics['loss']:.3g}{unroll} | val/copy {ratio} | "
                    f"{rate:.0f} samples/s | ETA {format_eta(remaining)}"
                )
                bar.set_postfix_str(
                    f"loss {metrics['loss']:.3g} | val/copy {ratio} | {rate:.0f} samples/s | ETA {format_eta(remaining)}"
                )

            if step % t.val_every_steps == 0 or last_step:
                last_val = validate(model, s.val_batches, cfg, device, ranks)
                validations += 1
                outputs.log_validation(step, last_val, elapsed)
                say(
                    f"validation at step {step}: mse {last_val['val/mse']:.3g}, copy-last {last_val['val/copy_last_mse']:.3g}, "
                    f"ratio {last_val['val/ratio_to_copy']:.3f}{event_summary(last_val)}"
                )
                if len(s.video_starts) and (validations % t.val_rollout_every == 0 or last_step):
                    outputs.log_videos(
                        step,
                        rollout_videos(
                            model,
                            s.dataset,
                            s.video_starts,
                            t.val_rollout_horizon,
                            device,
                            run_dir / "videos" / f"rollout_step_{step:06d}",
                            feedback,
                        ),
                    )
                if not math.isfinite(last_val["val/mse"]):
                    raise diverged(
                        f"at step {step} (the validation MSE is {last_val['val/mse']})",
                        last_saved,
                        run_dir,
                        cfg.optimizer.lr,
                    )
                if ranks.main:
                    contents = checkpoint_contents(
                        model,
                        optimizer,
                        step,
                        elapsed,
                        to_dict(cfg),
                        s.dataset_info,
                        last_val,
                        min(outputs.best_mse, last_val["val/mse"]),
                        rng_state(),
                        logger.run_id,
                    )
                    outputs.save_checkpoints(contents, last_val["val/mse"])
                last_saved = f"{run_dir / 'checkpoints' / 'last.pt'} (step {step})"
            if out_of_time:
                say(f"stopping at step {step}: train.max_minutes={t.max_minutes} reached")
                break
    except KeyboardInterrupt:
        s.console.say(
            f"stopped at step {step}; continue from the last checkpoint with: python -m src.train train.resume={run_dir}",
            stderr=True,
        )
        raise

    say(
        f"done: {step} steps in {format_eta(clock.tick(step, agree=False))}; val MSE {last_val['val/mse']:.3g} = "
        f"{last_val['val/ratio_to_copy']:.3f} x copy-last; run folder {run_dir}"
    )
    return {**last_val, "step": step, "run_dir": str(run_dir)}
