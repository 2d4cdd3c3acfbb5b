"""Merge datasets recorded in parts (on several machines) into one dataset, without copying the shard data.

    python -m src.dataset.merge_datasets --out_dir data/pong data/pong_part1 data/pong_part2 ...

Each part is a complete dataset of generate_dataset (recorded with --part K/N, or any datasets whose episode ids
do not overlap) of the same game, settings, policy and emulator version. The merged directory gets a hard link to
every shard file (no bytes copied; a copy only where the parts lie on another filesystem) and one manifest listing
them all, checked against the parts' checksums and written last, atomically.

The merged dataset is built in a hidden folder beside --out_dir (.NAME.merging, holding the merge's lock) and renamed
onto --out_dir once complete: a killed merge leaves --out_dir as it was (absent or empty) and that folder, which the
same command again removes (its lock no longer held) before it merges anew. Run again after a kill that came once
the rename was done, the same command finds the merge complete and says so.

Games recorded by hand (src.play --record, policy "human") merge with each other, not with a policy's data. Each
recording numbers its episodes from 0, so a recording whose ids are taken gets new ones: its episode files
(8 bytes a row) are rewritten, its frames still linked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
from pathlib import Path
from typing import IO

import numpy as np

from src.dataset.manifest import DatasetError, Manifest, now
from src.dataset.schema import HUMAN, MAX_EPISODE, STEPS
from src.dataset.shard_writer import create_new, is_dataset_file
from src.dataset.shards import LOCK_FILE, ShardedDataset, shard_path
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_apart, check_outside_datasets, check_writable, checksum_file, fsync_dir, try_lock

SAME = ("game", "env_id", "env", "num_actions", "action_meanings", "policy", "layout", "fields")  # agree between parts


def check_parts(parts: list[ShardedDataset]) -> None:
    """UserError unless the parts are complete, alike and hold different episodes (recordings by hand: different
    shards, as their episode ids are renumbered)."""
    first, reference = parts[0], parts[0].manifest.to_dict()
    seen: dict[int, Path] = {}
    recorded: dict[str, Path] = {}  # a shard's frames checksum -> the part that holds it
    for part in parts:
        if not part.manifest.complete:
            raise UserError(f"'{part.root}' is incomplete; finish it with generate_dataset --resume before merging")
        described = part.manifest.to_dict()
        if part.layout != first.layout:
            raise UserError(
                f"'{part.root}' is in the {part.layout} layout, '{first.root}' in the {first.layout} one; convert "
                f"one with python -m src.dataset.convert_dataset SRC DST --layout {first.layout}, then merge"
            )
        for key in SAME:
            mine, theirs = described.get(key), reference.get(key)
            if mine != theirs:
                raise UserError(
                    f"'{part.root}' differs from '{first.root}' in {key} ({mine} vs {theirs}); "
                    "only datasets of the same game and settings merge"
                )
        mine, theirs = part.manifest.versions.get("ale-py"), first.manifest.versions.get("ale-py")
        if mine and theirs and mine != theirs:
            raise UserError(
                f"'{part.root}' was recorded with ale-py {mine}, '{first.root}' with {theirs}: frames of two "
                "emulator versions would mix; merge only datasets of one ale-py version"
            )
        if part.manifest.policy == HUMAN:
            for shard in part.shards:
                checksum = shard["files"]["obs" if part.layout == STEPS else "frames"]["xxh3_128"]
                if checksum in recorded:
                    raise UserError(
                        f"'{part.root}' and '{recorded[checksum]}' hold the same recorded steps; "
                        "merge each recording once"
                    )
                recorded[checksum] = part.root
            continue
        for episode in {e for s in part.shards for e in s["episodes"]}:
            if episode in seen:
                raise UserError(
                    f"'{part.root}' and '{seen[episode]}' both hold episode {episode}; record each machine's "
                    "part with --part K/N (or merge each dataset only once)"
                )
            seen[episode] = part.root


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link `target` to `source`; copy where they are on different filesystems. Returns whether it linked."""
    try:
        os.link(source, target)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    shutil.copyfile(source, target)
    return False


def renumbered(part: ShardedDataset, first_free: int) -> int:
    """The offset that moves a recording by hand's episode ids past those already merged (0 if they are free)."""
    if part.manifest.policy != HUMAN:
        return 0
    lowest = min(e for s in part.shards for e in s["episodes"])
    offset = max(0, first_free - lowest)
    if max(e for s in part.shards for e in s["episodes"]) + offset > MAX_EPISODE:
        raise UserError(f"'{part.root}': its episode ids cannot be renumbered below 2**62; merge fewer recordings")
    return offset


def write_episodes(source: Path, target: Path, offset: int) -> dict:
    """A shard's episode file with `offset` added to every id; returns its manifest entry."""
    with create_new(target) as f:
        np.save(f, np.load(source) + np.int64(offset))
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": target.stat().st_size, "xxh3_128": checksum_file(target)}


def merge(out: Path, parts: list[ShardedDataset]) -> tuple[Manifest, int]:
    """Link the parts' shards into `out` in order and write the merged manifest; returns it and the files linked."""
    manifest = dataclasses.replace(
        parts[0].manifest,
        part=None,
        created=now(),
        sessions=[],
        shards=[],
        merged_from=[
            {"dir": str(p.root.resolve()), "seed": p.manifest.seed, "part": p.manifest.part, "steps": len(p)}
            for p in parts
        ],
    )
    linked = 0
    for part in parts:
        offset = renumbered(part, max((e + 1 for s in manifest.shards for e in s["episodes"]), default=0))
        for shard in part.shards:
            entry = {k: v for k, v in shard.items() if k not in ("index", "session")}
            for field in shard["files"]:
                source, target = (
                    shard_path(part.root, shard["index"], field),
                    shard_path(out, manifest.next_shard, field),
                )
                if field == "episode" and offset:
                    entry = {
                        **entry,
                        "episodes": [e + offset for e in shard["episodes"]],
                        "files": {**entry["files"], field: write_episodes(source, target, offset)},
                    }
                else:
                    linked += link_or_copy(source, target)
            manifest.add_shard(entry, len(manifest.sessions))
        manifest.sessions += [{**s, "from": str(part.root)} for s in part.manifest.sessions]
    manifest.target_steps = manifest.steps
    manifest.write(out)  # last: until here, out holds no dataset
    return manifest, linked


def staging_dir(out: Path) -> Path:
    """Where a merge into `out` is built before it is renamed onto `out`: a hidden folder beside it (beside the folder
    it stands for, where `out` is a link)."""
    out = Path(os.path.realpath(out))
    return out.with_name(f".{out.name}.merging")


def lock_staging(staging: Path, out: Path) -> IO[str]:
    """Create `staging` (and the folders above it) and take the lock inside it; a killed merge's folder, whose lock
    nobody holds any more, is taken over. A lock taken on a file that is no longer staging/.lock (a merge that finished
    meanwhile renamed its folder onto --out_dir, one refused meanwhile removed it) is let go and taken anew."""
    for _ in range(10):
        try:
            staging.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create --out_dir '{out}' ({e.strerror}); choose a writable directory") from None
        try:
            lock, holder = try_lock(staging / LOCK_FILE)
        except FileNotFoundError:  # its folder was removed meanwhile
            continue
        except OSError as e:
            raise UserError(
                f"cannot write beside --out_dir '{out}' ({e.strerror}); choose a writable directory"
            ) from None
        if lock is None:
            raise UserError(
                f"another merge (pid {holder}) is writing to '{out}'; wait for it to finish or choose another --out_dir"
            )
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(staging / LOCK_FILE)):
                return lock
        lock.close()
    raise UserError(
        f"other merges into '{out}' keep starting and ending; wait for them to finish or choose another --out_dir"
    )


def killed_merge_files(staging: Path, out: Path) -> list[Path]:
    """What a killed merge left in `staging` (its lock aside): only files that a merge writes, or a UserError."""
    found = [path for path in staging.iterdir() if path.name != LOCK_FILE]
    for path in found:
        if not is_dataset_file(path.name) or (path.is_dir() and not path.is_symlink()):
            raise UserError(
                f"'{staging}' holds '{path.name}', which no merge writes; remove that folder to merge into '{out}'"
            )
    return found


def remove_staging(staging: Path, out: Path) -> None:
    """Remove `staging` (under its lock, still held: its lock file goes last, and a merge that opens it meanwhile finds
    it gone and starts over). Its files are unlinked: a link to a part's shard goes, the part's file keeps its bytes."""
    with contextlib.suppress(OSError, UserError):
        for path in killed_merge_files(staging, out):
            path.unlink()
        (staging / LOCK_FILE).unlink()
        staging.rmdir()


def already_merged(out: Path, dirs: list[str]) -> bool:
    """Whether `out` holds the complete merge of the datasets `dirs`, in this order and as long as they are now: a merge
    killed after it renamed its folder onto --out_dir, run again."""
    try:
        with ShardedDataset(out, verify="quick") as merged:
            done = [(m.get("dir"), m.get("steps")) for m in merged.manifest.merged_from or []]
            return merged.manifest.complete and done == [(str(Path(d).resolve()), Manifest.read(d).steps) for d in dirs]
    except (DatasetError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.merge_datasets", description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="+", help="the datasets to merge, in order")
    p.add_argument(
        "--out_dir", required=True, help="a new directory for the merged dataset (on the parts' filesystem: no copy)"
    )
    p.add_argument(
        "--verify", choices=("full", "quick"), default="full", help="check the parts' checksums first (default full)"
    )
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    for part in args.parts:  # the merged dataset inside a part would make that part unusable (a foreign entry)
        check_apart(out, "--out_dir", {"a part": part})
    check_outside_datasets(out, "--out_dir", strict=True)
    check_writable(out.absolute().parent, "--out_dir")  # the merge is built beside it: before the parts' checksums
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if already_merged(out, args.parts):
            print(
                f"--out_dir '{out}' already holds the merge of these {len(args.parts)} datasets; nothing to do",
                flush=True,
            )
            return 0
        raise UserError(f"--out_dir '{out}' is not empty; choose a new directory for the merged dataset")
    if len({Path(d).resolve() for d in args.parts}) != len(args.parts):
        raise UserError("a dataset is named twice; name each part once")
    try:
        parts = [ShardedDataset(d, verify=args.verify) for d in args.parts]
    except DatasetError as e:
        raise UserError(f"cannot merge: {e}") from None
    check_parts(parts)
    staging = staging_dir(out)
    with lock_staging(staging, out):
        if out.exists() and (
            not out.is_dir() or any(out.iterdir())
        ):  # again, under the lock: a merge that ran meanwhile
            remove_staging(staging, out)
            raise UserError(f"--out_dir '{out}' is not empty; choose a new directory for the merged dataset")
        for path in killed_merge_files(staging, out):  # a killed merge's links and manifest: it starts over
            path.unlink()
        try:
            manifest, linked = merge(staging, parts)
            with ShardedDataset(staging, verify="quick"):  # the merged manifest reads back and names files that exist
                pass
        except BaseException:
            remove_staging(staging, out)
            raise
        try:  # atomic, onto a missing or empty directory: --out_dir holds nothing or the whole merged dataset
            os.rename(staging, os.path.realpath(out))
        except OSError as e:
            remove_staging(staging, out)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # a generation wrote to it meanwhile
                raise UserError(
                    f"--out_dir '{out}' is not empty; choose a new directory for the merged dataset"
                ) from None
            raise UserError(
                f"cannot move the merged dataset from '{staging}' onto --out_dir '{out}' ({e.strerror}); "
                "choose a new directory beside it"
            ) from None
        fsync_dir(staging.parent)
    for part in parts:
        part.close()
    files = sum(len(s["files"]) for s in manifest.shards)
    print(
        manifest.describe(out)
        + f"\nmerged    {len(parts)} datasets: {linked} of {files} files hard-linked (no bytes copied), "
        f"{files - linked} copied",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
