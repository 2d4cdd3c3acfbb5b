"""The dataset's description: what a row of a shard holds, and manifest.json, typed.

    manifest = Manifest.create(settings, seed=0, policy="random", shard_size=5000, target=300_000)
    manifest.add_session(num_envs=4)
    manifest.add_shard(entry, session=0)   # a finished shard (ShardWriter.finish), once its files are in place
    manifest.write(root)                   # totals and `complete` recomputed, written atomically
    manifest = Manifest.read(root)         # every entry validated before any path is built from it

Every writer of a dataset (generation, merging, recording in play) builds its manifest through this class, and
the JSON on disk keeps the key order below.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from src.envs.atari import EnvSettings, action_meanings
from src.utils.errors import UserError
from src.utils.io import atomic_write_json, human_bytes

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class DatasetError(UserError):
    """The dataset on disk is missing, incomplete or does not match its manifest."""


def field_specs(context_frames: int, screen_size: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Per-row dtype and shape of every array stored in a shard."""
    frame = (screen_size, screen_size)
    return {
        "obs": (np.dtype(np.uint8), (context_frames, *frame)),  # stacked frames, oldest first
        "next_obs": (np.dtype(np.uint8), (1, *frame)),  # the frame that follows `action`
        "action": (np.dtype(np.int64), ()),
        "done": (np.dtype(np.bool_), ()),  # terminated or truncated after this step
        "reward": (np.dtype(np.float32), ()),  # unclipped game score change over the frame skip
        "episode": (np.dtype(np.int64), ()),  # dataset-wide episode index
    }


def bytes_per_row(context_frames: int, screen_size: int) -> int:
    return sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in field_specs(context_frames, screen_size).values())


def now() -> str:
    """The time of a manifest's entries: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


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
    shards: list[dict] = field(default_factory=list)  # index, session, rows, episodes, dones, files {field: bytes, xxh3_128}
    totals: dict | None = None  # recomputed by write
    complete: bool = False  # recomputed by write: all of target_steps are recorded
    merged_from: list[dict] | None = None  # the parts of a merged dataset
    version: int = MANIFEST_VERSION

    @classmethod
    def create(cls, settings: EnvSettings, seed: int, policy: str, shard_size: int, target: int,
               part: list[int] | None = None) -> Manifest:
        """A new dataset's manifest, no shard yet (the game is opened once to read its action meanings)."""
        meanings = action_meanings(settings)
        specs = field_specs(settings.context_frames, settings.screen_size)
        return cls(game=settings.game, env=settings, num_actions=len(meanings), action_meanings=meanings, seed=seed,
                   part=part, policy=policy, shard_size=shard_size,
                   fields={name: {"dtype": dtype.name, "shape": list(shape)} for name, (dtype, shape) in specs.items()},
                   versions=package_versions("ale-py", "gymnasium", "numpy", "opencv-python-headless", "opencv-python"),
                   created=now(), target_steps=target)

    @property
    def env_id(self) -> str:
        return self.env.env_id

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
        d = {"version": self.version, "game": self.game, "env_id": self.env_id, "env": self.env.to_dict(),
             "num_actions": self.num_actions, "action_meanings": self.action_meanings, "seed": self.seed, "part": self.part,
             "policy": self.policy, "shard_size": self.shard_size, "fields": self.fields, "versions": self.versions,
             "created": self.created, "target_steps": self.target_steps, "sessions": self.sessions, "shards": self.shards,
             "totals": self.totals, "complete": self.complete}
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
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: not valid JSON ({e}); the manifest is corrupt") from None
        required = ("version", "game", "env", "num_actions", "shards", "target_steps")
        if not isinstance(d, dict) or any(k not in d for k in required):
            raise DatasetError(f"{path}: not a dataset manifest (needs keys {', '.join(required)})")
        if d["version"] != MANIFEST_VERSION:
            raise DatasetError(f"{path}: manifest version {d['version']}, this code reads {MANIFEST_VERSION}")
        problem = manifest_problem(d)
        if problem:
            raise DatasetError(f"{path}: {problem}; the manifest is corrupt: regenerate the dataset")
        return cls(game=d["game"], env=EnvSettings.from_dict(d["env"]), num_actions=d["num_actions"], action_meanings=d.get("action_meanings", []),
                   seed=d.get("seed", 0), part=d.get("part"), policy=d.get("policy", "random"), shard_size=d.get("shard_size", 0),
                   fields=d.get("fields", {}), versions=d.get("versions", {}), created=d.get("created", ""),
                   target_steps=d["target_steps"], sessions=d.get("sessions", []), shards=d["shards"], totals=d.get("totals"),
                   complete=bool(d.get("complete", False)), merged_from=d.get("merged_from"), version=d["version"])

    def describe(self, root: str | os.PathLike) -> str:
        """A few lines that summarise the dataset for the console."""
        totals = self.totals or {}
        return (
            f"dataset   {root}  ({self.game}, {self.num_actions} actions, "
            f"{'complete' if self.complete else 'incomplete: continue it with --resume'})\n"
            f"steps     {totals.get('steps', 0):,} of {self.target_steps:,} in {totals.get('shards', 0)} shards\n"
            f"episodes  {totals.get('episodes', 0):,} ({totals.get('completed_episodes', 0):,} ended)\n"
            f"bytes     {human_bytes(totals.get('bytes', 0))}"
        )


def is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def manifest_problem(manifest: dict) -> str | None:
    """The first entry of a manifest with the wrong type or range, or None.

    Checked before anything uses the manifest: shard paths are built from `index` and the field names,
    and sizes from `env`, so an edited manifest (an index such as "../x") must not reach them.
    """

    def bad(key: str, expected: str, value: object) -> str:
        return f"{key} must be {expected}, got {repr(value)[:80]}"

    env = manifest["env"]
    if not isinstance(env, dict):
        return bad("env", "a mapping", env)
    unknown = sorted(set(env) - {f.name for f in dataclasses.fields(EnvSettings)} - {"env_id"})
    if unknown:
        return f"env has a setting this version does not know ({unknown[0]!r})"
    if not isinstance(env.get("game"), str):
        return bad("env.game", "a game name", env.get("game"))
    numbers = [(f"env.{k}", env.get(k), 1) for k in ("context_frames", "screen_size")]
    for key, value, minimum in numbers + [("num_actions", manifest["num_actions"], 1), ("target_steps", manifest["target_steps"], 0)]:
        if not is_int(value, minimum):
            return bad(key, "a positive integer" if minimum else "a non-negative integer", value)
    if not isinstance(manifest["shards"], list):
        return bad("shards", "a list", manifest["shards"])
    fields = set(field_specs(env["context_frames"], env["screen_size"]))
    seen: set[int] = set()
    for i, shard in enumerate(manifest["shards"]):
        at = f"shards[{i}]"
        if not isinstance(shard, dict):
            return bad(at, "a mapping", shard)
        get = shard.get
        for key, ok, expected in (
            ("index", is_int(get("index"), 0), "a non-negative integer"),
            ("rows", is_int(get("rows"), 1), "a positive integer"),
            ("episodes", isinstance(get("episodes"), list) and all(is_int(e, 0) for e in get("episodes")), "a list of non-negative integers"),
            ("dones", is_int(get("dones"), 0), "a non-negative integer"),
            ("files", isinstance(get("files"), dict), "a mapping"),
        ):
            if not ok:
                return bad(f"{at}.{key}", expected, get(key))
        if shard["index"] in seen:
            return f"{at}.index {shard['index']} is listed twice"
        seen.add(shard["index"])
        missing, unknown = sorted(fields - set(shard["files"])), sorted(set(shard["files"]) - fields)
        if missing or unknown:
            what = f"lacks {missing[0]!r}" if missing else f"has an unknown field {unknown[0]!r}"
            return f"{at}.files {what} (expected exactly {', '.join(sorted(fields))})"
        for name, file in shard["files"].items():
            if not (isinstance(file, dict) and is_int(file.get("bytes"), 0)
                    and isinstance(file.get("xxh3_128"), str) and re.fullmatch(r"[0-9a-fA-F]{32}", file["xxh3_128"])):
                return bad(f"{at}.files.{name}", '{"bytes": integer >= 0, "xxh3_128": 32 hex digits}', file)
    return None
