"""torchrun support: which process this is, and the few collective steps that training needs.

Without torchrun (WORLD_SIZE unset or 1) the process is rank 0 of 1 and every function here returns its input.
Under `torchrun --nproc_per_node=N -m src.train ...` each process trains on its slice of every global batch;
DistributedDataParallel averages the gradients, so N processes of train.batch_size B step like one of N x B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0  # this process among all of them
    world: int = 1  # how many processes train together
    local: int = 0  # this process among those of its machine: its GPU

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder, W&B and checkpoints, and prints."""
        return self.rank == 0


def start(cpu: bool) -> Ranks:
    """Join the process group that torchrun set up (NCCL on GPUs, gloo on CPUs), or be rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    cuda = torch.cuda.is_available() and not cpu
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if cuda:
        torch.cuda.set_device(ranks.local)
    return ranks


def stop(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def mean(values: dict[str, float], ranks: Ranks) -> dict[str, float]:
    """The average of each value over all processes (each sees an equal share of the global batch)."""
    return {k: v / ranks.world for k, v in zip(values, total(list(values.values()), ranks))}


def total(values: list[float], ranks: Ranks) -> list[float]:
    """Each value summed over all processes."""
    if ranks.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def latest(value: float, ranks: Ranks) -> float:
    """The largest of the processes' `value`s (the clock): one all-reduce of one number, no pickling."""
    if ranks.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value` on every process (a picklable object: a path, the clock)."""
    if ranks.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def _device() -> torch.device:
    """Where collectives put their tensors: NCCL needs the GPU, gloo the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
