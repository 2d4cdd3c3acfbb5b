"""What a training checkpoint holds, and that checkpoints of the first layout still load and evaluate."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

from src.models import checkpoint as checkpoint_module
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.utils.checkpoint import load_checkpoint
from tests.conftest import run


def documented_keys() -> set[str]:
    """The keys that src/models/checkpoint.py's docstring lists."""
    block = checkpoint_module.__doc__.split("What a checkpoint holds", 1)[1]
    return set(re.findall(r"^    (\w+) ", block, flags=re.MULTILINE))


def test_a_checkpoint_holds_what_its_docstring_lists(short_run) -> None:
    _, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert set(state) == documented_keys() == {"model", "optimizer", "step", "elapsed_s", "config", "dataset", "val",
                                                "best_mse", "rng", "wandb_id", "versions"}
    assert state["dataset"]["game"] == "Pong" and state["dataset"]["env_settings"]["env_id"] == "ALE/Pong-v5"


def test_a_checkpoint_of_the_first_layout_still_loads_and_evaluates(short_run, tmp_path: Path) -> None:
    """Catches the rename of "env" to "dataset" (and "env"."env" to "env_settings") breaking older checkpoints."""
    _, result = short_run
    new = Path(result["run_dir"]) / "checkpoints" / "last.pt"
    state = load_checkpoint(new)
    dataset = dict(state.pop("dataset"))
    dataset["env"] = dataset.pop("env_settings")
    old = tmp_path / "old.pt"
    torch.save({**state, "env": dataset}, old)

    upgraded = read_checkpoint(old)
    assert upgraded["dataset"] == read_checkpoint(new)["dataset"] and "env" not in upgraded
    frames, actions = torch.rand(2, 4, 84, 84), torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(upgraded)(frames, actions), model_from_checkpoint(read_checkpoint(new))(frames, actions))
    out = run([sys.executable, "-m", "src.eval", "--checkpoint", str(old), "--game", "Pong", "--episodes", "1",
               "--starts_per_episode", "2", "--horizon", "3", "--videos", "0", "--out_dir", str(tmp_path / "eval")])
    assert out.returncode == 0, out.stderr
    (eval_dir,) = (tmp_path / "eval").iterdir()
    assert json.loads((eval_dir / "summary.json").read_text())["checkpoint_step"] == state["step"]


def test_a_checkpoint_from_before_the_event_head_loads_as_frames_only(short_run) -> None:
    """Catches old frames-only checkpoints (no model.events in their config, no events.* weights) failing to load, or
    loading with an untrained event head that would invent rewards and ends."""
    from src.models.events import has_events

    _, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    new = model_from_checkpoint(state)
    assert has_events(new)
    old = {**state, "config": {**state["config"], "model": {k: v for k, v in state["config"]["model"].items() if k != "events"}},
           "model": {k: v for k, v in state["model"].items() if not k.startswith("events.")}}
    model = model_from_checkpoint(old)
    assert not has_events(model)
    frames, actions = torch.rand(2, 4, 84, 84), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(model(frames, actions), new(frames, actions))  # the same frame model
