"""Torch side of the dataset: episode split, a Dataset of k-step windows, and Batch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from src.dataset.shards import ShardedDataset
from src.utils.frames import frames_to_float


@dataclass
class Batch:
    """B windows of K steps: a context, the K actions taken from it and the K frames that followed."""

    frames: Tensor  # (B, T, H, W): the context, uint8 from the loader, float in [0, 1] after .to()
    actions: Tensor  # (B, K) int64
    targets: Tensor  # (B, K, H, W): the frame after each action, same dtype as frames
    rewards: Tensor | None = None  # (B, K) float32: the reward of each step
    dones: Tensor | None = None  # (B, K) bool: whether the episode ends at each step

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move to `device` and normalise: uint8 crosses to the GPU, 4x smaller than float."""
        move = lambda x: x if x is None else x.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            frames_to_float(move(self.frames)),
            move(self.actions),
            frames_to_float(move(self.targets)),
            move(self.rewards),
            move(self.dones),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies, which the DataLoader's pin_memory=True calls: then .to(cuda, non_blocking=True)
        overlaps."""
        pin = lambda x: x if x is None else x.pin_memory()  # noqa: E731
        return Batch(*(pin(x) for x in (self.frames, self.actions, self.targets, self.rewards, self.dones)))

    def steps_from(self, n: int) -> Batch:
        """The per-step fields from step n on (the context left as it is)."""
        cut = lambda x: x if x is None else x[:, n:]  # noqa: E731
        return Batch(self.frames, self.actions[:, n:], self.targets[:, n:], cut(self.rewards), cut(self.dones))

    def __len__(self) -> int:
        return len(self.actions)


def collate(samples: list[tuple[np.ndarray, ...]]) -> Batch:
    """WindowDataset's samples -> one Batch."""
    return Batch(*(torch.from_numpy(np.stack(x)) for x in zip(*samples)))


def split_episodes(episodes: np.ndarray, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the train and val sets, split by whole episodes (neighbouring frames are near-copies, so a
    row-level split would leak). episodes: (N,) episode id of every row. Returns sorted row indices."""
    ids = np.unique(episodes)
    if len(ids) < 2:
        raise ValueError(f"the dataset has {len(ids)} episode(s); a train/val split by episode needs at least 2")
    n_val = min(len(ids) - 1, max(1, math.ceil(val_ratio * len(ids))))
    val_ids = np.random.default_rng(seed).permutation(ids)[:n_val]
    is_val = np.isin(episodes, val_ids)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class WindowDataset(Dataset):
    """Windows of k consecutive steps of one episode, read from the memory-mapped shards (opened lazily per worker),
    in either layout.

    starts: global rows where a window begins, from ShardedDataset.window_starts(k), so no window crosses an
    episode end. k=1 gives single transitions.
    """

    def __init__(self, root: str | Path, starts: np.ndarray, k: int = 1) -> None:
        self.data = ShardedDataset(root, verify="none")  # the caller validated the dataset once
        self.starts, self.k = starts, k

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        """(context (T, H, W) uint8, actions (k,) int64, targets (k, H, W) uint8, rewards (k,) float32, dones (k,)
        bool), copied out of the memory maps."""
        pos, row = self.data.locate(int(self.starts[i]))
        array, window = self.data.array, slice(row, row + self.k)
        return (
            self.data.frames(pos, "obs", row),
            np.array(array(pos, "action")[window]),
            self.data.frames(pos, "next_obs", window)[:, 0],
            np.array(array(pos, "reward")[window], dtype=np.float32),
            np.array(array(pos, "done")[window], dtype=bool),
        )
