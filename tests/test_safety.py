"""Files from elsewhere cannot run code or crash us, and our own writes never leave torn or temporary files.

Covers: checkpoints with a pickled payload or damage, a checkpoint save that fails half way, YAML tags that
would call Python, manifests edited into nonsense, and the temporary files of every atomic write.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from src import eval as evaluation
from src.config import ConfigError, ModelConfig, load_config
from src.dataset import inspect_dataset
from src.dataset.manifest import MANIFEST, DatasetError, Manifest
from src.eval import evaluate, summarise
from src.evaluation.cases import Windows
from src.evaluation.outputs import write_outputs
from src.models.world_model import build_model
from src.utils.checkpoint import load_checkpoint, save_checkpoint
from src.utils.errors import UserError
from src.utils.images import save_png
from src.utils.io import atomic_write_bytes, hold_lock
from src.utils.metrics import STEP_METRICS
from src.utils.plots import horizon_plot, save_figure
from tests.conftest import error_line, run_main


def tiny_state(**extra: object) -> dict:
    """A dict shaped like a training checkpoint, with a tiny model's real weights."""
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), num_actions=6)
    return {
        "model": model.state_dict(),
        "optimizer": {},
        "step": 3,
        "config": {"model": {"name": "unet_film"}},
        "env": {"game": "Pong", "num_actions": 6, "env": {"context_frames": 4, "screen_size": 84}},
        **extra,
    }


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    save_checkpoint(path, tiny_state())
    return path


class Touch:
    """Unpickling this object creates `marker`: what a tampered checkpoint could do with any code."""

    def __init__(self, marker: Path, via_shell: bool) -> None:
        self.marker, self.via_shell = marker, via_shell

    def __reduce__(self):
        if self.via_shell:
            return os.system, (f"touch {shlex.quote(str(self.marker))}",)
        return Path.touch, (self.marker,)


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("via_shell", [True, False], ids=["os.system", "Path.touch"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, via_shell: bool) -> None:
    """Catches a load with weights_only=False (or a fallback to it): the payload would create the marker."""
    marker, bad = tmp_path / "MARKER", tmp_path / "bad.pt"
    torch.save(tiny_state(config={"model": {"name": "unet_film"}, "payload": Touch(marker, via_shell)}), bad)

    with pytest.raises(
        UserError, match=r"was refused: it holds a pickled object \((posix\.system|getattr)\) that could run code"
    ) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value) and not marker.exists()
    line = error_line(run_main(evaluation.main, ["--checkpoint", str(bad), "--game", "Pong"]))
    assert line.startswith(f"error: checkpoint '{bad}' was refused") and "load only checkpoints you trust" in line
    assert not marker.exists()

    torch.load(bad, weights_only=False)  # the payload is live: an unsafe load does run it
    assert marker.exists()


def test_corrupt_checkpoints_get_a_clear_line(checkpoint: Path, tmp_path: Path) -> None:
    """Catches torch's multi-line error text (or a traceback) reaching the user for a damaged file."""
    half = tmp_path / "half.pt"
    half.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (half, noise, empty):
        with pytest.raises(UserError, match="cannot be loaded: it is corrupt or not a PyTorch checkpoint"):
            load_checkpoint(path)
        line = error_line(run_main(evaluation.main, ["--checkpoint", str(path), "--game", "Pong"]))
        assert line.startswith(
            f"error: checkpoint '{path}' cannot be loaded: it is corrupt or not a PyTorch checkpoint ("
        )


def test_checkpoint_round_trip_leaves_only_the_file(tmp_path: Path) -> None:
    state, path = tiny_state(), tmp_path / "last.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and all(torch.equal(v, state["model"][k]) for k, v in loaded["model"].items())
    assert os.listdir(tmp_path) == ["last.pt"]


def test_failed_save_keeps_the_previous_checkpoint(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches a save that writes in place or leaves its temporary file when the disk fills up half way."""
    before = checkpoint.read_bytes()

    def fill_disk(obj: object, f, *args, **kwargs) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fill_disk)
    with pytest.raises(UserError) as e:
        save_checkpoint(checkpoint, tiny_state(step=4))
    assert str(e.value) == (
        f"cannot save checkpoint '{checkpoint}': no space left on device: free some space; "
        "the previous checkpoint is kept"
    )
    assert checkpoint.read_bytes() == before and os.listdir(checkpoint.parent) == [checkpoint.name]


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/apply:pathlib.Path.touch"])
def test_yaml_python_tags_are_refused(tmp_path: Path, tag: str) -> None:
    """Catches a YAML loader that builds Python objects (yaml.load / UnsafeLoader) from a config file."""
    marker = tmp_path / "MARKER"
    argument = f"touch {marker}" if "system" in tag else str(marker)
    config = tmp_path / "config.yaml"
    config.write_text(f"train:\n  lr: {tag} [{json.dumps(argument)}]\n")
    with pytest.raises(ConfigError, match=f"could not determine a constructor for the tag .*{tag.removeprefix('!!')}"):
        load_config(config)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ manifest


def edit_rows(m: dict) -> str:
    m["shards"][3]["rows"] = -1
    return "shards[3].rows must be a positive integer, got -1"


def edit_index(m: dict) -> str:
    m["shards"][0]["index"] = "../../etc"
    return "shards[0].index must be an integer in [0, 1000000000], got '../../etc'"


def edit_bool_index(m: dict) -> str:
    m["shards"][2]["index"] = True
    return "shards[2].index must be an integer in [0, 1000000000], got True"


def edit_duplicate(m: dict) -> str:
    m["shards"][1]["index"] = m["shards"][0]["index"]
    return f"shards[1].index {m['shards'][0]['index']} is listed twice"


def edit_missing_file(m: dict) -> str:
    del m["shards"][1]["files"]["reward"]
    return "shards[1].files lacks 'reward' (expected exactly action, done, episode, next_obs, obs, reward)"


def edit_unknown_file(m: dict) -> str:
    m["shards"][0]["files"]["../../x"] = m["shards"][0]["files"]["obs"]
    return "shards[0].files has an unknown field '../../x'"


def edit_checksum(m: dict) -> str:
    m["shards"][4]["files"]["obs"]["xxh3_128"] = "not hex"
    return 'shards[4].files.obs must be {"bytes": integer >= 0, "xxh3_128": 32 hex digits}'


def edit_screen(m: dict) -> str:
    m["env"]["screen_size"] = 0
    return "env.screen_size must be >= 1, got 0"


def edit_shards(m: dict) -> str:
    m["shards"] = {"0": {}}
    return "shards must be a list"


@pytest.mark.parametrize(
    "edit",
    [
        edit_rows,
        edit_index,
        edit_bool_index,
        edit_duplicate,
        edit_missing_file,
        edit_unknown_file,
        edit_checksum,
        edit_screen,
        edit_shards,
    ],
)
def test_bad_manifest_entry_is_named(dataset_copy: Path, edit) -> None:
    """Catches a manifest whose values reach shard paths and array shapes unchecked (a KeyError or path traversal)."""
    path = dataset_copy / MANIFEST
    manifest = json.loads(path.read_text())
    expected = edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as e:
        Manifest.read(dataset_copy)
    assert str(e.value).startswith(f"{path}: {expected}") and str(e.value).endswith(
        "; the manifest is corrupt: regenerate the dataset"
    )
    assert error_line(run_main(inspect_dataset.main, [str(dataset_copy)])) == f"error: {e.value}"


# ------------------------------------------------------------------------------------------ atomic writes


def test_png_and_figure_leave_only_the_final_file(tmp_path: Path) -> None:
    """Catches a writer that writes in place or leaves its temporary file behind (twice: also when replacing)."""
    for _ in range(2):
        save_png(tmp_path / "strip.png", np.zeros((8, 8, 3), dtype=np.uint8))
        save_figure(horizon_plot({"model": [1.0, 0.5]}, "MSE", "test"), tmp_path / "plot.png")
    assert sorted(os.listdir(tmp_path)) == ["plot.png", "strip.png"]


def test_failed_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A rename onto a folder fails for real: the temporary file must go and the folder stay as it was."""
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "taken", b"data")
    assert os.listdir(tmp_path) == ["taken"] and (tmp_path / "taken").is_dir()


def test_eval_outputs_leave_only_final_files(tmp_path: Path) -> None:
    """Catches metrics.csv (or any eval output) written in place: only the final names may be in the folder."""
    rng = np.random.default_rng(0)
    windows = Windows(
        rng.integers(0, 256, (3, 4, 84, 84), dtype=np.uint8),
        rng.integers(0, 6, (3, 5)),
        rng.integers(0, 256, (3, 5, 84, 84), dtype=np.uint8),
        rng.choice([-1.0, 0.0, 1.0], (3, 5)).astype(np.float32),
    )
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), num_actions=6)
    curves = summarise(evaluate(model, windows, batch_size=2, device=torch.device("cpu"), seed=0))
    for sub in ("plots", "videos"):
        (tmp_path / sub).mkdir()
    write_outputs(tmp_path, {"game": "Pong", "starts": 3}, curves, model, windows, videos=0, device=torch.device("cpu"))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "metrics.csv",
        *sorted(f"plots/{name}_vs_horizon.png" for name in STEP_METRICS),
        "summary.json",
    ]
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[4]["model_mse"]) == pytest.approx(curves["mse"]["model"][4], rel=1e-5)


def test_lock_messages_keep_braces_in_paths(tmp_path: Path) -> None:
    """Catches a path pasted into a str.format template: a folder named with braces crashed the error path."""
    folder = tmp_path / "run{0}"
    folder.mkdir()
    first = hold_lock(folder / ".lock", "busy: {pid} holds '{folder}'", "cannot write '{folder}' ({error})")
    try:
        with pytest.raises(UserError) as e:
            hold_lock(folder / ".lock", "busy: {pid} holds '{folder}'", "cannot write '{folder}' ({error})")
        assert str(e.value) == f"busy: {os.getpid()} holds '{folder}'"
    finally:
        first.close()
    with pytest.raises(UserError, match=r"cannot write '.*missing\{x\}' \(No such file or directory\)"):
        hold_lock(tmp_path / "missing{x}" / ".lock", "busy {pid}", "cannot write '{folder}' ({error})")


def test_a_link_planted_under_a_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    """replaced_atomically's temporary names are predictable (.<stem>.<pid>.tmp<suffix>): a link planted there is
    replaced, and what it points at is left alone."""
    import os

    from src.utils.io import atomic_write_json

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / f".manifest.{os.getpid()}.tmp.json").symlink_to(victim)
    atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    assert victim.read_text() == "keep me" and json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "victim.txt"]


def test_a_link_planted_as_a_lock_file_is_refused_and_not_emptied(tmp_path: Path) -> None:
    from src.utils.errors import UserError
    from src.utils.io import hold_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match="cannot write to '.*' .*symbolic links"):
        hold_lock(tmp_path / ".lock", "busy {folder}", "cannot write to '{folder}' ({error})")
    assert victim.read_text() == "keep me"
