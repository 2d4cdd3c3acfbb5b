"""The U-Net variants, unet_film and unet_diamond, with their action and noise-level embeddings and their output
heads; edm's denoiser (src/models/edm.py) is unet_film with an embedding and a head of its own.

Both run over 2x2-pixel patches (space-to-depth) and take the shared call, model(frames, actions, noise_level, logits)
(src/models/world_model.py): noise_level only when built with model.context_noise, logits only with
model.output=palette or warp; given either without, they raise ValueError rather than ignore it.

B batch, T context frames, C channels, H/W pixels (84), h/w one level's size, D action embedding size, K palette levels
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.blocks import Downsample, ResBlock, ResStack, SelfAttention, Upsample, group_count
from src.models.model_config import ModelConfig
from src.models.rollout import nearest_level
from src.utils.errors import ConfigError

PATCH = 2  # space-to-depth factor: 84x84 frames become 42x42 maps of 2x2-pixel patches, losslessly


class ActionEmbedding(nn.Module):
    """A learned vector per action, passed through a small MLP: (B,) int64 -> (B, D)."""

    def __init__(self, num_actions: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_actions, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, actions: Tensor) -> Tensor:
        return self.mlp(self.table(actions))  # (B, D)


class NoiseLevelEmbedding(nn.Module):
    """The level of the noise on the context frames, (B,) float in [0, max_level] -> (B, D), added to the action's
    embedding: the model is told how much of its input to distrust (GameNGen, DIAMOND's CS:GO model)."""

    def __init__(self, dim: int, max_level: float) -> None:
        super().__init__()
        self.max_level = max_level
        self.mlp = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, levels: Tensor) -> Tensor:
        return self.mlp((levels / self.max_level).unsqueeze(1))  # (B, D)


def condition(
    actions: Tensor, action_embedding: nn.Module, noise_embedding: nn.Module | None, noise_level: Tensor | None
) -> Tensor:
    """What conditions every block: the action's embedding, plus the noise level's when the model has one (level 0,
    clean context, unless given). (B,) -> (B, D). A level given to a model without an embedding for it is refused,
    not ignored: such a model was trained on clean frames only."""
    if noise_embedding is None and noise_level is not None:
        raise ValueError(
            "noise_level given to a model built without model.context_noise: it has no way to be told the level"
        )
    cond = action_embedding(actions)
    if noise_embedding is not None:
        level = noise_level if noise_level is not None else torch.zeros(len(actions), device=actions.device)
        cond = cond + noise_embedding(level.to(cond.dtype))
    return cond


class ResidualHead(nn.Module):
    """Features over 2x2-pixel patches -> the next frame: GroupNorm, SiLU, a 3x3 conv to each patch's 4 pixel
    changes, unfolded to pixels and added to the last frame.

    Zero weights make the change 0 at initialisation (copy the last frame). The conv still gets gradients, since
    its input is not zero, and the layers before it do from the second step on.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.conv = nn.Conv2d(channels, PATCH**2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, last_frame: Tensor, logits: bool = False) -> Tensor:
        """x: (B, C, H/2, W/2); last_frame: (B, 1, H, W) -> (B, 1, H, W). (No logits: a regression.)"""
        if logits:
            raise ValueError("logits=True: a residual head (model.output=residual) has no logits; output=palette has")
        delta = self.conv(F.silu(self.norm(x)))  # (B, 4, H/2, W/2)
        return last_frame + F.pixel_shuffle(delta, PATCH)


class PaletteHead(nn.Module):
    """Features over 2x2-pixel patches -> per pixel, logits over the palette's K grey levels; the prediction is the
    most likely level, an exact grey level of the game (a static background cannot drift by small amounts).

    The level nearest to the last frame's pixel gets `stay` (a learned scalar, 5 at first) added to its logit and
    the conv starts at zero: an untrained model copies the last frame, as the residual head does.
    """

    RESTATES = {"levels": "palette"}  # a buffer that restates a value of the model's config: a checkpoint's must agree

    def __init__(self, channels: int, palette: list[int]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(palette, dtype=torch.float32) / 255)  # (K,)
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.conv = nn.Conv2d(channels, len(palette) * PATCH**2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.stay = nn.Parameter(torch.tensor(5.0))

    def forward(self, x: Tensor, last_frame: Tensor, logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, C, H/2, W/2); last_frame: (B, 1, H, W) -> the next frame (B, 1, H, W), the most likely levels; with
        logits=True, (that frame, the logits (B, K, H, W))."""
        scores = F.pixel_shuffle(self.conv(F.silu(self.norm(x))), PATCH)  # (B, K, H, W)
        scores = scores + self.stay * F.one_hot(nearest_level(last_frame[:, 0], self.levels), len(self.levels)).permute(
            0, 3, 1, 2
        ).to(scores.dtype)
        frame = self.levels[scores.argmax(1, keepdim=True)].to(last_frame.dtype)  # (B, 1, H, W)
        return (frame, scores) if logits else frame


class WarpHead(nn.Module):
    """Features over 2x2-pixel patches -> the next frame as the last frame moved by a predicted flow, plus a regressed
    change: each pixel copies the last frame from where the flow points (bilinear), then the change is added.

    A regression of intensities that is unsure where the ball goes draws a faint trail of balls; a regression of where
    to copy from draws one ball at the mean place (video prediction by advection: Finn et al. 2016). The flow is
    predicted per patch (in pixels) and upsampled to pixels, so an object moves as one piece. Zero weights make both
    the flow and the change 0 at initialisation (copy the last frame). With logits=True the call also returns the flow
    (B, 2, H, W) (x, y), for training's coarse-to-fine guide (objective.flow_guide_loss): a bilinear copy sees only
    its neighbouring pixels, so a 1-pixel ball 4 pixels away would give the flow no gradient.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.conv = nn.Conv2d(channels, PATCH**2 + 2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, last_frame: Tensor, logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, C, H/2, W/2); last_frame: (B, 1, H, W) -> (B, 1, H, W); with logits=True, (that, the flow)."""
        out = self.conv(F.silu(self.norm(x)))  # (B, 4 + 2, H/2, W/2)
        delta = F.pixel_shuffle(out[:, : PATCH**2], PATCH)  # (B, 1, H, W)
        flow = F.interpolate(out[:, PATCH**2 :], size=last_frame.shape[-2:], mode="bilinear")  # (B, 2, H, W) pixels
        frame = warp(last_frame, flow) + delta
        return (frame, flow) if logits else frame


def warp(frames: Tensor, flow: Tensor) -> Tensor:
    """frames (B, C, H, W) sampled bilinearly at each pixel plus its flow (B, 2, H, W), in pixels (x, y); outside
    the frame, the nearest border pixel."""
    h, w = frames.shape[-2:]
    ys = torch.arange(h, device=frames.device, dtype=flow.dtype)
    xs = torch.arange(w, device=frames.device, dtype=flow.dtype)
    x = (xs.view(1, 1, w) + flow[:, 0]) * (2 / w) + (1 / w - 1)  # (B, H, W) in grid_sample's [-1, 1]
    y = (ys.view(1, h, 1) + flow[:, 1]) * (2 / h) + (1 / h - 1)
    grid = torch.stack([x, y], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(frames, grid.to(frames.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def output_head(cfg: ModelConfig, channels: int) -> nn.Module:
    """The U-Nets' last layer as model.output says: ResidualHead, PaletteHead or WarpHead."""
    if cfg.output == "warp":
        return WarpHead(channels)
    if cfg.output == "palette":
        if not cfg.palette:
            raise ConfigError(
                "model.output=palette needs model.palette: the grey levels (training fills them in from the data)"
            )
        return PaletteHead(channels, cfg.palette)
    return ResidualHead(channels)


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

    def __init__(
        self,
        cfg: ModelConfig,
        num_actions: int,
        context_frames: int = 4,
        frame_size: int = 84,
        noise_embedding: nn.Module | None = None,
        head: nn.Module | None = None,
    ) -> None:
        """noise_embedding, head: a level embedding and a last layer other than the config's (edm's denoiser)."""
        super().__init__()
        widths, n, d = list(cfg.channels), cfg.blocks_per_level, cfg.action_embed_dim
        self.context_frames = context_frames
        self.action_embedding = ActionEmbedding(num_actions, d)
        self.noise_embedding = noise_embedding or (
            NoiseLevelEmbedding(d, cfg.context_noise) if cfg.context_noise > 0 else None
        )
        self.stem = nn.Conv2d(context_frames * PATCH**2, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            EncoderLevel(widths[max(i - 1, 0)], widths[i], n, d, downsample=i > 0) for i in range(len(widths))
        )
        self.decoder = nn.ModuleList(
            DecoderLevel(widths[i + 1], widths[i], n, d) for i in reversed(range(len(widths) - 1))
        )
        self.head = head or output_head(cfg, widths[0])

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64; noise_level: (B,) float, the
        level of the noise on `frames` (None: clean, as at test time).

        Returns the next frame (B, 1, H, W) as frames[:, -1:] + delta, not clamped: the loss sees the raw value;
        with model.output=palette, the most likely palette level of each pixel (and with logits=True, also the
        logits (B, K, H, W) that training's loss needs).
        """
        assert frames.dim() == 4 and frames.size(1) == self.context_frames, frames.shape
        cond = condition(actions, self.action_embedding, self.noise_embedding, noise_level)  # (B, D)
        x = F.pixel_unshuffle(frames, PATCH)  # (B, T * 4, H/2, W/2)
        x = self.stem(x)  # (B, C_0, H/2, W/2)
        skips = []
        for level in self.encoder:
            x = level(x, cond)  # (B, C_i, H / 2^(i+1), W / 2^(i+1)), rounded up
            skips.append(x)
        for level, skip in zip(self.decoder, reversed(skips[:-1])):
            x = level(x, skip, cond)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
        return self.head(x, frames[:, -1:], logits)  # (B, 1, H, W)


class UNetDiamond(nn.Module):
    """The U-Net of DIAMOND's denoiser (Alonso et al. 2024, models/diffusion/inner_model.py), as a one-step predictor.

    What differs from unet_film: every encoder block's output (and each level's input) is kept and concatenated
    into its own decoder block, so the decoder has one block more per level than the encoder; a middle stage of
    two blocks around self-attention runs at the coarsest level. Every GroupNorm is adaptive (FiLM on the action)
    as in DIAMOND. It runs over the same 2x2-pixel patches as unet_film; without them it is ~7x slower on a CPU.
    """

    def __init__(self, cfg: ModelConfig, num_actions: int, context_frames: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        widths, n, d = list(cfg.channels), cfg.blocks_per_level, cfg.action_embed_dim
        self.context_frames = context_frames
        self.action_embedding = ActionEmbedding(num_actions, d)
        self.noise_embedding = NoiseLevelEmbedding(d, cfg.context_noise) if cfg.context_noise > 0 else None
        self.stem = nn.Conv2d(context_frames * PATCH**2, widths[0], 3, padding=1)
        self.downsamples = nn.ModuleList(
            Downsample(widths[i - 1]) if i > 0 else nn.Identity() for i in range(len(widths))
        )
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            previous = widths[max(i - 1, 0)]
            self.down_blocks.append(nn.ModuleList(ResBlock(c, width, d) for c in [previous] + [width] * (n - 1)))
            # The n block outputs come back first (as width each), then the level's input (as `previous`).
            self.up_blocks.insert(
                0,
                nn.ModuleList(
                    ResBlock(width + skip, out, d)
                    for skip, out in zip([width] * n + [previous], [width] * n + [previous])
                ),
            )
        self.upsamples = nn.ModuleList(Upsample(widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.middle = nn.ModuleList([ResBlock(widths[-1], widths[-1], d), ResBlock(widths[-1], widths[-1], d)])
        self.attention = SelfAttention(widths[-1])
        self.head = output_head(cfg, widths[0])

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64; noise_level and logits as in
        UNetFiLM -> (B, 1, H, W), not clamped."""
        assert frames.dim() == 4 and frames.size(1) == self.context_frames, frames.shape
        cond = condition(actions, self.action_embedding, self.noise_embedding, noise_level)  # (B, D)
        x = self.stem(F.pixel_unshuffle(frames, PATCH))  # (B, C_0, H/2, W/2)
        skips = []
        for down, blocks in zip(self.downsamples, self.down_blocks):
            x = down(x)  # (B, C_{i-1}, h_i, w_i)
            skips.append(x)
            for block in blocks:
                x = block(x, cond)  # (B, C_i, h_i, w_i)
                skips.append(x)
        x = self.middle[1](self.attention(self.middle[0](x, cond)), cond)  # (B, C_last, h, w)
        for i, blocks in enumerate(self.up_blocks):
            if i > 0:
                x = self.upsamples[i - 1](x, skips[-1].shape[-2:])  # (B, C, h_i, w_i)
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), cond)
        return self.head(x, frames[:, -1:], logits)  # (B, 1, H, W)
