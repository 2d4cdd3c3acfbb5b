"""How a training step runs on its device: precision, memory format, compilation, pinned memory, and the guard that
keeps a non-finite step from the weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from src.config import Config, ConfigError
from src.utils.distributed import Ranks


@dataclass(frozen=True)
class FastPath:
    """How a training step runs on its device: the config's choices with their nulls ("auto") resolved."""

    device: torch.device
    autocast: torch.dtype | None  # the forward pass under torch.autocast in this dtype, or fp32
    compile: bool  # torch.compile the model for the training step
    channels_last: bool  # inputs in channels-last memory format (and the weights too, on CUDA: see prepare_model)
    pin_memory: bool  # the loader hands over page-locked batches, copied with non_blocking=True
    fused: bool = False  # fused AdamW, which skips a non-finite step on the device without a sync (see `skip_if`)

    @classmethod
    def choose(cls, cfg: Config, device: torch.device) -> FastPath:
        """ConfigError for train.precision=bf16 on a GPU without native bf16 (before Ampere), where auto gives fp32:
        emulated bf16 is slower than fp32 there."""
        cuda, t = device.type == "cuda", cfg.train
        native_bf16 = not cuda or torch.cuda.is_bf16_supported(including_emulation=False)
        if t.precision == "bf16" and not native_bf16:
            raise ConfigError(
                f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no native bf16 (it came with "
                "Ampere, compute capability 8.0); use train.precision=fp32 or auto"
            )
        precision = t.precision if t.precision != "auto" else ("bf16" if cuda and native_bf16 else "fp32")
        compiled = cuda if t.compile is None else t.compile
        channels_last = CHANNELS_LAST[device.type] and (compiled or not cuda)  # eager CUDA: see CHANNELS_LAST
        return cls(
            device,
            torch.bfloat16 if precision == "bf16" else None,
            compiled,
            channels_last if t.channels_last is None else t.channels_last,
            cuda if cfg.data.pin_memory is None else cfg.data.pin_memory,
            fused=cuda,
        )

    def __str__(self) -> str:
        return ", ".join(
            [
                str(self.autocast).removeprefix("torch.") if self.autocast else "fp32",
                "channels-last" if self.channels_last else "contiguous",
                "compiled" if self.compile else "eager",
            ]
        )


# Measured with benchmarks/bench_train.py (its "channels-last" row): see docs/speed.md. The CUDA entry is
# PyTorch's advice for convolutions under bf16 autocast, not yet measured here (no GPU was lent), and holds only for a
# compiled model: eager CUDA GroupNorm returns a contiguous tensor whatever its input (pytorch/pytorch#111824), so an
# eager channels-last U-Net would convert layouts at every block; inductor lowers GroupNorm itself and keeps the layout.
CHANNELS_LAST = {"cpu": True, "cuda": True}


def configure_backends(fast: FastPath) -> None:
    """PyTorch's process-wide settings for a training run on CUDA: cuDNN benchmarks its convolution algorithms once per
    shape (every batch has the same shapes) and float32 matmuls may use TF32 (fp32 runs; bf16 autocast is
    unaffected)."""
    if fast.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def skip_if(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """Make the next optimizer.step() a no-op on the device when `bad` (a 0-d bool tensor) is true, with no host sync:
    fused Adam reads `found_inf` (the hook torch.amp.GradScaler uses) and then leaves the weights, the moments and the
    step counts as they were."""
    optimizer.found_inf = bad.float()


def prepare_model(model: nn.Module, fast: FastPath, ranks: Ranks = Ranks(), ddp: bool | None = None) -> nn.Module:
    """Put `model` in the memory format of `fast`; returns what the training step calls: the model itself or its
    torch.compile'd wrapper (which shares its parameters; checkpoints save the model itself). Wrapped in DDP under
    torchrun, or when `ddp` says so (benchmarks/bench_train.py's one-process DDP row).

    Channels-last weights only on CUDA (cuDNN's NHWC kernels want both weights and inputs so). On the CPU,
    channels-last inputs alone give oneDNN's gain (measured: +5%, the same as both), and contiguous weights
    keep validation bit-identical to a model rebuilt from the checkpoint.
    """
    if fast.channels_last and fast.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = model
    if ddp if ddp is not None else ranks.world > 1:  # averages the gradients over the processes during backward
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[fast.device.index] if fast.device.type == "cuda" else None
        )
    # dynamic=False: every batch has the same shapes; a shape that changes is a new graph, never a slower dynamic one.
    return torch.compile(forward, dynamic=False) if fast.compile else forward


class FiniteGuard:
    """Training's promise for a non-finite loss or gradient: the run stops with the step named, and no non-finite
    step reaches the weights.

    Checked at every step (`deferred` false: the CPU, where reading a value costs nothing), the loop raises before the
    optimizer steps. Deferred (fused Adam, on CUDA), reading the values would wait for the GPU at every step, so the
    check stays on the device: once a step is not finite, that step and every later one are made no-ops (`skip_if`),
    and the loop raises when it next reads its metrics (at its logging steps) with the weights as they were before it.
    """

    def __init__(self, deferred: bool, device: torch.device) -> None:
        self.deferred, self.bad_at = (
            deferred,
            None if not deferred else torch.zeros((), dtype=torch.long, device=device),
        )
        self.now: tuple[torch.Tensor, int] | None = None

    def before_step(self, optimizer: torch.optim.Optimizer, finite: torch.Tensor, step: int) -> None:
        """Note the step about to be taken (1-based `step`, `finite` from train_step's metrics)."""
        if not self.deferred:
            self.now = (finite, step)
            return
        self.bad_at = torch.where((self.bad_at == 0) & ~finite, step, self.bad_at)  # the first bad step, 0 while none
        skip_if(optimizer, self.bad_at > 0)

    def first_bad(self) -> int | None:
        """The first step that was not finite, or None (reads from the device: a sync when deferred)."""
        if not self.deferred:
            finite, step = self.now
            return None if bool(finite) else step
        bad = int(self.bad_at.item())
        return bad or None
