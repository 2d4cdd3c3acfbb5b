"""What a training checkpoint holds, and that checkpoints of the first layout still load and evaluate."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from src.models import checkpoint as checkpoint_module
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.utils.checkpoint import load_checkpoint
from src.utils.errors import UserError
from tests.conftest import run, tiny_config


def documented_keys() -> set[str]:
    """The keys that src/models/checkpoint.py's docstring lists."""
    block = checkpoint_module.__doc__.split("What a checkpoint holds", 1)[1]
    return set(re.findall(r"^    (\w+) ", block, flags=re.MULTILINE))


def test_a_checkpoint_holds_what_its_docstring_lists(short_run) -> None:
    _, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert (
        set(state)
        == documented_keys()
        == {
            "model",
            "optimizer",
            "step",
            "elapsed_s",
            "config",
            "dataset",
            "val",
            "best_mse",
            "rng",
            "wandb_id",
            "versions",
        }
    )
    assert state["dataset"]["game"] == "Pong" and state["dataset"]["env_settings"]["env_id"] == "ALE/Pong-v5"


@pytest.mark.slow  # starts eval as a process
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
        assert torch.equal(
            model_from_checkpoint(upgraded)(frames, actions),
            model_from_checkpoint(read_checkpoint(new))(frames, actions),
        )
    out = run(
        [
            sys.executable,
            "-m",
            "src.eval",
            "--checkpoint",
            str(old),
            "--game",
            "Pong",
            "--episodes",
            "1",
            "--starts_per_episode",
            "2",
            "--horizon",
            "3",
            "--videos",
            "0",
            "--out_dir",
            str(tmp_path / "eval"),
        ]
    )
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
    old = {
        **state,
        "config": {**state["config"], "model": {k: v for k, v in state["config"]["model"].items() if k != "events"}},
        "model": {k: v for k, v in state["model"].items() if not k.startswith("events.")},
    }
    model = model_from_checkpoint(old)
    assert not has_events(model)
    frames, actions = torch.rand(2, 4, 84, 84), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(model(frames, actions), new(frames, actions))  # the same frame model


def test_a_palette_output_checkpoint_loads_and_one_whose_levels_disagree_is_refused(
    small_dataset: Path, tmp_path: Path
) -> None:
    """Catches a palette head's `levels` buffer taken from the file while the model is built from model.palette: a
    checkpoint whose two disagree decoded every prediction with other grey levels (1,567x copy-last, exit 0)."""
    from src.training.loop import train

    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "model.output=palette",
        "train.max_steps=2",
        "train.val_every_steps=2",
        "train.val_rollout_enabled=false",
        "experiment.wandb.mode=disabled",
    )
    path = Path(train(cfg)["run_dir"]) / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    assert torch.equal(
        model_from_checkpoint(state).head.levels, torch.tensor(state["config"]["model"]["palette"]) / 255
    )

    for change in (
        lambda s: s["model"]["head.levels"].__setitem__(3, s["model"]["head.levels"][3] + 1 / 255),  # the buffer moved
        lambda s: s["config"]["model"]["palette"].__setitem__(0, s["config"]["model"]["palette"][0] - 1),
    ):  # the config
        altered = load_checkpoint(path)
        change(altered)
        torch.save(altered, tmp_path / "bad.pt")
        with pytest.raises(
            UserError, match=r"checkpoint '.*bad.pt': model.head.levels differs from config.model.palette"
        ):
            read_checkpoint(tmp_path / "bad.pt")


def test_every_tensor_and_string_of_a_checkpoint_is_checked(short_run) -> None:
    """Catches a tensor or a string field left out of the checks: one element NaN or infinite in any weight, buffer or
    Adam moment, or a control character in any string, is named; the untouched state passes."""
    from src.models.checkpoint import contents_problem, leaves

    _, result = short_run
    state = load_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert contents_problem(state) is None
    floats = [
        (key, value)
        for key, value in leaves(state, "")
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    ]
    assert len(floats) > 2 * len(state["model"]) - 5  # the weights, the buffers and Adam's moments
    for i, (key, tensor) in enumerate(floats):
        kept = tensor.view(-1)[-1].item()
        tensor.view(-1)[-1] = (math.nan, math.inf, -math.inf)[i % 3]
        assert contents_problem(state) == f"{key} holds NaN or infinite values (1 of {tensor.numel():,})"
        tensor.view(-1)[-1] = kept
    for text in ("a\nb", "\x1b[2J", "tab\there", "x" * 5000):
        state["config"]["experiment"]["name"] = text
        assert contents_problem(state).startswith("config.experiment.name must be text on one line")
    state["config"]["experiment"]["name"] = None
    state["val"] = {"val/end_precision": math.nan}  # an event rate with nothing to count: allowed
    assert contents_problem(state) is None
    state["elapsed_s"] = math.inf
    assert "elapsed_s" in contents_problem(state)
