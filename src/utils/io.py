"""Crash-safe file writes: a reader sees the old complete file or the new complete file, never a torn one."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import xxhash

from src.utils.errors import UserError


@contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix, so writers that look at it still know the format); when
    the block ends it is renamed over `path` and the rename made durable. If the block fails (a full disk), the
    temporary file is removed and `path` keeps its old content. The one way every output file here is written."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        # The name is predictable: a stale file, or a link planted under it, is removed (never written through), and
        # the file is created here, exclusively, so that the writer opens a plain file of ours.
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as JSON, NaN and infinities written as null: json.dumps would write NaN, which is not JSON (strict parsers,
    jq and browsers refuse the file)."""
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode())


def json_safe(obj: Any) -> Any:
    """`obj` with every float that is NaN or infinite replaced by None, through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checksum_file(path: str | os.PathLike, chunk_bytes: int = 8 << 20) -> str:
    """xxh3-128 of a file's bytes, as hex: ~10 GB/s, so verifying a whole dataset takes seconds."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def create_timestamped_dir(parent: str | os.PathLike, suffix: str, subdirs: tuple[str, ...], option: str) -> Path:
    """parent/<YYYYmmdd-HHMMSS>_<suffix>/ with its subdirs; -2, -3... when one started in the same second.

    mkdir without exist_ok is the claim, so two processes never share a folder. `option` names the
    setting that chose `parent`, for the error message.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", suffix) or suffix.startswith(
        "."
    ):  # from a game name or a config: never a path
        raise UserError(f"{option}: a folder cannot be named after {suffix!r}; use letters, digits, _ . and - only")
    stem = f"{datetime.now():%Y%m%d-%H%M%S}_{suffix}"
    for attempt in range(1, 1000):
        path = Path(parent) / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"{option}: cannot create '{path}' ({e.strerror}); choose a writable location") from None
        for sub in subdirs:
            (path / sub).mkdir()
        return path
    raise UserError(f"{option}: too many folders named {stem} in '{parent}'")


def try_lock(path: str | os.PathLike) -> tuple[IO[str] | None, str]:
    """Take an exclusive flock on `path` (created if need be) and write our pid into it.

    Returns (the open file, which holds the lock until closed, "") or (None, the holder's pid) when another
    process holds it. The kernel releases the lock when its holder dies, however it dies: no stale locks.
    OSError if `path` cannot be opened.
    """
    f = os.fdopen(
        os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+"
    )  # a link planted as the lock: ELOOP
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f, ""


def hold_lock(path: str | os.PathLike, busy: str, unwritable: str, error: type[UserError] = UserError) -> IO[str]:
    """try_lock, or one line: `busy` when another process holds the lock, `unwritable` when the lock file cannot be
    created. Both are templates that may name {folder} (the lock file's folder), {pid} (the holder) and {error};
    the path goes in as a value, so braces in it stay as they are. Closing the returned file releases the lock."""
    folder = Path(path).parent
    try:
        lock, holder = try_lock(path)
    except OSError as e:
        raise error(unwritable.format(folder=folder, pid="", error=e.strerror)) from None
    if lock is None:
        raise error(busy.format(folder=folder, pid=holder, error=""))
    return lock


def nearest_existing(path: str | os.PathLike) -> Path:
    """`path` itself when it exists, else its nearest existing parent: where a path not made yet will be made."""
    return next(p for p in [Path(path), *Path(path).absolute().parents] if p.exists())


def check_writable(path: str | os.PathLike, option: str, error: type[UserError] = UserError) -> None:
    """`error` unless a file can be made in the folder `path` (or, not made yet, in its nearest existing parent): a
    temporary file is created there and removed. Run before the work, so that a read-only disk, a folder without
    write permission or a path through a file is found then, and not once the work is done."""
    folder = nearest_existing(path)
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise error(f"{option}: cannot create '{path}' ({e.strerror}); choose a writable location") from None


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies under it, links resolved (a path not made yet: its existing part)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_apart(
    output: str | os.PathLike,
    option: str,
    inputs: dict[str, str | os.PathLike | None],
    both_ways: bool = True,
    error: type[UserError] = UserError,
) -> None:
    """`error` when the output `option` names is one of `inputs` (the options that name them: paths), lies inside
    one, or (`both_ways`: an output folder that is filled) holds one: a command never writes into what it reads."""
    for name, path in inputs.items():
        if path is None:
            continue
        if is_within(output, path):
            raise error(
                f"{option} '{output}' lies inside {name} '{path}', which the command reads; choose a location "
                f"outside it"
            )
        if both_ways and is_within(path, output):
            raise error(
                f"{option} '{output}' holds {name} '{path}', which the command reads; choose a location outside it"
            )


def check_outside_datasets(
    output: str | os.PathLike, option: str, error: type[UserError] = UserError, strict: bool = False
) -> None:
    """`error` when `output` lies inside a dataset's folder (one that holds a manifest.json), or is one unless
    `strict`: a dataset's folder holds its own files only, and a foreign entry makes generate --resume, --overwrite
    and src.play --record refuse it."""
    path = Path(output).resolve()
    for folder in path.parents if strict else [path, *path.parents]:
        if (folder / "manifest.json").is_file():  # src.dataset.manifest.MANIFEST (utils sits below the dataset layer)
            raise error(
                f"{option} '{output}' lies inside the dataset '{folder}'; a dataset's folder holds only its own "
                f"files: choose a location outside it"
            )


def check_free_space(path: str | os.PathLike, needed: int, message: str, error: type[UserError] = UserError) -> None:
    """`error(message)` when the filesystem that `path` will be on has fewer than `needed` bytes free; `message`
    may name {needed}, {free} and {folder} (the nearest existing folder)."""
    existing, free = free_space(path)
    if free < needed:
        raise error(message.format(needed=human_bytes(needed), free=human_bytes(free), folder=existing))


def free_space(path: str | os.PathLike) -> tuple[Path, int]:
    """(the nearest existing folder at or above `path`, the bytes free on its filesystem): what a path that does
    not exist yet will have room for."""
    existing = nearest_existing(path)
    return existing, shutil.disk_usage(existing).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
