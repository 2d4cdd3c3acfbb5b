"""Train a next-frame world model offline on a recorded dataset.

    python -m src.train [--config config.yaml] [key=value ...]      e.g. optimizer.lr=1e-4 train.max_steps=5

Writes runs/<YYYYmmdd-HHMMSS>_<game>/: metrics.csv, val_metrics.csv, images/, videos/, checkpoints/
(last.pt, best.pt), resolved_config.yaml, and wandb/ when experiment.wandb.mode is not disabled.
"""

from __future__ import annotations

import bisect
import csv
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from src.config import Config, ConfigError, TrainConfig, load_config, to_dict, to_yaml
from src.dataset.atari import resolve_game
from src.dataset.offline_dataset import Batch, WindowDataset, collate, frames_to_float, split_episodes
from src.dataset.shards import ShardedDataset
from src.models.rollout import rollout, unroll
from src.models.world_model import build_model
from src.utils.checkpoint import save_checkpoint
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.images import prediction_strip, save_png
from src.utils.io import create_timestamped_dir
from src.utils.logging import Logger, check_wandb, make_logger
from src.utils.metrics import frame_loss, mse_per_sample
from src.utils.seed import seed_everything
from src.utils.video import rollout_frames, write_video


# ------------------------------------------------------------------------------------------ set-up


def open_data(cfg: Config) -> tuple[ShardedDataset, np.ndarray, np.ndarray]:
    """The validated dataset and its train/val rows; every disagreement with the config is a ConfigError."""
    try:
        dataset = ShardedDataset(cfg.data.dir, verify=cfg.data.verify)
    except UserError as e:
        raise ConfigError(f"data.dir: {e}") from None
    if cfg.data.game is not None and resolve_game(cfg.data.game) != dataset.game:
        raise ConfigError(f"data.game is {cfg.data.game} but the dataset in {cfg.data.dir} is {dataset.game}")
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


def pick_device(t: TrainConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not t.cpu else "cpu")


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


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optimizer
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[o.name]
    return cls(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def starts_within(dataset: ShardedDataset, rows: np.ndarray, k: int) -> np.ndarray:
    """Rows among `rows` where a window of k steps begins; a window stays in its start's episode, so a split by
    episode keeps it on its start's side."""
    starts = dataset.window_starts(k)
    return starts[np.isin(starts, rows)]


def train_batches(dataset: ShardedDataset, starts: np.ndarray, k: int, cfg: Config, generator: torch.Generator) -> Iterator[Batch]:
    """Endless shuffled batches of k-step training windows, epoch after epoch (the longest unroll of the curriculum:
    a shorter stage uses each window's first steps)."""
    d = cfg.data
    loader = DataLoader(
        WindowDataset(dataset.root, starts, k),
        batch_size=cfg.train.batch_size,
        sampler=RandomSampler(range(len(starts)), generator=generator),
        drop_last=True,
        collate_fn=collate,
        num_workers=d.num_workers,
        prefetch_factor=d.prefetch_factor,
        persistent_workers=d.persistent_workers,
        pin_memory=d.pin_memory,
    )
    while True:
        yield from loader


def fixed_val_batches(dataset: ShardedDataset, rows: np.ndarray, cfg: Config) -> list[Batch]:
    """The same held-out samples at every validation (held in memory: val_batches x batch_size transitions)."""
    n = min(len(rows), cfg.train.val_batches * cfg.train.batch_size)
    chosen = np.sort(np.random.default_rng(cfg.train.seed).choice(rows, size=n, replace=False))
    samples = WindowDataset(dataset.root, chosen)
    size = cfg.train.batch_size
    return [collate([samples[i] for i in range(start, min(start + size, n))]) for start in range(0, n, size)]


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
    predicted, targets = unroll(model, batch.frames, batch.actions[:, :k]), batch.targets[:, :k]  # (B, k, H, W)
    previous = torch.cat([batch.frames[:, -1:], targets[:, :-1]], dim=1)  # the true frame before each target
    loss, metrics = frame_loss(predicted, targets, t.loss, t.huber_delta, previous, t.changed_pixel_weight)
    return loss, metrics, predicted


@torch.no_grad()
def validate(model: nn.Module, batches: list[Batch], cfg: Config, device: torch.device) -> dict[str, float]:
    """Loss and MSE on the held-out samples, and the copy-last-frame baseline's MSE on the same samples."""
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
    metrics = {f"val/{k}": v / count for k, v in totals.items()}
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
    """Everything a run writes besides resolved_config.yaml: CSVs, strips, videos, checkpoints, the logger."""

    def __init__(self, run_dir: Path, logger: Logger) -> None:
        self.run_dir, self.logger, self.best_mse = run_dir, logger, math.inf
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
        """last.pt always; best.pt when val_mse is the lowest so far."""
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", state)
        if val_mse < self.best_mse:
            self.best_mse = val_mse
            save_checkpoint(self.run_dir / "checkpoints" / "best.pt", state)

    def close(self) -> None:
        self.train_csv.close()
        self.val_csv.close()
        self.logger.close()


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------ loop


def train(cfg: Config) -> dict[str, Any]:
    """Train per `cfg`; returns the final validation metrics, the step reached and the run folder."""
    check_wandb(cfg.experiment.wandb)
    dataset, train_rows, val_rows = open_data(cfg)
    run_dir = create_run_dir(cfg, dataset.game)
    (run_dir / "resolved_config.yaml").write_text(to_yaml(cfg))
    print(f"{to_yaml(cfg)}\nrun {run_dir}\ndata {dataset.root}: {dataset.game}, {len(train_rows):,} train / {len(val_rows):,} val transitions", flush=True)

    generator = seed_everything(cfg.train.seed)
    device = pick_device(cfg.train)
    env = dataset.manifest["env"]
    model = build_model(cfg.model, dataset.num_actions, env["context_frames"], env["screen_size"]).to(device)
    optimizer = make_optimizer(model, cfg)
    longest = max(cfg.train.rollout_steps)
    starts = starts_within(dataset, train_rows, longest)
    if len(starts) < cfg.train.batch_size:
        raise ConfigError(f"train.rollout_steps: only {len(starts)} training windows of {longest} steps, fewer than "
                          f"train.batch_size {cfg.train.batch_size}; shorten the unroll or record longer episodes")
    batches = train_batches(dataset, starts, longest, cfg, generator)
    val_batches = fixed_val_batches(dataset, val_rows, cfg)
    video_starts = rollout_starts(dataset, val_rows, cfg) if cfg.train.val_rollout_enabled else np.zeros(0, dtype=np.int64)
    dataset_info = {"dir": str(dataset.root), "game": dataset.game, "num_actions": dataset.num_actions,
                    "action_meanings": dataset.manifest["action_meanings"], "env": env, "seed": dataset.manifest["seed"]}
    logger: Logger = make_logger(cfg.experiment.wandb, run_dir, run_dir.name, {**to_dict(cfg), "dataset": dataset_info})
    outputs = RunOutputs(run_dir, logger)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {cfg.model.name}: {params / 1e6:.2f}M parameters on {device}", flush=True)

    t = cfg.train
    start = time.perf_counter()
    window_start, window_samples = start, 0
    last_val: dict[str, float] = {}
    validations, step = 0, 0
    try:
        while step < t.max_steps:
            used = budget_used(step, time.perf_counter() - start, t)
            k = rollout_length(used, t)
            for group in optimizer.param_groups:
                group["lr"] = cfg.optimizer.lr * lr_factor(step, used, t)
            batch = next(batches).to(device, non_blocking=True)
            loss, metrics, predicted = unrolled_loss(model, batch, k, t)
            if not math.isfinite(metrics["loss"]):
                raise UserError(f"the loss became {metrics['loss']} at step {step + 1}; lower optimizer.lr "
                                f"(the last good checkpoint is in {run_dir / 'checkpoints'})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
            optimizer.step()
            step += 1
            window_samples += len(batch)
            elapsed = time.perf_counter() - start
            out_of_time = t.max_minutes is not None and elapsed >= 60 * t.max_minutes
            last_step = step == t.max_steps or out_of_time

            if step % t.log_every == 0 or last_step:
                now = time.perf_counter()
                rate = window_samples / max(now - window_start, 1e-9)
                window_start, window_samples = now, 0
                strip = prediction_strip(batch.frames[0].cpu().numpy(), predicted[0, 0].detach().cpu().numpy(),
                                         batch.targets[0, 0].cpu().numpy())
                outputs.train_step(step, {**metrics, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm.item(),
                                          "rollout_steps": k, "samples_per_s": rate, "elapsed_s": elapsed}, strip)
                remaining = (t.max_steps - step) * t.batch_size / max(rate, 1e-9)
                if t.max_minutes is not None:
                    remaining = min(remaining, 60 * t.max_minutes - elapsed)
                ratio = f"{last_val['val/ratio_to_copy']:.3f}" if last_val else "-"
                unroll = f" | unroll {k}" if longest > 1 else ""
                print(f"step {step}/{t.max_steps} | loss {metrics['loss']:.3g}{unroll} | val/copy {ratio} | "
                      f"{rate:.0f} samples/s | ETA {format_eta(remaining)}", flush=True)

            if step % t.val_every_steps == 0 or last_step:
                last_val = validate(model, val_batches, cfg, device)
                validations += 1
                outputs.validation(step, last_val, elapsed)
                print(f"validation at step {step}: mse {last_val['val/mse']:.3g}, copy-last {last_val['val/copy_last_mse']:.3g}, "
                      f"ratio {last_val['val/ratio_to_copy']:.3f}", flush=True)
                if len(video_starts) and (validations % t.val_rollout_every == 0 or last_step):
                    outputs.videos(step, rollout_videos(model, dataset, video_starts, t.val_rollout_horizon, device,
                                                        run_dir / "videos" / f"rollout_step_{step:06d}"))
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed_s": elapsed,
                         "config": to_dict(cfg), "env": dataset_info, "val": last_val}
                outputs.checkpoint(state, last_val["val/mse"])
            if out_of_time:
                print(f"stopping at step {step}: train.max_minutes={t.max_minutes} reached", flush=True)
                break
    finally:
        outputs.close()

    print(f"done: {step} steps in {format_eta(time.perf_counter() - start)}; val MSE {last_val['val/mse']:.3g} = "
          f"{last_val['val/ratio_to_copy']:.3f} x copy-last; run folder {run_dir}", flush=True)
    return {**last_val, "step": step, "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config.yaml", help="YAML file with the settings (default config.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides in dot notation, e.g. train.max_steps=5")
    args = p.parse_args(argv)
    train(load_config(args.config, args.overrides))
    return 0


if __name__ == "__main__":
    run_cli(main)
