"""Merge datasets recorded in parts (on several machines) into one dataset, without copying the shard data.

    python -m src.dataset.merge_datasets --out_dir data/pong data/pong_part1 data/pong_part2 ...

Each part is a complete dataset of generate_dataset (recorded with --part K/N, or any datasets whose episode ids
do not overlap) of the same game, settings, policy and emulator version. The merged directory gets a hard link to
every shard file (no bytes copied; a copy only where the parts lie on another filesystem) and one manifest listing
them all, checked against the parts' checksums and written last, atomically.

Games recorded by hand (src.play --record, policy "human") merge with each other, not with a policy's data. Each
recording numbers its episodes from 0, so a recording whose ids are taken gets new ones: its episode files
(8 bytes a row) are rewritten, its frames still linked.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

import numpy as np

from src.dataset.manifest import HUMAN, MAX_EPISODE, DatasetError, Manifest, now
from src.dataset.shards import LOCK_FILE, ShardedDataset, create_new, shard_path
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import checksum_file, hold_lock

SAME = ("game", "env_id", "env", "num_actions", "action_meanings", "policy", "fields")  # must agree between parts


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
        for key in SAME:
            mine, theirs = described[key], reference[key]
            if mine != theirs:
                raise UserError(f"'{part.root}' differs from '{first.root}' in {key} ({mine} vs {theirs}); "
                                "only datasets of the same game and settings merge")
        mine, theirs = part.manifest.versions.get("ale-py"), first.manifest.versions.get("ale-py")
        if mine and theirs and mine != theirs:
            raise UserError(f"'{part.root}' was recorded with ale-py {mine}, '{first.root}' with {theirs}: frames of two "
                            "emulator versions would mix; merge only datasets of one ale-py version")
        if part.manifest.policy == HUMAN:
            for shard in part.shards:
                checksum = shard["files"]["obs"]["xxh3_128"]
                if checksum in recorded:
                    raise UserError(f"'{part.root}' and '{recorded[checksum]}' hold the same recorded steps; merge each recording once")
                recorded[checksum] = part.root
            continue
        for episode in {e for s in part.shards for e in s["episodes"]}:
            if episode in seen:
                raise UserError(f"'{part.root}' and '{seen[episode]}' both hold episode {episode}; record each machine's "
                                "part with --part K/N (or merge each dataset only once)")
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
        parts[0].manifest, part=None, created=now(), sessions=[], shards=[],
        merged_from=[{"dir": str(p.root.resolve()), "seed": p.manifest.seed, "part": p.manifest.part, "steps": len(p)} for p in parts])
    linked = 0
    for part in parts:
        offset = renumbered(part, max((e + 1 for s in manifest.shards for e in s["episodes"]), default=0))
        for shard in part.shards:
            entry = {k: v for k, v in shard.items() if k not in ("index", "session")}
            for field in shard["files"]:
                source, target = shard_path(part.root, shard["index"], field), shard_path(out, manifest.next_shard, field)
                if field == "episode" and offset:
                    entry = {**entry, "episodes": [e + offset for e in shard["episodes"]],
                             "files": {**entry["files"], field: write_episodes(source, target, offset)}}
                else:
                    linked += link_or_copy(source, target)
            manifest.add_shard(entry, len(manifest.sessions))
        manifest.sessions += [{**s, "from": str(part.root)} for s in part.manifest.sessions]
    manifest.target_steps = manifest.steps
    manifest.write(out)  # last: until here, out holds no dataset
    return manifest, linked


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.merge_datasets", description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="+", help="the datasets to merge, in order")
    p.add_argument("--out_dir", required=True, help="a new directory for the merged dataset (on the parts' filesystem: no copy)")
    p.add_argument("--verify", choices=("full", "quick"), default="full", help="check the parts' checksums first (default full)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out_dir '{out}' is not empty; choose a new directory for the merged dataset")
    if len({Path(d).resolve() for d in args.parts}) != len(args.parts):
        raise UserError("a dataset is named twice; name each part once")
    try:
        parts = [ShardedDataset(d, verify=args.verify) for d in args.parts]
    except DatasetError as e:
        raise UserError(f"cannot merge: {e}") from None
    check_parts(parts)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out_dir '{out}' ({e.strerror}); choose a writable directory") from None
    with hold_lock(out / LOCK_FILE, "another merge or generation (pid {pid}) is writing to '{folder}'; wait for it to "
                   "finish or choose another --out_dir", "cannot write to --out_dir '{folder}' ({error}); choose a writable directory"):
        if any(p.name != LOCK_FILE for p in out.iterdir()):  # again, under the lock: a merge that ran meanwhile
            raise UserError(f"--out_dir '{out}' is not empty; choose a new directory for the merged dataset")
        manifest, linked = merge(out, parts)
    for part in parts:
        part.close()
    with ShardedDataset(out, verify="quick"):  # the merged manifest reads back and names files that exist
        pass
    files = sum(len(s["files"]) for s in manifest.shards)
    print(manifest.describe(out) + f"\nmerged    {len(parts)} datasets: {linked} of {files} files hard-linked (no bytes copied), "
          f"{files - linked} copied", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
