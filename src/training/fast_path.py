"""How a training step runs on its device: precision, memory format, compilation, pinned memory, the optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from src.config import Config
from src.utils.distributed import Ranks


@dataclass(frozen=True)
class FastPath:
    """How a training step runs on its device: the config's choices with their nulls ("auto") resolved."""

    device: torch.device
    autocast: torch.dtype | None  # the forward pass under torch.autocast in this dtype, or fp32
    compile: bool  # torch.compile the model for the training step
    channels_last: bool  # inputs in channels-last memory format (and the weights too, on CUDA: see prepare_model)
    pin_memory: bool  # the loader hands over page-locked batches, copied with non_blocking=True

    @classmethod
    def choose(cls, cfg: Config, device: torch.device) -> FastPath:
        cuda, t = device.type == "cuda", cfg.train
        precision = t.precision if t.precision != "auto" else ("bf16" if cuda else "fp32")
        return cls(device, torch.bfloat16 if precision == "bf16" else None, cuda if t.compile is None else t.compile,
                   CHANNELS_LAST[device.type] if t.channels_last is None else t.channels_last,
                   cuda if cfg.data.pin_memory is None else cfg.data.pin_memory)

    def __str__(self) -> str:
        return ", ".join([str(self.autocast).removeprefix("torch.") if self.autocast else "fp32",
                          "channels-last" if self.channels_last else "contiguous", "compiled" if self.compile else "eager"])


# Measured with benchmarks/bench_train.py (its "channels-last" row): see docs/speed.md. The CUDA entry is
# PyTorch's advice for convolutions under bf16 autocast, not yet measured here (no GPU was lent).
CHANNELS_LAST = {"cpu": True, "cuda": True}


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW or Adam; on CUDA the fused kernels (one launch for all parameters). The frame model's parameters are the
    first group; the event head's (model.events), when there is one, a second, whose "lr_scale" is
    train.event_lr_scale (the loop sets each group's learning rate to optimizer.lr x its lr_scale x the schedule)."""
    o = cfg.optimizer
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[o.name]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not n.startswith("events.")], "lr_scale": 1.0}]
    if any(n.startswith("events.") for n, _ in named):
        groups.append({"params": [p for n, p in named if n.startswith("events.")], "lr_scale": cfg.train.event_lr_scale})
    return cls(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **fused)


def prepare_model(model: nn.Module, fast: FastPath, ranks: Ranks = Ranks()) -> nn.Module:
    """Put `model` in the memory format of `fast`; returns what the training step calls: the model itself or its
    torch.compile'd wrapper (which shares its parameters; checkpoints save the model itself).

    Channels-last weights only on CUDA (cuDNN's NHWC kernels want both weights and inputs so). On the CPU,
    channels-last inputs alone give oneDNN's gain (measured: +5%, the same as both), and contiguous weights
    keep validation bit-identical to a model rebuilt from the checkpoint.
    """
    if fast.channels_last and fast.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = model
    if ranks.world > 1:  # averages the gradients over the processes during backward
        forward = nn.parallel.DistributedDataParallel(model, device_ids=[fast.device.index] if fast.device.type == "cuda" else None)
    return torch.compile(forward) if fast.compile else forward
