"""The optimizer: AdamW or Adam over the frame model's and the event head's parameter groups, and its state carried
across a resume."""

from __future__ import annotations

import torch
from torch import nn

from src.config import Config, to_dict
from src.training.outputs import Console
from src.utils.errors import UserError


def make_optimizer(
    model: nn.Module, cfg: Config, device: torch.device | None = None, fused: bool | None = None
) -> torch.optim.Optimizer:
    """AdamW or Adam; fused kernels (one launch for all parameters) when `fused`, by default on CUDA. The frame model's
    parameters are the first group; the event head's (model.events), when there is one, a second, whose "lr_scale" is
    train.event_lr_scale (the loop sets each group's learning rate to optimizer.lr x its lr_scale x the schedule)."""
    o = cfg.optimizer
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[o.name]
    fused = {"fused": True} if (fused if fused is not None else device is not None and device.type == "cuda") else {}
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not n.startswith("events.")], "lr_scale": 1.0}]
    if any(n.startswith("events.") for n, _ in named):
        groups.append(
            {"params": [p for n, p in named if n.startswith("events.")], "lr_scale": cfg.train.event_lr_scale}
        )
    return cls(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **fused)


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Lay every per-parameter state tensor (Adam's moments) out in its parameter's memory layout, after a resume.

    A checkpoint's moments keep the strides of the run that saved them: contiguous from a CPU run, channels-last from a
    CUDA one. Fused Adam walks a parameter and its moments as flat memory, so where the layouts differ it pairs each
    weight with another weight's moments (measured on the CPU: silently wrong updates; CUDA's kernel refuses). Checking
    `is_contiguous()` would not do: a 1x1 convolution's weight is "contiguous" in both layouts, with other strides.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, cfg: Config, console: Console) -> None:
    """The checkpoint's optimizer state (Adam's moments, step counts) under the config's hyperparameters:
    load_state_dict would bring back the checkpoint's betas and weight decay, and an override of them on resume would
    be ignored."""
    wanted = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(
            f"the checkpoint's optimizer state does not fit the model ({' '.join(str(e).split())[:160]}); "
            "the checkpoint was altered or made by another version"
        ) from None
    match_layouts(
        optimizer
    )  # a checkpoint from another device or train.channels_last has its moments in another layout
    for group, hyper in zip(optimizer.param_groups, wanted):
        group.update(hyper)
    before = state["config"].get("optimizer", {})
    changed = [
        f"{k} {before.get(k)} -> {v}"
        for k, v in to_dict(cfg)["optimizer"].items()
        if k != "lr" and before.get(k, v) != v
    ]
    if changed:
        console.say(f"optimizer: {', '.join(changed)} (from the command line; Adam's moments are kept)")
