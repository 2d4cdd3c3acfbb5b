"""Train a next-frame world model offline on a recorded dataset.

    python -m src.train [--config config.yaml] [key=value ...]      e.g. optimizer.lr=1e-4 train.max_steps=5
    python -m src.train train.resume=runs/<run>  [key=value ...]    continue a run (or train.resume=auto)

Writes runs/<YYYYmmdd-HHMMSS>_<game>/: metrics.csv, val_metrics.csv, images/, videos/, checkpoints/
(last.pt, best.pt), resolved_config.yaml, and wandb/ when experiment.wandb.mode is not disabled.
A resumed run continues in its own folder from the checkpoint's config, with the overrides given on top.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from src.config import Config, ConfigError, TrainConfig, config_from_dict, load_config, to_dict, to_yaml
from src.dataset.atari import resolve_game
from src.dataset.offline_dataset import Batch, WindowDataset, collate, frames_to_float, split_episodes
from src.dataset.shards import ShardedDataset
from src.models.rollout import rollout, unroll
from src.models.world_model import build_model
from src.utils.checkpoint import load_checkpoint, load_weights, save_checkpoint
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.images import prediction_strip, save_png
from src.utils.io import atomic_write_bytes, create_timestamped_dir, free_space, human_bytes, try_lock
from src.utils import distributed
from src.utils.distributed import Ranks
from src.utils.logging import NullLogger, check_wandb, make_logger
from src.utils.metrics import frame_loss, mse_per_sample
from src.utils.seed import rng_state, seed_everything, set_rng_state
from src.utils.video import rollout_frames, write_video


# ------------------------------------------------------------------------------------------ set-up


def open_data(cfg: Config) -> tuple[ShardedDataset, np.ndarray, np.ndarray]:
    """The validated dataset and its train/val rows; every disagreement with the config is a ConfigError."""
    try:
        dataset = ShardedDataset(cfg.data.dir, verify=cfg.data.verify)
    except UserError as e:
        raise ConfigError(f"data.dir: {e}") from None
    if cfg.data.game is not None and resolve_game(cfg.data.game) != dataset.game:
        raise ConfigError(f"data.game is {cfg.data.game} but the dataset in {cfg.data.dir} is {dataset.game}; "
                          f"point data.dir at a {resolve_game(cfg.data.game)} dataset or leave data.game null")
    try:
        train_rows, val_rows = split_episodes(dataset.column("episode"), cfg.data.val_ratio, cfg.train.seed)
    except ValueError as e:
        raise ConfigError(f"data.dir: {e}") from None
    if cfg.train.batch_size > len(train_rows):
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the training set ({len(train_rows)} samples)")
    return dataset, train_rows, val_rows


def create_run_dir(cfg: Config, game: str) -> Path:
    """runs_dir/<YYYYmmdd-HHMMSS>_<game>[_<name>]/ with images/, videos/ and checkpoints/."""
    suffix = game + (f"_{cfg.experiment.name}" if cfg.experiment.name else "")
    return create_timestamped_dir(cfg.experiment.runs_dir, suffix, ("images", "videos", "checkpoints"), "experiment.runs_dir")


# A resumed run keeps these: they define its weights' shapes, its data split and its data order.
RESUME_FIXED = ("model.", "train.seed", "train.batch_size", "train.rollout_steps", "data.val_ratio")
MIN_FREE_BYTES = 200 * 1000**2  # besides two checkpoints: strips, videos, CSVs and W&B files of a run


def find_checkpoint(resume: str, runs_dir: str) -> Path:
    """train.resume -> a checkpoint inside a run folder: a .pt file, a run folder's last.pt, or with `auto` the
    newest last.pt under experiment.runs_dir."""
    if resume == "auto":
        found = sorted(Path(runs_dir).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"train.resume=auto: no run under '{runs_dir}' has a checkpoints/last.pt to resume; "
                              "start a run first, or set experiment.runs_dir")
        return found[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ConfigError(f"train.resume: '{resume}' is neither a checkpoint nor a run folder with checkpoints/last.pt")
    if not (path.parent.parent / "resolved_config.yaml").is_file():
        raise ConfigError(f"train.resume: '{path}' is not in a run folder (<run>/checkpoints/); "
                          "a run continues in its own folder")
    return path


def resume_config(config_path: str, overrides: list[str]) -> Config:
    """The config of `python -m src.train ... train.resume=X`: the checkpoint's own config with the command
    line's overrides on top (not config.yaml, which may have changed since)."""
    cfg = load_config(config_path, overrides)
    if cfg.train.resume is None:
        return cfg
    checkpoint = find_checkpoint(cfg.train.resume, cfg.experiment.runs_dir)
    saved = load_checkpoint(checkpoint)["config"]
    return config_from_dict(saved, [*overrides, f"train.resume={checkpoint}"])


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def check_resumable(state: dict, cfg: Config, dataset: ShardedDataset, checkpoint: Path) -> None:
    """ConfigError unless `cfg` and `dataset` can continue the run saved in `state`."""
    saved, now = flatten(state["config"]), flatten(to_dict(cfg))
    for key in sorted(saved):
        if key.startswith(RESUME_FIXED) and key in now and saved[key] != now[key]:
            raise ConfigError(f"train.resume: {key} is {saved[key]} in {checkpoint} but {now[key]} now; a resumed run keeps "
                              "its model, seed, batch size, unroll lengths and split (start a new run to change them)")
    if state["env"]["game"] != dataset.game:
        raise ConfigError(f"train.resume: the checkpoint was trained on {state['env']['game']} but {dataset.root} holds "
                          f"{dataset.game}; set data.dir to its dataset ({state['env']['dir']})")
    if state["step"] >= cfg.train.max_steps:
        raise ConfigError(f"train.resume: {checkpoint} is at step {state['step']}, train.max_steps is {cfg.train.max_steps}; "
                          "raise train.max_steps to train on")
    if cfg.train.max_minutes is not None and state["elapsed_s"] >= 60 * cfg.train.max_minutes:
        raise ConfigError(f"train.resume: {checkpoint} has trained {state['elapsed_s'] / 60:.1f} minutes, train.max_minutes is "
                          f"{cfg.train.max_minutes}; raise train.max_minutes to train on")


def trim_csv(path: Path, last_step: int) -> None:
    """Keep the header and the complete rows up to `last_step`: the rows after the checkpoint are logged again."""
    if not path.is_file():
        return
    header, *rows = path.read_text().splitlines(keepends=True) or [""]
    fields = header.count(",")

    def kept(row: str) -> bool:
        step = row.split(",", 1)[0]
        return row.endswith("\n") and row.count(",") == fields and step.isdigit() and int(step) <= last_step

    atomic_write_bytes(path, (header + "".join(filter(kept, rows))).encode())


def check_free_space(runs_dir: str, checkpoint_bytes: int) -> None:
    """ConfigError when the disk under runs_dir cannot hold two checkpoints and a run's other files."""
    (existing, free), needed = free_space(runs_dir), 2 * checkpoint_bytes + MIN_FREE_BYTES
    if free < needed:
        raise ConfigError(f"experiment.runs_dir: {human_bytes(free)} free at '{existing}', a run needs about {human_bytes(needed)}; "
                          "free some space or choose another experiment.runs_dir")


def pick_device(t: TrainConfig, ranks: Ranks = Ranks()) -> torch.device:
    return torch.device("cuda", ranks.local) if torch.cuda.is_available() and not t.cpu else torch.device("cpu")


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


def rollout_length(used: float, t: TrainConfig) -> int:
    """The unroll length of the curriculum stage at `used` of the budget (train.rollout_steps, rollout_stage_ends)."""
    return t.rollout_steps[bisect.bisect_right(t.rollout_stage_ends, used)]


@dataclass(frozen=True)
class FastPath:
    """How a training step runs on its device: the config's choices with their nulls ("auto") resolved."""

    device: torch.device
    autocast: torch.dtype | None  # the forward pass under torch.autocast in this dtype, or fp32
    compile: bool  # torch.compile the model for the training step
    channels_last: bool  # inputs in channels-last memory format (and the weights too, on CUDA: see prepare_model)
    pin_memory: bool  # the loader hands over page-locked batches, copied with non_blocking=True

    @classmethod
    def choose(cls, cfg: Config, device: torch.device) -> FastPath:
        cuda, t = device.type == "cuda", cfg.train
        precision = t.precision if t.precision != "auto" else ("bf16" if cuda else "fp32")
        return cls(device, torch.bfloat16 if precision == "bf16" else None, cuda if t.compile is None else t.compile,
                   CHANNELS_LAST[device.type] if t.channels_last is None else t.channels_last,
                   cuda if cfg.data.pin_memory is None else cfg.data.pin_memory)

    def __str__(self) -> str:
        return ", ".join([str(self.autocast).removeprefix("torch.") if self.autocast else "fp32",
                          "channels-last" if self.channels_last else "contiguous", "compiled" if self.compile else "eager"])


# Measured with benchmarks/bench_train.py (its "channels-last" row): see README, "Speed". The CUDA entry is
# PyTorch's advice for convolutions under bf16 autocast, not yet measured here (no GPU was lent).
CHANNELS_LAST = {"cpu": True, "cuda": True}


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW or Adam; on CUDA the fused kernels (one launch for all parameters)."""
    o = cfg.optimizer
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[o.name]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return cls(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **fused)


def prepare_model(model: nn.Module, fast: FastPath, ranks: Ranks = Ranks()) -> nn.Module:
    """Put `model` in the memory format of `fast`; returns what the training step calls: the model itself or its
    torch.compile'd wrapper (which shares its parameters; checkpoints save the model itself).

    Channels-last weights only on CUDA (cuDNN's NHWC kernels want both weights and inputs so). On the CPU,
    channels-last inputs alone give oneDNN's gain (measured: +5%, the same as both), and contiguous weights
    keep validation bit-identical to a model rebuilt from the checkpoint.
    """
    if fast.channels_last and fast.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = model
    if ranks.world > 1:  # averages the gradients over the processes during backward
        forward = nn.parallel.DistributedDataParallel(model, device_ids=[fast.device.index] if fast.device.type == "cuda" else None)
    return torch.compile(forward) if fast.compile else forward


def starts_within(dataset: ShardedDataset, rows: np.ndarray, k: int) -> np.ndarray:
    """Rows among `rows` where a window of k steps begins; a window stays in its start's episode, so a split by
    episode keeps it on its start's side."""
    starts = dataset.window_starts(k)
    return starts[np.isin(starts, rows)]


class SampleStream(Sampler[int]):
    """Endless sample indices, epoch after epoch, each epoch a permutation of range(n) drawn from (seed, epoch).

    The order is a function of the position alone, so a run resumed at step s reads on from sample
    s * batch_size exactly as the uninterrupted run did. Under torchrun, consecutive global batches of
    `batch` x `ranks.world` samples are cut from the one stream and this process reads its share of each:
    together the processes read what one process with the global batch would.
    """

    def __init__(self, n: int, seed: int, start: int = 0, batch: int = 1, ranks: Ranks = Ranks()) -> None:
        self.n, self.seed, self.start, self.batch, self.ranks = n, seed, start, batch, ranks

    def __iter__(self) -> Iterator[int]:
        stream = self.stream()
        if self.ranks.world == 1:
            yield from stream
            return
        first = self.ranks.rank * self.batch
        while True:
            yield from list(itertools.islice(stream, self.batch * self.ranks.world))[first : first + self.batch]

    def stream(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            yield from np.random.default_rng([self.seed, epoch]).permutation(self.n)[offset:].tolist()
            epoch, offset = epoch + 1, 0


def train_batches(dataset: ShardedDataset, starts: np.ndarray, k: int, cfg: Config, step: int,
                  pin_memory: bool = False, ranks: Ranks = Ranks()) -> Iterator[Batch]:
    """Endless shuffled batches of k-step training windows from optimizer step `step` on (the longest unroll of
    the curriculum: a shorter stage uses each window's first steps); this process's share under torchrun."""
    d, t = cfg.data, cfg.train
    return iter(DataLoader(
        WindowDataset(dataset.root, starts, k),
        batch_size=t.batch_size,
        sampler=SampleStream(len(starts), t.seed, step * t.batch_size * ranks.world, t.batch_size, ranks),
        collate_fn=collate,
        num_workers=d.num_workers,
        prefetch_factor=d.prefetch_factor,
        persistent_workers=d.persistent_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(t.seed),  # worker seeds; the global RNG is left alone
    ))


def fixed_val_batches(dataset: ShardedDataset, rows: np.ndarray, cfg: Config, ranks: Ranks = Ranks()) -> list[Batch]:
    """The same held-out samples at every validation (held in memory: val_batches x the global batch transitions);
    under torchrun, this process's share of them."""
    n = min(len(rows), cfg.train.val_batches * cfg.train.batch_size * ranks.world)
    chosen = np.sort(np.random.default_rng(cfg.train.seed).choice(rows, size=n, replace=False))
    samples = WindowDataset(dataset.root, chosen)
    size = cfg.train.batch_size
    batches = range(0, n, size)[ranks.rank :: ranks.world]
    return [collate([samples[i] for i in range(start, min(start + size, n))]) for start in batches]


def rollout_starts(dataset: ShardedDataset, val_rows: np.ndarray, cfg: Config) -> np.ndarray:
    """Rows in val episodes where a window of val_rollout_horizon steps begins, spread over the val set."""
    starts = starts_within(dataset, val_rows, cfg.train.val_rollout_horizon)
    if len(starts) == 0:
        return starts
    picks = np.linspace(0, len(starts) - 1, num=min(cfg.train.val_rollout_videos, len(starts))).round().astype(int)
    return starts[picks]


# ------------------------------------------------------------------------------------------ phases


def unrolled_loss(model: nn.Module, batch: Batch, k: int, t: TrainConfig) -> tuple[Tensor, dict[str, float], Tensor]:
    """The loss of k predictions in a row, each made from the model's own previous ones (Oh et al. 2015), with
    gradients through the whole unroll; k=1 is plain one-step training. Returns (loss, metrics, predictions (B, k, H, W)).
    """
    predicted, targets = unroll(model, batch.frames, batch.actions[:, :k]).float(), batch.targets[:, :k]  # (B, k, H, W)
    previous = torch.cat([batch.frames[:, -1:], targets[:, :-1]], dim=1)  # the true frame before each target
    loss, metrics = frame_loss(predicted, targets, t.loss, t.huber_delta, previous, t.changed_pixel_weight)
    return loss, metrics, predicted


def train_step(forward: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, k: int, t: TrainConfig,
               fast: FastPath) -> tuple[dict[str, Tensor], Tensor]:
    """Forward (autocast per `fast`) and backward of one batch with a k-step unroll, gradients clipped. Returns
    (metrics as 0-d tensors, predictions); the caller checks the metrics, then calls optimizer.step()."""
    if fast.channels_last:
        batch = Batch(batch.frames.contiguous(memory_format=torch.channels_last), batch.actions, batch.targets)
    with torch.autocast(fast.device.type, dtype=fast.autocast or torch.float32, enabled=fast.autocast is not None):
        loss, metrics, predicted = unrolled_loss(forward, batch, k, t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    metrics["grad_norm"] = nn.utils.clip_grad_norm_(forward.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
    return metrics, predicted


@torch.no_grad()
def validate(model: nn.Module, batches: list[Batch], cfg: Config, device: torch.device, ranks: Ranks = Ranks()) -> dict[str, float]:
    """Loss and MSE on the held-out samples, and the copy-last-frame baseline's MSE on the same samples (summed over
    the processes' shares under torchrun)."""
    model.eval()
    totals = {"loss": 0.0, "mse": 0.0, "copy_last_mse": 0.0}
    count = 0
    for batch in batches:
        b = batch.to(device)
        prediction = model(b.frames, b.actions[:, 0])
        loss, _ = frame_loss(prediction, b.targets, cfg.train.loss, cfg.train.huber_delta)
        totals["loss"] += loss.item() * len(b)
        totals["mse"] += mse_per_sample(prediction, b.targets).sum().item()
        totals["copy_last_mse"] += mse_per_sample(b.frames[:, -1:], b.targets).sum().item()
        count += len(b)
    model.train()
    *sums, count = distributed.total([*totals.values(), count], ranks)
    metrics = {f"val/{k}": v / count for k, v in zip(totals, sums)}
    metrics["val/ratio_to_copy"] = metrics["val/mse"] / max(metrics["val/copy_last_mse"], 1e-12)
    return metrics


def rollout_videos(model: nn.Module, dataset: ShardedDataset, starts: np.ndarray, horizon: int, device: torch.device, out: Path) -> list[Path]:
    """Open-loop rollouts from held-out windows, written as MP4: ground truth | prediction | error."""
    windows = [dataset.steps(int(s), horizon) for s in starts]
    context = frames_to_float(torch.from_numpy(np.stack([w.obs[0] for w in windows]))).to(device)  # (V, T, H, W)
    actions = torch.from_numpy(np.stack([w.action for w in windows])).to(device)  # (V, K)
    model.eval()
    predicted = rollout(model, context, actions).cpu().numpy()  # (V, K, H, W)
    model.train()
    paths = []
    for v, window in enumerate(windows):
        truth = window.next_obs[:, 0].astype(np.float32) / 255.0  # (K, H, W)
        paths.append(write_video(out.with_name(f"{out.name}_{v}.mp4"), rollout_frames(truth, predicted[v])))
    return paths


class CsvLog:
    """Rows appended to a CSV file with a fixed header, flushed at every row."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.columns = columns
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns, extrasaction="ignore")
        if self.file.tell() == 0:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class RunOutputs:
    """Everything a run writes besides resolved_config.yaml: CSVs, strips, videos, checkpoints, the logger.

    It holds run_dir/.lock from the start, so that a run folder never has two writers (a resume of a run that
    is still going is refused). A resumed run (`resumed_at` its checkpoint's step) first drops what the killed
    process wrote after that checkpoint: CSV rows, and temporary files of writes it did not finish.
    """

    def __init__(self, run_dir: Path, resumed_at: int | None = None, best_mse: float = math.inf) -> None:
        self.run_dir, self.best_mse, self.logger = run_dir, best_mse, None
        try:
            self.lock, holder = try_lock(run_dir / ".lock")
        except OSError as e:
            raise ConfigError(f"cannot write to the run folder '{run_dir}' ({e.strerror}); fix its permissions") from None
        if self.lock is None:
            raise ConfigError(f"train.resume: another training (pid {holder}) is writing to '{run_dir}'; wait for it to end or stop it")
        if resumed_at is not None:
            for name in ("metrics.csv", "val_metrics.csv"):
                trim_csv(run_dir / name, resumed_at)
            for folder in (run_dir, *(run_dir / sub for sub in ("checkpoints", "images", "videos"))):
                for tmp in folder.glob(".*.tmp*"):
                    tmp.unlink()
        self.train_csv = CsvLog(run_dir / "metrics.csv",
                                ["step", "loss", "mse", "lr", "grad_norm", "rollout_steps", "samples_per_s", "elapsed_s"])
        self.val_csv = CsvLog(run_dir / "val_metrics.csv", ["step", "loss", "mse", "copy_last_mse", "ratio_to_copy", "elapsed_s"])

    def train_step(self, step: int, row: dict[str, float], strip: np.ndarray) -> None:
        self.train_csv.write({"step": step, **row})
        self.logger.log({f"train/{k}": v for k, v in row.items()}, step)
        save_png(self.run_dir / "images" / f"step_{step:06d}.png", strip)
        self.logger.log_image("train/prediction", strip, step)

    def validation(self, step: int, metrics: dict[str, float], elapsed: float) -> None:
        self.val_csv.write({"step": step, **{k.removeprefix("val/"): v for k, v in metrics.items()}, "elapsed_s": elapsed})
        self.logger.log(metrics, step)

    def videos(self, step: int, paths: list[Path]) -> None:
        for v, path in enumerate(paths):
            self.logger.log_video(f"val/rollout_{v}", path, step)

    def checkpoint(self, state: dict[str, Any], val_mse: float) -> None:
        """best.pt when val_mse is the lowest so far, then last.pt. In this order, a kill between the two leaves a
        last.pt whose best_mse does not yet count this step, so a resume writes best.pt again."""
        if val_mse < self.best_mse:
            self.best_mse = val_mse
            save_checkpoint(self.run_dir / "checkpoints" / "best.pt", state)
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", state)

    def close(self) -> None:
        self.train_csv.close()
        self.val_csv.close()
        if self.logger is not None:
            self.logger.close()
        self.lock.close()


class QuietOutputs:
    """What the processes other than rank 0 write under torchrun: nothing."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.logger = run_dir, NullLogger()

    def train_step(self, *args: Any) -> None:
        pass

    def validation(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------ loop


def train(cfg: Config) -> dict[str, Any]:
    """Train per `cfg` (continuing the run of cfg.train.resume if set); returns the final validation metrics,
    the step reached and the run folder. Under torchrun, this process's part of a distributed run."""
    ranks = distributed.start(cfg.train.cpu)
    try:
        return train_ranks(cfg, ranks)
    finally:
        distributed.stop(ranks)


def train_ranks(cfg: Config, ranks: Ranks) -> dict[str, Any]:
    """Set up the data, the model and the run folder (rank 0's), then run the loop."""
    check_wandb(cfg.experiment.wandb)
    dataset, train_rows, val_rows = open_data(cfg)
    checkpoint, state = None, None
    if cfg.train.resume is not None:
        checkpoint = find_checkpoint(cfg.train.resume, cfg.experiment.runs_dir)
        state = load_checkpoint(checkpoint)
        check_resumable(state, cfg, dataset, checkpoint)
        cfg.train.resume = str(checkpoint)  # what `auto` or a run folder meant, for the log and the saved config

    seed_everything(cfg.train.seed)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train, ranks)
    fast = FastPath.choose(cfg, device)
    env = dataset.manifest["env"]
    model = build_model(cfg.model, dataset.num_actions, env["context_frames"], env["screen_size"]).to(device)
    forward = prepare_model(model, fast, ranks)
    optimizer = make_optimizer(model, cfg, device)
    params = sum(p.numel() for p in model.parameters())
    if ranks.main:
        check_free_space(cfg.experiment.runs_dir, 3 * 4 * params)  # float32 weights and two Adam moments
    longest = max(cfg.train.rollout_steps)
    starts = starts_within(dataset, train_rows, longest)
    if len(starts) < cfg.train.batch_size:
        raise ConfigError(f"train.rollout_steps: only {len(starts)} training windows of {longest} steps, fewer than "
                          f"train.batch_size {cfg.train.batch_size}; shorten the unroll or record longer episodes")
    step, best_mse = 0, math.inf
    if state is not None:
        load_weights(model, state)
        optimizer.load_state_dict(state["optimizer"])
        step, best_mse = state["step"], state.get("best_mse", math.inf)
    dataset_info = {"dir": str(dataset.root), "game": dataset.game, "num_actions": dataset.num_actions,
                    "action_meanings": dataset.manifest["action_meanings"], "env": env, "seed": dataset.manifest["seed"],
                    "train_rows": len(train_rows), "val_rows": len(val_rows), "processes": ranks.world,
                    "global_batch": cfg.train.batch_size * ranks.world}
    videos = cfg.train.val_rollout_enabled and ranks.main
    session = Session(cfg, model, forward, optimizer, fast, dataset, dataset_info,
                      batches=train_batches(dataset, starts, longest, cfg, step, fast.pin_memory, ranks),
                      val_batches=fixed_val_batches(dataset, val_rows, cfg, ranks),
                      video_starts=rollout_starts(dataset, val_rows, cfg) if videos else np.zeros(0, dtype=np.int64),
                      state=state, ranks=ranks)

    if ranks.main:
        run_dir = checkpoint.parent.parent if checkpoint else create_run_dir(cfg, dataset.game)
        outputs = RunOutputs(run_dir, step if checkpoint else None, best_mse)
    run_dir = distributed.from_main(run_dir if ranks.main else None, ranks)
    if not ranks.main:
        outputs = QuietOutputs(run_dir)  # no videos (none are started) and no checkpoints (rank 0 saves them)
    try:
        return train_loop(session, outputs)
    finally:
        outputs.close()


@dataclass
class Session:
    """What the training loop works with, as train() set it up."""

    cfg: Config
    model: nn.Module  # what checkpoints save and validation calls
    forward: nn.Module  # what the training step calls: the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    fast: FastPath
    dataset: ShardedDataset
    dataset_info: dict  # saved in checkpoints as "env"
    batches: Iterator[Batch]
    val_batches: list[Batch]
    video_starts: np.ndarray  # rows where the validation rollout videos start
    state: dict | None  # the checkpoint resumed from
    ranks: Ranks = Ranks()

    def say(self, *args: Any, **kwargs: Any) -> None:
        """print, on rank 0 only."""
        if self.ranks.main:
            print(*args, **kwargs, flush=True)


def train_loop(s: Session, outputs: RunOutputs) -> dict[str, Any]:
    """Optimizer steps from the resumed checkpoint's step (or 0) until the budget is spent, with logging, validation
    and checkpoints into `outputs`."""
    cfg, model, optimizer, state, device, ranks, say = s.cfg, s.model, s.optimizer, s.state, s.fast.device, s.ranks, s.say
    run_dir = outputs.run_dir
    if ranks.main:
        atomic_write_bytes(run_dir / "resolved_config.yaml", to_yaml(cfg).encode())
        outputs.logger = make_logger(cfg.experiment.wandb, run_dir, run_dir.name, {**to_dict(cfg), "dataset": s.dataset_info},
                                     run_id=state.get("wandb_id") if state else None)
    logger = outputs.logger
    say(f"{to_yaml(cfg)}\nrun {run_dir}\ndata {s.dataset.root}: {s.dataset.game}, {s.dataset_info['train_rows']:,} train / "
        f"{s.dataset_info['val_rows']:,} val transitions")
    say(f"model {cfg.model.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {device} ({s.fast})")
    if ranks.world > 1:
        say(f"{ranks.world} processes x train.batch_size {cfg.train.batch_size} = global batch {cfg.train.batch_size * ranks.world}")
    if state is not None:
        say(f"resuming {run_dir} from {Path(cfg.train.resume).name} at step {state['step']}")
        set_rng_state(state["rng"])  # last: building the model and the loaders drew from the RNGs

    t = cfg.train
    step = state["step"] if state else 0
    elapsed = state["elapsed_s"] if state else 0.0
    start = time.perf_counter() - elapsed  # a resumed run's clock goes on from its checkpoint
    window_start, window_samples = time.perf_counter(), 0
    last_val: dict[str, float] = dict(state["val"]) if state else {}
    validations = step // t.val_every_steps  # so that val_rollout_every keeps its rhythm across a resume
    last_saved = f"{cfg.train.resume} (step {step})" if state else "none yet"
    try:
        while step < t.max_steps:
            used = budget_used(step, elapsed, t)
            k = rollout_length(used, t)
            for group in optimizer.param_groups:
                group["lr"] = cfg.optimizer.lr * lr_factor(step, used, t)
            batch = next(s.batches).to(device, non_blocking=True)
            tensors, predicted = train_step(s.forward, optimizer, batch, k, t, s.fast)
            logging = (step + 1) % t.log_every == 0 or (step + 1) % t.val_every_steps == 0 or step + 1 == t.max_steps
            # Reading a value waits for the GPU, so there the check runs when the metrics are read anyway: a NaN
            # can spoil the weights for a few steps, but no checkpoint is written from them (validation checks too).
            if device.type == "cpu" or logging:
                metrics = {key: value.item() for key, value in tensors.items()}
                if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
                    raise UserError(f"training diverged at step {step + 1} (loss {metrics['loss']:.4g}, gradient norm "
                                    f"{metrics['grad_norm']:.4g}); the last good checkpoint is {last_saved}: continue from it "
                                    f"with a lower learning rate, e.g. train.resume={run_dir} optimizer.lr={cfg.optimizer.lr / 3:.2g}")
            optimizer.step()
            step += 1
            window_samples += len(batch)
            elapsed = time.perf_counter() - start
            if t.max_minutes is not None:  # the schedule and the stop follow rank 0's clock, so every process steps alike
                elapsed = distributed.from_main(elapsed, ranks)
            out_of_time = t.max_minutes is not None and elapsed >= 60 * t.max_minutes
            last_step = step == t.max_steps or out_of_time

            if step % t.log_every == 0 or last_step:
                metrics = distributed.mean({key: value.item() for key, value in tensors.items()}, ranks)  # of the global batch
                now = time.perf_counter()
                rate = ranks.world * window_samples / max(now - window_start, 1e-9)
                window_start, window_samples = now, 0
                strip = prediction_strip(batch.frames[0].cpu().numpy(), predicted[0, 0].detach().cpu().numpy(),
                                         batch.targets[0, 0].cpu().numpy())
                outputs.train_step(step, {**metrics, "lr": optimizer.param_groups[0]["lr"], "rollout_steps": k,
                                          "samples_per_s": rate, "elapsed_s": elapsed}, strip)
                remaining = (t.max_steps - step) * t.batch_size * ranks.world / max(rate, 1e-9)
                if t.max_minutes is not None:
                    remaining = min(remaining, 60 * t.max_minutes - elapsed)
                ratio = f"{last_val['val/ratio_to_copy']:.3f}" if last_val else "-"
                unroll = f" | unroll {k}" if max(t.rollout_steps) > 1 else ""
                say(f"step {step}/{t.max_steps} | loss {metrics['loss']:.3g}{unroll} | val/copy {ratio} | "
                    f"{rate:.0f} samples/s | ETA {format_eta(remaining)}")

            if step % t.val_every_steps == 0 or last_step:
                last_val = validate(model, s.val_batches, cfg, device, ranks)
                validations += 1
                outputs.validation(step, last_val, elapsed)
                say(f"validation at step {step}: mse {last_val['val/mse']:.3g}, copy-last {last_val['val/copy_last_mse']:.3g}, "
                    f"ratio {last_val['val/ratio_to_copy']:.3f}")
                if len(s.video_starts) and (validations % t.val_rollout_every == 0 or last_step):
                    outputs.videos(step, rollout_videos(model, s.dataset, s.video_starts, t.val_rollout_horizon, device,
                                                        run_dir / "videos" / f"rollout_step_{step:06d}"))
                if not math.isfinite(last_val["val/mse"]):
                    raise UserError(f"training diverged: the validation MSE is {last_val['val/mse']} at step {step}; the last "
                                    f"good checkpoint is {last_saved}: continue from it with a lower learning rate, "
                                    f"e.g. train.resume={run_dir} optimizer.lr={cfg.optimizer.lr / 3:.2g}")
                if ranks.main:
                    outputs.checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                        "elapsed_s": elapsed, "config": to_dict(cfg), "env": s.dataset_info, "val": last_val,
                                        "rng": rng_state(), "best_mse": min(outputs.best_mse, last_val["val/mse"]),
                                        "wandb_id": logger.run_id}, last_val["val/mse"])
                last_saved = f"{run_dir / 'checkpoints' / 'last.pt'} (step {step})"
            if out_of_time:
                say(f"stopping at step {step}: train.max_minutes={t.max_minutes} reached")
                break
    except KeyboardInterrupt:
        print(f"stopped at step {step}; continue from the last checkpoint with: python -m src.train train.resume={run_dir}",
              file=sys.stderr, flush=True)
        raise

    say(f"done: {step} steps in {format_eta(time.perf_counter() - start)}; val MSE {last_val['val/mse']:.3g} = "
        f"{last_val['val/ratio_to_copy']:.3f} x copy-last; run folder {run_dir}")
    return {**last_val, "step": step, "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config.yaml", help="YAML file with the settings (default config.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides in dot notation, e.g. train.max_steps=5")
    args = p.parse_args(argv)
    train(resume_config(args.config, args.overrides))
    return 0


if __name__ == "__main__":
    run_cli(main)
