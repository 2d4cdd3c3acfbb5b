"""Record Atari transitions with a behaviour policy into a sharded dataset (docs/dataset.md, "On disk").

    python -m src.dataset.generate_dataset --game Pong --steps 300000 --out_dir data/pong

`--num_envs` games run in ale-py's native vector environment (C++ threads); each fills its own shards.
A killed run continues with `--resume`: finished shards are kept and exactly `--steps` are recorded in all.
"""

from __future__ import annotations

import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from src.dataset.collect import record
from src.dataset.frames import default_layout
from src.dataset.manifest import MANIFEST, Manifest, emulator_change
from src.dataset.schema import (
    FRAMES,
    HUMAN,
    IMPORTED,
    MAX_NUM_ENVS,
    MAX_PART,
    MAX_SEED,
    MAX_SHARD_ROWS,
    MAX_STEPS,
    STEPS,
    bytes_per_row,
)
from src.dataset.shard_writer import clear_unlisted, is_dataset_file, promote_shard
from src.dataset.shards import LOCK_FILE, READERS_FILE, SHARD_FILE, lock_readers
from src.envs.atari import EnvSettings, available_cores, available_games, resolve_game
from src.envs.policies import POLICIES
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_free_space, check_outside_datasets, hold_lock, human_bytes

# Defaults of the settings that make up a dataset; with --resume, the manifest's values are used instead.
DEFAULTS = {
    "game": "Pong",
    "seed": 0,
    "shard_size": 5_000,  # rows per shard file set: about 176 MB of frames
    "policy": "random",
    "repeat_action_probability": 0.0,
    "frame_skip": 4,
    "noop_max": 30,
    "max_episode_steps": 27_000,
    "layout": STEPS,
}
HEADER_BYTES = 128  # an .npy header, per file


def parse_args(argv: list[str] | None) -> tuple[dict, set[str]]:
    """Returns all options (defaults filled in) and the names the user gave explicitly."""
    p = ArgumentParser(prog="python -m src.dataset.generate_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--game", help="ALE game as you would write it: Pong, MsPacman, ALE/Pong-v5 (default Pong)")
    p.add_argument(
        "--steps", type=int, help="total transitions in the dataset (with --resume: default the original target)"
    )
    p.add_argument("--out_dir", help="dataset directory to create")
    p.add_argument("--seed", type=int, help="seeds the no-op starts and the policy (default 0)")
    p.add_argument("--shard_size", type=int, help=f"rows per shard (default {DEFAULTS['shard_size']})")
    p.add_argument(
        "--num_envs", type=int, help="games stepped in parallel, in C++ threads on every core (default: 2 per core)"
    )
    p.add_argument("--policy", choices=sorted(POLICIES), help="behaviour policy (default random)")
    p.add_argument("--repeat_action_probability", type=float, help="sticky actions (default 0.0)")
    p.add_argument("--frame_skip", type=int, help="emulator frames per step, max-pooled over the last two (default 4)")
    p.add_argument("--noop_max", type=int, help="at most this many no-op actions at reset (default 30)")
    p.add_argument("--max_episode_steps", type=int, help="truncate episodes after this many steps (default 27000)")
    p.add_argument(
        "--layout",
        choices=(STEPS, FRAMES),
        help=f"{STEPS}: obs and next_obs stored per step, the contract's layout (default); {FRAMES}: each frame "
        "stored once, compressed, about 100x smaller (docs/dataset.md)",
    )
    p.add_argument(
        "--part",
        help="K/N: this machine records part K of N (own seeds and episode ids), "
        "to be merged with src.dataset.merge_datasets",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the dataset in out_dir (or start it if out_dir is empty)"
    )
    p.add_argument("--overwrite", action="store_true", help="delete the dataset in out_dir and record a new one")
    p.add_argument("--list_games", action="store_true", help="print the available games and exit")
    args = vars(p.parse_args(argv))
    given = {k for k, v in args.items() if v not in (None, False)}
    for key, value in DEFAULTS.items():
        if args[key] is None:
            args[key] = value
    if args["num_envs"] is None:
        args["num_envs"] = min(
            2 * available_cores(), MAX_NUM_ENVS
        )  # half emulate while half are recorded; 4 was fastest on 2 cores
    return args, given


def main(argv: list[str] | None = None) -> int:
    args, given = parse_args(argv)
    if args["list_games"]:
        print("\n".join(available_games().values()))
        return 0
    if not args["out_dir"]:
        raise UserError("--out_dir is required (where the dataset is written, e.g. data/pong)")
    if args["resume"] and args["overwrite"]:
        raise UserError("--resume and --overwrite exclude each other: continue the dataset, or replace it")
    check_numbers(args)
    root = Path(args["out_dir"])
    check_outside_datasets(root, "--out_dir", strict=True)  # a dataset inside another makes that one unusable
    manifest = previous_manifest(root, args, given)
    if manifest is None and "steps" not in given:
        raise UserError("--steps is required (total transitions to record, e.g. --steps 300000)")
    settings = manifest.env if manifest else new_settings(args)
    target = args["steps"] if "steps" in given else manifest.target_steps
    check_target(root, target, manifest)
    layout = manifest.layout_name if manifest else args["layout"]
    check_disk(
        root,
        (target - (manifest.steps if manifest else 0))
        * bytes_per_row(settings.context_frames, settings.screen_size, layout),
    )
    # A new dataset's manifest opens the game: the emulator has taken the settings before anything is deleted.
    new = (
        None
        if manifest
        else Manifest.create(
            settings,
            args["seed"],
            args["policy"],
            args["shard_size"],
            target,
            args["part"],
            default_layout() if layout == FRAMES else None,
        )
    )

    with ExitStack() as held:
        if args["overwrite"]:
            held.enter_context(ReadersExcluded(root))  # first: a refusal leaves even the lock file as it was
        held.enter_context(DirectoryLock(root))
        manifest = look_again(root, args, given, manifest)
        check_target(root, target, manifest)
        clear_unlisted(root, manifest)
        manifest = manifest or new
        manifest.target_steps = target
        return generate(root, manifest, args["num_envs"])


LIMITS = {
    "steps": (1, MAX_STEPS),
    "shard_size": (1, MAX_SHARD_ROWS),
    "num_envs": (1, MAX_NUM_ENVS),
    "seed": (0, MAX_SEED),
}


def check_numbers(args: dict) -> None:
    """Every number in range, before anything is read or written (the manifest's own limits: schema.py)."""
    for key, (low, high) in LIMITS.items():
        if args[key] is not None and args[key] < low:
            raise UserError(f"--{key} must be >= {low}, got {args[key]}")
        if args[key] is not None and args[key] > high:
            raise UserError(f"--{key} must be <= {high}, got {args[key]}")
    if args["part"] is not None:
        match = re.fullmatch(r"([0-9]{1,9})/([0-9]{1,9})", args["part"])
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise UserError(f"--part must be K/N with 1 <= K <= N, e.g. 2/4, got '{args['part']}'")
        if int(match[2]) > MAX_PART:
            raise UserError(
                f"--part: at most {MAX_PART} parts (each part's episode ids take a range of their own), "
                f"got '{args['part']}'"
            )
        args["part"] = [int(match[1]), int(match[2])]


def check_target(root: Path, target: int, manifest: Manifest | None) -> None:
    if manifest is not None and target < manifest.steps:
        raise UserError(f"--steps {target} is less than the {manifest.steps} steps already in '{root}'")


def new_settings(args: dict) -> EnvSettings:
    settings = EnvSettings(
        game=resolve_game(args["game"]),
        frame_skip=args["frame_skip"],
        noop_max=args["noop_max"],
        repeat_action_probability=args["repeat_action_probability"],
        max_episode_steps=args["max_episode_steps"],
    )
    try:
        settings.check()
    except UserError as e:
        raise UserError(f"--{e}") from None
    return settings


def previous_manifest(root: Path, args: dict, given: set[str], ours: tuple[str, ...] = ()) -> Manifest | None:
    """Decide what to do with an existing out_dir; returns the manifest to continue, or None to start anew.
    `ours`: names that do not make out_dir non-empty (the lock files this generation made itself)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--out_dir '{root}' is a file, not a directory; choose another path")
    entries = sorted(p.name for p in root.iterdir() if p.name not in ours) if root.is_dir() else []
    foreign = [name for name in entries if not is_dataset_file(name)]
    if not entries:
        return None
    if not (args["resume"] or args["overwrite"]):
        raise UserError(
            f"--out_dir '{root}' is not empty ({len(entries)} entries); "
            "pass --resume to continue its dataset, --overwrite to replace it, or choose another directory"
        )
    if foreign:
        raise UserError(
            f"'{root}' holds files that are not part of a dataset (e.g. '{foreign[0]}'); choose another --out_dir"
        )
    if args["overwrite"]:
        return None
    if MANIFEST not in entries:
        if any(SHARD_FILE.fullmatch(name) for name in entries):
            raise UserError(f"'{root}' has shard files but no {MANIFEST}: cannot resume; use --overwrite to start anew")
        return None  # killed before its first manifest: nothing to keep
    manifest = Manifest.read(root)
    check_continuable(root, manifest)
    stored = {
        **manifest.env.to_dict(),
        "seed": manifest.seed,
        "policy": manifest.policy,
        "shard_size": manifest.shard_size,
        "part": manifest.part,
        "layout": manifest.layout_name,
    }
    for key in sorted(given & set(stored)):
        value = resolve_game(args[key]) if key == "game" else args[key]
        if value != stored[key]:
            raise UserError(
                f"--{key} {args[key]} differs from the dataset's {stored[key]}; --resume keeps the dataset's settings"
            )
    return manifest


def check_continuable(root: Path, manifest: Manifest) -> None:
    """A dataset --resume can add to: recorded by a policy (not by hand), with the emulator that runs now."""
    if manifest.policy in IMPORTED:
        raise UserError(
            f"'{root}' holds steps imported from elsewhere (policy {manifest.policy}): the generator cannot continue "
            "them; choose another --out_dir"
        )
    if manifest.policy == HUMAN:
        raise UserError(
            f"'{root}' is a game recorded by hand in src.play (policy {HUMAN}): a policy cannot continue it; "
            "record more with src.play --record, or choose another --out_dir"
        )
    change = emulator_change(manifest)
    if change:
        raise UserError(
            f"'{root}' was recorded with ale-py {change[0]}, this is ale-py {change[1]}: frames of two emulator "
            f"versions would mix; resume it with ale-py {change[0]}, or record a new dataset"
        )


def look_again(root: Path, args: dict, given: set[str], manifest: Manifest | None) -> Manifest | None:
    """previous_manifest again, under the lock: another generation may have written to out_dir since the first look
    (it would then be refused as not empty, not deleted as the old dataset)."""
    again = previous_manifest(root, args, given, ours=(LOCK_FILE, READERS_FILE))
    if (again is None) != (manifest is None):
        raise UserError(f"another generation wrote to '{root}' meanwhile; run the command again")
    return again


def check_disk(root: Path, needed: int) -> None:
    check_free_space(
        root,
        needed,
        "not enough disk space: the dataset needs about {needed} more, {free} is free at "
        "'{folder}'; free some space, lower --steps or choose another --out_dir",
    )


class DirectoryLock:
    """Creates out_dir and holds an exclusive lock on it, so that two generations never write to one dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> DirectoryLock:
        unwritable = "cannot write to --out_dir '{folder}' ({error}); choose a writable directory"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(unwritable.format(folder=self.root, error=e.strerror)) from None
        self.file = hold_lock(
            self.root / LOCK_FILE,
            "another generation (pid {pid}) is writing to '{folder}'; "
            "wait for it to finish or choose another --out_dir",
            unwritable,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # releases the lock; the file itself stays


class ReadersExcluded:
    """For --overwrite: holds the exclusive lock on out_dir's reader file (shards.lock_readers) while the old dataset
    is deleted and the new one recorded, so that nothing reads a dataset as it is replaced."""

    def __init__(self, root: Path) -> None:
        self.root, self.file = root, None

    def __enter__(self) -> ReadersExcluded:
        if self.root.is_dir():
            try:
                self.file = lock_readers(self.root, exclusive=True)
            except BlockingIOError:
                raise UserError(
                    f"a training, evaluation or play is reading '{self.root}'; wait for it to end, "
                    "or choose another --out_dir"
                ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


PART_EPISODES = 1 << 40  # episode ids of part K start at K << 40: far more episodes than any part records


def part_first_episode(manifest: Manifest) -> int:
    return manifest.part[0] * PART_EPISODES if manifest.part else 0


def split(total: int, parts: int) -> list[int]:
    """Split `total` steps as evenly as possible over `parts` games."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def generate(root: Path, manifest: Manifest, num_envs: int) -> int:
    remaining = manifest.target_steps - manifest.steps
    session = manifest.add_session(num_envs)
    manifest.write(root)
    print(
        f"{manifest.game} ({manifest.env_id}, {manifest.num_actions} actions, {manifest.policy} policy) -> {root}\n"
        f"recording {remaining:,} of {manifest.target_steps:,} steps with {num_envs} env(s), "
        + (
            f"about {human_bytes(remaining * bytes_per_row(manifest.env.context_frames, manifest.env.screen_size))}"
            if manifest.layout is None
            else f"each frame once, {manifest.layout['codec']}-compressed, {manifest.layout['chunk_frames']} a chunk"
        ),
        flush=True,
    )
    start = time.perf_counter()
    try:
        if remaining > 0:
            run_session(root, manifest, num_envs, remaining, session)
    except KeyboardInterrupt:
        print(f"interrupted: the complete shards are kept; continue with --resume --out_dir {root}", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    manifest.sessions[-1]["seconds"] = round(seconds, 2)
    manifest.write(root)
    print_summary(root, manifest, remaining, seconds)
    return 0


def run_session(root: Path, manifest: Manifest, num_envs: int, remaining: int, session: int) -> None:
    def on_shard(tag: str, entry: dict) -> None:
        promote_shard(root, tag, manifest.next_shard, list(entry["files"]))
        manifest.add_shard(entry, session)
        manifest.write(root)

    with tqdm(
        total=manifest.target_steps,
        initial=manifest.target_steps - remaining,
        unit="step",
        smoothing=0.05,
        mininterval=0.5,
        dynamic_ncols=True,
    ) as bar:
        record(
            str(root),
            manifest.env,
            manifest.policy,
            quotas=split(remaining, min(num_envs, remaining)),
            shard_size=manifest.shard_size,
            # Part K of N: its own seeds, and episode ids from K * PART_EPISODES, so that merged parts never collide.
            seed_key=(manifest.seed, session, *(manifest.part or ())),
            first_episode=max(
                (e for s in manifest.shards for e in s["episodes"]), default=part_first_episode(manifest) - 1
            )
            + 1,
            tag=f"s{session}",
            on_shard=on_shard,
            on_progress=bar.update,
            layout=manifest.layout,
        )


def print_summary(root: Path, manifest: Manifest, recorded: int, seconds: float) -> None:
    rate = f"{recorded / seconds:,.0f} steps/s" if recorded and seconds > 0 else "nothing left to record"
    print(manifest.describe(root) + f"\ntime      {seconds:.1f} s for {recorded:,} steps ({rate})", flush=True)


if __name__ == "__main__":
    run_cli(main)
