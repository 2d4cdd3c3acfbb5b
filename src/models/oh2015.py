"""oh2015: the action-conditional transformation of Oh et al. 2015, a conv encoder, a fully connected code multiplied
by an action embedding, and a deconvolution decoder.

B batch, T context frames, C channels, H/W pixels (84), h/w one level's size
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from src.models.model_config import ModelConfig
from src.utils.errors import ConfigError

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

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        """frames: (B, T, H, W) float in [0, 1], oldest first; actions: (B,) int64 -> (B, 1, H, W), not clamped.
        The shared call's noise_level and logits are refused: this model has no path for a level (it cannot be built
        with model.context_noise) and predicts a residual, not logits."""
        if noise_level is not None:
            raise ValueError("noise_level given to oh2015: it has no path to be told the noise on its frames")
        if logits:
            raise ValueError("logits=True given to oh2015: it predicts a residual, not logits over a palette")
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
