"""Every row of docs/errors.md: the bad input, one clear line on stderr, exit code 2, and nothing on disk touched.

Each case runs the command's real entry point through `run_cli`, exactly as `python -m ...` does (many run as
real subprocesses too, in the other test files).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest
import torch

from src.dataset import generate_dataset, inspect_dataset, merge_datasets
from src.dataset.shards import ShardedDataset, lock_readers
from src.utils.errors import run_cli
from src.utils.io import try_lock
from tests.conftest import ROOT, TINY, run_main

DOC = ROOT / "docs" / "errors.md"
SECRET = "s3cret-value"


@dataclass
class Context:
    """What a case's args, setup and expected line refer to, by attribute (c.tmp) or in braces ("{tmp}/rec").

    `copy` (a private copy of the small dataset, 42 MB, for the cases that damage or lock it) and `run` (of the short
    run's folder, 16 MB, whose checkpoint the cases read or edit) are made on first use, under tmp before the snapshot
    of it is taken: each case pays only for the copies it names."""

    data: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    trained_run: Path
    hold: list = field(default_factory=list)  # locks and readers held while the command runs

    @cached_property
    def copy(self) -> Path:
        shutil.copytree(self.data, self.tmp / "pong")
        return self.tmp / "pong"

    @cached_property
    def run(self) -> Path:
        shutil.copytree(self.trained_run, self.tmp / "run")
        return self.tmp / "run"

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "last.pt"

    def __getitem__(self, name: str) -> object:
        """For str.format_map: a "{copy}" in a string makes the copy, as c.copy does."""
        return getattr(self, name)


@dataclass
class Case:
    what: str  # the bad input, as the table says it
    command: str  # train, eval, generate or inspect
    args: Callable[[Context], list[str]]
    expected: str  # a part of the one line the user sees
    setup: Callable[[Context], object] | None = None


def edit_manifest(root: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class Payload:
    """Pickles to a call of Path.touch: loading it unsafely would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def edit_checkpoint_in_place(path: Path, change: Callable[[dict], None] | None = None) -> None:
    """The run's own last.pt with `change` made to it; by default its output layer's weights replaced by a tensor of
    another shape."""
    state = torch.load(path, weights_only=True)
    if change is None:
        state["model"]["head.conv.weight"] = torch.zeros(1, 1, 1, 1)
    else:
        change(state)
    torch.save(state, path)


def edit_checkpoint(c: Context, change: Callable[[dict], None]) -> None:
    """tmp/bad.pt: the run's checkpoint with `change` made to it."""
    state = torch.load(c.checkpoint, weights_only=True)
    change(state)
    torch.save(state, c.tmp / "bad.pt")


def train(*overrides: str) -> Callable[[Context], list[str]]:
    """A tiny training on the small dataset, runs under tmp/runs, with `overrides` ({...} filled from the context)."""
    return lambda c: [
        f"data.dir={c.data}",
        f"experiment.runs_dir={c.tmp / 'runs'}",
        *TINY,
        *(o.format_map(c) for o in overrides),
    ]


def a_gpu_without_bf16(c: Context) -> None:
    """CUDA as a Tesla T4 (Turing) shows it: available, bf16 only emulated."""
    c.monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    c.monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    c.monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    c.monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")


def read_only(c: Context) -> None:
    """A read-only file system, as the commands' check of an output location meets it: creating the temporary file
    fails with EROFS (what a read-only mount answers, whoever the user is: root ignores permissions)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if kwargs.get("prefix") == ".write-check-":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, **kwargs)

    c.monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def unfinished_episode(c: Context) -> None:
    """tmp/unfinished: a dataset of the small dataset's settings whose one episode does not end in it."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        generate_dataset.main(
            [
                "--out_dir",
                str(c.tmp / "unfinished"),
                "--steps",
                "40",
                "--num_envs",
                "1",
                "--seed",
                "7",
                "--max_episode_steps",
                "1000",
            ]
        )
    with ShardedDataset(
        c.tmp / "unfinished", verify="quick"
    ):  # read once, as any dataset in use has been (its .readers)
        pass


def palette_output_levels_changed(state: dict) -> None:
    """A checkpoint that says its head classifies over the palette, whose head's levels are other grey levels."""
    state["config"]["model"]["output"] = "palette"
    state["model"]["head.levels"] = torch.linspace(0, 1, len(state["config"]["model"]["palette"]))


def evaluate(*args: str) -> Callable[[Context], list[str]]:
    return lambda c: [
        "--checkpoint",
        str(c.checkpoint),
        "--game",
        "Pong",
        "--data_dir",
        str(c.data),
        "--horizon",
        "3",
        "--out_dir",
        str(c.tmp / "eval"),
        *(a.format_map(c) for a in args),
    ]


def generate(*args: str) -> Callable[[Context], list[str]]:
    return lambda c: ["--out_dir", str(c.tmp / "new"), "--steps", "10", *(a.format_map(c) for a in args)]


CASES = {
    # config
    "unknown-key": Case(
        "unknown or misspelt config key",
        "train",
        train("train.max_step=5"),
        "unknown config key 'train.max_step'. Did you mean 'train.max_steps'?",
    ),
    "wrong-type": Case(
        "config value of the wrong type",
        "train",
        train("train.batch_size=abc"),
        "train.batch_size: Value 'abc' of type 'str' could not be converted to Integer",
    ),
    "out-of-range": Case(
        "config value out of range", "train", train("optimizer.lr=-1"), "optimizer.lr must be > 0, got -1.0"
    ),
    "not-finite": Case(
        "config number that is infinite or NaN",
        "train",
        train("optimizer.lr=inf"),
        "optimizer.lr must be a finite number, got inf",
    ),
    "config-control-chars": Case(
        "config string with a newline or an escape",
        "train",
        train('data.dir="data/po\\nng"'),
        "data.dir must be text on one line without control characters (newlines, escapes), got 'data/po\\nng'",
    ),
    "run-name-path": Case(
        "experiment.name that is a path",
        "train",
        train("experiment.name=../../escape"),
        "experiment.name must be a plain name (letters, digits, _ . -, at most 64) or null",
    ),
    "keys-disagree": Case(
        "config values that disagree",
        "train",
        train("data.prefetch_factor=2"),
        "data.prefetch_factor must be null when data.num_workers is 0",
    ),
    "on-device-workers": Case(
        "data.on_device=true with loader workers",
        "train",
        train("data.on_device=true", "data.num_workers=2"),
        "data.on_device true is refused with data.num_workers=2 (batches are indexed on the device: no worker "
        "loads them); set data.num_workers=0 or data.on_device=false",
    ),
    "unknown-model": Case(
        "unknown model variant",
        "train",
        train("model.name=unet"),
        "model.name 'unet' is not a model. Did you mean 'unet_film'?",
    ),
    "config-missing": Case(
        "config file missing",
        "train",
        lambda c: ["--config", str(c.tmp / "nowhere.yaml")],
        "config file '{tmp}/nowhere.yaml' not found",
    ),
    "config-syntax": Case(
        "config file that is not YAML",
        "train",
        lambda c: ["--config", str(c.tmp / "bad.yaml")],
        "cannot parse the config file {tmp}/bad.yaml",
        setup=lambda c: (c.tmp / "bad.yaml").write_text("train: [unclosed\n"),
    ),
    "config-python-tag": Case(
        "config file with a !!python tag (code)",
        "train",
        lambda c: ["--config", str(c.tmp / "bad.yaml")],
        "cannot parse the config file",
        setup=lambda c: (c.tmp / "bad.yaml").write_text(
            f"train: !!python/object/apply:pathlib.Path.touch ['{c.tmp / 'pwned'}']\n"
        ),
    ),
    "bad-flag": Case(
        "command-line flag of the wrong type",
        "eval",
        evaluate("--horizon", "abc"),
        "argument --horizon: invalid int value: 'abc'",
    ),
    # dataset
    "dataset-missing": Case(
        "dataset directory missing",
        "train",
        train("data.dir={tmp}/nowhere"),
        "data.dir: dataset directory '{tmp}/nowhere' does not exist",
    ),
    "dataset-empty": Case(
        "empty dataset directory",
        "train",
        train("data.dir={tmp}/empty"),
        "no manifest; is '{tmp}/empty' a dataset",
        setup=lambda c: (c.tmp / "empty").mkdir(),
    ),
    "dataset-no-shards": Case(
        "dataset with no complete shard",
        "train",
        train("data.dir={copy}"),
        "the dataset has no complete shard yet; finish it with --resume",
        setup=lambda c: edit_manifest(c.copy, lambda m: m.update(shards=[])),
    ),
    "dataset-other-game": Case(
        "dataset of another game (data.game)",
        "train",
        train("data.game=Breakout"),
        "data.game is Breakout but the dataset in {data} is Pong",
    ),
    "eval-dataset-other-game": Case(
        "eval --data_dir of another game",
        "eval",
        evaluate("--data_dir", "{copy}"),
        "--data_dir holds Breakout data, the checkpoint is for Pong",
        setup=lambda c: edit_manifest(
            c.copy, lambda m: [d.update(game="Breakout", env_id="ALE/Breakout-v5") for d in (m, m["env"])]
        ),
    ),
    "shard-truncated": Case(
        "truncated shard file",
        "train",
        train("data.dir={copy}"),
        "shard_00001_obs.npy",
        setup=lambda c: os.truncate(c.copy / "shard_00001_obs.npy", 1000),
    ),
    "shard-altered": Case(
        "altered shard file (same size)",
        "train",
        train("data.dir={copy}"),
        "shard_00002_next_obs.npy: checksum differs from the manifest",
        setup=lambda c: flip_byte(c.copy / "shard_00002_next_obs.npy"),
    ),
    "shard-missing": Case(
        "shard file missing",
        "inspect",
        lambda c: [str(c.copy)],
        "shard_00003_action.npy",
        setup=lambda c: (c.copy / "shard_00003_action.npy").unlink(),
    ),
    "manifest-corrupt": Case(
        "manifest edited or corrupt",
        "inspect",
        lambda c: [str(c.copy)],
        "shards[0].rows must be a positive integer, got -1",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["shards"][0].update(rows=-1)),
    ),
    "manifest-env-unknown": Case(
        "manifest whose env has a setting this version does not know",
        "inspect",
        lambda c: [str(c.copy)],
        "env has a setting this version does not know ('warp_speed')",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["env"].update(warp_speed=9)),
    ),
    "manifest-game-path": Case(
        "manifest whose game is a path",
        "inspect",
        lambda c: [str(c.copy)],
        "env.game must be an ALE game name (letters and digits, e.g. Pong), got 'x/../../../escape'",
        setup=lambda c: edit_manifest(c.copy, lambda m: [d.update(game="x/../../../escape") for d in (m, m["env"])]),
    ),
    "manifest-actions-mismatch": Case(
        "manifest num_actions below the actions in the shards",
        "inspect",
        lambda c: [str(c.copy)],
        "shard_00000_action.npy: actions 0..5, the manifest says the game has 3",
        setup=lambda c: edit_manifest(
            c.copy, lambda m: m.update(num_actions=3, action_meanings=m["action_meanings"][:3])
        ),
    ),
    "dataset-being-replaced": Case(
        "dataset that generate --overwrite is replacing",
        "train",
        train("data.dir={copy}"),
        "is being replaced (generate_dataset --overwrite); wait for it to finish",
        setup=lambda c: c.hold.append(lock_readers(c.copy, exclusive=True)),
    ),
    "inspect-rehash-quick": Case(
        "inspect --rehash with --verify quick",
        "inspect",
        lambda c: [str(c.data), "--rehash", "--verify", "quick"],
        "--rehash applies to --verify full (it hashes every file); drop --verify quick",
    ),
    "batch-too-large": Case(
        "batch larger than the training set",
        "train",
        train("train.batch_size=100000"),
        "train.batch_size 100000 is larger than the training set",
    ),
    "on-device-too-large": Case(
        "data.on_device=true with a dataset larger than the device's room",
        "train",
        train("data.on_device=true"),
        "data.on_device=true: the dataset's frames need 42.4 MB but cpu has 2.1 GB free (at most 80% of it, "
        "less 2 GiB, is used for data); set data.on_device=false to read batches from disk",
        setup=lambda c: c.monkeypatch.setattr("src.training.batches.free_memory", lambda device: 2 << 30),
    ),
    "bf16-not-native": Case(
        "train.precision=bf16 on a GPU without native bf16 (before Ampere)",
        "train",
        train("train.precision=bf16"),
        "train.precision=bf16: Tesla T4 has no native bf16 (it came with Ampere, compute capability 8.0); "
        "use train.precision=fp32 or auto",
        setup=a_gpu_without_bf16,
    ),
    # checkpoints
    "checkpoint-missing": Case(
        "checkpoint missing",
        "eval",
        evaluate("--checkpoint", "{tmp}/nowhere.pt"),
        "checkpoint '{tmp}/nowhere.pt' not found",
    ),
    "checkpoint-folder-empty": Case(
        "--checkpoint a folder that holds no checkpoint",
        "eval",
        lambda c: ["--checkpoint", str(c.tmp / "empty"), "--out_dir", str(c.tmp / "eval")],
        "--checkpoint '{tmp}/empty' is a folder without checkpoints/best.pt or checkpoints/last.pt",
        setup=lambda c: (c.tmp / "empty").mkdir(),
    ),
    "checkpoint-corrupt": Case(
        "checkpoint corrupt (cut short)",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "is corrupt or not a PyTorch checkpoint",
        setup=lambda c: (c.tmp / "bad.pt").write_bytes(c.checkpoint.read_bytes()[:5000]),
    ),
    "checkpoint-malicious": Case(
        "checkpoint with a pickled object that would run code",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "was refused: it holds a pickled object",
        setup=lambda c: edit_checkpoint(c, lambda s: s["config"].update(note=Payload(c.tmp / "pwned"))),
    ),
    "checkpoint-foreign": Case(
        "a .pt file that is not this project's checkpoint",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "is not a checkpoint of this project (missing model, config, dataset, step)",
        setup=lambda c: torch.save({"weights": torch.zeros(3)}, c.tmp / "bad.pt"),
    ),
    "checkpoint-other-game": Case(
        "checkpoint of another game",
        "eval",
        evaluate("--game", "Breakout"),
        "--game Breakout differs from the checkpoint's game Pong",
    ),
    "checkpoint-other-variant": Case(
        "resume with another model variant or size",
        "train",
        train("train.resume={run}", "model.name=unet_diamond"),
        "train.resume: model.name is unet_film in {run}/checkpoints/last.pt but unet_diamond now",
    ),
    "checkpoint-weights-mismatch": Case(
        "checkpoint whose weights do not fit its config",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "the checkpoint's weights do not fit its model 'unet_film'",
        setup=lambda c: edit_checkpoint(c, lambda s: s["config"]["model"].update(channels=[8, 32])),
    ),
    "checkpoint-unknown-variant": Case(
        "checkpoint of a model variant this version does not have",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "the checkpoint's model cannot be built by this version of the code (model.name 'unet_v9' is not a model",
        setup=lambda c: edit_checkpoint(c, lambda s: s["config"]["model"].update(name="unet_v9")),
    ),
    "checkpoint-no-palette": Case(
        "eval --feedback palette with a checkpoint made before palettes",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt", "--feedback", "palette"),
        "--feedback palette: the checkpoint has no palette (it was trained before palette feedback existed); "
        "use --feedback uint8 or float",
        setup=lambda c: edit_checkpoint(c, lambda s: [s["config"]["model"].pop(k) for k in ("feedback", "palette")]),
    ),
    "resume-weights-mismatch": Case(
        "resume from a checkpoint whose weights were altered",
        "train",
        train("train.resume={run}", "train.max_steps=9"),
        "the checkpoint's weights do not fit its model 'unet_film' (size mismatch for head.conv.weight",
        setup=lambda c: edit_checkpoint_in_place(c.checkpoint),
    ),
    "resume-missing": Case(
        "train.resume names nothing",
        "train",
        train("train.resume={tmp}/nowhere"),
        "train.resume: '{tmp}/nowhere' is neither a checkpoint nor a run folder",
    ),
    "resume-auto-none": Case(
        "train.resume=auto with no run yet",
        "train",
        train("train.resume=auto"),
        "train.resume=auto: no run under '{tmp}/runs' has a checkpoints/last.pt",
    ),
    "resume-finished": Case(
        "resume a run that has finished",
        "train",
        train("train.resume={run}", "train.max_steps=6"),
        "is at step 6, train.max_steps is 6; raise train.max_steps to train on",
    ),
    "resume-running": Case(
        "resume a run that is still training",
        "train",
        train("train.resume={run}", "train.max_steps=9"),
        "train.resume: another training (pid",
        setup=lambda c: c.hold.append(try_lock(c.run / ".lock")[0]),
    ),
    "resume-other-settings": Case(
        "resume on a dataset recorded with other settings",
        "train",
        train("train.resume={run}", "train.max_steps=9", "data.dir={copy}"),
        "train.resume: {copy} was recorded with frame_skip=2, the checkpoint's dataset with frame_skip=4; "
        "set data.dir to the run's dataset",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["env"].update(frame_skip=2)),
    ),
    "resume-other-dataset": Case(
        "resume on another dataset of the same settings",
        "train",
        train("train.resume={run}", "train.max_steps=9", "data.dir={copy}"),
        "train.resume: {copy} is not the dataset the checkpoint was trained on (its shards differ)",
        setup=lambda c: edit_manifest(c.copy, lambda m: m.update(shards=m["shards"][:-1])),
    ),
    "checkpoint-interpolation": Case(
        "checkpoint whose config holds an interpolation (${oc.env:...})",
        "train",
        train("train.resume={run}", "train.max_steps=9"),
        "config.experiment.name is not a plain value (an interpolation or a key that is not a string)",
        setup=lambda c: edit_checkpoint_in_place(
            c.checkpoint, lambda s: s["config"]["experiment"].update(name="${oc.env:AWM_TEST_SECRET}")
        ),
    ),
    "checkpoint-out-of-range": Case(
        "checkpoint with a model size out of range",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "the checkpoint's model cannot be built by this version of the code (model.channels must be 1 to 8 "
        "widths in [1, 4096], got [-8, 16])",
        setup=lambda c: edit_checkpoint(c, lambda s: s["config"]["model"].update(channels=[-8, 16])),
    ),
    "checkpoint-not-finite": Case(
        "checkpoint whose weights hold NaN or infinities",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "checkpoint '{tmp}/bad.pt': model.head.conv.weight holds NaN or infinite values (1 of 288)",
        setup=lambda c: edit_checkpoint(c, lambda s: s["model"]["head.conv.weight"].view(-1)[7].fill_(math.nan)),
    ),
    "checkpoint-moments-not-finite": Case(
        "resume from a checkpoint whose Adam moments hold infinities",
        "train",
        train("train.resume={run}", "train.max_steps=9"),
        "optimizer.state.0.exp_avg holds NaN or infinite values",
        setup=lambda c: edit_checkpoint_in_place(
            c.checkpoint, lambda s: s["optimizer"]["state"][0]["exp_avg"].fill_(math.inf)
        ),
    ),
    "checkpoint-buffer-differs": Case(
        "checkpoint whose palette output levels differ from its model.palette",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "model.head.levels differs from config.model.palette",
        setup=lambda c: edit_checkpoint(c, palette_output_levels_changed),
    ),
    "checkpoint-escape": Case(
        "checkpoint with an escape or a newline in a string",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "dataset.action_meanings must be 6 action names such as NOOP, FIRE, got ['NOOP', 'FI\\x1b[2JRE'",
        setup=lambda c: edit_checkpoint(c, lambda s: s["dataset"]["action_meanings"].__setitem__(1, "FI\x1b[2JRE")),
    ),
    "checkpoint-dir-newline": Case(
        "checkpoint whose dataset.dir holds a newline",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "dataset.dir must be a path of at most 4096 characters without control characters, got 'data/po\\nng'",
        setup=lambda c: edit_checkpoint(c, lambda s: s["dataset"].update(dir="data/po\nng")),
    ),
    "checkpoint-huge-number": Case(
        "checkpoint with a number no dataset has",
        "eval",
        evaluate("--checkpoint", "{tmp}/bad.pt"),
        "dataset.num_actions must be an integer in [1, 18], got 10000000000000",
        setup=lambda c: edit_checkpoint(c, lambda s: s["dataset"].update(num_actions=10**13)),
    ),
    "eval-dataset-other-settings": Case(
        "eval --data_dir recorded with other settings",
        "eval",
        evaluate("--data_dir", "{copy}"),
        "--data_dir was recorded with frame_skip=2, the checkpoint's training data with frame_skip=4",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["env"].update(frame_skip=2)),
    ),
    # outputs
    "runs-dir-unwritable": Case(
        "experiment.runs_dir cannot be created",
        "train",
        train("experiment.runs_dir={tmp}/file/runs"),
        "experiment.runs_dir: cannot create '{tmp}/file/runs' (Not a directory)",
        setup=lambda c: (c.tmp / "file").write_text("x"),
    ),
    "eval-out-unwritable": Case(
        "eval --out_dir cannot be created",
        "eval",
        evaluate("--out_dir", "{tmp}/file/eval"),
        "--out_dir: cannot create '{tmp}/file/eval' (Not a directory)",
        setup=lambda c: (c.tmp / "file").write_text("x"),
    ),
    "runs-dir-read-only": Case(
        "experiment.runs_dir on a read-only file system",
        "train",
        train(),
        "experiment.runs_dir: cannot create '{tmp}/runs' (Read-only file system); choose a writable location",
        setup=read_only,
    ),
    "runs-dir-in-dataset": Case(
        "experiment.runs_dir inside the dataset",
        "train",
        train("experiment.runs_dir={copy}/runs", "data.dir={copy}"),
        "experiment.runs_dir '{copy}/runs' lies inside data.dir '{copy}', which the command reads",
    ),
    "eval-out-read-only": Case(
        "eval --out_dir on a read-only file system",
        "eval",
        evaluate(),
        "--out_dir: cannot create '{tmp}/eval' (Read-only file system); choose a writable location",
        setup=read_only,
    ),
    "eval-out-in-dataset": Case(
        "eval --out_dir inside --data_dir",
        "eval",
        evaluate("--out_dir", "{data}/eval"),
        "--out_dir '{data}/eval' lies inside --data_dir '{data}', which the command reads",
    ),
    "eval-no-events": Case(
        "eval --data_dir with no episode that ends, for a model with an event head",
        "eval",
        evaluate("--data_dir", "{tmp}/unfinished"),
        "--data_dir '{tmp}/unfinished' holds no complete episode (none ends in it) to score the rewards and ends on; "
        "pass --event_episodes 0 to score the frames only, or evaluate on fresh episodes",
        setup=unfinished_episode,
    ),
    "generate-out-in-dataset": Case(
        "generate --out_dir inside another dataset",
        "generate",
        generate("--out_dir", "{copy}/more"),
        "--out_dir '{copy}/more' lies inside the dataset '{copy}'; a dataset's folder holds only its own files",
    ),
    "merge-out-in-part": Case(
        "merge --out_dir inside one of the parts",
        "merge",
        lambda c: ["--out_dir", str(c.copy / "merged"), str(c.copy)],
        "--out_dir '{copy}/merged' lies inside a part '{copy}', which the command reads",
    ),
    "generate-out-unwritable": Case(
        "generate --out_dir cannot be created",
        "generate",
        generate("--out_dir", "{tmp}/file/data"),
        "cannot write to --out_dir '{tmp}/file/data'",
        setup=lambda c: (c.tmp / "file").write_text("x"),
    ),
    "generate-out-not-empty": Case(
        "generate into a non-empty directory",
        "generate",
        generate("--out_dir", "{copy}"),
        "is not empty (",
        setup=lambda c: None,
    ),
    "generate-out-locked": Case(
        "generate into a dataset another generation is writing",
        "generate",
        generate("--out_dir", "{copy}", "--resume", "--steps", "2000"),
        "another generation (pid",
        setup=lambda c: c.hold.append(try_lock(c.copy / ".lock")[0]),
    ),
    "generate-overwrite-read": Case(
        "generate --overwrite of a dataset being read",
        "generate",
        generate("--out_dir", "{copy}", "--overwrite"),
        "a training, evaluation or play is reading '{copy}'; wait for it to end, or choose another --out_dir",
        setup=lambda c: c.hold.append(ShardedDataset(c.copy, verify="none")),
    ),
    "generate-overwrite-bad-seed": Case(
        "generate --overwrite with --seed out of range",
        "generate",
        generate("--out_dir", "{copy}", "--overwrite", "--seed", "-1"),
        "--seed must be >= 0, got -1",
    ),
    "generate-overwrite-bad-env": Case(
        "generate --overwrite with an env setting out of range",
        "generate",
        generate("--out_dir", "{copy}", "--overwrite", "--max_episode_steps", str(10**30)),
        "--max_episode_steps must be in [1, 10000000], got 1000000000000000000000000000000",
    ),
    "generate-overwrite-bad-part": Case(
        "generate --overwrite with too many parts",
        "generate",
        generate("--out_dir", "{copy}", "--overwrite", "--part", "8388608/8388608"),
        "--part: at most 4096 parts (each part's episode ids take a range of their own), got '8388608/8388608'",
    ),
    "generate-resume-recording": Case(
        "generate --resume of a play recording",
        "generate",
        generate("--out_dir", "{copy}", "--resume", "--steps", "2000"),
        "is a game recorded by hand in src.play (policy human): a policy cannot continue it",
        setup=lambda c: edit_manifest(c.copy, lambda m: m.update(policy="human", shard_size=0)),
    ),
    "generate-resume-other-ale": Case(
        "generate --resume under another ale-py version",
        "generate",
        generate("--out_dir", "{copy}", "--resume", "--steps", "2000"),
        "was recorded with ale-py 0.6.0, this is ale-py",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["versions"].update({"ale-py": "0.6.0"})),
    ),
    "disk-full-generate": Case(
        "disk too small for the dataset", "generate", generate("--steps", str(10**9)), "not enough disk space"
    ),
    "disk-full-train": Case(
        "disk too small for a run",
        "train",
        train(),
        "experiment.runs_dir: 1.0 MB free at",
        setup=lambda c: c.monkeypatch.setattr(
            shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**6)
        ),
    ),
    "wandb-no-login": Case(
        "W&B online without a login",
        "train",
        train("experiment.wandb.mode=online"),
        "experiment.wandb.mode=online needs a W&B login: run `wandb login`",
        setup=lambda c: c.request.getfixturevalue("wandb_env"),
    ),
    "wandb-mode-env": Case(
        "WANDB_MODE that wandb does not know (mode auto)",
        "eval",
        evaluate("--wandb_mode", "auto"),
        "WANDB_MODE must be online, offline or disabled, got 'sometimes'; fix or unset it",
        setup=lambda c: c.monkeypatch.setenv("WANDB_MODE", "sometimes"),
    ),
    "wandb-bad-key": Case(
        "a malformed W&B key",
        "eval",
        evaluate("--wandb_mode", "online"),
        "--wandb_mode: the W&B credentials are invalid: WANDB_API_KEY invalid: API key must have 40+ characters",
        setup=lambda c: (c.request.getfixturevalue("wandb_env"), c.monkeypatch.setenv("WANDB_API_KEY", "short")),
    ),
    # games, steps, horizons
    "unknown-game": Case(
        "unknown game", "generate", generate("--game", "Pongg"), "unknown game 'Pongg'. Did you mean: Pong?"
    ),
    "eval-unknown-game": Case(
        "eval --game unknown", "eval", evaluate("--game", "Breakot"), "unknown game 'Breakot'. Did you mean: Breakout?"
    ),
    "steps-out-of-range": Case(
        "--steps out of range", "generate", generate("--steps", "0"), "--steps must be >= 1, got 0"
    ),
    "steps-below-recorded": Case(
        "--steps below what the dataset holds",
        "generate",
        generate("--out_dir", "{copy}", "--resume", "--steps", "5"),
        "--steps 5 is less than the 1200 steps already in",
    ),
    "part-out-of-range": Case(
        "generate --part that is not K/N",
        "generate",
        generate("--part", "3/2"),
        "--part must be K/N with 1 <= K <= N, e.g. 2/4, got '3/2'",
    ),
    "merge-overlapping": Case(
        "merging datasets that share episodes",
        "merge",
        lambda c: ["--out_dir", str(c.tmp / "merged"), str(c.data), str(c.copy)],
        "both hold episode 0; record each machine's part with --part K/N",
    ),
    "merge-other-ale": Case(
        "merging datasets of two ale-py versions",
        "merge",
        lambda c: ["--out_dir", str(c.tmp / "merged"), str(c.data), str(c.copy)],
        "was recorded with ale-py 0.6.0",
        setup=lambda c: edit_manifest(c.copy, lambda m: m["versions"].update({"ale-py": "0.6.0"})),
    ),
    "merge-same-recording": Case(
        "merging one play recording twice",
        "merge",
        lambda c: ["--out_dir", str(c.tmp / "merged"), str(c.copy), str(c.tmp / "again")],
        "hold the same recorded steps; merge each recording once",
        setup=lambda c: (
            edit_manifest(c.copy, lambda m: m.update(policy="human", shard_size=0)),
            shutil.copytree(c.copy, c.tmp / "again"),
        ),
    ),
    "max-steps-out-of-range": Case(
        "train.max_steps out of range", "train", train("train.max_steps=0"), "train.max_steps must be >= 1, got 0"
    ),
    "horizon-out-of-range": Case(
        "--horizon out of range", "eval", evaluate("--horizon", "0"), "--horizon must be >= 1, got 0"
    ),
    "eval-seed-out-of-range": Case(
        "eval --seed out of range", "eval", evaluate("--seed", "-1"), "--seed must be >= 0, got -1"
    ),
    "play-unknown-key": Case(
        "play --keys with an unknown key",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIHGT*3",
            "--video",
            str(c.tmp / "play.mp4"),
        ],
        "--keys: unknown key 'RIHGT' in 'RIHGT*3'; use UP, DOWN, LEFT, RIGHT, FIRE, NOOP or an action of this game",
    ),
    "play-headless-incomplete": Case(
        "play --headless without keys or video",
        "play",
        lambda c: ["--checkpoint", str(c.checkpoint), "--headless"],
        "--headless needs --keys (e.g. RIGHT*30,LEFT*30) and --video (e.g. out.mp4)",
    ),
    "play-record-not-empty": Case(
        "play --record into a non-empty directory",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--record",
            str(c.copy),
        ],
        "--record '{copy}' is not empty; choose a new directory for the recording",
    ),
    "play-device-unavailable": Case(
        "play --device cuda without CUDA",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--device",
            "cuda",
            "--record",
            str(c.tmp / "rec"),
        ],
        "--device cuda: CUDA is not available on this machine; use --device cpu",
        setup=lambda c: c.monkeypatch.setattr(torch.cuda, "is_available", lambda: False),
    ),
    "device-unknown": Case(
        "--device that names no device",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--device",
            "gpu",
        ],
        "--device gpu: not a device; use cpu, cuda, cuda:N (the N-th GPU) or mps",
    ),
    "play-scale-out-of-range": Case(
        "play --scale out of range",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--scale",
            "17",
        ],
        "--scale must be in [1, 16], got 17",
    ),
    "play-fps-out-of-range": Case(
        "play --fps out of range",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--fps",
            "1000",
        ],
        "--fps must be in (0, 240], got 1000",
    ),
    "play-seed-out-of-range": Case(
        "play --seed out of range",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--seed",
            "-1",
        ],
        "--seed must be in [0, 2147483647], got -1",
    ),
    "play-keys-too-long": Case(
        "play --keys too long",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "NOOP*2000000",
            "--video",
            str(c.tmp / "play.mp4"),
        ],
        "--keys: 'NOOP*2000000' repeats 2000000 times; N must be in [1, 1,000,000]",
    ),
    "play-gif-too-long": Case(
        "play .gif longer than 1000 frames",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "NOOP*1001",
            "--video",
            str(c.tmp / "play.gif"),
        ],
        "--video: a .gif holds at most 1000 frames, --keys plays 1001 steps; write an .mp4",
    ),
    "play-video-folder-missing": Case(
        "play --video in a missing folder",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "nowhere" / "play.mp4"),
        ],
        "does not exist; create it or choose another path",
    ),
    "play-video-folder": Case(
        "play --video that is a folder",
        "play",
        lambda c: ["--checkpoint", str(c.checkpoint), "--headless", "--keys", "RIGHT", "--video", str(c.tmp / "v.mp4")],
        "--video '{tmp}/v.mp4' is a folder; name a file in it",
        setup=lambda c: (c.tmp / "v.mp4").mkdir(),
    ),
    "play-video-read-only": Case(
        "play --video on a read-only file system",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
        ],
        "--video: cannot create '{tmp}' (Read-only file system); choose a writable location",
        setup=read_only,
    ),
    "play-video-in-record": Case(
        "play --video inside the --record folder",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "rec" / "play.mp4"),
            "--record",
            str(c.tmp / "rec"),
        ],
        "--video '{tmp}/rec/play.mp4' lies inside --record '{tmp}/rec', which the command reads",
        setup=lambda c: (c.tmp / "rec").mkdir(),
    ),
    "play-record-in-dataset": Case(
        "play --record inside another dataset",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--record",
            str(c.copy / "mine"),
        ],
        "--record '{copy}/mine' lies inside the dataset '{copy}'",
    ),
    "play-gif-fps": Case(
        "play .gif at a rate a GIF cannot hold",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.gif"),
            "--fps",
            "60",
        ],
        "--fps 60: a .gif plays 0.0015 to 50 frames per second (it holds each frame's delay in hundredths of a second",
    ),
    "play-record-foreign": Case(
        "play --record into a folder with other files",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--record",
            str(c.tmp / "mine"),
        ],
        "is not empty; choose a new directory for the recording ('notes.txt' is not a file of a dataset)",
        setup=lambda c: ((c.tmp / "mine").mkdir(), (c.tmp / "mine" / "notes.txt").write_text("mine")),
    ),
    "play-record-other-settings": Case(
        "play --record into a recording of other settings",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--record",
            str(c.copy),
        ],
        "holds a play recording with frame_skip 3, the checkpoint's game has 4; choose a new directory for the "
        "recording",
        setup=lambda c: edit_manifest(c.copy, lambda m: (m.update(policy="human"), m["env"].update(frame_skip=3))),
    ),
    "play-record-locked": Case(
        "play --record into a folder being written",
        "play",
        lambda c: [
            "--checkpoint",
            str(c.checkpoint),
            "--headless",
            "--keys",
            "RIGHT",
            "--video",
            str(c.tmp / "play.mp4"),
            "--record",
            str(c.tmp / "rec"),
        ],
        "is writing to '{tmp}/rec'; wait for it to end or choose another --record directory",
        setup=lambda c: ((c.tmp / "rec").mkdir(), c.hold.append(try_lock(c.tmp / "rec" / ".lock")[0])),
    ),
    "play-no-display": Case(
        "play's window with no display",
        "play",
        lambda c: ["--checkpoint", str(c.checkpoint)],
        "no display to open a window on; run on a desktop, or use --headless --keys ... --video out.mp4",
        setup=lambda c: [
            c.monkeypatch.delenv(n, raising=False) for n in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")
        ],
    ),
    "horizon-too-long": Case(
        "--horizon longer than any episode",
        "eval",
        evaluate("--horizon", "100000"),
        "has no window of 100000 consecutive steps; lower --horizon",
    ),
}


def entry_point(command: str) -> Callable[[list[str] | None], int]:
    from src import eval as evaluation
    from src import play
    from src import train as training

    return {
        "train": training.main,
        "eval": evaluation.main,
        "generate": generate_dataset.main,
        "inspect": inspect_dataset.main,
        "play": play.main,
        "merge": merge_datasets.main,
    }[command]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots`: (size, mtime in ns); not the caches that libraries keep in the fake home of the
    wandb_env fixture (matplotlib's font list, wandb's debug log), which are the user's, not a command's output."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file() and "home" not in p.relative_to(root).parts[:1]
    }


def run_command(command: str, argv: list[str]) -> tuple[int, str]:
    result = run_main(entry_point(command), argv)
    return result.returncode, result.stderr


@pytest.fixture
def context(
    small_dataset: Path, short_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
):
    monkeypatch.delenv("AWM_DEBUG", raising=False)
    monkeypatch.setenv("AWM_TEST_SECRET", SECRET)  # an interpolation in a file must never bring it out
    c = Context(small_dataset, tmp_path, monkeypatch, request, trained_run=Path(short_run[1]["run_dir"]))
    yield c
    for lock in c.hold:
        lock.close()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_exit_2_and_keeps_every_file(name: str, context: Context) -> None:
    case = CASES[name]
    if case.setup:
        case.setup(context)
    argv = case.args(context)
    before = snapshot(context.tmp, context.data)
    code, err = run_command(case.command, argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert case.expected.format_map(context) in lines[0]
    print(f"\n| `{name}` | {case.what} | {case.command} | {lines[0]} |")  # pytest -s: the rows of docs/errors.md
    assert snapshot(context.tmp, context.data) == before  # nothing created, changed or deleted
    assert not (context.tmp / "pwned").exists()  # no payload ran
    assert SECRET not in err


def test_the_table_lists_every_case() -> None:
    """docs/errors.md and CASES name the same rows, in the same order."""
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    assert rows == list(CASES)


def test_debug_env_shows_the_traceback(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWM_DEBUG", "1")
    from src.utils.errors import UserError

    with pytest.raises(UserError, match="does not exist"):
        run_cli(entry_point("train"), [f"data.dir={tmp_path / 'nowhere'}", f"experiment.runs_dir={tmp_path / 'runs'}"])
