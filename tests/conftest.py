"""Shared fixtures: a small real dataset (recorded once per session) and helpers to run the commands, as a process
(`run`) or in this process (`run_main`, and `generate` for the generator)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATE = [sys.executable, "-m", "src.dataset.generate_dataset"]
INSPECT = [sys.executable, "-m", "src.dataset.inspect_dataset"]

# The suite computes on the CPU, also on a machine with a GPU: its tolerances, bitwise resumes and 2-process runs are
# those of fp32 on the CPU, and CUDA's defaults (bf16, torch.compile, cuDNN's autotuning) would break them. Hidden
# before torch looks, for this process and the commands it starts. The tests marked `gpu` check the CUDA path
# itself: `make test-gpu` runs them (AWM_TEST_GPU=1 leaves the GPUs visible), and without a GPU they are skipped.
GPU_RUN = os.environ.get("AWM_TEST_GPU") == "1"
if not GPU_RUN:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

# The commands' default W&B mode is auto: online wherever `wandb login` was run. Tests never log online; those that
# test W&B set their own mode (the wandb_env fixture: offline, and no credentials).
os.environ["WANDB_MODE"] = "disabled"

# Short episodes (60 steps) so that a few hundred steps cross many episode ends.
SMALL = {"steps": 1200, "num_envs": 3, "shard_size": 150, "max_episode_steps": 60, "seed": 7}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    reason = (
        "needs a GPU: run make test-gpu on a machine with one"
        if not GPU_RUN
        else "needs a GPU, and this machine has none"
    )
    if not GPU_RUN or not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AWM_DEBUG", None)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, **kwargs)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str]) -> subprocess.CompletedProcess:
    """A command's entry point run in this process, through run_cli as `python -m` runs it: exit code, stdout and
    stderr in the shape `run` returns, so that `error_line` reads both alike. Refusals are checked this way: a new
    process spends seconds importing torch to print one line; a few slow tests run each command as a real process."""
    from src.utils.errors import run_cli

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        env.delenv("AWM_DEBUG", raising=False)
        with pytest.raises(SystemExit) as exit_:
            run_cli(main, argv)
    return subprocess.CompletedProcess(argv, exit_.value.code, out.getvalue(), err.getvalue())


def generate(out_dir: Path, *args: str, **options) -> subprocess.CompletedProcess:
    """Run the generator command in this process (`run_main`); options become --key value flags."""
    from src.dataset import generate_dataset

    flags = [f"--{k}={v}" for k, v in options.items()]
    return run_main(generate_dataset.main, ["--out_dir", str(out_dir), *flags, *args])


def error_line(result: subprocess.CompletedProcess) -> str:
    """Assert the command (`run` or `run_main`) failed as a user error should (exit 2, one line, no traceback) and
    return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Pong dataset: 1200 steps, 3 envs, shards of 150 rows, episodes of at most 60 steps."""
    out = tmp_path_factory.mktemp("data") / "pong"
    result = generate(out, game="Pong", **SMALL)
    assert result.returncode == 0, result.stderr
    return out


TINY = [
    "model.channels=[8,16]",
    "model.action_embed_dim=8",
    "train.batch_size=8",
    "train.val_batches=2",
    "train.val_rollout_horizon=5",
    "train.warmup_steps=2",
]


def tiny_config(dataset: Path, tmp_path: Path, *overrides: str):
    """A config for a tiny model on `dataset`, run folders under tmp_path/runs."""
    from src.config import load_config

    return load_config(
        ROOT / "config.yaml", [f"data.dir={dataset}", f"experiment.runs_dir={tmp_path / 'runs'}", *TINY, *overrides]
    )


@pytest.fixture(scope="session")
def short_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """6 real training steps of a tiny model on the small dataset, logging and validating every 3 steps."""
    from src.training.loop import train

    tmp_path = tmp_path_factory.mktemp("train")
    cfg = tiny_config(small_dataset, tmp_path, "train.max_steps=6", "train.log_every=3", "train.val_every_steps=3")
    return cfg, train(cfg)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No credentials anywhere W&B looks; W&B's per-process settings reloaded under this env."""
    import wandb

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / ".cache" / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / ".local" / "share" / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    wandb.teardown()  # the settings singleton caches what it read under the previous env
    yield home
    wandb.teardown()


@pytest.fixture
def dataset_copy(small_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the small dataset, for tests that damage or extend it."""
    copy = tmp_path / "pong"
    shutil.copytree(small_dataset, copy)
    return copy


def check_consecutive(root: Path) -> int:
    """Assert the row-order contract of every shard; returns how many episode ends it crossed."""
    from src.dataset.shards import ShardedDataset

    data = ShardedDataset(root, verify="none")
    ends = 0
    for pos in range(len(data.shards)):
        obs, next_obs = data.array(pos, "obs"), data.array(pos, "next_obs")
        done, episode = data.array(pos, "done"), data.array(pos, "episode")
        for i in range(len(done) - 1):
            if done[i]:
                ends += 1
                assert episode[i + 1] != episode[i]
                assert not obs[i + 1, :-1].any(), "a new episode's stack is zero-padded"
            else:
                assert episode[i + 1] == episode[i]
                np.testing.assert_array_equal(next_obs[i, 0], obs[i + 1, -1])
                np.testing.assert_array_equal(obs[i, 1:], obs[i + 1, :-1])
    return ends
