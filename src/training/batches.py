"""The batches training reads: endless shuffled training batches (read from the memory maps, or gathered from the
dataset held in the training device's memory: data.on_device), the event head's batches rich in rewards and ends,
the fixed validation batches and rollout windows, and the starts of the validation rollout videos."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from src.config import Config, ConfigError
from src.dataset.offline_dataset import Batch, WindowDataset, collate
from src.dataset.schema import STEPS
from src.dataset.shards import ShardedDataset
from src.training.data import starts_within
from src.utils.distributed import Ranks
from src.utils.io import human_bytes


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
            yield from epoch_order(self.n, self.seed, epoch)[offset:].tolist()
            epoch, offset = epoch + 1, 0


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The samples of one epoch in the order they are read: a permutation of range(n) drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(
    dataset: ShardedDataset,
    starts: np.ndarray,
    k: int,
    cfg: Config,
    step: int,
    pin_memory: bool = False,
    ranks: Ranks = Ranks(),
) -> Iterator[Batch]:
    """Endless shuffled batches of k-step training windows from optimizer step `step` on (the longest unroll of
    the curriculum: a shorter stage uses each window's first steps); this process's share under torchrun."""
    d, t = cfg.data, cfg.train
    return iter(
        DataLoader(
            WindowDataset(dataset.root, starts, k),
            batch_size=t.batch_size,
            sampler=SampleStream(len(starts), t.seed, step * t.batch_size * ranks.world, t.batch_size, ranks),
            collate_fn=collate,
            num_workers=d.num_workers,
            prefetch_factor=d.prefetch_factor,
            persistent_workers=d.persistent_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(t.seed),  # worker seeds; the global RNG is left alone
        )
    )


# ---------------------------------------------------------------------------------------------- data on the device

DEVICE_SHARE, DEVICE_RESERVE = (
    0.8,
    2 << 30,
)  # the arrays may take 80% of the free memory less 2 GiB (model, activations)
ORDER_STEPS = 256  # optimizer steps whose sample order is drawn on the host and uploaded in one copy
STAGING_BYTES = 64 << 20  # the pinned host buffer that shards pass through on their way to a GPU
COMPACT_CHUNKS = 16  # chunks of a compact-layout store decoded at a time on their way to the device (~29 MB)


def device_arrays_bytes(dataset: ShardedDataset) -> int:
    """Bytes that DeviceBatches holds for `dataset`: per row the action (8), reward (4) and end (1), and the frames: in
    the contract's layout each row's context (T, H, W) and next frame (H, W) as uint8, in the compact one each frame
    once (H, W) and per row where its stack ends (8) and how much of it is real (1)."""
    t, h, w = dataset.stack
    if dataset.layout == STEPS:
        return len(dataset) * ((t + 1) * h * w + 8 + 4 + 1)
    return sum(s["frames"] for s in dataset.shards) * h * w + len(dataset) * (8 + 1 + 8 + 4 + 1)


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: the GPU's free memory on CUDA, the host's available memory (MemAvailable) otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_on_device(nbytes: int, device: torch.device) -> tuple[bool, int]:
    """Whether `nbytes` of data may live on `device`, and its free bytes. The rule: at most DEVICE_SHARE (80%) of the
    free memory less DEVICE_RESERVE (2 GiB), which leaves room for the model, the optimizer and the activations (on
    the CPU: for the rest of the process and the system)."""
    free = free_memory(device)
    return nbytes <= DEVICE_SHARE * free - DEVICE_RESERVE, free


def copy_rows(dest: Tensor, source: np.ndarray, staging: Tensor | None) -> None:
    """dest[:] = source (a memory map's rows): on the host in place, to a GPU through `staging` (pinned uint8 bytes),
    so that no more than one staging buffer of the data is ever on the host besides the page cache."""
    if staging is None:
        dest.numpy()[...] = source
        return
    rows = max(1, len(staging) // max(dest[0].nbytes, 1))
    for i in range(0, len(dest), rows):
        part = dest[i : i + rows]
        buffer = staging[: part.nbytes].view(dest.dtype).view(part.shape)
        buffer.numpy()[...] = source[i : i + len(part)]
        part.copy_(buffer)  # synchronous: the buffer is refilled next


class DeviceBatches:
    """Endless training batches gathered from the whole dataset held in `device`'s memory: the same batches, byte for
    byte and in the same order, as train_batches(dataset, starts, k, cfg, step, ranks=ranks) reads from disk, uint8
    frames on the device (Batch.to then only makes them float). The order is SampleStream's, a function of the position
    alone, so a resumed run reads on exactly; it is drawn on the host ORDER_STEPS steps at a time and uploaded in one
    small copy, and each batch is a few gathers on the device, with no wait for it."""

    def __init__(
        self,
        dataset: ShardedDataset,
        starts: np.ndarray,
        k: int,
        cfg: Config,
        step: int,
        device: torch.device,
        ranks: Ranks = Ranks(),
    ) -> None:
        self.starts, self.k, self.device, self.ranks = np.asarray(starts, dtype=np.int64), k, device, ranks
        self.batch, self.seed, self.step = cfg.train.batch_size, cfg.train.seed, step
        n, (t, h, w) = len(dataset), dataset.stack
        frames = (
            {
                "obs": torch.empty((n, t, h, w), dtype=torch.uint8, device=device),  # (N, T, H, W) contexts
                "next_obs": torch.empty((n, h, w), dtype=torch.uint8, device=device),  # (N, H, W) next frames
            }
            if dataset.layout == STEPS
            else {  # the compact layout: each frame once, in `store`; a row's stack ends at `frame`
                "frame": torch.empty(n, dtype=torch.int64, device=device),
                "context": torch.empty(n, dtype=torch.uint8, device=device),
            }
        )
        self.arrays = {
            **frames,
            "action": torch.empty(n, dtype=torch.int64, device=device),
            "reward": torch.empty(n, dtype=torch.float32, device=device),
            "done": torch.empty(n, dtype=torch.bool, device=device),
        }
        staging = torch.empty(STAGING_BYTES, dtype=torch.uint8, pin_memory=True) if device.type == "cuda" else None
        self.store: Tensor | None = None  # (F, H, W) every frame of the compact layout's shards, one after another
        first = np.concatenate([[0], np.cumsum([s.get("frames", 0) for s in dataset.shards])])  # each shard's in it
        if dataset.layout != STEPS:
            self.store = torch.empty((int(first[-1]), h, w), dtype=torch.uint8, device=device)
            self.stack_offsets = torch.arange(1 - t, 1, device=device)  # (T,): oldest first
        for pos in range(len(dataset.shards)):  # shard by shard, straight from the memory maps
            rows = slice(int(dataset.offsets[pos]), int(dataset.offsets[pos + 1]))
            for field, dest in self.arrays.items():
                source = dataset.array(pos, field)
                if field == "frame":  # where in `store`
                    source = np.asarray(source, dtype=np.int64) + first[pos]
                copy_rows(
                    dest[rows], source[:, 0] if field == "next_obs" else source, staging
                )  # next_obs: (rows, 1, H, W)
            if self.store is not None:  # decoded a few chunks at a time
                store, step = dataset.store(pos), COMPACT_CHUNKS * dataset.manifest.layout["chunk_frames"]
                for begin in range(0, store.count, step):
                    decoded = store.get(np.arange(begin, min(begin + step, store.count)))
                    at = int(first[pos]) + begin
                    copy_rows(self.store[at : at + len(decoded)], decoded, staging)
        self.window = torch.arange(k, device=device)  # (K,)
        self.order: Tensor | None = None  # (ORDER_STEPS, B) start rows of steps order_step.., on the device
        self.order_step = step
        self.epochs: dict[int, np.ndarray] = {}

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> Batch:
        if self.order is None or self.step - self.order_step >= len(self.order):
            self.order, self.order_step = self.draw_order(self.step, ORDER_STEPS), self.step
        rows = self.order[self.step - self.order_step]  # (B,)
        self.step += 1
        return self.gather(rows, self.window)

    def gather(self, rows: Tensor, window: Tensor) -> Batch:
        """The windows starting at `rows` (B,) on the device, `window` (K,) = arange(K): the context at each start and
        the K steps from it. A window never leaves its shard, nor its episode."""
        steps, a = rows[:, None] + window, self.arrays  # (B, K)
        if self.store is None:
            context, targets = a["obs"][rows], a["next_obs"][steps]
        else:  # the stack: the last `context` frames up to `frame`, zeros before them (an episode start)
            last = a["frame"][rows][:, None]  # (B, 1)
            real = self.stack_offsets > -a["context"][rows][:, None].long()  # (B, T)
            frames = self.store[torch.where(real, last + self.stack_offsets, last)]  # (B, T, H, W)
            context = torch.where(
                real[..., None, None], frames, torch.zeros((), dtype=frames.dtype, device=frames.device)
            )
            targets = self.store[a["frame"][steps] + 1]
        return Batch(context, a["action"][steps], targets, a["reward"][steps], a["done"][steps])

    def upload(self, rows: np.ndarray) -> Tensor:
        """Host row indices onto the device without waiting for it (through pinned memory on CUDA)."""
        at = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
        return at.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else at.to(self.device)

    def draw_order(self, step: int, steps: int) -> Tensor:
        """(steps, B) start rows of this process's samples at optimizer steps step.., on the device: step s reads
        positions s * B * world + rank * B + (0..B-1) of the sample stream, as SampleStream shares them out."""
        b, n = self.batch, len(self.starts)
        positions = (
            np.arange(step, step + steps)[:, None] * b * self.ranks.world + self.ranks.rank * b + np.arange(b)
        )  # (S, B)
        epochs, offsets = np.divmod(positions, n)
        samples = np.empty_like(positions)
        for epoch in np.unique(epochs).tolist():
            if epoch not in self.epochs:
                self.epochs = {e: order for e, order in self.epochs.items() if e >= epoch - 1}  # older ones are read
                self.epochs[epoch] = epoch_order(n, self.seed, epoch)
            here = epochs == epoch
            samples[here] = self.epochs[epoch][offsets[here]]
        return self.upload(self.starts[samples])  # (S, B)


def training_batches(
    dataset: ShardedDataset,
    starts: np.ndarray,
    k: int,
    cfg: Config,
    step: int,
    device: torch.device,
    pin_memory: bool = False,
    ranks: Ranks = Ranks(),
    say: Callable[[str], None] = print,
) -> Iterator[Batch]:
    """The training batches from step `step` on, where data.on_device puts them: DeviceBatches (the dataset loaded into
    `device`'s memory once) or train_batches (the DataLoader over the memory maps). true: on the device, a ConfigError
    before any copy when it does not fit (fits_on_device); false: the loader; null: on the device with CUDA when it
    fits, else the loader (with data.num_workers, which are for this fallback). Both give the same batches."""
    on = cfg.data.on_device
    if on is False or (on is None and device.type != "cuda"):
        return train_batches(dataset, starts, k, cfg, step, pin_memory, ranks)
    need = device_arrays_bytes(dataset)
    fits, free = fits_on_device(need, device)
    if not fits:
        why = (
            f"the dataset's frames need {human_bytes(need)} but {device} has {human_bytes(free)} free (at most "
            f"{DEVICE_SHARE:.0%} of it, less {DEVICE_RESERVE >> 30} GiB, is used for data)"
        )
        if on:
            raise ConfigError(f"data.on_device=true: {why}; set data.on_device=false to read batches from disk")
        say(f"data.on_device=null: {why}; reading batches from disk")
        return train_batches(dataset, starts, k, cfg, step, pin_memory, ranks)
    begin = time.perf_counter()
    batches = DeviceBatches(dataset, starts, k, cfg, step, device, ranks)
    say(
        f"data on {device}: {human_bytes(need)} of frames loaded in {time.perf_counter() - begin:.1f} s; batches are "
        "indexed there"
    )
    return batches


class EventBatches:
    """Endless batches of single training steps for the event head, `share` of each drawn from the steps with a
    reward or an episode end (Pong: one step in ~40; with natural batches the head did not learn in 1,500 steps,
    measured), the rest from all training steps. Batch b depends on (seed, b) alone, drawn for all processes and
    shared out as the training batches are: a resumed run, or one under torchrun with size / processes each, draws
    what one process would have. Given `on_device` (the training batches' DeviceBatches), the steps are gathered from
    the arrays it holds, not read from the memory maps on the launching thread: the same batches, on the device."""

    def __init__(
        self,
        dataset: ShardedDataset,
        rows: np.ndarray,
        size: int,
        share: float,
        seed: int,
        step: int,
        ranks: Ranks = Ranks(),
        on_device: DeviceBatches | None = None,
    ) -> None:
        rewards, dones = dataset.column("reward")[rows], dataset.column("done")[rows]
        self.rows, self.events = rows, rows[(rewards != 0) | dones]
        self.samples = WindowDataset(dataset.root, np.arange(len(dataset)))  # sample i is the step at row i
        self.size, self.share, self.seed, self.step, self.ranks = size, share, seed, step, ranks
        self.on_device = on_device

    def __iter__(self) -> EventBatches:
        return self

    def __next__(self) -> Batch:
        rng = np.random.default_rng([self.seed, 0xE7E, self.step])
        self.step += 1
        rare = round(self.size * self.share) if len(self.events) else 0
        world, rank = self.ranks.world, self.ranks.rank
        rare_rows, common_rows = (
            rng.choice(self.events, rare * world),
            rng.choice(self.rows, (self.size - rare) * world),
        )
        picks = np.concatenate(
            [
                rare_rows[rank * rare : (rank + 1) * rare],
                common_rows[rank * (self.size - rare) : (rank + 1) * (self.size - rare)],
            ]
        )
        if self.on_device is not None:  # single steps: windows of 1
            return self.on_device.gather(self.on_device.upload(picks), self.on_device.window[:1])
        return collate([self.samples[int(row)] for row in picks])


def fixed_val_batches(dataset: ShardedDataset, rows: np.ndarray, cfg: Config, ranks: Ranks = Ranks()) -> list[Batch]:
    """The same held-out samples at every validation (held in memory: val_batches x the global batch transitions);
    under torchrun, this process's share of them."""
    n = min(len(rows), cfg.train.val_batches * cfg.train.batch_size * ranks.world)
    chosen = np.sort(np.random.default_rng(cfg.train.seed).choice(rows, size=n, replace=False))
    samples = WindowDataset(dataset.root, chosen)
    size = cfg.train.batch_size
    batches = range(0, n, size)[ranks.rank :: ranks.world]
    return [collate([samples[i] for i in range(start, min(start + size, n))]) for start in batches]


VAL_ROLLOUTS = 16  # validation windows rolled out open loop at every validation (val/rollout_recall, rollout_ratio)


def rollout_starts(dataset: ShardedDataset, val_rows: np.ndarray, cfg: Config, count: int | None = None) -> np.ndarray:
    """Rows in val episodes where a window of val_rollout_horizon steps begins: `count` of them (default
    train.val_rollout_videos), spread over the val set from its first window to its last."""
    starts = starts_within(dataset, val_rows, cfg.train.val_rollout_horizon)
    if len(starts) == 0:
        return starts
    count = cfg.train.val_rollout_videos if count is None else count
    picks = np.linspace(0, len(starts) - 1, num=min(count, len(starts))).round().astype(int)
    return starts[picks]


def fixed_val_rollouts(dataset: ShardedDataset, val_rows: np.ndarray, cfg: Config) -> Batch | None:
    """The same VAL_ROLLOUTS windows of train.val_rollout_horizon steps in the val episodes at every validation, spread
    over the val set as the videos' starts are (uint8, held in memory: 3.8 MB of 84x84 frames at the default 30
    steps); None with train.val_rollout_enabled off, or when no val episode lasts the horizon."""
    if not cfg.train.val_rollout_enabled:
        return None
    starts = rollout_starts(dataset, val_rows, cfg, VAL_ROLLOUTS)
    if len(starts) == 0:
        return None
    samples = WindowDataset(dataset.root, starts, cfg.train.val_rollout_horizon)
    return collate([samples[i] for i in range(len(starts))])
