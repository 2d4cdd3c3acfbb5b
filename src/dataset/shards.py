"""The dataset on disk: its layout and a validated memory-mapped reader of its .npy shards (written crash-safely by
shard_writer.py; the manifest that lists them: manifest.py).

Layout (docs/dataset.md, "On disk"): OUT_DIR/shard_{k:05d}_{field}.npy for each field of schema.field_specs, plus
OUT_DIR/manifest.json; in the compact layout (frames.py) also each shard's frame store (schema.STORE_FILES).
Within a shard, row i+1 is the step after row i of the same episode whenever done[i] is false.
A shard is renamed into place and listed in the manifest only after all its files are complete.
OUT_DIR/.verified.json records the files a full verification hashed, so that the next one hashes only what changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from src.dataset.frames import ChunkCache, CorruptStore, FrameStore, stacks
from src.dataset.manifest import DatasetError, Manifest
from src.dataset.schema import FRAMES, STEPS, STORE_FILES, field_specs
from src.envs.game import Steps
from src.utils.io import atomic_write_json, checksum_file

LOCK_FILE = ".lock"
READERS_FILE = ".readers"  # every reader holds a shared flock on it; generate_dataset --overwrite an exclusive one
SHARD_FILE = re.compile(r"shard_(\d{5,})_(\w+)\.npy")
VERIFIED_FILE = ".verified.json"  # what the last full verification hashed (read_record)
VERIFIED_TMP = re.compile(r"\.\.verified\.\d+\.tmp\.json")  # its name while io.replaced_atomically writes it
RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 << 20  # about 300,000 files' entries: a larger file is not one of ours
SETTLED_NS = 2_000_000_000  # a file changed this recently may change again within its timestamp's resolution


def shard_path(root: str | os.PathLike, index: int, field: str) -> Path:
    return Path(root) / f"shard_{index:05d}_{field}.npy"


# ---------------------------------------------------------------------------------------------- reading


def lock_readers(root: str | os.PathLike, exclusive: bool) -> IO[bytes] | None:
    """A flock on root/.readers (created if missing): shared for a reader, kept while it reads; exclusive for
    generate_dataset --overwrite, which must not delete a dataset that a training, evaluation or play reads.

    Returns the open file (closing it releases the lock), None where the file cannot be opened (a read-only
    dataset: nothing can overwrite it either), or BlockingIOError when the other kind of holder has it. flock
    belongs to the open file, so forked DataLoader workers share their parent's lock.
    """
    try:
        fd = os.open(Path(root) / READERS_FILE, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    file = os.fdopen(fd, "rb")
    try:
        fcntl.flock(file, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise
    return file


# ---------------------------------------------------------------------------------------------- the verification record


def is_verification_file(name: str) -> bool:
    """root/.verified.json, or the temporary file that a kill mid-write left: a dataset's own files, which a
    generation or a recording must not take for the user's."""
    return name == VERIFIED_FILE or bool(VERIFIED_TMP.fullmatch(name))


def record_entry(st: os.stat_result, checksum: str) -> dict:
    """What identifies a file's content between two verifications without reading it: a write changes ctime (which
    no user call can set back, unlike mtime), a replacement the inode, a copy elsewhere the device."""
    return {
        "xxh3_128": checksum,
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }


def settled(st: os.stat_result) -> bool:
    """Whether a file last changed long enough ago that a later write cannot carry the same timestamps: on a
    filesystem with 1 or 2 s timestamps a write within the same second would look unchanged (git's 'racy clean')."""
    return time.time_ns() - st.st_ctime_ns > SETTLED_NS


def read_record(root: Path) -> dict[str, dict]:
    """{file name: record_entry} of root/.verified.json; {} when there is none, or it cannot be read or is not one
    of ours: the record only ever saves work, so anything odd means hashing again, never an error. Opened without
    following a link or blocking on a pipe planted under its name."""
    try:
        fd = os.open(root / VERIFIED_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
        record = json.loads(data) if len(data) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, not UTF-8, an int of 4300+ digits, too deep
        return {}
    if not (
        isinstance(record, dict) and record.get("version") == RECORD_VERSION and isinstance(record.get("files"), dict)
    ):
        return {}
    return record["files"]


def forget_record(root: Path) -> None:
    """Remove root/.verified.json where it can be (a read-only dataset has none that is ours to fix)."""
    try:
        (root / VERIFIED_FILE).unlink(missing_ok=True)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------- the reader


def valid_starts(done: np.ndarray, k: int) -> np.ndarray:
    """Rows s of one shard where steps s..s+k-1 are consecutive in one episode (no done before the last).

    done: (N,) bool. Returns sorted int64 starts. The last step of a window may itself be done.
    """
    assert k >= 1
    n = len(done)
    if n < k:
        return np.zeros(0, dtype=np.int64)
    # ends_before[j] = number of dones in done[:j]; a window needs none in done[s : s+k-1].
    ends_before = np.concatenate([[0], np.cumsum(done, dtype=np.int64)])
    starts = np.arange(n - k + 1)
    return starts[ends_before[starts + k - 1] == ends_before[starts]]


class ShardedDataset:
    """Random access to the transitions of a dataset directory, through lazily opened memory maps.

    verify: "full" checks every file's size, header and xxh3-128 checksum against the manifest, and the small
    columns against it (actions in range, episodes, dones); "quick" skips the checksums; "none" trusts the manifest.
    A full verification hashes only the files that changed since the one recorded in root/.verified.json (same
    checksum in the manifest, same size, mtime, ctime, inode and device): about 2 s per GB saved at every start.
    rehash=True hashes every file all the same (to look for decay of the disk itself, which changes no timestamp).
    `save_verification` writes the record, once the command knows its input is good.

    While open (until `close`), it holds a shared lock on root/.readers, so that generate_dataset --overwrite
    refuses to delete the dataset under it.
    """

    def __init__(self, root: str | os.PathLike, verify: str = "full", rehash: bool = False) -> None:
        assert verify in ("full", "quick", "none"), verify
        self.root, self.verify, self.rehash = Path(root), verify, rehash
        self.hashed = self.unchanged = 0  # files whose checksum was computed / taken from the record (verify="full")
        self._recorded: dict[str, dict] = {}  # root/.verified.json as it was read
        self._record: dict[str, dict] = {}  # what this verification vouches for, for save_verification
        self._readers: IO[bytes] | None = None
        if not self.root.is_dir():
            raise DatasetError(
                f"dataset directory '{root}' does not exist; generate one with src.dataset.generate_dataset"
            )
        Manifest.read(self.root)  # a dataset: only then is its reader file made
        try:
            self._readers = lock_readers(self.root, exclusive=False)
        except BlockingIOError:
            raise DatasetError(
                f"'{root}' is being replaced (generate_dataset --overwrite); wait for it to finish"
            ) from None
        self.manifest = Manifest.read(self.root)  # again, under the lock: the one that no --overwrite can delete now
        self.shards = self.manifest.shards
        if not self.shards:
            raise DatasetError(f"{self.root}: the dataset has no complete shard yet; finish it with --resume")
        env = self.manifest.env
        self.layout = self.manifest.layout_name
        self.specs = field_specs(env.context_frames, env.screen_size, self.layout)
        self.stack = (env.context_frames, env.screen_size, env.screen_size)  # one step's context, (T, H, W)
        self._stores: dict[int, FrameStore] = {}  # the compact layout's, per shard position, opened once per process
        self._cache = ChunkCache()
        if verify == "full":
            self._recorded = read_record(self.root)
        if verify != "none":  # a bar on a terminal when checking takes long enough to be seen (tqdm's delay)
            for shard in tqdm(
                self.shards, desc=f"checking {self.root.name}", unit="shard", delay=1.0, leave=False, disable=None
            ):
                self._check_shard(shard, checksums=verify == "full")
        rows = np.array([s["rows"] for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(rows)])  # global row of each shard's first row
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Release the reader lock (the memory maps close with their arrays)."""
        if self._readers is not None:
            self._readers.close()
            self._readers = None

    def __enter__(self) -> ShardedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """For DataLoader workers started by spawn: they read without a lock of their own (the parent holds one)."""
        return {**self.__dict__, "_readers": None, "_maps": {}, "_stores": {}, "_cache": ChunkCache()}

    def save_verification(self) -> bool:
        """Write root/.verified.json (atomically) for the next full verification to skip the files this one hashed.

        Left to the command, to call once every check of its input passed: a refused command writes nothing. Returns
        False when there is nothing new to record (no rewrite at every start, nor from each torchrun process) or the
        directory cannot be written (a read-only dataset is then hashed in full at each start, as before)."""
        if self.verify != "full" or self._record == self._recorded:
            return False
        try:
            atomic_write_json(self.root / VERIFIED_FILE, {"version": RECORD_VERSION, "files": self._record})
        except OSError:
            return False
        self._recorded = self._record
        return True

    def describe_verification(self) -> str:
        """What opening checked, for the console: whether checksums were computed or taken from the record."""
        if self.verify != "full":
            return {"quick": "sizes and headers (no checksums)", "none": "nothing (trusted the manifest)"}[self.verify]
        if self.unchanged == 0:
            return f"checksums of all {self.hashed} files computed"
        return (
            f"checksums of {self.hashed} files computed, {self.unchanged} taken from {VERIFIED_FILE} "
            "(unchanged since a full verification)"
        )

    def _check_shard(self, shard: dict, checksums: bool) -> None:
        arrays = {}
        store = STORE_FILES if self.layout == FRAMES else {}  # one-dimensional, of any length
        for field, (dtype, shape) in {**self.specs, **{f: (d, None) for f, d in store.items()}}.items():
            path = shard_path(self.root, shard["index"], field)
            expected = shard["files"][field]
            array, st = self._open_listed(path, expected)
            if shape is None and (array.dtype != dtype or array.ndim != 1):
                raise DatasetError(f"{path}: {array.dtype} {array.shape}, expected a one-dimensional {dtype} array")
            if shape is not None and (array.dtype != dtype or array.shape != (shard["rows"], *shape)):
                raise DatasetError(f"{path}: {array.dtype} {array.shape}, expected {dtype} {(shard['rows'], *shape)}")
            if checksums:
                self._check_checksum(path, st, expected["xxh3_128"])
            arrays[field] = array
        if store:
            self._check_store(shard, arrays)
        self._check_columns(shard, arrays)

    @staticmethod
    def _open_listed(path: Path, expected: dict) -> tuple[np.ndarray, os.stat_result]:
        """The memory map of a file the manifest lists, once its size is the manifest's, and its stat from before it
        was read (a write that comes after it changes what the verification record compares)."""
        if not path.is_file():
            raise DatasetError(f"{path}: missing (listed in the manifest); restore it or regenerate the dataset")
        st = path.stat()
        if st.st_size != expected["bytes"]:
            raise DatasetError(
                f"{path}: {st.st_size} bytes, the manifest says {expected['bytes']} (truncated or replaced)"
            )
        try:
            return np.load(path, mmap_mode="r"), st
        except ValueError as e:
            raise DatasetError(f"{path}: not a readable .npy file ({e})") from None

    def _check_store(self, shard: dict, arrays: dict[str, np.ndarray]) -> None:
        """The compact layout's indices against its store: chunk bounds that cover the store's bytes, and every
        step's stack and next frame inside the store."""
        at = lambda field: shard_path(self.root, shard["index"], field)  # noqa: E731
        count, chunk = shard["frames"], self.manifest.layout["chunk_frames"]
        offsets, frame, context = (np.asarray(arrays[f]) for f in ("chunks", "frame", "context"))
        if (
            len(offsets) != -(-count // chunk) + 1
            or offsets[0] != 0
            or offsets[-1] != len(arrays["frames"])
            or (np.diff(offsets) <= 0).any()
        ):
            raise DatasetError(
                f"{at('chunks')}: not the bounds of {-(-count // chunk)} chunks of {at('frames')}'s "
                f"{len(arrays['frames'])} bytes; restore or regenerate the dataset"
            )
        t = self.stack[0]
        if context.min() < 1 or context.max() > t:
            raise DatasetError(
                f"{at('context')}: values {context.min()}..{context.max()}, expected 1..{t}; regenerate it"
            )
        if (frame - context.astype(np.int64) + 1).min() < 0 or frame.max() + 1 >= count:
            raise DatasetError(
                f"{at('frame')}: indices outside the shard's store of {count} frames; restore or regenerate the dataset"
            )

    def _check_checksum(self, path: Path, st: os.stat_result, checksum: str) -> None:
        """Hash the file unless the record vouches for it as it is now. A mismatch in a file that the record vouches
        for (decay found by rehash=True) removes the record: the next start must not skip that file."""
        entry = record_entry(st, checksum)
        vouched = self._recorded.get(path.name) == entry
        if vouched and not self.rehash:
            self.unchanged += 1
        else:
            self.hashed += 1
            if checksum_file(path) != checksum:
                if vouched:
                    forget_record(self.root)
                raise DatasetError(
                    f"{path}: checksum differs from the manifest (altered or corrupt); restore or regenerate it"
                )
        if settled(st):
            self._record[path.name] = entry

    def _check_columns(self, shard: dict, arrays: dict[str, np.ndarray]) -> None:
        """The small columns against the manifest (8 bytes a row, read in a blink): an action outside the game's
        num_actions would pass every size and checksum check and only fail deep inside training."""

        def path(field: str) -> Path:
            return shard_path(self.root, shard["index"], field)

        action, episode, done = np.asarray(arrays["action"]), np.asarray(arrays["episode"]), np.asarray(arrays["done"])
        if action.min() < 0 or action.max() >= self.manifest.num_actions:
            raise DatasetError(
                f"{path('action')}: actions {action.min()}..{action.max()}, the manifest says the game has "
                f"{self.manifest.num_actions}; the manifest is corrupt: regenerate the dataset"
            )
        if np.unique(episode).tolist() != shard["episodes"]:
            raise DatasetError(
                f"{path('episode')}: its episodes differ from the manifest's list for shard {shard['index']}; "
                "the manifest is corrupt: regenerate the dataset"
            )
        if int(done.sum()) != shard["dones"]:
            raise DatasetError(
                f"{path('done')}: {int(done.sum())} episode ends, the manifest says {shard['dones']}; "
                "the manifest is corrupt: regenerate the dataset"
            )

    # -- metadata
    @property
    def game(self) -> str:
        return self.manifest.game

    @property
    def num_actions(self) -> int:
        return self.manifest.num_actions

    def __len__(self) -> int:
        return int(self.offsets[-1])

    # -- data
    def array(self, shard_pos: int, field: str) -> np.ndarray:
        """The memory map of one field of the shard at position `shard_pos` (opened once per process)."""
        if os.getpid() != self._pid:  # a forked DataLoader worker: open its own maps
            self._maps, self._pid = {}, os.getpid()
        key = (shard_pos, field)
        if key not in self._maps:
            self._maps[key] = np.load(shard_path(self.root, self.shards[shard_pos]["index"], field), mmap_mode="r")
        return self._maps[key]

    def locate(self, row: int) -> tuple[int, int]:
        """Global row -> (shard position, row within the shard)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} rows")
        pos = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return pos, row - int(self.offsets[pos])

    def store(self, shard_pos: int) -> FrameStore:
        """The compact layout's frame store of the shard at `shard_pos` (opened once per process)."""
        if os.getpid() != self._pid:
            self._maps, self._stores, self._cache, self._pid = {}, {}, ChunkCache(), os.getpid()
        if shard_pos not in self._stores:
            shard = self.shards[shard_pos]
            self._stores[shard_pos] = FrameStore(
                self.array(shard_pos, "frames"),
                np.asarray(self.array(shard_pos, "chunks")),
                shard["frames"],
                self.manifest.layout["chunk_frames"],
                self.stack[1:],
                self._cache,
                shard_pos,
            )
        return self._stores[shard_pos]

    def frames(self, shard_pos: int, field: str, rows: int | slice | np.ndarray) -> np.ndarray:
        """obs (..., T, H, W) or next_obs (..., 1, H, W) of the shard's rows `rows`, as the contract's layout stores
        them, whatever the layout: a new array."""
        assert field in ("obs", "next_obs"), field
        if self.layout == STEPS:
            return np.array(self.array(shard_pos, field)[rows])
        frame = np.asarray(self.array(shard_pos, "frame")[rows], dtype=np.int64)
        store = self.store(shard_pos)
        try:
            if field == "next_obs":
                return store.get(frame + 1)[..., None, :, :]
            context = np.asarray(self.array(shard_pos, "context")[rows], dtype=np.int64)
            flat = stacks(store, frame.reshape(-1), context.reshape(-1), self.stack[0])
            return flat.reshape(*frame.shape, *self.stack)
        except CorruptStore as e:
            path = shard_path(self.root, self.shards[shard_pos]["index"], "frames")
            raise DatasetError(f"{path}: {e}; restore or regenerate the dataset") from None

    def steps(self, row: int, k: int = 1) -> Steps:
        """Steps row..row+k-1; they must be a valid window (see `window_starts`)."""
        pos, local = self.locate(row)
        sl = slice(local, local + k)
        out = Steps(
            obs=self.frames(pos, "obs", sl),
            next_obs=self.frames(pos, "next_obs", sl),
            **{field: np.array(self.array(pos, field)[sl]) for field in ("action", "done", "reward", "episode")},
        )
        if len(out.done) != k or out.done[:-1].any():
            raise ValueError(
                f"rows {row}..{row + k - 1} cross an episode or shard end; take starts from window_starts({k})"
            )
        return out

    def column(self, field: str) -> np.ndarray:
        """One small per-row field (action, done, reward, episode) for the whole dataset, in row order."""
        assert self.specs[field][1] == (), f"{field} is a frame field; read it per sample"
        return np.concatenate([np.asarray(self.array(pos, field)) for pos in range(len(self.shards))])

    def window_starts(self, k: int) -> np.ndarray:
        """Global rows where k consecutive steps of one episode begin (windows never cross shards)."""
        return np.concatenate(
            [
                valid_starts(np.asarray(self.array(pos, "done")), k) + self.offsets[pos]
                for pos in range(len(self.shards))
            ]
        )
