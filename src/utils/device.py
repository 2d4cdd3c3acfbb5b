"""Which device a command computes on: the one place that decides it."""

from __future__ import annotations

import torch


def choose_device(requested: str | None = None, cpu: bool = False, local_rank: int = 0) -> torch.device:
    """`requested` (cpu, cuda, cuda:1 ...) if given; else this process's GPU when CUDA is available and `cpu` is
    false (under torchrun, GPU `local_rank`), else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda", local_rank) if torch.cuda.is_available() and not cpu else torch.device("cpu")
