"""The next-frame predictor and its variants, looked up by `model.name` in MODELS: the entry to the models.

    model = build_model(cfg.model, num_actions=6)
    next_frame = model(frames, actions)   # (B, 4, 84, 84), (B,) -> (B, 1, 84, 84)
    reward_logits, end_logits = model.events(frames, next_frame, actions)   # (B, 3), (B,): src/models/events.py

Every variant has the same constructor (cfg, num_actions, context_frames, frame_size) and the same call,

    model(frames, actions, noise_level=None, logits=False)

    noise_level  (B,) the level of the noise on the input frames, told to the model (None: clean frames, as at test
                 time). The U-Nets built with model.context_noise: training's corruption of every context frame. edm:
                 the σ of a noisy next frame given as one more, last input frame; the call then returns the
                 denoiser's raw output F for training's denoising loss, not a sampled frame.
    logits       also return what training's loss needs beside the frame: model.output=palette, the logits over
                 the palette (B, K, H, W); model.output=warp, the flow (B, 2, H, W).

so that rollouts (src/models/rollout.py) call every variant alike. A variant that cannot use one of them raises
ValueError when given it, rather than ignore it: oh2015 takes neither, edm no logits, a U-Net a level only with
model.context_noise and logits only with model.output=palette or warp.

Every variant predicts the next frame as the last input frame plus a residual whose last layer starts at zero, so that
an untrained model copies the last frame (the strongest simple baseline on Atari).

    unet_film     U-Net over 2x2-pixel patches, FiLM action conditioning in every block (the default): unet.py
    unet_diamond  the U-Net of DIAMOND (Alonso et al. 2024): a skip from every block, attention in the middle: unet.py
    oh2015        the action-conditional transformation of Oh et al. 2015: conv encoder, fully connected code
                  multiplied by an action embedding, deconvolution decoder: oh2015.py
    edm           a diffusion model (EDM, as DIAMOND): the unet_film U-Net as a denoiser; a call samples the next
                  frame in model.diffusion.steps steps: edm.py (the mathematics in diffusion.py)

Their settings are ModelConfig (model_config.py, imported from here by the rest of the code).

B batch, T context frames, H/W pixels (84), K palette levels
"""

from __future__ import annotations

import difflib

from torch import nn

from src.models.diffusion import check_diffusion_config
from src.models.edm import EDM
from src.models.events import EventHead
from src.models.model_config import ModelConfig
from src.models.oh2015 import ActionConditionalTransformation
from src.models.rollout import FEEDBACK
from src.models.unet import UNetDiamond, UNetFiLM
from src.utils.errors import ConfigError

__all__ = ["MODELS", "ModelConfig", "build_model", "check_model_config", "check_model_name"]

MODELS: dict[str, type[nn.Module]] = {
    "unet_film": UNetFiLM,
    "unet_diamond": UNetDiamond,
    "oh2015": ActionConditionalTransformation,
    "edm": EDM,
}


# Upper bounds of the sizes: far above any model that trains here, far below one whose weights would not fit in memory
# (a checkpoint's config is checked too, and a size of 10**13 must be refused, not allocated).
MAX_WIDTH, MAX_LEVELS, MAX_BLOCKS = 4096, 8, 16


def check_model_config(m: ModelConfig) -> None:
    """Raise ConfigError naming the first `model.` setting that is out of range; the same checks for config.yaml,
    the command line and a checkpoint's saved config."""
    ints = lambda values: all(isinstance(v, int) and not isinstance(v, bool) for v in values)  # noqa: E731
    checks = [
        (
            ints(m.channels) and 1 <= len(m.channels) <= MAX_LEVELS and all(1 <= c <= MAX_WIDTH for c in m.channels),
            "model.channels",
            f"must be 1 to {MAX_LEVELS} widths in [1, {MAX_WIDTH}], got {m.channels}",
        ),
        (
            1 <= m.blocks_per_level <= MAX_BLOCKS,
            "model.blocks_per_level",
            f"must be in [1, {MAX_BLOCKS}], got {m.blocks_per_level}",
        ),
        (
            1 <= m.action_embed_dim <= MAX_WIDTH,
            "model.action_embed_dim",
            f"must be in [1, {MAX_WIDTH}], got {m.action_embed_dim}",
        ),
        (
            1 <= m.hidden_dim <= 16 * MAX_WIDTH,
            "model.hidden_dim",
            f"must be in [1, {16 * MAX_WIDTH}], got {m.hidden_dim}",
        ),
        (0 <= m.context_noise <= 1, "model.context_noise", f"must be in [0, 1], got {m.context_noise}"),
        (
            m.feedback in FEEDBACK,
            "model.feedback",
            f"must be {', '.join(FEEDBACK[:-1])} or {FEEDBACK[-1]}, got {m.feedback!r}",
        ),
        (
            m.output in ("residual", "palette", "warp"),
            "model.output",
            f"must be residual, palette or warp, got {m.output!r}",
        ),
        (2 <= m.palette_size <= 256, "model.palette_size", f"must be in [2, 256], got {m.palette_size}"),
        (
            m.palette is None
            or (
                2 <= len(m.palette) <= 256
                and ints(m.palette)
                and all(0 <= v <= 255 for v in m.palette)
                and list(m.palette) == sorted(set(m.palette))
            ),
            "model.palette",
            f"must be null or at least two increasing grey levels in [0, 255], got {m.palette}",
        ),
        (
            m.name != "edm" or m.output == "residual",
            "model.output",
            f"must be residual with model.name=edm (the denoiser's output is its own), got {m.output!r}",
        ),
        (
            m.name != "edm" or m.context_noise == 0,
            "model.context_noise",
            f"must be 0 with model.name=edm (its noise level is the diffusion's), got {m.context_noise}",
        ),
        *check_diffusion_config(m.diffusion),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key} {problem}")
    check_model_name(m.name)


def check_model_name(name: str) -> None:
    """Raise ConfigError, with a did-you-mean, unless `name` is a key of MODELS."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.0)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"model.name '{name}' is not a model.{hint} (known: {', '.join(MODELS)})")


def build_model(cfg: ModelConfig, num_actions: int, context_frames: int = 4, frame_size: int = 84) -> nn.Module:
    """The model named by `cfg.name`, with its event head as `model.events` (None when cfg.events is false); an
    unknown name raises ConfigError with a did-you-mean."""
    check_model_name(cfg.name)
    model = MODELS[cfg.name](cfg, num_actions, context_frames, frame_size)
    model.events = EventHead(num_actions, context_frames, frame_size) if cfg.events else None
    return model
