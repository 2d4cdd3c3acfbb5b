"""Steps of a game played by hand (src.play's real game) recorded into a dataset of generate_dataset's format."""

from __future__ import annotations

from pathlib import Path

from src.dataset.manifest import Manifest
from src.dataset.shards import ShardWriter, promote_shard
from src.envs.atari import EnvSettings
from src.envs.game import Transition
from src.utils.errors import UserError


class Recorder:
    """The real game's steps, into a dataset of generate_dataset's format: one shard per recorded stretch
    (rows of a shard are consecutive steps), listed in the manifest once complete."""

    def __init__(self, root: Path, dataset_info: dict, seed: int) -> None:
        if root.exists() and any(root.iterdir()):
            raise UserError(f"--record '{root}' is not empty; choose a new directory for the recording")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--record: cannot create '{root}' ({e.strerror}); choose a writable directory") from None
        self.root, self.settings = root, EnvSettings.from_dict(dataset_info["env_settings"])
        self.manifest = Manifest.create(self.settings, seed, policy="human", shard_size=0, target=0)
        self.manifest.add_session(num_envs=1, started=self.manifest.created)
        self.rows: list[tuple] = []

    def add(self, step: Transition, episode: int) -> None:
        self.rows.append((step.obs, step.action, step.next_obs[-1:], step.done, step.reward, episode))

    def cut(self) -> int:
        """Write the stretch recorded so far as a shard and list it; returns its rows."""
        n = len(self.rows)
        if n:
            index = self.manifest.next_shard
            writer = ShardWriter(self.root, f"play{index}", n, self.settings.context_frames, self.settings.screen_size)
            for row in self.rows:
                writer.append(*row)
            entry = writer.finish()  # fsynced, then renamed into place, then listed
            promote_shard(self.root, f"play{index}", index, list(self.manifest.fields))
            self.manifest.add_shard(entry, session=0)
            self.manifest.target_steps = self.manifest.steps
            self.manifest.write(self.root)
            self.rows = []
        return n
