"""Config: defaults, overrides, --config, and one clear line for every bad key or value."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.config import Config, ConfigError, TrainConfig, load_config, to_dict
from src.training.schedule import budget_used, lr_factor, rollout_length
from tests.conftest import ROOT, error_line, run

CONFIG = ROOT / "config.yaml"


def keys(d: dict, prefix: str = "") -> set[str]:
    return {
        k for key, v in d.items() for k in (keys(v, f"{prefix}{key}.") if isinstance(v, dict) else {f"{prefix}{key}"})
    }


def test_config_yaml_documents_every_key_with_the_schema_default() -> None:
    """Catches a key added to the schema but not to config.yaml (or a default that differs between them)."""
    assert keys(OmegaConf.to_container(OmegaConf.load(CONFIG))) == keys(to_dict(Config()))
    assert to_dict(load_config(CONFIG, ["profile=cpu"])) == to_dict(
        Config(profile="cpu")
    )  # the cpu profile changes nothing


def test_overrides_apply_with_their_types() -> None:
    cfg = load_config(CONFIG, ["optimizer.lr=1e-4", "train.max_steps=5", "model.channels=[8,16]", "data.game=Pong"])
    assert cfg.optimizer.lr == 1e-4 and cfg.train.max_steps == 5 and cfg.model.channels == [8, 16]
    assert cfg.data.game == "Pong" and isinstance(cfg, Config)


def test_another_config_file(tmp_path: Path) -> None:
    other = tmp_path / "small.yaml"
    other.write_text("train:\n  max_steps: 7\n")
    assert load_config(other).train.max_steps == 7
    assert load_config(other, ["train.max_steps=9"]).train.max_steps == 9  # the command line wins


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batchsize=64", "unknown config key 'train.batchsize'. Did you mean 'train.batch_size'?"),
        ("trian.max_steps=3", "unknown config key 'trian'. Did you mean 'train'?"),
        ("experiment.wandb.modee=offline", "Did you mean 'experiment.wandb.mode'?"),
        ("train.batch_size=abc", "train.batch_size"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("data.val_ratio=1.5", "data.val_ratio must be in (0, 1)"),
        ("data.val_ratio=0", "data.val_ratio must be in (0, 1)"),
        ("data.prefetch_factor=2", "data.prefetch_factor must be null when data.num_workers is 0"),
        ("train.loss=l1", "train.loss must be huber or mse"),
        ("experiment.wandb.mode=sometimes", "experiment.wandb.mode must be online, offline or disabled"),
        ("train.max_steps=0", "train.max_steps must be >= 1"),
        ("train.rollout_steps=[1,3]", "train.rollout_stage_ends needs one entry per stage but the last (1 for"),
        ("train.rollout_steps=[0]", "train.rollout_steps must be a non-empty list of unroll lengths >= 1"),
        ("train.changed_pixel_weight=-1", "train.changed_pixel_weight must be >= 0"),
        ("model.name=unet", "model.name 'unet' is not a model. Did you mean"),
    ],
)
def test_bad_keys_and_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(CONFIG, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow  # starts train as a process, twice
def test_cli_bad_key_exits_2_before_creating_anything(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run([sys.executable, "-m", "src.train", f"experiment.runs_dir={runs}", "train.batchsize=64"])
    assert "Did you mean 'train.batch_size'?" in error_line(result)
    assert "not found" in error_line(run([sys.executable, "-m", "src.train", "--config", str(tmp_path / "nope.yaml")]))
    assert not runs.exists()


def test_lr_schedule_values() -> None:
    t = TrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 0.0, t) == pytest.approx(0.1)  # first warm-up step: 1/10 of the peak
    assert lr_factor(9, 0.0, t) == pytest.approx(1.0)  # warm-up ends at the peak
    assert lr_factor(55, 0.5, t) == pytest.approx(0.55)  # half the budget: (1 + 0.1) / 2
    assert lr_factor(110, 1.0, t) == pytest.approx(0.1)  # the floor when the budget is spent
    assert lr_factor(5, 0.5, t) == pytest.approx(0.6 * 0.55)  # a warm-up longer than half the budget still ramps
    assert lr_factor(35, 0.25, TrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.0)) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.25))
    )


def test_budget_follows_steps_or_minutes_whichever_runs_out_first() -> None:
    assert budget_used(50, 3600.0, TrainConfig(max_steps=100)) == 0.5  # no time budget: steps alone
    t = TrainConfig(max_steps=100, max_minutes=10.0)
    assert budget_used(50, 60.0, t) == 0.5
    assert budget_used(10, 300.0, t) == 0.5  # the clock runs out first
    assert budget_used(200, 9000.0, t) == 1.0


def test_curriculum_stages() -> None:
    t = TrainConfig(rollout_steps=[1, 3, 5], rollout_stage_ends=[0.4, 0.7])
    assert [rollout_length(u, t) for u in (0.0, 0.39, 0.4, 0.69, 0.7, 1.0)] == [1, 1, 3, 3, 5, 5]
    assert rollout_length(0.9, TrainConfig()) == 1


def test_without_a_config_file_the_built_in_defaults_are_config_yamls(tmp_path: Path) -> None:
    assert to_dict(load_config(None)) == to_dict(load_config(ROOT / "config.yaml"))
    assert load_config(None, ["train.max_steps=7"]).train.max_steps == 7


@pytest.mark.slow  # starts train as a process
def test_train_outside_the_repository_uses_the_defaults_and_lists_the_datasets_it_sees(
    small_dataset: Path, tmp_path: Path
) -> None:
    """From a folder with no config.yaml, the documented `python -m src.train` reads the built-in defaults (data.dir
    data/pong); the dataset is missing there, and the line names the datasets that are there and the override."""
    import shutil

    (tmp_path / "data").mkdir()
    shutil.copytree(small_dataset, tmp_path / "data" / "demo_pong")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AWM_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "src.train"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert error_line(result) == (
        "error: data.dir: dataset directory 'data/pong' does not exist; datasets here: data/demo_pong (Pong, 1,200 "
        "steps); train on one with data.dir=data/demo_pong, or record one with python -m src.dataset.generate_dataset "
        "--game Pong --steps 300000 --out_dir data/pong"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no runs/ folder
