"""What training reads: the validated dataset and its split, endless shuffled training batches, the fixed
validation batches and the starts of the validation rollout videos.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from src.config import Config, ConfigError
from src.dataset.offline_dataset import Batch, WindowDataset, collate, split_episodes
from src.dataset.shards import ShardedDataset
from src.envs.atari import resolve_game
from src.utils.distributed import Ranks
from src.utils.errors import UserError


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


PALETTE_SAMPLES = 1000  # training frames counted for the palette, spread evenly over the training rows


def frame_palette(dataset: ShardedDataset, rows: np.ndarray, size: int) -> tuple[list[int], float]:
    """The `size` commonest grey levels of the training frames (each sampled row's next frame), increasing, and the
    share of the sampled pixels that they cover: model.palette, for palette feedback or output."""
    counts = np.zeros(256, dtype=np.int64)
    for i in np.linspace(0, len(rows) - 1, num=min(PALETTE_SAMPLES, len(rows))).round().astype(int):
        pos, local = dataset.locate(int(rows[i]))
        counts += np.bincount(np.asarray(dataset.array(pos, "next_obs")[local, -1]).ravel(), minlength=256)
    levels = np.sort(np.argsort(-counts, kind="stable")[:size])
    return levels.tolist(), float(counts[levels].sum() / counts.sum())
