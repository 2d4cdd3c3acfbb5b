"""Steps of a game played by hand (src.play's real game) recorded into a dataset of generate_dataset's format.

    settings = TrainedOn.of(checkpoint).settings   # src/models/run.py: the game as the model was trained on it
    with Recorder(Path("data/my_play"), settings, seed=0) as recorder:   # checks, locks, continues
        recorder.add(transition, episode)   # a shard is written every SHARD_ROWS rows
        recorder.cut()                      # the end of a stretch (or of the session): the rest as a shard

A kill loses at most the last SHARD_ROWS - 1 rows: every shard is written under a temporary name, renamed into place
and then listed in the manifest, which is rewritten atomically. A directory that holds a play recording of the same
game and settings is continued: a new session, episode ids after the recorded ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from src.dataset.manifest import MANIFEST, Manifest, emulator_change
from src.dataset.schema import HUMAN
from src.dataset.shard_writer import clear_unlisted, is_dataset_file, promote_shard, shard_writer
from src.dataset.shards import LOCK_FILE, SHARD_FILE, ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import Transition
from src.utils.errors import UserError
from src.utils.io import hold_lock

SHARD_ROWS = (
    256  # rows of a shard cut while recording goes on: at most this many (9 MB) wait in memory, or die in a kill
)


class Recorder:
    """The real game's steps, into a dataset of generate_dataset's format. Rows of a shard are consecutive steps:
    a shard is cut every SHARD_ROWS rows and at the end of every recorded stretch (`cut`), and listed once complete.
    Holds an flock on <root>/.lock from creation to `close`, so that no other play or generation writes there."""

    def __init__(self, root: Path, settings: EnvSettings, seed: int) -> None:
        self.root, self.settings = root, settings
        recording_to_continue(root, self.settings)  # every check before the first file is touched
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--record: cannot create '{root}' ({e.strerror}); choose a writable directory") from None
        self.lock: IO[str] | None = hold_lock(
            root / LOCK_FILE,
            "another process (pid {pid}) is writing to '{folder}'; wait for it to end or choose another "
            "--record directory",
            "--record: cannot write to '{folder}' ({error}); choose a writable directory",
        )
        try:
            self._open(seed)
        except BaseException:
            self.close()
            raise

    def _open(self, seed: int) -> None:
        """Under the lock: check again (another play may have begun here since), clear what a kill left, and list
        this session in the manifest."""
        manifest = recording_to_continue(self.root, self.settings)
        if manifest is not None and manifest.shards:
            ShardedDataset(self.root, verify="quick")  # the listed shards are there, whole (sizes and headers)
        clear_unlisted(self.root, manifest)
        self.manifest = manifest or Manifest.create(self.settings, seed, policy=HUMAN, shard_size=SHARD_ROWS, target=0)
        self.first_episode = max((e for s in self.manifest.shards for e in s["episodes"]), default=-1) + 1
        self.continued = manifest is not None
        self.session = self.manifest.add_session(num_envs=1)
        self.manifest.write(self.root)
        self.rows: list[tuple] = []
        self.recorded = 0  # rows written by this session

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock (rows not yet cut stay unwritten: `cut` first)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def add(self, step: Transition, episode: int) -> None:
        """One step of the real game's episode `episode` (the session's count: ids follow the recorded ones)."""
        self.rows.append(
            (step.obs, step.action, step.next_obs[-1:], step.done, step.reward, self.first_episode + episode)
        )
        if len(self.rows) == SHARD_ROWS:
            self.cut()

    def cut(self) -> int:
        """Write the rows recorded since the last cut as a shard and list it; returns its rows."""
        n = len(self.rows)
        if n:
            index = self.manifest.next_shard
            writer = shard_writer(
                self.manifest.layout,
                self.root,
                f"play{index}",
                n,
                self.settings.context_frames,
                self.settings.screen_size,
            )
            for row in self.rows:
                writer.append(*row)
            entry = writer.finish()  # fsynced, then renamed into place, then listed
            promote_shard(self.root, f"play{index}", index, list(entry["files"]))
            self.manifest.add_shard(entry, session=self.session)
            self.manifest.target_steps = self.manifest.steps
            self.manifest.write(self.root)
            self.rows = []
            self.recorded += n
        return n

    def summary(self) -> str:
        """What this session recorded and what the directory now holds, for the console."""
        episodes = len({e for s in self.manifest.shards for e in s["episodes"]})
        return (
            f"recorded {self.recorded} real steps in {self.root} (it holds {self.manifest.steps} steps of {episodes} "
            f"episodes in {len(self.manifest.shards)} shards, {len(self.manifest.sessions)} sessions)"
        )


def recording_to_continue(root: Path, settings: EnvSettings) -> Manifest | None:
    """The manifest of the play recording in `root` to continue, None to start one (no directory, or nothing but a
    lock and temporary files), or one line (UserError) when `root` holds anything else. Only reads."""
    new_dir = "choose a new directory for the recording"
    if root.exists() and not root.is_dir():
        raise UserError(f"--record '{root}' is a file, not a directory; {new_dir}")
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    foreign = [name for name in names if not is_dataset_file(name)]
    if foreign:
        raise UserError(f"--record '{root}' is not empty; {new_dir} ('{foreign[0]}' is not a file of a dataset)")
    if MANIFEST not in names:
        if any(SHARD_FILE.fullmatch(name) for name in names):
            raise UserError(f"--record '{root}' is not empty; {new_dir} (it holds shards but no {MANIFEST})")
        return None
    manifest = Manifest.read(root)
    if manifest.policy != HUMAN:
        raise UserError(
            f"--record '{root}' is not empty; {new_dir} (it holds a dataset of policy '{manifest.policy}', "
            "not a play recording to continue)"
        )
    if manifest.env != settings:
        ours, theirs = settings.to_dict(), manifest.env.to_dict()
        key = next(k for k in ours if ours[k] != theirs.get(k))
        raise UserError(
            f"--record '{root}' holds a play recording with {key} {theirs.get(key)}, the checkpoint's game "
            f"has {ours[key]}; {new_dir}, or continue a recording of this checkpoint's game and settings"
        )
    change = emulator_change(manifest)
    if change:
        raise UserError(
            f"--record '{root}' was recorded with ale-py {change[0]}, this is ale-py {change[1]}: frames of two "
            f"emulator versions would mix; {new_dir}"
        )
    return manifest
