"""Writing a dataset's shards crash-safely (the layout and the reader: shards.py).

A shard is written under temporary names (TMP_PREFIX), fsynced, then renamed into place (promote_shard) before the
manifest lists it, so that a kill leaves either a complete listed shard or files that clear_unlisted removes.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import IO

import numpy as np
import xxhash
import zstandard

from src.dataset.frames import default_layout
from src.dataset.manifest import MANIFEST, Manifest
from src.dataset.schema import FRAMES, STORE_FILES, field_specs
from src.dataset.shards import (
    LOCK_FILE,
    READERS_FILE,
    SHARD_FILE,
    VERIFIED_FILE,
    is_verification_file,
    shard_path,
)

TMP_PREFIX = ".tmp_"


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy header of a C-ordered array of this dtype and shape, for a file whose data is written after it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def discard_import(root: Path, tag_prefix: str, existed: bool) -> None:
    """After a failed import: remove its temporary shard files (tags starting with `tag_prefix`), and `root` itself
    when the import made it and listed nothing there (no manifest): a failed import leaves nothing behind."""
    for tmp in root.glob(f"{TMP_PREFIX}{tag_prefix}*"):
        tmp.unlink()
    if not existed and not (root / MANIFEST).exists():
        for path in root.iterdir():  # its lock
            path.unlink()
        root.rmdir()


def tmp_shard_path(root: str | os.PathLike, tag: str, field: str) -> Path:
    """Where a shard is written before it is complete; `tag` is unique per session and game."""
    return Path(root) / f"{TMP_PREFIX}{tag}_{field}.npy"


class ShardWriter:
    """Writes one shard row by row into temporary .npy files, hashing the bytes as they go.

    Rows are gathered in small in-memory chunks and appended with plain writes, so memory stays at
    `chunk_rows` rows per field however large the shard. `finish` fsyncs and returns the manifest entry.
    """

    def __init__(
        self, root: str | os.PathLike, tag: str, rows: int, context_frames: int, screen_size: int, chunk_rows: int = 64
    ) -> None:
        self.root, self.tag, self.capacity, self.rows = Path(root), tag, int(rows), 0
        self.specs = field_specs(context_frames, screen_size)
        self.chunk = {f: np.empty((min(chunk_rows, rows), *shape), dtype) for f, (dtype, shape) in self.specs.items()}
        self.files = {f: create_new(tmp_shard_path(root, tag, f)) for f in self.specs}
        self.hashes = {f: xxhash.xxh3_128() for f in self.specs}
        self.filled = 0  # rows in the current chunk
        self.episodes: set[int] = set()
        self.dones = 0
        for field, (dtype, shape) in self.specs.items():
            self._write(field, npy_header(dtype, (self.capacity, *shape)))

    def _write(self, field: str, data: bytes | memoryview) -> None:
        self.files[field].write(data)
        self.hashes[field].update(data)

    def _flush_chunk(self) -> None:
        if self.filled == 0:
            return
        for field, chunk in self.chunk.items():
            self._write(field, memoryview(chunk[: self.filled]).cast("B"))
        self.filled = 0

    def append(
        self, obs: np.ndarray, action: int, next_obs: np.ndarray, done: bool, reward: float, episode: int
    ) -> None:
        assert self.rows < self.capacity, "shard is full"
        i, c = self.filled, self.chunk
        c["obs"][i], c["action"][i], c["next_obs"][i] = obs, action, next_obs
        c["done"][i], c["reward"][i], c["episode"][i] = done, reward, episode
        self.filled += 1
        self.rows += 1
        self.episodes.add(int(episode))
        self.dones += bool(done)
        if self.filled == len(c["obs"]):
            self._flush_chunk()

    @property
    def full(self) -> bool:
        return self.rows == self.capacity

    def finish(self) -> dict:
        """Write the last rows, fsync every file and return the shard's manifest entry (without its index)."""
        assert self.full, f"shard has {self.rows} of {self.capacity} rows"
        self._flush_chunk()
        files = {}
        for field, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the file is renamed into place
            files[field] = {"bytes": f.tell(), "xxh3_128": self.hashes[field].hexdigest()}
            f.close()
        return {"rows": self.rows, "episodes": sorted(self.episodes), "dones": self.dones, "files": files}


MANIFEST_TMP = re.compile(
    rf"\.{re.escape(Path(MANIFEST).stem)}\.\d+\.tmp{re.escape(Path(MANIFEST).suffix)}"
)  # io.replaced_atomically's


def is_dataset_file(name: str) -> bool:
    """A file that a generation or a recording writes: the manifest, the locks, a shard, a temporary file of either
    that a kill left, or the readers' verification record (.verified.json)."""
    return (
        name in (MANIFEST, LOCK_FILE, READERS_FILE)
        or bool(SHARD_FILE.fullmatch(name) or MANIFEST_TMP.fullmatch(name))
        or name.startswith(TMP_PREFIX)
        or is_verification_file(name)
    )


def clear_unlisted(root: Path, manifest: Manifest | None) -> None:
    """Remove the dataset files of `root` that `manifest` does not list (a killed writer's temporary files and its
    shards renamed into place but not yet listed); with no manifest, the whole old dataset. The locks stay, and the
    verification record stays with a manifest (its entries remain true of the listed shards)."""
    listed = set()
    if manifest is not None:
        listed = {shard_path(root, s["index"], field).name for s in manifest.shards for field in s["files"]} | {
            VERIFIED_FILE
        }
    else:
        (root / MANIFEST).unlink(missing_ok=True)  # first, so that no manifest ever names a deleted shard
    for path in root.iterdir():
        if (
            path.name not in (MANIFEST, LOCK_FILE, READERS_FILE)
            and is_dataset_file(path.name)
            and path.name not in listed
        ):
            path.unlink()


def create_new(path: Path) -> IO[bytes]:
    """Open `path` for writing as a new file of our own: a stale one (from a killed run) is removed first, and a link
    planted under the predictable name is neither followed nor written through (O_EXCL | O_NOFOLLOW)."""
    path.unlink(missing_ok=True)  # removes a link itself, never its target
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "wb")


def promote_shard(root: str | os.PathLike, tag: str, index: int, fields: list[str]) -> None:
    """Rename a finished shard's temporary files to their final names (the manifest lists it next)."""
    for field in fields:
        os.replace(tmp_shard_path(root, tag, field), shard_path(root, index, field))


# ---------------------------------------------------------------------------------------------- the compact layout


def shard_writer(
    layout: dict | None, root: str | os.PathLike, tag: str, rows: int, context_frames: int, screen_size: int
) -> ShardWriter | FramesShardWriter:
    """The writer of a shard of the dataset whose manifest has this `layout` (None: the contract's)."""
    if layout is None:
        return ShardWriter(root, tag, rows, context_frames, screen_size)
    return FramesShardWriter(root, tag, rows, context_frames, screen_size, layout)


class FramesShardWriter:
    """One shard of the frames layout, row by row, with ShardWriter's interface (append, full, finish): each full chunk
    of new frames is compressed as it fills, so memory holds one chunk of frames and the compressed bytes of the
    shard; `finish` writes every file under its temporary name, hashed and fsynced, and returns the manifest entry."""

    def __init__(
        self,
        root: str | os.PathLike,
        tag: str,
        rows: int,
        context_frames: int,
        screen_size: int,
        layout: dict | None = None,
    ) -> None:
        layout = layout or default_layout()
        self.root, self.tag, self.capacity, self.rows = Path(root), tag, int(rows), 0
        self.t, self.chunk_frames = context_frames, layout["chunk_frames"]
        self.specs = field_specs(context_frames, screen_size, FRAMES)
        self.columns = {f: np.empty((self.capacity, *shape), dtype) for f, (dtype, shape) in self.specs.items()}
        # a 4-byte checksum per chunk: decay is caught when it decodes, also without a full verification
        self.compressor = zstandard.ZstdCompressor(level=layout["level"], write_checksum=True)
        self.chunk = np.empty((self.chunk_frames, screen_size, screen_size), np.uint8)  # the chunk being filled
        self.filled = 0  # frames in it
        self.compressed: list[bytes] = []
        self.count = 0  # frames in the store
        # the store's last T frames, oldest first: whether a row continues the one before is one comparison
        self.recent = np.zeros((context_frames, screen_size, screen_size), np.uint8)
        self.episodes: set[int] = set()
        self.dones = 0

    def _push(self, frame: np.ndarray) -> None:
        self.chunk[self.filled] = frame  # copies: the caller's buffer is reused
        self.recent[:-1] = self.recent[1:]
        self.recent[-1] = frame
        self.filled += 1
        self.count += 1
        if self.filled == self.chunk_frames:
            self._compress()

    def _compress(self) -> None:
        if self.filled:
            self.compressed.append(self.compressor.compress(self.chunk[: self.filled].data))
            self.filled = 0

    def _continues(self, obs: np.ndarray) -> bool:
        """Whether obs is the stack of the row before shifted by one frame (that row's next frame last)."""
        if self.rows == 0:
            return False
        pad = self.t - min(self.t, int(self.columns["context"][self.rows - 1]) + 1)
        return not (pad and obs[:pad].any()) and np.array_equal(obs[pad:], self.recent[pad:])

    def append(
        self, obs: np.ndarray, action: int, next_obs: np.ndarray, done: bool, reward: float, episode: int
    ) -> None:
        """One step: obs (T, H, W) its stack, next_obs (1, H, W) the frame after `action`."""
        assert self.rows < self.capacity, "shard is full"
        i, c = self.rows, self.columns
        if self._continues(obs):
            c["frame"][i], c["context"][i] = c["frame"][i - 1] + 1, min(self.t, int(c["context"][i - 1]) + 1)
        else:  # a segment begins: its real frames (a zero frame before the first non-zero one is the padding)
            nonzero = [bool(f.any()) for f in obs]
            context = self.t - nonzero.index(True) if any(nonzero) else 1
            for frame in obs[self.t - context :]:
                self._push(frame)
            c["frame"][i], c["context"][i] = self.count - 1, context
        self._push(next_obs[-1])
        c["action"][i], c["done"][i], c["reward"][i], c["episode"][i] = action, done, reward, episode
        self.rows += 1
        self.episodes.add(int(episode))
        self.dones += bool(done)

    @property
    def full(self) -> bool:
        return self.rows == self.capacity

    def finish(self) -> dict:
        """Compress the last chunk, write and fsync every file, and return the shard's manifest entry (without its
        index): the frames layout's also counts the frames in the store."""
        assert self.full, f"shard has {self.rows} of {self.capacity} rows"
        self._compress()
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in self.compressed])]).astype(np.int64)
        arrays = {**self.columns, "chunks": offsets}
        files = {field: write_npy(self.root, self.tag, field, array) for field, array in arrays.items()}
        files["frames"] = write_npy(self.root, self.tag, "frames", None, self.compressed, int(offsets[-1]))
        order = [*self.specs, *STORE_FILES]
        return {
            "rows": self.rows,
            "episodes": sorted(self.episodes),
            "dones": self.dones,
            "files": {field: files[field] for field in order},
            "frames": self.count,
        }


def write_npy(
    root: Path, tag: str, field: str, array: np.ndarray | None, parts: list[bytes] | None = None, length: int = 0
) -> dict:
    """A temporary shard file of `array` (or of the uint8 bytes `parts`, `length` in all), hashed and fsynced; its
    manifest entry."""
    header = npy_header(array.dtype, array.shape) if array is not None else npy_header(np.dtype(np.uint8), (length,))
    digest = xxhash.xxh3_128()
    with create_new(tmp_shard_path(root, tag, field)) as f:
        for data in [header, *(parts if array is None else [np.ascontiguousarray(array).data])]:
            f.write(data)
            digest.update(data)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the file is renamed into place
        size = f.tell()
    return {"bytes": size, "xxh3_128": digest.hexdigest()}
