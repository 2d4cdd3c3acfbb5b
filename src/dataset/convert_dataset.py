"""Convert a dataset between the contract's layout (steps: obs and next_obs stored per step) and the compact one
(frames: each frame stored once, compressed; frames.py), shard by shard.

    python -m src.dataset.convert_dataset data/pong data/pong_frames --layout frames [--resume]

Streaming: a source shard is read ROWS rows at a time, so memory holds one block and one shard's compressed bytes,
never the dataset. Every written shard is read back from its files and compared, sample for sample (the stack, the
next frame, action, reward, end, episode), with the source before it is listed; a difference is an error and lists
nothing. Each converted shard is listed in DST's manifest as soon as it is complete, so a killed conversion continues
with --resume from the first shard it had not listed. DST gets SRC's game, settings, seed, sessions and episode ids;
only the layout (and so the files and their checksums) differs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from src.dataset.frames import ChunkCache, FrameStore, default_layout, stacks
from src.dataset.generate_dataset import DirectoryLock
from src.dataset.manifest import MANIFEST, Manifest
from src.dataset.schema import FRAMES, STEPS, bytes_per_row, field_specs
from src.dataset.shard_writer import clear_unlisted, is_dataset_file, promote_shard, shard_writer, tmp_shard_path
from src.dataset.shards import LOCK_FILE, READERS_FILE, ShardedDataset
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_apart, check_free_space, check_outside_datasets, human_bytes

ROWS = 1024  # source rows read at a time (about 36 MB of stacks)
COLUMNS = ("action", "done", "reward", "episode")


def target_manifest(source: Manifest, layout: str) -> Manifest:
    """DST's manifest before its first shard: SRC's, in `layout`."""
    env = source.env
    specs = field_specs(env.context_frames, env.screen_size, layout)
    return dataclasses.replace(
        source,
        layout=default_layout() if layout == FRAMES else None,
        fields={name: {"dtype": dtype.name, "shape": list(shape)} for name, (dtype, shape) in specs.items()},
        sessions=[dict(s) for s in source.sessions],
        shards=[],
        target_steps=source.steps,
        totals=None,
        complete=False,
    )


def continued(dst: Path, source: ShardedDataset, layout: str, resume: bool) -> Manifest | None:
    """DST's manifest to continue (a conversion of SRC into `layout` that --resume asked to finish), None for a new
    one (DST absent or empty), or one line (UserError)."""
    if dst.exists() and not dst.is_dir():
        raise UserError(f"DST '{dst}' is a file, not a directory; choose another path")
    names = sorted(p.name for p in dst.iterdir() if p.name not in (LOCK_FILE, READERS_FILE)) if dst.is_dir() else []
    if not names:
        return None
    if not resume:
        raise UserError(f"DST '{dst}' is not empty; pass --resume to finish a conversion there, or choose another DST")
    foreign = [n for n in names if not is_dataset_file(n)]
    if foreign or MANIFEST not in names:
        why = f"'{foreign[0]}' is not a file of a dataset" if foreign else f"it has no {MANIFEST}"
        raise UserError(f"DST '{dst}' holds no conversion to finish ({why}); choose another DST")
    manifest = Manifest.read(dst)
    expected = target_manifest(source.manifest, layout)
    done = manifest.shards
    same = manifest.layout_name == layout and all(
        getattr(manifest, key) == getattr(expected, key) for key in ("game", "env", "seed", "policy", "part")
    )
    if (
        not same
        or len(done) > len(source.shards)
        or any(
            (a["rows"], a["episodes"], a["dones"]) != (b["rows"], b["episodes"], b["dones"])
            for a, b in zip(done, source.shards)
        )
    ):
        raise UserError(
            f"DST '{dst}' holds another dataset than a {layout}-layout conversion of '{source.root}'; "
            "choose another DST"
        )
    return manifest


def written_frames(root: Path, tag: str, entry: dict, layout: dict | None, stack: tuple[int, int, int]):
    """(obs, next_obs) readers of a shard written under its temporary names: functions of a row slice."""
    load = lambda field: np.load(tmp_shard_path(root, tag, field), mmap_mode="r")  # noqa: E731
    if layout is None:
        obs, next_obs = load("obs"), load("next_obs")
        return (lambda rows: np.asarray(obs[rows])), (lambda rows: np.asarray(next_obs[rows]))
    store = FrameStore(
        load("frames"), np.asarray(load("chunks")), entry["frames"], layout["chunk_frames"], stack[1:], ChunkCache(), 0
    )
    frame, context = np.asarray(load("frame"), dtype=np.int64), np.asarray(load("context"), dtype=np.int64)
    return (
        lambda rows: stacks(store, frame[rows], context[rows], stack[0]),
        lambda rows: store.get(frame[rows] + 1)[:, None],
    )


def convert_shard(source: ShardedDataset, pos: int, dst: Path, manifest: Manifest, bar: tqdm) -> dict:
    """Write source shard `pos` in DST's layout under temporary names, compare it with the source and return its
    manifest entry (the files are then promoted and listed by the caller)."""
    shard, env = source.shards[pos], source.manifest.env
    tag = f"convert{shard['index']}"
    writer = shard_writer(manifest.layout, dst, tag, shard["rows"], env.context_frames, env.screen_size)
    for begin in range(0, shard["rows"], ROWS):
        rows = slice(begin, min(begin + ROWS, shard["rows"]))
        obs, next_obs = source.frames(pos, "obs", rows), source.frames(pos, "next_obs", rows)
        columns = [np.asarray(source.array(pos, field)[rows]) for field in COLUMNS]
        for i in range(len(obs)):
            action, done, reward, episode = (c[i] for c in columns)
            writer.append(obs[i], int(action), next_obs[i], bool(done), float(reward), int(episode))
        bar.update(len(obs))
    entry = writer.finish()
    read_obs, read_next = written_frames(dst, tag, entry, manifest.layout, source.stack)
    for begin in range(0, shard["rows"], ROWS):
        rows = slice(begin, min(begin + ROWS, shard["rows"]))
        for field, read in (("obs", read_obs), ("next_obs", read_next)):
            if not np.array_equal(read(rows), source.frames(pos, field, rows)):
                raise UserError(
                    f"shard {shard['index']} of '{source.root}': its {field} did not read back equal from the "
                    f"{manifest.layout_name} layout (rows {rows.start}..{rows.stop - 1}); nothing of it was listed"
                )
    for field in COLUMNS:
        written = np.load(tmp_shard_path(dst, tag, field), mmap_mode="r")
        if not np.array_equal(written, source.array(pos, field)):
            raise UserError(f"shard {shard['index']}: its {field} did not read back equal; nothing of it was listed")
    return entry


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.convert_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="the dataset to convert (it is only read)")
    p.add_argument("dst", help="the directory of the converted dataset (new, or one to finish with --resume)")
    p.add_argument(
        "--layout",
        required=True,
        choices=(STEPS, FRAMES),
        help=f"{FRAMES}: each frame stored once, compressed; {STEPS}: obs and next_obs per step (the contract's)",
    )
    p.add_argument("--resume", action="store_true", help="finish a conversion that was killed")
    args = p.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    check_apart(dst, "DST", {"SRC": src})
    check_outside_datasets(dst, "DST", strict=True)
    start = time.perf_counter()
    with ShardedDataset(src, verify="full") as source:
        if source.layout == args.layout:
            raise UserError(f"'{src}' is already in the {args.layout} layout; nothing to convert")
        if not source.manifest.complete:
            raise UserError(f"'{src}' is incomplete; finish it with generate_dataset --resume, then convert it")
        manifest = continued(dst, source, args.layout, args.resume)
        if args.layout == STEPS:
            env = source.manifest.env
            need = (len(source) - (manifest.steps if manifest else 0)) * bytes_per_row(
                env.context_frames, env.screen_size
            )
            check_free_space(
                dst if dst.exists() else dst.parent,
                need,
                "not enough disk space: the conversion needs about {needed}, {free} is free at '{folder}'; free some "
                "space or choose another DST",
            )
        source.save_verification()
        with DirectoryLock(dst):
            manifest = continued(dst, source, args.layout, args.resume)  # again, under the lock
            clear_unlisted(dst, manifest)
            manifest = manifest or target_manifest(source.manifest, args.layout)
            manifest.write(dst)
            first = len(manifest.shards)
            with tqdm(
                total=len(source),
                initial=manifest.steps,
                unit="step",
                desc=f"to {args.layout}",
                dynamic_ncols=True,
                disable=None,
            ) as bar:
                for pos in range(first, len(source.shards)):
                    entry = convert_shard(source, pos, dst, manifest, bar)
                    promote_shard(
                        dst, f"convert{source.shards[pos]['index']}", manifest.next_shard, list(entry["files"])
                    )
                    manifest.add_shard(entry, source.shards[pos]["session"])
                    manifest.write(dst)
        before = sum(f["bytes"] for s in source.shards for f in s["files"].values())
    after = manifest.totals["bytes"]
    print(manifest.describe(dst))
    print(
        f"converted {manifest.steps:,} steps from {human_bytes(before)} ({before / manifest.steps:,.0f} bytes a step) "
        f"to {human_bytes(after)} ({after / manifest.steps:,.0f} bytes a step, "
        f"{f'{before / after:.1f}x smaller' if after < before else f'{after / before:.1f}x larger'}) in "
        f"{time.perf_counter() - start:.1f} s; every sample read back equal"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
