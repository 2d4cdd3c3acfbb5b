"""The dataset's description, manifest.json, typed (what its entries may be, and their checks: schema.py).

    manifest = Manifest.create(settings, seed=0, policy="random", shard_size=5000, target=300_000)
    manifest.add_session(num_envs=4)
    manifest.add_shard(entry, session=0)   # a finished shard (ShardWriter.finish), once its files are in place
    manifest.write(root)                   # totals and `complete` recomputed, written atomically
    manifest = Manifest.read(root)         # every entry validated before any path is built from it

Every writer of a dataset (generation, merging, recording in play) builds its manifest through this class, and
the JSON on disk keeps the key order below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from src.dataset.schema import STEPS, field_specs, is_int, manifest_problem, short
from src.envs.atari import EnvSettings, action_meanings
from src.utils.errors import UserError
from src.utils.io import atomic_write_json, human_bytes
from src.utils.versions import package_versions

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class DatasetError(UserError):
    """The dataset on disk is missing, incomplete or does not match its manifest."""


def now() -> str:
    """The time of a manifest's entries: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """manifest.json: the game and every setting that decides a frame, the recording's seed and policy, and the
    shards, each listed (with its rows, episodes and checksums) only once all its files are complete."""

    game: str
    env: EnvSettings
    num_actions: int
    action_meanings: list[str]
    seed: int
    policy: str
    shard_size: int
    fields: dict[str, dict]  # per-row dtype and shape of each array, as field_specs gives them
    versions: dict[str, str]  # of the packages that made the frames
    created: str
    target_steps: int
    part: list[int] | None = None  # [K, N] of a dataset recorded in parts on several machines
    sessions: list[dict] = field(default_factory=list)  # one per run of the generator: started, steps_before, num_envs
    shards: list[dict] = field(
        default_factory=list
    )  # index, session, rows, episodes, dones, files {field: bytes, xxh3_128}
    totals: dict | None = None  # recomputed by write
    complete: bool = False  # recomputed by write: all of target_steps are recorded
    merged_from: list[dict] | None = None  # the parts of a merged dataset
    layout: dict | None = (
        None  # the compact layout's name, codec, level and chunk_frames (frames.py); None: the contract's
    )
    version: int = MANIFEST_VERSION

    @classmethod
    def create(
        cls,
        settings: EnvSettings,
        seed: int,
        policy: str,
        shard_size: int,
        target: int,
        part: list[int] | None = None,
        layout: dict | None = None,
    ) -> Manifest:
        """A new dataset's manifest, no shard yet (the game is opened once to read its action meanings); `layout`:
        frames.default_layout() for the compact layout, None for the contract's."""
        meanings = action_meanings(settings)
        specs = field_specs(settings.context_frames, settings.screen_size, layout["name"] if layout else STEPS)
        return cls(
            game=settings.game,
            env=settings,
            num_actions=len(meanings),
            action_meanings=meanings,
            seed=seed,
            part=part,
            policy=policy,
            shard_size=shard_size,
            fields={name: {"dtype": dtype.name, "shape": list(shape)} for name, (dtype, shape) in specs.items()},
            versions=package_versions("ale-py", "gymnasium", "numpy", "opencv-python-headless", "opencv-python"),
            created=now(),
            target_steps=target,
            layout=layout,
        )

    @property
    def env_id(self) -> str:
        return self.env.env_id

    @property
    def layout_name(self) -> str:
        """steps (the contract's layout) or frames (the compact one)."""
        return self.layout["name"] if self.layout else STEPS

    @property
    def steps(self) -> int:
        """Rows listed so far."""
        return sum(s["rows"] for s in self.shards)

    def add_session(self, num_envs: int, started: str | None = None) -> int:
        """Start a recording session; returns its number (shards name the session that wrote them)."""
        self.sessions.append({"started": started or now(), "steps_before": self.steps, "num_envs": num_envs})
        return len(self.sessions) - 1

    @property
    def next_shard(self) -> int:
        """The index the next listed shard gets: its files are renamed to it before add_shard lists it."""
        return max((s["index"] for s in self.shards), default=-1) + 1

    def add_shard(self, entry: dict, session: int) -> int:
        """List a finished shard (ShardWriter.finish's entry) whose files are in place as `next_shard`; returns its
        index."""
        index = self.next_shard
        self.shards.append({"index": index, "session": session, **entry})
        return index

    def to_dict(self) -> dict[str, Any]:
        """What manifest.json holds, in its key order (merged_from only in a merged dataset's)."""
        d = {
            "version": self.version,
            "game": self.game,
            "env_id": self.env_id,
            "env": self.env.to_dict(),
            "num_actions": self.num_actions,
            "action_meanings": self.action_meanings,
            "seed": self.seed,
            "part": self.part,
            "policy": self.policy,
            "shard_size": self.shard_size,
            **({} if self.layout is None else {"layout": self.layout}),
            "fields": self.fields,
            "versions": self.versions,
            "created": self.created,
            "target_steps": self.target_steps,
            "sessions": self.sessions,
            "shards": self.shards,
            "totals": self.totals,
            "complete": self.complete,
        }
        return d if self.merged_from is None else {**d, "merged_from": self.merged_from}

    def write(self, root: str | os.PathLike) -> None:
        """Recompute totals and `complete`, then replace root/manifest.json atomically."""
        shards = self.shards
        self.totals = {
            "steps": self.steps,
            "shards": len(shards),
            "episodes": len({e for s in shards for e in s["episodes"]}),
            "completed_episodes": sum(s["dones"] for s in shards),
            "bytes": sum(f["bytes"] for s in shards for f in s["files"].values()),
        }
        self.complete = self.totals["steps"] == self.target_steps
        atomic_write_json(Path(root) / MANIFEST, self.to_dict())

    @classmethod
    def read(cls, root: str | os.PathLike) -> Manifest:
        """root/manifest.json, validated entry by entry (DatasetError naming the first bad one)."""
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise DatasetError(f"{path}: no manifest; is '{root}' a dataset made by src.dataset.generate_dataset?")
        try:
            d = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: bad JSON, or an int of 4300+ digits
            raise DatasetError(f"{path}: not valid JSON ({short(e)}); the manifest is corrupt") from None
        except OSError as e:
            raise DatasetError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
        required = ("version", "game", "env", "num_actions", "shards", "target_steps")
        if not isinstance(d, dict) or any(k not in d for k in required):
            raise DatasetError(f"{path}: not a dataset manifest (needs keys {', '.join(required)})")
        if not (is_int(d["version"], 0) and d["version"] == MANIFEST_VERSION):
            raise DatasetError(f"{path}: manifest version {short(d['version'])}, this code reads {MANIFEST_VERSION}")
        problem = manifest_problem(d)
        if problem:
            raise DatasetError(f"{path}: {problem}; the manifest is corrupt: regenerate the dataset")
        return cls(
            game=d["game"],
            env=EnvSettings.from_dict(d["env"]),
            num_actions=d["num_actions"],
            action_meanings=d["action_meanings"],
            seed=d["seed"],
            part=d["part"],
            policy=d["policy"],
            shard_size=d["shard_size"],
            fields=d["fields"],
            versions=d["versions"],
            created=d["created"],
            target_steps=d["target_steps"],
            sessions=d["sessions"],
            shards=d["shards"],
            totals=d["totals"],
            complete=d["complete"],
            merged_from=d.get("merged_from"),
            layout=d.get("layout"),
            version=d["version"],
        )

    def describe(self, root: str | os.PathLike) -> str:
        """A few lines that summarise the dataset for the console."""
        totals = self.totals or {}
        return (
            f"dataset   {root}  ({self.game}, {self.num_actions} actions, "
            f"{'complete' if self.complete else 'incomplete: continue it with --resume'})\n"
            f"steps     {totals.get('steps', 0):,} of {self.target_steps:,} in {totals.get('shards', 0)} shards\n"
            f"episodes  {totals.get('episodes', 0):,} ({totals.get('completed_episodes', 0):,} ended)\n"
            f"layout    {self.describe_layout()}\n"
            f"bytes     {human_bytes(totals.get('bytes', 0))}"
            + (f" ({totals['bytes'] / totals['steps']:,.0f} a step)" if totals.get("steps") else "")
        )

    def describe_layout(self) -> str:
        if self.layout is None:
            return f"{STEPS} (obs and next_obs stored per step)"
        return (
            f"{self.layout['name']} (each frame once, {self.layout['codec']} level {self.layout['level']}, "
            f"{self.layout['chunk_frames']} frames a chunk)"
        )


def emulator_change(manifest: Manifest) -> tuple[str, str] | None:
    """(the ale-py version that recorded the dataset, the one installed) when they differ: frames of two emulator
    versions must not mix in one dataset. None when they agree or the manifest names none."""
    recorded, running = manifest.versions.get("ale-py"), package_versions("ale-py").get("ale-py")
    return (recorded, running) if recorded is not None and recorded != running else None
