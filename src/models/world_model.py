"""The next-frame predictor and its variants, looked up by `model.name` in MODELS.

    model = build_model(cfg.model, num_actions=6)
    next_frame = model(frames, actions)   # (B, 4, 84, 84), (B,) -> (B, 1, 84, 84)

B batch, T context frames, C channels, H/W pixels (84), h/w one level's size, D action embedding size
"""

from __future__ import annotations

import difflib

import torch.nn.functional as F
from torch import Tensor, nn

from src.config import ConfigError, ModelConfig
from src.models.blocks import Downsample, ResStack, Upsample, group_count

PATCH = 2  # space-to-depth factor: 84x84 frames become 42x42 maps of 2x2-pixel patches, losslessly


class ActionEmbedding(nn.Module):
    """A learned vector per action, passed through a small MLP: (B,) int64 -> (B, D)."""

    def __init__(self, num_actions: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_actions, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, actions: Tensor) -> Tensor:
        return self.mlp(self.table(actions))  # (B, D)


class EncoderLevel(nn.Module):
    """Halve the resolution (except at the finest level), then a stack of FiLM-conditioned blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, cond_dim: int, downsample: bool) -> None:
        super().__init__()
        self.down = Downsample(in_channels) if downsample else nn.Identity()
        self.blocks = ResStack(in_channels, out_channels, num_blocks, cond_dim)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.down(x)  # (B, C_in, ceil(h/2), ceil(w/2)), or unchanged at the finest level
        return self.blocks(x, cond)  # (B, C_out, ., .)


class DecoderLevel(nn.Module):
    """Upsample to the skip's size and add the skip, then a stack of FiLM-conditioned blocks.

    Adding rather than concatenating keeps the first conv of each level half as wide, which matters on a CPU.
    """

    def __init__(self, in_channels: int, skip_channels: int, num_blocks: int, cond_dim: int) -> None:
        super().__init__()
        self.up = Upsample(in_channels, skip_channels)
        self.blocks = ResStack(skip_channels, skip_channels, num_blocks, cond_dim)

    def forward(self, x: Tensor, skip: Tensor, cond: Tensor) -> Tensor:
        x = self.up(x, skip.shape[-2:]) + skip  # (B, C_skip, h_skip, w_skip)
        return self.blocks(x, cond)


class UNetFiLM(nn.Module):
    """A U-Net over the stacked context frames, every level FiLM-conditioned on the action; predicts a residual.

    The frames are first folded into 2x2-pixel patches (space-to-depth) and the output unfolded again, so with
    channels [32, 64, 128] the levels run at 42, 21 and 11 pixels. A first level at the full 84x84 trained ~7x
    slower on a 2-core CPU (16 vs ~100 samples/s). Odd sizes round up going down (21 -> 11) and are resized back
    to the skip's exact size going up. The coarsest encoder level is the bottleneck: the decoder has one level less.
    """

    def __init__(self, cfg: ModelConfig, num_actions: int, context_frames: int = 4) -> None:
        super().__init__()
        widths, n, d = list(cfg.channels), cfg.blocks_per_level, cfg.action_embed_dim
        self.context_frames = context_frames
        self.action_embedding = ActionEmbedding(num_actions, d)
        self.stem = nn.Conv2d(context_frames * PATCH**2, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            EncoderLevel(widths[max(i - 1, 0)], widths[i], n, d, downsample=i > 0) for i in range(len(widths))
        )
        self.decoder = nn.ModuleList(
            DecoderLevel(widths[i + 1], widths[i], n, d) for i in reversed(range(len(widths) - 1))
        )
        self.head_norm = nn.GroupNorm(group_count(widths[0]), widths[0])
        self.head = nn.Conv2d(widths[0], PATCH**2, 3, padding=1)
        # Zero weights make delta 0 at initialisation (copy the last frame). The head still gets gradients, since
        # its input is not zero, and the layers before it do from the second step on.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, frames: Tensor, actions: Tensor) -> Tensor:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64.

        Returns the next frame (B, 1, H, W) as frames[:, -1:] + delta, not clamped: the loss sees the raw value.
        """
        assert frames.dim() == 4 and frames.size(1) == self.context_frames, frames.shape
        cond = self.action_embedding(actions)  # (B, D)
        x = F.pixel_unshuffle(frames, PATCH)  # (B, T * 4, H/2, W/2)
        x = self.stem(x)  # (B, C_0, H/2, W/2)
        skips = []
        for level in self.encoder:
            x = level(x, cond)  # (B, C_i, H / 2^(i+1), W / 2^(i+1)), rounded up
            skips.append(x)
        for level, skip in zip(self.decoder, reversed(skips[:-1])):
            x = level(x, skip, cond)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
        delta = self.head(F.silu(self.head_norm(x)))  # (B, 4, H/2, W/2)
        delta = F.pixel_shuffle(delta, PATCH)  # (B, 1, H, W)
        return frames[:, -1:] + delta  # (B, 1, H, W)


MODELS: dict[str, type[nn.Module]] = {
    "unet_film": UNetFiLM,
}


def build_model(cfg: ModelConfig, num_actions: int, context_frames: int = 4) -> nn.Module:
    """The model named by `cfg.name`; an unknown name raises ConfigError with a did-you-mean."""
    if cfg.name not in MODELS:
        close = difflib.get_close_matches(cfg.name, list(MODELS), n=1, cutoff=0.0)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"model.name '{cfg.name}' is not a model.{hint} (known: {', '.join(MODELS)})")
    return MODELS[cfg.name](cfg, num_actions, context_frames)
