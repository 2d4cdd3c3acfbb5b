"""The compact layout ("frames"): every frame of an episode stored once, in zstd-compressed chunks of consecutive
frames, the 4-frame stacks and next frames built when a step is read (docs/dataset.md, "The compact layout").

A shard of this layout holds the contract's per-step columns (action, done, reward, episode) and, instead of obs and
next_obs:
  shard_{k}_frame.npy    int32 (N,): where the step's current frame (the last of its stack) is in the shard's store
  shard_{k}_context.npy  uint8 (N,): how many frames of its stack are real (1..T); the first T - context are zeros,
                         as the recorder pads them at an episode start
  shard_{k}_frames.npy   uint8 (bytes,): the store, chunks of `chunk_frames` consecutive H x W frames, each compressed
                         on its own
  shard_{k}_chunks.npy   int64 (chunks + 1,): where each chunk begins in shard_{k}_frames.npy, then its end
Step i's stack is T - context[i] zero frames, then store[frame[i] - context[i] + 1 .. frame[i]]; its next frame is
store[frame[i] + 1]. A step that continues the stack of the row before it adds one frame to the store; any other
begins a segment with its stack's real frames, so that every sample reads back byte-equal to the contract layout's.

    writer = FramesShardWriter(root, tag, rows, 4, 84, layout)   # shard_writer.py: ShardWriter's interface
    store = FrameStore(frames_map, chunks_map, entry["frames"], layout, (84, 84))
    store.get(np.array([5, 6, 7]))   # (3, 84, 84) uint8, decoding the chunks that hold them
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import zstandard

from src.dataset.schema import FRAMES

CODEC = "zstd"
LEVEL = 3  # benchmarks/bench_codec.py: docs/dataset.md gives the sizes and speeds that chose it
CHUNK_FRAMES = 256
CACHE_BYTES = 256 << 20  # decoded chunks kept per process: a 36,000-frame dataset's whole store


def default_layout() -> dict:
    """The manifest's `layout` entry of a new dataset in this layout."""
    return {"name": FRAMES, "codec": CODEC, "level": LEVEL, "chunk_frames": CHUNK_FRAMES}


class CorruptStore(ValueError):
    """A chunk that does not decode to its frames (the reader names the file)."""


class FrameStore:
    """Random access to the frames of one shard's store: data, the bytes of shard_{k}_frames.npy (a memory map);
    offsets, its chunks' starts and end; count, the frames it holds. Decoded chunks are kept in `cache` (shared by
    the stores of one dataset, bounded in bytes)."""

    def __init__(
        self,
        data: np.ndarray,
        offsets: np.ndarray,
        count: int,
        chunk_frames: int,
        shape: tuple[int, int],
        cache: ChunkCache,
        key: object,
    ) -> None:
        self.data, self.offsets, self.count, self.chunk_frames, self.shape = data, offsets, count, chunk_frames, shape
        self.cache, self.key = cache, key

    def chunk(self, j: int) -> np.ndarray:
        """Frames j * chunk_frames.. of the store, (n, H, W) uint8 (read-only: a view of the cache's copy)."""
        cached = self.cache.get((self.key, j))
        if cached is not None:
            return cached
        n = min(self.chunk_frames, self.count - j * self.chunk_frames)
        raw = self.cache.decompress(self.data[int(self.offsets[j]) : int(self.offsets[j + 1])])
        if len(raw) != n * self.shape[0] * self.shape[1]:
            raise CorruptStore(f"chunk {j} decodes to {len(raw)} bytes, not {n} frames")
        frames = np.frombuffer(raw, dtype=np.uint8).reshape(n, *self.shape)
        self.cache.put((self.key, j), frames)
        return frames

    def get(self, index: np.ndarray) -> np.ndarray:
        """store[index] for an int array of any shape: (*index.shape, H, W) uint8, a new array."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((index.size, *self.shape), dtype=np.uint8)
        flat = index.ravel()
        chunks = flat // self.chunk_frames
        for j in np.unique(chunks).tolist():
            here = chunks == j
            out[here] = self.chunk(j)[flat[here] - j * self.chunk_frames]
        return out.reshape(*index.shape, *self.shape)


class ChunkCache:
    """Decoded chunks, least recently used first out once they pass `limit` bytes; one per process (a forked
    DataLoader worker starts its own, as it opens its own memory maps)."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit, self.bytes = limit, 0
        self.chunks: OrderedDict[object, np.ndarray] = OrderedDict()
        self._decompressor = zstandard.ZstdDecompressor()

    def get(self, key: object) -> np.ndarray | None:
        frames = self.chunks.get(key)
        if frames is not None:
            self.chunks.move_to_end(key)
        return frames

    def put(self, key: object, frames: np.ndarray) -> None:
        self.chunks[key] = frames
        self.bytes += frames.nbytes
        while self.bytes > self.limit and len(self.chunks) > 1:
            self.bytes -= self.chunks.popitem(last=False)[1].nbytes

    def decompress(self, data: np.ndarray) -> bytes:
        try:
            return self._decompressor.decompress(memoryview(np.ascontiguousarray(data)))
        except zstandard.ZstdError as e:
            raise CorruptStore(f"a chunk does not decode ({e})") from None


def stacks(store: FrameStore, frame: np.ndarray, context: np.ndarray, t: int) -> np.ndarray:
    """The (n, T, H, W) stacks of steps whose current frames are store[frame] (n,) with `context` real frames each."""
    offsets = np.arange(1 - t, 1)  # (T,): oldest first
    index = frame[:, None] + offsets  # (n, T)
    real = offsets[None, :] > -context[:, None]  # the last `context` of each stack
    out = store.get(np.where(real, index, frame[:, None]))
    out[~real] = 0
    return out
