"""The next-frame predictor and its variants, looked up by `model.name` in MODELS.

    model = build_model(cfg.model, num_actions=6)
    next_frame = model(frames, actions)   # (B, 4, 84, 84), (B,) -> (B, 1, 84, 84)
    reward_logits, end_logits = model.events(frames, next_frame, actions)   # (B, 3), (B,): src/models/events.py

Every variant has the same constructor (cfg, num_actions, context_frames, frame_size) and the same forward, and
predicts the next frame as the last input frame plus a residual whose last layer starts at zero, so that an
untrained model copies the last frame (the strongest simple baseline on Atari).

    unet_film     U-Net over 2x2-pixel patches, FiLM action conditioning in every block (the default)
    unet_diamond  the U-Net of DIAMOND (Alonso et al. 2024): a skip from every block, attention in the middle
    oh2015        the action-conditional transformation of Oh et al. 2015: conv encoder, fully connected code
                  multiplied by an action embedding, deconvolution decoder
    edm           a diffusion model (EDM, as DIAMOND): the unet_film U-Net as a denoiser; a call samples the next
                  frame in model.diffusion.steps steps (src/models/diffusion.py)

B batch, T context frames, C channels, H/W pixels (84), h/w one level's size, D action embedding size
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.blocks import Downsample, ResBlock, ResStack, SelfAttention, Upsample, group_count
from src.models.diffusion import (
    DenoiserHead,
    DiffusionConfig,
    Preconditioning,
    SigmaEmbedding,
    anchor,
    check_diffusion_config,
    karras_sigmas,
    sample_frames,
)
from src.models.events import EventHead
from src.models.rollout import DEFAULT_FEEDBACK, FEEDBACK, nearest_level
from src.utils.errors import ConfigError


@dataclass
class ModelConfig:
    """The config's `model` section: which variant (a key of MODELS) and its sizes. A new variant's setting goes here."""

    name: str = "unet_film"  # a key of MODELS
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # per resolution level, finest first
    blocks_per_level: int = 1  # residual blocks at each level of the encoder and the decoder
    action_embed_dim: int = 64  # size of the learned action embedding that conditions every level
    hidden_dim: int = 1024  # oh2015 only: width of the fully connected code and of the action-multiplied factors
    feedback: str = DEFAULT_FEEDBACK  # how a prediction re-enters the context in rollouts: palette, uint8 or float
    palette_size: int = 16  # palette feedback: how many grey levels the palette has
    palette: list[int] | None = None  # palette feedback or output: its grey levels (0-255, increasing); null: training
    # fills in the palette_size commonest levels of the training frames, and checkpoints keep them
    output: str = "residual"  # U-Nets: residual (the last frame plus a regressed change) or palette (per pixel, a
    # classification over the palette's levels; the prediction is the most likely level, as SimPLe's 256-way softmax)
    context_noise: float = 0.0  # U-Nets: in training, Gaussian noise of a level drawn in [0, this] on the context
    # frames, the level given to the model beside the action (0: off; at test time the level is 0)
    events: bool = True  # also predict each step's reward sign and whether the episode ends (model.events, a small
    # network of its own beside every variant: src/models/events.py); false: frames only, as checkpoints from before it
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # edm only: noise levels and sampler


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
    clean context, unless given). (B,) -> (B, D)."""
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
        assert not logits, "a residual head has no logits; model.output=palette has"
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


def output_head(cfg: ModelConfig, channels: int) -> nn.Module:
    """The U-Nets' last layer as model.output says: ResidualHead or PaletteHead."""
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
    ) -> Tensor:
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
    ) -> Tensor:
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


OH2015_KERNELS = (8, 6, 6, 4)  # the paper's filter sizes, all stride 2; levels past the fourth use 4


class ActionConditionalTransformation(nn.Module):
    """Oh et al. 2015, "Action-Conditional Video Prediction using Deep Networks in Atari Games", feedforward model.

    Encoder: stride-2 convolutions (model.channels), then a fully connected code h (model.hidden_dim). Transformation:
    h' = W_dec((W_enc h) * (W_a a)) + b, the multiplicative interaction of the code with the action's factors.
    Decoder: fully connected, then transposed convolutions back to the frame. ReLU throughout, as in the paper.
    Two changes: grayscale 84x84 input instead of RGB 210x160, and a residual output like the other variants
    (the paper predicts the frame minus the mean frame).
    """

    def __init__(self, cfg: ModelConfig, num_actions: int, context_frames: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        if cfg.context_noise > 0:
            raise ConfigError(
                "model.context_noise: oh2015 has no path to tell it the noise level; use unet_film or unet_diamond"
            )
        if cfg.output != "residual":
            raise ConfigError(
                "model.output: oh2015 predicts a residual only; use unet_film or unet_diamond for palette output"
            )
        widths, hidden = list(cfg.channels), cfg.hidden_dim
        kernels = [OH2015_KERNELS[min(i, len(OH2015_KERNELS) - 1)] for i in range(len(widths))]
        self.context_frames = context_frames
        self.encoder = nn.ModuleList(
            nn.Conv2d(c_in, c_out, k, stride=2, padding=(k - 2) // 2)
            for c_in, c_out, k in zip([context_frames, *widths], widths, kernels)
        )
        self.sizes = [frame_size]  # the resolution at each level, to undo the rounding on the way up
        for k in kernels:
            self.sizes.append((self.sizes[-1] + 2 * ((k - 2) // 2) - k) // 2 + 1)
        self.code_shape = (widths[-1], self.sizes[-1], self.sizes[-1])
        flat = widths[-1] * self.sizes[-1] ** 2
        self.encode = nn.Linear(flat, hidden)
        self.state_factors = nn.Linear(hidden, hidden, bias=False)  # W_enc
        self.action_factors = nn.Embedding(num_actions, hidden)  # W_a a for a one-hot action a
        self.combine = nn.Linear(hidden, hidden)  # W_dec and b
        self.decode = nn.Linear(hidden, flat)
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=(k - 2) // 2)
            for c_in, c_out, k in zip(reversed(widths), [*reversed(widths[:-1]), 1], reversed(kernels))
        )
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None) -> Tensor:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64 -> (B, 1, H, W), not clamped.
        (noise_level: always None here, since this model cannot be built with model.context_noise.)"""
        assert frames.dim() == 4 and frames.size(1) == self.context_frames, frames.shape
        x = frames
        for conv in self.encoder:
            x = F.relu(conv(x))  # (B, C_i, h_i, w_i)
        h = F.relu(self.encode(x.flatten(1)))  # (B, hidden)
        h = self.combine(self.state_factors(h) * self.action_factors(actions))  # (B, hidden)
        x = F.relu(self.decode(h)).view(-1, *self.code_shape)  # (B, C_last, h, w)
        for i, deconv in enumerate(self.decoder):
            size = self.sizes[-2 - i]
            x = deconv(x, output_size=(size, size))  # (B, C, h_i, w_i), odd sizes restored exactly
            if i < len(self.decoder) - 1:
                x = F.relu(x)
        return frames[:, -1:] + x  # (B, 1, H, W)


class EDM(nn.Module):
    """The diffusion world model (model.name=edm): EDM's preconditioned denoiser around the unet_film U-Net, and its
    sampler. Same constructor and call as the deterministic variants; `stochastic` tells evaluation to draw several
    samples per start."""

    stochastic = True

    def __init__(self, cfg: ModelConfig, num_actions: int, context_frames: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        if cfg.diffusion.sigma_data is None:
            raise ConfigError("model.diffusion.sigma_data is null: give it, or let training measure it on the data")
        self.context_frames = context_frames
        self.diffusion: DiffusionConfig = replace(cfg.diffusion)  # its own: src.eval --sampling_steps changes its steps
        backbone = replace(cfg, context_noise=0.0, output="residual")
        self.net = UNetFiLM(
            backbone,
            num_actions,
            context_frames + 1,
            frame_size,
            noise_embedding=SigmaEmbedding(cfg.action_embed_dim),
            head=DenoiserHead(cfg.channels[0], PATCH),
        )
        self.sampling_seed = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    def seed_sampling(self, seed: int) -> None:
        """Sampling from here on draws its noise from a generator seeded with `seed` (one per device)."""
        self.sampling_seed, self._generators = int(seed), {}

    def _noise(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Unit Gaussian noise (float32) from this device's generator."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device).manual_seed(self.sampling_seed)
        return torch.randn(shape, generator=generator, device=device)

    def raw(self, frames: Tensor, actions: Tensor, noisy: Tensor, sigma: Tensor) -> Tensor:
        """The network's output F. frames: (B, T, H, W) in [0, 1]; noisy: (B, 1, H, W) in [-1, 1] space, plus noise
        of level sigma (B,)."""
        c = Preconditioning.at(sigma.float(), self.diffusion.sigma_data)
        context = (2 * frames - 1) / self.diffusion.sigma_data  # (B, T, H, W), unit scale as c_in gives the noisy frame
        inputs = torch.cat([context, (c.c_in * noisy).to(context.dtype)], dim=1)  # (B, T + 1, H, W)
        return self.net(inputs, actions, noise_level=c.c_noise)

    def denoise(self, frames: Tensor, actions: Tensor, noisy: Tensor, sigma: Tensor) -> Tensor:
        """D(noisy; σ): the estimate of the clean next frame in [-1, 1] space, (B, 1, H, W)."""
        c = Preconditioning.at(sigma.float(), self.diffusion.sigma_data)
        return c.c_skip * noisy + c.c_out * self.raw(frames, actions, noisy, sigma).float()

    def sample(self, frames: Tensor, actions: Tensor, steps: int | None = None) -> Tensor:
        """A sample of the next frame, (B, 1, H, W) in [0, 1] (not clamped), in `steps` (model.diffusion.steps) denoising steps."""
        d = self.diffusion
        sigmas = karras_sigmas(steps or d.steps, d.sigma_min, d.sigma_max, d.rho)
        noise = self._noise((len(frames), 1, *frames.shape[-2:]), frames.device)
        x = sample_frames(lambda x, sigma: self.denoise(frames, actions, x, sigma), noise, sigmas, d.sampler)
        return ((x + anchor(frames, d) + 1) / 2).to(frames.dtype)

    def forward(
        self, frames: Tensor, actions: Tensor, noisy: Tensor | None = None, sigma: Tensor | None = None
    ) -> Tensor:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64. Without `noisy`, a sampled next
        frame (B, 1, H, W) in [0, 1]; with `noisy` (B, 1, H, W) and `sigma` (B,), training's call: the raw output F."""
        assert frames.dim() == 4 and frames.size(1) == self.context_frames, frames.shape
        if noisy is None:
            return self.sample(frames, actions)
        return self.raw(frames, actions, noisy, sigma)


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
        (m.output in ("residual", "palette"), "model.output", f"must be residual or palette, got {m.output!r}"),
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
