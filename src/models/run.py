"""A run as the commands see it: which checkpoint file a user means, and what a checkpoint was trained on.

    checkpoint = find_checkpoint("runs/<run>", "weights")       # runs/<run>/checkpoints/best.pt
    checkpoint = find_checkpoint("auto", "resume", runs_dir="runs")   # the newest runs/*/checkpoints/last.pt
    trained_on = TrainedOn.of(read_checkpoint(checkpoint))
    trained_on.game, trained_on.settings.screen_size

A run folder (what src.train writes) is <runs_dir>/<run>/ with resolved_config.yaml and checkpoints/{best,last}.pt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from src.envs.atari import EnvSettings
from src.utils.errors import ConfigError, UserError

RUN_CONFIG = "resolved_config.yaml"  # what marks a folder as a run folder
BEST, LAST = "best.pt", "last.pt"
# Which checkpoint a run folder stands for, by purpose: a resume continues where the run stopped; evaluation, play and
# the imagined envs take the weights that validated best (a run stopped before its first validation has only last.pt).
PICKS = {"resume": (LAST,), "weights": (BEST, LAST)}


def find_checkpoint(
    given: str | Path, purpose: str, setting: str = "--checkpoint", runs_dir: str | Path = "runs"
) -> Path:
    """The checkpoint file that `given` (a .pt file, a run folder or its checkpoints/ folder) names for `purpose`, a
    key of PICKS; `setting` is how the user gave it, for the error. For "resume", `auto` is the newest last.pt under
    `runs_dir`, and the file must lie in a run folder (a run continues in its own folder). A .pt that does not exist is
    returned as it is for "weights": read_checkpoint says it is not found."""
    if purpose == "resume" and str(given) == "auto":
        found = sorted(Path(runs_dir).glob(f"*/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"{setting}=auto: no run under '{runs_dir}' has a checkpoints/{LAST} to resume; "
                "start a run first, or set experiment.runs_dir"
            )
        return found[-1]
    path, names = Path(given), PICKS[purpose]
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = next((folder / name for name in names if (folder / name).is_file()), None)
        if path is None and purpose == "weights":
            raise UserError(
                f"{setting} '{given}' is a folder without checkpoints/{BEST} or checkpoints/{LAST}; pass a run "
                "folder written by src.train (runs/<run>) or a .pt file"
            )
    if purpose == "weights":
        return path
    if path is None or not path.is_file():
        raise ConfigError(f"{setting}: '{given}' is neither a checkpoint nor a run folder with checkpoints/{LAST}")
    if run_dir_of(path) is None:
        raise ConfigError(
            f"{setting}: '{path}' is not in a run folder (<run>/checkpoints/); a run continues in its own folder"
        )
    return path


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder that holds `checkpoint` (<run>/checkpoints/<name>.pt), or None for a file outside one."""
    run = checkpoint.parent.parent
    return run if checkpoint.parent.name == "checkpoints" and (run / RUN_CONFIG).is_file() else None


@dataclass
class TrainedOn:
    """What a checkpoint was trained on (its "dataset" entry): the game, its preprocessing and actions, the data's
    size and split, and what a resume recognises the dataset by. Fields a checkpoint of an earlier version did not
    record are None (or the value those versions used: seed 0, one process)."""

    game: str
    num_actions: int
    action_meanings: list[str]
    env_settings: dict[str, Any]  # src.envs.atari.EnvSettings as a dict: `settings` types it
    dir: str | None = None  # the dataset's folder when it was trained
    seed: int = 0  # the dataset's recording seed (evaluation plays with seed + 1)
    train_rows: int | None = None
    val_rows: int | None = None
    processes: int = 1  # under torchrun, how many (a resume keeps the global batch)
    global_batch: int | None = None
    fingerprint: str | None = None  # of the env settings and every shard's checksums (training.data.fingerprint)
    shards: list[str] | None = None  # each shard's digest, oldest first: a grown dataset keeps them
    val_episodes: list[int] | None = None  # the split: the validation episodes...
    split_rows: int | None = None  # ...among the dataset's first split_rows rows (it may have grown since)

    @classmethod
    def of(cls, state: dict[str, Any]) -> TrainedOn:
        """From a checkpoint as read_checkpoint returns it (its fields checked there); keys this version does not
        know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state["dataset"].items() if k in known})

    @property
    def settings(self) -> EnvSettings:
        return EnvSettings.from_dict(self.env_settings)

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint saves: the fields that are known (an earlier version's unknowns stay out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}
