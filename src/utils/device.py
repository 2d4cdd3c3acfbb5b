"""Which device a command computes on: the one place that decides it; constants kept on a device."""

from __future__ import annotations

import functools

import torch

from src.utils.errors import UserError

DEVICE_TYPES = ("cpu", "cuda", "mps")  # what a --device may name; the models run on nothing else


def choose_device(requested: str | None = None, cpu: bool = False, local_rank: int = 0) -> torch.device:
    """`requested` (cpu, cuda, cuda:1 ...) if given, checked against this machine; else this process's GPU when CUDA
    is available and `cpu` is false (under torchrun, GPU `local_rank`), else the CPU."""
    if requested:
        return checked_device(requested)
    if not torch.cuda.is_available() or cpu:
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():  # torchrun --nproc_per_node above the GPUs of this machine
        raise UserError(
            f"this is process {local_rank} of this machine (torchrun LOCAL_RANK), but it has "
            f"{torch.cuda.device_count()} CUDA device(s); start at most that many processes per machine "
            "(torchrun --nproc_per_node), or train.cpu=true"
        )
    return torch.device("cuda", local_rank)


def checked_device(requested: str) -> torch.device:
    """torch.device(requested), or one line (UserError) when it is no device or not on this machine: called before
    any output folder is made, so that a wrong --device never fails after the work (or a folder) has begun."""
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise UserError(f"--device {requested}: not a device; use cpu, cuda, cuda:N (the N-th GPU) or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(
                f"--device {requested}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                f"(cuda:0 to cuda:{count - 1}); use one of them or --device cpu"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {requested}: MPS (Apple GPU) is not available on this machine; use --device cpu")
    return device


@functools.lru_cache(maxsize=64)
def constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`values` as a tensor on `device`, made once per (values, device, dtype) and shared. Building a tensor from host
    data on a GPU is a blocking copy: PyTorch waits for the GPU to finish all queued work first, so a constant made
    inside a training step (palette levels, class weights) is a hidden sync at every step. Read-only: never write
    into it."""
    return torch.tensor(values, dtype=dtype).to(device)
