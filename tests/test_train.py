"""Training: episode split, config/dataset disagreements, and a real short run with every file it writes."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from src.config import Config, ConfigError, ModelConfig, TrainConfig, config_from_dict, load_config, to_dict
from src.dataset.offline_dataset import Batch, WindowDataset, split_episodes
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import read_checkpoint
from src.models.rollout import Feedback
from src.models.world_model import build_model
from src.training.batches import VAL_ROLLOUTS, fixed_val_batches, fixed_val_rollouts, rollout_starts
from src.training.data import open_data
from src.training.loop import train
from src.training.objective import Objective, PixelLoss
from src.training.outputs import RunOutputs
from src.training.step import validate
from src.utils.logging import NullLogger
from tests.conftest import TINY, run, tiny_config
from tests.test_logging import history_rows, read_records


def test_split_keeps_whole_episodes_apart(small_dataset: Path) -> None:
    """Catches a row-level split: a val episode with rows in train would leak near-identical frames."""
    episodes = ShardedDataset(small_dataset, verify="none").column("episode")
    train_rows, val_rows = split_episodes(episodes, 0.2, seed=0)
    assert not set(episodes[train_rows]) & set(episodes[val_rows])
    assert sorted([*train_rows, *val_rows]) == list(range(len(episodes)))
    assert len(set(episodes[val_rows])) == math.ceil(
        0.2 * len(np.unique(episodes))
    )  # rounded up: never an empty val set
    again, _ = split_episodes(episodes, 0.2, seed=0)
    other, _ = split_episodes(episodes, 0.2, seed=1)
    assert np.array_equal(again, train_rows) and not np.array_equal(other, train_rows)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.batch_size=5000"], "train.batch_size 5000 is larger than the training set"),
        (["data.game=Breakout"], "data.game is Breakout but the dataset"),
        (["data.dir=/nonexistent/data"], "data.dir: dataset directory '/nonexistent/data' does not exist"),
    ],
)
def test_config_that_disagrees_with_the_dataset_stops_before_writing(
    small_dataset: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = tiny_config(small_dataset, tmp_path, *overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_has_every_file(short_run: tuple[Config, dict]) -> None:
    cfg, result = short_run
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == Path(cfg.experiment.runs_dir) and run_dir.name.endswith("_Pong")
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["step"] for r in rows] == ["3", "6"]
    assert {"loss", "mse", "lr", "grad_norm", "samples_per_s"} <= set(rows[0]) and float(rows[0]["loss"]) > 0
    val = read_csv(run_dir / "val_metrics.csv")
    assert [r["step"] for r in val] == ["3", "6"]
    assert float(val[-1]["ratio_to_copy"]) == pytest.approx(
        float(val[-1]["mse"]) / float(val[-1]["copy_last_mse"]), rel=1e-4
    )
    assert 0 <= float(val[-1]["changed_recall"]) <= 1
    assert all(0 <= float(val[-1][key]) <= 1 for key in ("rollout_recall", "rollout_recall_all"))  # at step 5, 1-5
    assert float(val[-1]["rollout_ratio"]) > 0
    images = sorted((run_dir / "images").glob("*.png"))
    assert [p.name for p in images] == ["step_000003.png", "step_000006.png"]
    image = iio.imread(images[0])
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[1] > 7 * 84  # 4 inputs, pred, target, error
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 2 * cfg.train.val_rollout_videos
    frames = np.stack(list(iio.imiter(videos[0])))
    assert frames.shape[0] == cfg.train.val_rollout_horizon and frames.shape[1] >= 84 and frames.shape[2] >= 3 * 84
    resolved = load_config(run_dir / "resolved_config.yaml")  # the caller's config with the palette filled in
    assert resolved.model.palette and replace(resolved, model=replace(resolved.model, palette=None)) == cfg
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    log = (run_dir / "train.log").read_text()  # the console's lines, timed: the config, the steps, the validations
    assert (
        "  max_steps: 6" in log
        and "step 3/6 | loss" in log
        and "validation at step 6: mse" in log
        and f"run {run_dir}" in log
    )


@pytest.mark.slow  # two trainings
def test_a_second_start_skips_hashing_the_unchanged_data(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A run records its dataset's passed full verification; the next run hashes no file that did not change."""
    import os
    import time

    from src.dataset import shards

    for (
        path
    ) in dataset_copy.iterdir():  # as if recorded a while ago: files changed in the last 2 s are never vouched for
        os.utime(path, (time.time() - 60, time.time() - 60))
    time.sleep(2.1)  # ctime, which utime cannot set back, must be older than that too
    hashed = []
    real = shards.checksum_file
    monkeypatch.setattr(shards, "checksum_file", lambda path, *a: hashed.append(path) or real(path, *a))
    base = [*TINY, "train.max_steps=2", "train.val_every_steps=2", "train.val_rollout_enabled=false"]
    train(tiny_config(dataset_copy, tmp_path, *base))
    first = len(hashed)
    assert first > 0 and (dataset_copy / ".verified.json").is_file()
    train(tiny_config(dataset_copy, tmp_path, *base))
    assert len(hashed) == first  # the second start hashed nothing
    assert "checksums of 0 files computed" in capsys.readouterr().out


def test_checkpoint_reloads_to_identical_outputs(short_run: tuple[Config, dict]) -> None:
    """Rebuilding the model from the checkpoint alone reproduces the validation it was saved with, exactly."""
    cfg, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    saved = state["config"]
    assert state["step"] == 6 and state["dataset"]["game"] == "Pong"
    assert saved == to_dict(load_config(str(Path(result["run_dir"]) / "resolved_config.yaml"), []))
    # The run's config is the caller's with the palette filled in; the caller's own is left as it was.
    assert saved["model"]["palette"] and {**saved, "model": {**saved["model"], "palette": None}} == to_dict(cfg)
    assert {"model", "optimizer", "elapsed_s"} <= set(state)
    model = build_model(
        ModelConfig(**state["config"]["model"]),
        state["dataset"]["num_actions"],
        state["dataset"]["env_settings"]["context_frames"],
    )
    model.load_state_dict(state["model"])
    dataset, _, val_rows = open_data(cfg)
    metrics = validate(
        model,
        fixed_val_batches(dataset, val_rows, cfg),
        Objective.of(config_from_dict(state["config"])),
        rollouts=fixed_val_rollouts(dataset, val_rows, cfg),
    )
    assert {"val/rollout_recall", "val/rollout_recall_all", "val/rollout_ratio"} <= set(metrics)
    np.testing.assert_equal(metrics, state["val"])  # NaN equal to NaN: an event rate with nothing to count
    np.testing.assert_equal(metrics, {k: v for k, v in result.items() if k.startswith("val/")})


class Replay(nn.Module):
    """Test-only: answers each call with the next of `frames`, whatever it is asked."""

    def __init__(self, frames: list[torch.Tensor]) -> None:
        super().__init__()
        self.frames, self.weight = iter(frames), nn.Parameter(torch.zeros(1))

    def forward(self, frames: torch.Tensor, actions: torch.Tensor, **_: object) -> torch.Tensor:
        return next(self.frames)


def test_validation_recall_tells_a_copy_from_a_prediction_that_moves(small_dataset: Path, tmp_path: Path) -> None:
    """val/changed_recall: 0 for a model that copies the last frame (its MSE can still be low), 1 for one that predicts
    the true next frames, half-way for one right on half the samples: a ratio of sums over all the samples."""
    cfg = tiny_config(small_dataset, tmp_path)
    dataset, _, val_rows = open_data(cfg)
    batches = fixed_val_batches(dataset, val_rows, cfg)  # uint8, as validate gets them
    floats = [b.to("cpu") for b in batches]
    copies, truths = [b.frames[:, -1:] for b in floats], [b.targets for b in floats]
    objective = Objective()
    assert validate(Replay(copies), batches, objective)["val/changed_recall"] == 0.0
    assert validate(Replay(truths), batches, objective)["val/changed_recall"] == 1.0
    changed = [(b.targets.int() - b.frames[:, -1:].int()).abs().gt(2).flatten(1).sum(1) for b in batches]  # per sample
    even = [torch.arange(len(b)).view(-1, 1, 1, 1) % 2 == 0 for b in batches]
    half = [torch.where(e, t, c) for e, t, c in zip(even, truths, copies)]  # right on the even samples only
    found = sum(n[::2].sum().item() for n in changed) / sum(n.sum().item() for n in changed)
    assert 0 < found < 1
    assert validate(Replay(half), batches, objective)["val/changed_recall"] == pytest.approx(found)


def test_validation_rollouts_tell_a_copy_from_a_prediction_that_moves(small_dataset: Path, tmp_path: Path) -> None:
    """val/rollout_recall and rollout_recall_all: 1 for a model that replays the true frames open loop, 0 for one that
    copies the last context frame; rollout_ratio 0 and 1. The windows: the same VAL_ROLLOUTS at every call, of
    train.val_rollout_horizon steps in the val episodes; none with train.val_rollout_enabled off."""
    cfg = tiny_config(small_dataset, tmp_path)  # train.val_rollout_horizon=5
    dataset, _, val_rows = open_data(cfg)
    batches, rollouts = fixed_val_batches(dataset, val_rows, cfg), fixed_val_rollouts(dataset, val_rows, cfg)
    assert rollouts.actions.shape == (VAL_ROLLOUTS, 5) and rollouts.frames.dtype == torch.uint8
    assert torch.equal(fixed_val_rollouts(dataset, val_rows, cfg).targets, rollouts.targets)
    assert (
        fixed_val_rollouts(dataset, val_rows, tiny_config(small_dataset, tmp_path, "train.val_rollout_enabled=false"))
        is None
    )
    starts = rollout_starts(dataset, val_rows, cfg, VAL_ROLLOUTS)
    assert np.isin(starts, val_rows).all() and np.array_equal(
        rollouts.targets[3], dataset.steps(int(starts[3]), 5).next_obs[:, 0]
    )
    one_step, windows = [b.to("cpu").targets for b in batches], rollouts.to("cpu")  # what validate asks for, in order
    truths, copies = [windows.targets[:, k : k + 1] for k in range(5)], [windows.frames[:, -1:]] * 5
    objective = Objective()
    keys = ("val/rollout_recall", "val/rollout_recall_all", "val/rollout_ratio")
    replayed = validate(Replay(one_step + truths), batches, objective, rollouts=rollouts)
    assert [replayed[k] for k in keys] == [1.0, 1.0, 0.0]
    assert replayed["val/changed_recall"] == 1.0  # the one-step predictions came first, as asked
    copied = validate(Replay(one_step + copies), batches, objective, rollouts=rollouts)
    assert [copied[k] for k in keys] == [0.0, 0.0, 1.0]
    assert "val/rollout_recall" not in validate(Replay(one_step), batches, objective)


def test_a_run_from_before_the_rollout_columns_resumes_with_its_own_header(tmp_path: Path) -> None:
    """val_metrics.csv of a run folder from before val/rollout_* keeps its header when the run resumes: the new rows
    line up with it, the new figures left out (they are in the checkpoints and W&B)."""
    old = "step,loss,mse,copy_last_mse,ratio_to_copy,changed_recall,elapsed_s\n2,0.1,0.1,0.2,0.5,0.3,1\n"
    (tmp_path / "val_metrics.csv").write_text(old)
    outputs = RunOutputs(tmp_path, resumed_at=2)
    outputs.logger = NullLogger()
    val = {"loss": 0.05, "mse": 0.05, "copy_last_mse": 0.2, "ratio_to_copy": 0.25, "changed_recall": 0.5}
    rollout = {"rollout_recall": 0.125, "rollout_recall_all": 0.25, "rollout_ratio": 1.5}
    outputs.log_validation(4, {f"val/{k}": v for k, v in (val | rollout).items()}, 2.0)
    outputs.close()
    assert (tmp_path / "val_metrics.csv").read_text() == old + "4,0.05,0.05,0.2,0.25,0.5,2\n"
    new = tmp_path / "new"
    new.mkdir()
    outputs = RunOutputs(new)
    outputs.logger = NullLogger()
    outputs.log_validation(2, {f"val/{k}": v for k, v in (val | rollout).items()}, 2.0)
    outputs.close()
    assert read_csv(new / "val_metrics.csv")[0]["rollout_recall"] == "0.125"


@pytest.mark.slow  # starts train as a process
def test_cli_with_the_seed_override(small_dataset: Path, tmp_path: Path) -> None:
    """The README's `python -m src.train optimizer.lr=1e-4 train.max_steps=5` works end to end."""
    result = run(
        [
            sys.executable,
            "-m",
            "src.train",
            f"data.dir={small_dataset}",
            f"experiment.runs_dir={tmp_path}",
            *TINY,
            "optimizer.lr=1e-4",
            "train.max_steps=5",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "step 5/5" in result.stdout and "run folder" in result.stdout
    (run_dir,) = tmp_path.iterdir()
    assert load_config(run_dir / "resolved_config.yaml").optimizer.lr == 1e-4


@pytest.mark.slow  # a training logged to W&B offline
def test_offline_wandb_run_has_the_logged_keys(small_dataset: Path, tmp_path: Path, wandb_env: Path) -> None:
    """With experiment.wandb.mode=offline the run is written under the run folder with scalars, media and config."""
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.max_steps=4",
        "train.log_every=2",
        "train.val_every_steps=2",
        "experiment.wandb.mode=offline",
    )
    result = train(cfg)
    (sync_dir,) = (Path(result["run_dir"]) / "wandb").glob("offline-run-*")
    (log_file,) = sync_dir.glob("run-*.wandb")
    records = list(read_records(log_file))
    history = history_rows(records)
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/mse", "val/ratio_to_copy"} <= set(history[4])
    assert history[2]["train/prediction"]["_type"] == "image-file"
    assert history[4]["val/rollout_0"]["_type"] == "video-file"
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["train"]["max_steps"] == 4 and config["dataset"]["game"] == "Pong"


@pytest.mark.slow  # trains with DataLoader worker processes
def test_dataloader_workers(small_dataset: Path, tmp_path: Path) -> None:
    """Catches a Dataset that cannot cross into worker processes (memmaps opened too early, unpicklable state)."""
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.max_steps=3",
        "train.val_rollout_enabled=false",
        "data.num_workers=2",
        "data.prefetch_factor=2",
        "data.persistent_workers=true",
    )
    result = train(cfg)
    assert result["step"] == 3 and not list((Path(result["run_dir"]) / "videos").iterdir())


def test_windows_match_the_recorded_steps_and_stay_in_one_episode(small_dataset: Path) -> None:
    """Catches a k-step window that crosses an episode end or reads the wrong rows: each window must equal
    ShardedDataset.steps (which checks the episode boundary itself) frame for frame."""
    data = ShardedDataset(small_dataset, verify="none")
    k = 5
    starts = data.window_starts(k)
    windows = WindowDataset(small_dataset, starts, k)
    ends = data.column("done")
    assert len(starts) < len(data) - (k - 1) * len(data.shards)  # windows before an episode end were left out
    for i in np.linspace(0, len(starts) - 1, 40).astype(int):
        context, actions, targets, rewards, dones = windows[i]
        steps = data.steps(int(starts[i]), k)
        assert context.shape == (4, 84, 84) and actions.shape == (k,) and targets.shape == (k, 84, 84)
        np.testing.assert_array_equal(np.concatenate([context, targets]), steps.frames)
        np.testing.assert_array_equal(actions, steps.action)
        np.testing.assert_array_equal(rewards, steps.reward)
        np.testing.assert_array_equal(dones, steps.done)
        assert not ends[starts[i] : starts[i] + k - 1].any()


def test_unrolled_loss_feeds_predictions_back() -> None:
    """Catches an unroll that feeds the true frames back (teacher forcing) or cuts the gradient between steps:
    the loss must equal the hand-made open-loop unroll, and step 2's loss alone must reach step 1's input."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), 6)
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # away from copy-last, so predictions differ from truths
    frames, targets = torch.rand(2, 4, 84, 84), torch.rand(2, 3, 84, 84)
    batch = Batch(frames, torch.tensor([[1, 2, 3], [4, 5, 0]]), targets)
    objective = Objective(Feedback("float"), PixelLoss.of(TrainConfig(loss="mse")))
    loss, metrics, predicted = objective.unrolled(model, batch, 3)
    context, expected = frames, []
    for j in range(3):
        expected.append(model(context, batch.actions[:, j]))
        context = torch.cat([context[:, 1:], expected[-1].clamp(0, 1)], dim=1)
    expected = torch.cat(expected, dim=1)
    torch.testing.assert_close(predicted, expected)
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(expected, targets).item(), rel=1e-5)
    teacher = torch.cat(
        [model(torch.cat([frames, targets], 1)[:, j : j + 4], batch.actions[:, j]) for j in range(3)], 1
    )
    assert not torch.allclose(predicted[:, 1:], teacher[:, 1:])  # feeding the truth back gives other predictions
    one_step, _, _ = objective.unrolled(model, batch, 1)
    assert one_step.item() == pytest.approx(
        torch.nn.functional.mse_loss(expected[:, :1], targets[:, :1]).item(), rel=1e-5
    )

    first_output = {}
    model.head.register_forward_hook(lambda m, i, o: first_output.setdefault("out", o))
    _, _, predicted = objective.unrolled(model, batch, 2)
    (grad,) = torch.autograd.grad(predicted[:, 1].sum(), first_output["out"])
    assert grad.abs().sum() > 0, "the second prediction does not depend on the first"


@pytest.mark.slow  # a training of several unroll stages
def test_curriculum_run_grows_the_unroll(small_dataset: Path, tmp_path: Path) -> None:
    """A short run with the 1 -> 3 curriculum logs one-step steps, then three-step ones, and validates."""
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.max_steps=6",
        "train.log_every=1",
        "train.val_every_steps=6",
        "train.val_rollout_enabled=false",
        "train.rollout_steps=[1,3]",
        "train.rollout_stage_ends=[0.5]",
        "train.changed_pixel_weight=5",
    )
    result = train(cfg)
    rows = read_csv(Path(result["run_dir"]) / "metrics.csv")
    assert [int(r["rollout_steps"]) for r in rows] == [1, 1, 1, 3, 3, 3]
    assert all(math.isfinite(float(r["loss"])) for r in rows) and math.isfinite(result["val/mse"])


def test_a_run_needs_the_room_it_writes_not_a_fixed_floor(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the free-space check refusing a short run of a tiny model on a small disk (a fixed 200 MB floor did),
    or estimating less than the run really writes: on a disk with 60 MB free a 4-step run trains, and its folder
    takes less than the estimate; the estimate grows with the steps (strips, videos) and with W&B's copies."""
    import shutil

    from src.training.outputs import run_bytes

    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.max_steps=4",
        "train.log_every=1",
        "train.val_every_steps=2",
        "experiment.wandb.mode=disabled",
    )
    params = sum(p.numel() for p in build_model(cfg.model, 6, 4, 84).parameters())
    needed = run_bytes(cfg, 3 * 4 * params)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 60 * 10**6, 60 * 10**6))
    run_dir = Path(train(cfg)["run_dir"])
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    written = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert written < needed < 60 * 10**6, (written, needed)
    longer = tiny_config(small_dataset, tmp_path, "train.max_steps=3000", "experiment.wandb.mode=disabled")
    assert run_bytes(longer, 3 * 4 * params) > needed
    with_wandb = tiny_config(small_dataset, tmp_path, "train.max_steps=3000", "experiment.wandb.mode=offline")
    assert run_bytes(with_wandb, 3 * 4 * params) > run_bytes(longer, 3 * 4 * params)
