"""Import the DQN Replay Dataset (Agarwal et al. 2020; Dopamine's replay buffers, gzip'd .npy files) into a dataset of
the compact layout.

    python -m src.dataset.import_dqn_replay REPLAY_DIR OUT_DIR --game Pong [--checkpoints 0,1] [--shard_size 50000]

REPLAY_DIR holds, for each checkpoint N, Dopamine's OutOfGraphReplayBuffer files: $store$_observation_ckpt.N.gz
(uint8 (capacity, 84, 84): each frame once), $store$_action_ckpt.N.gz (int32), $store$_reward_ckpt.N.gz (float32),
$store$_terminal_ckpt.N.gz (uint8) and add_count_ckpt.N.gz (how many entries were ever added: past the capacity,
the buffer has wrapped and its oldest entry is at add_count % capacity). Entry i is the frame the agent saw, the action
it took, the reward and whether the episode ended with it; Dopamine adds stack_size - 1 = 3 entries of zeros before
each episode (the stack's padding), which the import skips: a step's 4-frame stack is padded with zeros at an episode
start, as this project's recorder pads it.

What changes on the way: entry i's next frame is entry i + 1's, so an episode's last entry (the one whose action
ended it) has no next frame in the buffer and is left out: the step before it ends the episode (done) and the last
reward of each episode is lost. In a wrapped buffer the oldest episode begins before the buffer does and is left out.
The manifest says where the steps came from: policy dqn-replay, the game's settings as Dopamine played it (sticky
actions 0.25, frame skip 4, no no-op starts, 27,000 steps at most), each checkpoint's file as a session's "from", and
the frames' emulator as atari-py's ROMs (older than ale-py's: a model trained on them is scored on ale-py's game).

The observation file is read as a stream (never the whole 7 GB array in memory). A checkpoint's shards are written
under temporary names and listed only once its files were all read to their end (gzip's CRC checked): a corrupt or
truncated file is one line and leaves nothing of its checkpoint, and, for the first, no dataset at all. Checkpoints
already imported are skipped by --resume.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from src.dataset.frames import default_layout
from src.dataset.generate_dataset import DirectoryLock
from src.dataset.manifest import MANIFEST, Manifest, now
from src.dataset.schema import DQN_REPLAY, MAX_SHARD_ROWS
from src.dataset.shard_writer import FramesShardWriter, clear_unlisted, discard_import, is_dataset_file, promote_shard
from src.dataset.shards import LOCK_FILE, READERS_FILE
from src.envs.atari import EnvSettings, resolve_game
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_outside_datasets

STORE = "$store$_{}_ckpt.{}.gz"
ADD_COUNT = "add_count_ckpt.{}.gz"
CHECKPOINT = re.compile(r"\$store\$_observation_ckpt\.(\d+)\.gz")
STACK = 4  # Dopamine's stack_size: 3 entries of padding before each episode
FRAME = (84, 84)
BLOCK = 4096  # frames read from the stream at a time (29 MB)
# How Dopamine (and so the DQN Replay Dataset) played the games.
SETTINGS = {"frame_skip": 4, "noop_max": 0, "repeat_action_probability": 0.25, "max_episode_steps": 27_000}
EMULATOR = {"atari-py": "unknown: the DQN Replay Dataset's, older ROMs than ale-py's"}


class ReplayError(UserError):
    """A file of the replay that is missing, corrupt or not what Dopamine writes."""


def open_npy(path: Path) -> tuple[gzip.GzipFile, np.dtype, tuple[int, ...]]:
    """A gzip'd .npy file opened as a stream, past its header."""
    if not path.is_file():
        raise ReplayError(f"{path}: missing; a checkpoint of the DQN Replay Dataset needs its {STORE.format('*', 'N')}")
    f = gzip.open(path, "rb")
    try:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        f.close()
        raise ReplayError(f"{path}: not a gzip'd .npy file ({e}); download it again") from None
    if fortran:
        f.close()
        raise ReplayError(f"{path}: a Fortran-ordered array; not a file Dopamine writes")
    return f, dtype, shape


def read_all(path: Path, dtype: np.dtype, ndim: int) -> np.ndarray:
    f, found, shape = open_npy(path)
    with f:
        try:
            data = f.read()
        except (OSError, EOFError, zlib.error) as e:
            raise ReplayError(f"{path}: corrupt or truncated ({e}); download it again") from None
    if found != dtype or len(shape) != ndim or len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise ReplayError(f"{path}: {found} {shape} with {len(data)} bytes, expected {dtype} of {ndim} dimension(s)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def frames_in_order(path: Path, capacity: int, first: int) -> Iterator[np.ndarray]:
    """The observation file's frames from entry `first` to the end, then from 0 to `first` (a wrapped buffer's order),
    in blocks, checked to the end of the stream."""
    for begin, end in ((first, capacity), (0, first)):
        if begin == end:
            continue
        f, dtype, shape = open_npy(path)
        with f:
            if dtype != np.uint8 or tuple(shape) != (capacity, *FRAME):
                raise ReplayError(f"{path}: {dtype} {tuple(shape)}, expected uint8 ({capacity}, 84, 84)")
            try:
                f.seek(f.tell() + begin * FRAME[0] * FRAME[1])
                at = begin
                while at < end:
                    n = min(BLOCK, end - at)
                    data = f.read(n * FRAME[0] * FRAME[1])
                    if len(data) != n * FRAME[0] * FRAME[1]:
                        raise EOFError("the file ends early")
                    yield np.frombuffer(data, dtype=np.uint8).reshape(n, *FRAME)
                    at += n
                if end == capacity and f.read(1):  # to the end: gzip checks its CRC there
                    raise ValueError("bytes after the array")
            except (OSError, EOFError, zlib.error, ValueError) as e:
                raise ReplayError(f"{path}: corrupt or truncated ({e}); download it again") from None


def episodes(terminal: np.ndarray, count: int, wrapped: bool) -> list[tuple[int, int]]:
    """(first, last) positions (in the buffer's order, oldest first) of the episodes whose steps are imported: the
    entries after Dopamine's 3 of padding, to the terminal one or the buffer's end. In a wrapped buffer the entries
    before the first episode's padding belong to an episode that began before the buffer: left out."""
    ends = np.flatnonzero(terminal[:count])
    starts = [STACK - 1] if not wrapped else []
    starts += [int(e) + STACK for e in ends]
    out = []
    for start in starts:
        later = ends[ends >= start]
        last = int(later[0]) if len(later) else count - 1
        if last - start >= 1:  # at least one step with a next frame
            out.append((start, last))
    return out


def import_checkpoint(replay: Path, n: int, root: Path, manifest: Manifest, first_episode: int, shard_size: int):
    """Write checkpoint n's steps into shards under temporary names; returns [(tag, entry)] and the episodes used."""
    action = read_all(replay / STORE.format("action", n), np.dtype(np.int32), 1)
    reward = read_all(replay / STORE.format("reward", n), np.dtype(np.float32), 1)
    terminal = read_all(replay / STORE.format("terminal", n), np.dtype(np.uint8), 1)
    add_count = int(read_all(replay / ADD_COUNT.format(n), np.dtype(np.int64), 0))
    capacity = len(terminal)
    if not (len(action) == len(reward) == capacity) or add_count < 0:
        raise ReplayError(f"{replay}: checkpoint {n}'s action, reward and terminal files differ in length")
    if action.min(initial=0) < 0 or action.max(initial=0) >= manifest.num_actions:
        raise ReplayError(
            f"{replay / STORE.format('action', n)}: actions {action.min()}..{action.max()}, {manifest.game} has "
            f"{manifest.num_actions} (the minimal action set); is --game right?"
        )
    wrapped, first = add_count >= capacity, add_count % capacity if add_count >= capacity else 0
    count = min(add_count, capacity)
    order = np.r_[first:capacity, 0:first][:count] if wrapped else np.arange(count)
    action, reward, terminal = action[order], reward[order], terminal[order]
    spans = episodes(terminal, count, wrapped)
    episode_of = np.full(count, -1, dtype=np.int64)  # position -> the imported episode it belongs to
    for k, (start, last) in enumerate(spans):
        episode_of[start : last + 1] = k
    rows = sum(last - start for start, last in spans)  # every entry but an episode's last is a step
    written, writer = [], None
    left, shard = rows, 0
    stack: list[np.ndarray] = []
    zero = np.zeros(FRAME, dtype=np.uint8)
    position = 0
    for block in frames_in_order(replay / STORE.format("observation", n), capacity, first):
        for frame in block[: max(0, count - position)]:
            k = episode_of[position]
            if k >= 0:
                start, last = spans[k]
                if position == start:
                    stack = [zero] * (STACK - 1) + [frame]
                else:  # the step before this frame: its stack, its action, this frame after it
                    if writer is None:
                        writer = FramesShardWriter(
                            root, f"dqn{n}_{shard}", min(shard_size, left), STACK, FRAME[0], manifest.layout
                        )
                    i = position - 1
                    writer.append(
                        np.stack(stack),
                        int(action[i]),
                        frame[None],
                        position == last,
                        float(reward[i]),
                        first_episode + k,
                    )
                    left -= 1
                    if writer.full:
                        written.append((writer.tag, writer.finish()))
                        writer, shard = None, shard + 1
                    stack = [*stack[1:], frame]
            position += 1
    if position < count:
        raise ReplayError(f"{replay / STORE.format('observation', n)}: fewer frames than add_count says")
    return written, len(spans)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.import_dqn_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("replay_dir", help="a DQN Replay Dataset run's replay_logs folder (e.g. Pong/1/replay_logs)")
    p.add_argument("out_dir", help="the dataset to create (compact layout), or to continue with --resume")
    p.add_argument("--game", required=True, help="the game of the replay, as you would write it: Pong, Breakout, ...")
    p.add_argument("--checkpoints", help="comma list of checkpoint numbers (default: every one in replay_dir)")
    p.add_argument("--shard_size", type=int, default=50_000, help="rows per shard (default 50000)")
    p.add_argument("--resume", action="store_true", help="continue an import: skip the checkpoints it holds")
    args = p.parse_args(argv)
    replay, root = Path(args.replay_dir), Path(args.out_dir)
    if not replay.is_dir():
        raise UserError(f"replay_dir '{replay}' is not a directory")
    if not 1 <= args.shard_size <= MAX_SHARD_ROWS:
        raise UserError(f"--shard_size must be in [1, {MAX_SHARD_ROWS}], got {args.shard_size}")
    found = sorted(int(m.group(1)) for f in replay.iterdir() if (m := CHECKPOINT.fullmatch(f.name)))
    try:
        chosen = found if args.checkpoints is None else [int(c) for c in args.checkpoints.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--checkpoints takes checkpoint numbers such as 0,1,2; got '{args.checkpoints}'") from None
    missing = sorted(set(chosen) - set(found))
    if not found or missing:
        raise UserError(
            f"'{replay}' holds no {STORE.format('observation', missing[0] if missing else 'N')}; "
            f"checkpoints there: {', '.join(map(str, found)) or 'none'}"
        )
    check_outside_datasets(root, "out_dir", strict=True)
    settings = EnvSettings(game=resolve_game(args.game), **SETTINGS)
    start, existed = time.perf_counter(), root.exists()
    with DirectoryLock(root):
        names = [n.name for n in root.iterdir() if n.name not in (LOCK_FILE, READERS_FILE)]
        manifest = None
        if names:
            if not args.resume or MANIFEST not in names or any(not is_dataset_file(n) for n in names):
                raise UserError(f"out_dir '{root}' is not empty; pass --resume to continue an import there")
            manifest = Manifest.read(root)
            if manifest.policy != DQN_REPLAY or manifest.env != settings:
                raise UserError(f"out_dir '{root}' holds another dataset than an import of {settings.game}'s replay")
        clear_unlisted(root, manifest)
        new = manifest is None
        if new:
            manifest = Manifest.create(settings, 0, DQN_REPLAY, args.shard_size, 0, layout=default_layout())
            manifest.versions = dict(EMULATOR)
        done = {s.get("from") for s in manifest.sessions}
        for n in tqdm(chosen, unit="checkpoint", disable=None):
            source = str((replay / STORE.format("observation", n)).resolve())
            if source in done:
                continue
            first_episode = max((e for s in manifest.shards for e in s["episodes"]), default=-1) + 1
            try:
                written, count = import_checkpoint(replay, n, root, manifest, first_episode, args.shard_size)
            except BaseException:
                discard_import(root, f"dqn{n}_", existed)
                raise
            session = manifest.add_session(num_envs=1, started=now())
            manifest.sessions[session]["from"] = source
            for tag, entry in written:
                promote_shard(root, tag, manifest.next_shard, list(entry["files"]))
                manifest.add_shard(entry, session)
            manifest.target_steps = manifest.steps
            manifest.write(root)
            print(f"checkpoint {n}: {sum(e['rows'] for _, e in written):,} steps of {count} episodes", flush=True)
    print(manifest.describe(root) + f"\ntime      {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
