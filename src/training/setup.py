"""Everything a training run needs before its first step, each made by a named function that returns it, in the
order train() calls them (src/training/loop.py: `run`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.config import Config, ConfigError, TrainConfig
from src.dataset.offline_dataset import Batch
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import read_checkpoint
from src.models.events import has_events
from src.models.run import LAST, TrainedOn, find_checkpoint, run_dir_of
from src.training.batches import DeviceBatches, EventBatches, fixed_val_batches, rollout_starts, training_batches
from src.training.data import data_identity, diffusion_sigma_data, frame_palette, starts_within
from src.training.fast_path import FastPath, configure_backends
from src.training.objective import EventLoss, EventSampling
from src.training.outputs import Console, RunOutputs, branch_run_dir, check_run_location, create_run_dir
from src.training.resume import check_resumable
from src.utils.device import choose_device
from src.utils.distributed import Ranks
from src.utils.errors import UserError
from src.utils.seed import seed_everything


@dataclass(frozen=True)
class Resume:
    """The checkpoint a resumed run continues from, and its contents (read_checkpoint's dict)."""

    checkpoint: Path
    state: dict

    @property
    def step(self) -> int:
        return self.state["step"]


def resume_point(cfg: Config, ranks: Ranks, resumed: dict | None) -> Resume | None:
    """The checkpoint train.resume names, read (unless the caller has: `resumed`) and checked against the config;
    None for a new run, whose run folder's location is checked instead (before the dataset's checksums: seconds a
    GB)."""
    if cfg.train.resume is None:
        if ranks.main:  # a resumed run writes into its own folder (RunOutputs checks it)
            check_run_location(cfg)
        return None
    checkpoint = find_checkpoint(cfg.train.resume, "resume", "train.resume", cfg.experiment.runs_dir)
    state = resumed if resumed is not None else read_checkpoint(checkpoint)
    check_resumable(state, inherited(cfg, state), checkpoint, ranks.world)
    return Resume(checkpoint, state)


def inherited(cfg: Config, state: dict) -> Config:
    """`cfg` with what it leaves null taken from the checkpoint it resumes: the run's own palette and sigma_data."""
    m, saved = cfg.model, state["config"]["model"]
    palette = m.palette if m.palette is not None else saved.get("palette")
    sigma_data = m.diffusion.sigma_data
    sigma_data = sigma_data if sigma_data is not None else saved.get("diffusion", {}).get("sigma_data")
    return replace(cfg, model=replace(m, palette=palette, diffusion=replace(m.diffusion, sigma_data=sigma_data)))


def start_device(cfg: Config, ranks: Ranks) -> FastPath:
    """Seed every RNG, set the threads, pick this process's device and how a step runs on it."""
    seed_everything(cfg.train.seed)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    fast = FastPath.choose(cfg, choose_device(cpu=cfg.train.cpu, local_rank=ranks.local))
    configure_backends(fast)
    return fast


def resolved_config(
    cfg: Config, resume: Resume | None, dataset: ShardedDataset, train_rows: np.ndarray, console: Console
) -> Config:
    """The config as the run uses it, never edited after: train.resume as the checkpoint's path (what `auto` or a run
    folder meant), and what the config leaves null filled in: a resumed run's own palette and sigma_data, or else
    measured on the training rows (model.palette for palette feedback or output, model.diffusion.sigma_data for edm)."""
    m = inherited(cfg, resume.state).model if resume is not None else cfg.model
    palette, sigma_data = m.palette, m.diffusion.sigma_data
    if "palette" in (m.feedback, m.output) and palette is None:
        palette, coverage = frame_palette(dataset, train_rows, m.palette_size)
        console.say(
            f"palette: the {len(palette)} commonest grey levels cover {coverage:.2%} of the training frames' pixels"
        )
    if m.name == "edm" and sigma_data is None:
        sigma_data = round(diffusion_sigma_data(dataset, train_rows, m.diffusion.target), 6)
        change = "change from the last frame" if m.diffusion.target == "residual" else "pixels"
        console.say(
            f"diffusion: sigma_data {sigma_data:.4g}, the standard deviation of the training frames' {change} in "
            "[-1, 1]"
        )
    model = replace(m, palette=palette, diffusion=replace(m.diffusion, sigma_data=sigma_data))
    train = replace(cfg.train, resume=str(resume.checkpoint) if resume else None)
    return replace(cfg, model=model, train=train)


def longest_window(t: TrainConfig) -> int:
    """The steps a training window holds: the longest unroll, and the pushforward's steps before it when it is on."""
    return max(t.rollout_steps) + (t.pushforward_steps if t.pushforward > 0 else 0)


def training_windows(cfg: Config, dataset: ShardedDataset, train_rows: np.ndarray) -> np.ndarray:
    """The rows where a training window begins; a ConfigError when they are fewer than a batch."""
    longest = longest_window(cfg.train)
    starts = starts_within(dataset, train_rows, longest)
    if len(starts) < cfg.train.batch_size:
        raise ConfigError(
            f"train.rollout_steps: only {len(starts)} training windows of {longest} steps (the longest unroll, "
            "plus train.pushforward_steps when pushforward is on), fewer than "
            f"train.batch_size {cfg.train.batch_size}; shorten the unroll or record longer episodes"
        )
    return starts


def event_loss_for(
    model: nn.Module, dataset: ShardedDataset, train_rows: np.ndarray, t: TrainConfig
) -> EventLoss | None:
    """The event head's loss, its class weights from the training rows' rewards and ends; a fresh head starts at their
    rates (a resumed one's weights are loaded over it). None for a model without the head (model.events=false)."""
    if not has_events(model):
        return None
    sampling = EventSampling.of(
        dataset.column("reward")[train_rows], dataset.column("done")[train_rows], t.event_batch_size > 0, t.event_share
    )
    weights = sampling.weights(t.event_balance, t.event_calibrate)
    model.events.prior(*sampling.rates(), weights.reward_shift, weights.end_shift)
    return EventLoss(model.events, weights, t.reward_loss_weight, t.end_loss_weight)


def trained_on_of(
    cfg: Config,
    dataset: ShardedDataset,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    resume: Resume | None,
    ranks: Ranks,
) -> TrainedOn:
    """What the checkpoints record the model is trained on; a resumed run keeps its checkpoint's split (the
    validation episodes, and the rows it was made on)."""
    identity = data_identity(dataset, val_rows)
    trained_on = TrainedOn(
        game=dataset.game,
        num_actions=dataset.num_actions,
        action_meanings=dataset.manifest.action_meanings,
        env_settings=dataset.manifest.env.to_dict(),
        dir=str(dataset.root),
        seed=dataset.manifest.seed,
        train_rows=len(train_rows),
        val_rows=len(val_rows),
        processes=ranks.world,
        global_batch=cfg.train.batch_size * ranks.world,
        fingerprint=identity["fingerprint"],
        shards=identity["shards"],
        val_episodes=identity["val_episodes"],
        split_rows=len(dataset),
    )
    saved = TrainedOn.of(resume.state) if resume is not None else None
    if (
        saved is not None and saved.val_episodes is not None
    ):  # the split is the checkpoint's, on the rows it was made on
        trained_on = replace(trained_on, val_episodes=saved.val_episodes, split_rows=saved.split_rows)
    return trained_on


@dataclass
class Feeds:
    """The data the loop reads: the training batches, the event head's (train.event_batch_size), the fixed validation
    batches and the rows where the validation rollout videos start."""

    dataset: ShardedDataset
    train: Iterator[Batch]
    events: Iterator[Batch] | None
    val: list[Batch]
    video_starts: np.ndarray

    @classmethod
    def of(
        cls,
        cfg: Config,
        dataset: ShardedDataset,
        rows: tuple[np.ndarray, np.ndarray],
        step: int,
        fast: FastPath,
        events: bool,
        ranks: Ranks,
        console: Console,
    ) -> Feeds:
        """From optimizer step `step` on; rows: (train_rows, val_rows); `events`: the model has an event head."""
        t, (train_rows, val_rows) = cfg.train, rows
        starts = training_windows(cfg, dataset, train_rows)
        train = training_batches(
            dataset, starts, longest_window(t), cfg, step, fast.device, fast.pin_memory, ranks, console.say
        )
        on_device = train if isinstance(train, DeviceBatches) else None
        event_batches = None
        if events and t.event_batch_size:
            event_batches = EventBatches(
                dataset, train_rows, t.event_batch_size, t.event_share, t.seed, step, ranks, on_device
            )
        videos = t.val_rollout_enabled and ranks.main
        starts = rollout_starts(dataset, val_rows, cfg) if videos else np.zeros(0, dtype=np.int64)
        return cls(dataset, train, event_batches, fixed_val_batches(dataset, val_rows, cfg, ranks), starts)


def open_outputs(
    cfg: Config, game: str, resume: Resume | None, best_mse: float, console: Console
) -> tuple[RunOutputs, Resume | None]:
    """Rank 0's run folder and its writers (`run_folder`), with the resume as the run continues it: a branch is a run
    of its own, in W&B too (no wandb_id), and its best.pt is the first it validates unless the parent's was copied."""
    run_dir, resumed_at = run_folder(cfg, game, resume)
    if resume is not None and resumed_at is None:  # a branch
        last = run_dir_of(resume.checkpoint) / "checkpoints" / LAST
        console.say(
            f"{resume.checkpoint.name} (step {resume.step}) is older than {last}: continuing in a new run folder "
            f"{run_dir} (parent.json names its parent, which is left as it is)"
        )
        resume = replace(resume, state={**resume.state, "wandb_id": None})
        if not (run_dir / "checkpoints" / "best.pt").exists():
            best_mse = math.inf
    return RunOutputs(run_dir, resumed_at, best_mse), resume


def run_folder(cfg: Config, game: str, resume: Resume | None) -> tuple[Path, int | None]:
    """Where this run writes, and the step it continues its CSVs from: a new run folder; for a resume from the run's
    newest checkpoint, the run's own folder; for a resume from an older one (best.pt behind last.pt), a new folder
    branched from it, so that nothing the run wrote after that checkpoint is lost."""
    if resume is None:
        return create_run_dir(cfg, game), None
    parent, step = run_dir_of(resume.checkpoint), resume.step
    last = parent / "checkpoints" / LAST
    if resume.checkpoint.resolve() == last.resolve():
        return parent, step
    try:
        newest = read_checkpoint(last)["step"]
    except UserError:  # missing or damaged: nothing newer is known, and nothing in the parent is touched
        newest = None
    if newest == step:
        return parent, step
    return branch_run_dir(cfg, game, parent, resume.checkpoint, resume.state, newest), None
