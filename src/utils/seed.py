"""One seed for Python, NumPy and torch (CPU and CUDA), and their states saved into and restored from a checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain containers, which torch.load(weights_only=True) reads back."""
    numpy = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            **numpy,
            "state": {"key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)), "pos": numpy["state"]["pos"]},
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        {**numpy, "state": {"key": numpy["state"]["key"].numpy().astype(np.uint32), "pos": numpy["state"]["pos"]}}
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_problem(state: Any) -> str | None:
    """What is wrong with a saved rng_state() (read from a checkpoint, which may have been altered), or None:
    set_rng_state must not fail deep inside Python's, NumPy's or torch's generators."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch", "cuda"} <= set(state):
        return "rng must be a mapping with python, numpy, torch and cuda states"
    python = state["python"]
    if not (
        isinstance(python, (tuple, list))
        and len(python) == 3
        and isinstance(python[1], (tuple, list))
        and len(python[1]) == 625
        and all(isinstance(v, int) and 0 <= v < 2**32 for v in python[1])
    ):
        return "rng.python is not a state of Python's generator"
    numpy = state["numpy"]
    key = (
        numpy.get("state", {}).get("key") if isinstance(numpy, dict) and isinstance(numpy.get("state"), dict) else None
    )
    if not (
        isinstance(key, torch.Tensor)
        and key.shape == (624,)
        and numpy.get("bit_generator") == "MT19937"
        and isinstance(numpy["state"].get("pos"), int)
        and 0 <= numpy["state"]["pos"] <= 624
        and numpy.get("has_gauss") in (0, 1)
        and isinstance(numpy.get("gauss"), float)
    ):
        return "rng.numpy is not a state of NumPy's MT19937 generator"
    if not (
        isinstance(state["torch"], torch.Tensor)
        and state["torch"].dtype == torch.uint8
        and state["torch"].shape == torch.get_rng_state().shape
    ):
        return "rng.torch is not a state of torch's CPU generator"
    if not (
        isinstance(state["cuda"], list)
        and all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in state["cuda"])
    ):
        return "rng.cuda is not a list of CUDA generator states"
    return None
