"""A diffusion world model (EDM, Karras et al. 2022, as DIAMOND, Alonso et al. 2024): the next frame is sampled, not
regressed, so that where the future is uncertain a rollout shows one sharp future instead of the blur of all of them.

    model = build_model(cfg.model, num_actions=6)       # cfg.model.name = "edm"
    next_frame = model(frames, actions)                  # a sample, (B, 4, 84, 84), (B,) -> (B, 1, 84, 84)
    out = model(torch.cat([frames, x], 1), actions, noise_level=s)   # training: the raw output F (denoising_loss)

The denoiser D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ), context, action) is the unet_film U-Net over
the context frames with the noisy next frame as one more input frame; the noise level enters the FiLM conditioning
beside the action (the model around it: EDM in src/models/edm.py). Frames are in [-1, 1] inside; what is diffused is
the next frame's change from the last context frame (or the frame itself, as DIAMOND: model.diffusion.target), σ_data
its measured spread. A sample comes back in [0, 1], not clamped: rollouts clamp and round it as they do every fed-back
frame (rollout.Feedback).

Sampling is Euler (or Heun) over Karras et al.'s σ schedule from model.diffusion.sigma_max to sigma_min, then 0, in
model.diffusion.steps steps (3 by default, as DIAMOND), from noise drawn from the model's own generator: seeded with
`seed_sampling` (0 at construction), so that a rollout is reproducible and training's random streams are untouched.
Training's loss, `denoising_loss`, is with the other loss terms in src/training/objective.py.

B batch, T context frames, H/W pixels (84)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.blocks import group_count

SAMPLERS = ("euler", "heun")
TARGETS = ("residual", "frame")


@dataclass
class DiffusionConfig:
    """The config's `model.diffusion` section: EDM's noise levels and the sampler (model.name=edm only)."""

    target: str = "residual"  # what is diffused: residual (the next frame minus the last context frame: on Atari
    # mostly 0, so the model learns only what changes) or frame (the next frame itself, as DIAMOND)
    steps: int = 3  # denoising steps per sampled frame (DIAMOND: 3); src.eval --sampling_steps overrides it
    sampler: str = "euler"  # euler (one network call per step) or heun (two, but the last step's one)
    # Noise levels are DIAMOND's, in pixel units of the [-1, 1] space, whatever sigma_data is: what a sample must get
    # right (a paddle's move, a ball) has the size of pixels, not of the residual's global spread (~0.03 on Pong, mostly
    # zeros). Levels in units of sigma_data trained almost only where the change shows through the noise, and the model
    # learned to ignore the action (measured: docs/diffusion.md).
    sigma_min: float = 2e-3  # the sampler's last noise level before 0
    sigma_max: float = 5.0  # the sampler's first: the sample starts as Gaussian noise of this level
    rho: float = 7.0  # the schedule's curvature (Karras et al.'s ρ): higher spends more steps at low noise
    sigma_data: float | None = None  # the standard deviation (in [-1, 1] space) of what is diffused, that the
    # preconditioning assumes; null: training measures it on its training frames (checkpoints keep it)
    train_log_sigma_mean: float = -0.4  # training's noise levels: log σ ~ N(this, train_log_sigma_std²) (DIAMOND's)
    train_log_sigma_std: float = 1.2
    train_sigma_max: float = 20.0  # ... clipped to [sigma_min, this]


def check_diffusion_config(d: DiffusionConfig) -> list[tuple[bool, str, str]]:
    """The `model.diffusion.` checks, as check_model_config's (ok, key, problem) rows."""
    return [
        (d.target in TARGETS, "model.diffusion.target", f"must be {' or '.join(TARGETS)}, got {d.target!r}"),
        (1 <= d.steps <= 1000, "model.diffusion.steps", f"must be in [1, 1000], got {d.steps}"),
        (d.sampler in SAMPLERS, "model.diffusion.sampler", f"must be {' or '.join(SAMPLERS)}, got {d.sampler!r}"),
        (
            0 < d.sigma_min < d.sigma_max <= 1000,
            "model.diffusion.sigma_min",
            f"must be > 0 and below model.diffusion.sigma_max (at most 1000), got {d.sigma_min} and {d.sigma_max}",
        ),
        (0 < d.rho <= 100, "model.diffusion.rho", f"must be in (0, 100], got {d.rho}"),
        (
            d.sigma_data is None or 0 < d.sigma_data <= 10,
            "model.diffusion.sigma_data",
            f"must be in (0, 10] or null, got {d.sigma_data}",
        ),
        (
            -10 <= d.train_log_sigma_mean <= 10,
            "model.diffusion.train_log_sigma_mean",
            f"must be in [-10, 10], got {d.train_log_sigma_mean}",
        ),
        (
            0 <= d.train_log_sigma_std <= 10,
            "model.diffusion.train_log_sigma_std",
            f"must be in [0, 10], got {d.train_log_sigma_std}",
        ),
        (
            d.sigma_min < d.train_sigma_max <= 1000,
            "model.diffusion.train_sigma_max",
            f"must be above model.diffusion.sigma_min and at most 1000, got {d.train_sigma_max}",
        ),
    ]


@dataclass(frozen=True)
class Preconditioning:
    """EDM's scalings at noise level σ (Karras et al. 2022, table 1), each (B, 1, 1, 1) but c_noise (B,):

    c_in    = 1 / sqrt(σ² + σ_data²)          the network's input scaled to unit variance
    c_skip  = σ_data² / (σ² + σ_data²)        how much of the noisy input the denoiser keeps
    c_out   = σ σ_data / sqrt(σ² + σ_data²)   the scale of the network's output
    c_noise = log(σ) / 4                      how the network is told the level
    """

    c_in: Tensor
    c_skip: Tensor
    c_out: Tensor
    c_noise: Tensor

    @classmethod
    def at(cls, sigma: Tensor, sigma_data: float) -> Preconditioning:
        """sigma: (B,) > 0."""
        s = sigma.view(-1, 1, 1, 1)
        total = s**2 + sigma_data**2
        return cls(total.rsqrt(), sigma_data**2 / total, s * sigma_data * total.rsqrt(), sigma.log() / 4)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """The sampler's noise levels: `steps` levels from sigma_max down to sigma_min, evenly spaced in σ^(1/ρ), then 0.
    (steps + 1,) float64; one step samples at sigma_max alone."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (high + ramp * (low - high)) ** rho if steps > 1 else torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def sample_frames(denoise, noise: Tensor, sigmas: Tensor, sampler: str = "euler") -> Tensor:  # noqa: ANN001 (a callable)
    """EDM's deterministic sampler (Karras et al. 2022, algorithm 1, no churn): from `noise` (unit Gaussian) scaled to
    sigmas[0], Euler steps along dx/dσ = (x - D(x; σ)) / σ down the levels (Heun: corrected by a second call, but at
    the last step, to 0). denoise(x, sigma (B,)) -> D; returns the last x: D's estimate at the lowest level."""
    x = noise * sigmas[0].item()
    for sigma, next_sigma in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        level = torch.full((len(x),), sigma, device=x.device, dtype=x.dtype)
        slope = (x - denoise(x, level)) / sigma
        step = x + slope * (next_sigma - sigma)
        if sampler == "heun" and next_sigma > 0:
            next_level = torch.full((len(x),), next_sigma, device=x.device, dtype=x.dtype)
            slope = (slope + (step - denoise(step, next_level)) / next_sigma) / 2
            step = x + slope * (next_sigma - sigma)
        x = step
    return x


class SigmaEmbedding(nn.Module):
    """c_noise (B,) -> (B, D): random Fourier features (fixed frequencies, as DIAMOND's) through a small MLP; added to
    the action's embedding, so the noise level conditions every block as the action does."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(1, max(dim // 2, 1)))
        self.mlp = nn.Sequential(nn.Linear(2 * max(dim // 2, 1), dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = 2 * math.pi * c_noise.unsqueeze(1).float() @ self.frequencies  # (B, D/2)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1).to(self.mlp[0].weight.dtype))


class DenoiserHead(nn.Module):
    """Features over 2x2-pixel patches -> the network's raw output F (B, 1, H, W): GroupNorm, SiLU, a 3x3 conv to each
    patch's 4 pixels, unfolded. Zero at initialisation (DIAMOND's conv_out), so the first denoiser is c_skip x."""

    def __init__(self, channels: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.conv = nn.Conv2d(channels, patch**2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, last_frame: Tensor, logits: bool = False) -> Tensor:
        """x: (B, C, H/2, W/2) -> (B, 1, H, W); last_frame unused (the U-Net's head interface)."""
        return F.pixel_shuffle(self.conv(F.silu(self.norm(x))), self.patch)


def anchor(frames: Tensor, d: DiffusionConfig) -> Tensor | float:
    """What the diffused variable is relative to, in [-1, 1] space: the last context frame (B, 1, H, W) for the
    residual target, 0 for the frame target. frames: (B, T, H, W) in [0, 1]."""
    return 2 * frames[:, -1:].float() - 1 if d.target == "residual" else 0.0


def seed_sampling(model: nn.Module, seed: int) -> None:
    """Seed a stochastic model's sampling (model.seed_sampling); nothing for a deterministic one."""
    if getattr(model, "stochastic", False):
        model.seed_sampling(seed)


def is_stochastic(model: nn.Module) -> bool:
    return bool(getattr(model, "stochastic", False))
