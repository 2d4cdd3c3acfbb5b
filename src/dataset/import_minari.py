"""Import a Minari dataset of an ALE game into a dataset of this project (either layout).

    python -m src.dataset.import_minari ale/pong/random-v0 data/pong_minari [--layout frames] [--game Pong]
                                        [--minari_dir DIR] [--shard_size 5000]

The Minari dataset's observations are one frame each: 84x84 uint8 grayscale frames (as `src.dataset.export_minari`
writes them) are taken as they are; raw RGB screens (210x160x3, as ALE's envs give them) are preprocessed as the
recorder's frames are (grayscale, then 84x84 with OpenCV's INTER_AREA; OpenCV's RGB-to-grey weights, where ALE's own
grey palette can differ by a level, and no max-pool over skipped frames: the source holds one screen a step), which
the manifest says (its sessions' "from"). Each episode's steps get stacks of the last 4 frames, zero-padded at its
start as the recorder pads them; an episode ends (done) with its termination or truncation (in a dataset that
export_minari wrote, a truncation marks an episode the recording stopped inside: not an end). The game and settings come
from a dataset that export_minari wrote (its description), else from --game and the recorder's defaults.

Everything is written under temporary names and listed only once the whole Minari dataset was read: an unreadable
or corrupt one is one line (exit 2) and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from src.dataset.export_minari import DESCRIPTION_MARKER, need_minari
from src.dataset.frames import default_layout
from src.dataset.generate_dataset import DirectoryLock
from src.dataset.manifest import Manifest, now
from src.dataset.schema import FRAMES, MAX_SHARD_ROWS, MINARI, STEPS
from src.dataset.shard_writer import discard_import, promote_shard, shard_writer
from src.dataset.shards import LOCK_FILE, READERS_FILE
from src.envs.atari import EnvSettings, resolve_game
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_outside_datasets

STACK, SIZE = 4, 84


def settings_of(dataset, game: str | None) -> tuple[EnvSettings, dict]:
    """The recording's settings (from export_minari's description) or --game's with the recorder's defaults."""
    text = dataset.storage.metadata.get("description") or ""
    if text.startswith(DESCRIPTION_MARKER):
        try:
            recorded = json.loads(text[len(DESCRIPTION_MARKER) :])
            return EnvSettings.from_dict(recorded["env"]), recorded
        except (ValueError, KeyError, TypeError, UserError) as e:
            raise UserError(f"the Minari dataset's description is not one export_minari wrote ({e})") from None
    if game is None:
        raise UserError("the Minari dataset does not say its game; pass --game (Pong, Breakout, ...)")
    return EnvSettings(game=resolve_game(game)), {}


def to_frames(observations: np.ndarray) -> tuple[np.ndarray, str]:
    """(T, 84, 84) uint8 frames of an episode's observations, and how they were made."""
    obs = np.asarray(observations)
    if obs.dtype == np.uint8 and obs.shape[1:] == (SIZE, SIZE):
        return obs, "84x84 grayscale frames, as they were"
    if obs.dtype == np.uint8 and obs.ndim == 4 and obs.shape[-1] == 3:
        import cv2

        grey = [
            cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in obs
        ]
        return np.stack(grey), "RGB screens: grayscale (OpenCV) and 84x84 (INTER_AREA) on import"
    raise UserError(
        f"the Minari dataset's observations are {obs.dtype} {obs.shape[1:]}; this import takes 84x84 uint8 grayscale "
        "frames or uint8 RGB screens"
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.import_minari", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset_id", help="a local Minari dataset id, e.g. ale/pong/random-v0")
    p.add_argument("out_dir", help="the dataset directory to create")
    p.add_argument("--layout", choices=(STEPS, FRAMES), default=FRAMES, help="default frames (the compact layout)")
    p.add_argument("--game", help="the game, where the Minari dataset does not say it")
    p.add_argument("--minari_dir", help="the Minari datasets folder (default $MINARI_DATASETS_PATH or ~/.minari)")
    p.add_argument("--shard_size", type=int, default=5_000, help="rows per shard (default 5000)")
    args = p.parse_args(argv)
    if args.minari_dir:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(args.minari_dir).resolve())
    if not 1 <= args.shard_size <= MAX_SHARD_ROWS:
        raise UserError(f"--shard_size must be in [1, {MAX_SHARD_ROWS}], got {args.shard_size}")
    minari = need_minari()
    root = Path(args.out_dir)
    if root.exists() and (not root.is_dir() or any(n.name not in (LOCK_FILE, READERS_FILE) for n in root.iterdir())):
        raise UserError(f"out_dir '{root}' exists and is not empty; choose a new directory")
    check_outside_datasets(root, "out_dir", strict=True)
    if args.dataset_id not in minari.list_local_datasets():
        raise UserError(f"no local Minari dataset '{args.dataset_id}' (minari list local shows them)")
    start, existed = time.perf_counter(), root.exists()
    try:
        dataset = minari.load_dataset(args.dataset_id)
        settings, recorded = settings_of(dataset, args.game)
    except UserError:
        raise
    except Exception as e:  # h5py / pyarrow / minari's own errors on a damaged dataset
        raise UserError(f"the Minari dataset '{args.dataset_id}' cannot be read ({type(e).__name__}: {e})") from None
    layout = default_layout() if args.layout == FRAMES else None
    manifest = Manifest.create(
        settings, int(recorded.get("seed", 0)), MINARI, args.shard_size, int(dataset.total_steps), layout=layout
    )
    written, made = [], ""
    with DirectoryLock(root):
        try:
            writer, rows_left, shard = None, int(dataset.total_steps), 0
            zero = np.zeros((SIZE, SIZE), np.uint8)
            for k, episode in enumerate(dataset.iterate_episodes()):
                frames, made = to_frames(episode.observations)
                ends = np.asarray(episode.terminations, dtype=bool)
                if not recorded:  # a time limit ends an episode (done); export_minari's truncation is the data's end
                    ends = ends | np.asarray(episode.truncations, dtype=bool)
                if len(frames) != len(episode.actions) + 1:
                    raise UserError(f"episode {k}: {len(frames)} observations for {len(episode.actions)} actions")
                padded = np.concatenate([np.repeat(zero[None], STACK - 1, 0), frames])
                for i in range(len(episode.actions)):
                    if writer is None:
                        rows = min(args.shard_size, rows_left)
                        writer = shard_writer(layout, root, f"minari{shard}", rows, STACK, SIZE)
                    action = int(np.asarray(episode.actions[i]))
                    if not 0 <= action < manifest.num_actions:
                        raise UserError(f"episode {k}: action {action}, {settings.game} has {manifest.num_actions}")
                    writer.append(
                        padded[i : i + STACK], action, frames[i + 1][None], bool(ends[i]), float(episode.rewards[i]), k
                    )
                    rows_left -= 1
                    if writer.full:
                        written.append((writer.tag, writer.finish()))
                        writer, shard = None, shard + 1
            if rows_left != 0:
                raise UserError(f"the Minari dataset says {dataset.total_steps} steps, its episodes hold others")
        except BaseException as e:
            discard_import(root, "minari", existed)
            if isinstance(e, Exception) and not isinstance(e, UserError):
                raise UserError(
                    f"the Minari dataset '{args.dataset_id}' cannot be read ({type(e).__name__}: {e})"
                ) from None
            raise
        session = manifest.add_session(num_envs=1, started=now())
        manifest.sessions[session]["from"] = f"minari:{args.dataset_id} ({made})"
        for tag, entry in written:
            promote_shard(root, tag, manifest.next_shard, list(entry["files"]))
            manifest.add_shard(entry, session)
        manifest.write(root)
    print(manifest.describe(root) + f"\ntime      {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
