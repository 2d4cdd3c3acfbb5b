"""The fast path: what each device gets by default, and that every switch trains the same model correctly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.config import ConfigError, ModelConfig
from src.dataset.offline_dataset import Batch
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.models.world_model import build_model
from src.training.fast_path import CHANNELS_LAST, FastPath, prepare_model
from src.training.loop import train
from src.training.objective import Objective, PixelLoss
from src.training.optimizer import make_optimizer
from src.training.schedule import Stage
from src.training.step import train_step
from tests.conftest import tiny_config


def test_auto_choices_per_device(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(small_dataset, tmp_path)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: True
    )  # an Ampere or later GPU
    cuda = FastPath.choose(cfg, torch.device("cuda"))
    assert (cuda.autocast, cuda.compile, cuda.channels_last, cuda.pin_memory, cuda.fused) == (
        torch.bfloat16,
        True,
        True,
        True,
        True,
    )
    cpu = FastPath.choose(cfg, torch.device("cpu"))
    assert (cpu.autocast, cpu.compile, cpu.channels_last, cpu.pin_memory, cpu.fused) == (
        None,
        False,
        CHANNELS_LAST["cpu"],
        False,
        False,
    )
    eager = FastPath.choose(tiny_config(small_dataset, tmp_path, "train.compile=false"), torch.device("cuda"))
    assert not eager.channels_last  # eager CUDA GroupNorm would turn channels-last back at every block
    forced = FastPath.choose(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.precision=fp32",
            "train.compile=false",
            "train.channels_last=false",
            "data.pin_memory=false",
        ),
        torch.device("cuda"),
    )
    assert (forced.autocast, forced.compile, forced.channels_last, forced.pin_memory) == (None, False, False, False)
    with pytest.raises(ConfigError, match="train.precision must be auto, fp32 or bf16, got 'fp16'"):
        tiny_config(small_dataset, tmp_path, "train.precision=fp16")
    with pytest.raises(ConfigError, match="train.threads must be >= 1 or null, got 0"):
        tiny_config(small_dataset, tmp_path, "train.threads=0")


def one_step(fast: FastPath, batch: Batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The metrics and gradients of one training step of the same tiny model under `fast`."""
    from src.config import Config

    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, events=False), 6)  # the frames' step
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # away from copy-last: real gradients everywhere
    forward = prepare_model(model, fast)
    optimizer = make_optimizer(model, Config(), fast.device)
    t = Config().train
    objective = Objective(pixels=PixelLoss.of(t), fast=fast, grad_clip=t.grad_clip)
    metrics, _, _ = train_step(forward, optimizer, objective, batch, Stage(1))
    return {k: v.item() for k, v in metrics.items()}, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_channels_last_and_bf16_compute_the_same_step() -> None:
    """channels-last changes the memory layout only; bf16 autocast rounds, and stays within bf16's precision."""
    torch.manual_seed(1)
    batch = Batch(torch.rand(4, 4, 84, 84), torch.randint(0, 6, (4, 1)), torch.rand(4, 1, 84, 84))
    cpu = torch.device("cpu")
    reference, grads = one_step(FastPath(cpu, None, False, False, False), batch)
    layout, layout_grads = one_step(FastPath(cpu, None, False, True, False), batch)
    assert layout == pytest.approx(reference, rel=1e-4)
    assert all(torch.allclose(layout_grads[n], g, rtol=1e-3, atol=1e-6) for n, g in grads.items())
    bf16, _ = one_step(FastPath(cpu, torch.bfloat16, False, False, False), batch)
    assert (
        bf16["loss"] == pytest.approx(reference["loss"], rel=0.05) and bf16["loss"] != reference["loss"]
    )  # autocast was on


@pytest.mark.slow
def test_compiled_bf16_channels_last_run_saves_a_plain_checkpoint(small_dataset: Path, tmp_path: Path) -> None:
    """Every switch of the GPU path at once, on the CPU: the run trains, and its checkpoint holds the model's own
    parameter names (not torch.compile's wrapper's), in float32, and reloads into a plain model."""
    result = train(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.max_steps=4",
            "train.log_every=2",
            "train.val_every_steps=4",
            "train.val_rollout_enabled=false",
            "train.precision=bf16",
            "train.compile=true",
            "train.channels_last=true",
        )
    )
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert state["step"] == 4 and not any(k.startswith("_orig_mod") for k in state["model"])
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    model_from_checkpoint(state)


@pytest.mark.gpu
def test_gpu_defaults_train_and_reload_on_cpu(small_dataset: Path, tmp_path: Path) -> None:
    """On CUDA the defaults are bf16 autocast, channels-last, torch.compile, pinned memory and fused AdamW."""
    result = train(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.max_steps=30",
            "train.log_every=10",
            "train.val_every_steps=30",
            "data.num_workers=2",
            "data.prefetch_factor=2",
        )
    )
    metrics = (Path(result["run_dir"]) / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 4
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    model_from_checkpoint(state)
