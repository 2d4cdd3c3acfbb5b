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

from src.dataset.manifest import MANIFEST, Manifest
from src.dataset.schema import field_specs
from src.dataset.shards import (
    LOCK_FILE,
    READERS_FILE,
    SHARD_FILE,
    VERIFIED_FILE,
    is_verification_file,
    shard_path,
)

TMP_PREFIX = ".tmp_"


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
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header,
                {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": (self.capacity, *shape),
                },
            )
            self._write(field, header.getvalue())

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
