"""edm: the diffusion world model (EDM, Karras et al. 2022, as DIAMOND): EDM's preconditioned denoiser around the
unet_film U-Net, and its sampler. The mathematics (preconditioning, noise schedule, sampler, loss) is in
src/models/diffusion.py.

    next_frame = model(frames, actions)                                  # a sample: (B, T, H, W), (B,) -> (B, 1, H, W)
    out = model(torch.cat([frames, noisy], 1), actions, noise_level=sigma)   # training: the network's raw output F

B batch, T context frames, H/W pixels (84)
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from src.models.diffusion import (
    DenoiserHead,
    DiffusionConfig,
    Preconditioning,
    SigmaEmbedding,
    anchor,
    karras_sigmas,
    sample_frames,
)
from src.models.model_config import ModelConfig
from src.models.unet import PATCH, UNetFiLM
from src.utils.errors import ConfigError


class EDM(nn.Module):
    """The diffusion world model (model.name=edm): EDM's preconditioned denoiser around the unet_film U-Net, and its
    sampler. Same constructor and call as the deterministic variants (a call samples; with noise_level, training's
    call); `stochastic` tells evaluation to draw several samples per start."""

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
        """A sample of the next frame, (B, 1, H, W) in [0, 1] (not clamped), in `steps` (model.diffusion.steps)
        denoising steps."""
        d = self.diffusion
        sigmas = karras_sigmas(steps or d.steps, d.sigma_min, d.sigma_max, d.rho)
        noise = self._noise((len(frames), 1, *frames.shape[-2:]), frames.device)
        x = sample_frames(lambda x, sigma: self.denoise(frames, actions, x, sigma), noise, sigmas, d.sampler)
        return ((x + anchor(frames, d) + 1) / 2).to(frames.dtype)

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64 -> a sampled next frame (B, 1, H, W)
        in [0, 1], not clamped. With noise_level σ (B,), training's call (denoising_loss): frames are (B, T + 1, H, W),
        the context and then the noisy next frame (in [-1, 1] space, plus noise of level σ), and the return is the
        network's raw output F (B, 1, H, W). logits=True is refused: a sample is not a classification."""
        if logits:
            raise ValueError("logits=True given to edm: it samples the next frame and has no logits over a palette")
        noisy = noise_level is not None  # training's call: one input frame more, the noisy next frame
        assert frames.dim() == 4 and frames.size(1) == self.context_frames + noisy, frames.shape
        if not noisy:
            return self.sample(frames, actions)
        return self.raw(frames[:, :-1], actions, frames[:, -1:], noise_level)
