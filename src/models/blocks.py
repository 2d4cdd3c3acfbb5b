"""Small reusable modules: a FiLM-conditioned residual block, a stack of them, and the resampling steps.

B batch, C channels, H/W pixels, D conditioning size
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def group_count(channels: int, max_groups: int = 8) -> int:
    """The largest divisor of `channels` that is at most `max_groups` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


class FiLM(nn.Module):
    """Per-channel scale and shift computed from a conditioning vector: x * (1 + scale) + shift (Perez et al. 2018)."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.proj(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x * (1 + scale) + shift


class ResBlock(nn.Module):
    """Two (GroupNorm -> FiLM -> SiLU -> 3x3 conv) steps plus a skip; FiLM stands in for GroupNorm's own affine."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels, affine=False)
        self.film1 = FiLM(cond_dim, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels, affine=False)
        self.film2 = FiLM(cond_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.film1(self.norm1(x), cond)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.film2(self.norm2(h), cond)))
        return self.skip(x) + h  # (B, C_out, H, W)


class ResStack(nn.Module):
    """`num_blocks` ResBlocks at one resolution, all conditioned on the same vector; the first sets the width."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, cond_dim: int) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.blocks = nn.ModuleList(ResBlock(c_in, c_out, cond_dim) for c_in, c_out in zip(widths, widths[1:]))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)  # (B, C_out, H, W)
        return x


class SelfAttention(nn.Module):
    """Single-head self-attention over the h*w positions of a feature map, residual, output projection
    zero-initialised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, h*w, C) each
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, h*w, C)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Strided 3x3 conv: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)), so odd sizes (21 -> 11) are fine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """1x1 conv to the new width, then nearest-neighbour resize to an exact size (the skip's, which may be odd).

    Mixing channels before resizing costs 4x less than after it; the next ResBlock does the spatial mixing.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.conv(x)  # (B, C_out, h, w)
        return F.interpolate(x, size=size, mode="nearest")  # (B, C_out, *size)
